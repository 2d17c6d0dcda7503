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
//! edge_pid_files = ["/run/mosquitto/edge-1.pid"] # edge brokers on the same files, SIGHUP too
//! devices_listen = "0.0.0.0:1883"            # the devices' listener
//! [[broker.mosquitto.edges]]                 # an edge with its own devices (repeat per edge)
//! name = "plant-a"                           # its files: DIR/edges/plant-a/devices.{passwd,acl}
//! pid_file = "/run/mosquitto/plant-a.pid"    # SIGHUP when its files change
//! device_prefixes = ["plant-a-"]             # the devices it serves: ids that begin so
//! [broker.mosquitto.operators]               # operator accounts: name = "password"
//! alice = "change-me-too"
//! [broker.mosquitto.tls]                     # both listeners over TLS (url = "mqtts://...")
//! ca_file = "pki/ca.crt"                     # clients' certificates chain to it
//! cert_file = "pki/server.crt"               # the broker's (ota pki init)
//! key_file = "pki/server.key"
//! ```
//!
//! With `tls`, every client presents a certificate signed by `ca_file`
//! (`require_certificate`); on the devices' listener its subject CN is the
//! device's username and client id (`use_identity_as_username`), so a
//! device logs in by certificate alone; on the service listener the bridge
//! and operators log in with their passwords as well.

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
    pub edge_pid_files: Option<Vec<PathBuf>>,
    pub devices_listen: Option<String>,
    pub operators: Option<BTreeMap<String, String>>,
    pub tls: Option<MosquittoTls>,
    pub edges: Option<Vec<MosquittoEdge>>,
}

/// `[[broker.mosquitto.edges]]`: an edge Mosquitto that holds only its own
/// devices (docs/scaling.md, "Edges with their own devices"). The bridge
/// writes their password and ACL files into `DIR/edges/NAME/`, leaves
/// them out of the core's devices' files, and sends SIGHUP to `pid_file`
/// only when the edge's own files changed. Mosquitto 2.0 reparses a whole
/// ACL file on every reload, in a time that grows with the square of its
/// users: an edge of 10,000 devices reparses in about a second, one file
/// of 100,000 would take minutes on every broker.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MosquittoEdge {
    /// `[A-Za-z0-9._-]`, unique: the name of its directory.
    pub name: String,
    /// The edge Mosquitto's pid file; relative paths are the config
    /// file's to resolve. `None`: its files are rewritten, it reloads when
    /// told.
    pub pid_file: Option<PathBuf>,
    /// A device whose id begins with one of these is this edge's: in its
    /// files, and in no other broker's (the first edge that matches takes
    /// it). Devices no edge takes are in the core's devices' files.
    pub device_prefixes: Vec<String>,
}

impl MosquittoEdge {
    /// Does `device_id` belong to this edge?
    pub fn takes(&self, device_id: &str) -> bool {
        self.device_prefixes
            .iter()
            .any(|p| device_id.starts_with(p.as_str()))
    }
}

/// `[broker.mosquitto.tls]`: PEM files for Mosquitto's `cafile`,
/// `certfile` and `keyfile` on both listeners. Relative paths are the
/// config file's to resolve.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MosquittoTls {
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
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
    /// The pid files of edge Mosquittos that read the same devices'
    /// password and ACL files and bridge to this one (docs/scaling.md,
    /// "The topology past one broker"): each is sent SIGHUP after each
    /// rewrite too, after `pid_file`'s.
    pub edge_pid_files: Vec<PathBuf>,
    /// Where the devices' listener binds.
    pub devices_listen: SocketAddr,
    /// Operator accounts on the service listener: username → password.
    pub operators: BTreeMap<String, String>,
    /// Both listeners over TLS, client certificates required.
    pub tls: Option<MosquittoTls>,
    /// Edges with their own devices' files, in the order written.
    pub edges: Vec<MosquittoEdge>,
}

impl MosquittoConfig {
    /// The edge that serves `device_id` (the first whose prefix matches),
    /// or `None`: the core's devices' listener does.
    pub fn edge_of(&self, device_id: &str) -> Option<&MosquittoEdge> {
        edge_index(&self.edges, device_id).map(|i| &self.edges[i])
    }
}

/// The index of the edge of `edges` that serves `device_id`: the first
/// that takes it.
pub fn edge_index(edges: &[MosquittoEdge], device_id: &str) -> Option<usize> {
    edges.iter().position(|e| e.takes(device_id))
}

impl fmt::Debug for MosquittoConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MosquittoConfig")
            .field("dir", &self.dir)
            .field("pid_file", &self.pid_file)
            .field("edge_pid_files", &self.edge_pid_files)
            .field("devices_listen", &self.devices_listen)
            .field("operators", &self.operators.keys().collect::<Vec<_>>())
            .field("tls", &self.tls)
            .field("edges", &self.edges)
            .finish()
    }
}

