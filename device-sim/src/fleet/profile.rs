//! The simulator's profile (`config/fleet.toml`): which devices to make and
//! which faults to inject. Read in two steps: [`RawProfile`] mirrors the
//! file (unknown keys refused), [`RawProfile::validate`] turns it into the
//! [`Profile`] the simulator uses, with errors that name the key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use schemas::keys::{parse_verifying_key, VerifyingKey};

use crate::agent::ImageBytes;
use schemas::ComponentName;
use serde::Deserialize;

/// Why a profile was refused.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// The file could not be read.
    #[error("cannot read profile {path}: {source}")]
    Read {
        /// The profile path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Not TOML of the expected shape (toml names the key and line).
    #[error("profile {path}: {message}")]
    Parse {
        /// The profile path.
        path: PathBuf,
        /// toml's message.
        message: String,
    },
    /// A value is out of range.
    #[error("profile key {key}: {reason}")]
    Invalid {
        /// The key, e.g. `faults.block_loss`.
        key: String,
        /// What is wrong and what is allowed.
        reason: String,
    },
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ProfileError {
    ProfileError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

/// The file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProfile {
    /// `[fleet]`.
    #[serde(default)]
    pub fleet: RawFleet,
    /// `[[arch]]`: the mix of architectures.
    #[serde(default)]
    pub arch: Vec<RawArch>,
    /// `[labels]`: label name to the values devices draw from.
    #[serde(default)]
    pub labels: BTreeMap<String, Vec<String>>,
    /// `[versions]`: component to a version or a list to draw from.
    #[serde(default)]
    pub versions: BTreeMap<String, OneOrMany>,
    /// `[images]`: `"component@version"` to the file of that installed
    /// image (relative to the profile). Devices on that version hold its
    /// bytes, so E3 deltas from it apply; others take full images.
    #[serde(default)]
    pub images: BTreeMap<String, String>,
    /// `[keys]`.
    #[serde(default)]
    pub keys: RawKeys,
    /// `[faults]`.
    #[serde(default)]
    pub faults: RawFaults,
}

/// `[fleet]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFleet {
    /// Device ids are `{id_prefix}-{n:05}` (default `sim`).
    pub id_prefix: Option<String>,
    /// Topic prefix (default `ota/v1`).
    pub topic_prefix: Option<String>,
    /// Connect attempts per second across the fleet (default 500).
    pub connects_per_second: Option<u32>,
    /// MQTT keep-alive in seconds (default 60).
    pub keep_alive_secs: Option<u64>,
    /// Largest image a device can make room for, bytes (default: no limit).
    pub room_bytes: Option<u64>,
    /// Seeds every random choice (default 1).
    pub seed: Option<u64>,
    /// `downloading` progress at most every this many seconds (default 5, at least 2).
    pub progress_every_secs: Option<u64>,
    /// Share of devices that apply E3 deltas (list `delta-zstd`), 0..=1
    /// (default 1).
    pub delta_share: Option<f64>,
}

/// One `[[arch]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawArch {
    /// e.g. `esp32`.
    pub name: String,
    /// Relative share (default 1).
    pub weight: Option<u32>,
}

/// A value or a list of values.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// One value.
    One(String),
    /// Values drawn uniformly.
    Many(Vec<String>),
}

/// `[keys]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKeys {
    /// Trusted release public keys: key files (relative to the profile) or
    /// 64 hex characters.
    #[serde(default)]
    pub trusted: Vec<String>,
    /// Director public keys (E2), the same way; empty: the devices read
    /// control messages as in v1.
    #[serde(default)]
    pub director: Vec<String>,
}

