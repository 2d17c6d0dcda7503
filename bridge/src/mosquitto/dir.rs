//! The Mosquitto files of [`super::mosquitto`] on disk: written into
//! `[broker.mosquitto] dir` each as a temp file renamed over the old one
//! (Mosquitto never reads half a file), and Mosquitto told to reload them
//! with SIGHUP to the pid in its pid file.
//!
//! Everything here blocks: call it on the blocking pool.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use broker::mosquitto::MosquittoConfig;

use crate::identity::mosquitto::{self, EdgeFiles, Files};
use crate::store::StoreError;

/// The conf's name inside the directory.
pub const CONF: &str = "mosquitto.conf";

/// Mode of every file written: the owner (the bridge's user) writes, its
/// group (Mosquitto's) reads, no one else. The password files hold hashes
/// only, but of every device.
pub const FILE_MODE: u32 = 0o640;

/// Why the files could not be written or Mosquitto told.
#[derive(Debug, thiserror::Error)]
pub enum MosquittoDirError {
    #[error("cannot write {path}: {source} (the bridge's user must be able to write [broker.mosquitto] dir)")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read Mosquitto's pid from {path}: {reason} (is Mosquitto running with `pid_file {path}` in its conf?)")]
    Pid { path: PathBuf, reason: String },
    #[error("cannot send SIGHUP to Mosquitto (pid {pid} from {path}): {source} (run the bridge as Mosquitto's user, or fix [broker.mosquitto] pid_file)")]
    Signal {
        pid: i32,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the registry at {path}: {source}; if `ota serve` runs on this data_dir, it keeps [broker.mosquitto] dir current itself (stop it to write the files here)")]
    Registry {
        path: PathBuf,
        #[source]
        source: StoreError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The `mosquitto.conf` for `m`: the devices' listener on
/// `m.devices_listen`, the service listener on `[broker] url`'s host and
/// port, the files in `dir`, the bridge's packet size and queue, and
/// `pid_file` when given. Paths are made
/// absolute: Mosquitto resolves relative ones against its own working
/// directory.
pub fn conf(m: &MosquittoConfig, dir: &Path, service: (&str, u16)) -> String {
    let devices = (m.devices_listen.ip().to_string(), m.devices_listen.port());
    let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mut text = mosquitto::conf(&dir, (devices.0.as_str(), devices.1), service);
    if let Some(t) = &m.tls {
        text = with_tls(&text, t);
    }
    // What the bridge needs of any broker (docs/operations.md "External
    // brokers"): a block and an operator chunk per packet, and room for
    // the reports queued while the bridge is away.
    text.push_str("\nmax_packet_size 262144\nmax_queued_messages 100000\n");
    if let Some(pid) = &m.pid_file {
        let pid = std::path::absolute(pid).unwrap_or_else(|_| pid.clone());
        text.push_str(&format!("\npid_file {}\n", pid.display()));
    }
    text
}

/// `[broker.mosquitto.tls]` in the conf: after each `listener` line its
/// TLS settings, client certificates required on both; the first listener
/// (the devices', as [`mosquitto::conf`] writes them) takes each device's
/// username, and so its client id, from its certificate's CN.
fn with_tls(conf: &str, t: &broker::mosquitto::MosquittoTls) -> String {
    let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let mut out = String::with_capacity(conf.len() + 512);
    let mut listeners = 0;
    for line in conf.lines() {
        out.push_str(line);
        out.push('\n');
        if line.starts_with("listener ") {
            listeners += 1;
            out.push_str(&format!(
                "cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n",
                abs(&t.ca_file).display(),
                abs(&t.cert_file).display(),
                abs(&t.key_file).display(),
            ));
            if listeners == 1 {
                out.push_str("use_identity_as_username true\n");
            }
        }
    }
    out
}

/// Writes every file (and `conf`, if given) into `dir`, creating it: the
/// core's four and each edge's two in `edges/NAME/`.
pub fn write(dir: &Path, files: &Files, conf: Option<&str>) -> Result<(), MosquittoDirError> {
    write_core(dir, files, conf)?;
    for e in &files.edges {
        write_edge(dir, e)?;
    }
    Ok(())
}

/// Writes the core's four files (and `conf`, if given) into `dir`.
pub fn write_core(dir: &Path, files: &Files, conf: Option<&str>) -> Result<(), MosquittoDirError> {
    create_dir(dir)?;
    for (name, text) in files.each() {
        write_atomic(&dir.join(name), text)?;
    }
    if let Some(c) = conf {
        write_atomic(&dir.join(CONF), c)?;
    }
    Ok(())
}

/// Writes one edge's two files into `dir/edges/NAME/`.
pub fn write_edge(dir: &Path, edge: &EdgeFiles) -> Result<(), MosquittoDirError> {
    let at = dir.join(edge.dir());
    create_dir(&at)?;
    for (name, text) in edge.each() {
        write_atomic(&at.join(name), text)?;
    }
    Ok(())
}

fn create_dir(dir: &Path) -> Result<(), MosquittoDirError> {
    std::fs::create_dir_all(dir).map_err(|source| MosquittoDirError::Write {
        path: dir.to_path_buf(),
        source,
    })
}

/// `path.tmp`, synced, then renamed over `path`.
fn write_atomic(path: &Path, text: &str) -> Result<(), MosquittoDirError> {
    let err = |source| MosquittoDirError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        o.mode(FILE_MODE);
    }
    let mut f = o.open(&tmp).map_err(err)?;
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// Sends SIGHUP to the process whose pid is in `pid_file`: Mosquitto then
/// reloads its password and ACL files, and closes the connections of
/// clients whose login they no longer hold. Returns the pid.
pub fn reload(pid_file: &Path) -> Result<i32, MosquittoDirError> {
    let pid_err = |reason: String| MosquittoDirError::Pid {
        path: pid_file.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(pid_file).map_err(|e| pid_err(e.to_string()))?;
    let pid: i32 = text
        .trim()
        .parse()
        .map_err(|_| pid_err(format!("{:?} is not a process id", text.trim())))?;
    if pid <= 1 {
        return Err(pid_err(format!("{pid} is not Mosquitto's pid")));
    }
    // SAFETY: kill(2) takes plain integers and touches no memory of ours;
    // pid > 1, so it never signals a process group or every process.
    let rc = unsafe { libc::kill(pid, libc::SIGHUP) };
    if rc != 0 {
        return Err(MosquittoDirError::Signal {
            pid,
            path: pid_file.to_path_buf(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(pid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn files_are_replaced_whole_with_their_mode() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("m");
        let mut files = Files {
            devices_passwd: "dev-1:$6$a$b\n".into(),
            devices_acl: "pattern read x/%c\n".into(),
            service_passwd: String::new(),
            service_acl: String::new(),
            edges: vec![EdgeFiles {
                name: "e1".into(),
                passwd: "e1-1:$6$e$f\n".into(),
                acl: "user e1-1\n".into(),
            }],
        };
        write(&dir, &files, Some("conf\n")).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("edges/e1/devices.passwd")).unwrap(),
            "e1-1:$6$e$f\n"
        );
        files.devices_passwd = "dev-2:$6$c$d\n".into();
        write(&dir, &files, None).unwrap();
        let read = |n: &str| std::fs::read_to_string(dir.join(n)).unwrap();
        assert_eq!(read(mosquitto::DEVICES_PASSWD), "dev-2:$6$c$d\n");
        assert_eq!(read(CONF), "conf\n");
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                continue;
            }
            assert!(!e.file_name().to_string_lossy().ends_with(".tmp"));
            let mode = e.metadata().unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, FILE_MODE, "{:?}", e.file_name());
        }
    }

    #[test]
    fn tls_puts_certificates_on_both_listeners_and_identity_on_the_devices() {
        let t = broker::mosquitto::MosquittoTls {
            ca_file: "/pki/ca.crt".into(),
            cert_file: "/pki/server.crt".into(),
            key_file: "/pki/server.key".into(),
        };
        let conf = mosquitto::conf(Path::new("/m"), ("0.0.0.0", 8883), ("127.0.0.1", 8884));
        let text = with_tls(&conf, &t);
        let (devices, service) = text.split_once("listener 8884").unwrap();
        assert!(devices.contains("listener 8883 0.0.0.0\ncafile /pki/ca.crt\ncertfile /pki/server.crt\nkeyfile /pki/server.key\nrequire_certificate true\nuse_identity_as_username true\n"), "{text}");
        assert!(service.contains("require_certificate true\n"), "{text}");
        assert!(!service.contains("use_identity_as_username"), "{text}");
        assert_eq!(text.matches("password_file").count(), 2, "{text}");
    }

    #[test]
    fn reload_signals_the_pid_in_the_file_and_names_a_bad_one() {
        let tmp = tempfile::tempdir().unwrap();
        let pid_file = tmp.path().join("m.pid");
        let err = |text: Option<&str>| {
            if let Some(t) = text {
                std::fs::write(&pid_file, t).unwrap();
            }
            reload(&pid_file).unwrap_err().to_string()
        };
        assert!(err(None).contains("pid_file"), "missing file");
        assert!(err(Some("mosquitto\n")).contains("not a process id"));
        assert!(err(Some("1\n")).contains("not Mosquitto's pid"));
        // A real process: `sleep` ends on SIGHUP.
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        std::fs::write(&pid_file, format!("{}\n", child.id())).unwrap();
        assert_eq!(reload(&pid_file).unwrap(), child.id() as i32);
        use std::os::unix::process::ExitStatusExt as _;
        assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGHUP));
    }
}
