//! Emergency latency: from the operator's `emergency` command to every
//! device's `accepted`, over a fleet of the reference device agents
//! (`device_sim`) on the real stack (embedded broker, bridge, signed
//! command). An observer subscribed to every device's status topic stamps
//! each device's first `accepted` for the campaign as it passes the
//! broker, so each latency is command sent → report delivered.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use device_sim::fleet::{Fleet, FleetHandle, Profile};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use schemas::msg::{Kind, Status, StatusState, WireMessage};
use schemas::ops::Command;
use schemas::release::ReleaseSpec;
use schemas::topic::{Filter, Topic, Topics};
use schemas::{ArtifactId, CampaignId, ComponentName, DeviceId};
use tokio::sync::mpsc;

use super::run_error::RunError;
use crate::stack::{Stack, StackOptions};

/// One run.
#[derive(Debug, Clone)]
pub struct EmergencyOptions {
    /// Simulated devices (each its own MQTT connection).
    pub devices: usize,
    /// Size of the emergency config artifact.
    pub artifact_bytes: usize,
    /// The run fails when not every device accepted by then.
    pub deadline: Duration,
}

/// What one run measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EmergencyReport {
    pub devices: usize,
    /// Devices whose `accepted` was seen.
    pub accepted: usize,
    pub p50_secs: f64,
    pub p99_secs: f64,
    pub max_secs: f64,
    /// Command sent → the bridge's announcement on `P/emergency` seen:
    /// the bridge's share of the latency (the rest is the devices').
    pub announce_secs: Option<f64>,
    /// Command sent → the bridge's reply received: the command reached
    /// the bridge, was carried out and stored, and its reply came back.
    pub reply_secs: f64,
}

/// Runs the measurement once on a fresh stack and fleet.
pub async fn run(
    opts: &EmergencyOptions,
    progress: &(dyn Fn(String) + Sync),
) -> Result<EmergencyReport, RunError> {
    let stack = Stack::start(StackOptions::default()).await?;
    let fleet = spawn_agents(&stack, opts.devices)?;
    let result = match arm(&stack, opts, progress).await {
        Ok(armed) => armed.fire(&stack).await,
        Err(e) => Err(e),
    };
    fleet.shutdown().await;
    stack.shutdown().await?;
    result
}

/// The component the emergency's config artifact updates.
const SETTINGS: &str = "settings";

/// `devices` reference device agents on `stack` (ids `emg-…`, on `main`
/// 1.0.0 and `settings` 1.0.0), connecting at 500/s.
pub fn spawn_agents(stack: &Stack, devices: usize) -> Result<FleetHandle, RunError> {
    let profile = Profile {
        id_prefix: "emg".into(),
        connects_per_second: 500,
        versions: [
            (name("main")?, vec!["1.0.0".to_string()]),
            (name(SETTINGS)?, vec!["1.0.0".to_string()]),
        ]
        .into(),
        ..Profile::default()
    };
    Ok(Fleet::spawn(stack.fleet(devices, profile))?)
}

/// An emergency ready to send: every agent registered, its artifact
/// pushed, the observer subscribed.
pub struct Armed {
    devices: usize,
    deadline: Duration,
    artifact: ArtifactId,
    campaign: CampaignId,
    seen_rx: mpsc::Receiver<Seen>,
    observer: Observer,
}

/// The observer's task, stopped when dropped: an emergency armed and
/// never fired (its download failed) leaves no connection behind.
struct Observer(tokio::task::JoinHandle<()>);

