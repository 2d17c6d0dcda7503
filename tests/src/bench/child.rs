//! Helper processes for the benchmarks: the embedded broker on its own (so
//! that its peak RSS is its own, and its 10,000 sockets count against its
//! own open-file limit), and the reading side of the raw fan-out.
//!
//! The harness does not know the binary: the caller names the program and
//! the arguments that put it in child mode (`ota bench --child`), and that
//! program calls [`run_child`] with the role parsed back by
//! [`ChildRole::parse`]. A child talks back with one line per step on
//! stdout and ends when its stdin closes (or when it is killed, on drop).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout};

/// How to start this program in child mode: `program args.. ROLE..`.
#[derive(Debug, Clone)]
pub struct ChildCmd {
    /// The program (usually `std::env::current_exe()`).
    pub program: PathBuf,
    /// The arguments before the role, e.g. `["bench", "--child"]`.
    pub args: Vec<String>,
}

/// What a child does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChildRole {
    /// The embedded broker (default config, room for 12,000 clients) on
    /// 127.0.0.1:`port`. Says `ready`.
    Broker { port: u16 },
    /// The same with a mutual-TLS listener on 127.0.0.1:`tls_port` beside
    /// it, its certificate, key and client CA from `pki` (`ota pki init`'s
    /// layout: `server.crt`, `server.key`, `ca.crt`). Says `ready`.
    TlsBroker {
        port: u16,
        tls_port: u16,
        pki: PathBuf,
    },
    /// Connects `clients` sockets to `addr` (says `connected`), reads
    /// `bytes` from each and says `done MIN_BYTES_READ`.
    RawReaders {
        addr: SocketAddr,
        clients: usize,
        bytes: u64,
    },
}

