//! Devices entering the fleet: a Hello that registers (or, from a
//! pending device, is held until `ota devices accept`), and the
//! enrollments the broker admitted at login (`crate::identity`), stored
//! here by the core actor.

use schemas::msg::Hello;
use schemas::DeviceId;
use tracing::info;

use super::{campaigns, CoreError, CoreState};
use crate::identity::{Refused, Standing};

impl CoreState {
    /// The held Hello of a pending device and when it came.
    pub fn held_hello(&self, id: &DeviceId) -> Option<&(Hello, u64)> {
        self.held_hellos.get(id)
    }

    /// Forgets a pending device's held Hello (accepted or rejected).
    pub fn take_held_hello(&mut self, id: &DeviceId) -> Option<(Hello, u64)> {
        self.held_hellos.remove(id)
    }
}

/// A Hello the status ingest stored the epoch of: a device that takes part
/// registers (or updates its record); a pending one's is held, nothing
/// else; anyone else's is dropped and counted.
pub async fn hello(
    s: &mut CoreState,
    id: &DeviceId,
    hello: &Hello,
    at: u64,
) -> Result<(), CoreError> {
    if s.identity().takes_part(id) {
        return register(s, id, hello, at).await;
    }
    if s.identity().standing(id) == Some(Standing::Pending) {
        // Shown as pending; takes part in no group until accepted. At most
        // one held per enrolled device.
        s.held_hellos.insert(id.clone(), (hello.clone(), at));
        return Ok(());
    }
    // Not provisioned (or revoked): an impostor's Hello registers nothing.
    // Counted, logged once per interval.
    s.identity()
        .refusals()
        .count(Refused::UnknownHello, id.as_str(), "hello");
    Ok(())
}

/// Registers a device that takes part (or updates its record) from its
/// Hello, and tells the campaigns and the groups.
pub async fn register(
    s: &mut CoreState,
    id: &DeviceId,
    hello: &Hello,
    at: u64,
) -> Result<(), CoreError> {
    let change = s.fleet_mut().hello(id, hello, at);
    s.put_device(id)?;
    if change.registered {
        info!(device = %id, arch = %hello.arch, "device registered");
        s.event(
            "device.registered",
            format!("device {id} registered ({})", hello.arch),
            serde_json::json!({ "device": id, "arch": hello.arch }),
        )
        .await?;
        campaigns::devices_changed(s, std::slice::from_ref(id)).await?;
    } else if change.rebooted {
        info!(device = %id, boot_id = %hello.boot_id, "device rebooted");
    }
    if change.labels_changed {
        let changes = s.fleet_mut().membership_changes(Some(id));
        s.publish_memberships(changes).await?;
    }
    Ok(())
}

/// Stores the enrollments the broker admitted since the last call
/// (pending devices: `ota devices list` shows them, `accept` or `reject`
/// decides), and tells operators.
pub async fn store_enrolled(s: &mut CoreState) -> Result<(), CoreError> {
    for r in s.identity().take_enrolled() {
        s.credentials().put(&r)?;
        info!(device = %r.id, "device enrolled with the fleet token: pending until `ota devices accept`");
        s.event(
            "device.enrolled",
            format!(
                "device {} enrolled: pending until `ota devices accept {}` (or `reject`)",
                r.id, r.id
            ),
            serde_json::json!({ "device": r.id }),
        )
        .await?;
    }
    Ok(())
}
