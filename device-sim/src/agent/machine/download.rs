//! Download and install (steps 6 and 7): BlockRequests for what is missing
//! (at most 1024 blocks each, a few at a time), every block verified against
//! the Merkle root before it is kept, re-requests after each quiet spell,
//! the timeout, progress reports, then the whole-image check and the
//! install, reboot and boot outcome.

use rand::Rng;
use schemas::bitmap::{requests_for_missing, BlockSet};
use schemas::merkle::{block_range, verify_block};
use schemas::msg::{Block, BlockRequest, ErrorCode, Kind, StatusState, WireMessage};
use schemas::topic::Topic;
use schemas::{ArtifactId, CampaignId};

use super::{install_request, Active, Agent, Link, Report};
use crate::agent::event::{
    Action, BootOutcome, Geometry, ImageDigest, InstallRequest, Notice, TimerId,
};
use crate::agent::state::Stage;

impl Agent {
    /// A quiet spell's end: 2 s plus a uniform jitter of up to 2 s.
    fn quiet_deadline(&mut self, now: u64) -> u64 {
        let t = self.cfg.timing;
        now + t.quiet_ms + self.rng.gen_range(0..=t.quiet_jitter_ms)
    }

    /// Starts or resumes job `i`'s download (its turn has come).
    pub(super) fn start(&mut self, now: u64, i: usize, out: &mut Vec<Action>) {
        let job = &mut self.state.jobs[i];
        let blocks = job.manifest.blocks;
        let have = job
            .have
            .get_or_insert_with(|| BlockSet::new(blocks))
            .count();
        if job.stage != Stage::Downloading {
            job.stage = Stage::Downloading;
            self.dirty = true;
        }
        let campaign = job.campaign.clone();
        let artifact = job.manifest.artifact.clone();
        if have >= blocks {
            self.begin_verify(i, out);
            return;
        }
        out.push(Action::Subscribe(Topic::ArtifactBlocks(artifact)));
        let quiet_deadline = self.quiet_deadline(now);
        self.active = Some(Active {
            campaign: campaign.clone(),
            since_ms: now,
            quiet_deadline,
            requested_until: 0,
            pending: 0,
        });
        out.push(Action::Notice(Notice::DownloadStarted {
            campaign,
            have,
            blocks,
        }));
        self.request_next(out);
        out.push(Action::SetTimer {
            id: TimerId::Quiet,
            at_ms: quiet_deadline,
        });
        self.maybe_progress(now, i, out);
    }

    /// Stops the running download, keeping its blocks.
    pub(super) fn suspend(&mut self, now: u64, out: &mut Vec<Action>) {
        let Some(a) = self.active.take() else { return };
        if let Some(job) = self
            .state
            .jobs
            .iter_mut()
            .find(|j| j.campaign == a.campaign)
        {
            job.stalled_ms += now.saturating_sub(a.since_ms);
            self.dirty = true;
            if self.link != Link::Offline {
                out.push(Action::Unsubscribe(Topic::ArtifactBlocks(
                    job.manifest.artifact.clone(),
                )));
            }
        }
        out.push(Action::Notice(Notice::DownloadSuspended {
            campaign: a.campaign,
        }));
    }

    /// Sends the next requests of this round (a few windows of up to 1024
    /// blocks; the next ones once those are all in).
    fn request_next(&mut self, out: &mut Vec<Action>) {
        let Some(a) = &mut self.active else { return };
        let Some(job) = self.state.jobs.iter().find(|j| j.campaign == a.campaign) else {
            return;
        };
        let Some(have) = &job.have else { return };
        let from = a.requested_until;
        let requests = requests_for_missing(have, job.manifest.blocks)
            .into_iter()
            .filter(|(offset, _)| *offset >= from)
            .take(self.cfg.timing.requests_in_flight);
        for (offset, bitmap) in requests {
            let wanted = bitmap.iter().map(|b| b.count_ones()).sum::<u32>();
            a.pending += wanted;
            // The bitmap holds at most 128 bytes, so this stays in range.
            a.requested_until = offset.saturating_add(bitmap.len() as u32 * 8);
            let req = BlockRequest {
                artifact: job.manifest.artifact.clone(),
                offset,
                bitmap,
            };
            out.push(Action::Publish {
                topic: Topic::Request(self.cfg.id.clone()),
                payload: req.encode(),
                retain: false,
            });
        }
    }

