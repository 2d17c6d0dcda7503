//! Where the bridge is and who the operator is, for every command that
//! talks to a running bridge: `--config`, or a broker address and a key.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _};
use bridge::client::{ClientOptions, OpsClient};
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
    /// The broker the bridge uses: HOST:PORT or mqtt://HOST:PORT.
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
                match &self.key {
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
                    None => ClientOptions::from_config(&config)?,
                }
            }
            (None, Some(addr)) => {
                let Some(key) = &self.key else {
                    bail!(
                        "--broker needs --key OPERATOR_KEY (your operator.key from `ota keygen`)"
                    );
                };
                let (host, port) = parse_broker(addr)?;
                let mut o =
                    ClientOptions::new(host, port, keyfile::load_signing_key(key, Role::Operator)?);
                o.topics = Topics::new(self.prefix.clone())
                    .map_err(|e| anyhow::anyhow!("--prefix: {e}"))?;
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

/// `HOST:PORT`, `mqtt://HOST[:PORT]` or `HOST` (port 1883).
pub(crate) fn parse_broker(s: &str) -> anyhow::Result<(String, u16)> {
    if s.starts_with("mqtts://") {
        bail!("--broker {s}: TLS (mqtts://) is not supported by this build's client; use mqtt:// on a trusted network");
    }
    let rest = s.strip_prefix("mqtt://").unwrap_or(s).trim_end_matches('/');
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
        _ => (rest.to_string(), 1883),
    };
    if host.is_empty() {
        bail!("--broker {s}: give HOST:PORT, e.g. 127.0.0.1:1883");
    }
    Ok((host, port))
}
