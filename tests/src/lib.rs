//! The harness: start the real stack (embedded broker or Mosquitto, the
//! bridge, a simulated fleet) for end-to-end tests, the demo and the
//! benchmarks.
//!
//! # Layout
//!
//! - [`stack`]: [`stack::Stack`], a broker + bridge + keys + operator client.
//! - [`campaigns`]: the operator's create-and-start of a campaign.
//! - [`serve_config`]: what every `ota.toml` written for `ota serve`
//!   shares (the director key it must name).
//! - [`mosquitto`]: Mosquitto as a child process on a free port.
//! - [`demo`]: `ota demo`, the whole story on a simulated fleet.
//! - [`faults`]: helpers of the fault suite (`tests/tests/faults/`).
//! - [`bench`]: benchmarks behind `ota bench`, returning figures.
//! - [`downloader`]: a minimal protocol-speaking device download loop (raw
//!   rumqttc), for the download benchmark and the block server's tests.
//! - [`minibridge`]: a minimal stand-in for the bridge over real MQTT
//!   (Membership, announcements, blocks, StatusAcks), for the agent's and
//!   the simulator's own tests and scale runs without a bridge.
//! - [`pki`]: a fleet CA, the broker's certificate and device certificates
//!   in a temp dir, for the TLS tests.
//! - [`procfs`]: a process's peak RSS and CPU time, the load average.
//! - [`raw`]: a device's own raw MQTT client that records what it gets,
//!   for the attacker tests of PROTOCOL.md E1.
//! - [`topology`]: past one broker: a core Mosquitto, K edges bridged to
//!   it (E1 on each), `ota serve` and `ota sim` processes (issue 19).
//! - [`attacker`]: what an attacker with one device's login tries, and the
//!   checks that it changed nothing.

pub mod attacker;
pub mod bench;
pub mod campaigns;
pub mod demo;
pub mod downloader;
pub mod faults;
pub mod minibridge;
pub mod mosquitto;
pub mod pki;
pub mod procfs;
pub mod raw;
pub mod serve_config;
pub mod stack;
pub mod topology;

pub use stack::{BrokerChoice, Keys, Stack, StackOptions, WaitError};

/// A test process's logs: `RUST_LOG`, else warnings (rumqttd's off), to
/// the test's captured output. The first call sets them; later ones do
/// nothing.
pub fn test_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,rumqttd=off".into()),
        )
        .with_test_writer()
        .try_init();
}

/// A free loopback port (bound, read, released).
pub fn free_port() -> std::io::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}
