//! Where a device keeps what survives a restart: its [`DeviceState`] and the
//! verified blocks (with their bitmap) of partial downloads.
//!
//! - [`FileStore`]: a state directory, for a real device. `state.json` is
//!   written to a temp file, synced and renamed; each artifact has one
//!   preallocated image file (`blocks/{artifact}.img`, block `i` at
//!   `i * block_size`) and its bitmap (`blocks/{artifact}.bits`). A block's
//!   data is synced before its bit is written, so a set bit always names
//!   data that is on disk; a bit lost to a power cut only costs a re-download.
//! - [`MemoryStore`]: for the simulator. The state is kept as saved bytes;
//!   each device keeps only its own bitmap, and the data of an image lives
//!   once per process in [`SharedImages`] (blocks verified against the same
//!   Merkle root are the same bytes whichever device verified them), so
//!   10,000 devices downloading one image hold one copy of it.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use schemas::bitmap::BlockSet;
use schemas::ArtifactId;
use sha2::{Digest, Sha256};

use super::event::{Geometry, ImageDigest};
use super::state::{DeviceState, StateError};

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file could not be read or written.
    #[error("{what} {path}: {source}; check the state directory's permissions and free space")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Which file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The saved state is unreadable.
    #[error(transparent)]
    State(#[from] StateError),
    /// An image was asked for before all its blocks were kept.
    #[error("image {0} is not complete in the store")]
    Incomplete(ArtifactId),
    /// A block does not fit the image's geometry.
    #[error("block {index} does not fit image {artifact}")]
    OutOfRange {
        /// The artifact.
        artifact: ArtifactId,
        /// The block.
        index: u32,
    },
}

/// A device's persistent storage. Methods may block (files): the I/O loop
/// calls them off the runtime threads when [`DeviceStore::BLOCKING`] is true.
pub trait DeviceStore: Send + 'static {
    /// True when calls touch the disk.
    const BLOCKING: bool;

    /// The saved state, or `None` on a first boot.
    fn load_state(&mut self) -> Result<Option<DeviceState>, StoreError>;

    /// Saves the state durably.
    fn save_state(&mut self, state: &DeviceState) -> Result<(), StoreError>;

    /// The verified blocks kept for `artifact`, if any.
    fn load_blocks(&mut self, artifact: &ArtifactId, geometry: &Geometry) -> Option<BlockSet>;

    /// Keeps a verified block and sets its bit.
    fn put_block(
        &mut self,
        artifact: &ArtifactId,
        geometry: &Geometry,
        index: u32,
        data: &[u8],
    ) -> Result<(), StoreError>;

    /// Size and SHA-256 of the assembled image.
    fn digest(
        &mut self,
        artifact: &ArtifactId,
        geometry: &Geometry,
    ) -> Result<ImageDigest, StoreError>;

    /// Where the assembled image is, for an installer that reads files.
    fn image_path(&self, artifact: &ArtifactId) -> Option<PathBuf>;

    /// Forgets an artifact's blocks.
    fn drop_blocks(&mut self, artifact: &ArtifactId);
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Open files of one artifact in a [`FileStore`].
struct OpenImage {
    img: File,
    bits_file: File,
    bits: BlockSet,
}

/// A state directory on disk. See the module doc.
pub struct FileStore {
    dir: PathBuf,
    sync_blocks: bool,
    open: HashMap<ArtifactId, OpenImage>,
}

