//! The campaign manager: every campaign's record and live tally, inside the
//! core actor. Core calls it with operator commands, committed status
//! changes, membership changes and a one-second tick, in the order they
//! happen; it steps the gates, and carries out what they decide.
//!
//! Long file: one owner of every campaign with one method per input; what
//! is pure is elsewhere (the gate, the tally, admission, announcements,
//! events and views are their own modules).
//!
//! # Carrying out a step (`Campaigns::apply`)
//!
//! 1. After every `WaveStarted`, the new wave's members are computed and
//!    its counts sent at once (also for an empty wave: only counts tell
//!    the gate a wave is empty); that may start the next wave, and so on.
//! 2. If the steps returned effects: the record (gate included) is
//!    written, the new announcements are written to the retained tree, and
//!    one flush makes both durable. Only then are the announcements
//!    published (retained) and the events sent. A bridge killed at any
//!    point finds its store at or ahead of what the broker saw, and the
//!    retained tree is republished at start.
//! 3. An emergency's artifacts are marked at the block server while it is
//!    live, and unmarked when it completes or is aborted.
//!
//! # Restart ([`Campaigns::load`], then [`Campaigns::started`])
//!
//! Records are loaded with each live campaign's device states from the
//! status store; once core has its fleet, every live campaign gets its
//! current members and fresh counts before the first tick, so a wave
//! whose timeout passed while the bridge was down is judged on what the
//! devices actually reported.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Duration;

use schemas::ops::Event;
use schemas::{ArtifactId, CampaignId, DeviceId, GroupName};
use tracing::{error, info, warn};

use super::announce;
use super::error::CampaignError;
use super::events;
use super::followup::{self, FollowUpError, Leftover};
use super::gate::{AnnounceState, Effect, Gate, Input, Phase, Scope, WaveCounts};
use super::members::Admission;
use super::preflight::PreflightScan;
use super::prepared::{take_or_compute, Prepared};
use super::record::{CampaignRecord, Release, WaveEnd};
use super::roster;
use super::spec::{CampaignSpec, WaveSpec, FULL_COHORT};
use super::store::CampaignStore;
use super::tally::{Anomalies, Report, Tally};
use super::view::{self, CampaignList, CampaignStatus};
use super::window::Windows;
use crate::blocks::BlockServerHandle;
use crate::fleet::Fleet;
use crate::identity::Identity;
use crate::metrics::Metrics;
use crate::mqtt::Publisher;
use crate::status::StatusUpdate;
use crate::store::{Store, StoreError};

/// How often due gates are stepped and progress events sent.
pub const TICK: Duration = Duration::from_secs(1);

/// The first tick comes this long after start: a timer that fell due while
/// the bridge was down is judged once the reports the broker held for it
/// (its persistent session) have been stored and counted, not before.
pub const FIRST_TICK: Duration = Duration::from_secs(3);

/// What the manager works with, borrowed from core for one call (made in
/// one place, `state::CoreState::campaigns_mut`): the store handles, the
/// publisher, the block server and the fleet it reads. The clock is the
/// `now` each call is given.
pub struct Ctx<'a> {
    pub fleet: &'a Fleet,
    /// What each provisioned device trusts (pre-flight).
    pub identity: &'a Identity,
    pub store: &'a Store,
    pub publisher: &'a Publisher,
    /// The block server, to mark emergency artifacts (absent in tests of
    /// the core alone).
    pub blocks: Option<&'a BlockServerHandle>,
    /// The bridge's counters (`status_anomalies`).
    pub metrics: &'a Metrics,
}

/// One campaign in memory.
struct Entry {
    record: CampaignRecord,
    tally: Tally,
    /// Anomalies counted since the last tick (flagged once per tick).
    anomalies: Anomalies,
    /// False for a finished campaign loaded at start: its device states
    /// are read on the first `status`.
    tally_loaded: bool,
    /// The counts last sent as a progress event.
    progress_sent: Option<WaveCounts>,
    /// Counts held back during the start grace (see [`Campaigns::started`]).
    counts_due: bool,
    /// The spec's maintenance windows, parsed once.
    windows: Windows,
}

/// Every campaign.
pub struct Campaigns {
    store: CampaignStore,
    entries: BTreeMap<CampaignId, Entry>,
    /// Until then, a gate whose timer is already due gets no counts (see
    /// [`Campaigns::started`]).
    grace_until: u64,
    /// Artifacts the block server was told to hold (see [`Campaigns::sync_holds`]).
    held: HashSet<ArtifactId>,
    /// Halted campaigns whose rollback is to start (core's next tick
    /// starts them: `state::rollback`).
    rollbacks_due: Vec<CampaignId>,
    /// Scheduled drafts whose start was refused (logged once).
    start_blocked: HashSet<CampaignId>,
    /// Wave members found ahead, in slices (`super::prepared`).
    prepared: Prepared,
    /// The pre-flight of a create being prepared, in slices.
    preflight: Option<(PreflightScan, Signers)>,
}

/// The key that signed each arch's manifest of a release, read once (not
/// once per device): a device that is known not to trust its arch's is
/// counted as unverifiable by the pre-flight.
#[derive(Debug)]
pub struct Signers {
    by_arch: BTreeMap<String, Option<schemas::keys::Kid>>,
    any: Option<schemas::keys::Kid>,
}

