//! `[devices]`: who may log in and register: `admission`, the fleet
//! enrollment token's hash (`enrollment_token_hash`, a file, never the
//! token itself) and the fleet-wide bound on enrollments
//! (`registrations_per_minute`).

use std::path::PathBuf;

use schemas::provisioning::PasswordHash;

use super::raw::RawDevices;
use super::{ConfigError, DevicesConfig, Validator};
use crate::identity::Admission;

/// `[devices] registrations_per_minute` when not set.
pub const DEFAULT_REGISTRATIONS_PER_MINUTE: u32 = 60;

impl Validator<'_> {
    pub(super) fn devices(
        &self,
        raw: RawDevices,
        broker: &broker::BrokerConfig,
    ) -> Result<DevicesConfig, ConfigError> {
        let registrations_per_minute = raw
            .registrations_per_minute
            .unwrap_or(DEFAULT_REGISTRATIONS_PER_MINUTE);
        let admission = match raw.admission.as_deref() {
            None | Some("provisioned") => Admission::Provisioned,
            Some("open") => Admission::Open,
            Some("enroll") => {
                let Some(file) = raw.enrollment_token_hash.clone() else {
                    return Err(self.err(
                        "devices",
                        "enrollment_token_hash",
                        "required with admission = \"enroll\": `ota devices enrollment-token --out keys/` \
                         writes keys/enrollment.hash; set enrollment_token_hash = \"keys/enrollment.hash\"",
                    ));
                };
                let token = self.token_hash(file)?;
                match broker {
                    broker::BrokerConfig::Embedded(e) if !e.users.is_empty() => {}
                    broker::BrokerConfig::Embedded(_) => {
                        return Err(self.err(
                            "devices",
                            "admission",
                            "\"enroll\" needs the embedded broker's accounts ([broker.users]): an \
                             anonymous broker checks no login",
                        ))
                    }
                    broker::BrokerConfig::External(_) => {
                        return Err(self.err(
                            "devices",
                            "admission",
                            "\"enroll\" needs the embedded broker, which asks the bridge at every \
                             login; an external broker knows only provisioned devices: use \
                             \"provisioned\" and `ota devices provision`",
                        ))
                    }
                }
                Admission::Enroll { token }
            }
            Some(other) => {
                return Err(self.err(
                    "devices",
                    "admission",
                    format!(
                        "{other:?} is not an admission rule: use \"provisioned\" (only devices \
                         provisioned with `ota devices provision` register), \"enroll\" (also \
                         devices that log in with the fleet enrollment token, pending until \
                         `ota devices accept`) or \"open\" (any Hello registers: development only)"
                    ),
                ))
            }
        };
        if raw.enrollment_token_hash.is_some() && !matches!(admission, Admission::Enroll { .. }) {
            return Err(self.err(
                "devices",
                "enrollment_token_hash",
                "only used with admission = \"enroll\": set that too, or remove this key",
            ));
        }
        Ok(DevicesConfig {
            admission,
            registrations_per_minute,
        })
    }

    /// The `$6$` hash in `file`.
    fn token_hash(&self, file: PathBuf) -> Result<PasswordHash, ConfigError> {
        let path = self.resolve(file);
        let key = "enrollment_token_hash";
        let text = std::fs::read_to_string(&path).map_err(|e| {
            self.err(
                "devices",
                key,
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        PasswordHash::parse(text.trim()).ok_or_else(|| {
            self.err(
                "devices",
                key,
                format!(
                    "{} holds no `$6$` hash (never the token itself): write it with \
                     `ota devices enrollment-token --out DIR`, which writes DIR/enrollment.hash",
                    path.display()
                ),
            )
        })
    }
}
