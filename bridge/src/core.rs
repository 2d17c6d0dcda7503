//! The core actor: the one task that owns [`CoreState`] (the fleet, the
//! campaigns, the store handles) and the operator commands' state
//! ([`Ops`]), and runs everything that changes them in order: Presence,
//! operator commands, committed status batches, a one-second campaign
//! tick, and the republishing of retained messages after a reconnect.
//! It is the top of the service: it calls `ops`, `state` and (through
//! `state`) `campaign`; nothing below knows it.
//!
//! Three inboxes: MQTT messages it owns (Presence, operator commands),
//! internal news from the status ingest actor (Hellos once their epoch is
//! stored, last seen, campaign state changes), and the HTTP listener's
//! read-only queries ([`crate::ops::queries`], a small bounded inbox the
//! asker never waits on). Each piece of work is timed: core's busy time,
//! its longest stall (handling time) and the longest wait of a message
//! from its arrival to core taking it up, with histograms of both
//! (`/metrics`).

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use schemas::msg::{Hello, Membership, Presence, WireMessage};
use schemas::topic::Topic;
use schemas::DeviceId;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::metrics::{DropReason, Metrics};
use crate::mqtt::Incoming;
use crate::ops::prepare::{self, Prep};
use crate::ops::queries::Query;
use crate::ops::{Accepted, Ops};
use crate::state::{campaigns, CoreError, CoreState};
use crate::status::{HelloEffect, StatusUpdate};

/// A handling longer than this is logged (debug): the stall goal (issue 19).
const SLOW: Duration = Duration::from_millis(50);

/// Capacity of each of core's inboxes.
pub const INBOX: usize = 1024;

/// Most operator commands held while one waits for its preparation; past
/// it core takes no MQTT message until that one has run.
pub const MAX_HELD: usize = 256;

/// When a handling began: the clock and the thread's CPU time.
#[derive(Clone, Copy)]
struct Mark {
    at: Instant,
    cpu: Duration,
}

impl Mark {
    fn now() -> Self {
        Self {
            at: Instant::now(),
            cpu: crate::rt::thread_cpu(),
        }
    }

    /// Milliseconds since, and of them the thread's CPU time, when over
    /// [`SLOW`] (a handling that awaited may have moved threads: then the
    /// CPU time is a guess).
    fn slow(&self) -> Option<(u64, u64)> {
        let took = self.at.elapsed();
        (took > SLOW).then(|| {
            let cpu = crate::rt::thread_cpu().saturating_sub(self.cpu);
            (took.as_millis() as u64, cpu.as_millis() as u64)
        })
    }
}

/// A command waiting for the work it needs prepared (`ops::prepare`).
pub(crate) struct Waiting {
    command: schemas::ops::Command,
    accepted: Accepted,
    prep: Prep,
}

pub use crate::status::CoreMsg;

