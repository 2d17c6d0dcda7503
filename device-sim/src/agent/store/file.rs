//! [`FileStore`]: a device's state directory on disk (see the parent
//! module's doc for the layout and its durability rules).

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use schemas::bitmap::BlockSet;
use schemas::ArtifactId;
use sha2::{Digest, Sha256};

use super::{io, DeviceStore, Staging, StoreError};
use crate::agent::event::{Geometry, ImageDigest};
use crate::agent::image::ImageBytes;
use crate::agent::state::DeviceState;

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

    fn part_path(&self, artifact: &ArtifactId) -> PathBuf {
        self.dir.join("blocks").join(format!("{artifact}.img.part"))
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
        let offset = super::block_offset(artifact, geometry, index, data.len())?;
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
        let _ = fs::remove_file(self.part_path(artifact));
    }

    fn read_image(&mut self, artifact: &ArtifactId) -> Result<ImageBytes, StoreError> {
        let path = self.img_path(artifact);
        let bytes = fs::read(&path).map_err(io("reading", &path))?;
        Ok(ImageBytes::new(bytes))
    }

    fn stage_image(
        &mut self,
        artifact: &ArtifactId,
        _geometry: &Geometry,
    ) -> Result<Staging, StoreError> {
        self.open.remove(artifact);
        let part = self.part_path(artifact);
        let file = File::create(&part).map_err(io("creating", &part))?;
        Ok(Staging::File { file, part })
    }

    fn keep_image(
        &mut self,
        artifact: &ArtifactId,
        _geometry: &Geometry,
        staged: Staging,
    ) -> Result<(), StoreError> {
        let Staging::File { file, part } = staged else {
            return Err(StoreError::Incomplete(artifact.clone()));
        };
        file.sync_all().map_err(io("syncing", &part))?;
        drop(file);
        let path = self.img_path(artifact);
        fs::rename(&part, &path).map_err(io("renaming", &path))?;
        // No bitmap: the image was not downloaded block by block.
        let _ = fs::remove_file(self.bits_path(artifact));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::store::tests::{img, put_all};

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
}
