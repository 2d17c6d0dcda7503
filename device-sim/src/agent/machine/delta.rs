//! E3, delta images, in the machine: which delta to take instead of the
//! picked release entry, checking that it still fits when its turn comes,
//! and the rebuild between the payload's check and the install.
//!
//! - Accept: with `deltas` on and the installed image's hash known,
//!   [`choose_delta`] picks a delta that verifies, goes with the picked
//!   entry, starts from the installed version and image, and fits the room
//!   (payload plus target). The job downloads it; its Statuses name it.
//! - Turn: the installed image must still be the delta's `from`; else the
//!   job takes the full image (a delta that does not fit never fails a
//!   campaign), dropping the delta's blocks.
//! - After the payload's `size` and `sha256` check: [`Action::Rebuild`];
//!   a target that is not `target_size` bytes hashing to `target_sha256`
//!   (or a payload that does not decompress) is `failed`/`hash_mismatch`,
//!   and nothing is installed. Otherwise `downloaded`, then install as
//!   usual.

use schemas::msg::{Announcement, Manifest};
use schemas::{CampaignId, ComponentName};

use super::Agent;
use crate::agent::event::{Action, Geometry, ImageDigest, RebuildRequest};
use crate::agent::state::{Job, Stage};
use crate::agent::steps::{choose_delta, InstalledImage};

impl Agent {
    /// The I/O read the running image of `component`: its SHA-256 picks
    /// deltas (E3). Given at boot, before [`Event::Start`](crate::agent::Event::Start).
    pub fn set_installed_image(&mut self, component: ComponentName, sha256: [u8; 32]) {
        self.installed.insert(component, sha256);
    }

    /// SHA-256 of the running image of `component`, when known.
    pub fn installed_image(&self, component: &ComponentName) -> Option<&[u8; 32]> {
        self.installed.get(component)
    }

    /// True when this device lists `delta-zstd` in its Hello: deltas on
    /// and some installed image known.
    pub(super) fn lists_deltas(&self) -> bool {
        self.cfg.deltas && !self.installed.is_empty()
    }

    /// The delta to download instead of `full`, if one fits.
    pub(super) fn delta_for(&self, ann: &Announcement, full: &Manifest) -> Option<Manifest> {
        if !self.cfg.deltas || ann.deltas.is_empty() {
            return None;
        }
        let version = self.state.versions.get(&full.component)?;
        let sha256 = self.installed.get(&full.component)?;
        let at = InstalledImage { version, sha256 };
        choose_delta(ann, full, at, &self.cfg.trust, self.cfg.room_bytes)
    }

    /// When job `i`'s turn comes: a delta whose `from` is no longer what
    /// is installed gives way to the full image.
    pub(super) fn refit_delta(&mut self, i: usize, out: &mut Vec<Action>) {
        let job = &self.state.jobs[i];
        let (Some(full), Some(d)) = (&job.full, &job.manifest.delta) else {
            return;
        };
        let fits = self.cfg.deltas
            && self.state.versions.get(&full.component) == Some(&d.from_version)
            && self.installed.get(&full.component) == Some(&d.from_sha256);
        if fits {
            return;
        }
        let job = &mut self.state.jobs[i];
        if job.stage != Stage::Waiting {
            out.push(Action::DropBlocks {
                artifact: job.manifest.artifact.clone(),
            });
        }
        if let Some(full) = job.full.take() {
            job.manifest = full;
        }
        job.have = None;
        job.stage = Stage::Waiting;
        self.dirty = true;
    }

    /// The payload of delta job `i` checked out: rebuild the target.
    pub(super) fn begin_rebuild(&mut self, i: usize, out: &mut Vec<Action>) {
        let job = &mut self.state.jobs[i];
        job.stage = Stage::Rebuilding;
        self.dirty = true;
        if let Some(req) = rebuild_request(job) {
            self.persist_if_dirty(out);
            out.push(Action::Rebuild(req));
        }
    }

    pub(super) fn on_rebuilt(
        &mut self,
        now: u64,
        campaign: &CampaignId,
        result: Result<ImageDigest, String>,
        out: &mut Vec<Action>,
    ) {
        let Some(i) = self.job_at(Stage::Rebuilding, |j| &j.campaign == campaign) else {
            return;
        };
        let job = &self.state.jobs[i];
        let target = target(job);
        let failed = match result {
            Ok(d) => super::download::mismatch("the rebuilt target", &d, target),
            Err(e) => Some(format!("the delta does not rebuild the target: {e}")),
        };
        if let Some(detail) = failed {
            let artifact = job.manifest.artifact.clone();
            self.fail_hash(now, campaign, &artifact, detail, out);
            return;
        }
        self.begin_install(now, i, out);
    }
}

/// What a job installs: the full image (a delta job's target).
pub(super) fn target(job: &Job) -> &Manifest {
    job.full.as_ref().unwrap_or(&job.manifest)
}

/// The rebuild of a delta job; `None` for a full-image job.
pub(super) fn rebuild_request(job: &Job) -> Option<RebuildRequest> {
    let full = job.full.as_ref()?;
    let d = job.manifest.delta.as_ref()?;
    Some(RebuildRequest {
        campaign: job.campaign.clone(),
        component: full.component.clone(),
        from_sha256: d.from_sha256,
        payload: job.manifest.artifact.clone(),
        target: full.artifact.clone(),
        target_geometry: Geometry::of(full),
        target_sha256: full.sha256,
    })
}
