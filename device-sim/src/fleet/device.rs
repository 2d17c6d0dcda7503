//! One simulated device: what it is (drawn from the profile with a seeded
//! RNG) and its hooks, which count into the fleet's [`Tracker`] and inject
//! the profile's faults.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use schemas::cose::TrustStore;
use schemas::keys::SigningKey;
use schemas::{ComponentName, DeviceId};

use super::profile::Profile;
use super::stats::Tracker;
use crate::agent::{Disruption, Hooks, Notice};

/// What one simulated device is.
#[derive(Debug, Clone)]
pub struct DeviceSpec {
    /// Its index in the fleet.
    pub index: usize,
    /// Its id.
    pub id: DeviceId,
    /// Its arch.
    pub arch: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Versions at first boot.
    pub versions: BTreeMap<ComponentName, String>,
    /// Trusts a key of its own instead of the profile's.
    pub wrong_key: bool,
    /// Its installs fail.
    pub fail_install: bool,
    /// Its firmware boots fail.
    pub fail_boot: bool,
    /// The profile's bad build fails on it.
    pub fail_bad_build: bool,
    /// Busy when a campaign comes.
    pub busy: bool,
    /// Applies E3 deltas.
    pub deltas: bool,
    /// Drops its connection once at this share of a download.
    pub disconnect_at: Option<f64>,
    /// Loses power once at this share of a download.
    pub power_loss_at: Option<f64>,
    /// Its own seed.
    pub seed: u64,
}

fn pick_weighted<'a>(rng: &mut StdRng, items: &'a [(String, u32)]) -> &'a str {
    let total: u32 = items.iter().map(|(_, w)| *w).sum();
    let mut x = rng.gen_range(0..total.max(1));
    for (name, w) in items {
        if x < *w {
            return name;
        }
        x -= w;
    }
    // Weights are at least 1 and the profile has an arch: not reached.
    items.first().map_or("esp32", |(n, _)| n)
}

fn pick<'a>(rng: &mut StdRng, items: &'a [String]) -> &'a str {
    &items[rng.gen_range(0..items.len())]
}

/// What the devices of a factory line share: arch, labels (with
/// `line = NAME`) and versions, drawn once from the line's name.
fn shared_draw(
    profile: &Profile,
    seed: u64,
    line: Option<&str>,
) -> (
    String,
    BTreeMap<String, String>,
    BTreeMap<ComponentName, String>,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let arch = pick_weighted(&mut rng, &profile.arches).to_string();
    let mut labels: BTreeMap<String, String> = profile
        .labels
        .iter()
        .map(|(k, vs)| (k.clone(), pick(&mut rng, vs).to_string()))
        .collect();
    if let Some(line) = line {
        labels.insert("line".into(), line.to_string());
    }
    let versions = profile
        .versions
        .iter()
        .map(|(c, vs)| (c.clone(), pick(&mut rng, vs).to_string()))
        .collect();
    (arch, labels, versions)
}

/// Device `index` (from 1) of a fleet, or of factory line `line`.
pub fn spec(
    profile: &Profile,
    index: usize,
    line: Option<&str>,
) -> Result<DeviceSpec, schemas::NameError> {
    let prefix = line.unwrap_or(&profile.id_prefix);
    let id = DeviceId::new(format!("{prefix}-{index:05}"))?;
    let seed = profile.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ (index as u64).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let (arch, labels, versions) = match line {
        Some(l) => {
            let line_seed = l.bytes().fold(profile.seed, |h, b| {
                h.wrapping_mul(31).wrapping_add(u64::from(b))
            });
            shared_draw(profile, line_seed, Some(l))
        }
        None => shared_draw(profile, seed, None),
    };
    let mut rng = StdRng::seed_from_u64(seed ^ 0xfa17);
    let f = &profile.faults;
    let mut chance = |p: f64| p > 0.0 && rng.gen_bool(p);
    let wrong_key = chance(f.wrong_key);
    let fail_install = chance(f.install_failure);
    let fail_boot = chance(f.boot_failure);
    let fail_bad_build = f.bad_build.is_some() && chance(f.bad_build_failure);
    let busy = chance(f.busy_deferral);
    let disconnect = chance(f.disconnect_mid_download);
    let power = chance(f.power_loss);
    let deltas = profile.delta_share >= 1.0 || chance(profile.delta_share);
    let mut rng = StdRng::seed_from_u64(seed ^ 0xa7);
    Ok(DeviceSpec {
        index,
        id,
        arch,
        labels,
        versions,
        wrong_key,
        fail_install,
        fail_boot,
        fail_bad_build,
        busy,
        deltas,
        disconnect_at: disconnect.then(|| rng.gen_range(0.1..0.9)),
        power_loss_at: power.then(|| rng.gen_range(0.1..0.9)),
        seed,
    })
}

