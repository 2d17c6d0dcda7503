//! Ids and labels for the unit tests, from strings known to be valid (a
//! bad one is the test's own mistake: it panics).

use std::collections::BTreeMap;

use schemas::{ArtifactId, DeviceId, GroupName};

pub fn device(s: &str) -> DeviceId {
    DeviceId::new(s).unwrap()
}

pub fn artifact(s: &str) -> ArtifactId {
    ArtifactId::new(s).unwrap()
}

pub fn group(s: &str) -> GroupName {
    GroupName::new(s).unwrap()
}

/// Labels from `(key, value)` pairs.
pub fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Cohorts (basis points) by group from `(group, bp)` pairs.
pub fn cohorts(pairs: &[(&str, u16)]) -> BTreeMap<GroupName, u16> {
    pairs.iter().map(|(g, c)| (group(g), *c)).collect()
}
