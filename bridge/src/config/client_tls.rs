//! The TLS side of a client's config: `[broker] ca_file`, `client_cert`,
//! `client_key` (the bridge's two connections to an `mqtts://` broker) and
//! the same keys under `[operator]` (the `ota` CLI). The files are read
//! and the rustls config built once, while the config loads: nothing is
//! read from disk on the runtime, and a missing or garbled file stops the
//! start with an error naming it.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use tls::rustls::ClientConfig;
use tls::{ClientTls, TlsError};

/// A client's TLS settings and the rustls config built from them.
#[derive(Clone)]
pub struct ClientTlsConfig {
    /// The files, paths resolved against the config file's directory.
    pub files: ClientTls,
    /// Built from `files`.
    pub rustls: Arc<ClientConfig>,
}

impl fmt::Debug for ClientTlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTlsConfig")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl ClientTlsConfig {
    /// Reads the files and builds the config (blocking: at config load).
    pub fn build(files: ClientTls) -> Result<Self, TlsError> {
        let rustls = files.client_config()?;
        Ok(Self { files, rustls })
    }

    /// The rumqttc transport for a connection.
    pub fn transport(&self) -> rumqttc::Transport {
        tls::transport(self.rustls.clone())
    }
}

/// `[broker]`'s TLS files resolved (`resolve`: against the config file's
/// directory), and, for `mqtts://`, the rustls config built. An error is
/// the `[broker]` key and its message. The embedded broker's
/// `[broker.tls]` is its own.
pub fn for_broker(
    broker: &mut broker::BrokerConfig,
    resolve: impl Fn(PathBuf) -> PathBuf,
) -> Result<Option<ClientTlsConfig>, (&'static str, String)> {
    match broker {
        broker::BrokerConfig::External(x) => {
            let f = &mut x.client_tls;
            for p in [&mut f.ca_file, &mut f.client_cert, &mut f.client_key] {
                *p = p.take().map(&resolve);
            }
            if !x.tls {
                return Ok(None);
            }
            ClientTlsConfig::build(from_files(f))
                .map(Some)
                .map_err(|e| (tls_key(&e), e.to_string()))
        }
        // The bridge reaches its embedded broker on the plain listener
        // (loopback); [broker.tls] is the devices' listener.
        broker::BrokerConfig::Embedded(_) => Ok(None),
    }
}

/// The `[broker]` key a TLS error is about.
fn tls_key(e: &TlsError) -> &'static str {
    match e {
        TlsError::Read { what, .. } | TlsError::Pem { what, .. } | TlsError::Empty { what, .. } => {
            match *what {
                "client_cert" => "client_cert",
                "client_key" => "client_key",
                _ => "ca_file",
            }
        }
        TlsError::Identity { .. } | TlsError::HalfIdentity => "client_cert",
        _ => "ca_file",
    }
}

/// For a config built in code with `mqtts://` and no `broker_tls` (what
/// `Config::load` builds): builds it, on the blocking pool.
pub async fn fill(config: &mut super::Config) -> Result<(), TlsError> {
    if let (broker::BrokerConfig::External(x), None) = (&config.broker, &config.broker_tls) {
        if x.tls {
            let files = from_files(&x.client_tls);
            let built = crate::rt::blocking(move || ClientTlsConfig::build(files))
                .await
                .map_err(|e| TlsError::Invalid(format!("building the TLS config: {e}")))??;
            config.broker_tls = Some(built);
        }
    }
    Ok(())
}

/// `[broker]`'s files as the tls crate names them.
pub fn from_files(f: &broker::ClientTlsFiles) -> ClientTls {
    ClientTls {
        ca_file: f.ca_file.clone(),
        client_cert: f.client_cert.clone(),
        client_key: f.client_key.clone(),
    }
}

/// `over`'s settings, each falling back to `base`'s: the CLI's
/// `[operator]` keys over the bridge's `[broker]` ones (as its login falls
/// back to the bridge's). A client certificate comes whole from one side.
pub fn overlay(base: &ClientTls, over: &ClientTls) -> ClientTls {
    let (client_cert, client_key) = if over.client_cert.is_some() || over.client_key.is_some() {
        (over.client_cert.clone(), over.client_key.clone())
    } else {
        (base.client_cert.clone(), base.client_key.clone())
    };
    ClientTls {
        ca_file: over.ca_file.clone().or_else(|| base.ca_file.clone()),
        client_cert,
        client_key,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_operator_overlays_the_bridge_pair_by_pair() {
        let p = |s: &str| Some(PathBuf::from(s));
        let base = ClientTls {
            ca_file: p("ca"),
            client_cert: p("b.crt"),
            client_key: p("b.key"),
        };
        let mine = ClientTls {
            client_cert: p("a.crt"),
            client_key: p("a.key"),
            ..Default::default()
        };
        let o = overlay(&base, &mine);
        assert_eq!(o.ca_file, p("ca"));
        assert_eq!(o.client_cert, p("a.crt"));
        assert_eq!(o.client_key, p("a.key"));
        assert_eq!(overlay(&base, &ClientTls::default()), base);
    }
}