impl Signers {
    fn of(release: &Release) -> Self {
        Self {
            by_arch: release
                .arches()
                .map(|a| (a.to_string(), release.signer_of(a)))
                .collect(),
            any: release.signer_of(schemas::msg::manifest::ANY_ARCH),
        }
    }

    fn distrusts(&self, identity: &Identity, id: &DeviceId, arch: &str) -> bool {
        self.by_arch
            .get(arch)
            .copied()
            .unwrap_or(self.any)
            .and_then(|kid| identity.trusts(id, &kid))
            == Some(false)
    }
}

impl Campaigns {
    /// Loads every campaign, and the device states of the live ones. Blocks
    /// (reads the campaign tree and scans the status store once per live
    /// campaign): call with `spawn_blocking`.
    pub fn load(store: &Store) -> Result<Campaigns, StoreError> {
        let cs = CampaignStore::open(store.db())?;
        let loaded = cs.all()?;
        for (key, e) in loaded.unreadable {
            error!(campaign = %key, error = %e, "stored campaign does not read; it is left alone (restore data_dir from a backup to get it back)");
        }
        let mut entries = BTreeMap::new();
        for record in loaded.records {
            let mut tally = tally_of(&record);
            let live = record.is_live();
            if live {
                for (device, cur) in store.status.currents_of_campaign(record.id())? {
                    tally.report(&device, report_of(&cur));
                }
            }
            entries.insert(
                record.id().clone(),
                Entry {
                    windows: Windows::of(record.id(), &record.spec.windows),
                    record,
                    tally,
                    anomalies: Anomalies::default(),
                    tally_loaded: live,
                    progress_sent: None,
                    counts_due: false,
                },
            );
        }
        Ok(Campaigns {
            store: cs,
            entries,
            grace_until: 0,
            held: HashSet::new(),
            rollbacks_due: Vec::new(),
            start_blocked: HashSet::new(),
            prepared: Prepared::default(),
            preflight: None,
        })
    }

    /// How many campaigns, and how many of them are live.
    pub fn len(&self) -> (usize, usize) {
        let live = self.entries.values().filter(|e| e.record.is_live()).count();
        (self.entries.len(), live)
    }

    /// The campaign that uses `artifact` and has not ended, if any: the
    /// artifact delete guard. A draft counts (it will announce the
    /// artifact when started).
    pub fn user_of(&self, artifact: &ArtifactId) -> Option<CampaignId> {
        self.entries
            .values()
            .find(|e| !e.record.gate.is_finished() && e.record.uses(artifact))
            .map(|e| e.record.id().clone())
    }

    /// A campaign's record.
    pub fn get(&self, id: &CampaignId) -> Option<&CampaignRecord> {
        self.entries.get(id).map(|e| &e.record)
    }

    /// Once core has its fleet (at start): every live campaign gets its
    /// members and fresh counts, and live emergencies their block
    /// priority, before the first tick.
    ///
    /// A gate whose timer fell due while the bridge was down would judge
    /// its wave on the first input it gets. For [`FIRST_TICK`] its counts
    /// are held back, so that the reports the broker kept for the bridge,
    /// and those devices re-send once reconnected, are stored and counted
    /// first; the first tick then sends the counts and judges.
    ///
    pub async fn started(&mut self, ctx: &Ctx<'_>, now: u64) -> Result<(), CampaignError> {
        self.grace_until = now.saturating_add(FIRST_TICK.as_secs());
        let live: Vec<CampaignId> = self
            .entries
            .values()
            .filter(|e| e.record.is_live())
            .map(|e| e.record.id().clone())
            .collect();
        for id in &live {
            if let Some(e) = self.entries.get(id) {
                if e.record.is_emergency() {
                    mark_emergency(ctx, &e.record, true).await;
                }
            }
            self.recount(ctx, id, now).await?;
        }
        self.sync_holds(ctx).await;
        // A halt whose rollback did not start before the bridge stopped.
        for e in self.entries.values() {
            if e.record.rollback.is_some()
                && e.record.rollback_child.is_none()
                && matches!(e.record.gate.phase(), Phase::Halted { .. })
            {
                self.rollbacks_due.push(e.record.id().clone());
            }
        }
        if !live.is_empty() {
            info!(
                live = live.len(),
                total = self.entries.len(),
                "campaigns resumed from the store"
            );
        }
        Ok(())
    }

