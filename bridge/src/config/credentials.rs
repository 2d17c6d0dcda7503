//! `[bridge] broker_user`: which login the bridge uses on its broker.

use std::collections::BTreeMap;

use super::{ConfigError, Validator};

impl Validator<'_> {
    /// The bridge's own broker login: an external broker's `[broker]`
    /// username/password, or the embedded broker's `[bridge] broker_user`
    /// out of `[broker.users]` (required when there are users, refused
    /// when there are none).
    pub(super) fn bridge_credentials(
        &self,
        broker: &broker::BrokerConfig,
        users: &BTreeMap<String, String>,
        broker_user: Option<String>,
    ) -> Result<Option<broker::Credentials>, ConfigError> {
        match broker {
            broker::BrokerConfig::External(x) => {
                if broker_user.is_some() {
                    return Err(self.err(
                        "bridge",
                        "broker_user",
                        "only used with the embedded broker; an external broker's login is [broker] username/password",
                    ));
                }
                Ok(x.credentials.clone())
            }
            broker::BrokerConfig::Embedded(_) if users.is_empty() => {
                if broker_user.is_some() {
                    return Err(self.err(
                        "bridge",
                        "broker_user",
                        "[broker.users] is empty (the broker is anonymous): add the user there or remove this key",
                    ));
                }
                Ok(None)
            }
            broker::BrokerConfig::Embedded(_) => {
                let Some(user) = broker_user else {
                    return Err(self.err(
                        "bridge",
                        "broker_user",
                        "required because [broker.users] is not empty: name the user the bridge logs in as",
                    ));
                };
                let Some(password) = users.get(&user) else {
                    return Err(self.err(
                        "bridge",
                        "broker_user",
                        format!("{user:?} is not in [broker.users]: add it there"),
                    ));
                };
                Ok(Some(broker::Credentials {
                    username: user,
                    password: password.clone(),
                }))
            }
        }
    }
}