impl FileStore {
    /// A store in `dir` (created if missing).
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let dir = dir.into();
        let blocks = dir.join("blocks");
        fs::create_dir_all(&blocks).map_err(io("creating", &blocks))?;
        Ok(Self {
            dir,
            sync_blocks: true,
            open: HashMap::new(),
        })
    }

    /// Whether each block's data is synced before its bit is written
    /// (default true; false trades power-loss safety for speed).
    pub fn sync_blocks(mut self, on: bool) -> Self {
        self.sync_blocks = on;
        self
    }

    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn state_path(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    fn img_path(&self, artifact: &ArtifactId) -> PathBuf {
        self.dir.join("blocks").join(format!("{artifact}.img"))
    }

    fn bits_path(&self, artifact: &ArtifactId) -> PathBuf {
        self.dir.join("blocks").join(format!("{artifact}.bits"))
    }

    /// Reads the bitmap kept for `artifact` (a missing or odd file: none).
    pub fn read_bits(&self, artifact: &ArtifactId, blocks: u32) -> Option<BlockSet> {
        let bytes = fs::read(self.bits_path(artifact)).ok()?;
        BlockSet::from_bytes(blocks, &bytes).ok()
    }

    fn open_image(
        &mut self,
        artifact: &ArtifactId,
        g: &Geometry,
    ) -> Result<&mut OpenImage, StoreError> {
        if !self.open.contains_key(artifact) {
            let img_path = self.img_path(artifact);
            let bits_path = self.bits_path(artifact);
            let img = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&img_path)
                .map_err(io("opening", &img_path))?;
            // Preallocate: the file is the image, block i at i * block_size.
            if img.metadata().map_err(io("reading", &img_path))?.len() != g.size {
                img.set_len(g.size).map_err(io("sizing", &img_path))?;
            }
            let bits = self
                .read_bits(artifact, g.blocks)
                .unwrap_or_else(|| BlockSet::new(g.blocks));
            let bits_file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&bits_path)
                .map_err(io("opening", &bits_path))?;
            bits_file
                .set_len(bits.as_bytes().len() as u64)
                .map_err(io("sizing", &bits_path))?;
            bits_file
                .write_all_at(bits.as_bytes(), 0)
                .map_err(io("writing", &bits_path))?;
            self.open.insert(
                artifact.clone(),
                OpenImage {
                    img,
                    bits_file,
                    bits,
                },
            );
        }
        self.open
            .get_mut(artifact)
            .ok_or_else(|| StoreError::Incomplete(artifact.clone()))
    }
}

impl DeviceStore for FileStore {
    const BLOCKING: bool = true;

    fn load_state(&mut self) -> Result<Option<DeviceState>, StoreError> {
        let path = self.state_path();
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(DeviceState::from_json(&bytes)?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io("reading", &path)(e)),
        }
    }

    fn save_state(&mut self, state: &DeviceState) -> Result<(), StoreError> {
        // Blocks first: a saved state never names blocks that are not kept.
        for (artifact, o) in &self.open {
            let p = self.dir.join("blocks").join(format!("{artifact}.bits"));
            o.bits_file.sync_data().map_err(io("syncing", &p))?;
        }
        let path = self.state_path();
        let tmp = self.dir.join("state.json.tmp");
        let mut f = File::create(&tmp).map_err(io("creating", &tmp))?;
        f.write_all(&state.to_json()).map_err(io("writing", &tmp))?;
        f.sync_all().map_err(io("syncing", &tmp))?;
        fs::rename(&tmp, &path).map_err(io("renaming", &path))?;
        // The rename is durable once the directory is.
        if let Ok(d) = File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    fn load_blocks(&mut self, artifact: &ArtifactId, geometry: &Geometry) -> Option<BlockSet> {
        let img = self.img_path(artifact);
        // Bits without their image file name nothing.
        if fs::metadata(&img).ok()?.len() != geometry.size {
            return None;
        }
        self.read_bits(artifact, geometry.blocks)
    }

    fn put_block(
        &mut self,
        artifact: &ArtifactId,
        geometry: &Geometry,
        index: u32,
        data: &[u8],
    ) -> Result<(), StoreError> {
        let offset = geometry.offset(index);
        if index >= geometry.blocks || offset + data.len() as u64 > geometry.size {
            return Err(StoreError::OutOfRange {
                artifact: artifact.clone(),
                index,
            });
        }
        let sync = self.sync_blocks;
        let img_path = self.img_path(artifact);
        let bits_path = self.bits_path(artifact);
        let o = self.open_image(artifact, geometry)?;
        o.img
            .write_all_at(data, offset)
            .map_err(io("writing", &img_path))?;
        if sync {
            o.img.sync_data().map_err(io("syncing", &img_path))?;
        }
        o.bits.insert(index);
        let byte = index as usize / 8;
        let b = o.bits.as_bytes().get(byte).copied().unwrap_or(0);
        o.bits_file
            .write_all_at(&[b], byte as u64)
            .map_err(io("writing", &bits_path))?;
        Ok(())
    }

    fn digest(
        &mut self,
        artifact: &ArtifactId,
        _geometry: &Geometry,
    ) -> Result<ImageDigest, StoreError> {
        let path = self.img_path(artifact);
        let mut f = File::open(&path).map_err(io("opening", &path))?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut size = 0u64;
        loop {
            let n = f.read(&mut buf).map_err(io("reading", &path))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            size += n as u64;
        }
        Ok(ImageDigest {
            size,
            sha256: h.finalize().into(),
        })
    }

    fn image_path(&self, artifact: &ArtifactId) -> Option<PathBuf> {
        Some(self.img_path(artifact))
    }

    fn drop_blocks(&mut self, artifact: &ArtifactId) {
        self.open.remove(artifact);
        let _ = fs::remove_file(self.img_path(artifact));
        let _ = fs::remove_file(self.bits_path(artifact));
    }
}

