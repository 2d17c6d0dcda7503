//! The embedded broker alone, in its own process, for `ota sim` scale runs:
//! `cargo run --release -p ota-tests --example bench_broker -- 18830`.

use std::net::SocketAddr;

fn main() {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(18830);
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,rumqttd=off".into()),
        )
        .init();
    let cfg = broker::EmbeddedConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], port)),
        max_connections: 12_000,
        ..Default::default()
    };
    match broker::start(&cfg) {
        Ok(b) => {
            eprintln!("embedded broker on {}", b.connect_addr());
            loop {
                std::thread::park();
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