    pub(super) fn on_block(&mut self, now: u64, b: Block, out: &mut Vec<Action>) {
        let Some(a) = &self.active else { return };
        let Some(i) = self
            .state
            .jobs
            .iter()
            .position(|j| j.campaign == a.campaign)
        else {
            return;
        };
        let job = &self.state.jobs[i];
        let m = &job.manifest;
        if b.artifact != m.artifact {
            return;
        }
        let reject = |reason: &'static str| {
            Action::Notice(Notice::BlockRejected {
                artifact: b.artifact.clone(),
                index: b.index,
                reason,
            })
        };
        if b.index >= m.blocks {
            out.push(reject("index past the image"));
            return;
        }
        let Some(have) = &job.have else { return };
        if have.contains(b.index) {
            return;
        }
        let expected = block_range(m.size, m.block_size, b.index).map(|r| r.len());
        if expected != Some(b.data.len()) {
            out.push(reject("wrong length"));
            return;
        }
        if !verify_block(&m.merkle_root, b.index, m.blocks, &b.data, &b.proof) {
            out.push(reject("merkle proof failed"));
            return;
        }
        let quiet = self.quiet_deadline(now);
        let job = &mut self.state.jobs[i];
        let complete = match &mut job.have {
            Some(have) => {
                have.insert(b.index);
                have.is_complete()
            }
            None => false,
        };
        job.stalled_ms = 0;
        out.push(Action::StoreBlock {
            geometry: Geometry::of(&job.manifest),
            artifact: b.artifact,
            index: b.index,
            data: b.data,
        });
        let mut next_round = false;
        if let Some(a) = &mut self.active {
            a.since_ms = now;
            a.quiet_deadline = quiet;
            if b.index < a.requested_until && a.pending > 0 {
                a.pending -= 1;
                next_round = a.pending == 0;
            }
        }
        if complete {
            self.begin_verify(i, out);
            return;
        }
        if next_round {
            self.request_next(out);
        }
        self.maybe_progress(now, i, out);
    }

    /// `downloading` with progress, no more often than the configured
    /// interval (at least 2 s).
    fn maybe_progress(&mut self, now: u64, i: usize, out: &mut Vec<Action>) {
        let every = self.cfg.timing.progress_every_ms;
        let job = &mut self.state.jobs[i];
        if job.last_progress_ms.is_some_and(|t| now < t + every) {
            return;
        }
        job.last_progress_ms = Some(now);
        let progress = job.have.as_ref().map_or(0, BlockSet::count);
        let r = Report::new(
            &job.campaign.clone(),
            Some(&job.manifest.artifact.clone()),
            StatusState::Downloading,
        )
        .progress(u64::from(progress));
        self.report(now, r, out);
    }

    pub(super) fn on_quiet(&mut self, now: u64, out: &mut Vec<Action>) {
        let Some(a) = &self.active else { return };
        if now < a.quiet_deadline {
            out.push(Action::SetTimer {
                id: TimerId::Quiet,
                at_ms: a.quiet_deadline,
            });
            return;
        }
        let campaign = a.campaign.clone();
        let since = a.since_ms;
        let Some(i) = self.state.jobs.iter().position(|j| j.campaign == campaign) else {
            self.active = None;
            return;
        };
        let job = &self.state.jobs[i];
        let stalled = job.stalled_ms + now.saturating_sub(since);
        if stalled >= self.cfg.timing.timeout_ms {
            let artifact = job.manifest.artifact.clone();
            let r = Report::new(&campaign, Some(&artifact), StatusState::Failed)
                .error(Some(ErrorCode::Timeout))
                .detail(Some(format!(
                    "no new verified block for {} s",
                    stalled / 1000
                )));
            self.finish(now, &campaign, r, out);
            self.schedule(now, out);
            return;
        }
        let missing = job
            .have
            .as_ref()
            .map_or(job.manifest.blocks, |h| h.len() - h.count());
        let deadline = self.quiet_deadline(now);
        if let Some(a) = &mut self.active {
            a.requested_until = 0;
            a.pending = 0;
            a.quiet_deadline = deadline;
        }
        out.push(Action::Notice(Notice::ReRequested { campaign, missing }));
        self.request_next(out);
        out.push(Action::SetTimer {
            id: TimerId::Quiet,
            at_ms: deadline,
        });
    }

    /// Every block is in: check the whole image.
    fn begin_verify(&mut self, i: usize, out: &mut Vec<Action>) {
        let job = &mut self.state.jobs[i];
        if self
            .active
            .as_ref()
            .is_some_and(|a| a.campaign == job.campaign)
        {
            self.active = None;
            if self.link != Link::Offline {
                out.push(Action::Unsubscribe(Topic::ArtifactBlocks(
                    job.manifest.artifact.clone(),
                )));
            }
        }
        job.stage = Stage::Verifying;
        self.dirty = true;
        out.push(Action::CheckImage {
            artifact: job.manifest.artifact.clone(),
            geometry: Geometry::of(&job.manifest),
        });
    }

    pub(super) fn on_block_lost(&mut self, artifact: &ArtifactId, index: u32) {
        for job in &mut self.state.jobs {
            if &job.manifest.artifact == artifact && job.stage == Stage::Downloading {
                if let Some(have) = &job.have {
                    let mut fresh = BlockSet::new(have.len());
                    for j in have.iter().filter(|&j| j != index) {
                        fresh.insert(j);
                    }
                    job.have = Some(fresh);
                }
            }
        }
    }

    pub(super) fn on_image_checked(
        &mut self,
        now: u64,
        artifact: &ArtifactId,
        result: Result<ImageDigest, String>,
        out: &mut Vec<Action>,
    ) {
        let Some(i) = self.job_at(Stage::Verifying, |j| &j.manifest.artifact == artifact) else {
            return;
        };
        let job = &self.state.jobs[i];
        let (campaign, m) = (job.campaign.clone(), job.manifest.clone());
        let mismatch = match result {
            Ok(d) => mismatch("the image", &d, &m),
            Err(e) => Some(format!("image unreadable: {e}")),
        };
        if let Some(detail) = mismatch {
            self.fail_hash(now, &campaign, &m.artifact, detail, out);
            return;
        }
        if self.state.jobs[i].full.is_some() {
            // E3: `downloaded` once the rebuilt target checks out.
            self.begin_rebuild(i, out);
            return;
        }
        self.begin_install(now, i, out);
    }

    /// Ends `campaign`'s job as `failed` / `hash_mismatch` with `detail`,
    /// and starts the next.
    pub(super) fn fail_hash(
        &mut self,
        now: u64,
        campaign: &CampaignId,
        artifact: &ArtifactId,
        detail: String,
        out: &mut Vec<Action>,
    ) {
        let r = Report::new(campaign, Some(artifact), StatusState::Failed)
            .error(Some(ErrorCode::HashMismatch))
            .detail(Some(detail));
        self.finish(now, campaign, r, out);
        self.schedule(now, out);
    }

    /// The image to install checked out: `downloaded`, `installing`, install.
    pub(super) fn begin_install(&mut self, now: u64, i: usize, out: &mut Vec<Action>) {
        let job = &self.state.jobs[i];
        let (campaign, m) = (job.campaign.clone(), job.manifest.clone());
        let blocks = u64::from(m.blocks);
        self.report(
            now,
            Report::new(&campaign, Some(&m.artifact), StatusState::Downloaded).progress(blocks),
            out,
        );
        self.report(
            now,
            Report::new(&campaign, Some(&m.artifact), StatusState::Installing),
            out,
        );
        self.hand_off(i, Stage::Installing, Action::Install, out);
    }

    /// Moves job `i` to `stage`, persisted, then hands its install request
    /// to the I/O side as `act` (install, or reboot into the new image).
    fn hand_off(
        &mut self,
        i: usize,
        stage: Stage,
        act: fn(InstallRequest) -> Action,
        out: &mut Vec<Action>,
    ) {
        let job = &mut self.state.jobs[i];
        job.stage = stage;
        self.dirty = true;
        let req = install_request(job);
        self.persist_if_dirty(out);
        out.push(act(req));
    }

    pub(super) fn on_install_done(
        &mut self,
        now: u64,
        campaign: &CampaignId,
        result: Result<(), String>,
        out: &mut Vec<Action>,
    ) {
        let Some(i) = self.job_at(Stage::Installing, |j| &j.campaign == campaign) else {
            return;
        };
        let m = self.state.jobs[i].manifest.clone();
        match (m.kind, result) {
            (_, Err(e)) => {
                let r = Report::new(campaign, Some(&m.artifact), StatusState::Failed)
                    .error(Some(ErrorCode::InstallFailed))
                    .detail(Some(e));
                self.finish(now, campaign, r, out);
            }
            (Kind::Firmware, Ok(())) => {
                self.report(
                    now,
                    Report::new(campaign, Some(&m.artifact), StatusState::Rebooting),
                    out,
                );
                self.hand_off(i, Stage::Rebooting, Action::Reboot, out);
                return;
            }
            (Kind::App | Kind::Config, Ok(())) => {
                self.now_running(i);
                self.persist_if_dirty(out);
                self.publish_hello(out);
                self.finish(
                    now,
                    campaign,
                    Report::new(campaign, Some(&m.artifact), StatusState::Success),
                    out,
                );
            }
        }
        self.schedule(now, out);
    }

    /// Job `i`'s image is what runs now: its version and hash, to persist.
    fn now_running(&mut self, i: usize) {
        let m = &self.state.jobs[i].manifest;
        let (component, version) = (m.component.clone(), m.version.clone());
        let sha256 = super::delta::target(&self.state.jobs[i]).sha256;
        self.state.versions.insert(component.clone(), version);
        self.installed.insert(component, sha256);
        self.dirty = true;
    }

    pub(super) fn on_booted(&mut self, now: u64, outcome: BootOutcome, out: &mut Vec<Action>) {
        let Some(i) = self.job_at(Stage::Rebooting, |_| true) else {
            return;
        };
        let m = self.state.jobs[i].manifest.clone();
        let campaign = self.state.jobs[i].campaign.clone();
        match outcome {
            BootOutcome::Healthy => {
                self.now_running(i);
                self.finish(
                    now,
                    &campaign,
                    Report::new(&campaign, Some(&m.artifact), StatusState::Success),
                    out,
                );
            }
            BootOutcome::RolledBack { detail } => {
                let r = Report::new(&campaign, Some(&m.artifact), StatusState::RolledBack)
                    .error(Some(ErrorCode::BootFailed))
                    .detail(Some(detail));
                self.finish(now, &campaign, r, out);
            }
        }
        self.schedule(now, out);
    }
}

/// Why `what` (of digest `got`) is not the image `want` names; None when
/// it is.
pub(super) fn mismatch(
    what: &str,
    got: &ImageDigest,
    want: &schemas::msg::Manifest,
) -> Option<String> {
    (got.size != want.size || got.sha256 != want.sha256).then(|| {
        format!(
            "{what} is {} bytes with sha256 {}, not the manifest's {} bytes, {}",
            got.size,
            hex::encode(got.sha256),
            want.size,
            hex::encode(want.sha256)
        )
    })
}
