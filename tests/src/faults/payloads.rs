//! Seeded bad input for the topic fuzz: on every topic the bridge reads
//! (hello, presence, status, request, ops/commands) and on bad topics,
//! payloads that are random bytes, valid messages of the wrong kind, or
//! valid messages mutated (bits flipped, cut, grown, spliced). The same
//! seed gives the same sequence.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use schemas::keys::SigningKey;
use schemas::msg::{BlockRequest, Hello, Presence, Status, StatusState, WireMessage};
use schemas::ops::{Command, CommandBody, CommandEnvelope};
use schemas::topic::{Topic, Topics};
use schemas::{ArtifactId, ComponentName, DeviceId, Epoch, RequestId};

/// Where a payload goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    Hello,
    Presence,
    Status,
    Request,
    Commands,
    /// A topic under a filter the bridge holds, with a device id outside
    /// the alphabet or too long.
    BadId,
    /// A topic the bridge does not read (the broker may still deliver
    /// nothing, or the bridge drops it).
    Foreign,
}

/// Generates (topic, payload) pairs from a seed.
pub struct Fuzzer {
    rng: StdRng,
    topics: Topics,
    ids: Vec<DeviceId>,
    templates: Vec<Vec<u8>>,
    command: Vec<u8>,
}

impl Fuzzer {
    /// A fuzzer over `devices` fuzz device ids (`fz-00001`...), signing its
    /// template command with `operator`.
    pub fn new(seed: u64, devices: usize, operator: &SigningKey) -> Fuzzer {
        let ids = (1..=devices.max(1))
            .filter_map(|i| DeviceId::new(format!("fz-{i:05}")).ok())
            .collect();
        let main = ComponentName::new("main").ok();
        let versions: std::collections::BTreeMap<_, _> =
            main.into_iter().map(|c| (c, "1.0.0".to_string())).collect();
        let mut templates = Vec::new();
        if let Ok(epoch) = Epoch::new("ep-fuzz") {
            templates.push(
                Hello {
                    proto: 1,
                    arch: "esp32".into(),
                    versions: versions.clone(),
                    labels: [("customer".to_string(), "fuzz".to_string())].into(),
                    boot_id: "boot-fuzz".into(),
                    epoch,
                    outbox: 1,
                    features: Vec::new(),
                }
                .encode(),
            );
        }
        templates.push(Presence { online: true }.encode());
        templates.push(
            Status {
                seq: 1,
                campaign: None,
                artifact: None,
                state: StatusState::Downloading,
                progress: Some(3),
                error: None,
                detail: Some("fuzz".into()),
                versions,
            }
            .encode(),
        );
        if let Ok(artifact) = ArtifactId::new("fw-fuzz-1.0.0-esp32") {
            templates.push(
                BlockRequest {
                    artifact,
                    offset: 0,
                    bitmap: vec![0xff; 4],
                }
                .encode(),
            );
        }
        let command = RequestId::new("fuzz-template")
            .map(|request_id| {
                let body = CommandBody {
                    request_id,
                    issued_at: bridge::unix_now(),
                    command: Command::GroupList,
                    audience: None,
                };
                CommandEnvelope::sign(&body, operator).to_bytes()
            })
            .unwrap_or_default();
        Fuzzer {
            rng: StdRng::seed_from_u64(seed),
            topics: Topics::default(),
            ids,
            templates,
            command,
        }
    }

    /// The next (target, topic, payload).
    pub fn next_case(&mut self) -> (Target, String, Vec<u8>) {
        let target = match self.rng.gen_range(0..100) {
            0..=17 => Target::Hello,
            18..=29 => Target::Presence,
            30..=54 => Target::Status,
            55..=69 => Target::Request,
            70..=89 => Target::Commands,
            90..=96 => Target::BadId,
            _ => Target::Foreign,
        };
        let topic = self.topic(target);
        let payload = self.payload(target);
        (target, topic, payload)
    }

