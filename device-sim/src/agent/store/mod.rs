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
//!
//! An image made on the device (E3: a delta's rebuilt target) is written
//! apart ([`Staging`]: `blocks/{artifact}.img.part`, or bytes) and kept
//! once checked (renamed to `blocks/{artifact}.img`, or shared).

mod file;
mod memory;

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use schemas::bitmap::BlockSet;
use schemas::ArtifactId;

use super::event::{Geometry, ImageDigest};
use super::image::ImageBytes;
use super::state::{DeviceState, StateError};

pub use file::FileStore;
pub use memory::{MemoryStore, SharedImages};

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

/// Where block `index` of `len` bytes starts in the image, or
/// [`StoreError::OutOfRange`] when it does not fit `geometry`: one check
/// for every store.
pub(super) fn block_offset(
    artifact: &ArtifactId,
    geometry: &Geometry,
    index: u32,
    len: usize,
) -> Result<u64, StoreError> {
    let offset = geometry.offset(index);
    if index >= geometry.blocks || offset + len as u64 > geometry.size {
        return Err(StoreError::OutOfRange {
            artifact: artifact.clone(),
            index,
        });
    }
    Ok(offset)
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

    /// The whole image of `artifact` in memory (a delta payload to apply,
    /// an image for an installer that keeps bytes).
    fn read_image(&mut self, artifact: &ArtifactId) -> Result<ImageBytes, StoreError>;

    /// Where to write a whole image made on the device (a delta's rebuilt
    /// target), apart from the store: the writer holds no lock of it.
    fn stage_image(
        &mut self,
        artifact: &ArtifactId,
        geometry: &Geometry,
    ) -> Result<Staging, StoreError>;

    /// Keeps a staged image, written in full and checked, as `artifact`:
    /// [`DeviceStore::image_path`] and [`DeviceStore::read_image`] then
    /// give it.
    fn keep_image(
        &mut self,
        artifact: &ArtifactId,
        geometry: &Geometry,
        staged: Staging,
    ) -> Result<(), StoreError>;
}

/// A whole image being written, from [`DeviceStore::stage_image`].
pub enum Staging {
    /// A temporary file beside the store's images.
    File {
        /// Open for writing.
        file: File,
        /// Its path, renamed into place by [`DeviceStore::keep_image`].
        part: PathBuf,
    },
    /// Bytes for a [`MemoryStore`].
    Memory(Vec<u8>),
    /// The same image is already held (the simulator: another device
    /// rebuilt it and its hash was checked): only hash what is written.
    Held(Arc<memory::SharedImage>),
}

impl Write for Staging {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Staging::File { file, .. } => file.write(buf),
            Staging::Memory(v) => v.write(buf),
            Staging::Held(_) => Ok(buf.len()),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Staging::File { file, .. } => file.flush(),
            _ => Ok(()),
        }
    }
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::testkit::{pattern_image, TestImage};
    use schemas::msg::Kind;

    pub(crate) fn img() -> TestImage {
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

    pub(crate) fn put_all(s: &mut impl DeviceStore, t: &TestImage, range: std::ops::Range<u32>) {
        let g = Geometry::of(&t.manifest);
        for i in range {
            s.put_block(&t.manifest.artifact, &g, i, &t.block(i).unwrap().data)
                .unwrap();
        }
    }
}
