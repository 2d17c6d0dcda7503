//! Which campaigns the device takes part in, and in what order (steps 0 to
//! 5): membership, the announcements held per topic, the verdict of steps 1
//! to 3, deferral, pause/abort/gone, and whose turn it is to download.

use std::cmp::Ordering;
use std::collections::BTreeSet;

use schemas::bucket::admitted;
use schemas::msg::{Announcement, CampaignState, Membership, StatusState};
use schemas::topic::Topic;
use schemas::version::cmp_precedence;
use schemas::CampaignId;

use super::{Agent, Held, Link, Report};
use crate::agent::event::{Action, Notice, TimerId};
use crate::agent::state::{Job, Stage};
use crate::agent::steps::{evaluate, Verdict};

/// What the held announcements say about one campaign.
#[derive(Debug, Clone)]
pub(super) struct View {
    /// `state` of the announcement received last.
    pub state: CampaignState,
    /// `emergency` of the announcement received last.
    pub emergency: bool,
    /// Active, and some held announcement admits the device.
    pub participating: bool,
    /// The announcement received last.
    pub latest: Announcement,
}

impl Agent {
    pub(super) fn on_membership(&mut self, now: u64, m: Membership, out: &mut Vec<Action>) {
        let new: BTreeSet<_> = m.groups.into_iter().collect();
        let online = self.link != Link::Offline;
        for g in new.difference(&self.groups) {
            if online {
                out.push(Action::Subscribe(Topic::GroupCampaign(g.clone())));
                out.push(Action::Subscribe(Topic::GroupEmergency(g.clone())));
            }
        }
        for g in self.groups.difference(&new) {
            if online {
                out.push(Action::Unsubscribe(Topic::GroupCampaign(g.clone())));
                out.push(Action::Unsubscribe(Topic::GroupEmergency(g.clone())));
            }
            self.held.remove(&Topic::GroupCampaign(g.clone()));
            self.held.remove(&Topic::GroupEmergency(g.clone()));
        }
        self.groups = new;
        self.forget_unwanted_refusals();
        self.reconcile(now, out);
    }

    pub(super) fn on_announcement(
        &mut self,
        now: u64,
        topic: Topic,
        payload: Option<Announcement>,
        out: &mut Vec<Action>,
    ) {
        let followed = match &topic {
            Topic::Emergency => true,
            Topic::GroupCampaign(g) | Topic::GroupEmergency(g) => self.groups.contains(g),
            _ => false,
        };
        if !followed {
            out.push(Action::Notice(Notice::AnnouncementIgnored));
            return;
        }
        let new_campaign = payload.as_ref().map(|a| a.campaign.clone());
        let old = match payload {
            None => self.held.remove(&topic),
            Some(ann) => {
                self.received += 1;
                self.held.insert(
                    topic,
                    Held {
                        ann,
                        order: self.received,
                    },
                )
            }
        };
        // Step 8: an ended campaign may be forgotten once no announcement
        // names it any more: here, when its topic now says something else.
        if let Some(old) = old {
            let c = old.ann.campaign;
            if Some(&c) != new_campaign.as_ref()
                && self.state.done.contains(&c)
                && !self.held.values().any(|h| h.ann.campaign == c)
            {
                self.state.done.remove(&c);
                self.dirty = true;
            }
        }
        self.reconcile(now, out);
    }

    /// The campaign as the held announcements describe it.
    pub(super) fn view(&self, c: &CampaignId) -> Option<View> {
        let mut latest: Option<&Held> = None;
        let mut admits = false;
        for h in self.held.values().filter(|h| &h.ann.campaign == c) {
            if latest.is_none_or(|l| h.order > l.order) {
                latest = Some(h);
            }
            admits |= admitted(c, &self.cfg.id, h.ann.cohort, h.ann.emergency);
        }
        let l = latest?;
        Some(View {
            state: l.ann.state,
            emergency: l.ann.emergency,
            participating: l.ann.state == CampaignState::Active && admits,
            latest: l.ann.clone(),
        })
    }

