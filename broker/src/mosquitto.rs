//! `[broker.mosquitto]`: an external Mosquitto whose password and ACL
//! files ota writes (`ota broker mosquitto`) and the bridge keeps current
//! (PROTOCOL.md E1 on Mosquitto). Only with `mode = "external"`, whose
//! `url` is then Mosquitto's service listener (the bridge and operators);
//! devices get a listener of their own, `devices_listen`.
//!
//! ```toml
//! [broker.mosquitto]
//! dir = "/etc/mosquitto/ota"                 # where the files are written
//! pid_file = "/run/mosquitto/mosquitto.pid"  # whom the bridge sends SIGHUP
//! devices_listen = "0.0.0.0:1883"            # the devices' listener
//! [broker.mosquitto.operators]               # operator accounts: name = "password"
//! alice = "change-me-too"
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use serde::Deserialize;

use crate::error::ConfigError;

/// The devices' listener unless `devices_listen` says otherwise.
pub const DEFAULT_DEVICES_LISTEN: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 1883);

/// `[broker.mosquitto]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMosquitto {
    pub dir: PathBuf,
    pub pid_file: Option<PathBuf>,
    pub devices_listen: Option<String>,
    pub operators: Option<BTreeMap<String, String>>,
}

/// The validated `[broker.mosquitto]`. Relative paths are the config
/// file's to resolve (the bridge's config does).
#[derive(Clone, PartialEq, Eq)]
pub struct MosquittoConfig {
    /// Where the conf, password and ACL files are written.
    pub dir: PathBuf,
    /// Mosquitto's pid file (also written into the conf as `pid_file`):
    /// the bridge sends that process SIGHUP after each rewrite. `None`:
    /// the files are rewritten and Mosquitto reloads only when told.
    pub pid_file: Option<PathBuf>,
    /// Where the devices' listener binds.
    pub devices_listen: SocketAddr,
    /// Operator accounts on the service listener: username → password.
    pub operators: BTreeMap<String, String>,
}

impl fmt::Debug for MosquittoConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MosquittoConfig")
            .field("dir", &self.dir)
            .field("pid_file", &self.pid_file)
            .field("devices_listen", &self.devices_listen)
            .field("operators", &self.operators.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl RawMosquitto {
    /// Checks the keys; `service_port` is the port of `[broker] url`,
    /// which the devices' listener must not take.
    pub(crate) fn validate(
        self,
        service_port: u16,
        bridge_user: Option<&str>,
    ) -> Result<MosquittoConfig, ConfigError> {
        let devices_listen = match self.devices_listen {
            None => DEFAULT_DEVICES_LISTEN,
            Some(s) => s.parse().map_err(|_| {
                ConfigError::new(
                    "mosquitto.devices_listen",
                    format!("{s:?} is not an address with a port, such as \"0.0.0.0:1883\""),
                )
            })?,
        };
        if devices_listen.port() == service_port || devices_listen.port() == 0 {
            return Err(ConfigError::new(
                "mosquitto.devices_listen",
                format!(
                    "port {} is taken: the devices' listener needs a port of its own, not 0 \
                     and not the one of [broker] url (the bridge's and operators' listener)",
                    devices_listen.port()
                ),
            ));
        }
        if bridge_user.is_none() {
            return Err(ConfigError::new(
                "username",
                "required with [broker.mosquitto]: Mosquitto's service listener refuses \
                 anonymous logins, so the bridge needs [broker] username and password \
                 (ota writes their hash into its password file)",
            ));
        }
        let operators = self.operators.unwrap_or_default();
        for (user, password) in &operators {
            if user.is_empty() || user.contains([':', ' ', '\n']) || password.is_empty() {
                return Err(ConfigError::new(
                    "mosquitto.operators",
                    format!(
                        "{user:?}: a username without ':', spaces or newlines, and a password \
                         that is not empty"
                    ),
                ));
            }
            if Some(user.as_str()) == bridge_user {
                return Err(ConfigError::new(
                    "mosquitto.operators",
                    format!("{user:?} is the bridge's [broker] username: give operators their own"),
                ));
            }
        }
        if self.dir.as_os_str().is_empty() {
            return Err(ConfigError::new(
                "mosquitto.dir",
                "must name a directory, such as \"/etc/mosquitto/ota\"",
            ));
        }
        Ok(MosquittoConfig {
            dir: self.dir,
            pid_file: self.pid_file,
            devices_listen,
            operators,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(devices_listen: Option<&str>, operators: &[(&str, &str)]) -> RawMosquitto {
        RawMosquitto {
            dir: "m".into(),
            pid_file: None,
            devices_listen: devices_listen.map(str::to_string),
            operators: Some(
                operators
                    .iter()
                    .map(|(u, p)| (u.to_string(), p.to_string()))
                    .collect(),
            ),
        }
    }

    #[test]
    fn keys_are_checked_and_named() {
        let ok = raw(None, &[("alice", "pw")])
            .validate(1884, Some("bridge"))
            .unwrap();
        assert_eq!(ok.devices_listen, DEFAULT_DEVICES_LISTEN);
        assert!(!format!("{ok:?}").contains("pw"));
        for (r, key) in [
            (raw(Some("0.0.0.0:1884"), &[]), "mosquitto.devices_listen"),
            (raw(Some("nope"), &[]), "mosquitto.devices_listen"),
            (raw(None, &[("a:b", "pw")]), "mosquitto.operators"),
            (raw(None, &[("alice", "")]), "mosquitto.operators"),
            (raw(None, &[("bridge", "pw")]), "mosquitto.operators"),
        ] {
            let e = r.validate(1884, Some("bridge")).unwrap_err();
            assert_eq!(e.key, key, "{e}");
        }
        let e = raw(None, &[]).validate(1884, None).unwrap_err();
        assert_eq!(e.key, "username", "{e}");
    }
}
