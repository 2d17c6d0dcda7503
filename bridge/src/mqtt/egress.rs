//! The egress connection's event loop: it only publishes, so the loop only
//! drives rumqttc (writes, PUBACKs from the broker, pings) and reconnects
//! with backoff. See [`super::options`] for why publishing has its own
//! connection.

use std::future::Future;
use std::time::Duration;

use rumqttc::{Event, EventLoop, Outgoing, Packet};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::event_loop::LinkState;

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Runs until `shutdown` completes or our own DISCONNECT has been sent.
pub async fn run(
    mut eventloop: EventLoop,
    state: watch::Sender<LinkState>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut backoff = BACKOFF_MIN;
    loop {
        let ev = tokio::select! {
            biased;
            _ = &mut shutdown => break,
            ev = eventloop.poll() => ev,
        };
        match ev {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff = BACKOFF_MIN;
                info!("egress connected to the broker");
                state.send_modify(|s| s.egress_connected = true);
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
            Ok(_) => {}
            Err(e) => {
                let was = state.borrow().egress_connected;
                state.send_modify(|s| s.egress_connected = false);
                if was {
                    warn!(error = %e, "egress lost the broker connection; reconnecting");
                } else {
                    debug!(error = %e, "egress cannot reach the broker");
                }
                tokio::select! {
                    _ = &mut shutdown => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
    state.send_modify(|s| s.egress_connected = false);
}