    /// After anything that changes what the device holds: take part in new
    /// campaigns, apply abort, then give the turn.
    pub(super) fn reconcile(&mut self, now: u64, out: &mut Vec<Action>) {
        let mut fresh: Vec<CampaignId> = self
            .held
            .values()
            .map(|h| h.ann.campaign.clone())
            .filter(|c| {
                !self.state.done.contains(c) && !self.state.jobs.iter().any(|j| &j.campaign == c)
            })
            .collect();
        fresh.sort();
        fresh.dedup();
        // Several new campaigns at once: take part in the order received.
        fresh.sort_by_key(|c| {
            self.held
                .values()
                .filter(|h| &h.ann.campaign == c)
                .map(|h| h.order)
                .max()
                .unwrap_or(0)
        });
        for c in fresh {
            if let Some(v) = self.view(&c) {
                if v.participating {
                    self.take_part(now, &c, &v.latest, out);
                }
            }
        }
        let campaigns: Vec<CampaignId> =
            self.state.jobs.iter().map(|j| j.campaign.clone()).collect();
        for c in campaigns {
            let Some(v) = self.view(&c) else { continue };
            let Some(job) = self.state.jobs.iter_mut().find(|j| j.campaign == c) else {
                continue;
            };
            if job.emergency != v.emergency {
                job.emergency = v.emergency;
                self.dirty = true;
            }
            let stoppable = matches!(
                job.stage,
                Stage::Waiting | Stage::Downloading | Stage::Verifying | Stage::Rebuilding
            );
            if v.state == CampaignState::Aborted && stoppable {
                let artifact = job.manifest.artifact.clone();
                let r = Report::new(&c, Some(&artifact), StatusState::Cancelled)
                    .detail(Some("aborted".into()));
                self.finish(now, &c, r, out);
            }
        }
        self.schedule(now, out);
    }

    /// Steps 1 to 4 for a campaign seen for the first time.
    fn take_part(&mut self, now: u64, c: &CampaignId, ann: &Announcement, out: &mut Vec<Action>) {
        let verdict = evaluate(
            ann,
            &self.cfg.arch,
            &self.cfg.trust,
            &self.state.versions,
            self.cfg.room_bytes,
        );
        match verdict {
            Verdict::Terminal(t) => {
                let r = Report::new(c, t.artifact.as_ref(), t.state)
                    .error(t.error)
                    .detail(t.detail);
                self.finish(now, c, r, out);
            }
            Verdict::Accept(m) => {
                let installed = self
                    .state
                    .versions
                    .get(&m.component)
                    .cloned()
                    .unwrap_or_default();
                // E3: a delta that fits instead; its Statuses name it.
                let (manifest, full) = match self.delta_for(ann, &m) {
                    Some(d) => (d, Some(*m)),
                    None => (*m, None),
                };
                let artifact = manifest.artifact.clone();
                self.state.jobs.push(Job {
                    campaign: c.clone(),
                    manifest,
                    full,
                    emergency: ann.emergency,
                    installed_at_accept: installed,
                    deferred_reported: false,
                    defer_until_ms: None,
                    stage: Stage::Waiting,
                    stalled_ms: 0,
                    have: None,
                    last_progress_ms: None,
                });
                self.dirty = true;
                self.report(
                    now,
                    Report::new(c, Some(&artifact), StatusState::Accepted),
                    out,
                );
                if !ann.emergency {
                    self.maybe_defer(now, c, out);
                }
            }
        }
    }

