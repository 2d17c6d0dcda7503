//! Hands [`Identity`] to the embedded broker: it decides every CONNECT,
//! PUBLISH, SUBSCRIBE and will (PROTOCOL.md E1), and revoking or rotating
//! a device closes its open connection through the broker.

use std::sync::Arc;

use broker::{EmbeddedBroker, SharedAuthority};
use tracing::warn;

use super::Identity;

/// Installs `identity` as the embedded broker's authority: logins are
/// checked against the registry and the bridge's and operators' accounts,
/// topics against E1's table and the grants, all from memory on the
/// broker's threads. An anonymous broker (`[broker] allow_anonymous`)
/// checks neither; that is said at start.
pub fn wire_embedded(b: &EmbeddedBroker, identity: &Arc<Identity>) {
    let authority: SharedAuthority = identity.clone();
    if let Err(e) = b.set_authority(authority) {
        warn!(error = %e, "the embedded broker is anonymous: no login or topic is checked");
    }
    let kick = b.disconnector();
    identity.set_disconnector(Arc::new(move |client_id| {
        if !kick.disconnect(client_id) {
            warn!(
                client_id,
                "the broker's router is busy: the device stays connected until its next \
                 login, which is refused"
            );
        }
    }));
}
