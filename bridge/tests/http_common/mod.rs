//! A plain HTTP/1.1 client for the listener's tests: one request per
//! connection (`Connection: close`), from a chosen local address, so that
//! a test can come from loopback or from the host's other address.

#![allow(dead_code)]

pub mod browser;

use std::net::{IpAddr, SocketAddr};

use bridge::client::OpsClient;
use bridge::config::http::HttpConfig;
use schemas::msg::Kind;
use schemas::ops::Command;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

use crate::campaign_common::{self as cc, DeviceOpts, Devices};
use crate::common::{within, Stack};

/// A bridge with `[http]` open to loopback, the esp32 artifact
/// `fw-{version}-esp32`, the groups canary and acme (by their `customer`
/// label), and `devices` running and registered.
pub struct Rollout {
    pub stack: Stack,
    pub ops: OpsClient,
    /// The listener's address.
    pub addr: SocketAddr,
    pub devices: Devices,
}

impl Rollout {
    pub async fn start(version: &str, devices: Vec<DeviceOpts>) -> Rollout {
        let stack = cc::stack_with(|c| {
            c.http = Some(HttpConfig::anonymous_loopback(
                "127.0.0.1:0".parse().expect("an address"),
            ))
        })
        .await;
        let addr = stack.bridge().http_addr().expect("[http] is on");
        let ops = stack.ops().await;
        firmware(&stack, version).await;
        cc::group(&ops, "canary", "canary").await;
        cc::group(&ops, "acme", "acme").await;
        let n = devices.len();
        let mut running = Devices::default();
        for d in devices {
            running.spawn(&stack, d);
        }
        cc::registered(&stack, n).await;
        Rollout {
            stack,
            ops,
            addr,
            devices: running,
        }
    }
}

/// Pushes the esp32 firmware `fw-{version}-esp32` (main, 3,000 bytes).
pub async fn firmware(stack: &Stack, version: &str) {
    let id = format!("fw-{version}-esp32");
    cc::artifact(stack, cc::Release::new(&id, Kind::Firmware, version)).await;
}

/// Creates and starts `id`: wave 1 the canaries, wave 2 acme, every device
/// of a wave to succeed, judged for `timeout_secs`.
pub async fn two_waves(ops: &OpsClient, id: &str, version: &str, timeout_secs: u64) {
    cc::create(
        ops,
        serde_json::json!({
            "id": id, "kind": "firmware", "release": [format!("fw-{version}-esp32")],
            "waves": [{"cohorts": {"canary": 10000}}, {"cohorts": {"acme": 10000}}],
            "gates": {"success_bar_bp": 10000, "min_sample": 1, "wave_timeout_secs": timeout_secs}
        }),
    )
    .await;
    let id = id.parse().expect("a campaign id");
    cc::call(ops, Command::CampaignStart { id }).await;
}

/// A response: status, headers (names lowercased), body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// `METHOD path` to `addr`, from `from` (any port), with `headers`.
pub async fn request(
    from: IpAddr,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Response {
    within(&format!("{method} {path}"), async {
        let socket = match from {
            IpAddr::V4(_) => TcpSocket::new_v4(),
            IpAddr::V6(_) => TcpSocket::new_v6(),
        }
        .expect("a socket");
        socket
            .bind(SocketAddr::new(from, 0))
            .expect("bind the client's address");
        let mut s = socket.connect(addr).await.expect("connect to the listener");
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if method != "GET" {
            req.push_str("Content-Length: 0\r\n");
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).await.expect("send the request");
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.expect("read the response");
        parse(&raw)
    })
    .await
}

/// A response that stays open (Server-Sent Events): the request is sent,
/// [`Stream::until`] reads on.
pub struct Stream {
    socket: tokio::net::TcpStream,
    pub seen: String,
}

impl Stream {
    pub async fn open(addr: SocketAddr, path: &str) -> Stream {
        let mut socket = within("connect for a stream", tokio::net::TcpStream::connect(addr))
            .await
            .expect("connect to the listener");
        let req =
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n");
        socket
            .write_all(req.as_bytes())
            .await
            .expect("send the request");
        Stream {
            socket,
            seen: String::new(),
        }
    }

    /// Reads until what came so far holds `needle`.
    pub async fn until(&mut self, needle: &str) -> &str {
        within(&format!("{needle:?} on the stream"), async {
            let mut buf = [0u8; 4096];
            while !self.seen.contains(needle) {
                let n = self.socket.read(&mut buf).await.expect("read the stream");
                assert!(n > 0, "the stream ended before {needle:?}:\n{}", self.seen);
                self.seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        })
        .await;
        &self.seen
    }
}

/// `GET path` from loopback.
pub async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Response {
    request(IpAddr::from([127, 0, 0, 1]), addr, "GET", path, headers).await
}

/// A whole response as read off the wire.
pub fn parse(raw: &[u8]) -> Response {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of headers in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    Response {
        status,
        headers,
        body,
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size = usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16)
            .expect("a chunk size");
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[eol + 2 + size + 2..];
    }
}

/// This host's address that is not loopback (the source of a "remote"
/// request), found from the routing table through a UDP socket (nothing
/// is sent).
pub fn outside_address() -> IpAddr {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").expect("a UDP socket");
    s.connect("192.0.2.1:9")
        .or_else(|_| s.connect("203.0.113.1:9"))
        .expect(
            "a route to a non-loopback address: this test needs a network interface besides lo",
        );
    let ip = s.local_addr().expect("the UDP socket's address").ip();
    assert!(
        !ip.is_loopback() && !ip.is_unspecified(),
        "no non-loopback address on this host ({ip}): this test needs one"
    );
    ip
}
