//! `/metrics`: the bridge's own counters in the Prometheus text format
//! (0.0.4), encoded by `prometheus-client`. Nothing is counted twice: a
//! scrape copies the atomics every task already bumps ([`crate::Metrics`],
//! the block server's, identity's and the listener's refusals), the fleet's
//! counts and the campaign list from core ([`super::ask`]), into a
//! [`Scrape`], which a [`Collector`] writes out. The names are listed in
//! docs/operations.md ("Dashboard and metrics").

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::ask::Depth;
use super::auth::{Refusal, Refusals};
use crate::blocks::metrics::BlockSnapshot;
use crate::campaign::view::CampaignList;
use crate::identity::Standing;
use crate::metrics::{DropReason, LatencySnapshot, Snapshot};
use crate::ops::queries::FleetCounts;

/// The Content-Type of the answer.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Every state a campaign can be in (`campaign list`'s `state`), shown
/// even at 0; a state not listed here is shown too once a campaign has it.
pub const CAMPAIGN_STATES: [&str; 9] = [
    "draft",
    "running",
    "soaking",
    "standing",
    "paused",
    "halted",
    "completed",
    "aborted",
    "expired",
];

/// Everything one scrape shows, copied at one moment.
#[derive(Debug, Clone)]
pub struct Scrape {
    pub bridge: Snapshot,
    pub commit_latency: LatencySnapshot,
    /// Core's handling time and wait per piece of work.
    pub core_handle: LatencySnapshot,
    pub core_wait: LatencySnapshot,
    pub blocks: BlockSnapshot,
    /// Identity's refusals by name.
    pub identity_refused: Vec<(&'static str, u64)>,
    pub standings: [(Standing, usize); 3],
    pub http_refused: Vec<(&'static str, u64)>,
    /// Failed TLS handshakes on the listener (0 without TLS).
    pub tls_handshakes_failed: u64,
    /// The embedded broker's admitted logins by credential (empty on an
    /// external broker).
    pub broker_logins: Vec<(&'static str, u64)>,
    /// The embedded broker's failed TLS handshakes by reason (empty
    /// without its TLS listener).
    pub broker_handshakes_failed: Vec<(&'static str, u64)>,
    pub inboxes: Vec<(&'static str, Depth)>,
    /// `None` when core did not answer (busy, stopping): the rest is shown.
    pub fleet: Option<FleetCounts>,
    pub campaigns: Option<CampaignList>,
}

impl Scrape {
    /// The listener's refusals, by reason.
    pub fn http_refusals(r: &Refusals) -> Vec<(&'static str, u64)> {
        Refusal::ALL
            .iter()
            .map(|x| (x.as_str(), r.get(*x)))
            .collect()
    }

    /// The text of `/metrics`.
    pub fn render(self) -> Result<String, fmt::Error> {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self));
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)?;
        Ok(out)
    }
}

/// Writes families into one scrape.
struct Out<'a>(DescriptorEncoder<'a>);

impl Out<'_> {
    fn one<M: EncodeMetric>(&mut self, name: &str, help: &str, m: M) -> fmt::Result {
        let e = self
            .0
            .encode_descriptor(name, help, None, m.metric_type())?;
        m.encode(e)
    }

    fn counter(&mut self, name: &str, help: &str, v: u64) -> fmt::Result {
        self.one(name, help, ConstCounter::new(v))
    }

    fn gauge(&mut self, name: &str, help: &str, v: i64) -> fmt::Result {
        self.one(name, help, ConstGauge::new(v))
    }

    /// One family, one sample per `(label value, value)`.
    fn by<M: EncodeMetric>(
        &mut self,
        name: &str,
        help: &str,
        label: &str,
        kind: MetricType,
        samples: impl IntoIterator<Item = (String, M)>,
    ) -> fmt::Result {
        let mut e = self.0.encode_descriptor(name, help, None, kind)?;
        for (value, m) in samples {
            let labels = [(label, value.as_str())];
            m.encode(e.encode_family(&labels)?)?;
        }
        Ok(())
    }

