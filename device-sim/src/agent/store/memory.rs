//! [`MemoryStore`]: the simulator's storage, with image bytes held once per
//! process in [`SharedImages`] (see the parent module's doc).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use schemas::bitmap::BlockSet;
use schemas::ArtifactId;

use super::{DeviceStore, Staging, StoreError};
use crate::agent::event::{Geometry, ImageDigest};
use crate::agent::image::ImageBytes;
use crate::agent::state::DeviceState;

/// One image's bytes, shared by every simulated device that downloads it.
#[derive(Debug)]
pub struct SharedImage {
    inner: Mutex<SharedInner>,
    /// The whole image once complete and hashed; the block buffer is then
    /// released (a complete image takes no more blocks).
    whole: OnceLock<ImageBytes>,
    size: u64,
}

#[derive(Debug)]
struct SharedInner {
    data: Vec<u8>,
    have: BlockSet,
}

/// An image's name in [`SharedImages`]: its artifact id and Merkle root.
type ImageKey = (ArtifactId, [u8; 32]);

/// The images held in memory by the simulator, by (artifact, Merkle root).
/// An image is freed when the last device holding it drops it.
#[derive(Debug, Default)]
pub struct SharedImages {
    images: Mutex<HashMap<ImageKey, Weak<SharedImage>>>,
}

impl SharedImages {
    /// An empty registry.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn get(&self, artifact: &ArtifactId, g: &Geometry) -> Arc<SharedImage> {
        // A poisoned lock only means another device panicked mid-insert;
        // the map itself is still consistent.
        let mut images = self.images.lock().unwrap_or_else(|p| p.into_inner());
        let key = (artifact.clone(), g.merkle_root);
        if let Some(img) = images.get(&key).and_then(Weak::upgrade) {
            return img;
        }
        images.retain(|_, w| w.strong_count() > 0);
        let img = Arc::new(SharedImage {
            inner: Mutex::new(SharedInner {
                data: Vec::new(),
                have: BlockSet::new(g.blocks),
            }),
            whole: OnceLock::new(),
            size: g.size,
        });
        images.insert(key, Arc::downgrade(&img));
        img
    }

    /// Images alive now and their bytes.
    pub fn usage(&self) -> (usize, u64) {
        let images = self.images.lock().unwrap_or_else(|p| p.into_inner());
        let alive: Vec<_> = images.values().filter_map(Weak::upgrade).collect();
        (alive.len(), alive.iter().map(|i| i.size).sum())
    }
}

/// A simulated device's storage: see the module doc.
#[derive(Debug)]
pub struct MemoryStore {
    state: Option<Vec<u8>>,
    bits: HashMap<ArtifactId, (BlockSet, Arc<SharedImage>)>,
    shared: Arc<SharedImages>,
}

impl MemoryStore {
    /// An empty store backed by `shared` image memory.
    pub fn new(shared: Arc<SharedImages>) -> Self {
        Self {
            state: None,
            bits: HashMap::new(),
            shared,
        }
    }

    /// The saved state, decoded (for tests and the simulator's counters).
    pub fn saved(&self) -> Option<DeviceState> {
        self.state
            .as_deref()
            .and_then(|b| DeviceState::from_json(b).ok())
    }
}

impl DeviceStore for MemoryStore {
    const BLOCKING: bool = false;

    fn load_state(&mut self) -> Result<Option<DeviceState>, StoreError> {
        Ok(match &self.state {
            Some(b) => Some(DeviceState::from_json(b)?),
            None => None,
        })
    }

    fn save_state(&mut self, state: &DeviceState) -> Result<(), StoreError> {
        self.state = Some(serde_json::to_vec(state).unwrap_or_default());
        Ok(())
    }

    fn load_blocks(&mut self, artifact: &ArtifactId, geometry: &Geometry) -> Option<BlockSet> {
        self.bits
            .get(artifact)
            .filter(|(b, img)| b.len() == geometry.blocks && img.size == geometry.size)
            .map(|(b, _)| b.clone())
    }

