//! Where the bridge is and who the operator is, for every command that
//! talks to a running bridge: `--config`, or a broker address and a key.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _};
use bridge::client::{ClientOptions, OpsClient};
use bridge::config::client_tls::ClientTlsConfig;
use schemas::ops::Command;
use schemas::topic::Topics;

use crate::keyfile::{self, Role};
use crate::rt;

/// Where the bridge is and who you are: a config file, or a broker and a key.
#[derive(clap::Args)]
pub(crate) struct Conn {
    /// Read the broker, the topic prefix and the [operator] key from this
    /// ota.toml.
    #[arg(long, value_name = "FILE", env = "OTA_CONFIG")]
    config: Option<PathBuf>,
    /// The broker the bridge uses: HOST:PORT, mqtt://HOST[:PORT] or, with
    /// TLS, mqtts://HOST[:8883].
    #[arg(long, value_name = "HOST:PORT", env = "OTA_BROKER")]
    broker: Option<String>,
    /// Your operator private key (operator.key from `ota keygen`); its
    /// operator.pub must be in the bridge's [bridge] operator_keys.
    #[arg(long, value_name = "OPERATOR_KEY", env = "OTA_KEY")]
    key: Option<PathBuf>,
    /// MQTT username, if the broker wants one.
    #[arg(long, env = "OTA_MQTT_USERNAME")]
    username: Option<String>,
    /// MQTT password.
    #[arg(long, env = "OTA_MQTT_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// Topic prefix, with --broker (the config file has its own).
    #[arg(long, value_name = "PREFIX", default_value = schemas::DEFAULT_PREFIX)]
    prefix: String,
    /// Seconds to wait for the bridge's reply.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    timeout: u64,
    /// The bridge's director public key (director.pub from `ota keygen`):
    /// believe only replies and events it signed, and address commands to
    /// that bridge alone. Overrides the config's [operator] bridge_key.
    #[arg(long, value_name = "DIRECTOR_PUB", env = "OTA_BRIDGE_KEY")]
    bridge_key: Option<PathBuf>,
    #[command(flatten)]
    tls: TlsArgs,
}

/// TLS to an `mqtts://` broker: the flags over the config's `[operator]`
/// (then `[broker]`) `ca_file`, `client_cert`, `client_key`.
#[derive(clap::Args, Clone, Default)]
pub(crate) struct TlsArgs {
    /// With mqtts://: the CA certificate (PEM) the broker's certificate
    /// must chain to (ca.crt of `ota pki init`); default: the system's roots.
    #[arg(long, value_name = "PEM", env = "OTA_CA_FILE")]
    pub(crate) ca_file: Option<PathBuf>,
    /// With mqtts://: your client certificate (PEM), for a broker that
    /// asks for one (`ota pki device NAME` writes NAME.crt).
    #[arg(
        long,
        value_name = "PEM",
        env = "OTA_CLIENT_CERT",
        requires = "client_key"
    )]
    pub(crate) client_cert: Option<PathBuf>,
    /// The private key of --client-cert (PEM).
    #[arg(
        long,
        value_name = "PEM",
        env = "OTA_CLIENT_KEY",
        requires = "client_cert"
    )]
    pub(crate) client_key: Option<PathBuf>,
}

impl TlsArgs {
    pub(crate) fn files(&self) -> tls::ClientTls {
        tls::ClientTls {
            ca_file: self.ca_file.clone(),
            client_cert: self.client_cert.clone(),
            client_key: self.client_key.clone(),
        }
    }

    /// The TLS config for a broker: `base` (a config's files) under these
    /// flags when `tls`; an error when flags are given for plain MQTT.
    pub(crate) fn build(
        &self,
        use_tls: bool,
        base: &tls::ClientTls,
        broker: &str,
    ) -> anyhow::Result<Option<ClientTlsConfig>> {
        let flags = self.files();
        if !use_tls {
            if !flags.is_empty() {
                bail!("--ca-file, --client-cert and --client-key are for TLS, but {broker} is plain MQTT: use mqtts://HOST[:PORT]");
            }
            return Ok(None);
        }
        let files = bridge::config::client_tls::overlay(base, &flags);
        Ok(Some(ClientTlsConfig::build(files)?))
    }
}

