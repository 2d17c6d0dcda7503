//! The device agent as a pure state machine: `handle(now, event) -> actions`.
//! No I/O, no clock, no randomness of its own (a seeded RNG is passed in):
//! a test drives it event by event, the I/O loop ([`super::io`]) performs
//! what it asks.
//!
//! # Layout
//!
//! - this file: the [`Agent`], the dispatch of events, Status reports.
//! - `link`: connection, Hello, the Status outbox and its resend rules
//!   (step 9).
//! - `campaigns`: membership, held announcements, which campaigns the
//!   device takes part in (step 0), steps 1 to 5, the queue and its turns.
//! - `download`: blocks, quiet spells, timeout (step 6), the image check
//!   and the install (step 7).
//! - `subscriptions`: SUBACKs that refused a subscription, retried with
//!   back-off until granted.
//! - `delta`: E3, delta images: the pick at accept, the refit at the turn,
//!   the rebuild before the install.
//! - [`control`]: E2, signed control messages: [`Agent::admit`] turns a
//!   Membership, Announcement or StatusAck payload into an event only when
//!   the director key signed it for this topic, newer, unexpired.

mod campaigns;
pub mod control;
mod delta;
mod download;
mod link;
mod subscriptions;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use schemas::bitmap::BlockSet;
use schemas::msg::delta::FEATURE_DELTA_ZSTD;
use schemas::msg::{ErrorCode, Hello, Status, StatusState, WireMessage};
use schemas::topic::Topic;
use schemas::{ArtifactId, CampaignId, ComponentName, GroupName, PROTOCOL_VERSION};

use super::config::AgentConfig;
use super::event::{Action, Event, Geometry, InstallRequest, Notice, TimerId};
use super::policy::DeferPolicy;
use super::state::{DeviceState, Job, OutboxEntry, Stage};
use super::steps::clip;

/// The connection as the machine sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    /// No connection: nothing is published, downloads are stopped.
    Offline,
    /// Connected; Statuses wait for a StatusAck or 2 s (step 9).
    Resync,
    /// Connected; Statuses are published as they are made.
    Online,
}

/// An announcement held from one topic, with when it was received.
#[derive(Debug, Clone)]
struct Held {
    ann: schemas::msg::Announcement,
    order: u64,
}

/// The running download's timing (not saved: a restart starts over).
#[derive(Debug, Clone)]
struct Active {
    campaign: CampaignId,
    /// The last new verified block, or when the download (re)started.
    since_ms: u64,
    /// When the current quiet spell ends.
    quiet_deadline: u64,
    /// Requests sent this round cover blocks below this index.
    requested_until: u32,
    /// Blocks asked for this round and not yet verified.
    pending: u32,
}

/// One device's update logic. See the module doc.
pub struct Agent {
    cfg: Arc<AgentConfig>,
    state: DeviceState,
    policy: Box<dyn DeferPolicy>,
    rng: StdRng,
    boot_id: String,
    link: Link,
    groups: BTreeSet<GroupName>,
    held: HashMap<Topic, Held>,
    received: u64,
    active: Option<Active>,
    resend_wait_until: Option<u64>,
    dirty: bool,
    /// E3: SHA-256 of each component's running image, from the I/O at
    /// boot and after each install.
    installed: BTreeMap<ComponentName, [u8; 32]>,
    /// Subscriptions the broker refused, retried with back-off (this
    /// connection's; at most one per topic wanted).
    refused: Vec<subscriptions::Refused>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("id", &self.cfg.id)
            .field("link", &self.link)
            .field("jobs", &self.state.jobs.len())
            .field("outbox", &self.state.outbox.entries.len())
            .finish_non_exhaustive()
    }
}

/// The fields of one Status report.
struct Report {
    campaign: CampaignId,
    artifact: Option<ArtifactId>,
    state: StatusState,
    progress: Option<u64>,
    error: Option<ErrorCode>,
    detail: Option<String>,
}

impl Report {
    fn new(campaign: &CampaignId, artifact: Option<&ArtifactId>, state: StatusState) -> Self {
        Self {
            campaign: campaign.clone(),
            artifact: artifact.cloned(),
            state,
            progress: None,
            error: None,
            detail: None,
        }
    }

    fn error(mut self, error: Option<ErrorCode>) -> Self {
        self.error = error;
        self
    }

    fn detail(mut self, detail: Option<String>) -> Self {
        self.detail = detail.map(clip);
        self
    }

    fn progress(mut self, progress: u64) -> Self {
        self.progress = Some(progress);
        self
    }
}