/// Why a child could not start, run or answer.
#[derive(Debug, thiserror::Error)]
pub enum ChildError {
    #[error(
        "child process i/o: {0} (is `ulimit -n` high enough? 10,000 clients need about 10,050)"
    )]
    Io(#[from] std::io::Error),
    #[error("bad child role {0:?}: expected `broker PORT`, `tls-broker PORT TLS_PORT PKI_DIR` or `raw-readers ADDR CLIENTS BYTES`")]
    Role(String),
    #[error("broker: {0}")]
    Broker(#[from] broker::BrokerError),
    #[error("the child ended or said {got:?} while we waited for {want:?}")]
    Unexpected { want: &'static str, got: String },
    #[error("the child did not say {0:?} within {1:?}")]
    Timeout(&'static str, Duration),
}

impl ChildRole {
    /// The role as command-line words.
    pub fn to_args(&self) -> Vec<String> {
        match self {
            ChildRole::Broker { port } => vec!["broker".into(), port.to_string()],
            ChildRole::TlsBroker {
                port,
                tls_port,
                pki,
            } => vec![
                "tls-broker".into(),
                port.to_string(),
                tls_port.to_string(),
                pki.display().to_string(),
            ],
            ChildRole::RawReaders {
                addr,
                clients,
                bytes,
            } => vec![
                "raw-readers".into(),
                addr.to_string(),
                clients.to_string(),
                bytes.to_string(),
            ],
        }
    }

    /// Parses the words of [`ChildRole::to_args`].
    pub fn parse(words: &[String]) -> Result<Self, ChildError> {
        let bad = || ChildError::Role(words.join(" "));
        let w: Vec<&str> = words.iter().map(String::as_str).collect();
        match w.as_slice() {
            ["broker", port] => Ok(ChildRole::Broker {
                port: port.parse().map_err(|_| bad())?,
            }),
            ["tls-broker", port, tls_port, pki] => Ok(ChildRole::TlsBroker {
                port: port.parse().map_err(|_| bad())?,
                tls_port: tls_port.parse().map_err(|_| bad())?,
                pki: PathBuf::from(pki),
            }),
            ["raw-readers", addr, clients, bytes] => Ok(ChildRole::RawReaders {
                addr: addr.parse().map_err(|_| bad())?,
                clients: clients.parse().map_err(|_| bad())?,
                bytes: bytes.parse().map_err(|_| bad())?,
            }),
            _ => Err(bad()),
        }
    }
}

/// Runs a role in this (child) process until stdin closes.
pub async fn run_child(role: ChildRole) -> Result<(), ChildError> {
    match role {
        ChildRole::Broker { .. } | ChildRole::TlsBroker { .. } => {
            let (port, tls) = match role {
                ChildRole::TlsBroker {
                    port,
                    tls_port,
                    pki,
                } => (
                    port,
                    Some(broker::TlsListener {
                        listen: SocketAddr::from(([127, 0, 0, 1], tls_port)),
                        cert_file: pki.join(tls::pki::SERVER_CERT),
                        key_file: pki.join(tls::pki::SERVER_KEY),
                        client_ca_file: Some(pki.join(tls::pki::CA_CERT)),
                    }),
                ),
                ChildRole::Broker { port } => (port, None),
                ChildRole::RawReaders { .. } => unreachable!("matched above"),
            };
            let cfg = broker::EmbeddedConfig {
                listen: SocketAddr::from(([127, 0, 0, 1], port)),
                max_connections: 12_000,
                tls,
                ..broker::EmbeddedConfig::default()
            };
            // rumqttd's start blocks while it binds: off the runtime.
            let b = tokio::task::spawn_blocking(move || broker::start(&cfg))
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))??;
            println!("ready");
            wait_stdin_closed().await;
            drop(b);
            Ok(())
        }
        ChildRole::RawReaders {
            addr,
            clients,
            bytes,
        } => {
            let mut socks = Vec::with_capacity(clients);
            for _ in 0..clients {
                socks.push(tokio::net::TcpStream::connect(addr).await?);
            }
            println!("connected");
            let mut readers = tokio::task::JoinSet::new();
            for mut s in socks {
                readers.spawn(async move { read_up_to(&mut s, bytes).await });
            }
            let mut min_got = if clients == 0 { 0 } else { u64::MAX };
            while let Some(r) = readers.join_next().await {
                let got = r.map_err(|e| std::io::Error::other(e.to_string()))??;
                min_got = min_got.min(got);
            }
            println!("done {min_got}");
            wait_stdin_closed().await;
            Ok(())
        }
    }
}

async fn wait_stdin_closed() {
    // A blocking read, on the blocking pool: EOF or an error both mean the
    // parent is gone.
    let _ = tokio::task::spawn_blocking(|| {
        use std::io::Read as _;
        let mut buf = [0u8; 64];
        let mut stdin = std::io::stdin();
        while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
    })
    .await;
}

/// A running child, killed on drop.
pub struct ChildProc {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl ChildProc {
    /// Starts `cmd` in `role`.
    pub fn spawn(cmd: &ChildCmd, role: &ChildRole) -> Result<Self, ChildError> {
        let mut child = tokio::process::Command::new(&cmd.program)
            .args(&cmd.args)
            .args(role.to_args())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            // OTA_BENCH_CHILD_LOG=1 shows the child's own log (RUST_LOG applies).
            .stderr(if std::env::var_os("OTA_BENCH_CHILD_LOG").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .kill_on_drop(true)
            .spawn()?;
        let out = child
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other("the child has no stdout"))?;
        Ok(Self {
            child,
            lines: BufReader::new(out).lines(),
        })
    }

    /// The embedded broker alone ([`ChildRole::Broker`]) on a free
    /// loopback port, once it says `ready`; returns it and its port.
    pub async fn broker(cmd: &ChildCmd) -> Result<(ChildProc, u16), ChildError> {
        let port = crate::free_port()?;
        let mut c = ChildProc::spawn(cmd, &ChildRole::Broker { port })?;
        c.expect("ready", Duration::from_secs(20)).await?;
        Ok((c, port))
    }

    /// Waits for a line starting with `want`; returns the rest of it.
    pub async fn expect(
        &mut self,
        want: &'static str,
        within: Duration,
    ) -> Result<String, ChildError> {
        let line = tokio::time::timeout(within, self.lines.next_line())
            .await
            .map_err(|_| ChildError::Timeout(want, within))??;
        match line {
            Some(l) if l.starts_with(want) => Ok(l[want.len()..].trim().to_string()),
            other => Err(ChildError::Unexpected {
                want,
                got: other.unwrap_or_else(|| "<end of output>".into()),
            }),
        }
    }

    /// The child's process id (None once it has been reaped).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Kills the child and reaps it.
    pub async fn stop(mut self) {
        // Already gone is fine: we only want it ended.
        let _ = self.child.kill().await;
    }
}

pub use crate::procfs::{cpu_seconds as cpu_secs, peak_rss, rss};

/// Reads `s` until `bytes` have come or it closes: how many came.
pub(super) async fn read_up_to(s: &mut tokio::net::TcpStream, bytes: u64) -> std::io::Result<u64> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0u64;
    while got < bytes {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        got += n as u64;
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_round_trip_through_words() {
        for role in [
            ChildRole::Broker { port: 1883 },
            ChildRole::TlsBroker {
                port: 1883,
                tls_port: 8883,
                pki: "/tmp/pki".into(),
            },
            ChildRole::RawReaders {
                addr: "127.0.0.1:4000".parse().unwrap(),
                clients: 10_000,
                bytes: 1 << 20,
            },
        ] {
            assert_eq!(ChildRole::parse(&role.to_args()).unwrap(), role);
        }
        assert!(ChildRole::parse(&["broker".into()]).is_err());
        assert!(ChildRole::parse(&["broker".into(), "x".into()]).is_err());
    }

    #[test]
    fn reads_its_own_cpu_time() {
        let before = cpu_secs(std::process::id()).unwrap();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(cpu_secs(std::process::id()).unwrap() >= before);
    }

    #[test]
    fn reads_its_own_peak_rss() {
        let me = std::process::id();
        // The current RSS first: the peak read after it is at least that.
        let now = rss(me).unwrap();
        assert!(peak_rss(me).unwrap() >= now);
    }
}
