//! Unit tests of the machine: one test per rule of PROTOCOL.md "What a
//! device does with an announcement", driven event by event with a fake
//! clock and no broker.

mod campaigns;
mod control;
mod delta;
mod download;
mod install;
mod outbox;
mod steps;
mod subscriptions;

use std::collections::BTreeMap;
use std::sync::Arc;

use schemas::cose::TrustStore;
use schemas::keys::SigningKey;
use schemas::msg::{
    Announcement, Block, BlockRequest, CampaignState, ErrorCode, Hello, Kind, Membership, Status,
    StatusAck, StatusState, WireMessage,
};
use schemas::topic::Topic;
use schemas::{ComponentName, DeviceId, GroupName};

use crate::agent::policy::{DeferPolicy, NeverDefer};
use crate::agent::{Action, Agent, AgentConfig, DeviceState, Event, ImageDigest, Timing};
use crate::testkit::{announcement, pattern_image, TestImage};

pub(super) const T0: u64 = 1_790_000_000_000;

pub(super) fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

pub(super) fn group(s: &str) -> GroupName {
    GroupName::new(s).unwrap()
}

/// A 3-block app image for `esp32` (10 000 bytes, block size 4096).
pub(super) fn image(artifact: &str, version: &str, kind: Kind) -> TestImage {
    TestImage::new(
        artifact,
        kind,
        "main",
        version,
        "esp32",
        pattern_image(10_000, 3),
        4096,
    )
    .unwrap()
}

/// An `esp32` image of `kind` for `component` at `version`: `blocks`
/// blocks of 4096 bytes of the pattern `seed`.
pub(super) fn image_of(
    artifact: &str,
    kind: Kind,
    component: &str,
    version: &str,
    blocks: usize,
    seed: u8,
) -> TestImage {
    TestImage::new(
        artifact,
        kind,
        component,
        version,
        "esp32",
        pattern_image(blocks * 4096, seed),
        4096,
    )
    .unwrap()
}

pub(super) fn ann(campaign: &str, img: &TestImage) -> Announcement {
    announcement(campaign, img.manifest.kind, vec![img.envelope(&key(1))]).unwrap()
}

/// A device under test with its clock and everything it asked for.
pub(super) struct Dev {
    pub agent: Agent,
    pub now: u64,
    pub log: Vec<Action>,
    pub cfg: Arc<AgentConfig>,
}

pub(super) fn config(id: &str) -> AgentConfig {
    AgentConfig {
        id: DeviceId::new(id).unwrap(),
        arch: "esp32".into(),
        labels: [("customer".to_string(), "acme".to_string())].into(),
        trust: Arc::new(TrustStore::new([key(1).verifying_key()])),
        directors: Default::default(),
        deltas: true,
        room_bytes: Some(1 << 20),
        timing: Timing::default(),
    }
}

pub(super) fn versions(main: &str) -> BTreeMap<ComponentName, String> {
    [(ComponentName::new("main").unwrap(), main.to_string())].into()
}

impl Dev {
    pub fn new() -> Self {
        Self::with(config("dev-0001"), Box::new(NeverDefer))
    }

    pub fn with(cfg: AgentConfig, policy: Box<dyn DeferPolicy>) -> Self {
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(9);
        let state = DeviceState::fresh(versions("1.2.0"), T0, &mut rng);
        let cfg = Arc::new(cfg);
        let mut d = Self {
            agent: Agent::new(cfg.clone(), state, policy, 1),
            now: T0,
            log: Vec::new(),
            cfg,
        };
        d.ev(Event::Start);
        d
    }

    /// The same device after a restart from its saved state.
    pub fn restart(&mut self, policy: Box<dyn DeferPolicy>) {
        let state = DeviceState::from_json(&self.agent.state().to_json()).unwrap();
        let mut fresh = Agent::new(self.cfg.clone(), state, policy, self.now);
        // The original's in-memory sets stand in for the block store.
        for j in &self.agent.state().jobs {
            if let Some(h) = &j.have {
                fresh.restore_blocks(&j.manifest.artifact, h.clone());
            }
        }
        self.agent = fresh;
        self.log.clear();
        self.ev(Event::Start);
    }

    pub fn ev(&mut self, e: Event) -> Vec<Action> {
        let out = self.agent.handle(self.now, e);
        self.log.extend(out.iter().cloned());
        out
    }

    pub fn advance(&mut self, ms: u64) {
        self.now += ms;
    }

    /// Connected, then online at once (an ack for nothing yet is above the
    /// last seq, so let the 2 s wait pass).
    pub fn online(&mut self) {
        self.ev(Event::Connected {
            session_present: false,
        });
        self.advance(2_000);
        self.ev(Event::Timer(crate::agent::TimerId::ResendWait));
    }