impl Agent {
    /// An agent booting with `state` (saved, or [`DeviceState::fresh`]).
    /// `seed` feeds the jitter and the boot id. Feed [`Event::Start`] first.
    pub fn new(
        cfg: Arc<AgentConfig>,
        state: DeviceState,
        policy: Box<dyn DeferPolicy>,
        seed: u64,
    ) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let boot_id = (0..16)
            .map(|_| char::from(b"0123456789abcdef"[rng.gen_range(0..16)]))
            .collect();
        Self {
            cfg,
            state,
            policy,
            rng,
            boot_id,
            link: Link::Offline,
            groups: BTreeSet::new(),
            held: HashMap::new(),
            received: 0,
            active: None,
            resend_wait_until: None,
            dirty: false,
            installed: BTreeMap::new(),
            refused: Vec::new(),
        }
    }

    /// Takes the deferral policy back (to build the agent of the next boot).
    pub fn into_policy(self) -> Box<dyn DeferPolicy> {
        self.policy
    }

    /// True while connected (a `Connected` was the last link event).
    pub fn is_connected(&self) -> bool {
        self.link != Link::Offline
    }

    /// The state to save on [`Action::Persist`].
    pub fn state(&self) -> &DeviceState {
        &self.state
    }

    /// The device's configuration.
    pub fn config(&self) -> &AgentConfig {
        &self.cfg
    }

    /// This boot's id.
    pub fn boot_id(&self) -> &str {
        &self.boot_id
    }

    /// The firmware install waiting for its boot outcome, if any: the I/O
    /// asks the installer how the boot went and feeds [`Event::Booted`].
    pub fn pending_boot(&self) -> Option<InstallRequest> {
        self.state
            .jobs
            .iter()
            .find(|j| j.stage == Stage::Rebooting)
            .map(install_request)
    }

    /// Artifacts whose verified blocks the block store should load before
    /// [`Event::Start`]: every job that has begun downloading.
    pub fn partial_downloads(&self) -> Vec<(ArtifactId, Geometry)> {
        self.state
            .jobs
            .iter()
            .filter(|j| matches!(j.stage, Stage::Downloading | Stage::Verifying))
            .map(|j| (j.manifest.artifact.clone(), Geometry::of(&j.manifest)))
            .collect()
    }

    /// Gives a job its verified blocks as loaded from the block store. A
    /// set of the wrong length is ignored (the download starts over).
    pub fn restore_blocks(&mut self, artifact: &ArtifactId, have: BlockSet) {
        for job in &mut self.state.jobs {
            if &job.manifest.artifact == artifact && have.len() == job.manifest.blocks {
                job.have = Some(have.clone());
            }
        }
    }

    /// Verified blocks of the running download, if any: `(have, blocks)`.
    pub fn download_progress(&self) -> Option<(u32, u32)> {
        let a = self.active.as_ref()?;
        let job = self.state.jobs.iter().find(|j| j.campaign == a.campaign)?;
        Some((
            job.have.as_ref().map_or(0, BlockSet::count),
            job.manifest.blocks,
        ))
    }

    /// Handles one event at `now_ms` and returns what to do, in order.
    pub fn handle(&mut self, now_ms: u64, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
        let now = now_ms;
        match event {
            Event::Start => self.on_start(&mut out),
            Event::Booted(outcome) => self.on_booted(now, outcome, &mut out),
            Event::Connected { .. } => self.on_connected(now, &mut out),
            Event::Disconnected => self.on_disconnected(now, &mut out),
            Event::Membership(m) => self.on_membership(now, m, &mut out),
            Event::Announcement { topic, payload } => {
                self.on_announcement(now, topic, payload, &mut out)
            }
            Event::Block(b) => self.on_block(now, b, &mut out),
            Event::Ack(a) => self.on_ack(now, a.seq, &mut out),
            Event::Subscribed { topic, granted } => {
                self.on_subscribed(now, topic, granted, &mut out)
            }
            Event::Timer(id) => self.on_timer(now, id, &mut out),
            Event::ImageChecked { artifact, result } => {
                self.on_image_checked(now, &artifact, result, &mut out)
            }
            Event::InstallDone { campaign, result } => {
                self.on_install_done(now, &campaign, result, &mut out)
            }
            Event::Rebuilt { campaign, result } => {
                self.on_rebuilt(now, &campaign, result, &mut out)
            }
            Event::BlockLost { artifact, index } => self.on_block_lost(&artifact, index),
        }
        self.persist_if_dirty(&mut out);
        out
    }

    fn on_timer(&mut self, now: u64, id: TimerId, out: &mut Vec<Action>) {
        match id {
            TimerId::ResendWait => self.on_resend_wait(now, out),
            TimerId::Resend => self.on_resend(now, out),
            TimerId::Quiet => self.on_quiet(now, out),
            TimerId::Relook(c) => self.on_relook(now, &c, out),
            TimerId::Resubscribe => self.on_resubscribe(now, out),
        }
    }

    fn on_start(&mut self, out: &mut Vec<Action>) {
        let mut rearm = Vec::new();
        for job in &self.state.jobs {
            if let Some(at) = job.defer_until_ms {
                rearm.push(Action::SetTimer {
                    id: TimerId::Relook(job.campaign.clone()),
                    at_ms: at,
                });
            }
            match job.stage {
                Stage::Verifying => rearm.push(Action::CheckImage {
                    artifact: job.manifest.artifact.clone(),
                    geometry: Geometry::of(&job.manifest),
                }),
                Stage::Rebuilding => rearm.extend(delta::rebuild_request(job).map(Action::Rebuild)),
                // Installing again is the installer's to make idempotent.
                Stage::Installing => rearm.push(Action::Install(install_request(job))),
                _ => {}
            }
        }
        out.extend(rearm);
    }

    /// Saves before anything that must follow durable state.
    fn persist_if_dirty(&mut self, out: &mut Vec<Action>) {
        if self.dirty {
            out.push(Action::Persist);
            self.dirty = false;
        }
    }

    /// Adds a Status to the outbox, and publishes it when online.
    fn report(&mut self, now: u64, r: Report, out: &mut Vec<Action>) {
        let seq = self.state.outbox.next_seq;
        self.state.outbox.next_seq = seq.saturating_add(1);
        let status = Status {
            seq,
            campaign: Some(r.campaign.clone()),
            artifact: r.artifact,
            state: r.state,
            progress: r.progress,
            error: r.error,
            detail: r.detail,
            versions: self.state.versions.clone(),
        };
        self.state.outbox.entries.push_back(OutboxEntry {
            seq,
            payload: status.encode(),
            published_at: None,
        });
        self.dirty = true;
        out.push(Action::Notice(Notice::StatusQueued {
            seq,
            campaign: Some(r.campaign),
            state: r.state,
            error: r.error,
        }));
        if self.link == Link::Online {
            self.persist_if_dirty(out);
            self.publish_entry(now, self.state.outbox.entries.len() - 1, out);
            self.arm_resend(out);
        }
    }

    /// The job at `stage` that `pick` accepts: the one a result of that
    /// stage's I/O (a hash, a rebuild, an install, a boot) belongs to.
    fn job_at(&self, stage: Stage, pick: impl Fn(&Job) -> bool) -> Option<usize> {
        self.state
            .jobs
            .iter()
            .position(|j| j.stage == stage && pick(j))
    }

    /// A terminal report: the job (if any) ends, its blocks go, the
    /// campaign is ignored from now on (step 8).
    fn finish(&mut self, now: u64, campaign: &CampaignId, r: Report, out: &mut Vec<Action>) {
        if let Some(i) = self.state.jobs.iter().position(|j| &j.campaign == campaign) {
            if self
                .active
                .as_ref()
                .is_some_and(|a| &a.campaign == campaign)
            {
                self.active = None;
                if self.link != Link::Offline {
                    out.push(Action::Unsubscribe(Topic::ArtifactBlocks(
                        self.state.jobs[i].manifest.artifact.clone(),
                    )));
                }
            }
            let job = self.state.jobs.remove(i);
            if job.stage != Stage::Waiting {
                out.push(Action::DropBlocks {
                    artifact: job.manifest.artifact.clone(),
                });
                // E3: the rebuilt target, if it was made.
                if let Some(full) = &job.full {
                    out.push(Action::DropBlocks {
                        artifact: full.artifact.clone(),
                    });
                }
            }
        }
        self.state.done.insert(campaign.clone());
        self.dirty = true;
        self.report(now, r, out);
    }
}

/// The install request of a job: its full image (E3: a delta's target).
fn install_request(job: &Job) -> InstallRequest {
    let m = delta::target(job);
    InstallRequest {
        campaign: job.campaign.clone(),
        artifact: m.artifact.clone(),
        kind: m.kind,
        component: m.component.clone(),
        version: m.version.clone(),
        size: m.size,
    }
}

/// Builds this device's Hello.
fn hello(agent: &Agent) -> Hello {
    Hello {
        proto: PROTOCOL_VERSION,
        arch: agent.cfg.arch.clone(),
        versions: agent.state.versions.clone(),
        labels: agent.cfg.labels.clone(),
        boot_id: agent.boot_id.clone(),
        epoch: agent.state.outbox.epoch.clone(),
        outbox: agent.state.outbox.low_water(),
        features: if agent.lists_deltas() {
            vec![FEATURE_DELTA_ZSTD.to_string()]
        } else {
            Vec::new()
        },
    }
}
