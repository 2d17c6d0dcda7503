//! Socket addresses in `[broker]`: parsed with an error naming the key,
//! and where a client on this host reaches a listener.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::error::ConfigError;

/// `addr` with an unspecified IP replaced by loopback: where a client on
/// this host reaches that listener.
pub(crate) fn loopback(addr: SocketAddr) -> SocketAddr {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, addr.port())
}

pub(crate) fn parse_addr(
    key: &'static str,
    s: &str,
    example: &str,
) -> Result<SocketAddr, ConfigError> {
    s.parse().map_err(|_| {
        ConfigError::new(
            key,
            format!("{s:?} is not an address with a port, such as \"{example}\""),
        )
    })
}
