//! `ota bench --watched`: what an operator's open dashboard and a
//! Prometheus server cost the bridge. Beside a row's bridge it runs what
//! the dashboard's script does (one Server-Sent Events stream of
//! `/api/v1/events`; every 2 s the fleet, the campaign list and up to six
//! campaigns; one page of devices at the start) and a scraper of
//! `/metrics` every second, until the row ends. Plain HTTP/1.1 on
//! loopback, one request per connection, as a browser without keep-alive
//! would: the listener does the most work per read.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// The dashboard's poll interval (`POLL_MS` in dashboard.html).
pub const POLL: Duration = Duration::from_secs(2);
/// The scrape interval measured.
pub const SCRAPE: Duration = Duration::from_secs(1);
/// Campaigns whose detail the page reads each poll (`DETAILS`).
const DETAILS: usize = 6;
/// One request's limit.
const REQUEST_WAIT: Duration = Duration::from_secs(10);

/// What the watchers did during a row.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Watched {
    /// `/metrics` answered 200.
    pub scrapes: u64,
    /// API reads answered 200 (the dashboard's polls).
    pub reads: u64,
    /// Events received on the stream.
    pub events: u64,
    /// Requests that failed or were not 200.
    pub failed: u64,
}

#[derive(Default)]
struct Counts {
    scrapes: AtomicU64,
    reads: AtomicU64,
    events: AtomicU64,
    failed: AtomicU64,
}

/// The running watchers.
pub struct Watcher {
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
    counts: Arc<Counts>,
}

impl Watcher {
    /// Starts the dashboard's reads and the scraper against `addr`.
    pub fn start(addr: SocketAddr) -> Watcher {
        let (stop, stopped) = watch::channel(false);
        let counts = Arc::new(Counts::default());
        let mut tasks = JoinSet::new();
        tasks.spawn(events(addr, counts.clone(), stopped.clone()));
        tasks.spawn(scrape(addr, counts.clone(), stopped.clone()));
        tasks.spawn(dashboard(addr, counts.clone(), stopped));
        Watcher {
            stop,
            tasks,
            counts,
        }
    }

    /// Stops them and says what they did.
    pub async fn stop(mut self) -> Watched {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
        let c = &self.counts;
        Watched {
            scrapes: c.scrapes.load(Ordering::Relaxed),
            reads: c.reads.load(Ordering::Relaxed),
            events: c.events.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
        }
    }
}

/// `GET path`: the status and body, or `None` when it failed.
pub async fn get(addr: SocketAddr, path: &str) -> Option<(u16, Vec<u8>)> {
    let run = async {
        let mut s = TcpStream::connect(addr).await.ok()?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.ok()?;
        let status = std::str::from_utf8(raw.get(9..12)?).ok()?.parse().ok()?;
        let body = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or_else(Vec::new, |at| raw[at + 4..].to_vec());
        Some((status, body))
    };
    tokio::time::timeout(REQUEST_WAIT, run).await.ok().flatten()
}

fn count(counts: &AtomicU64, failed: &AtomicU64, r: &Option<(u16, Vec<u8>)>) -> bool {
    let ok = matches!(r, Some((200, _)));
    if ok { counts } else { failed }.fetch_add(1, Ordering::Relaxed);
    ok
}

/// Runs `tick` every `every` until stopped.
async fn every<F: std::future::Future<Output = ()>>(
    every: Duration,
    mut stopped: watch::Receiver<bool>,
    mut tick: impl FnMut() -> F,
) {
    let mut clock = tokio::time::interval(every);
    clock.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stopped.changed() => return,
            _ = clock.tick() => tick().await,
        }
    }
}

async fn scrape(addr: SocketAddr, c: Arc<Counts>, stopped: watch::Receiver<bool>) {
    every(SCRAPE, stopped, || {
        let c = c.clone();
        async move {
            let r = get(addr, "/metrics").await;
            count(&c.scrapes, &c.failed, &r);
        }
    })
    .await;
}

async fn dashboard(addr: SocketAddr, c: Arc<Counts>, stopped: watch::Receiver<bool>) {
    let r = get(addr, "/api/v1/devices?limit=50").await;
    count(&c.reads, &c.failed, &r);
    every(POLL, stopped, || {
        let c = c.clone();
        async move {
            let fleet = get(addr, "/api/v1/fleet").await;
            count(&c.reads, &c.failed, &fleet);
            let list = get(addr, "/api/v1/campaigns").await;
            if !count(&c.reads, &c.failed, &list) {
                return;
            }
            let ids: Vec<String> = list
                .and_then(|(_, body)| serde_json::from_slice::<serde_json::Value>(&body).ok())
                .and_then(|v| {
                    v["campaigns"].as_array().map(|a| {
                        a.iter()
                            .filter_map(|c| c["id"].as_str().map(str::to_string))
                            .take(DETAILS)
                            .collect()
                    })
                })
                .unwrap_or_default();
            for id in ids {
                let r = get(addr, &format!("/api/v1/campaigns/{id}")).await;
                count(&c.reads, &c.failed, &r);
            }
        }
    })
    .await;
}

/// One event stream, read until stopped (reconnecting as the page does).
async fn events(addr: SocketAddr, c: Arc<Counts>, mut stopped: watch::Receiver<bool>) {
    loop {
        let run = async {
            let Ok(mut s) = TcpStream::connect(addr).await else {
                return;
            };
            let req = format!(
                "GET /api/v1/events HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
            );
            if s.write_all(req.as_bytes()).await.is_err() {
                return;
            }
            let mut buf = vec![0u8; 16 * 1024];
            while let Ok(n) = s.read(&mut buf).await {
                if n == 0 {
                    return;
                }
                let seen = buf[..n].windows(9).filter(|w| w == b"event: ot").count();
                c.events.fetch_add(seen as u64, Ordering::Relaxed);
            }
        };
        tokio::select! {
            _ = stopped.changed() => return,
            _ = run => c.failed.fetch_add(1, Ordering::Relaxed),
        };
        tokio::select! {
            _ = stopped.changed() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}