/// One image's bytes, shared by every simulated device that downloads it.
#[derive(Debug)]
pub struct SharedImage {
    inner: Mutex<SharedInner>,
    digest: OnceLock<[u8; 32]>,
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
            digest: OnceLock::new(),
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
        let offset = geometry.offset(index);
        let end = offset + data.len() as u64;
        if index >= geometry.blocks || end > geometry.size {
            return Err(StoreError::OutOfRange {
                artifact: artifact.clone(),
                index,
            });
        }
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
        let sha256 = *img.digest.get_or_init(|| {
            let inner = img.inner.lock().unwrap_or_else(|p| p.into_inner());
            Sha256::digest(&inner.data).into()
        });
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{pattern_image, TestImage};
    use schemas::msg::Kind;

    fn img() -> TestImage {
        TestImage::new(
            "fw-1",
            Kind::Firmware,
            "main",
            "1.3.0",
            "esp32",
            pattern_image(10_000, 4),
            4096,
        )
        .unwrap()
    }

    fn put_all(s: &mut impl DeviceStore, t: &TestImage, range: std::ops::Range<u32>) {
        let g = Geometry::of(&t.manifest);
        for i in range {
            s.put_block(&t.manifest.artifact, &g, i, &t.block(i).unwrap().data)
                .unwrap();
        }
    }

    #[test]
    fn file_store_keeps_state_and_blocks_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let t = img();
        let g = Geometry::of(&t.manifest);
        let a = &t.manifest.artifact;
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(1);
        let state = DeviceState::fresh(Default::default(), 42, &mut rng);
        {
            let mut s = FileStore::open(dir.path()).unwrap();
            assert!(s.load_state().unwrap().is_none());
            s.save_state(&state).unwrap();
            put_all(&mut s, &t, 1..3);
        }
        let mut s = FileStore::open(dir.path()).unwrap();
        assert_eq!(s.load_state().unwrap().unwrap(), state);
        let have = s.load_blocks(a, &g).unwrap();
        assert_eq!(have.iter().collect::<Vec<_>>(), [1, 2]);
        put_all(&mut s, &t, 0..1);
        let d = s.digest(a, &g).unwrap();
        assert_eq!(d.size, 10_000);
        assert_eq!(d.sha256, t.manifest.sha256);
        assert_eq!(fs::read(s.image_path(a).unwrap()).unwrap(), t.image);
        s.drop_blocks(a);
        assert!(s.load_blocks(a, &g).is_none());
        // A block past the image is refused.
        assert!(matches!(
            s.put_block(a, &g, 3, &[0; 10]),
            Err(StoreError::OutOfRange { .. })
        ));
    }

    #[test]
    fn a_corrupt_state_file_is_an_error_that_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("state.json"), b"{not json").unwrap();
        let mut s = FileStore::open(dir.path()).unwrap();
        let e = s.load_state().unwrap_err().to_string();
        assert!(e.contains("remove it"), "{e}");
    }

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