    /// `campaign create`: checks the spec, the groups and the release,
    /// computes the pre-flight and stores a draft.
    pub fn create(
        &mut self,
        ctx: &Ctx<'_>,
        spec: CampaignSpec,
        release: Release,
        rollback: Option<Release>,
        now: u64,
    ) -> Result<CampaignStatus, CampaignError> {
        spec.validate()?;
        if self.entries.contains_key(&spec.id) || self.store.contains(&spec.id)? {
            return Err(CampaignError::Exists(spec.id));
        }
        if let Some(at) = spec.start_at.filter(|&at| at <= now) {
            return Err(CampaignError::StartInThePast { at, now });
        }
        if let Some(at) = spec.stop_at.filter(|&at| at <= now) {
            return Err(CampaignError::StopInThePast { at, now });
        }
        for g in spec.target_groups() {
            if ctx.fleet.groups().get(&g).is_none() {
                return Err(CampaignError::NoGroup(g));
            }
        }
        let gate = Gate::new(&spec)?;
        let final_cohorts = spec.cohorts_at(usize::MAX);
        let signers = Signers::of(&release);
        let distrusts = |id: &DeviceId, arch: &str| signers.distrusts(ctx.identity, id, arch);
        // The count prepared in slices for this very create, or one now.
        let arches: Vec<&str> = release.arches().collect();
        let scan = match self.preflight.take() {
            Some((p, _)) if p.is_for(&spec.id, &final_cohorts, spec.emergency, &arches) => p,
            _ => PreflightScan::new(
                Admission {
                    campaign: &spec.id,
                    cohorts: &final_cohorts,
                    emergency: spec.emergency,
                },
                arches,
            ),
        };
        let mut preflight = scan.finish(ctx.fleet, &distrusts);
        preflight.release_kids = release.signers();
        if !release.deltas.is_empty() {
            let rules = super::plan::rules_of(&release);
            preflight.deltas = super::plan::compute(ctx.fleet, &spec, &release, &rules, 0).deltas;
        }
        let empty_ok = spec.allow_empty || spec.standing.is_some() || spec.emergency;
        if !empty_ok && preflight.targeted == 0 {
            return Err(CampaignError::NoDevice {
                id: spec.id,
                why: "its groups hold no registered device".into(),
            });
        }
        if !empty_ok && preflight.targeted == preflight.uncovered {
            return Err(CampaignError::NoDevice {
                id: spec.id,
                why: format!(
                    "none of its {} devices has an arch the release covers ({})",
                    preflight.targeted,
                    preflight.release_arches.join(", ")
                ),
            });
        }
        let covered = preflight.targeted - preflight.uncovered;
        if !empty_ok && covered > 0 && preflight.unverifiable == covered {
            return Err(CampaignError::NoDevice {
                id: spec.id,
                why: format!(
                    "none of its {covered} devices trusts the key that signed the release (kid {}): they were provisioned with other release keys, and would refuse it as unknown_key. Sign it with a key they trust, or give them this one (`ota devices rotate ID --out DIR --release-key FILE.pub` writes a device a new provisioning file)",
                    preflight.release_kids.join(", ")
                ),
            });
        }
        let record = CampaignRecord {
            spec,
            release,
            created: now,
            preflight,
            gate,
            waves: BTreeMap::new(),
            rollback,
            rollback_child: None,
        };
        self.store.put(&record)?;
        info!(
            campaign = %record.id(),
            emergency = record.is_emergency(),
            targeted = record.preflight.targeted,
            uncovered = record.preflight.uncovered,
            "campaign created"
        );
        let id = record.id().clone();
        self.entries.insert(
            id.clone(),
            Entry {
                windows: Windows::of(record.id(), &record.spec.windows),
                record,
                tally: Tally::new(),
                anomalies: Anomalies::default(),
                tally_loaded: true,
                progress_sent: None,
                counts_due: false,
            },
        );
        self.status_now(ctx, &id, now)
    }

    /// The event that announces a create (sent by the caller after the
    /// reply's flush).
    pub fn created_event(&self, id: &CampaignId, now: u64) -> Option<Event> {
        let r = self.get(id)?;
        let p = &r.preflight;
        Some(Event {
            ts: now,
            kind: events::kind::CREATED.to_string(),
            campaign: Some(id.clone()),
            message: format!(
                "campaign {id} created: {} {} {}, {} devices targeted, {} with an arch the release does not cover",
                r.release.kind, r.release.component, r.release.version, p.targeted, p.uncovered
            ),
            data: serde_json::to_value(p).unwrap_or_default(),
        })
    }

    /// The spec of an emergency: one wave with its groups at 10000, or
    /// none for every device.
    pub fn emergency_spec(
        id: CampaignId,
        release: &Release,
        groups: Vec<GroupName>,
        all: bool,
    ) -> Result<CampaignSpec, CampaignError> {
        let waves = match (groups.is_empty(), all) {
            (true, true) => Vec::new(),
            (false, false) => vec![WaveSpec {
                cohorts: groups.into_iter().map(|g| (g, FULL_COHORT)).collect(),
            }],
            _ => return Err(CampaignError::EmergencyTarget),
        };
        Ok(CampaignSpec {
            emergency: true,
            ..CampaignSpec::new(
                id,
                release.kind,
                release.entries.iter().map(|e| e.artifact.clone()).collect(),
                waves,
            )
        })
    }

    /// Refuses `spec` when another live campaign holds one of its topics:
    /// a retained topic carries one campaign at a time.
    pub fn check_topics(&self, ctx: &Ctx<'_>, spec: &CampaignSpec) -> Result<(), CampaignError> {
        let mine = announce::topics(spec);
        for other in self
            .entries
            .values()
            .filter(|e| e.record.is_live() && e.record.id() != &spec.id)
        {
            if let Some(t) = announce::topics(&other.record.spec)
                .into_iter()
                .find(|t| mine.contains(t))
            {
                return Err(CampaignError::TopicBusy {
                    id: spec.id.clone(),
                    other: other.record.id().clone(),
                    state: other.record.state_word(),
                    topic: ctx.publisher.topics().build(&t),
                });
            }
        }
        Ok(())
    }