/// The trust store of a device: the fleet's, or a key of its own.
pub fn trust(spec: &DeviceSpec, fleet: &Arc<TrustStore>) -> Arc<TrustStore> {
    if spec.wrong_key {
        let mut rng = StdRng::seed_from_u64(spec.seed ^ 0x6b);
        let key = SigningKey::from_bytes(&rng.gen());
        Arc::new(TrustStore::new([key.verifying_key()]))
    } else {
        fleet.clone()
    }
}

/// A simulated device's hooks.
pub struct SimHooks {
    /// Index into the tracker (0-based).
    pub slot: usize,
    /// The fleet's tracker.
    pub tracker: Arc<Tracker>,
    /// Block loss probability.
    pub block_loss: f64,
    /// See [`DeviceSpec`]; taken when it fires.
    pub disconnect_at: Option<f64>,
    /// See [`DeviceSpec`]; taken when it fires.
    pub power_loss_at: Option<f64>,
    /// For block loss.
    pub rng: StdRng,
}

impl Hooks for SimHooks {
    fn link(&mut self, up: bool) {
        self.tracker.link(self.slot, up);
    }

    fn connect_failed(&mut self, error: &str) {
        self.tracker.connect_failed(error);
    }

    fn login_refused(&mut self, reason: &str) {
        self.tracker.login_refused(self.slot, reason);
    }

    fn tls_failed(&mut self, line: &str) {
        self.tracker.tls_failed(self.slot, line);
    }

    fn notice(&mut self, n: &Notice) {
        match n {
            Notice::StatusQueued {
                seq, state, error, ..
            } => self.tracker.status(self.slot, *seq, *state, *error),
            Notice::Acked { seqs } => self.tracker.acked(self.slot, seqs),
            Notice::BlockRejected { .. } => {
                self.tracker.blocks_rejected.fetch_add(1, Ordering::Relaxed);
            }
            Notice::SubscribeRefused { .. } => {
                self.tracker
                    .subscriptions_refused
                    .fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }

    fn dropped(&mut self, _what: &'static str) {
        self.tracker
            .payloads_dropped
            .fetch_add(1, Ordering::Relaxed);
    }

    fn block_bytes(&mut self, bytes: usize) {
        self.tracker
            .block_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    fn keep_block(&mut self) -> bool {
        if self.block_loss > 0.0 && self.rng.gen_bool(self.block_loss) {
            self.tracker.blocks_lost.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    fn disrupt(&mut self, have: u32, blocks: u32) -> Option<Disruption> {
        let share = f64::from(have) / f64::from(blocks.max(1));
        if self.power_loss_at.is_some_and(|at| share >= at) {
            self.power_loss_at = None;
            self.tracker.power_losses.fetch_add(1, Ordering::Relaxed);
            return Some(Disruption::PowerLoss);
        }
        if self.disconnect_at.is_some_and(|at| share >= at) {
            self.disconnect_at = None;
            self.tracker.disconnects.fetch_add(1, Ordering::Relaxed);
            return Some(Disruption::Disconnect);
        }
        None
    }

    fn booted(&mut self, _boot: u32) {
        self.tracker.booted(self.slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::profile::Faults;

    #[test]
    fn specs_are_deterministic_and_follow_the_profile() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/fleet.toml");
        let p = Profile::load(&path).unwrap();
        let a = spec(&p, 7, None).unwrap();
        let b = spec(&p, 7, None).unwrap();
        assert_eq!(a.id.as_str(), "sim-00007");
        assert_eq!((a.arch.clone(), a.labels.clone()), (b.arch, b.labels));
        let arches: std::collections::BTreeSet<String> =
            (1..200).map(|i| spec(&p, i, None).unwrap().arch).collect();
        assert_eq!(arches.len(), 3);
        // A factory line: same labels and arch, line = NAME.
        let l: Vec<DeviceSpec> = (1..20)
            .map(|i| spec(&p, i, Some("press-4")).unwrap())
            .collect();
        assert!(l
            .iter()
            .all(|s| s.labels == l[0].labels && s.arch == l[0].arch));
        assert_eq!(l[0].labels["line"], "press-4");
        assert_eq!(l[3].id.as_str(), "press-4-00004");
    }

    #[test]
    fn fault_shares_are_roughly_the_rates() {
        let p = Profile {
            faults: Faults {
                busy_deferral: 0.25,
                wrong_key: 0.1,
                ..Faults::default()
            },
            ..Profile::default()
        };
        let specs: Vec<_> = (1..=4000).map(|i| spec(&p, i, None).unwrap()).collect();
        let busy = specs.iter().filter(|s| s.busy).count();
        let wrong = specs.iter().filter(|s| s.wrong_key).count();
        assert!((800..1200).contains(&busy), "{busy}");
        assert!((300..500).contains(&wrong), "{wrong}");
        assert!(specs
            .iter()
            .all(|s| !s.fail_boot && s.power_loss_at.is_none()));
    }
}
