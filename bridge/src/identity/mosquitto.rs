//! PROTOCOL.md E1 on Mosquitto: the `password_file`s and `acl_file`s that
//! give an external Mosquitto the embedded broker's rules (issue 12).
//!
//! Two listeners, with `per_listener_settings true` ([`conf`]):
//!
//! - the devices' listener: `use_username_as_clientid true`, so a device's
//!   client id is its username whatever it sends (no one takes another
//!   device's or the bridge's session); its password file holds the active
//!   devices only (revoked and pending are absent: refused at login); its
//!   ACL gives every active device, in a `user` section each, its own
//!   topics, `P/emergency`, the campaign and emergency topics of the
//!   groups in its Membership and the block topics of the artifacts
//!   announced to it. No `pattern` rules: with `[broker.mosquitto.tls]`
//!   (`use_identity_as_username`) Mosquitto reads no password file on
//!   this listener, so a revoked or pending device's certificate still
//!   logs in, and it must find no rights there (it then has none);
//! - the service listener: the bridge's account (both its client ids) and
//!   the operators', each with its E1 row. The bridge's account may also
//!   do what an operator does, as on the embedded broker, where it may
//!   take an operator's client id.
//!
//! With `[[broker.mosquitto.edges]]`, a device an edge takes (by the
//! prefix of its id) is in that edge's own two devices' files
//! ([`EdgeFiles`]) and in no other broker's: Mosquitto 2.0 reparses an ACL
//! file in a time that grows with the square of its users, so each edge
//! reads only its own (docs/scaling.md, "Edges with their own devices").
//!
//! Pure text from the registry and the grants; writing the files and
//! telling Mosquitto to reload them is the caller's.

use broker::mosquitto::MosquittoEdge;
use schemas::topic::{Filter, Topic, Topics};
use schemas::DeviceId;

use super::grants::Grants;

/// File names inside the directory the files are written to.
pub const DEVICES_PASSWD: &str = "devices.passwd";
pub const DEVICES_ACL: &str = "devices.acl";
pub const SERVICE_PASSWD: &str = "service.passwd";
pub const SERVICE_ACL: &str = "service.acl";

/// What the files are made of.
pub struct Input<'a> {
    pub topics: &'a Topics,
    /// Active devices and their `$6$` hashes.
    pub devices: Vec<(DeviceId, String)>,
    /// The bridge's username and `$6$` hash.
    pub bridge: Option<(String, String)>,
    /// Operators' usernames and `$6$` hashes.
    pub operators: Vec<(String, String)>,
    pub grants: &'a Grants,
    /// Edges with their own devices: a device the first of them takes is
    /// in its files, not the core's.
    pub edges: &'a [MosquittoEdge],
}

/// The core's four files' text, and each edge's devices' files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Files {
    pub devices_passwd: String,
    pub devices_acl: String,
    pub service_passwd: String,
    pub service_acl: String,
    pub edges: Vec<EdgeFiles>,
}

/// One edge's devices' password and ACL files, in `edges/NAME/` of the
/// directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeFiles {
    pub name: String,
    pub passwd: String,
    pub acl: String,
}

impl EdgeFiles {
    /// Its directory, relative to the files' directory.
    pub fn dir(&self) -> std::path::PathBuf {
        std::path::Path::new("edges").join(&self.name)
    }

