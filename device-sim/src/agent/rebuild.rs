//! The I/O of E3 and of whole images, beside [`super::io`]'s loop: reading
//! the installed images' hashes at boot, rebuilding a delta's target
//! ([`super::event::Action::Rebuild`]) and handing the installer the image
//! to install. Blocking work: the loop runs it on the blocking pool.
//!
//! The rebuild holds the store's lock only to read the payload and to keep
//! the result, never while decompressing, so the device's connection keeps
//! being served. The target streams into the store's staging
//! ([`super::store::Staging`]): it is never held twice, and kept only once
//! `delta_zstd::apply` has checked its size and hash.

use std::sync::{Arc, Mutex};

use schemas::delta_zstd;
use schemas::{ArtifactId, ComponentName};

use super::event::{Event, ImageDigest, RebuildRequest};
use super::image::ImageSource;
use super::installer::Installer;
use super::io::lock;
use super::store::DeviceStore;

/// SHA-256 of the running image of each of `components` the installer
/// can read.
pub(super) fn installed_images<I: Installer>(
    installer: &Mutex<I>,
    components: &[ComponentName],
) -> Vec<(ComponentName, [u8; 32])> {
    components
        .iter()
        .filter_map(|c| {
            let img = lock(installer).installed(c)?;
            Some((c.clone(), *img.sha256()))
        })
        .collect()
}

/// Rebuilds `req`'s target and answers with [`Event::Rebuilt`].
pub(super) fn rebuild<S: DeviceStore, I: Installer>(
    store: &Arc<Mutex<S>>,
    installer: &Arc<Mutex<I>>,
    req: RebuildRequest,
) -> Event {
    let result = apply(store, installer, &req);
    Event::Rebuilt {
        campaign: req.campaign,
        result,
    }
}

fn apply<S: DeviceStore, I: Installer>(
    store: &Mutex<S>,
    installer: &Mutex<I>,
    req: &RebuildRequest,
) -> Result<ImageDigest, String> {
    let old = lock(installer)
        .installed(&req.component)
        .ok_or_else(|| format!("the installed image of {} cannot be read", req.component))?;
    if old.sha256() != &req.from_sha256 {
        return Err(format!(
            "the installed image of {} is no longer the delta's from_sha256",
            req.component
        ));
    }
    let payload = lock(store)
        .read_image(&req.payload)
        .map_err(|e| format!("the delta payload: {e}"))?;
    let mut staged = lock(store)
        .stage_image(&req.target, &req.target_geometry)
        .map_err(|e| e.to_string())?;
    let rebuilt = delta_zstd::apply(
        old.bytes(),
        payload.bytes(),
        req.target_geometry.size,
        &req.target_sha256,
        &mut staged,
    );
    drop(payload);
    match rebuilt {
        Ok(r) => {
            lock(store)
                .keep_image(&req.target, &req.target_geometry, staged)
                .map_err(|e| e.to_string())?;
            Ok(ImageDigest {
                size: r.size,
                sha256: r.sha256,
            })
        }
        Err(e) => {
            lock(store).drop_blocks(&req.target);
            Err(e.to_string())
        }
    }
}