    /// Step 4: ask the policy; report `deferred` once; look again later.
    fn maybe_defer(&mut self, now: u64, c: &CampaignId, out: &mut Vec<Action>) {
        let Some(i) = self.state.jobs.iter().position(|j| &j.campaign == c) else {
            return;
        };
        let Some(ms) = self.policy.defer(now, c, &self.state.jobs[i].manifest) else {
            return;
        };
        let at = now.saturating_add(ms);
        let job = &mut self.state.jobs[i];
        job.defer_until_ms = Some(at);
        self.dirty = true;
        out.push(Action::SetTimer {
            id: TimerId::Relook(c.clone()),
            at_ms: at,
        });
        if !job.deferred_reported {
            job.deferred_reported = true;
            let artifact = job.manifest.artifact.clone();
            self.report(
                now,
                Report::new(c, Some(&artifact), StatusState::Deferred),
                out,
            );
        }
    }

    /// A deferred campaign's own timer: go on from step 0.
    pub(super) fn on_relook(&mut self, now: u64, c: &CampaignId, out: &mut Vec<Action>) {
        let Some(job) = self.state.jobs.iter_mut().find(|j| &j.campaign == c) else {
            return;
        };
        match job.defer_until_ms {
            Some(at) if now >= at => {
                job.defer_until_ms = None;
                self.dirty = true;
            }
            _ => return,
        }
        if let Some(v) = self.view(c) {
            if v.participating && !v.emergency {
                self.maybe_defer(now, c, out);
            }
        }
        self.reconcile(now, out);
    }

    /// Whether job `i` may download now.
    fn runnable(&self, i: usize) -> bool {
        let job = &self.state.jobs[i];
        self.link != Link::Offline
            && matches!(job.stage, Stage::Waiting | Stage::Downloading)
            && (job.emergency || job.defer_until_ms.is_none())
            && self.view(&job.campaign).is_some_and(|v| v.participating)
    }

    /// Gives the turn: at most one download; emergencies first and
    /// pre-empting; otherwise accept order; a stopped job does not hold it.
    pub(super) fn schedule(&mut self, now: u64, out: &mut Vec<Action>) {
        // Each pass either returns or ends a job or the running download,
        // so this terminates; the bound is a guard.
        for _ in 0..=self.state.jobs.len() * 2 + 2 {
            if self.state.jobs.iter().any(|j| {
                matches!(
                    j.stage,
                    Stage::Verifying | Stage::Rebuilding | Stage::Installing | Stage::Rebooting
                )
            }) {
                return;
            }
            let runnable: Vec<usize> = (0..self.state.jobs.len())
                .filter(|&i| self.runnable(i))
                .collect();
            let best = runnable
                .iter()
                .copied()
                .find(|&i| self.state.jobs[i].emergency)
                .or_else(|| runnable.first().copied());
            if let Some(a) = &self.active {
                let Some(ai) = self
                    .state
                    .jobs
                    .iter()
                    .position(|j| j.campaign == a.campaign)
                else {
                    self.active = None;
                    continue;
                };
                let pre_empted = best.is_some_and(|b| self.state.jobs[b].emergency)
                    && !self.state.jobs[ai].emergency;
                if runnable.contains(&ai) && !pre_empted {
                    return;
                }
                self.suspend(now, out);
                continue;
            }
            let Some(b) = best else { return };
            if self.superseded(now, b, out) {
                continue;
            }
            self.refit_delta(b, out);
            self.start(now, b, out);
            if self.active.is_some() {
                return;
            }
        }
    }

    /// When a job's turn comes: cancelled / superseded if the installed
    /// version changed since it was accepted and it is no longer above it.
    fn superseded(&mut self, now: u64, i: usize, out: &mut Vec<Action>) -> bool {
        let job = &self.state.jobs[i];
        let installed = self
            .state
            .versions
            .get(&job.manifest.component)
            .cloned()
            .unwrap_or_default();
        if installed == job.installed_at_accept
            || cmp_precedence(&job.manifest.version, &installed) == Ordering::Greater
        {
            return false;
        }
        let c = job.campaign.clone();
        let artifact = job.manifest.artifact.clone();
        let r = Report::new(&c, Some(&artifact), StatusState::Cancelled)
            .detail(Some("superseded".into()));
        self.finish(now, &c, r, out);
        true
    }
}
