//! `ota serve`, `ota devices list | show`, `ota group put | list | delete`:
//! the bridge, and the operator commands about the fleet, sent as signed
//! commands over MQTT through `bridge::client::OpsClient`.

use std::path::PathBuf;

use bridge::client::OpsClient;
use bridge::ops::fleet_cmds::{
    labels_text, DeviceShow, DeviceView, GroupDelete, GroupList, GroupPut,
};
use schemas::ops::Command;
use schemas::{DeviceId, GroupName};

use crate::{rt, Run};

/// Run the bridge: the service that devices and operators talk to.
///
/// Starts the embedded MQTT broker (unless [broker] mode = "external"),
/// connects to it, and serves until Ctrl-C or SIGTERM: it registers
/// devices from their Hello, keeps groups, stores every Status durably
/// before acknowledging it, and takes signed operator commands. Its state
/// is in [bridge] data_dir: back that directory up.
#[derive(clap::Args)]
#[command(after_help = "Example:\n  ota serve --config config/ota.toml\n\n\
                        Every key of the config file is described in config/ota.toml and docs/operations.md.")]
pub struct Serve {
    /// The config file (ota.toml).
    #[arg(long, value_name = "FILE", env = "OTA_CONFIG")]
    config: PathBuf,
}

impl Run for Serve {
    fn run(self) -> anyhow::Result<()> {
        let config = bridge::Config::load(&self.config)?;
        rt::block_on(bridge::run(config, rt::shutdown_signal()))??;
        Ok(())
    }
}

pub(crate) use crate::conn::{parse_broker, Conn};

fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// A plain text table: a header and rows, columns padded to fit.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  "));
            }
        }
        s.trim_end().to_string()
    };
    let mut out = vec![line(header.to_vec())];
    for r in rows {
        out.push(line(r.iter().map(String::as_str).collect()));
    }
    out.join("\n")
}

fn ago(then: u64) -> String {
    let now = bridge::unix_now();
    let s = now.saturating_sub(then);
    match s {
        0..=59 => format!("{s}s ago"),
        60..=3599 => format!("{}m ago", s / 60),
        3600..=86_399 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86_400),
    }
}

fn names<T: std::fmt::Display>(v: &[T]) -> String {
    if v.is_empty() {
        "-".into()
    } else {
        v.iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }
}

fn device_rows(devices: &[DeviceView]) -> Vec<Vec<String>> {
    devices
        .iter()
        .map(|d| {
            let r = &d.record;
            vec![
                r.id.to_string(),
                r.arch.clone(),
                if r.online { "yes".into() } else { "no".into() },
                ago(r.last_seen),
                labels_text(&r.versions),
                names(&d.groups),
            ]
        })
        .collect()
}

/// See and inspect the devices the bridge knows.
///
/// A device is known once it has said Hello to the bridge.
#[derive(clap::Subcommand)]
pub enum Devices {
    /// List devices (all, or one group's), one line each.
    #[command(after_help = "Examples:\n  ota devices list --config ota.toml\n  \
                            ota devices list --group canary --json --broker 127.0.0.1:1883 --key keys/operator.key")]
    List(DevicesList),
    /// Show one device: its registry entry, groups and campaign states.
    #[command(after_help = "Example:\n  ota devices show dev-0001 --config ota.toml")]
    Show(DevicesShow),
    Provision(crate::cmd_identity::Provision),
    Rotate(crate::cmd_identity::Rotate),
    Revoke(crate::cmd_identity::Revoke),
    EnrollmentToken(crate::cmd_enroll::EnrollmentToken),
    Accept(crate::cmd_enroll::Accept),
    Reject(crate::cmd_enroll::Reject),
}

#[derive(clap::Args)]
pub struct DevicesList {
    /// Only the devices of this group.
    #[arg(long, value_name = "GROUP")]
    group: Option<GroupName>,
    /// Print JSON (for scripts) instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: Conn,
}

#[derive(clap::Args)]
pub struct DevicesShow {
    /// The device id.
    id: DeviceId,
    /// Print JSON (for scripts).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: Conn,
}