impl RawMosquitto {
    /// Checks the keys; `service_port` is the port of `[broker] url`,
    /// which the devices' listener must not take, and `service_tls`
    /// whether it is `mqtts://` (it must be exactly when `tls` is given).
    pub(crate) fn validate(
        self,
        service_port: u16,
        service_tls: bool,
        bridge_user: Option<&str>,
    ) -> Result<MosquittoConfig, ConfigError> {
        match (&self.tls, service_tls) {
            (Some(_), false) => {
                return Err(ConfigError::new(
                    "url",
                    "must be mqtts:// with [broker.mosquitto.tls]: the service listener \
                     then speaks TLS only",
                ))
            }
            (None, true) => {
                return Err(ConfigError::new(
                    "mosquitto.tls",
                    "required with url = \"mqtts://...\": give ca_file, cert_file and key_file \
                     (ota pki init writes them) so that the listeners ota writes speak TLS",
                ))
            }
            _ => {}
        }
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
        let edges = self.edges.unwrap_or_default();
        validate_edges(&edges)?;
        Ok(MosquittoConfig {
            dir: self.dir,
            pid_file: self.pid_file,
            edge_pid_files: self.edge_pid_files.unwrap_or_default(),
            devices_listen,
            operators,
            tls: self.tls,
            edges,
        })
    }
}

/// Names that make a directory of their own, prefixes a device id can
/// begin with.
fn validate_edges(edges: &[MosquittoEdge]) -> Result<(), ConfigError> {
    let id_chars = |s: &str| {
        s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    };
    let mut names = std::collections::BTreeSet::new();
    for e in edges {
        let bad = |why: String| ConfigError::new("mosquitto.edges", why);
        if e.name.is_empty() || e.name.len() > 64 || !id_chars(&e.name) || e.name.starts_with('.') {
            return Err(bad(format!(
                "name {:?}: 1 to 64 of [A-Za-z0-9._-], not starting with '.' (it names the \
                 edge's directory)",
                e.name
            )));
        }
        if !names.insert(e.name.as_str()) {
            return Err(bad(format!("name {:?} is given twice", e.name)));
        }
        if e.device_prefixes.is_empty() {
            return Err(bad(format!(
                "{:?} has no device_prefixes: list the beginnings of its devices' ids, \
                 such as [\"plant-a-\"]",
                e.name
            )));
        }
        if let Some(p) = e
            .device_prefixes
            .iter()
            .find(|p| p.is_empty() || !id_chars(p))
        {
            return Err(bad(format!(
                "{:?}: device prefix {p:?} must be 1 or more of [A-Za-z0-9._-], the \
                 characters of a device id",
                e.name
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(devices_listen: Option<&str>, operators: &[(&str, &str)]) -> RawMosquitto {
        RawMosquitto {
            dir: "m".into(),
            pid_file: None,
            edge_pid_files: None,
            devices_listen: devices_listen.map(str::to_string),
            operators: Some(
                operators
                    .iter()
                    .map(|(u, p)| (u.to_string(), p.to_string()))
                    .collect(),
            ),
            tls: None,
            edges: None,
        }
    }

    #[test]
    fn keys_are_checked_and_named() {
        let ok = raw(None, &[("alice", "pw")])
            .validate(1884, false, Some("bridge"))
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
            let e = r.validate(1884, false, Some("bridge")).unwrap_err();
            assert_eq!(e.key, key, "{e}");
        }
        let e = raw(None, &[]).validate(1884, false, None).unwrap_err();
        assert_eq!(e.key, "username", "{e}");
        // TLS on both sides or neither.
        let e = raw(None, &[]).validate(8883, true, Some("b")).unwrap_err();
        assert_eq!(e.key, "mosquitto.tls", "{e}");
        let mut r = raw(None, &[]);
        r.tls = Some(MosquittoTls {
            ca_file: "ca.crt".into(),
            cert_file: "server.crt".into(),
            key_file: "server.key".into(),
        });
        assert_eq!(
            r.clone().validate(1884, false, Some("b")).unwrap_err().key,
            "url"
        );
        assert!(r.validate(8883, true, Some("b")).unwrap().tls.is_some());
    }

    fn edge(name: &str, prefixes: &[&str]) -> MosquittoEdge {
        MosquittoEdge {
            name: name.into(),
            pid_file: None,
            device_prefixes: prefixes.iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn edges_are_named_once_and_take_their_devices_by_prefix() {
        let mut r = raw(None, &[]);
        r.edges = Some(vec![
            edge("a", &["plant-a-", "lab-"]),
            edge("b", &["plant-"]),
        ]);
        let m = r.validate(1884, false, Some("b")).unwrap();
        assert_eq!(m.edge_of("plant-a-7").map(|e| e.name.as_str()), Some("a"));
        assert_eq!(m.edge_of("lab-1").map(|e| e.name.as_str()), Some("a"));
        // The first edge that matches takes it.
        assert_eq!(m.edge_of("plant-b-7").map(|e| e.name.as_str()), Some("b"));
        assert_eq!(m.edge_of("other-1"), None);
        for edges in [
            vec![edge("a", &["x-"]), edge("a", &["y-"])],
            vec![edge("", &["x-"])],
            vec![edge("../up", &["x-"])],
            vec![edge(".hidden", &["x-"])],
            vec![edge("a", &[])],
            vec![edge("a", &[""])],
            vec![edge("a", &["x/"])],
        ] {
            let mut r = raw(None, &[]);
            r.edges = Some(edges.clone());
            let e = r.validate(1884, false, Some("b")).unwrap_err();
            assert_eq!(e.key, "mosquitto.edges", "{edges:?}: {e}");
        }
    }
}
