//! Resolving a campaign's release against the artifact store at create:
//! every artifact must be stored, all must share kind, component and
//! version, and no two may be for the same arch (PROTOCOL.md, "A release
//! never holds two manifests for one arch"). The manifests' exact signed
//! bytes are copied into the campaign record.

use schemas::msg::delta::check_against;
use schemas::msg::limits::{MAX_DELTAS, MAX_RELEASE};
use schemas::msg::WireMessage;
use schemas::ArtifactId;

use super::error::CampaignError;
use super::record::{spec_kind, DeltaEntry, Release, ReleaseEntry};
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
        if let Some(d) = &manifest.delta {
            return Err(CampaignError::DeltaInRelease(
                id.clone(),
                d.from_version.clone(),
            ));
        }
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
        deltas: Vec::new(),
    })
}

/// Adds to `release` the pushed deltas of its entries (E3): every stored
/// delta that goes with an entry (`check_against`: same kind, component,
/// version and arch, its target the entry's image), at most one per arch
/// and from_version, newest first, at most `MAX_DELTAS` in all. Artifacts
/// that cannot be read are skipped: a delta never blocks a campaign.
pub fn attach_deltas(release: &mut Release, stored: Vec<ArtifactRecord>) {
    let mut found: Vec<(u64, DeltaEntry)> = Vec::new();
    let fulls: Vec<(ArtifactId, schemas::msg::Manifest)> = release
        .entries
        .iter()
        .filter_map(|e| {
            let payload = schemas::cose::peek_payload(&e.manifest)?;
            let m = schemas::msg::Manifest::decode(&payload).ok()?;
            Some((e.artifact.clone(), m))
        })
        .collect();
    for r in stored {
        let (Ok(m), Ok(bytes)) = (r.manifest(), r.manifest_bytes()) else {
            continue;
        };
        let Some(d) = &m.delta else { continue };
        let Some((target, _)) = fulls.iter().find(|(_, f)| check_against(&m, f).is_ok()) else {
            continue;
        };
        let entry = DeltaEntry {
            artifact: r.artifact.clone(),
            arch: m.arch.clone(),
            from_version: d.from_version.clone(),
            size: m.size,
            blocks: m.blocks,
            target: target.clone(),
            manifest: bytes,
        };
        match found
            .iter_mut()
            .find(|(_, e)| e.arch == entry.arch && e.from_version == entry.from_version)
        {
            Some(slot) if slot.0 < m.created => *slot = (m.created, entry),
            Some(_) => {}
            None => found.push((m.created, entry)),
        }
    }
    found.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.artifact.cmp(&b.1.artifact)));
    found.truncate(MAX_DELTAS);
    release.deltas = found.into_iter().map(|(_, e)| e).collect();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::artifact as a;
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

    /// A delta of `full` from `from`, created at `created`.
    fn delta(id: &str, full: &ArtifactRecord, from: &str, created: u64) -> ArtifactRecord {
        let f = full.manifest().unwrap();
        let m = schemas::release::build_delta_manifest(&[9; 300], &f, from, [4; 32], Some(a(id)));
        let mut m = m.unwrap();
        m.created = created;
        let key = schemas::keys::SigningKey::from_bytes(&[7; 32]);
        ArtifactRecord::new(&m, &manifest::sign(&m, &key), None, 1)
    }

    #[test]
    fn pushed_deltas_join_their_release() {
        let esp = record("fw-esp32", WireKind::Firmware, "main", "2.0.0", "esp32");
        let arm = record("fw-armv7", WireKind::Firmware, "main", "2.0.0", "armv7");
        let other = record("fw-old", WireKind::Firmware, "main", "1.9.0", "esp32");
        let stored = vec![
            esp.clone(),
            arm.clone(),
            delta("d-esp-1.0", &esp, "1.0.0", 5),
            delta("d-esp-1.0-old", &esp, "1.0.0", 2),
            delta("d-esp-1.1", &esp, "1.1.0", 4),
            delta("d-arm-1.0", &arm, "1.0.0", 3),
            delta("d-other", &other, "1.0.0", 9),
        ];
        let s = store(stored.clone());
        // Only esp32 in the release: arm's and the other version's deltas stay out.
        let mut r = run(&s, &["fw-esp32"], None).unwrap();
        attach_deltas(&mut r, stored.clone());
        let ids: Vec<&str> = r.deltas.iter().map(|d| d.artifact.as_str()).collect();
        assert_eq!(ids, vec!["d-esp-1.0", "d-esp-1.1"]);
        assert_eq!(r.deltas[0].target, a("fw-esp32"));
        assert_eq!(
            r.delta_manifests()[0],
            s[&a("d-esp-1.0")].manifest_bytes().unwrap()
        );
        assert!(r.artifacts().any(|x| x == &a("d-esp-1.1")));
        let mut r = run(&s, &["fw-esp32", "fw-armv7"], None).unwrap();
        attach_deltas(&mut r, stored);
        assert_eq!(r.deltas.len(), 3);
        // A delta named in the release is refused, with what to do.
        let e = run(&s, &["d-esp-1.0"], None).unwrap_err().to_string();
        assert!(e.contains("is a delta (from 1.0.0)"), "{e}");
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