    pub fn join(&mut self, groups: &[&str]) {
        self.ev(Event::Membership(Membership {
            groups: groups.iter().map(|g| group(g)).collect(),
        }));
    }

    pub fn announce(&mut self, g: &str, a: &Announcement) -> Vec<Action> {
        self.ev(Event::Announcement {
            topic: Topic::GroupCampaign(group(g)),
            payload: Some(a.clone()),
        })
    }

    pub fn announce_on(&mut self, topic: Topic, a: Option<&Announcement>) -> Vec<Action> {
        self.ev(Event::Announcement {
            topic,
            payload: a.cloned(),
        })
    }

    pub fn block(&mut self, img: &TestImage, i: u32) -> Vec<Action> {
        self.ev(Event::Block(img.block(i).unwrap()))
    }

    pub fn blocks(&mut self, img: &TestImage, range: std::ops::Range<u32>) {
        for i in range {
            self.block(img, i);
        }
    }

    /// Answers the pending CheckImage with the real digest of `img`.
    pub fn checked(&mut self, img: &TestImage) -> Vec<Action> {
        use sha2::Digest;
        self.ev(Event::ImageChecked {
            artifact: img.manifest.artifact.clone(),
            result: Ok(ImageDigest {
                size: img.image.len() as u64,
                sha256: sha2::Sha256::digest(&img.image).into(),
            }),
        })
    }

    /// Every Status published so far, decoded, in order.
    pub fn published(&self) -> Vec<Status> {
        statuses(&self.log)
    }

    /// Every Status queued so far (published or not), in order.
    pub fn queued(&self) -> Vec<(StatusState, Option<ErrorCode>)> {
        self.log
            .iter()
            .filter_map(|a| match a {
                Action::Notice(crate::agent::Notice::StatusQueued { state, error, .. }) => {
                    Some((*state, *error))
                }
                _ => None,
            })
            .collect()
    }

    pub fn states(&self) -> Vec<StatusState> {
        self.queued().into_iter().map(|(s, _)| s).collect()
    }

    pub fn requests(&self) -> Vec<BlockRequest> {
        requests(&self.log)
    }

    pub fn hellos(&self) -> Vec<Hello> {
        self.log
            .iter()
            .filter_map(|a| match a {
                Action::Publish {
                    topic: Topic::Hello(_),
                    payload,
                    ..
                } => Some(Hello::decode(payload).unwrap()),
                _ => None,
            })
            .collect()
    }

    pub fn subscribed_to(&self, t: &Topic) -> bool {
        // The last (un)subscription of `t` wins.
        self.log
            .iter()
            .rev()
            .find_map(|a| match a {
                Action::Subscribe(x) if x == t => Some(true),
                Action::Unsubscribe(x) if x == t => Some(false),
                _ => None,
            })
            .unwrap_or(false)
    }

    pub fn ack(&mut self, seq: u64) -> Vec<Action> {
        self.ev(Event::Ack(StatusAck { seq }))
    }

    pub fn clear(&mut self) {
        self.log.clear();
    }
}

/// The exact bytes of the Status publishes among `actions`, in order.
pub(super) fn status_payloads(actions: &[Action]) -> Vec<Vec<u8>> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Publish {
                topic: Topic::Status(_),
                payload,
                ..
            } => Some(payload.clone()),
            _ => None,
        })
        .collect()
}

pub(super) fn statuses(actions: &[Action]) -> Vec<Status> {
    status_payloads(actions)
        .iter()
        .map(|p| Status::decode(p).unwrap())
        .collect()
}

pub(super) fn requests(actions: &[Action]) -> Vec<BlockRequest> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Publish {
                topic: Topic::Request(_),
                payload,
                ..
            } => Some(BlockRequest::decode(payload).unwrap()),
            _ => None,
        })
        .collect()
}

pub(super) fn stored(actions: &[Action]) -> Vec<u32> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::StoreBlock { index, .. } => Some(*index),
            _ => None,
        })
        .collect()
}

pub(super) fn paused(mut a: Announcement) -> Announcement {
    a.state = CampaignState::Paused;
    a
}

pub(super) fn with_state(mut a: Announcement, s: CampaignState) -> Announcement {
    a.state = s;
    a
}

pub(super) fn block_of(img: &TestImage, i: u32) -> Block {
    img.block(i).unwrap()
}

/// A device online, in group `g1`, that accepted `img` as `camp-1` and
/// started downloading it.
pub(super) fn downloading(img: &TestImage) -> Dev {
    let mut d = Dev::new();
    d.online();
    d.join(&["g1"]);
    d.announce("g1", &ann("camp-1", img));
    assert!(d.subscribed_to(&Topic::ArtifactBlocks(img.manifest.artifact.clone())));
    d
}