impl Run for Devices {
    fn run(self) -> anyhow::Result<()> {
        match self {
            Devices::List(c) => {
                let opts = c.conn.options()?;
                let group = c.group;
                let list = rt::block_on(async move {
                    let client = OpsClient::connect(opts).await?;
                    let result = client.device_list(group).await;
                    client.close().await;
                    Ok::<_, anyhow::Error>(result?)
                })??;
                if c.json {
                    return print_json(&list);
                }
                if list.devices.is_empty() && list.pending.is_empty() {
                    println!("no devices yet: a device appears once it says Hello to the bridge");
                    return Ok(());
                }
                if !list.devices.is_empty() {
                    let rows = device_rows(&list.devices);
                    println!(
                        "{}",
                        table(
                            &["ID", "ARCH", "ONLINE", "LAST SEEN", "VERSIONS", "GROUPS"],
                            &rows
                        )
                    );
                    println!("{} device(s)", list.devices.len());
                }
                if !list.pending.is_empty() {
                    let rows: Vec<Vec<String>> = list
                        .pending
                        .iter()
                        .map(|p| {
                            vec![
                                p.id.to_string(),
                                "pending".into(),
                                p.arch.clone().unwrap_or_else(|| "-".into()),
                                ago(p.enrolled),
                                p.last_hello.map(ago).unwrap_or_else(|| "-".into()),
                                labels_text(&p.labels),
                            ]
                        })
                        .collect();
                    println!();
                    println!(
                        "{}",
                        table(
                            &["ID", "STANDING", "ARCH", "ENROLLED", "LAST HELLO", "LABELS"],
                            &rows
                        )
                    );
                    println!(
                        "{} pending device(s), in no group until `ota devices accept ID` (or `reject ID`)",
                        list.pending_total
                    );
                }
                Ok(())
            }
            Devices::Provision(c) => c.run(),
            Devices::Rotate(c) => c.run(),
            Devices::Revoke(c) => c.run(),
            Devices::EnrollmentToken(c) => c.run(),
            Devices::Accept(c) => c.run(),
            Devices::Reject(c) => c.run(),
            Devices::Show(c) => {
                let show: DeviceShow = c.conn.call(Command::DeviceShow { id: c.id })?;
                if c.json {
                    return print_json(&show);
                }
                let r = &show.device.record;
                println!("device     {}", r.id);
                println!("arch       {}", r.arch);
                println!("online     {}", if r.online { "yes" } else { "no" });
                println!("last seen  {}", ago(r.last_seen));
                println!("first seen {}", ago(r.first_seen));
                println!("boot id    {} ({} reboots seen)", r.boot_id, r.reboots);
                println!("versions   {}", labels_text(&r.versions));
                println!("labels     {}", labels_text(&r.labels));
                println!("groups     {}", names(&show.device.groups));
                if show.conflicts > 0 {
                    println!(
                        "conflicts  {} report(s) reused a seq with other content",
                        show.conflicts
                    );
                }
                if show.campaigns.is_empty() {
                    println!("campaigns  none reported");
                } else {
                    let rows: Vec<Vec<String>> = show
                        .campaigns
                        .iter()
                        .map(|c| {
                            vec![
                                c.campaign.to_string(),
                                c.state.to_string(),
                                c.error.map(|e| e.to_string()).unwrap_or_else(|| "-".into()),
                                c.detail.clone().unwrap_or_else(|| "-".into()),
                                ago(c.at),
                            ]
                        })
                        .collect();
                    println!();
                    println!(
                        "{}",
                        table(&["CAMPAIGN", "STATE", "ERROR", "DETAIL", "UPDATED"], &rows)
                    );
                }
                Ok(())
            }
        }
    }
}

/// Define the groups that campaigns target.
///
/// A group is a label selector over the labels devices send in their Hello
/// (customer=acme,line=3; key!=v; key in (a,b); key notin (a,b); key; !key),
/// or an explicit list of device ids. Each device is told its groups
/// (retained on its groups topic) whenever they change.
#[derive(clap::Subcommand)]
pub enum Group {
    /// Create or replace a group.
    #[command(
        after_help = "Selectors match the labels devices send in their Hello; every requirement must hold:\n  \
                            key=value         the label equals value\n  \
                            key!=value        it does not (a device without the label matches)\n  \
                            key in (a,b)      it is one of the values\n  \
                            key notin (a,b)   it is none of them (or the label is missing)\n  \
                            key / !key        the device has / lacks the label\n\n\
                            Devices are told their groups (retained on P/devices/ID/groups) whenever they change.\n\n\
                            Examples:\n  \
                            ota group put acme-line-3 --selector 'customer=acme,line=3' --config ota.toml\n  \
                            ota group put canary --members dev-0001,dev-0002 --config ota.toml"
    )]
    Put(GroupPutCmd),
    /// List the groups with their rules and device counts.
    List(GroupListCmd),
    /// Delete a group (its devices are told they left it).
    Delete(GroupDeleteCmd),
}

#[derive(clap::Args)]
pub struct GroupPutCmd {
    /// The group name (1-64 characters of [A-Za-z0-9._-]).
    name: GroupName,
    /// Select devices by their labels, e.g. 'customer=acme,line in (3,4)'.
    #[arg(
        long,
        value_name = "EXPR",
        conflicts_with = "members",
        required_unless_present = "members"
    )]
    selector: Option<String>,
    /// Exactly these devices, comma-separated.
    #[arg(long, value_name = "ID,ID", value_delimiter = ',')]
    members: Option<Vec<DeviceId>>,
    /// Print JSON (for scripts).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: Conn,
}

#[derive(clap::Args)]
pub struct GroupListCmd {
    /// Print JSON (for scripts) instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: Conn,
}

#[derive(clap::Args)]
pub struct GroupDeleteCmd {
    /// The group name.
    name: GroupName,
    /// Print JSON (for scripts).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: Conn,
}