    /// Begins the pre-flight of a create of `spec` with `release`, to be
    /// counted in slices ([`Campaigns::step_prepared`]) before the create
    /// runs and takes it. Replaces one under way.
    pub fn prepare_create(&mut self, spec: &CampaignSpec, release: &Release) {
        let cohorts = spec.cohorts_at(usize::MAX);
        let scan = PreflightScan::new(
            Admission {
                campaign: &spec.id,
                cohorts: &cohorts,
                emergency: spec.emergency,
            },
            release.arches(),
        );
        self.preflight = Some((scan, Signers::of(release)));
    }

    /// Begins finding the first wave's members of the draft `id`, to be
    /// taken by its start. Nothing for another phase or an unknown id.
    pub fn prepare_start(&mut self, id: &CampaignId) {
        if let Some(e) = self.entries.get(id) {
            if matches!(e.record.gate.phase(), Phase::Draft) {
                self.prepared.prepare(&e.record, 0);
            }
        }
    }

    /// Begins finding the first wave's members of a campaign about to be
    /// created from `spec` and started at once (an emergency).
    pub fn prepare_spec_start(&mut self, spec: &CampaignSpec) {
        if let Ok(gate) = Gate::new(spec) {
            self.prepared
                .prepare_wave(&spec.id, 0, gate.cohorts(0), spec.emergency);
        }
    }

    /// True while a create's pre-flight, or the members of `id`'s wave,
    /// are still being counted.
    pub fn preparing(&self, id: Option<&CampaignId>) -> bool {
        self.preflight.as_ref().is_some_and(|(p, _)| !p.is_done())
            || id.is_some_and(|id| self.prepared.busy_with(id))
    }

    /// After the command that waited for it ran: a pre-flight it did not
    /// take, and the members of `start` if it did not start, are dropped.
    pub fn drop_prepared(&mut self, start: Option<&CampaignId>) {
        self.preflight = None;
        if let Some(id) = start {
            let started = self
                .entries
                .get(id)
                .is_some_and(|e| e.record.gate.current_wave().is_some());
            if !started {
                self.prepared.forget(id);
            }
        }
    }

    /// True while any prepared work is unfinished.
    pub fn has_prepared_work(&self) -> bool {
        self.preparing(None) || self.prepared.busy()
    }

    /// One slice of prepared work, at most `budget` devices: the create's
    /// pre-flight first, then the wave members (`focus`'s first).
    pub fn step_prepared(&mut self, ctx: &Ctx<'_>, budget: usize, focus: Option<&CampaignId>) {
        if let Some((scan, signers)) = self.preflight.as_mut().filter(|(p, _)| !p.is_done()) {
            let distrusts = |id: &DeviceId, arch: &str| signers.distrusts(ctx.identity, id, arch);
            scan.step(ctx.fleet, budget, &distrusts);
            return;
        }
        self.prepared.step(ctx.fleet, budget, focus);
    }

    /// `campaign start`: refused while another live campaign holds one of
    /// its topics.
    pub async fn start(
        &mut self,
        ctx: &Ctx<'_>,
        id: &CampaignId,
        now: u64,
    ) -> Result<CampaignStatus, CampaignError> {
        let record = &self.entry(id)?.record;
        self.check_topics(ctx, &record.spec)?;
        let emergency = record.is_emergency();
        let e = self.entry_mut(id)?;
        // The windows first, so that the first announcement already
        // pauses the groups outside theirs (a draft only keeps them).
        let closed = e.windows.closed(now);
        e.record.gate.step(now, Input::Windows { closed })?;
        let fx = e.record.gate.step(now, Input::Start)?;
        if emergency {
            if let Some(e) = self.entries.get(id) {
                mark_emergency(ctx, &e.record, true).await;
            }
        }
        self.apply(ctx, id, fx, now).await?;
        self.status_now(ctx, id, now)
    }

    /// `campaign pause | resume | abort`.
    /// The gates a campaign runs with now.
    pub fn gates_of(&mut self, id: &CampaignId) -> Result<super::spec::Gates, CampaignError> {
        Ok(*self.entry_mut(id)?.record.gate.gates())
    }

    pub async fn operator(
        &mut self,
        ctx: &Ctx<'_>,
        id: &CampaignId,
        input: Input,
        now: u64,
    ) -> Result<CampaignStatus, CampaignError> {
        let fx = self.entry_mut(id)?.record.gate.step(now, input)?;
        self.apply(ctx, id, fx, now).await?;
        self.status_now(ctx, id, now)
    }