    fn put_block(
        &mut self,
        artifact: &ArtifactId,
        geometry: &Geometry,
        index: u32,
        data: &[u8],
    ) -> Result<(), StoreError> {
        let offset = super::block_offset(artifact, geometry, index, data.len())?;
        let end = offset + data.len() as u64;
        let shared = &self.shared;
        let (bits, img) = self.bits.entry(artifact.clone()).or_insert_with(|| {
            (
                BlockSet::new(geometry.blocks),
                shared.get(artifact, geometry),
            )
        });
        {
            let mut inner = img.inner.lock().unwrap_or_else(|p| p.into_inner());
            if !inner.have.contains(index) {
                if inner.data.is_empty() {
                    // usize holds any image size this process can allocate.
                    inner.data = vec![0; geometry.size as usize];
                }
                // Another device's manifest named the same image with another
                // size: refuse rather than index out of bounds.
                let Some(dst) = inner.data.get_mut(offset as usize..end as usize) else {
                    return Err(StoreError::OutOfRange {
                        artifact: artifact.clone(),
                        index,
                    });
                };
                dst.copy_from_slice(data);
                inner.have.insert(index);
            }
        }
        bits.insert(index);
        Ok(())
    }

    fn digest(
        &mut self,
        artifact: &ArtifactId,
        _geometry: &Geometry,
    ) -> Result<ImageDigest, StoreError> {
        let (bits, img) = self
            .bits
            .get(artifact)
            .ok_or_else(|| StoreError::Incomplete(artifact.clone()))?;
        if !bits.is_complete() {
            return Err(StoreError::Incomplete(artifact.clone()));
        }
        let sha256 = *img.whole().sha256();
        Ok(ImageDigest {
            size: img.size,
            sha256,
        })
    }

    fn image_path(&self, _artifact: &ArtifactId) -> Option<PathBuf> {
        None
    }

    fn drop_blocks(&mut self, artifact: &ArtifactId) {
        self.bits.remove(artifact);
    }

    fn read_image(&mut self, artifact: &ArtifactId) -> Result<ImageBytes, StoreError> {
        match self.bits.get(artifact) {
            Some((bits, img)) if bits.is_complete() => Ok(img.whole().clone()),
            _ => Err(StoreError::Incomplete(artifact.clone())),
        }
    }

    fn stage_image(
        &mut self,
        artifact: &ArtifactId,
        geometry: &Geometry,
    ) -> Result<Staging, StoreError> {
        let img = self.shared.get(artifact, geometry);
        let complete = img
            .inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .have
            .is_complete();
        Ok(if complete {
            Staging::Held(img)
        } else {
            // usize holds any image size this process can allocate.
            Staging::Memory(Vec::with_capacity(geometry.size as usize))
        })
    }

    fn keep_image(
        &mut self,
        artifact: &ArtifactId,
        geometry: &Geometry,
        staged: Staging,
    ) -> Result<(), StoreError> {
        let img = match staged {
            Staging::Held(img) => img,
            Staging::Memory(data) if data.len() as u64 == geometry.size => {
                let img = self.shared.get(artifact, geometry);
                {
                    let mut inner = img.inner.lock().unwrap_or_else(|p| p.into_inner());
                    if !inner.have.is_complete() {
                        inner.data = data;
                        inner.have = complete_set(geometry.blocks);
                    }
                }
                img
            }
            _ => return Err(StoreError::Incomplete(artifact.clone())),
        };
        self.bits
            .insert(artifact.clone(), (complete_set(geometry.blocks), img));
        Ok(())
    }
}

fn complete_set(blocks: u32) -> BlockSet {
    let mut set = BlockSet::new(blocks);
    for i in 0..blocks {
        set.insert(i);
    }
    set
}

impl SharedImage {
    /// The whole image (call only once every block is in).
    fn whole(&self) -> &ImageBytes {
        self.whole.get_or_init(|| {
            let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            ImageBytes::new(std::mem::take(&mut inner.data))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::store::tests::{img, put_all};

    #[test]
    fn memory_stores_share_one_copy_of_an_image() {
        let shared = SharedImages::new();
        let t = img();
        let g = Geometry::of(&t.manifest);
        let a = &t.manifest.artifact;
        let mut s1 = MemoryStore::new(shared.clone());
        let mut s2 = MemoryStore::new(shared.clone());
        put_all(&mut s1, &t, 0..3);
        put_all(&mut s2, &t, 0..2);
        assert_eq!(shared.usage(), (1, 10_000));
        assert!(s2.digest(a, &g).is_err(), "s2 lacks a block");
        assert_eq!(s1.digest(a, &g).unwrap().sha256, t.manifest.sha256);
        assert_eq!(s2.load_blocks(a, &g).unwrap().count(), 2);
        s1.drop_blocks(a);
        s2.drop_blocks(a);
        assert_eq!(shared.usage(), (0, 0));
    }
}
