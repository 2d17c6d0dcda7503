//! The Mosquitto configs of the broker tier (pure text, no I/O): each
//! edge's conf (the devices' listener on ota's password and ACL files, a
//! `connection` bridge to the core) and what the core's conf gets beside
//! the one `ota broker mosquitto` writes (a listener for the edges, with
//! their accounts and ACL).
//!
//! The topics the edge bridges are the protocol's own, from
//! [`schemas::topic`]: what devices publish goes `out` to the core (where
//! the bridge reads it), what the bridge publishes comes `in` to the edge
//! (where devices read it, judged by ota's ACL on the edge). Wildcard
//! filters, so every block broadcast crosses each edge link once, however
//! many devices on that edge want it; retained announcements and
//! Memberships come in with their retain flag (`try_private`), and the
//! edge keeps them for devices that subscribe later.

use std::path::Path;

use schemas::topic::{Filter, Topic, Topics};

/// The client id (and username) of edge `i` on the core's edge listener.
pub fn edge_user(i: usize) -> String {
    format!("ota-edge-{}", i + 1)
}

/// The harness's own account on the core's edge listener: it reads the
/// edges' bridge states (`$SYS/broker/connection/ID/state`), to know when
/// every edge is connected.
pub const WATCHER_USER: &str = "ota-topology-watch";

/// What devices publish: bridged from each edge `out` to the core.
pub fn upstream(t: &Topics) -> Vec<String> {
    [
        Filter::AllHello,
        Filter::AllPresence,
        Filter::AllRequests,
        Filter::AllStatus,
    ]
    .into_iter()
    .map(|f| t.filter(f))
    .collect()
}

/// What the bridge publishes for devices: bridged `in` from the core to
/// each edge.
pub fn downstream(t: &Topics) -> Vec<String> {
    let blocks = t
        .filter(Filter::AllMemberships)
        .replace("/+/groups", "/+/blocks");
    vec![
        t.filter(Filter::AllMemberships),
        blocks,
        t.filter(Filter::AllAcks),
        t.filter(Filter::AllGroupCampaigns),
        t.filter(Filter::AllGroupEmergencies),
        t.build(&Topic::Emergency),
        t.filter(Filter::AllArtifactBlocks),
    ]
}

/// One edge's conf: the devices' listener on `port` with ota's files in
/// `ota_dir` (the edge's own devices' files, which the bridge rewrites
/// and SIGHUPs the edge for), its pid in `pid_file`,
/// and a bridge to the core's edge listener `core_port` as edge `i` with
/// `password`.
pub fn edge(
    t: &Topics,
    i: usize,
    port: u16,
    ota_dir: &Path,
    pid_file: &Path,
    core_port: u16,
    password: &str,
) -> String {
    let d = ota_dir.display();
    let user = edge_user(i);
    let mut text = format!(
        "# ota topology: edge {n} (tests/src/topology)\n\
         per_listener_settings true\n\
         listener {port} 127.0.0.1\n\
         allow_anonymous false\n\
         use_username_as_clientid true\n\
         password_file {d}/devices.passwd\n\
         acl_file {d}/devices.acl\n\
         max_packet_size 262144\n\
         max_queued_messages 100000\n\
         max_inflight_messages 100\n\
         persistence false\n\
         pid_file {pid}\n\
         log_dest stderr\n\
         log_type error\n\
         log_type warning\n\
         log_type notice\n\
         log_type information\n\
         connection_messages false\n\
         \n\
         connection {user}\n\
         address 127.0.0.1:{core_port}\n\
         remote_clientid {user}\n\
         remote_username {user}\n\
         remote_password {password}\n\
         bridge_protocol_version mqttv311\n\
         try_private true\n\
         cleansession false\n\
         notifications true\n\
         notifications_local_only false\n\
         restart_timeout 1 5\n",
        n = i + 1,
        pid = pid_file.display(),
    );
    for f in upstream(t) {
        text.push_str(&format!("topic {f} out 1\n"));
    }
    for f in downstream(t) {
        text.push_str(&format!("topic {f} in 1\n"));
    }
    text
}

/// What the core's conf gets after `ota broker mosquitto`'s: a listener on
/// `port` for the edges, with `passwd` and `acl` (in the harness's own
/// directory) as its files.
pub fn core_edge_listener(port: u16, passwd: &Path, acl: &Path) -> String {
    format!(
        "\n# ota topology: the edges' listener (tests/src/topology)\n\
         listener {port} 127.0.0.1\n\
         allow_anonymous false\n\
         password_file {}\n\
         acl_file {}\n\
         max_inflight_messages 100\n",
        passwd.display(),
        acl.display()
    )
}

/// The edges' ACL on the core: what devices publish may be written (the
/// edges forward it), what the bridge publishes for them read; each edge
/// writes its own bridge state, the watcher reads them all. `pattern`
/// lines, which bind every login: Mosquitto applies `topic` lines before
/// the first `user` to anonymous clients only.
pub fn core_edge_acl(t: &Topics) -> String {
    let mut acl = String::from("# ota topology: the edges on the core\n");
    for f in upstream(t) {
        acl.push_str(&format!("pattern write {f}\n"));
    }
    for f in downstream(t) {
        acl.push_str(&format!("pattern read {f}\n"));
    }
    acl.push_str("pattern write $SYS/broker/connection/%c/state\n");
    acl.push_str(&format!(
        "\nuser {WATCHER_USER}\ntopic read $SYS/broker/connection/+/state\n"
    ));
    acl
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_protocol_topic_crosses_the_link_one_way() {
        let t = Topics::default();
        let p = t.prefix();
        let e = edge(
            &t,
            0,
            2000,
            Path::new("/m"),
            Path::new("/run/e.pid"),
            3000,
            "pw",
        );
        assert!(
            e.contains(&format!("topic {p}/devices/+/status out 1\n")),
            "{e}"
        );
        assert!(
            e.contains(&format!("topic {p}/devices/+/hello out 1\n")),
            "{e}"
        );
        assert!(
            e.contains(&format!("topic {p}/artifacts/+/blocks in 1\n")),
            "{e}"
        );
        assert!(
            e.contains(&format!("topic {p}/devices/+/blocks in 1\n")),
            "{e}"
        );
        assert!(
            e.contains(&format!("topic {p}/devices/+/groups in 1\n")),
            "{e}"
        );
        assert!(e.contains("password_file /m/devices.passwd\nacl_file /m/devices.acl\n"));
        assert!(e.contains("remote_username ota-edge-1\n"));
        // Nothing both ways: no loop between edge and core.
        let ups = upstream(&t);
        assert!(downstream(&t).iter().all(|d| !ups.contains(d)));
        // The operators' topics never reach an edge.
        assert!(!e.contains("/ops/"), "{e}");
        let acl = core_edge_acl(&t);
        assert!(acl.contains(&format!("pattern write {p}/devices/+/status\n")));
        assert!(acl.contains(&format!("pattern read {p}/groups/+/campaign\n")));
        assert!(!acl.contains("/ops/"), "{acl}");
    }
}
