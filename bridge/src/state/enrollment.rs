//! Devices entering the fleet: a Hello that registers (or, from a
//! pending device, is held until `ota devices accept`), and the
//! enrollments the broker admitted at login (`crate::identity`), stored
//! here by the core actor.

use schemas::msg::Hello;
use schemas::ops::Event;
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

/// The Hellos of one ingest batch (their epochs stored by the status
/// ingest), in order: a device that takes part registers (or updates its
/// record) as [`register`] does; a pending one's is held until `ota
/// devices accept`; anyone else's (not provisioned, or revoked) is dropped
/// and counted, logged once per interval. The registrations' events and the changed memberships go out
/// together after the batch, signed together (many on the blocking pool):
/// two ed25519 signatures per new device were most of core's time while
/// a fleet registers (issue 19). A device's membership goes out at most
/// once per batch, from its last Hello's labels.
pub async fn hellos(
    s: &mut CoreState,
    hellos: &[(DeviceId, Hello)],
    at: u64,
) -> Result<(), CoreError> {
    let t0 = std::time::Instant::now();
    let mut registered: Vec<(DeviceId, String)> = Vec::new();
    let mut relabelled: Vec<DeviceId> = Vec::new();
    for (id, hello) in hellos {
        if s.identity().takes_part(id) {
            let change = s.fleet_mut().hello(id, hello, at);
            s.put_device(id)?;
            if change.registered {
                info!(device = %id, arch = %hello.arch, "device registered");
                registered.push((id.clone(), hello.arch.clone()));
            } else if change.rebooted {
                info!(device = %id, boot_id = %hello.boot_id, "device rebooted");
            }
            if change.labels_changed {
                relabelled.push(id.clone());
            }
        } else if s.identity().standing(id) == Some(Standing::Pending) {
            s.held_hellos.insert(id.clone(), (hello.clone(), at));
        } else {
            s.identity()
                .refusals()
                .count(Refused::UnknownHello, id.as_str(), "hello");
        }
    }
    let t1 = std::time::Instant::now();
    if !registered.is_empty() {
        let ts = crate::rt::unix_now();
        let events = registered
            .iter()
            .map(|(id, arch)| Event {
                ts,
                kind: "device.registered".to_string(),
                campaign: None,
                message: format!("device {id} registered ({arch})"),
                data: serde_json::json!({ "device": id, "arch": arch }),
            })
            .collect();
        s.publisher().events(events).await?;
        let ids: Vec<DeviceId> = registered.into_iter().map(|(id, _)| id).collect();
        campaigns::devices_changed(s, &ids).await?;
    }
    let t2 = std::time::Instant::now();
    let mut changes = Vec::new();
    for id in &relabelled {
        changes.extend(s.fleet_mut().membership_changes(Some(id)));
    }
    let t3 = std::time::Instant::now();
    s.publish_memberships(changes).await?;
    if t0.elapsed() > std::time::Duration::from_millis(50) {
        // Which part: the fleet and the store (core's own work), or the
        // events and memberships going out (signing on the blocking
        // pool, then the publisher's bounded queue to the broker).
        tracing::debug!(
            hellos = hellos.len(),
            fleet_ms = (t1 - t0).as_millis() as u64,
            events_ms = (t2 - t1).as_millis() as u64,
            groups_ms = (t3 - t2).as_millis() as u64,
            memberships_ms = t3.elapsed().as_millis() as u64,
            "core: slow Hellos, by part"
        );
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
