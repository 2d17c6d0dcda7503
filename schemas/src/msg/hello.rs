//! Hello: a device says who it is (`P/devices/{id}/hello`, device → bridge).

use std::collections::BTreeMap;

use super::common::{put_versions, read_versions};
use super::limits::{MAX_FEATURES, MAX_FEATURE_LEN, MAX_MAP_ENTRIES, MAX_TEXT};
use super::{DecodeError, WireMessage};
use crate::cbor::{MapBuilder, MapReader, Value};
use crate::ids::{ComponentName, Epoch};

/// `Hello = { "proto": 1, "arch", "versions", "labels", "boot_id", "epoch", "outbox", ? "features" }`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// Protocol version: 1.
    pub proto: u64,
    /// The device's architecture, e.g. `esp32`.
    pub arch: String,
    /// Installed version per component.
    pub versions: BTreeMap<ComponentName, String>,
    /// Provisioning facts, e.g. customer, site, line.
    pub labels: BTreeMap<String, String>,
    /// New at every boot.
    pub boot_id: String,
    /// Names the device's seq counter.
    pub epoch: Epoch,
    /// The lowest seq the device holds unacknowledged, or its next seq.
    pub outbox: u64,
    /// E3: what the device can do beyond v1, e.g. `delta-zstd`; absent
    /// when empty.
    pub features: Vec<String>,
}

impl Hello {
    /// True when the device lists `feature`.
    pub fn has_feature(&self, feature: &str) -> bool {
        self.features.iter().any(|f| f == feature)
    }
}

impl WireMessage for Hello {
    const NAME: &'static str = "Hello";

    fn to_value(&self) -> Value {
        let b = MapBuilder::new()
            .put("proto", self.proto)
            .put("arch", self.arch.as_str());
        put_versions(b, &self.versions)
            .put_text_map("labels", &self.labels)
            .put("boot_id", self.boot_id.as_str())
            .put("epoch", self.epoch.as_str())
            .put("outbox", self.outbox)
            .put_opt(
                "features",
                (!self.features.is_empty()).then(|| {
                    Value::Array(self.features.iter().map(|f| f.as_str().into()).collect())
                }),
            )
            .build()
    }

    fn from_reader(r: &mut MapReader) -> Result<Self, DecodeError> {
        let proto = r.uint("proto")?;
        let arch = r.text("arch", MAX_TEXT)?;
        if arch.is_empty() {
            return Err(DecodeError::Invalid {
                key: "arch",
                reason: "must not be empty".into(),
            });
        }
        let versions = read_versions(r)?;
        Ok(Hello {
            proto,
            arch,
            versions,
            labels: r.text_map("labels", MAX_MAP_ENTRIES, MAX_TEXT)?,
            boot_id: r.text("boot_id", MAX_TEXT)?,
            epoch: r.name("epoch")?,
            outbox: r.uint("outbox")?,
            features: features(r)?,
        })
    }
}

/// `? "features": [* tstr]`, bounded.
fn features(r: &mut MapReader) -> Result<Vec<String>, DecodeError> {
    if !r.has("features") {
        return Ok(Vec::new());
    }
    r.array("features", MAX_FEATURES)?
        .into_iter()
        .map(|v| crate::cbor::as_text("features", v, MAX_FEATURE_LEN))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::testutil::*;

    pub(crate) fn sample() -> Hello {
        Hello {
            proto: 1,
            arch: "esp32".into(),
            versions: [(ComponentName::new("main").unwrap(), "1.2.0".to_string())].into(),
            labels: [
                ("customer".to_string(), "acme".to_string()),
                ("line".into(), "3".into()),
            ]
            .into(),
            boot_id: "b-7f3a".into(),
            epoch: Epoch::new("k3j9x0qa").unwrap(),
            outbox: 17,
            features: Vec::new(),
        }
    }

    #[test]
    fn round_trips() {
        round_trip(&sample());
        let mut empty = sample();
        empty.versions.clear();
        empty.labels.clear();
        round_trip(&empty);
        let mut f = sample();
        f.features = vec!["delta-zstd".into()];
        round_trip(&f);
        assert!(f.has_feature("delta-zstd"));
        assert!(!sample().has_feature("delta-zstd"));
    }

    #[test]
    fn bounds_features() {
        let mut h = sample();
        h.features = vec!["f".into(); MAX_FEATURES + 1];
        assert!(matches!(
            Hello::decode(&h.encode()),
            Err(DecodeError::Invalid {
                key: "features",
                ..
            })
        ));
        h.features = vec!["x".repeat(MAX_FEATURE_LEN + 1)];
        assert!(Hello::decode(&h.encode()).is_err());
    }

    #[test]
    fn ignores_unknown_keys() {
        let b = with_unknown_key(&sample().encode());
        assert_eq!(Hello::decode(&b).unwrap(), sample());
    }

    #[test]
    fn names_missing_and_bad_keys() {
        let b = MapBuilder::new().put("proto", 1u64).encode();
        assert_eq!(Hello::decode(&b), Err(DecodeError::Missing { key: "arch" }));
        let mut h = sample();
        h.epoch = Epoch::new("ok").unwrap();
        let v = h.to_value();
        let Value::Map(mut m) = v else { unreachable!() };
        for (k, v) in m.iter_mut() {
            if k == &Value::Text("epoch".into()) {
                *v = Value::Text("bad/epoch".into());
            }
        }
        let b = crate::cbor::encode(&Value::Map(m));
        assert!(matches!(
            Hello::decode(&b),
            Err(DecodeError::Invalid { key: "epoch", .. })
        ));
    }

    #[test]
    fn bounds_the_label_map() {
        let mut h = sample();
        for i in 0..65 {
            h.labels.insert(format!("k{i}"), "v".into());
        }
        assert!(matches!(
            Hello::decode(&h.encode()),
            Err(DecodeError::Invalid { key: "labels", .. })
        ));
    }
}