/// The next query; never, without a query inbox (or once it closed).
async fn next_query(rx: &mut Option<mpsc::Receiver<Query>>) -> Option<Query> {
    match rx {
        Some(rx) => match rx.recv().await {
            Some(q) => Some(q),
            None => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

/// The actor.
pub struct Core {
    pub(crate) state: CoreState,
    /// The operator commands' own state (who may command, release keys).
    pub(crate) ops: Ops,
    pub(crate) mqtt: mpsc::Receiver<Incoming>,
    pub(crate) internal: mpsc::Receiver<CoreMsg>,
    /// Read-only queries (the HTTP listener); `None` without one.
    pub(crate) queries: Option<mpsc::Receiver<Query>>,
    /// The link's state: a reconnect of the publishing connection may mean
    /// a broker that restarted and lost its retained messages.
    pub(crate) link: tokio::sync::watch::Receiver<crate::mqtt::LinkState>,
    /// The command waiting for its preparation, if one is.
    pub(crate) waiting: Option<Waiting>,
    /// Commands that came while one waits, in order (at most [`MAX_HELD`]).
    pub(crate) held: VecDeque<bytes::Bytes>,
}

impl Core {
    /// Runs until `shutdown` is cancelled.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), CoreError> {
        self.start().await?;
        let mut tick = tokio::time::interval_at(
            tokio::time::Instant::now() + campaigns::FIRST_TICK,
            campaigns::TICK,
        );
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Signed retained messages are re-signed before they expire (E2).
        let refresh_every = self
            .state
            .publisher()
            .director()
            .map(|d| d.refresh_interval());
        let mut refresh = tokio::time::interval_at(
            tokio::time::Instant::now() + refresh_every.unwrap_or(Duration::from_secs(86_400)),
            refresh_every.unwrap_or(Duration::from_secs(86_400)),
        );
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut egress_up = self.link.borrow().egress_connected;
        let mut egress_seen = egress_up;
        // A slice of work over the fleet and a message take turns: neither
        // waits behind a run of the other.
        let mut sliced = false;
        loop {
            let work =
                self.waiting.is_some() || !self.held.is_empty() || self.state.has_sliced_work();
            let was_slice = sliced;
            sliced = false;
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = std::future::ready(()), if work && !was_slice => {
                    let t = Mark::now();
                    let kind = self.slice().await?;
                    self.worked(t, kind);
                    sliced = true;
                }
                changed = self.link.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let up = self.link.borrow_and_update().egress_connected;
                    if up && !egress_up && egress_seen {
                        // A broker that restarted lost its retained
                        // messages (Mosquitto without persistence, or
                        // rumqttd always): heal it from the store, as at
                        // start. Devices that reconnect find their
                        // Membership and announcements again.
                        info!("publishing connection is back: republishing retained messages");
                        let t = Mark::now();
                        self.republish_retained().await?;
                        self.worked(t, "republish");
                    }
                    egress_seen |= up;
                    egress_up = up;
                }
                due = tick.tick() => {
                    let t = Mark::now();
                    self.waited(due.into_std());
                    campaigns::tick(&mut self.state).await?;
                    self.worked(t, "tick");
                }
                due = refresh.tick(), if refresh_every.is_some() => {
                    let t = Mark::now();
                    self.waited(due.into_std());
                    let n = self.republish_retained().await?;
                    info!(retained = n, "re-signed and republished retained messages before they expire");
                    self.worked(t, "refresh");
                }
                // Before the busy inboxes: a query is small, and the
                // asker gives up after a few seconds.
                Some(q) = next_query(&mut self.queries) => {
                    let t = Mark::now();
                    self.waited(q.asked);
                    self.query(q).await;
                    self.worked(t, "query");
                }
                // Devices the broker admitted with the enrollment token.
                _ = self.state.identity().enrolled() => {
                    let t = Mark::now();
                    crate::state::enrollment::store_enrolled(&mut self.state).await?;
                    self.worked(t, "enrolled");
                }
                // Operator commands and Presence before the ingest's news:
                // a backlog of Hellos (a fleet registering) never holds an
                // operator's command behind it.
                m = self.mqtt.recv(), if self.held.len() < MAX_HELD => match m {
                    Some(m) => {
                        let t = Mark::now();
                        self.waited(m.arrived);
                        let kind = match m.topic {
                            Topic::OpsCommands => "operator command",
                            _ => "presence",
                        };
                        self.mqtt(m).await?;
                        self.worked(t, kind);
                    }
                    None => break,
                },
                m = self.internal.recv() => match m {
                    Some(m) => {
                        let t = Mark::now();
                        let CoreMsg::FromIngest { sent, .. } = &m;
                        self.waited(*sent);
                        self.internal(m).await?;
                        self.worked(t, "ingest batch");
                    }
                    None => break,
                },
                // Nothing else to do: the next slice.
                _ = std::future::ready(()), if work => {
                    let t = Mark::now();
                    let kind = self.slice().await?;
                    self.worked(t, kind);
                    sliced = true;
                }
            }
        }
        debug!("core stopped");
        Ok(())
    }

    /// One turn of the work between messages: the waiting command runs
    /// once its preparation is done, or else the next held command
    /// begins, or else one slice of work over the fleet. Returns what it
    /// did, for the log of slow handlings.
    async fn slice(&mut self) -> Result<&'static str, CoreError> {
        if let Some(w) = self.waiting.take() {
            if prepare::ready(&self.state, &w.prep) {
                self.run_prepared(w).await?;
                return Ok("operator command");
            }
            let focus = prepare::focus(&w.prep).cloned();
            let prep = w.prep.clone();
            self.waiting = Some(w);
            self.state
                .slice(focus.as_ref(), |s| prepare::ready(s, &prep))
                .await?;
            return Ok("slice");
        }
        if let Some(payload) = self.held.pop_front() {
            self.command(&payload).await?;
            return Ok("operator command");
        }
        self.state.slice(None, |_| false).await?;
        Ok("slice")
    }

    /// An operator command: checked, then run at once, or once what it
    /// needs over the whole fleet is prepared. For a fleet that one slice
    /// covers that is at once too, within this handling.
    async fn command(&mut self, payload: &[u8]) -> Result<(), CoreError> {
        let t0 = Instant::now();
        let Some((command, accepted)) = self.ops.accept(&mut self.state, payload).await? else {
            return Ok(());
        };
        let t1 = Instant::now();
        let begun = prepare::begin(&mut self.state, &command);
        let t2 = Instant::now();
        let Some(prep) = begun else {
            let (t, op) = (Mark::now(), accepted.op);
            self.ops.run(&mut self.state, command, accepted).await?;
            self.worked_on(t, op);
            return Ok(());
        };
        // A fleet one slice covers is prepared within this handling.
        self.state
            .slice(prepare::focus(&prep), |s| prepare::ready(s, &prep))
            .await?;
        if t0.elapsed() > SLOW {
            debug!(
                op = accepted.op,
                accept_ms = (t1 - t0).as_millis() as u64,
                begin_ms = (t2 - t1).as_millis() as u64,
                slices_ms = t2.elapsed().as_millis() as u64,
                "core: a slow command's preparation, by part"
            );
        }
        let w = Waiting {
            command,
            accepted,
            prep,
        };
        if prepare::ready(&self.state, &w.prep) {
            return self.run_prepared(w).await;
        }
        debug!(op = w.accepted.op, request = %w.accepted.request_id, "command waits for its scan of the fleet, done in slices");
        self.waiting = Some(w);
        Ok(())
    }

    async fn run_prepared(&mut self, w: Waiting) -> Result<(), CoreError> {
        let (t, op) = (Mark::now(), w.accepted.op);
        self.ops.run(&mut self.state, w.command, w.accepted).await?;
        self.worked_on(t, op);
        let start = prepare::focus(&w.prep);
        self.state.campaigns_mut().1.drop_prepared(start);
        Ok(())
    }

    /// Counts a handling; one over [`SLOW`] is logged (debug) with its kind.
    fn worked(&self, since: Mark, kind: &'static str) {
        self.state.metrics().core_worked(since.at.elapsed());
        if let Some((ms, cpu_ms)) = since.slow() {
            debug!(kind, ms, cpu_ms, "core: a slow handling");
        }
    }

    /// Which command a slow operator command was (logged, not counted:
    /// the handling around it is).
    fn worked_on(&self, since: Mark, op: &'static str) {
        if let Some((ms, cpu_ms)) = since.slow() {
            debug!(op, ms, cpu_ms, "core: a slow command");
        }
    }

    /// Work that arrived at `arrived` is taken up now.
    fn waited(&self, arrived: std::time::Instant) {
        self.state.metrics().core_waited(arrived.elapsed());
    }

    /// Answers a query; an asker that gave up is no matter.
    async fn query(&mut self, q: Query) {
        let result =
            crate::ops::queries::answer(&mut self.state, q.ask, crate::rt::unix_now()).await;
        if let Err(e) = &result {
            debug!(error = %e, "query failed");
        }
        let _ = q.reply.send(result);
    }

    /// Republishes the retained messages core owns (all but StatusAcks),
    /// then publishes whatever membership changed while the bridge was down.
    async fn start(&mut self) -> Result<(), CoreError> {
        let n = self.republish_retained().await?;
        let s = &mut self.state;
        let changes = s.fleet_mut().membership_changes(None);
        if !changes.is_empty() {
            info!(
                devices = changes.len(),
                "publishing memberships that changed while the bridge was down"
            );
        }
        s.publish_memberships(changes).await?;
        info!(
            devices = s.fleet().len(),
            groups = s.fleet().groups().len(),
            retained = n,
            "core ready"
        );
        campaigns::started(&mut self.state).await?;
        Ok(())
    }

    /// Publishes every retained message core owns from the store (at start,
    /// and when the publishing connection comes back, so a broker that lost
    /// its retained messages heals). Returns how many.
    async fn republish_retained(&mut self) -> Result<u64, CoreError> {
        let s = &mut self.state;
        let topics = s.publisher().topics().clone();
        let mut published = HashMap::new();
        let mut n = 0u64;
        let store = s.store().clone();
        let retained = crate::rt::blocking(move || store.retained.all())
            .await
            .map_err(|e| CoreError::Task(format!("reading the retained tree: {e}")))??;
        // Grants follow what is retained, before it goes out (to an
        // external broker too, once for all).
        for (topic, payload) in &retained {
            if let Ok(t) = topics.parse(topic) {
                s.identity().observe(&t, payload);
            }
        }
        s.identity().applied().await;
        for (topic, payload) in retained {
            // Signed afresh (a new counter and expiry, E2): at start, on a
            // reconnect and every tenth of the ttl.
            let payload = match (topics.parse(&topic), s.publisher().director()) {
                (Ok(t), Some(d)) if !matches!(t, Topic::Ack(_)) => {
                    match d.resign(&t, &topic, &payload)? {
                        Some(p) => {
                            s.store().retained.put(&topic, &p)?;
                            p
                        }
                        None => payload,
                    }
                }
                _ => payload,
            };
            match topics.parse(&topic) {
                Ok(Topic::Ack(_)) => continue,
                Ok(Topic::Groups(id)) => match Membership::decode_retained(&payload) {
                    Ok(m) => {
                        published.insert(id, m.groups);
                    }
                    Err(e) => {
                        warn!(device = %id, error = %e, "stored membership does not decode; it will be recomputed")
                    }
                },
                Ok(_) => {}
                Err(e) => {
                    // Written under another prefix: not ours any more.
                    warn!(topic = %topic, error = %e, "stored retained message is not under our prefix; not republished");
                    continue;
                }
            }
            s.publisher()
                .publish_str(topic, payload.into(), true)
                .await?;
            n += 1;
        }
        Metrics::add(&s.metrics().retained_republished, n);
        s.replace_fleet(|f| f.with_published(published));
        Ok(n)
    }

    async fn internal(&mut self, m: CoreMsg) -> Result<(), CoreError> {
        match m {
            CoreMsg::FromIngest {
                hellos,
                updates,
                seen,
                at,
                sent: _,
            } => {
                let hellos: Vec<(DeviceId, Hello)> = hellos
                    .into_iter()
                    .map(|(id, hello, effect)| {
                        if effect == HelloEffect::NewEpoch {
                            debug!(device = %id, "new status epoch");
                        }
                        (id, hello)
                    })
                    .collect();
                let t0 = Instant::now();
                crate::state::enrollment::hellos(&mut self.state, &hellos, at).await?;
                let t1 = Instant::now();
                let seen_n = seen.len();
                for id in seen {
                    if self.state.fleet_mut().seen(&id, at) {
                        self.state.put_device(&id)?;
                    }
                }
                let t2 = Instant::now();
                campaigns::statuses(&mut self.state, &updates).await?;
                let t3 = Instant::now();
                let updates_n = updates.len();
                for u in updates {
                    self.status_update(u);
                }
                if t0.elapsed() > SLOW {
                    debug!(
                        hellos = hellos.len(),
                        hellos_ms = (t1 - t0).as_millis() as u64,
                        seen = seen_n,
                        seen_ms = (t2 - t1).as_millis() as u64,
                        updates = updates_n,
                        updates_ms = (t3 - t2).as_millis() as u64,
                        logged_ms = t3.elapsed().as_millis() as u64,
                        "core: a slow ingest batch, by part"
                    );
                }
            }
        }
        Ok(())
    }

    /// A device's campaign state changed (already counted by the campaign
    /// manager, `state::campaigns::statuses`): logged.
    fn status_update(&mut self, u: StatusUpdate) {
        if u.outcome.is_some() {
            info!(device = %u.device, campaign = %u.campaign, state = %u.state, error = ?u.error, "device finished a campaign");
        } else {
            debug!(device = %u.device, campaign = %u.campaign, state = %u.state, "campaign state");
        }
    }

    async fn mqtt(&mut self, m: Incoming) -> Result<(), CoreError> {
        match &m.topic {
            Topic::Presence(id) => self.presence(id, &m)?,
            // After the one waiting, and those held before it: in order.
            Topic::OpsCommands if self.waiting.is_some() || !self.held.is_empty() => {
                self.held.push_back(m.payload.clone());
            }
            Topic::OpsCommands => self.command(&m.payload).await?,
            other => {
                self.state.metrics().count_drop(DropReason::BadTopic);
                warn!(topic = ?other, "core got a topic it does not own");
            }
        }
        self.state.publisher().ack(m.ack);
        Ok(())
    }

    fn presence(&mut self, id: &DeviceId, m: &Incoming) -> Result<(), CoreError> {
        let s = &mut self.state;
        if m.payload.is_empty() {
            // A cleared retained presence: nothing to learn.
            return Ok(());
        }
        let p = match Presence::decode(&m.payload) {
            Ok(p) => p,
            Err(e) => {
                s.metrics().count_drop(match e {
                    schemas::msg::DecodeError::TooLarge { .. } => DropReason::Oversized,
                    _ => DropReason::Malformed,
                });
                warn!(device = %id, message = "presence", error = %e, "dropped a payload that does not decode");
                return Ok(());
            }
        };
        Metrics::add(&s.metrics().presence, 1);
        match s.fleet_mut().presence(id, p.online, crate::rt::unix_now()) {
            None => {
                debug!(device = %id, online = p.online, "presence of a device that has not said hello")
            }
            Some(changed) => {
                if changed {
                    debug!(device = %id, online = p.online, "presence");
                }
                s.put_device(id)?;
            }
        }
        Ok(())
    }
}