/// `[faults]`: probabilities in 0..=1.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFaults {
    /// Each incoming block is lost with this probability.
    pub block_loss: Option<f64>,
    /// Share of devices that lose their connection once mid-download.
    pub disconnect_mid_download: Option<f64>,
    /// Share of devices that lose power once mid-download (restart from
    /// the kept state).
    pub power_loss: Option<f64>,
    /// Share of devices whose install fails.
    pub install_failure: Option<f64>,
    /// Share of devices whose firmware boot fails (rolled back).
    pub boot_failure: Option<f64>,
    /// Share of devices busy when a campaign comes (deferral).
    pub busy_deferral: Option<f64>,
    /// How long a busy device puts a campaign off, seconds (default 30).
    pub busy_deferral_secs: Option<u64>,
    /// Share of devices that trust the wrong release key.
    pub wrong_key: Option<f64>,
    /// A bad build: this version fails on `bad_build_failure` of the
    /// devices (firmware: the boot fails and rolls back; app or config:
    /// the install fails). Other versions install fine on them.
    pub bad_build: Option<String>,
    /// Share of devices the bad build fails on.
    pub bad_build_failure: Option<f64>,
}

/// A validated profile.
#[derive(Debug, Clone)]
pub struct Profile {
    /// Device id prefix.
    pub id_prefix: String,
    /// Topic prefix.
    pub topic_prefix: String,
    /// Connects per second.
    pub connects_per_second: u32,
    /// Keep-alive, seconds.
    pub keep_alive_secs: u64,
    /// Room for images, bytes.
    pub room_bytes: Option<u64>,
    /// Seed.
    pub seed: u64,
    /// Progress interval, ms.
    pub progress_every_ms: u64,
    /// `(arch, weight)`, weights > 0.
    pub arches: Vec<(String, u32)>,
    /// Label name to values (each non-empty).
    pub labels: BTreeMap<String, Vec<String>>,
    /// Component to versions drawn from.
    pub versions: BTreeMap<ComponentName, Vec<String>>,
    /// Installed images by (component, version), read once and shared.
    pub images: BTreeMap<(ComponentName, String), ImageBytes>,
    /// Share of devices that apply deltas.
    pub delta_share: f64,
    /// Trusted release keys.
    pub trusted: Vec<VerifyingKey>,
    /// Director keys (E2), never a release key.
    pub directors: Vec<VerifyingKey>,
    /// Fault rates.
    pub faults: Faults,
}

/// Validated fault rates.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    /// See [`RawFaults`].
    pub block_loss: f64,
    /// See [`RawFaults`].
    pub disconnect_mid_download: f64,
    /// See [`RawFaults`].
    pub power_loss: f64,
    /// See [`RawFaults`].
    pub install_failure: f64,
    /// See [`RawFaults`].
    pub boot_failure: f64,
    /// See [`RawFaults`].
    pub busy_deferral: f64,
    /// Seconds.
    pub busy_deferral_secs: u64,
    /// See [`RawFaults`].
    pub wrong_key: f64,
    /// See [`RawFaults`].
    pub bad_build: Option<String>,
    /// See [`RawFaults`].
    pub bad_build_failure: f64,
}

impl Default for Profile {
    fn default() -> Self {
        // The empty profile is valid by construction.
        RawProfile::default()
            .validate(Path::new("."))
            .unwrap_or_else(|e| unreachable!("the default profile is valid: {e}"))
    }
}

