//! The block server's pure part: requests in, a list of (artifact, index,
//! target) out for each merge window, given a byte budget. No I/O, and no
//! clock of its own: the actor ([`super::server`]) calls
//! [`Scheduler::want`] as requests arrive and [`Scheduler::take`] once per
//! window, each with the time.
//!
//! - **Merging.** A block is pending once, whoever wants it. A block wanted
//!   by one device goes to that device's topic; by several, to the
//!   artifact's topic ([`Target::Broadcast`]). `take` removes what it
//!   returns, so a block goes out at most once per window; a request that
//!   arrives after that makes it pending again for a later window.
//! - **No pass right behind a pass.** A block broadcast less than
//!   `resend_after` ago is not broadcast again at once: asked for again, it
//!   waits (deferred, merging with every later request) until that
//!   broadcast is `resend_after` old ([`recent`]). The devices of a
//!   campaign do not ask together (the announcement reaches them over a
//!   moment, or seconds under load): without this, each window with a new
//!   asker sent a whole new pass of a small artifact to everyone
//!   downloading it. With it, the askers of one `resend_after` share one
//!   pass, and a device that truly missed a block (it subscribed after the
//!   broadcast, lost power, joined late) still has it within
//!   `resend_after` of asking, below the devices' 2 s quiet spell, so no
//!   device asks again for the wait. A long image is not slowed: its
//!   blocks come round again only after a whole pass, long after. An
//!   emergency's blocks are never deferred.
//! - **Budget.** `take` returns at most `budget` bytes (each artifact's
//!   block cost as given to `want`) and at most `max_items` blocks; what
//!   does not fit stays pending and keeps merging with later requests.
//! - **Priority.** Emergency artifacts get nine tenths of each window's
//!   budget and the others one tenth, as byte credits that carry over (so
//!   a tenth smaller than one block still gets that block every few
//!   windows); a class with nothing pending leaves its share to the other.
//!   Within a class, artifacts take turns block by block.
//! - **Bounded memory.** Per artifact with pending blocks: a bitset of
//!   wanted blocks and a map of the blocks only one device wants. Devices
//!   are tracked in at most `max_devices` slots; past that a new device's
//!   blocks are broadcast (it is subscribed to the artifact's topic while it
//!   downloads), or in unicast-only mode its request is refused.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use schemas::{ArtifactId, DeviceId};

use super::wants::WantSet;
use recent::Recent;

/// Where one block goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// `P/artifacts/{a}/blocks`: several devices want it.
    Broadcast,
    /// `P/devices/{id}/blocks`: only this device wants it.
    Device(DeviceId),
}

/// One block to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Send {
    pub artifact: ArtifactId,
    pub index: u32,
    pub target: Target,
}

/// What the scheduler needs to know of an artifact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Its number of blocks: indices are below it.
    pub blocks: u32,
    /// Bytes one encoded block costs (block, proof and framing), for the
    /// budget.
    pub cost: u64,
}

/// What became of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wanted {
    /// `new` blocks became pending; `merged` were pending for another
    /// device already.
    Added { new: u32, merged: u32 },
    /// Unicast-only mode with every device slot taken: nothing was added.
    Overloaded,
}

/// Scheduler settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScheduleConfig {
    /// False: every block goes to each device that wants it, on its own topic.
    pub broadcast: bool,
    /// Device slots.
    pub max_devices: usize,
    /// A block broadcast less than this ago waits until it is this old
    /// before it is broadcast again (zero: at once, the next window).
    pub resend_after: Duration,
}

const EMERGENCY: usize = 0;
const NORMAL: usize = 1;

/// Pending wants of every artifact and the window-by-window choice.
#[derive(Debug)]
pub struct Scheduler {
    cfg: ScheduleConfig,
    devices: Slots,
    pending: BTreeMap<ArtifactId, Pending>,
    emergency: HashSet<ArtifactId>,
    /// Byte credit of each class (emergency, normal).
    credit: [u64; 2],
    /// The artifact each class served last (round robin).
    last: [Option<ArtifactId>; 2],
    /// What was broadcast within the last `resend_after`.
    recent: Recent,
}

#[derive(Debug)]
struct Pending {
    shape: Shape,
    /// Broadcast mode: every wanted block that may go out now.
    wanted: WantSet,
    /// Broadcast mode: wanted blocks broadcast lately, waiting until that
    /// broadcast is `resend_after` old (never also in `wanted`).
    deferred: WantSet,
    /// Broadcast mode: blocks wanted by exactly one device (absent: several),
    /// whether they may go out now or are deferred.
    single: HashMap<u32, u32>,
    /// Unicast-only mode: each device slot's wanted blocks.
    by_device: BTreeMap<u32, WantSet>,
    /// Broadcast: the next block to consider; unicast: the next slot.
    cursor: u32,
}

