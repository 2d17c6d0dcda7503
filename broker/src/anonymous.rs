//! The secure default (issue 12): no anonymous embedded broker unless the
//! config says `[broker] allow_anonymous = true`.

use crate::error::ConfigError;

/// The secure default: an embedded broker without `[broker.users]` lets
/// anyone connect as any device, as the bridge or as an operator, and
/// publish and subscribe anywhere (PROTOCOL.md E1 needs logins). Only
/// `allow_anonymous = true` runs one.
pub(crate) fn check(has_users: bool, allow: Option<bool>) -> Result<(), ConfigError> {
    match (has_users, allow) {
        (false, Some(true)) | (true, None | Some(false)) => Ok(()),
        (false, None | Some(false)) => Err(ConfigError::new(
            "allow_anonymous",
            "the embedded broker has no [broker.users], so anyone could connect as any device, \
             as the bridge or as an operator: add the bridge's and the operators' accounts under \
             [broker.users] (and [bridge] broker_user), or set [broker] allow_anonymous = true \
             for development on loopback",
        )),
        (true, Some(true)) => Err(ConfigError::new(
            "allow_anonymous",
            "set to true together with [broker.users], which make every client log in: remove \
             one of the two",
        )),
    }
}