impl Run for Group {
    fn run(self) -> anyhow::Result<()> {
        match self {
            Group::Put(c) => {
                let put: GroupPut = c.conn.call(Command::GroupPut {
                    name: c.name,
                    selector: c.selector,
                    members: c.members,
                })?;
                if c.json {
                    return print_json(&put);
                }
                println!(
                    "group {} {}: {} device(s) now, {} device(s) told of a change",
                    put.group.record.name,
                    if put.replaced { "replaced" } else { "created" },
                    put.group.devices,
                    put.membership_changed
                );
                if put.group.devices == 0 {
                    print!("{}", empty_group_hint(&put));
                }
                Ok(())
            }
            Group::List(c) => {
                let list: GroupList = c.conn.call(Command::GroupList)?;
                if c.json {
                    return print_json(&list);
                }
                if list.groups.is_empty() {
                    println!("no groups yet: create one with `ota group put NAME --selector EXPR`");
                    return Ok(());
                }
                let rows: Vec<Vec<String>> = list
                    .groups
                    .iter()
                    .map(|g| {
                        let rule = match (&g.record.selector, &g.record.members) {
                            (Some(s), _) => format!("selector {s}"),
                            (None, Some(m)) => format!("members {}", names(m)),
                            (None, None) => "-".into(),
                        };
                        vec![g.record.name.to_string(), g.devices.to_string(), rule]
                    })
                    .collect();
                println!("{}", table(&["GROUP", "DEVICES", "RULE"], &rows));
                Ok(())
            }
            Group::Delete(c) => {
                let del: GroupDelete = c.conn.call(Command::GroupDelete { name: c.name })?;
                if c.json {
                    return print_json(&del);
                }
                println!(
                    "group {} deleted: {} device(s) told of a change",
                    del.name, del.membership_changed
                );
                Ok(())
            }
        }
    }
}

/// What to say when a selector matched no device: what the fleet's labels
/// are, or that no device registered yet.
fn empty_group_hint(put: &GroupPut) -> String {
    if put.registered == 0 && put.fleet_labels.is_empty() {
        return "  no device has registered yet: the group fills as devices say Hello (start them, e.g. `ota sim --config ota.toml`)\n".to_string();
    }
    if put.fleet_labels.is_empty() {
        return format!(
            "  none of the {} registered devices has a label: selectors match labels devices send in their Hello\n",
            put.registered
        );
    }
    let mut out = format!(
        "  no device matches; the {} registered devices have these labels:\n",
        put.registered
    );
    for (k, vs) in &put.fleet_labels {
        let more = if vs.len() >= bridge::ops::fleet_cmds::LABEL_VALUES_SHOWN {
            ", ..."
        } else {
            ""
        };
        out.push_str(&format!("    {k} = {}{more}\n", vs.join(", ")));
    }
    out.push_str("  check the selector's keys and values (they are case-sensitive)\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_addresses() {
        assert_eq!(
            parse_broker("127.0.0.1:1883").unwrap(),
            ("127.0.0.1".into(), 1883, false)
        );
        assert_eq!(
            parse_broker("mqtt://broker.lan:1884/").unwrap(),
            ("broker.lan".into(), 1884, false)
        );
        assert_eq!(
            parse_broker("broker.lan").unwrap(),
            ("broker.lan".into(), 1883, false)
        );
        assert_eq!(
            parse_broker("[::1]:1883").unwrap(),
            ("::1".into(), 1883, false)
        );
        assert_eq!(parse_broker("mqtts://x").unwrap(), ("x".into(), 8883, true));
        assert_eq!(
            parse_broker("mqtts://[::1]:8884").unwrap(),
            ("::1".into(), 8884, true)
        );
        assert!(parse_broker("x:notaport").is_err());
        assert!(parse_broker(":1883").is_err());
    }

    #[test]
    fn an_empty_group_says_what_the_fleet_has() {
        let put = |registered: usize, labels: &[(&str, &[&str])]| GroupPut {
            group: serde_json::from_value(serde_json::json!({
                "name": "acme", "selector": "customer=acme", "updated": 1, "devices": 0
            }))
            .expect("a group view"),
            replaced: false,
            membership_changed: 0,
            fleet_labels: labels
                .iter()
                .map(|(k, vs)| (k.to_string(), vs.iter().map(|v| v.to_string()).collect()))
                .collect(),
            registered,
        };
        assert!(empty_group_hint(&put(0, &[])).contains("no device has registered yet"));
        assert!(
            empty_group_hint(&put(3, &[])).contains("none of the 3 registered devices has a label")
        );
        let hint = empty_group_hint(&put(
            5,
            &[("customer", &["Acme", "globex"]), ("line", &["l1"])],
        ));
        assert!(
            hint.contains("the 5 registered devices have these labels"),
            "{hint}"
        );
        assert!(hint.contains("customer = Acme, globex"), "{hint}");
        assert!(hint.contains("line = l1"), "{hint}");
        assert!(hint.contains("case-sensitive"), "{hint}");
    }

    #[test]
    fn tables_pad_columns() {
        let t = table(&["A", "BB"], &[vec!["xxx".into(), "y".into()]]);
        assert_eq!(t, "A    BB\nxxx  y");
    }
}