    /// `campaign status`: a finished campaign loaded at start reads its
    /// device states first (off the runtime).
    pub async fn status(
        &mut self,
        ctx: &Ctx<'_>,
        id: &CampaignId,
        now: u64,
    ) -> Result<CampaignStatus, CampaignError> {
        let entry = self.entry_mut(id)?;
        if !entry.tally_loaded {
            let store = ctx.store.clone();
            let cid = id.clone();
            let states =
                tokio::task::spawn_blocking(move || store.status.currents_of_campaign(&cid))
                    .await
                    .map_err(|e| {
                        CampaignError::Store(StoreError::Corrupt {
                            tree: "status_current",
                            key: id.to_string(),
                            reason: format!("reading task failed: {e}"),
                        })
                    })??;
            for (device, cur) in states {
                entry.tally.report(&device, report_of(&cur));
            }
            let members = current_members(&entry.record, ctx.fleet);
            entry.tally.set_members(members);
            entry.tally_loaded = true;
        }
        self.status_now(ctx, id, now)
    }

    /// A page of the current wave's members, each with its latest state
    /// (`/api/v1/campaigns/{id}/members`). Loads a finished campaign's
    /// device states first, as `status` does; reads the detail text of
    /// the page's members only.
    pub async fn members(
        &mut self,
        ctx: &Ctx<'_>,
        id: &CampaignId,
        filter: &roster::MemberFilter,
        now: u64,
    ) -> Result<roster::MemberPage, CampaignError> {
        self.status(ctx, id, now).await?;
        let e = self.entry(id)?;
        let detail = |d: &DeviceId| {
            ctx.store
                .status
                .current(d, id)
                .ok()
                .flatten()
                .and_then(|c| c.detail)
        };
        Ok(roster::page(
            &e.tally,
            ctx.fleet,
            e.record.release.component.as_str(),
            filter,
            detail,
        ))
    }

    /// `campaign retry`: the leftovers of a campaign that ended, and its
    /// spec (see `followup`). Reads the device states of a finished
    /// campaign first, as `status` does.
    pub async fn leftovers(
        &mut self,
        ctx: &Ctx<'_>,
        id: &CampaignId,
        only: &[Leftover],
        now: u64,
    ) -> Result<(CampaignSpec, BTreeSet<DeviceId>), CampaignError> {
        self.status(ctx, id, now).await?;
        let e = self.entry(id)?;
        if !matches!(
            e.record.gate.phase(),
            Phase::Completed { .. }
                | Phase::Halted { .. }
                | Phase::Aborted { .. }
                | Phase::Expired { .. }
        ) {
            return Err(FollowUpError::NotEnded(id.clone(), e.record.state_word()).into());
        }
        let online = |d: &DeviceId| ctx.fleet.device(d).is_some_and(|r| r.online);
        let picked = followup::leftovers(&e.tally, only, online);
        Ok((e.record.spec.clone(), picked))
    }

    /// Halted campaigns whose rollback is due, taken once.
    pub fn take_rollbacks_due(&mut self) -> Vec<CampaignId> {
        std::mem::take(&mut self.rollbacks_due)
    }

    /// What rolling back `id` takes: its spec, its rollback release and
    /// the devices that installed it (reads a finished campaign's device
    /// states first, as `status` does).
    pub async fn rollback_plan(
        &mut self,
        ctx: &Ctx<'_>,
        id: &CampaignId,
        now: u64,
    ) -> Result<(CampaignSpec, Release, BTreeSet<DeviceId>), CampaignError> {
        self.status(ctx, id, now).await?;
        let e = self.entry(id)?;
        if let Some(child) = &e.record.rollback_child {
            return Err(FollowUpError::RolledBack(id.clone(), child.clone()).into());
        }
        if matches!(e.record.gate.phase(), Phase::Draft) {
            return Err(FollowUpError::RollbackDraft(id.clone()).into());
        }
        let Some(rb) = e.record.rollback.clone() else {
            return Err(FollowUpError::NoRollback(id.clone()).into());
        };
        Ok((e.record.spec.clone(), rb, e.tally.installed()))
    }

    /// Records that `child` rolls `id` back (durable before the child
    /// starts: a campaign is rolled back once).
    pub fn set_rollback_child(
        &mut self,
        id: &CampaignId,
        child: CampaignId,
    ) -> Result<(), CampaignError> {
        let e = self
            .entries
            .get_mut(id)
            .ok_or_else(|| CampaignError::NotFound(id.clone()))?;
        e.record.rollback_child = Some(child);
        self.store.put(&e.record)?;
        Ok(())
    }

    /// True when a campaign of this id exists (stored or in memory).
    pub fn exists(&self, id: &CampaignId) -> Result<bool, CampaignError> {
        Ok(self.entries.contains_key(id) || self.store.contains(id)?)
    }

    /// `campaign list`.
    pub fn list(&self) -> CampaignList {
        CampaignList {
            campaigns: self
                .entries
                .values()
                .map(|e| view::summary(&e.record, e.tally_loaded.then(|| e.tally.counts())))
                .collect(),
        }
    }

    /// Committed status changes from the ingest actor.
    pub async fn statuses(
        &mut self,
        ctx: &Ctx<'_>,
        updates: &[StatusUpdate],
        now: u64,
    ) -> Result<(), CampaignError> {
        let mut dirty = Vec::new();
        for u in updates {
            let Some(e) = self.entries.get_mut(&u.campaign) else {
                continue;
            };
            let report = Report::new(u.state, u.error, u.detail.as_deref(), u.at)
                .with_artifact(u.artifact.clone());
            let first = e.tally.get(&u.device).and_then(|r| r.outcome()).is_none();
            let anomaly = e.tally.is_anomaly(&report);
            let changed = e.tally.report(&u.device, report);
            if first && e.record.is_live() && anomaly {
                e.anomalies.note(&u.device);
                Metrics::add(&ctx.metrics.status_anomalies, 1);
            }
            if changed && e.record.is_live() && !dirty.contains(&u.campaign) {
                dirty.push(u.campaign.clone());
            }
        }
        for id in dirty {
            self.send_counts(ctx, &id, now).await?;
        }
        Ok(())
    }

