//! The bridge config's `Debug`: keys shown by their kid, never the key,
//! and the broker login by its user name.

use super::BridgeConfig;

impl std::fmt::Debug for BridgeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BridgeConfig")
            .field("prefix", &self.topics.prefix())
            .field("data_dir", &self.data_dir)
            .field("client_id", &self.client_id)
            .field(
                "credentials",
                &self.credentials.as_ref().map(|c| &c.username),
            )
            .field(
                "operator_keys",
                &self
                    .operator_keys
                    .keys()
                    .map(hex::encode)
                    .collect::<Vec<_>>(),
            )
            .field(
                "release_keys",
                &self
                    .release_keys
                    .keys()
                    .map(hex::encode)
                    .collect::<Vec<_>>(),
            )
            .field("command_window_secs", &self.command_window_secs)
            .field(
                "director_key",
                &self
                    .director_key
                    .as_ref()
                    .map(|k| hex::encode(schemas::keys::kid(&k.verifying_key()))),
            )
            .field(
                "director_keys_next",
                &self
                    .director_keys_next
                    .keys()
                    .map(hex::encode)
                    .collect::<Vec<_>>(),
            )
            .field("control_ttl", &self.control_ttl)
            .finish()
    }
}
