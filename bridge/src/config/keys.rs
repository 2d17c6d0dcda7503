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