    /// Devices whose groups changed, or that registered: the members of
    /// every live campaign's current wave are updated.
    pub async fn devices_changed(
        &mut self,
        ctx: &Ctx<'_>,
        devices: &[DeviceId],
        now: u64,
    ) -> Result<(), CampaignError> {
        self.prepared.patch(ctx.fleet, devices);
        let mut dirty = Vec::new();
        for e in self.entries.values_mut().filter(|e| e.record.is_live()) {
            let Some(wave) = e.record.gate.current_wave() else {
                continue;
            };
            let admission = Admission {
                campaign: &e.record.spec.id,
                cohorts: e.record.gate.cohorts(wave),
                emergency: e.record.is_emergency(),
            };
            let mut changed = false;
            for d in devices {
                changed |= e.tally.set_member(d, admission.admits_in(ctx.fleet, d));
            }
            if changed {
                dirty.push(e.record.id().clone());
            }
        }
        for id in dirty {
            self.send_counts(ctx, &id, now).await?;
        }
        Ok(())
    }

    /// The one-second tick: gates whose timer is due are stepped, and
    /// changed tallies go out as progress events.
    pub async fn tick(&mut self, ctx: &Ctx<'_>, now: u64) -> Result<(), CampaignError> {
        self.start_scheduled(ctx, now).await?;
        self.step_windows(ctx, now).await?;
        if now >= self.grace_until {
            let held: Vec<CampaignId> = self
                .entries
                .values()
                .filter(|e| e.counts_due)
                .map(|e| e.record.id().clone())
                .collect();
            for id in held {
                self.send_counts(ctx, &id, now).await?;
            }
        }
        let due: Vec<CampaignId> = self
            .entries
            .values()
            // Held counts go first: a due gate never judges stale counts.
            .filter(|e| !e.counts_due && e.record.gate.next_timer().is_some_and(|t| now >= t))
            .map(|e| e.record.id().clone())
            .collect();
        for id in due {
            let fx = self.entry_mut(&id)?.record.gate.step(now, Input::Tick)?;
            self.apply(ctx, &id, fx, now).await?;
        }
        let mut progress = Vec::new();
        for e in self.entries.values_mut() {
            if let Some((n, devices)) = e.anomalies.take() {
                let ev = events::anomaly(e.record.id(), now, n, &devices, &e.tally.counts());
                warn!(campaign = %e.record.id(), anomalies = n, "{}", ev.message);
                progress.push(ev);
            }
        }
        for e in self.entries.values_mut().filter(|e| e.record.is_live()) {
            let counts = e.tally.counts();
            if e.progress_sent != Some(counts) {
                e.progress_sent = Some(counts);
                progress.push(events::progress(
                    e.record.id(),
                    now,
                    e.record.gate.current_wave(),
                    &counts,
                ));
            }
        }
        for ev in progress {
            send_event(ctx, &ev).await?;
        }
        Ok(())
    }

    /// Drafts whose `start_at` came start by themselves (also after a
    /// restart: the time is in the record). One whose topic another live
    /// campaign holds waits, tried again every tick, logged once.
    async fn start_scheduled(&mut self, ctx: &Ctx<'_>, now: u64) -> Result<(), CampaignError> {
        let due: Vec<CampaignId> = self
            .entries
            .values()
            .filter(|e| {
                matches!(e.record.gate.phase(), Phase::Draft)
                    && e.record.spec.start_at.is_some_and(|t| now >= t)
            })
            .map(|e| e.record.id().clone())
            .collect();
        for id in due {
            match self.start(ctx, &id, now).await {
                Ok(_) => {
                    self.start_blocked.remove(&id);
                    info!(campaign = %id, "scheduled start: campaign started");
                }
                Err(e @ CampaignError::TopicBusy { .. }) => {
                    if self.start_blocked.insert(id.clone()) {
                        warn!(campaign = %id, error = %e, "scheduled start waits: tried again every second");
                    }
                }
                Err(e @ (CampaignError::Store(_) | CampaignError::Publish(_))) => return Err(e),
                Err(e) => {
                    if self.start_blocked.insert(id.clone()) {
                        warn!(campaign = %id, error = %e, "scheduled start refused");
                    }
                }
            }
        }
        Ok(())
    }

