//! Resolving a campaign's release against the artifact store at create:
//! every artifact must be stored, all must share kind, component and
//! version, and no two may be for the same arch (PROTOCOL.md, "A release
//! never holds two manifests for one arch"). The manifests' exact signed
//! bytes are copied into the campaign record.

use schemas::msg::limits::MAX_RELEASE;
use schemas::ArtifactId;

use super::error::CampaignError;
use super::record::{spec_kind, Release, ReleaseEntry};
use super::spec::Kind;
use crate::artifacts::{ArtifactError, ArtifactRecord};

/// Resolves `ids` with `lookup` (the artifact store's `get`). `kind` is the
/// spec's, checked against the artifacts'; `None` takes theirs (the
/// emergency command names no kind).
pub fn resolve(
    ids: &[ArtifactId],
    kind: Option<Kind>,
    lookup: impl Fn(&ArtifactId) -> Result<Option<ArtifactRecord>, ArtifactError>,
) -> Result<Release, CampaignError> {
    if ids.len() > MAX_RELEASE {
        return Err(CampaignError::TooManyArtifacts(ids.len()));
    }
    let mut records = Vec::with_capacity(ids.len());
    for id in ids {
        let bad = |e: ArtifactError| {
            if e.is_storage() {
                CampaignError::ArtifactStore(e)
            } else {
                CampaignError::BadArtifact(id.clone(), e)
            }
        };
        let r = lookup(id)
            .map_err(bad)?
            .ok_or_else(|| CampaignError::NoArtifact(id.clone()))?;
        let manifest = r.manifest().map_err(bad)?;
        let bytes = r.manifest_bytes().map_err(bad)?;
        records.push((r, manifest, bytes));
    }
    let Some((first, first_m, _)) = records.first() else {
        return Err(super::spec::SpecError::EmptyRelease.into());
    };
    for (r, m, _) in &records[1..] {
        let mixed = |what, va: String, vb: String| CampaignError::MixedRelease {
            a: first.artifact.clone(),
            b: r.artifact.clone(),
            what,
            va,
            vb,
        };
        if m.kind != first_m.kind {
            return Err(mixed("kind", first_m.kind.to_string(), m.kind.to_string()));
        }
        if m.component != first_m.component {
            return Err(mixed(
                "component",
                first_m.component.to_string(),
                m.component.to_string(),
            ));
        }
        if m.version != first_m.version {
            return Err(mixed("version", first_m.version.clone(), m.version.clone()));
        }
    }
    for (i, (r, m, _)) in records.iter().enumerate() {
        if let Some((other, _, _)) = records[..i].iter().find(|(_, o, _)| o.arch == m.arch) {
            return Err(CampaignError::SameArch {
                a: other.artifact.clone(),
                b: r.artifact.clone(),
                arch: m.arch.clone(),
            });
        }
    }
    let artifacts_kind = spec_kind(first_m.kind);
    if let Some(k) = kind {
        if k != artifacts_kind {
            return Err(CampaignError::KindMismatch {
                spec: k,
                artifacts: artifacts_kind,
            });
        }
    }
    Ok(Release {
        kind: artifacts_kind,
        component: first_m.component.clone(),
        version: first_m.version.clone(),
        entries: records
            .into_iter()
            .map(|(r, m, bytes)| ReleaseEntry {
                artifact: r.artifact,
                arch: m.arch,
                size: m.size,
                blocks: m.blocks,
                manifest: bytes,
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::msg::{manifest, Kind as WireKind, Manifest};
    use schemas::ComponentName;
    use std::collections::BTreeMap;

    fn record(
        id: &str,
        kind: WireKind,
        component: &str,
        version: &str,
        arch: &str,
    ) -> ArtifactRecord {
        let m = Manifest {
            artifact: ArtifactId::new(id).unwrap(),
            kind,
            component: ComponentName::new(component).unwrap(),
            version: version.into(),
            arch: arch.into(),
            size: 1000,
            sha256: [1; 32],
            block_size: 256,
            blocks: 4,
            merkle_root: [2; 32],
            created: 1,
            min_version: None,
            allow_downgrade: false,
            delta: None,
        };
        let key = schemas::keys::SigningKey::from_bytes(&[7; 32]);
        ArtifactRecord::new(&m, &manifest::sign(&m, &key), None, 1)
    }

    fn a(s: &str) -> ArtifactId {
        ArtifactId::new(s).unwrap()
    }

    fn store(records: Vec<ArtifactRecord>) -> BTreeMap<ArtifactId, ArtifactRecord> {
        records
            .into_iter()
            .map(|r| (r.artifact.clone(), r))
            .collect()
    }

    fn run(
        s: &BTreeMap<ArtifactId, ArtifactRecord>,
        ids: &[&str],
        kind: Option<Kind>,
    ) -> Result<Release, CampaignError> {
        let ids: Vec<ArtifactId> = ids.iter().map(|i| a(i)).collect();
        resolve(&ids, kind, |id| Ok(s.get(id).cloned()))
    }

    #[test]
    fn a_good_release_keeps_the_signed_bytes_in_order() {
        let s = store(vec![
            record("fw-esp32", WireKind::Firmware, "main", "2.0.0", "esp32"),
            record("fw-armv7", WireKind::Firmware, "main", "2.0.0", "armv7"),
        ]);
        let r = run(&s, &["fw-armv7", "fw-esp32"], Some(Kind::Firmware)).unwrap();
        assert_eq!(r.arches().collect::<Vec<_>>(), vec!["armv7", "esp32"]);
        assert_eq!(
            r.entries[1].manifest,
            s[&a("fw-esp32")].manifest_bytes().unwrap()
        );
        assert_eq!((r.kind, r.version.as_str()), (Kind::Firmware, "2.0.0"));
        // No kind given: the artifacts' kind.
        assert_eq!(run(&s, &["fw-esp32"], None).unwrap().kind, Kind::Firmware);
    }

    #[test]
    fn refusals_name_the_artifacts() {
        let s = store(vec![
            record("fw-esp32", WireKind::Firmware, "main", "2.0.0", "esp32"),
            record("fw-esp32-b", WireKind::Firmware, "main", "2.0.0", "esp32"),
            record("fw-armv7-old", WireKind::Firmware, "main", "1.9.0", "armv7"),
            record("app-armv7", WireKind::App, "main", "2.0.0", "armv7"),
            record("boot-armv7", WireKind::Firmware, "boot", "2.0.0", "armv7"),
        ]);
        let cases: &[(&[&str], Option<Kind>, &str)] = &[
            (&["nope"], None, "artifact nope is not stored on the bridge"),
            (&["fw-esp32", "fw-esp32-b"], None, "are both for arch esp32"),
            (
                &["fw-esp32", "fw-armv7-old"],
                None,
                "differ in version (2.0.0 vs 1.9.0)",
            ),
            (
                &["fw-esp32", "app-armv7"],
                None,
                "differ in kind (firmware vs app)",
            ),
            (
                &["fw-esp32", "boot-armv7"],
                None,
                "differ in component (main vs boot)",
            ),
            (
                &["fw-esp32"],
                Some(Kind::App),
                "kind is app but its artifacts are firmware",
            ),
        ];
        for (ids, kind, want) in cases {
            let e = run(&s, ids, *kind).unwrap_err().to_string();
            assert!(e.contains(want), "{ids:?}: {e}");
        }
        let many: Vec<String> = (0..17).map(|i| format!("x{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(matches!(
            run(&s, &many, None),
            Err(CampaignError::TooManyArtifacts(17))
        ));
    }
}