    /// (file name inside [`Self::dir`], text) of both files.
    pub fn each(&self) -> [(&'static str, &str); 2] {
        [(DEVICES_PASSWD, &self.passwd), (DEVICES_ACL, &self.acl)]
    }

    /// Devices in its password file.
    pub fn devices(&self) -> usize {
        self.passwd.lines().count()
    }
}

impl Files {
    /// (file name, text) of each file.
    pub fn each(&self) -> [(&'static str, &str); 4] {
        [
            (DEVICES_PASSWD, &self.devices_passwd),
            (DEVICES_ACL, &self.devices_acl),
            (SERVICE_PASSWD, &self.service_passwd),
            (SERVICE_ACL, &self.service_acl),
        ]
    }

    /// Bytes of the largest one broker reads: the core's four files or an
    /// edge's two (what one reload reparses).
    pub fn largest(&self) -> usize {
        let core: usize = self.each().iter().map(|(_, t)| t.len()).sum();
        self.edges
            .iter()
            .map(|e| e.passwd.len() + e.acl.len())
            .fold(core, usize::max)
    }
}

/// Renders the files. Sorted, so the same registry gives the same text.
pub fn render(input: &Input<'_>) -> Files {
    let t = input.topics;
    let mut devices = input.devices.clone();
    devices.sort();
    // Each device to the first edge that takes it, else to the core.
    let mut core = Vec::new();
    let mut by_edge: Vec<Vec<&(DeviceId, String)>> = vec![Vec::new(); input.edges.len()];
    for d in &devices {
        match broker::mosquitto::edge_index(input.edges, d.0.as_str()) {
            Some(i) => by_edge[i].push(d),
            None => core.push(d),
        }
    }
    let (devices_passwd, acl) = devices_files(t, &core, input.grants);
    let edges = input
        .edges
        .iter()
        .zip(&by_edge)
        .map(|(e, ds)| {
            let (passwd, acl) = devices_files(t, ds, input.grants);
            EdgeFiles {
                name: e.name.clone(),
                passwd,
                acl,
            }
        })
        .collect();
    let mut service_passwd = String::new();
    let mut service_acl = String::from("# ota: PROTOCOL.md E1, bridge and operators\n");
    if let Some((user, hash)) = &input.bridge {
        service_passwd.push_str(&format!("{user}:{hash}\n"));
        service_acl.push_str(&format!("\nuser {user}\n"));
        let p = t.prefix();
        for w in [
            t.filter(Filter::AllMemberships),
            format!("{p}/devices/+/blocks"),
            t.filter(Filter::AllAcks),
            t.filter(Filter::AllGroupCampaigns),
            t.filter(Filter::AllGroupEmergencies),
            t.build(&Topic::Emergency),
            t.filter(Filter::AllArtifactBlocks),
        ] {
            // It also watches what it retains (the repair) and hears its
            // own block broadcast (the delivery probe).
            service_acl.push_str(&format!("topic readwrite {w}\n"));
        }
        // Its replies and events; and its account may also be an
        // operator's (the CLI without an account of its own), as on the
        // embedded broker.
        for w in [
            format!("{p}/ops/replies/+"),
            t.filter(Filter::OpsEvents),
            t.filter(Filter::OpsCommands),
        ] {
            service_acl.push_str(&format!("topic readwrite {w}\n"));
        }
        for r in [
            Filter::AllHello,
            Filter::AllPresence,
            Filter::AllRequests,
            Filter::AllStatus,
        ] {
            service_acl.push_str(&format!("topic read {}\n", t.filter(r)));
        }
    }
    let mut operators = input.operators.clone();
    operators.sort();
    for (user, hash) in &operators {
        service_passwd.push_str(&format!("{user}:{hash}\n"));
        service_acl.push_str(&format!("\nuser {user}\n"));
        service_acl.push_str(&format!("topic write {}\n", t.filter(Filter::OpsCommands)));
        service_acl.push_str(&format!("topic read {}/ops/replies/+\n", t.prefix()));
        service_acl.push_str(&format!("topic read {}\n", t.filter(Filter::OpsEvents)));
    }
    Files {
        devices_passwd,
        devices_acl: acl,
        service_passwd,
        service_acl,
        edges,
    }
}

/// The devices' password file and ACL of `devices` (sorted).
fn devices_files(t: &Topics, devices: &[&(DeviceId, String)], grants: &Grants) -> (String, String) {
    let mut devices_passwd = String::new();
    for (id, hash) in devices {
        devices_passwd.push_str(&format!("{id}:{hash}\n"));
    }
    // One `user` section per active device, never a `pattern` rule: with
    // `use_identity_as_username` (`[broker.mosquitto.tls]`) Mosquitto
    // reads no password file on the devices' listener, so a revoked or
    // pending device's certificate still logs in; a pattern on `%c` would
    // give it its own topics, a section it does not have gives it none.
    let mut acl = String::from("# ota: PROTOCOL.md E1, devices (generated, do not edit)\n");
    acl.push_str(&format!("# devices with a section: {}\n", devices.len()));
    for (id, _) in devices {
        acl.push_str(&format!("\nuser {id}\n"));
        for topic in [
            Topic::Hello(id.clone()),
            Topic::Presence(id.clone()),
            Topic::Request(id.clone()),
            Topic::Status(id.clone()),
        ] {
            acl.push_str(&format!("topic write {}\n", t.build(&topic)));
        }
        for topic in [
            Topic::Groups(id.clone()),
            Topic::Ack(id.clone()),
            Topic::DeviceBlocks(id.clone()),
            Topic::Emergency,
        ] {
            acl.push_str(&format!("topic read {}\n", t.build(&topic)));
        }
        for g in grants.groups_of(id) {
            for topic in [
                Topic::GroupCampaign(g.clone()),
                Topic::GroupEmergency(g.clone()),
            ] {
                acl.push_str(&format!("topic read {}\n", t.build(&topic)));
            }
        }
        for a in grants.artifacts_of(id) {
            acl.push_str(&format!(
                "topic read {}\n",
                t.build(&Topic::ArtifactBlocks(a))
            ));
        }
    }

    (devices_passwd, acl)
}

/// A `mosquitto.conf` that uses the files in `dir`: devices on
/// `device_listen` (host port), the bridge and operators on
/// `service_listen`.
pub fn conf(
    dir: &std::path::Path,
    device_listen: (&str, u16),
    service_listen: (&str, u16),
) -> String {
    let d = dir.display();
    format!(
        "# ota: PROTOCOL.md E1 on Mosquitto (ota broker mosquitto)\n\
         per_listener_settings true\n\
         \n\
         listener {dp} {dh}\n\
         allow_anonymous false\n\
         use_username_as_clientid true\n\
         password_file {d}/{DEVICES_PASSWD}\n\
         acl_file {d}/{DEVICES_ACL}\n\
         \n\
         listener {sp} {sh}\n\
         allow_anonymous false\n\
         password_file {d}/{SERVICE_PASSWD}\n\
         acl_file {d}/{SERVICE_ACL}\n",
        dh = device_listen.0,
        dp = device_listen.1,
        sh = service_listen.0,
        sp = service_listen.1,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::msg::{Membership, WireMessage};
    use schemas::GroupName;

    #[test]
    fn devices_get_their_own_topics_and_their_groups() {
        let t = Topics::default();
        let mut grants = Grants::default();
        let (d1, d2) = (
            DeviceId::new("dev-1").unwrap(),
            DeviceId::new("dev-2").unwrap(),
        );
        let g = GroupName::new("acme").unwrap();
        grants.observe(
            &Topic::Groups(d1.clone()),
            &Membership {
                groups: vec![g.clone()],
            }
            .encode(),
        );
        let f = render(&Input {
            topics: &t,
            devices: vec![(d2.clone(), "$6$b$y".into()), (d1.clone(), "$6$a$x".into())],
            bridge: Some(("ota-bridge".into(), "$6$c$z".into())),
            operators: vec![("alice".into(), "$6$d$w".into())],
            grants: &grants,
            edges: &[],
        });
        assert_eq!(f.devices_passwd, "dev-1:$6$a$x\ndev-2:$6$b$y\n");
        let p = t.prefix();
        assert!(!f.devices_acl.contains("pattern"), "{}", f.devices_acl);
        assert!(f.devices_acl.contains(&format!(
            "user dev-1\ntopic write {p}/devices/dev-1/hello\n"
        )));
        assert!(f.devices_acl.contains(&format!(
            "topic read {p}/devices/dev-1/blocks\ntopic read {p}/emergency\ntopic read {p}/groups/acme/campaign\n"
        )));
        assert!(f.devices_acl.contains(&format!(
            "user dev-2\ntopic write {p}/devices/dev-2/hello\n"
        )));
        assert!(!f.devices_acl.contains("dev-2/groups/acme"));
        // Only active devices are given: a revoked one has no section.
        let revoked = render(&Input {
            topics: &t,
            devices: vec![(d1.clone(), "$6$a$x".into())],
            bridge: None,
            operators: vec![],
            grants: &grants,
            edges: &[],
        });
        assert!(!revoked.devices_acl.contains("dev-2"));
        assert!(!f.devices_acl.contains(&format!("{p}/ops")));
        assert_eq!(f.service_passwd, "ota-bridge:$6$c$z\nalice:$6$d$w\n");
        assert!(f
            .service_acl
            .contains(&format!("user alice\ntopic write {p}/ops/commands\n")));
        assert!(f
            .service_acl
            .contains(&format!("topic read {p}/devices/+/status\n")));
    }

    #[test]
    fn an_edges_devices_are_in_its_files_only() {
        let t = Topics::default();
        let grants = Grants::default();
        let id = |s: &str| DeviceId::new(s).unwrap();
        let edges = [
            MosquittoEdge {
                name: "a".into(),
                pid_file: None,
                device_prefixes: vec!["a-".into()],
            },
            MosquittoEdge {
                name: "b".into(),
                pid_file: None,
                device_prefixes: vec!["b-".into(), "a-".into()],
            },
        ];
        let f = render(&Input {
            topics: &t,
            devices: vec![
                (id("b-1"), "$6$b$1".into()),
                (id("a-1"), "$6$a$1".into()),
                (id("c-1"), "$6$c$1".into()),
            ],
            bridge: Some(("ota-bridge".into(), "$6$c$z".into())),
            operators: vec![],
            grants: &grants,
            edges: &edges,
        });
        // The core keeps the devices no edge takes, and the service files.
        assert_eq!(f.devices_passwd, "c-1:$6$c$1\n");
        assert!(f.devices_acl.contains("user c-1\n"));
        assert!(!f.devices_acl.contains("a-1") && !f.devices_acl.contains("b-1"));
        assert!(f.service_passwd.contains("ota-bridge:"));
        // The first edge that matches takes a device; no one is in two.
        assert_eq!(f.edges.len(), 2);
        assert_eq!(
            (f.edges[0].name.as_str(), f.edges[0].passwd.as_str()),
            ("a", "a-1:$6$a$1\n")
        );
        assert_eq!(f.edges[1].passwd, "b-1:$6$b$1\n");
        assert!(f.edges[0].acl.contains(&format!(
            "user a-1\ntopic write {}/devices/a-1/hello\n",
            t.prefix()
        )));
        assert!(!f.edges[0].acl.contains("b-1"));
        assert!(!f.edges[1].acl.contains("a-1"));
        assert_eq!(f.edges[1].dir(), std::path::Path::new("edges/b"));
        let core = f.each().iter().map(|(_, t)| t.len()).sum::<usize>();
        let edges = f.edges.iter().map(|e| e.passwd.len() + e.acl.len());
        assert_eq!(f.largest(), edges.fold(core, usize::max));
    }
}
