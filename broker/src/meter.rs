//! The meter thread: feeds rumqttd's live connection count to the guard.
//!
//! rumqttd has no disconnect callback, but its router keeps
//! `total_connections` (up on every registered connection, down on every
//! disconnect) and sends it to meter links when its metrics timer fires
//! (`[metrics.meters] push_interval`, whole seconds). It only sends a report
//! when there was at least one publish since the last one, so this thread
//! also publishes a one-byte tick twice a second through an in-process link.
//! The tick topic starts with `$`: rumqttd matches no filter to such a
//! topic, so the tick is counted and dropped, never stored or delivered.

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rumqttd::local::{LinkRx, LinkTx};
use rumqttd::meters::MetersLink;
use rumqttd::Meter;
use tracing::{error, warn};

use crate::auth::Auth;
use crate::guard::STALE_AFTER;

/// Internal, never delivered (see above); not part of the wire contract.
const TICK_TOPIC: &str = "$ota-broker/tick";
const TICK_EVERY: Duration = Duration::from_millis(500);
const POLL_EVERY: Duration = Duration::from_millis(50);
/// The router counts our tick link among its connections.
const INTERNAL_LINKS: usize = 1;

pub(crate) fn spawn(
    auth: Arc<Auth>,
    meters: MetersLink,
    tick: (LinkTx, LinkRx),
) -> std::io::Result<()> {
    thread::Builder::new()
        .name("ota-broker-meter".into())
        .spawn(move || run(&auth, &meters, tick))
        .map(drop)
}

/// Runs until the router goes away, which ends the broker anyway.
fn run(auth: &Auth, meters: &MetersLink, (mut tick_tx, _tick_rx): (LinkTx, LinkRx)) {
    let mut next_tick = Instant::now();
    let mut warned_stale = false;
    loop {
        let now = Instant::now();
        if now >= next_tick {
            if let Err(e) = tick_tx.publish(TICK_TOPIC, vec![0u8]) {
                error!(error = %e, "broker tick link failed: the connection guard stops learning about disconnects");
                return;
            }
            next_tick = now + TICK_EVERY;
        }
        // Empty, or closed because the router is gone: then the next tick
        // fails and ends the thread.
        while let Ok(batch) = meters.recv() {
            for meter in batch {
                if let Meter::Router(_, router) = meter {
                    let live = router.total_connections.saturating_sub(INTERNAL_LINKS);
                    auth.guard().report(live, Instant::now());
                    warned_stale = false;
                }
            }
        }
        let age = auth.guard().report_age(Instant::now());
        if !warned_stale && age.is_some_and(|age| age > STALE_AFTER) {
            warn!(?age, "no connection count from rumqttd's router lately: the connection guard counts conservatively");
            warned_stale = true;
        }
        thread::sleep(POLL_EVERY);
    }
}