    /// Campaigns whose groups' maintenance windows opened or closed since
    /// the last tick are told so (the gate announces and logs it).
    async fn step_windows(&mut self, ctx: &Ctx<'_>, now: u64) -> Result<(), CampaignError> {
        let changed: Vec<(CampaignId, BTreeSet<GroupName>)> = self
            .entries
            .values()
            .filter(|e| !e.windows.is_empty())
            .filter(|e| !matches!(e.record.gate.phase(), Phase::Draft | Phase::Aborted { .. }))
            .filter_map(|e| {
                let closed = e.windows.closed(now);
                (&closed != e.record.gate.closed()).then(|| (e.record.id().clone(), closed))
            })
            .collect();
        for (id, closed) in changed {
            let fx = self
                .entry_mut(&id)?
                .record
                .gate
                .step(now, Input::Windows { closed })?;
            self.apply(ctx, &id, fx, now).await?;
        }
        Ok(())
    }

    /// Recomputes the members of a live campaign's current wave, then
    /// sends its counts.
    async fn recount(
        &mut self,
        ctx: &Ctx<'_>,
        id: &CampaignId,
        now: u64,
    ) -> Result<(), CampaignError> {
        let e = self.entry_mut(id)?;
        let members = current_members(&e.record, ctx.fleet);
        e.tally.set_members(members);
        self.send_counts(ctx, id, now).await
    }

    /// Sends the current wave's counts to the gate and carries out what it
    /// decides.
    async fn send_counts(
        &mut self,
        ctx: &Ctx<'_>,
        id: &CampaignId,
        now: u64,
    ) -> Result<(), CampaignError> {
        let in_grace = now < self.grace_until;
        let e = self.entry_mut(id)?;
        let Some(wave) = e.record.gate.current_wave() else {
            return Ok(());
        };
        if e.record.gate.is_finished() {
            return Ok(());
        }
        if in_grace && e.record.gate.next_timer().is_some_and(|t| t <= now) {
            e.counts_due = true;
            return Ok(());
        }
        e.counts_due = false;
        let counts = judged_counts(e);
        let fx = e.record.gate.step(now, Input::Counts { wave, counts })?;
        self.apply(ctx, id, fx, now).await
    }

    /// Carries out a step's effects (see the module doc).
    async fn apply(
        &mut self,
        ctx: &Ctx<'_>,
        id: &CampaignId,
        mut fx: Vec<Effect>,
        now: u64,
    ) -> Result<(), CampaignError> {
        // Not `entry_mut`: `self.store` is borrowed alongside.
        let e = self
            .entries
            .get_mut(id)
            .ok_or_else(|| CampaignError::NotFound(id.clone()))?;
        // 1. Every started wave gets its members and counts at once.
        let mut seen = 0;
        loop {
            let started = fx[seen..]
                .iter()
                .any(|f| matches!(f, Effect::WaveStarted { .. }));
            seen = fx.len();
            if !started {
                break;
            }
            let Some(wave) = e.record.gate.current_wave() else {
                break;
            };
            if e.record.gate.is_finished() {
                break;
            }
            let members = take_or_compute(&mut self.prepared, &e.record, ctx.fleet);
            e.tally.set_members(members);
            let counts = judged_counts(e);
            match e.record.gate.step(now, Input::Counts { wave, counts }) {
                Ok(more) => fx.extend(more),
                Err(err) => {
                    // The gate named this wave as current a moment ago.
                    warn!(campaign = %id, error = %err, "counts for a started wave refused");
                    break;
                }
            }
        }
        if fx.is_empty() {
            return Ok(());
        }
        for f in &fx {
            match f {
                Effect::WavePassed { wave, rule, counts } => {
                    e.record.waves.insert(
                        *wave,
                        WaveEnd::Passed {
                            at: now,
                            rule: *rule,
                            counts: *counts,
                        },
                    );
                }
                // From now on a `cancelled` is the answer to this abort.
                Effect::Aborted => e.tally.set_aborted(now),
                Effect::Halted {
                    wave,
                    reason,
                    counts,
                } => {
                    if e.record.rollback.is_some()
                        && e.record.rollback_child.is_none()
                        && !self.rollbacks_due.contains(id)
                    {
                        self.rollbacks_due.push(id.clone());
                    }
                    e.record.waves.insert(
                        *wave,
                        WaveEnd::Halted {
                            at: now,
                            reason: *reason,
                            counts: *counts,
                        },
                    );
                }
                _ => {}
            }
        }
        // 2. Record and retained tree, one flush, then the broker.
        self.store.put(&e.record)?;
        // The next wave's members are found while this one runs.
        self.prepared.plan(&e.record);
        let announced = fx.iter().any(|f| matches!(f, Effect::Announce(_)));
        let mut messages = Vec::new();
        if announced {
            if let Some(a) = e.record.gate.announcement() {
                for (topic, announcement) in announce::messages(&e.record, &a) {
                    let payload = ctx.publisher.control(&topic, &announcement)?;
                    let t = ctx.publisher.topics().build(&topic);
                    ctx.store.retained.put(&t, &payload)?;
                    messages.push((topic, payload));
                }
            }
        }
        ctx.store.flush().await?;
        for (topic, payload) in messages {
            ctx.publisher.publish(&topic, payload, true).await?;
        }
        let scope = e.record.gate.scope();
        for f in &fx {
            log_effect(id, scope, f);
            send_event(ctx, &events::of_effect(id, scope, now, f)).await?;
        }
        // 3. An ended emergency gives up its priority.
        let ended = fx.iter().any(|f| {
            matches!(
                f,
                Effect::Completed { .. } | Effect::Aborted | Effect::Expired { .. }
            )
        });
        if ended && e.record.is_emergency() {
            mark_emergency(ctx, &e.record, false).await;
        }
        // 4. Blocks only for artifacts a running campaign still needs.
        self.sync_holds(ctx).await;
        Ok(())
    }