    fn counters_by(
        &mut self,
        name: &str,
        help: &str,
        label: &str,
        samples: impl IntoIterator<Item = (String, u64)>,
    ) -> fmt::Result {
        let s = samples.into_iter().map(|(l, v)| (l, ConstCounter::new(v)));
        self.by(name, help, label, MetricType::Counter, s)
    }

    /// One histogram family from a [`LatencySnapshot`] (cumulative
    /// counts, turned back into per-bucket ones for the encoder).
    fn histogram(&mut self, name: &str, help: &str, l: &LatencySnapshot) -> fmt::Result {
        let mut below = 0;
        let buckets: Vec<(f64, u64)> = l
            .buckets
            .iter()
            .map(|(le, cumulative)| {
                let n = cumulative - below;
                below = *cumulative;
                (*le, n)
            })
            .collect();
        let mut e = self
            .0
            .encode_descriptor(name, help, None, MetricType::Histogram)?;
        e.encode_histogram::<NoLabelSet>(l.sum_secs, l.count, &buckets, None)
    }

    fn gauges_by(
        &mut self,
        name: &str,
        help: &str,
        label: &str,
        samples: impl IntoIterator<Item = (String, i64)>,
    ) -> fmt::Result {
        let s = samples.into_iter().map(|(l, v)| (l, ConstGauge::new(v)));
        self.by(name, help, label, MetricType::Gauge, s)
    }
}

