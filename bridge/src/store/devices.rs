//! The device registry's tree: one JSON [`DeviceRecord`] per device id.

use schemas::DeviceId;
use serde::{Deserialize, Serialize};

use super::records::{Record, Records};
use super::strmap::StrMap;

const TREE: &str = "devices";

/// What the bridge knows about one device, from its Hello and Presence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeviceRecord {
    pub id: DeviceId,
    pub arch: String,
    /// Component name → installed version.
    #[schema(value_type = std::collections::BTreeMap<String, String>)]
    pub versions: StrMap,
    #[schema(value_type = std::collections::BTreeMap<String, String>)]
    pub labels: StrMap,
    pub boot_id: String,
    pub online: bool,
    /// Unix seconds of the first Hello.
    pub first_seen: u64,
    /// Unix seconds of the last message from the device (Hello, Presence,
    /// Status; persisted at most once a minute when nothing else changed).
    pub last_seen: u64,
    /// Unix seconds of the last Hello.
    pub last_hello: u64,
    /// Reboots seen (a Hello with a new boot_id).
    pub reboots: u64,
    /// The Hello's `features` (E3: `delta-zstd`). Absent in records
    /// written before E3.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<String>,
}

/// The `devices` tree.
pub type DeviceStore = Records<DeviceRecord>;

impl Record for DeviceRecord {
    const TREE: &'static str = TREE;
    fn id(&self) -> &DeviceId {
        &self.id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_get_all() {
        let dir = tempfile::tempdir().unwrap();
        let s = super::super::Store::open(dir.path()).unwrap();
        let r = DeviceRecord {
            id: DeviceId::new("dev-1").unwrap(),
            arch: "esp32".into(),
            versions: [("main", "1.0.0")].into(),
            labels: [("customer", "acme")].into(),
            boot_id: "b1".into(),
            online: true,
            first_seen: 1,
            last_seen: 2,
            last_hello: 2,
            features: vec!["delta-zstd".into()],
            reboots: 0,
        };
        super::super::records::assert_round_trip(&s.devices, r);
    }
}