impl Profile {
    /// Reads and validates a profile file.
    pub fn load(path: &Path) -> Result<Self, ProfileError> {
        let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses profile text; key files are relative to `path`'s directory.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ProfileError> {
        let raw: RawProfile = toml::from_str(text).map_err(|e| ProfileError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        raw.validate(path.parent().unwrap_or(Path::new(".")))
    }
}

fn rate(key: &str, v: Option<f64>) -> Result<f64, ProfileError> {
    let v = v.unwrap_or(0.0);
    if !(0.0..=1.0).contains(&v) {
        return Err(invalid(
            format!("faults.{key}"),
            format!("{v} is not a probability in 0..=1"),
        ));
    }
    Ok(v)
}

impl RawProfile {
    /// Checks every value; key files are read relative to `base`.
    pub fn validate(self, base: &Path) -> Result<Profile, ProfileError> {
        let f = self.fleet;
        let id_prefix = f.id_prefix.unwrap_or_else(|| "sim".into());
        // Ids are `{prefix}-{n:05}`: the prefix must leave room for that.
        if !schemas::ids::is_valid_name(&id_prefix) || id_prefix.len() > 50 {
            return Err(invalid(
                "fleet.id_prefix",
                "use 1-50 characters of [A-Za-z0-9._-]",
            ));
        }
        let topic_prefix = f
            .topic_prefix
            .unwrap_or_else(|| schemas::DEFAULT_PREFIX.into());
        schemas::topic::Topics::new(topic_prefix.clone())
            .map_err(|e| invalid("fleet.topic_prefix", e.to_string()))?;
        let connects_per_second = f.connects_per_second.unwrap_or(500);
        if connects_per_second == 0 {
            return Err(invalid("fleet.connects_per_second", "must be at least 1"));
        }
        let keep_alive_secs = f.keep_alive_secs.unwrap_or(60);
        if !(5..=65_535).contains(&keep_alive_secs) {
            return Err(invalid(
                "fleet.keep_alive_secs",
                "must be 5..=65535 (rumqttd refuses 0)",
            ));
        }
        let progress_every_ms = f.progress_every_secs.unwrap_or(5).max(2) * 1000;

        let mut arches = Vec::new();
        for (i, a) in self.arch.into_iter().enumerate() {
            if !schemas::ids::is_valid_name(&a.name) {
                return Err(invalid(format!("arch[{i}].name"), "use [A-Za-z0-9._-]"));
            }
            let w = a.weight.unwrap_or(1);
            if w == 0 {
                return Err(invalid(format!("arch[{i}].weight"), "must be at least 1"));
            }
            arches.push((a.name, w));
        }
        if arches.is_empty() {
            arches.push(("esp32".into(), 1));
        }
        for (k, vs) in &self.labels {
            if vs.is_empty() {
                return Err(invalid(format!("labels.{k}"), "give at least one value"));
            }
        }
        let mut versions = BTreeMap::new();
        for (c, v) in self.versions {
            let name = ComponentName::new(&c)
                .map_err(|e| invalid(format!("versions.{c}"), e.to_string()))?;
            let list = match v {
                OneOrMany::One(s) => vec![s],
                OneOrMany::Many(l) => l,
            };
            if list.is_empty() {
                return Err(invalid(
                    format!("versions.{c}"),
                    "give at least one version",
                ));
            }
            versions.insert(name, list);
        }
        if versions.is_empty() {
            versions.insert(
                ComponentName::new("main").unwrap_or_else(|_| unreachable!("a valid name")),
                vec!["1.0.0".into()],
            );
        }
        let images = read_images(base, &self.images)?;
        let delta_share = f.delta_share.unwrap_or(1.0);
        if !(0.0..=1.0).contains(&delta_share) {
            return Err(invalid(
                "fleet.delta_share",
                format!("{delta_share} is not a share in 0..=1"),
            ));
        }
        let trusted = read_keys(base, "keys.trusted", &self.keys.trusted)?;
        let directors = read_keys(base, "keys.director", &self.keys.director)?;
        if let Some(k) = directors.iter().find(|k| trusted.contains(k)) {
            return Err(invalid(
                "keys.director",
                format!(
                    "{} is also in keys.trusted: a director key is never a release key",
                    schemas::keys::kid_to_hex(&schemas::keys::kid(k))
                ),
            ));
        }
        let r = self.faults;
        let faults = Faults {
            block_loss: rate("block_loss", r.block_loss)?,
            disconnect_mid_download: rate("disconnect_mid_download", r.disconnect_mid_download)?,
            power_loss: rate("power_loss", r.power_loss)?,
            install_failure: rate("install_failure", r.install_failure)?,
            boot_failure: rate("boot_failure", r.boot_failure)?,
            busy_deferral: rate("busy_deferral", r.busy_deferral)?,
            busy_deferral_secs: r.busy_deferral_secs.unwrap_or(30),
            wrong_key: rate("wrong_key", r.wrong_key)?,
            bad_build: r.bad_build,
            bad_build_failure: rate("bad_build_failure", r.bad_build_failure)?,
        };
        if faults.block_loss >= 0.9 {
            return Err(invalid(
                "faults.block_loss",
                "below 0.9, or no download ever ends",
            ));
        }
        Ok(Profile {
            id_prefix,
            topic_prefix,
            connects_per_second,
            keep_alive_secs,
            room_bytes: f.room_bytes,
            seed: f.seed.unwrap_or(1),
            progress_every_ms,
            arches,
            labels: self.labels,
            versions,
            images,
            delta_share,
            trusted,
            directors,
            faults,
        })
    }
}

/// `[images]`: each `"component@version" = "file"` read and hashed once.
fn read_images(
    base: &Path,
    entries: &BTreeMap<String, String>,
) -> Result<BTreeMap<(ComponentName, String), ImageBytes>, ProfileError> {
    let mut out = BTreeMap::new();
    for (k, file) in entries {
        let key = format!("images.{k:?}");
        let (c, v) = k
            .split_once('@')
            .ok_or_else(|| invalid(&key, "name it \"component@version\", e.g. \"main@1.0.0\""))?;
        let c = ComponentName::new(c).map_err(|e| invalid(&key, e.to_string()))?;
        let p = base.join(file);
        let bytes = std::fs::read(&p)
            .map_err(|e| invalid(&key, format!("cannot read {}: {e}", p.display())))?;
        if bytes.is_empty() {
            return Err(invalid(&key, format!("{} is empty", p.display())));
        }
        out.insert((c, v.to_string()), ImageBytes::new(bytes));
    }
    Ok(out)
}

/// Public keys from `[keys]` entries: key files (relative to `base`) or
/// 64 hex characters.
fn read_keys(
    base: &Path,
    what: &str,
    entries: &[String],
) -> Result<Vec<VerifyingKey>, ProfileError> {
    let mut out = Vec::new();
    for (i, k) in entries.iter().enumerate() {
        let key = format!("{what}[{i}]");
        let text = if k.len() == 64 && k.chars().all(|c| c.is_ascii_hexdigit()) {
            k.clone()
        } else {
            let p = base.join(k);
            std::fs::read_to_string(&p)
                .map_err(|e| invalid(&key, format!("cannot read {}: {e}", p.display())))?
        };
        out.push(parse_verifying_key(&text).map_err(|e| invalid(&key, e.to_string()))?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_profile_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/fleet.toml");
        let p = Profile::load(&path).unwrap();
        assert!(p.arches.len() >= 2);
        assert!(p.labels.contains_key("customer"));
        assert!(!p.trusted.is_empty());
        assert!(p.faults.block_loss > 0.0);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let e = Profile::parse("[fleet]\nid_prefx = \"x\"\n", Path::new("p.toml")).unwrap_err();
        assert!(e.to_string().contains("id_prefx"), "{e}");
        let e = Profile::parse("[faults]\nblock_loss = 1.5\n", Path::new("p.toml")).unwrap_err();
        assert!(e.to_string().contains("faults.block_loss"), "{e}");
        let e = Profile::parse("[fleet]\nkeep_alive_secs = 0\n", Path::new("p.toml")).unwrap_err();
        assert!(e.to_string().contains("fleet.keep_alive_secs"), "{e}");
        let e =
            Profile::parse("[keys]\ntrusted = [\"nope.pub\"]\n", Path::new("p.toml")).unwrap_err();
        assert!(e.to_string().contains("keys.trusted[0]"), "{e}");
        let e = Profile::parse("[labels]\nsite = []\n", Path::new("p.toml")).unwrap_err();
        assert!(e.to_string().contains("labels.site"), "{e}");
        let e = Profile::parse("[images]\nmain = \"x.bin\"\n", Path::new("p.toml")).unwrap_err();
        assert!(e.to_string().contains("component@version"), "{e}");
        let e = Profile::parse("[fleet]\ndelta_share = 2.0\n", Path::new("p.toml")).unwrap_err();
        assert!(e.to_string().contains("fleet.delta_share"), "{e}");
    }

    #[test]
    fn defaults() {
        let p = Profile::default();
        assert_eq!(p.id_prefix, "sim");
        assert_eq!(p.connects_per_second, 500);
        assert_eq!(p.arches, [("esp32".to_string(), 1)]);
        assert_eq!(
            p.faults,
            Faults {
                busy_deferral_secs: 30,
                ..Faults::default()
            }
        );
    }
}