/// Where the installer reads `artifact` from: the store's file, or its
/// bytes for a store that keeps none.
pub(super) fn image_source<S: DeviceStore>(store: &Mutex<S>, artifact: &ArtifactId) -> ImageSource {
    let mut s = lock(store);
    if let Some(path) = s.image_path(artifact) {
        return ImageSource::File(path);
    }
    match s.read_image(artifact) {
        Ok(b) => ImageSource::Memory(b),
        Err(e) => ImageSource::Missing(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::event::Geometry;
    use crate::agent::image::ImageBytes;
    use crate::agent::installer::MemoryInstaller;
    use crate::agent::store::{FileStore, MemoryStore, SharedImages};
    use crate::testkit::{pattern_image, TestImage};
    use schemas::msg::Kind;
    use schemas::CampaignId;
    use sha2::{Digest, Sha256};

    struct Case {
        old: Vec<u8>,
        new: Vec<u8>,
        payload: TestImage,
        target: TestImage,
    }

    fn case() -> Case {
        let old = pattern_image(30_000, 2);
        let mut new = old.clone();
        new.splice(9_000..9_000, pattern_image(2_000, 9));
        let payload = delta_zstd::make(&old, &new).unwrap();
        let mk = |id: &str, b: Vec<u8>| {
            TestImage::new(id, Kind::Firmware, "main", "1.3.0", "esp32", b, 1024).unwrap()
        };
        Case {
            payload: mk("fw.from-1.2.0", payload),
            target: mk("fw", new.clone()),
            old,
            new,
        }
    }

    fn request(c: &Case, from: &[u8]) -> RebuildRequest {
        RebuildRequest {
            campaign: CampaignId::new("c").unwrap(),
            component: ComponentName::new("main").unwrap(),
            from_sha256: Sha256::digest(from).into(),
            payload: c.payload.manifest.artifact.clone(),
            target: c.target.manifest.artifact.clone(),
            target_geometry: Geometry::of(&c.target.manifest),
            target_sha256: c.target.manifest.sha256,
        }
    }

    fn run<S: DeviceStore>(store: S, c: &Case, installed: &[u8], payload: &[u8]) -> (Event, S) {
        let store = Arc::new(Mutex::new(store));
        let g = Geometry::of(&c.payload.manifest);
        for i in 0..c.payload.blocks() {
            let r = schemas::merkle::block_range(g.size, g.block_size, i).unwrap();
            lock(&store)
                .put_block(&c.payload.manifest.artifact, &g, i, &payload[r])
                .unwrap();
        }
        let installer = MemoryInstaller::default().with_image(
            ComponentName::new("main").unwrap(),
            ImageBytes::new(installed.to_vec()),
        );
        let installer = Arc::new(Mutex::new(installer));
        let ev = rebuild(&store, &installer, request(c, installed));
        let store = Arc::try_unwrap(store).ok().unwrap().into_inner().unwrap();
        (ev, store)
    }

    fn result(ev: Event) -> Result<ImageDigest, String> {
        match ev {
            Event::Rebuilt { result, .. } => result,
            other => panic!("not a rebuild: {other:?}"),
        }
    }

    #[test]
    fn rebuilds_the_target_into_either_store() {
        let c = case();
        let target = &c.target.manifest.artifact;
        let (ev, mut s) = run(
            MemoryStore::new(SharedImages::new()),
            &c,
            &c.old,
            &c.payload.image,
        );
        assert_eq!(result(ev).unwrap().sha256, c.target.manifest.sha256);
        assert_eq!(s.read_image(target).unwrap().bytes(), &c.new[..]);
        assert!(
            matches!(image_source(&Mutex::new(s), target), ImageSource::Memory(b) if b.bytes() == &c.new[..])
        );

        let dir = tempfile::tempdir().unwrap();
        let (ev, s) = run(
            FileStore::open(dir.path()).unwrap(),
            &c,
            &c.old,
            &c.payload.image,
        );
        assert_eq!(result(ev).unwrap().size, c.new.len() as u64);
        let ImageSource::File(p) = image_source(&Mutex::new(s), target) else {
            panic!("a file store gives a path");
        };
        assert_eq!(std::fs::read(p).unwrap(), c.new);
    }

    #[test]
    fn never_keeps_what_does_not_rebuild_the_target() {
        let c = case();
        let target = &c.target.manifest.artifact;
        // Another installed image than the delta's from: refused up front.
        let other = pattern_image(30_000, 3);
        let (ev, mut s) = run(
            MemoryStore::new(SharedImages::new()),
            &c,
            &other,
            &c.payload.image,
        );
        assert!(result(ev).is_err());
        assert!(s.read_image(target).is_err());
        // A corrupt payload (its blocks stored as they came): no target.
        let mut bad = c.payload.image.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 0xff;
        let dir = tempfile::tempdir().unwrap();
        let (ev, mut s) = run(FileStore::open(dir.path()).unwrap(), &c, &c.old, &bad);
        let e = result(ev).unwrap_err();
        assert!(!e.is_empty());
        assert!(s.read_image(target).is_err(), "nothing kept");
    }
}