impl Pending {
    fn new(shape: Shape) -> Self {
        Self {
            shape,
            wanted: WantSet::new(shape.blocks),
            deferred: WantSet::new(shape.blocks),
            single: HashMap::new(),
            by_device: BTreeMap::new(),
            cursor: 0,
        }
    }

    fn count(&self) -> u64 {
        u64::from(self.wanted.count())
            + u64::from(self.deferred.count())
            + self
                .by_device
                .values()
                .map(|s| u64::from(s.count()))
                .sum::<u64>()
    }

    fn is_empty(&self) -> bool {
        self.deferred.is_empty() && !self.ready()
    }

    /// Something may go out now.
    fn ready(&self) -> bool {
        !self.wanted.is_empty() || !self.by_device.is_empty()
    }

    /// Moves the deferred blocks no longer recent into `wanted` (all of
    /// them without `recent`).
    fn release(&mut self, artifact: &ArtifactId, recent: Option<&Recent>) {
        let due: Vec<u32> = self
            .deferred
            .iter()
            .filter(|i| recent.is_none_or(|r| !r.holds(artifact, *i)))
            .collect();
        for i in due {
            self.deferred.remove(i);
            self.wanted.insert(i);
        }
    }
}

impl Scheduler {
    /// An empty scheduler.
    pub fn new(cfg: ScheduleConfig) -> Self {
        Self {
            devices: Slots::new(cfg.max_devices),
            cfg,
            pending: BTreeMap::new(),
            emergency: HashSet::new(),
            credit: [0; 2],
            last: [None, None],
            recent: Recent::new(cfg.resend_after),
        }
    }

    /// Marks an artifact as an emergency's (its blocks go first) or not.
    pub fn set_emergency(&mut self, artifact: &ArtifactId, emergency: bool) {
        if emergency {
            self.emergency.insert(artifact.clone());
        } else {
            self.emergency.remove(artifact);
        }
    }

    /// True when `artifact` is an emergency's.
    pub fn is_emergency(&self, artifact: &ArtifactId) -> bool {
        self.emergency.contains(artifact)
    }

    /// Blocks pending (deferred ones included), over every artifact and
    /// device.
    pub fn pending_blocks(&self) -> u64 {
        self.pending.values().map(Pending::count).sum()
    }

    /// Devices holding a slot now.
    pub fn tracked_devices(&self) -> usize {
        self.devices.used()
    }