impl Conn {
    /// The `--config` file, if given.
    pub(crate) fn config_file(&self) -> Option<&std::path::Path> {
        self.config.as_deref()
    }

    pub(crate) fn options(&self) -> anyhow::Result<ClientOptions> {
        let mut opts = match (&self.config, &self.broker) {
            (Some(_), Some(_)) => bail!("give either --config or --broker, not both"),
            (Some(path), None) => {
                let config = bridge::Config::load(path)?;
                let mut opts = match &self.key {
                    Some(k) => {
                        let mut o = ClientOptions::new(
                            config.endpoint().host,
                            config.endpoint().port,
                            keyfile::load_signing_key(k, Role::Operator)?,
                        );
                        o.topics = config.bridge.topics.clone();
                        o.bridge_key = config.operator.bridge_key;
                        o.credentials = config
                            .operator
                            .credentials
                            .clone()
                            .or(config.bridge.credentials.clone());
                        o
                    }
                    // Its TLS is built below, the flags over its files.
                    None => ClientOptions::from_config_without_tls(&config)?,
                };
                let broker = format!("[broker] url of {}", path.display());
                opts.tls = self
                    .tls
                    .build(config.endpoint().tls, &config.operator.tls, &broker)?;
                opts
            }
            (None, Some(addr)) => {
                let Some(key) = &self.key else {
                    bail!(
                        "--broker needs --key OPERATOR_KEY (your operator.key from `ota keygen`)"
                    );
                };
                let (host, port, use_tls) = parse_broker(addr)?;
                let mut o =
                    ClientOptions::new(host, port, keyfile::load_signing_key(key, Role::Operator)?);
                o.topics = Topics::new(self.prefix.clone())
                    .map_err(|e| anyhow::anyhow!("--prefix: {e}"))?;
                o.tls = self.tls.build(
                    use_tls,
                    &tls::ClientTls::default(),
                    &format!("--broker {addr}"),
                )?;
                o
            }
            (None, None) => bail!(
                "where is the bridge? give --config FILE (an ota.toml with an [operator] key), \
                 or --broker HOST:PORT and --key OPERATOR_KEY"
            ),
        };
        if let Some(u) = &self.username {
            opts.credentials = Some(broker::Credentials {
                username: u.clone(),
                password: self.password.clone().unwrap_or_default(),
            });
        }
        opts.timeout = Duration::from_secs(self.timeout.max(1));
        if let Some(k) = &self.bridge_key {
            opts.bridge_key = Some(keyfile::load_verifying_key(k)?);
        }
        Ok(opts)
    }

    /// Connects, sends one command, and reads its result.
    pub(crate) fn call<T: serde::de::DeserializeOwned>(
        &self,
        command: Command,
    ) -> anyhow::Result<T> {
        let opts = self.options()?;
        rt::block_on(async move {
            let client = OpsClient::connect(opts).await?;
            let result = client.call_ok::<T>(command).await;
            client.close().await;
            Ok::<T, anyhow::Error>(result?)
        })?
    }
}

/// `HOST:PORT`, `mqtt://HOST[:PORT]` or `HOST` (port 1883), or
/// `mqtts://HOST[:PORT]` (TLS, port 8883): host, port, TLS.
pub(crate) fn parse_broker(s: &str) -> anyhow::Result<(String, u16, bool)> {
    let (rest, tls, default_port) = match s.strip_prefix("mqtts://") {
        Some(r) => (r, true, 8883),
        None => (s.strip_prefix("mqtt://").unwrap_or(s), false, 1883),
    };
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        // `h` ending in ':' is a bare IPv6 address without a port.
        Some((h, p)) if !h.ends_with(':') => {
            let port = p
                .parse::<u16>()
                .with_context(|| format!("--broker {s}: {p:?} is not a port number"))?;
            (
                h.trim_start_matches('[').trim_end_matches(']').to_string(),
                port,
            )
        }
        _ => (
            rest.trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            default_port,
        ),
    };
    if host.is_empty() {
        bail!("--broker {s}: give HOST:PORT, e.g. 127.0.0.1:1883");
    }
    Ok((host, port, tls))
}