    /// Tells the block server which artifacts to hold: those of a paused,
    /// halted or aborted campaign that no running, soaking or completed
    /// campaign also uses (a completed campaign's devices may still be
    /// fetching). An artifact no campaign names is never held: it is
    /// served to whoever asks, as before any campaign.
    async fn sync_holds(&mut self, ctx: &Ctx<'_>) {
        let Some(blocks) = ctx.blocks else { return };
        let mut serving: HashSet<&ArtifactId> = HashSet::new();
        let mut stopped: HashSet<&ArtifactId> = HashSet::new();
        for e in self.entries.values() {
            let set = match e.record.gate.phase() {
                Phase::Draft => continue,
                Phase::Running { .. }
                | Phase::Soaking { .. }
                | Phase::Standing { .. }
                | Phase::Completed { .. } => &mut serving,
                Phase::Paused { .. } | Phase::Halted { .. } | Phase::Aborted { .. } => &mut stopped,
                Phase::Expired { announced, .. } => match announced {
                    AnnounceState::Active => &mut serving,
                    _ => &mut stopped,
                },
            };
            set.extend(e.record.release.artifacts());
        }
        let now: HashSet<ArtifactId> = stopped.difference(&serving).map(|a| (*a).clone()).collect();
        let changes: Vec<(ArtifactId, bool)> = now
            .difference(&self.held)
            .map(|a| (a.clone(), true))
            .chain(self.held.difference(&now).map(|a| (a.clone(), false)))
            .collect();
        for (artifact, held) in changes {
            if !blocks.hold(artifact.clone(), held).await {
                warn!(artifact = %artifact, held, "block server gone: hold not set");
                return;
            }
            info!(artifact = %artifact, held, "block serving {}", if held { "held: no running campaign needs it" } else { "resumed" });
        }
        self.held = now;
    }

    fn status_now(
        &self,
        ctx: &Ctx<'_>,
        id: &CampaignId,
        now: u64,
    ) -> Result<CampaignStatus, CampaignError> {
        let e = self.entry(id)?;
        Ok(view::status(
            &e.record, &e.tally, ctx.fleet, &e.windows, now,
        ))
    }

    fn entry(&self, id: &CampaignId) -> Result<&Entry, CampaignError> {
        self.entries
            .get(id)
            .ok_or_else(|| CampaignError::NotFound(id.clone()))
    }

    fn entry_mut(&mut self, id: &CampaignId) -> Result<&mut Entry, CampaignError> {
        self.entries
            .get_mut(id)
            .ok_or_else(|| CampaignError::NotFound(id.clone()))
    }
}

/// The members of the campaign's current wave (none before the start).
/// The counts the gate judges: the wave's tally, or for a standing
/// campaign that stands, its latest `halt_window` results.
fn judged_counts(e: &Entry) -> WaveCounts {
    match (e.record.gate.phase(), e.record.spec.standing) {
        (Phase::Standing { .. }, Some(st)) => e.tally.window_counts(st.halt_window),
        _ => e.tally.counts(),
    }
}

/// A campaign's empty tally, knowing when the bridge aborted it.
fn tally_of(r: &CampaignRecord) -> Tally {
    let mut t = Tally::new();
    if let Phase::Aborted { at, .. } = r.gate.phase() {
        t.set_aborted(*at);
    }
    t
}

/// A stored current state as the tally reads it.
fn report_of(cur: &crate::store::status::CurrentState) -> Report {
    Report::new(cur.state, cur.error, cur.detail.as_deref(), cur.at)
        .with_artifact(cur.artifact.clone())
}

fn current_members(r: &CampaignRecord, fleet: &Fleet) -> crate::sharded::ShardedSet<DeviceId> {
    match r.gate.current_wave() {
        None => Default::default(),
        Some(w) => Admission {
            campaign: r.id(),
            cohorts: r.gate.cohorts(w),
            emergency: r.is_emergency(),
        }
        .members(fleet),
    }
}

async fn mark_emergency(ctx: &Ctx<'_>, r: &CampaignRecord, on: bool) {
    let Some(blocks) = ctx.blocks else { return };
    for artifact in r.release.artifacts() {
        if !blocks.set_priority(artifact.clone(), on).await {
            warn!(campaign = %r.id(), artifact = %artifact, "block server gone: emergency priority not set");
        }
    }
}

pub(crate) async fn send_event(ctx: &Ctx<'_>, ev: &Event) -> Result<(), CampaignError> {
    ctx.publisher.event(ev).await?;
    Ok(())
}

fn log_effect(id: &CampaignId, scope: Scope, f: &Effect) {
    match f {
        Effect::Decision(d) => {
            info!(campaign = %id, wave = ?d.wave.map(|w| w + 1), "{}", scope.text(d))
        }
        Effect::Halted { wave, reason, .. } => {
            warn!(campaign = %id, wave = wave + 1, reason = %reason, "campaign halted")
        }
        _ => {}
    }
}