    /// The artifacts with pending blocks, with their shapes.
    pub fn pending_artifacts(&self) -> impl Iterator<Item = (&ArtifactId, Shape)> + '_ {
        self.pending.iter().map(|(a, p)| (a, p.shape))
    }

    /// True when nothing is pending, not even deferred.
    pub fn is_idle(&self) -> bool {
        self.pending.is_empty()
    }

    /// True when some pending block may go out now (after a `take`: the
    /// budget held it back); deferred blocks do not count.
    pub fn has_ready(&self) -> bool {
        self.pending.values().any(Pending::ready)
    }

    /// Records that `device` wants `indices` of `artifact` at `now`.
    /// Indices at or past `shape.blocks` are ignored (the caller refuses
    /// such requests). A later `want` with another shape for a pending
    /// artifact keeps the first shape. A block broadcast less than
    /// `resend_after` before `now` is deferred.
    pub fn want(
        &mut self,
        device: &DeviceId,
        artifact: &ArtifactId,
        shape: Shape,
        indices: impl IntoIterator<Item = u32>,
        now: Instant,
    ) -> Wanted {
        let slot = self.devices.get_or_insert(device);
        if !self.cfg.broadcast && slot.is_none() {
            return Wanted::Overloaded;
        }
        // An emergency's blocks go again at once: its devices first.
        let urgent = self.emergency.contains(artifact);
        let p = self
            .pending
            .entry(artifact.clone())
            .or_insert_with(|| Pending::new(shape));
        let (mut new, mut merged) = (0, 0);
        if self.cfg.broadcast {
            for i in indices {
                if i >= p.shape.blocks {
                    continue;
                }
                let pending = p.wanted.contains(i) || p.deferred.contains(i);
                if !pending {
                    if !urgent && self.recent.contains(artifact, i, now) {
                        p.deferred.insert(i);
                    } else {
                        p.wanted.insert(i);
                    }
                    new += 1;
                    if let Some(s) = slot {
                        p.single.insert(i, s);
                        self.devices.add_ref(s);
                    }
                } else {
                    match p.single.get(&i).copied() {
                        Some(s) if Some(s) == slot => {}
                        Some(s) => {
                            p.single.remove(&i);
                            self.devices.release(s);
                            merged += 1;
                        }
                        None => merged += 1,
                    }
                }
            }
        } else if let Some(s) = slot {
            let blocks = p.shape.blocks;
            let set = p.by_device.entry(s).or_insert_with(|| WantSet::new(blocks));
            let was_empty = set.is_empty();
            for i in indices {
                if set.insert(i) {
                    new += 1;
                }
            }
            if was_empty && !set.is_empty() {
                self.devices.add_ref(s);
            }
            if set.is_empty() {
                p.by_device.remove(&s);
            }
        }
        if p.is_empty() {
            self.pending.remove(artifact);
        }
        if let Some(s) = slot {
            self.devices.release_if_unused(s);
        }
        Wanted::Added { new, merged }
    }

    /// Forgets every want of `artifact` (deleted, or no longer servable).
    pub fn remove_artifact(&mut self, artifact: &ArtifactId) {
        self.drop_wants(artifact);
        self.emergency.remove(artifact);
        self.recent.remove(artifact);
    }

    /// Forgets every pending want of `artifact`, keeping its priority (its
    /// campaigns paused: they may resume).
    pub fn drop_wants(&mut self, artifact: &ArtifactId) {
        if let Some(p) = self.pending.remove(artifact) {
            for s in p.single.into_values().chain(p.by_device.into_keys()) {
                self.devices.release(s);
            }
        }
    }

    /// The blocks to publish in the window starting at `now`: at most
    /// `budget` bytes of credit (plus what carried over) and at most
    /// `max_items` blocks. Deferred blocks whose broadcast is
    /// `resend_after` old by `now` may go out again.
    pub fn take(&mut self, budget: u64, max_items: usize, now: Instant) -> Vec<Send> {
        self.recent.expire(now);
        for (artifact, p) in &mut self.pending {
            if !p.deferred.is_empty() {
                let urgent = self.emergency.contains(artifact);
                p.release(artifact, (!urgent).then_some(&self.recent));
            }
        }
        let has = [self.class_has(EMERGENCY), self.class_has(NORMAL)];
        match has {
            [true, true] => {
                let urgent = budget / 10 * 9 + budget % 10 * 9 / 10;
                self.credit[EMERGENCY] += urgent;
                self.credit[NORMAL] += budget - urgent;
            }
            [true, false] => {
                self.credit[EMERGENCY] += budget;
                self.credit[NORMAL] = 0;
            }
            [false, true] => {
                self.credit[NORMAL] += budget;
                self.credit[EMERGENCY] = 0;
            }
            [false, false] => {
                self.credit = [0; 2];
                return Vec::new();
            }
        }
        // Credit never hoards more than a window plus one block.
        let cap = budget
            + self
                .pending
                .values()
                .map(|p| p.shape.cost)
                .max()
                .unwrap_or(0);
        for c in &mut self.credit {
            *c = (*c).min(cap);
        }
        let mut out = Vec::new();
        for class in [EMERGENCY, NORMAL] {
            self.serve(class, max_items, now, &mut out);
        }
        // Work-conserving: a class that ran out of blocks leaves its credit
        // to the other.
        for (done, other) in [(EMERGENCY, NORMAL), (NORMAL, EMERGENCY)] {
            if !self.class_has(done) && self.credit[done] > 0 {
                self.credit[other] += std::mem::take(&mut self.credit[done]);
                self.serve(other, max_items, now, &mut out);
            }
        }
        for class in [EMERGENCY, NORMAL] {
            if !self.class_has(class) {
                self.credit[class] = 0;
            }
        }
        out
    }

    fn class_of(&self, artifact: &ArtifactId) -> usize {
        if self.emergency.contains(artifact) {
            EMERGENCY
        } else {
            NORMAL
        }
    }

    /// The class has a block that may go out now (deferred ones do not
    /// hold a share of the budget).
    fn class_has(&self, class: usize) -> bool {
        self.pending
            .iter()
            .any(|(a, p)| p.ready() && self.class_of(a) == class)
    }

    /// Serves `class` while its credit covers the next block.
    fn serve(&mut self, class: usize, max_items: usize, now: Instant, out: &mut Vec<Send>) {
        while out.len() < max_items {
            let Some(artifact) = self.next_artifact(class) else {
                return;
            };
            let Some(p) = self.pending.get_mut(&artifact) else {
                return;
            };
            if self.credit[class] < p.shape.cost {
                return;
            }
            let Some((index, target)) = take_one(p, &mut self.devices) else {
                // Invariant: next_artifact picks one with a ready block, so
                // this is not reached.
                if p.is_empty() {
                    self.pending.remove(&artifact);
                }
                return;
            };
            if target == Target::Broadcast {
                self.recent.record(&artifact, p.shape.blocks, index, now);
            }
            self.credit[class] -= p.shape.cost;
            if p.is_empty() {
                self.pending.remove(&artifact);
            }
            self.last[class] = Some(artifact.clone());
            out.push(Send {
                artifact,
                index,
                target,
            });
        }
    }

    /// The class's next artifact with a ready block after the one it
    /// served last, wrapping.
    fn next_artifact(&self, class: usize) -> Option<ArtifactId> {
        let in_class = |(a, p): &(&ArtifactId, &Pending)| p.ready() && self.class_of(a) == class;
        let after = match &self.last[class] {
            Some(last) => self
                .pending
                .range::<ArtifactId, _>((
                    std::ops::Bound::Excluded(last),
                    std::ops::Bound::Unbounded,
                ))
                .find(in_class),
            None => None,
        };
        after
            .or_else(|| self.pending.iter().find(in_class))
            .map(|(a, _)| a.clone())
    }
}

