//! `[http]`: the read-only HTTP listener (dashboard, JSON API, `/metrics`).
//! Absent, there is no listener. Raw keys here ([`RawHttp`], unknown keys
//! refused), validated by [`validate`] into [`HttpConfig`], every error
//! naming its key.
//!
//! ```toml
//! [http]
//! listen = "127.0.0.1:8080"
//! # SHA-256 (hex) of each bearer token that may read; `ota http-token`
//! # makes a token and prints this line.
//! read_tokens = ["sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"]
//! # Requests from 127.0.0.1 / ::1 without a token are let in (the demo).
//! allow_anonymous_loopback = false
//! # HTTPS: a PEM certificate chain and its key (both or neither).
//! tls_cert = "tls/server.crt"
//! tls_key = "tls/server.key"
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// The prefix of a stored token hash.
pub const HASH_PREFIX: &str = "sha256:";

/// `[http]` as written.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttp {
    pub listen: Option<String>,
    pub read_tokens: Option<Vec<String>>,
    pub allow_anonymous_loopback: Option<bool>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

/// The SHA-256 of a read token: what the config keeps, never the token.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TokenHash(pub [u8; 32]);

impl TokenHash {
    /// The hash of a presented token.
    pub fn of(token: &[u8]) -> TokenHash {
        TokenHash(Sha256::digest(token).into())
    }

    /// The config file's form: `sha256:` and 64 hex digits.
    pub fn to_config(&self) -> String {
        format!("{HASH_PREFIX}{}", hex::encode(self.0))
    }
}

impl std::fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A prefix is enough to tell tokens apart in a log.
        write!(f, "sha256:{}…", hex::encode(&self.0[..4]))
    }
}

/// A new read token: 32 random bytes as hex, prefixed `ota_` (so that a
/// leaked one is recognisable in a log or a repository).
pub fn new_token() -> String {
    use rand::RngCore;
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    format!("ota_{}", hex::encode(b))
}

/// The validated `[http]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    /// Where the listener binds (port 0: any free port, for tests).
    pub listen: SocketAddr,
    /// Who may read: the hashes of their bearer tokens.
    pub read_tokens: Vec<TokenHash>,
    /// Requests from a loopback address need no token.
    pub allow_anonymous_loopback: bool,
    /// HTTPS with this certificate and key; `None`: plain HTTP.
    pub tls: Option<HttpTls>,
}

/// `tls_cert` and `tls_key`, resolved against the config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl HttpConfig {
    /// Loopback, anonymous reads: what `ota demo` runs.
    pub fn anonymous_loopback(listen: SocketAddr) -> HttpConfig {
        HttpConfig {
            listen,
            read_tokens: Vec::new(),
            allow_anonymous_loopback: true,
            tls: None,
        }
    }
}

/// A key of `[http]` that is wrong, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpKeyError {
    pub key: String,
    pub message: String,
}

fn err(key: impl Into<String>, message: impl Into<String>) -> HttpKeyError {
    HttpKeyError {
        key: key.into(),
        message: message.into(),
    }
}

