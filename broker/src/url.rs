//! `[broker] url`: `mqtt://` or `mqtts://`, a host and a port.

use std::net::Ipv6Addr;

/// `mqtt://host[:port]` (default 1883) or `mqtts://host[:port]` (default
/// 8883), the host a name, an IPv4 address or a bracketed IPv6 address.
pub(crate) fn parse_url(url: &str) -> Result<(String, u16, bool), String> {
    let (rest, tls, default_port) = if let Some(rest) = url.strip_prefix("mqtt://") {
        (rest, false, 1883)
    } else if let Some(rest) = url.strip_prefix("mqtts://") {
        (rest, true, 8883)
    } else {
        return Err(format!(
            "{url:?} must start with mqtt:// or mqtts://, such as \"mqtt://broker.example:1883\""
        ));
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains('@') {
        return Err(format!(
            "{url:?} carries credentials: put them in [broker] username and password"
        ));
    }
    if rest.contains(['/', '?', '#']) {
        return Err(format!(
            "{url:?} has a path or query: give only host and port"
        ));
    }
    let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
        let Some((host, after)) = bracketed.split_once(']') else {
            return Err(format!(
                "{url:?} has an IPv6 address without its closing ']'"
            ));
        };
        if host.parse::<Ipv6Addr>().is_err() {
            return Err(format!("{url:?}: {host:?} is not an IPv6 address"));
        }
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Err(format!("{url:?}: expected ':port' after ']'")),
            },
        }
    } else {
        match rest.split_once(':') {
            None => (rest, None),
            Some((_, port)) if port.contains(':') => {
                return Err(format!("{url:?}: write an IPv6 address in brackets, [::1]"))
            }
            Some((host, port)) => (host, Some(port)),
        }
    };
    if host.is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    let port = match port {
        None => default_port,
        Some(p) => match p.parse::<u16>() {
            Ok(p) if p != 0 => p,
            _ => return Err(format!("{url:?}: {p:?} is not a port (1 to 65535)")),
        },
    };
    Ok((host.to_owned(), port, tls))
}