/// Takes the next block of one artifact: in index order from its cursor
/// (broadcast mode) or from the next device in turn (unicast mode).
fn take_one(p: &mut Pending, devices: &mut Slots) -> Option<(u32, Target)> {
    if let Some(index) = p.wanted.next_from(p.cursor) {
        p.wanted.remove(index);
        p.cursor = index + 1;
        let target = match p.single.remove(&index) {
            Some(s) => {
                let id = devices.id(s);
                devices.release(s);
                id.map_or(Target::Broadcast, Target::Device)
            }
            None => Target::Broadcast,
        };
        return Some((index, target));
    }
    let slot = p
        .by_device
        .range(p.cursor..)
        .next()
        .or_else(|| p.by_device.iter().next())
        .map(|(s, _)| *s)?;
    // Read the id before the slot may be released below.
    let id = devices.id(slot)?;
    let set = p.by_device.get_mut(&slot)?;
    let index = set.next_from(0)?;
    set.remove(index);
    if set.is_empty() {
        p.by_device.remove(&slot);
        devices.release(slot);
    }
    p.cursor = slot + 1;
    Some((index, Target::Device(id)))
}

/// Device ids in numbered slots with reference counts, so pending wants
/// hold a `u32` instead of a name, and the table stays bounded.
#[derive(Debug)]
struct Slots {
    by_id: HashMap<DeviceId, u32>,
    entries: Vec<Option<(DeviceId, u32)>>,
    free: Vec<u32>,
    cap: usize,
}

impl Slots {
    fn new(cap: usize) -> Self {
        Self {
            by_id: HashMap::new(),
            entries: Vec::new(),
            free: Vec::new(),
            cap,
        }
    }

    fn used(&self) -> usize {
        self.by_id.len()
    }

    /// The device's slot, or a new one (with no reference yet); `None`
    /// when every slot is taken.
    fn get_or_insert(&mut self, id: &DeviceId) -> Option<u32> {
        if let Some(s) = self.by_id.get(id) {
            return Some(*s);
        }
        if self.by_id.len() >= self.cap {
            return None;
        }
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.entries.push(None);
                u32::try_from(self.entries.len() - 1).ok()?
            }
        };
        self.entries[slot as usize] = Some((id.clone(), 0));
        self.by_id.insert(id.clone(), slot);
        Some(slot)
    }

    fn id(&self, slot: u32) -> Option<DeviceId> {
        self.entries
            .get(slot as usize)?
            .as_ref()
            .map(|(id, _)| id.clone())
    }

    fn add_ref(&mut self, slot: u32) {
        if let Some(Some((_, refs))) = self.entries.get_mut(slot as usize) {
            *refs += 1;
        }
    }

    fn release(&mut self, slot: u32) {
        if let Some(Some((_, refs))) = self.entries.get_mut(slot as usize) {
            *refs = refs.saturating_sub(1);
        }
        self.release_if_unused(slot);
    }

    fn release_if_unused(&mut self, slot: u32) {
        let Some(entry) = self.entries.get_mut(slot as usize) else {
            return;
        };
        if let Some((id, 0)) = entry {
            self.by_id.remove(id);
            *entry = None;
            self.free.push(slot);
        }
    }
}

mod recent;
#[cfg(test)]
mod resend_tests;
#[cfg(test)]
mod tests;