fn gauge_of(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn is_command(r: DropReason) -> bool {
    matches!(
        r,
        DropReason::CommandMalformed
            | DropReason::CommandForged
            | DropReason::CommandStale
            | DropReason::CommandReplayed
    )
}

impl Collector for Scrape {
    fn encode(&self, encoder: DescriptorEncoder) -> fmt::Result {
        let mut o = Out(encoder);
        let b = &self.bridge;
        self.devices(&mut o)?;

        o.counter("ota_hellos", "Hellos stored.", b.hellos)?;
        o.counter("ota_presence", "Presence messages handled.", b.presence)?;
        o.counter(
            "ota_statuses_stored",
            "Statuses stored (new).",
            b.statuses_stored,
        )?;
        o.counter(
            "ota_statuses_duplicates",
            "Statuses received again with the same content (acked, stored once).",
            b.statuses_duplicate,
        )?;
        o.counter(
            "ota_statuses_conflicts",
            "Statuses whose seq was stored with other content (kept aside).",
            b.statuses_conflict,
        )?;
        o.counter(
            "ota_status_commits",
            "Status group commits (one flush each).",
            b.commits,
        )?;
        o.counter(
            "ota_status_acks_published",
            "Retained StatusAcks published.",
            b.acks_published,
        )?;
        o.histogram(
            "ota_status_commit_latency_seconds",
            "From a status batch's first message to its flush (then it is acknowledged).",
            &self.commit_latency,
        )?;

        o.counters_by(
            "ota_messages_dropped",
            "Incoming messages dropped, by reason (operator commands apart: ota_commands_refused_total).",
            "reason",
            DropReason::ALL
                .iter()
                .filter(|r| !is_command(**r))
                .map(|r| (r.as_str().to_string(), b.dropped(*r))),
        )?;
        o.counter(
            "ota_commands_accepted",
            "Operator commands accepted.",
            b.commands_accepted,
        )?;
        o.counters_by(
            "ota_commands_refused",
            "Operator commands refused, by reason.",
            "reason",
            DropReason::ALL.iter().filter(|r| is_command(**r)).map(|r| {
                let name = r.as_str().trim_start_matches("command_");
                (name.to_string(), b.dropped(*r))
            }),
        )?;
        o.counter(
            "ota_memberships_published",
            "Retained Memberships published.",
            b.memberships_published,
        )?;
        o.counter(
            "ota_mqtt_connects",
            "Connections of the bridge to its broker.",
            b.connects,
        )?;
        o.counter(
            "ota_status_anomalies",
            "Cancelled Statuses (not superseded) of campaigns the bridge never aborted, counted as failures.",
            b.status_anomalies,
        )?;
        o.counter(
            "ota_retained_republished",
            "Retained messages republished from the store (start, broker restart).",
            b.retained_republished,
        )?;
        o.counters_by(
            "ota_identity_refused",
            "Logins, publishes, subscriptions and Hellos refused by identity, by reason.",
            "reason",
            self.identity_refused
                .iter()
                .map(|(n, v)| (n.to_string(), *v)),
        )?;
        self.blocks(&mut o)?;
        self.campaigns(&mut o)?;
        self.core(&mut o)?;
        o.counters_by(
            "ota_http_refused",
            "HTTP reads refused, by reason.",
            "reason",
            self.http_refused.iter().map(|(n, v)| (n.to_string(), *v)),
        )?;
        o.counter(
            "ota_http_tls_handshake_failures",
            "TLS handshakes on the HTTP listener that failed or timed out.",
            self.tls_handshakes_failed,
        )?;
        self.broker(&mut o)
    }
}

impl Scrape {
    /// The embedded broker's families, when it runs in the bridge.
    fn broker(&self, o: &mut Out<'_>) -> fmt::Result {
        if !self.broker_logins.is_empty() {
            o.counters_by(
                "ota_broker_logins",
                "CONNECTs the embedded broker admitted, by the credential they logged in with.",
                "credential",
                self.broker_logins.iter().map(|(n, v)| (n.to_string(), *v)),
            )?;
        }
        if !self.broker_handshakes_failed.is_empty() {
            o.counters_by(
                "ota_broker_tls_handshake_failures",
                "TLS handshakes refused on the embedded broker's TLS listener, by reason.",
                "reason",
                self.broker_handshakes_failed
                    .iter()
                    .map(|(n, v)| (n.to_string(), *v)),
            )?;
        }
        Ok(())
    }

    fn devices(&self, o: &mut Out<'_>) -> fmt::Result {
        o.gauges_by(
            "ota_devices_credentials",
            "Provisioned device credentials, by standing.",
            "standing",
            self.standings
                .iter()
                .map(|(s, n)| (s.as_str().to_string(), gauge_of(*n))),
        )?;
        let pending = self
            .standings
            .iter()
            .find(|(s, _)| *s == Standing::Pending)
            .map_or(0, |(_, n)| *n);
        o.gauge(
            "ota_devices_pending",
            "Enrolled devices waiting for `ota devices accept`.",
            gauge_of(pending),
        )?;
        let Some(f) = &self.fleet else {
            return Ok(());
        };
        o.gauge(
            "ota_devices_registered",
            "Devices that said Hello.",
            gauge_of(f.registered),
        )?;
        o.gauge(
            "ota_devices_online",
            "Registered devices online now.",
            gauge_of(f.online),
        )?;
        o.gauges_by(
            "ota_devices_registered_by_arch",
            "Registered devices, by arch.",
            "arch",
            f.by_arch
                .iter()
                .map(|(a, c)| (a.clone(), gauge_of(c.devices))),
        )?;
        o.gauges_by(
            "ota_devices_online_by_arch",
            "Online devices, by arch.",
            "arch",
            f.by_arch
                .iter()
                .map(|(a, c)| (a.clone(), gauge_of(c.online))),
        )
    }

    fn blocks(&self, o: &mut Out<'_>) -> fmt::Result {
        let k = &self.blocks;
        o.counter("ota_block_requests", "BlockRequests accepted.", k.requests)?;
        o.counter(
            "ota_block_requests_merged",
            "Wanted blocks already pending for another device.",
            k.merged,
        )?;
        o.counters_by(
            "ota_block_requests_refused",
            "BlockRequests refused, by reason.",
            "reason",
            k.refused.iter().map(|(n, v)| (n.to_string(), *v)),
        )?;
        o.counters_by(
            "ota_blocks_served",
            "Blocks published, by delivery (broadcast on the artifact's topic, unicast to one device).",
            "delivery",
            [
                ("broadcast".to_string(), k.blocks_broadcast),
                ("unicast".to_string(), k.blocks_unicast),
            ],
        )?;
        o.counters_by(
            "ota_block_egress_bytes",
            "Payload bytes of the blocks published, by delivery.",
            "delivery",
            [
                ("broadcast".to_string(), k.bytes_broadcast),
                ("unicast".to_string(), k.bytes_unicast),
            ],
        )?;
        o.counter(
            "ota_block_encode_failures",
            "Blocks that could not be read or encoded.",
            k.encode_failed,
        )?;
        o.gauge(
            "ota_block_pace_rate",
            "The pacer's rate now, block deliveries per second.",
            i64::try_from(k.pace_rate).unwrap_or(i64::MAX),
        )?;
        o.counter(
            "ota_block_pace_backoffs",
            "The pacer's back-offs.",
            k.pace_backoffs,
        )
    }

    fn campaigns(&self, o: &mut Out<'_>) -> fmt::Result {
        let Some(c) = &self.campaigns else {
            return Ok(());
        };
        let mut by_state: std::collections::BTreeMap<String, usize> =
            CAMPAIGN_STATES.iter().map(|s| (s.to_string(), 0)).collect();
        for x in &c.campaigns {
            *by_state.entry(x.state.clone()).or_default() += 1;
        }
        o.gauges_by(
            "ota_campaigns",
            "Campaigns, by state.",
            "state",
            by_state.into_iter().map(|(s, n)| (s, gauge_of(n))),
        )
    }

    fn core(&self, o: &mut Out<'_>) -> fmt::Result {
        o.gauges_by(
            "ota_queue_depth",
            "Messages waiting in an actor's inbox (core_*: the core actor's).",
            "inbox",
            self.inboxes
                .iter()
                .map(|(n, d)| (n.to_string(), gauge_of(d.waiting))),
        )?;
        o.gauges_by(
            "ota_queue_capacity",
            "The capacity of an actor's inbox.",
            "inbox",
            self.inboxes
                .iter()
                .map(|(n, d)| (n.to_string(), gauge_of(d.capacity))),
        )?;
        let b = &self.bridge;
        o.one(
            "ota_core_busy_seconds",
            "Time the core actor spent working (its rate is core's utilisation).",
            ConstCounter::new(b.core_busy_micros as f64 / 1e6),
        )?;
        o.one(
            "ota_core_max_stall_seconds",
            "The longest single piece of work core did since start.",
            ConstGauge::new(b.core_max_stall_micros as f64 / 1e6),
        )?;
        o.one(
            "ota_core_max_wait_seconds",
            "The longest a message, query or tick waited for core since start (from its arrival to core taking it up).",
            ConstGauge::new(b.core_max_wait_micros as f64 / 1e6),
        )?;
        o.histogram(
            "ota_core_handle_seconds",
            "Core's handling time of each message, query or tick.",
            &self.core_handle,
        )?;
        o.histogram(
            "ota_core_wait_seconds",
            "How long each message, query or tick waited for core, from its arrival to core taking it up.",
            &self.core_wait,
        )?;
        o.gauge(
            "ota_core_answering",
            "1 when core answered this scrape's queries, 0 when it was busy or stopping.",
            i64::from(self.fleet.is_some() && self.campaigns.is_some()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    #[test]
    fn the_text_parses_and_holds_the_counters() {
        let m = Metrics::default();
        Metrics::add(&m.statuses_stored, 7);
        m.count_drop(DropReason::Malformed);
        m.count_drop(DropReason::CommandForged);
        m.commit_latency
            .observe(std::time::Duration::from_millis(3));
        m.core_waited(std::time::Duration::from_millis(60));
        m.core_worked(std::time::Duration::from_millis(2));
        let mut fleet = FleetCounts {
            registered: 3,
            online: 2,
            ..FleetCounts::default()
        };
        fleet.by_arch.insert(
            "esp32".into(),
            crate::ops::queries::ArchCounts {
                devices: 3,
                online: 2,
            },
        );
        let s = Scrape {
            bridge: m.snapshot(),
            commit_latency: m.commit_latency.snapshot(),
            core_handle: m.core_handle.snapshot(),
            core_wait: m.core_wait.snapshot(),
            blocks: BlockSnapshot::default(),
            identity_refused: vec![("bad_credentials", 4)],
            standings: [
                (Standing::Active, 3),
                (Standing::Pending, 1),
                (Standing::Revoked, 0),
            ],
            http_refused: vec![("no_token", 2)],
            tls_handshakes_failed: 0,
            broker_logins: vec![("certificate", 3), ("password", 1)],
            broker_handshakes_failed: vec![("no_certificate", 2)],
            inboxes: vec![(
                "core_mqtt",
                Depth {
                    waiting: 5,
                    capacity: 1024,
                },
            )],
            fleet: Some(fleet),
            campaigns: Some(CampaignList { campaigns: vec![] }),
        };
        let text = s.render().unwrap();
        let lines: Vec<_> = text.lines().map(|l| Ok(l.to_string())).collect();
        let parsed = prometheus_parse::Scrape::parse(lines.into_iter()).unwrap();
        let value = |name: &str, label: Option<(&str, &str)>| {
            parsed
                .samples
                .iter()
                .find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
                .map(|s| s.value.clone())
        };
        use prometheus_parse::Value;
        assert_eq!(
            value("ota_statuses_stored_total", None),
            Some(Value::Counter(7.0)),
            "{text}"
        );
        assert_eq!(
            value("ota_messages_dropped_total", Some(("reason", "malformed"))),
            Some(Value::Counter(1.0))
        );
        assert_eq!(
            value("ota_commands_refused_total", Some(("reason", "forged"))),
            Some(Value::Counter(1.0))
        );
        assert_eq!(value("ota_devices_pending", None), Some(Value::Gauge(1.0)));
        assert_eq!(
            value(
                "ota_broker_logins_total",
                Some(("credential", "certificate"))
            ),
            Some(Value::Counter(3.0))
        );
        assert_eq!(
            value(
                "ota_broker_tls_handshake_failures_total",
                Some(("reason", "no_certificate"))
            ),
            Some(Value::Counter(2.0))
        );
        assert_eq!(
            value("ota_devices_online_by_arch", Some(("arch", "esp32"))),
            Some(Value::Gauge(2.0))
        );
        assert_eq!(
            value("ota_queue_depth", Some(("inbox", "core_mqtt"))),
            Some(Value::Gauge(5.0))
        );
        assert_eq!(
            value("ota_campaigns", Some(("state", "running"))),
            Some(Value::Gauge(0.0))
        );
        match value("ota_status_commit_latency_seconds", None) {
            Some(Value::Histogram(h)) => {
                assert_eq!(
                    h.iter().find(|b| b.less_than == 0.005).map(|b| b.count),
                    Some(1.0)
                )
            }
            other => panic!("no histogram: {other:?}\n{text}"),
        }
        // Core's wait: the 60 ms one is past the 50 ms bucket, not the 100 ms one.
        assert_eq!(
            value("ota_core_max_wait_seconds", None),
            Some(Value::Gauge(0.06))
        );
        match value("ota_core_wait_seconds", None) {
            Some(Value::Histogram(h)) => {
                let at = |le: f64| h.iter().find(|b| b.less_than == le).map(|b| b.count);
                assert_eq!((at(0.05), at(0.1)), (Some(0.0), Some(1.0)), "{text}");
            }
            other => panic!("no core wait histogram: {other:?}\n{text}"),
        }
        assert!(matches!(
            value("ota_core_handle_seconds", None),
            Some(Value::Histogram(_))
        ));
    }
}