/// Validates `[http]`; `resolve` makes a path relative to the config file.
/// The TLS files are read once here, so that a bad one stops the load.
pub fn validate(
    raw: RawHttp,
    resolve: impl Fn(PathBuf) -> PathBuf,
) -> Result<HttpConfig, HttpKeyError> {
    let Some(listen) = raw.listen else {
        return Err(err(
            "listen",
            "required in an [http] section (e.g. \"127.0.0.1:8080\"); remove the section to run without the HTTP listener",
        ));
    };
    let listen: SocketAddr = listen.parse().map_err(|_| {
        err(
            "listen",
            format!(
                "{listen:?} is not an address and port, e.g. \"127.0.0.1:8080\" or \"[::1]:8080\""
            ),
        )
    })?;
    let mut read_tokens = Vec::new();
    for (i, t) in raw.read_tokens.unwrap_or_default().iter().enumerate() {
        read_tokens.push(parse_hash(t).map_err(|m| err(format!("read_tokens[{i}]"), m))?);
    }
    let allow_anonymous_loopback = raw.allow_anonymous_loopback.unwrap_or(false);
    if read_tokens.is_empty() && !allow_anonymous_loopback {
        return Err(err(
            "read_tokens",
            "empty, and allow_anonymous_loopback is false: nobody could read; add a token's hash \
             (`ota http-token` makes one) or set allow_anonymous_loopback = true",
        ));
    }
    if read_tokens.is_empty() && !listen.ip().is_loopback() {
        return Err(err(
            "listen",
            format!(
                "{listen} is reachable from other hosts, but only loopback may read without a token and \
                 read_tokens is empty: listen on 127.0.0.1, or add read_tokens"
            ),
        ));
    }
    let tls = match (raw.tls_cert, raw.tls_key) {
        (None, None) => None,
        (Some(_), None) => {
            return Err(err(
                "tls_key",
                "tls_cert is given without it: give both, or neither for plain HTTP",
            ))
        }
        (None, Some(_)) => {
            return Err(err(
                "tls_cert",
                "tls_key is given without it: give both, or neither for plain HTTP",
            ))
        }
        (Some(cert), Some(key)) => {
            let t = HttpTls {
                cert: resolve(cert),
                key: resolve(key),
            };
            tls::server_config(&t.cert, &t.key).map_err(|e| err("tls_cert", e.to_string()))?;
            Some(t)
        }
    };
    Ok(HttpConfig {
        listen,
        read_tokens,
        allow_anonymous_loopback,
        tls,
    })
}

fn parse_hash(text: &str) -> Result<TokenHash, String> {
    let hex_part = text.strip_prefix(HASH_PREFIX).ok_or_else(|| {
        format!(
            "{:?} is not a token hash: write \"sha256:\" and the 64 hex digits of the token's SHA-256 \
             (`ota http-token` prints the line; never the token itself)",
            text.chars().take(12).collect::<String>()
        )
    })?;
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_part, &mut out)
        .map_err(|e| format!("the hash after \"sha256:\" must be 64 hex digits: {e}"))?;
    Ok(TokenHash(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(listen: &str, tokens: &[&str], anon: bool) -> RawHttp {
        RawHttp {
            listen: Some(listen.into()),
            read_tokens: Some(tokens.iter().map(|s| s.to_string()).collect()),
            allow_anonymous_loopback: Some(anon),
            ..RawHttp::default()
        }
    }

    fn validate(r: RawHttp) -> Result<HttpConfig, HttpKeyError> {
        super::validate(r, |p| p)
    }

    #[test]
    fn a_token_hash_round_trips() {
        let h = TokenHash::of(b"test");
        let c = validate(raw("0.0.0.0:80", &[&h.to_config()], false)).unwrap();
        assert_eq!(c.read_tokens, vec![h]);
        assert!(!format!("{h:?}").contains(&hex::encode(h.0)));
    }

    #[test]
    fn new_tokens_differ() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert_eq!(a.len(), 4 + 64);
    }

    #[test]
    fn errors_name_the_key() {
        let h = TokenHash::of(b"t").to_config();
        let cases = [
            (RawHttp::default(), "listen", "required"),
            (raw("localhost", &[], true), "listen", "not an address"),
            (
                raw("127.0.0.1:1", &["abc"], true),
                "read_tokens[0]",
                "sha256:",
            ),
            (
                raw("127.0.0.1:1", &["sha256:zz"], true),
                "read_tokens[0]",
                "64 hex",
            ),
            (raw("127.0.0.1:1", &[], false), "read_tokens", "nobody"),
            (raw("0.0.0.0:1", &[], true), "listen", "other hosts"),
            (
                RawHttp {
                    tls_cert: Some("c.pem".into()),
                    ..raw("127.0.0.1:1", &[], true)
                },
                "tls_key",
                "both",
            ),
            (
                RawHttp {
                    tls_cert: Some("/nonexistent/c.pem".into()),
                    tls_key: Some("/nonexistent/k.pem".into()),
                    ..raw("127.0.0.1:1", &[], true)
                },
                "tls_cert",
                "cannot read",
            ),
        ];
        for (r, key, needle) in cases {
            let e = validate(r).unwrap_err();
            assert_eq!(e.key, key, "{e:?}");
            assert!(e.message.contains(needle), "{e:?}");
        }
        assert!(validate(raw("0.0.0.0:1", &[&h], true)).is_ok());
    }
}
