//! Hands [`Identity`] to the embedded broker.

use std::sync::Arc;

use broker::{Authority, ConnectVerdict, CredentialCheck, EmbeddedBroker, Login};
use tracing::warn;

use super::Identity;

/// Installs `identity` as the embedded broker's credential check: device
/// logins are checked against the registry, from memory, on the
/// listener's thread. An anonymous broker (no `[broker.users]`) checks no
/// login at all; that is said at start.
pub fn wire_embedded(b: &EmbeddedBroker, identity: &Arc<Identity>) {
    let id = identity.clone();
    let check: CredentialCheck = Arc::new(move |client_id, username, password| {
        id.connect(client_id, Login::Password { username, password }) == ConnectVerdict::Accept
    });
    if let Err(e) = b.set_credential_check(check) {
        warn!(error = %e, "the embedded broker is anonymous: device credentials are not checked");
    }
}