impl Drop for Observer {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Waits until the agents of [`spawn_agents`] have all said Hello (the
/// command's latency, not the connect storm's), pushes the emergency's
/// config artifact (`opts.artifact_bytes`, `settings` 1.0.1) and
/// subscribes the observer.
pub async fn arm(
    stack: &Stack,
    opts: &EmergencyOptions,
    progress: &(dyn Fn(String) + Sync),
) -> Result<Armed, RunError> {
    let within = Duration::from_secs(60 + opts.devices as u64 / 250);
    stack
        .wait_registered(opts.devices, within, |_| {})
        .await
        .map_err(|e| RunError::Stalled(e.to_string()))?;
    progress(format!("{} devices registered", opts.devices));

    let image = vec![0x5a; opts.artifact_bytes];
    let spec = ReleaseSpec::new(
        Kind::Config,
        name(SETTINGS)?,
        "1.0.1",
        "any",
        bridge::unix_now(),
    );
    let artifact = stack.push(&image, &spec).await?;
    let campaign =
        CampaignId::new("bench-emergency").map_err(|e| RunError::Observer(e.to_string()))?;
    let (seen_rx, task) = observe(stack, campaign.clone()).await?;
    let observer = Observer(task);
    Ok(Armed {
        devices: opts.devices,
        deadline: opts.deadline,
        artifact,
        campaign,
        seen_rx,
        observer,
    })
}

impl Armed {
    /// Sends the signed `Emergency` command to every registered device
    /// and waits for each agent's `accepted` (at most the deadline).
    pub async fn fire(self, stack: &Stack) -> Result<EmergencyReport, RunError> {
        let Armed {
            devices,
            deadline,
            artifact,
            campaign,
            mut seen_rx,
            observer,
        } = self;
        // Logged, to read the bridge's log lines against it.
        tracing::info!(campaign = %campaign, "bench: emergency command sent");
        let sent = Instant::now();
        let called = stack
            .ops()
            .call_ok::<serde_json::Value>(Command::Emergency {
                id: campaign,
                release: vec![artifact],
                groups: vec![],
                all: true,
            })
            .await;
        if let Err(e) = called {
            drop(observer);
            return Err(e.into());
        }
        let replied = sent.elapsed();
        let mut seen: HashMap<DeviceId, Duration> = HashMap::with_capacity(devices);
        let mut announced = None;
        let waited = tokio::time::timeout(deadline, async {
            while seen.len() < devices {
                match seen_rx.recv().await {
                    Some(Seen::Accepted(id, at)) => {
                        seen.entry(id).or_insert(at.saturating_duration_since(sent));
                    }
                    Some(Seen::Announced(at)) => {
                        announced.get_or_insert(at.saturating_duration_since(sent));
                    }
                    None => break,
                }
            }
        })
        .await;
        drop(observer);
        if waited.is_err() || seen.len() < devices {
            return Err(RunError::Stalled(format!(
                "{} of {devices} devices accepted the emergency within {deadline:?}",
                seen.len(),
            )));
        }
        let mut lat: Vec<Duration> = seen.into_values().collect();
        lat.sort();
        Ok(EmergencyReport {
            devices,
            accepted: lat.len(),
            p50_secs: percentile(&lat, 50.0).as_secs_f64(),
            p99_secs: percentile(&lat, 99.0).as_secs_f64(),
            max_secs: lat.last().copied().unwrap_or_default().as_secs_f64(),
            announce_secs: announced.map(|d| d.as_secs_f64()),
            reply_secs: replied.as_secs_f64(),
        })
    }
}

/// What the observer saw, and when.
enum Seen {
    /// The bridge's announcement on `P/emergency`.
    Announced(Instant),
    /// A device's `accepted` for the campaign.
    Accepted(DeviceId, Instant),
}

/// Subscribes to every device's status and to the emergency topic; sends
/// what it sees of `campaign`. Returns once both subscriptions are
/// acknowledged.
async fn observe(
    stack: &Stack,
    campaign: CampaignId,
) -> Result<(mpsc::Receiver<Seen>, tokio::task::JoinHandle<()>), RunError> {
    let topics = Topics::default();
    let filter = topics.filter(Filter::AllStatus);
    let emergency = topics.build(&Topic::Emergency);
    let id = format!("bench-observer-{}", std::process::id());
    let mut o = MqttOptions::new(id, stack.host.clone(), stack.port);
    o.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(o, 16);
    // Room for a whole fleet's accepts in a burst; a full channel only
    // slows this observer, it never drops a stamp.
    let (tx, rx) = mpsc::channel(16_384);
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let mut ready = Some(ready_tx);
        let mut subacks = 0;
        let _client = client.clone();
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    subacks = 0;
                    for f in [&filter, &emergency] {
                        if let Err(e) = client.try_subscribe(f.clone(), QoS::AtLeastOnce) {
                            tracing::warn!(error = %e, "status observer cannot subscribe");
                        }
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    subacks += 1;
                    if subacks == 2 {
                        if let Some(r) = ready.take() {
                            let _ = r.send(());
                        }
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let at = Instant::now();
                    if p.topic == emergency {
                        // A fresh stack: the only announcement is ours.
                        if tx.send(Seen::Announced(at)).await.is_err() {
                            return;
                        }
                        continue;
                    }
                    let Ok(Topic::Status(dev)) = topics.parse(&p.topic) else {
                        continue;
                    };
                    match Status::decode(&p.payload) {
                        Ok(s)
                            if s.state == StatusState::Accepted
                                && s.campaign.as_ref() == Some(&campaign) =>
                        {
                            if tx.send(Seen::Accepted(dev, at)).await.is_err() {
                                return;
                            }
                        }
                        Ok(_) => {}
                        Err(e) => tracing::warn!(device = %dev, error = %e, "undecodable status"),
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "status observer connection failed");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), ready_rx)
        .await
        .map_err(|_| RunError::Observer("no SUBACK within 10 s".into()))?
        .map_err(|_| RunError::Observer("its task ended".into()))?;
    Ok((rx, task))
}

fn name(s: &str) -> Result<ComponentName, RunError> {
    ComponentName::new(s).map_err(|e| RunError::Observer(e.to_string()))
}

/// The nearest-rank percentile of sorted values (zero when empty).
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&v, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&v, 100.0), Duration::from_millis(100));
        assert_eq!(percentile(&v[..1], 99.0), Duration::from_millis(1));
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
    }
}
