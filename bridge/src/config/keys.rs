//! Key files named in `ota.toml`: public key lists, one public key, and
//! the director's private key (which is never a release key).

use std::collections::BTreeMap;
use std::path::PathBuf;

use schemas::keys::{Kid, SigningKey, VerifyingKey};

use super::{ConfigError, Validator};

impl Validator<'_> {
    /// Reads `[bridge] director_key`, a private key file, and refuses a
    /// release key: the release key never sits on the server (E2).
    pub(super) fn director_key(
        &self,
        file: PathBuf,
        release_keys: &BTreeMap<Kid, VerifyingKey>,
    ) -> Result<SigningKey, ConfigError> {
        let path = self.resolve(file);
        let named_release = path
            .file_stem()
            .and_then(|s| s.to_str())
            .is_some_and(|s| s.eq_ignore_ascii_case("release"));
        let text = std::fs::read_to_string(&path).map_err(|e| {
            self.err(
                "bridge",
                "director_key",
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        let key = schemas::keys::parse_signing_key(&text).map_err(|e| {
            self.err(
                "bridge",
                "director_key",
                format!(
                    "{}: {e} (name the director.key that `ota keygen` wrote)",
                    path.display()
                ),
            )
        })?;
        let kid = schemas::keys::kid(&key.verifying_key());
        if named_release || release_keys.contains_key(&kid) {
            return Err(self.err(
                "bridge",
                "director_key",
                format!(
                    "{} is a release private key (kid {}): the release key must never sit on the \
                     server; keep it offline, and give the bridge the director.key of `ota keygen`",
                    path.display(),
                    hex::encode(kid)
                ),
            ));
        }
        Ok(key)
    }

    /// Reads `[bridge] director_keys_next`, the public halves of the next
    /// director keys (rotation), and refuses a release key or the current
    /// director key's own public half: either is a mistake that would
    /// leave devices trusting nothing new.
    pub(super) fn director_keys_next(
        &self,
        files: Vec<PathBuf>,
        release_keys: &BTreeMap<Kid, VerifyingKey>,
        director_key: Option<&SigningKey>,
    ) -> Result<BTreeMap<Kid, VerifyingKey>, ConfigError> {
        let current = director_key.map(|k| schemas::keys::kid(&k.verifying_key()));
        let mut out = BTreeMap::new();
        for (i, file) in files.into_iter().enumerate() {
            let key = format!("director_keys_next[{i}]");
            let path = self.resolve(file.clone());
            let vk = self.public_key("bridge", key.clone(), file)?;
            let kid = schemas::keys::kid(&vk);
            let why = if release_keys.contains_key(&kid) {
                "is a release key: a director key must never be one; list the .pub of a new `ota keygen` pair"
            } else if current == Some(kid) {
                "is the current director_key's public half: list the .pub of the next director key, a new `ota keygen` pair"
            } else {
                out.insert(kid, vk);
                continue;
            };
            return Err(self.err(
                "bridge",
                key,
                format!("{} (kid {}) {why}", path.display(), hex::encode(kid)),
            ));
        }
        Ok(out)
    }

    /// Reads a list of public key files, by kid.
    pub(super) fn keys(
        &self,
        key: &'static str,
        files: Vec<PathBuf>,
    ) -> Result<BTreeMap<Kid, VerifyingKey>, ConfigError> {
        let mut out = BTreeMap::new();
        for (i, file) in files.into_iter().enumerate() {
            let vk = self.public_key("bridge", format!("{key}[{i}]"), file)?;
            out.insert(schemas::keys::kid(&vk), vk);
        }
        Ok(out)
    }

    /// Reads one public key file named at `[section] key`.
    pub(super) fn public_key(
        &self,
        section: &'static str,
        key: String,
        file: PathBuf,
    ) -> Result<VerifyingKey, ConfigError> {
        let path = self.resolve(file);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            self.err(
                section,
                key.clone(),
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        schemas::keys::parse_verifying_key(&text).map_err(|e| {
            self.err(
                section,
                key.clone(),
                format!(
                    "{}: {e} (list public key files, the .pub of `ota keygen`)",
                    path.display()
                ),
            )
        })
    }
}