    fn device(&mut self) -> DeviceId {
        let i = self.rng.gen_range(0..self.ids.len());
        self.ids[i].clone()
    }

    fn topic(&mut self, target: Target) -> String {
        let dev = self.device();
        match target {
            Target::Hello => self.topics.build(&Topic::Hello(dev)),
            Target::Presence => self.topics.build(&Topic::Presence(dev)),
            Target::Status => self.topics.build(&Topic::Status(dev)),
            Target::Request => self.topics.build(&Topic::Request(dev)),
            Target::Commands => self.topics.build(&Topic::OpsCommands),
            Target::BadId => {
                // A valid topic with its id level replaced.
                let good = self.topics.build(&Topic::Status(dev));
                let bad_ids = ["dév", "a b", "..", "-", &"x".repeat(300), "#x", "a+b"];
                let id = bad_ids[self.rng.gen_range(0..bad_ids.len())];
                let mut levels: Vec<&str> = good.split('/').collect();
                let n = levels.len();
                if n >= 2 {
                    levels[n - 2] = id;
                }
                let ends = ["status", "hello", "presence", "request"];
                levels[n - 1] = ends[self.rng.gen_range(0..ends.len())];
                levels.join("/")
            }
            Target::Foreign => {
                let prefix = self.topics.build(&Topic::OpsCommands);
                let tails = ["/extra", "x", "/../status"];
                format!("{prefix}{}", tails[self.rng.gen_range(0..tails.len())])
            }
        }
    }

    fn template(&mut self, target: Target) -> Vec<u8> {
        match target {
            Target::Commands => self.command.clone(),
            _ if self.templates.is_empty() => Vec::new(),
            _ => self.templates[self.rng.gen_range(0..self.templates.len())].clone(),
        }
    }

    fn payload(&mut self, target: Target) -> Vec<u8> {
        match self.rng.gen_range(0..10) {
            // Random bytes, now and then over every message bound.
            0..=2 => {
                let len = if self.rng.gen_bool(0.05) {
                    self.rng.gen_range(16_385..20_000)
                } else {
                    self.rng.gen_range(0..512)
                };
                (0..len).map(|_| self.rng.gen()).collect()
            }
            // A valid message, likely of the wrong kind, unchanged.
            3 => self.template(target),
            // A valid message mutated.
            _ => {
                let t = self.template(target);
                self.mutate(t)
            }
        }
    }

    fn mutate(&mut self, mut b: Vec<u8>) -> Vec<u8> {
        let rounds = self.rng.gen_range(1..=4);
        for _ in 0..rounds {
            match self.rng.gen_range(0..6) {
                0 if !b.is_empty() => {
                    let i = self.rng.gen_range(0..b.len());
                    b[i] ^= 1 << self.rng.gen_range(0..8);
                }
                1 if !b.is_empty() => {
                    let i = self.rng.gen_range(0..b.len());
                    b[i] = self.rng.gen();
                }
                2 => {
                    let cut = self.rng.gen_range(0..=b.len());
                    b.truncate(cut);
                }
                3 => {
                    let n = self.rng.gen_range(1..16);
                    for _ in 0..n {
                        b.push(self.rng.gen());
                    }
                }
                4 if !b.is_empty() => {
                    let i = self.rng.gen_range(0..=b.len());
                    let interesting = [0x00, 0xff, 0x7f, 0x80, 0xbf, 0x9f, 0x1b, 0xf6, b'"', b'{'];
                    b.insert(i, interesting[self.rng.gen_range(0..interesting.len())]);
                }
                _ => {
                    // Splice: repeat a slice of itself.
                    if b.len() > 2 {
                        let a = self.rng.gen_range(0..b.len() - 1);
                        let z = self.rng.gen_range(a + 1..b.len());
                        let s = b[a..z].to_vec();
                        let at = self.rng.gen_range(0..=b.len());
                        b.splice(at..at, s);
                    }
                }
            }
        }
        b
    }
}
