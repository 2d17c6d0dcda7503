//! Whole images as the I/O side handles them: an image's bytes with their
//! SHA-256 ([`ImageBytes`], cheap to clone and shared by every simulated
//! device that holds the same image), and where an installer reads a new
//! image from ([`ImageSource`]).
//!
//! E3 needs the installed image itself: its hash picks a delta
//! (`from_sha256`) and its bytes are the reference the delta payload is
//! decompressed against.

use std::path::PathBuf;
use std::sync::Arc;

use sha2::{Digest, Sha256};

/// An image's bytes and their SHA-256.
#[derive(Clone)]
pub struct ImageBytes {
    bytes: Arc<[u8]>,
    sha256: [u8; 32],
}

impl ImageBytes {
    /// Hashes `bytes` (call it off the runtime threads for large images).
    pub fn new(bytes: impl Into<Arc<[u8]>>) -> Self {
        let bytes = bytes.into();
        let sha256 = Sha256::digest(&bytes).into();
        Self { bytes, sha256 }
    }

    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Their SHA-256.
    pub fn sha256(&self) -> &[u8; 32] {
        &self.sha256
    }

    /// Their length.
    pub fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// True for an empty image (never a valid one).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

impl std::fmt::Debug for ImageBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageBytes")
            .field("len", &self.bytes.len())
            .field("sha256", &hex::encode(self.sha256))
            .finish()
    }
}

/// Where the image to install is: a file of the state directory (a real
/// device's [`FileStore`](super::FileStore)), or bytes in memory (the
/// simulator's [`MemoryStore`](super::MemoryStore)).
#[derive(Debug, Clone)]
pub enum ImageSource {
    /// A file holding the whole, checked image.
    File(PathBuf),
    /// The whole, checked image.
    Memory(ImageBytes),
    /// The store could not produce it: why.
    Missing(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_once_and_shares_the_bytes() {
        let a = ImageBytes::new(vec![1u8, 2, 3]);
        let b = a.clone();
        assert_eq!(a.sha256(), &<[u8; 32]>::from(Sha256::digest([1u8, 2, 3])));
        assert_eq!(b.bytes().as_ptr(), a.bytes().as_ptr());
        assert_eq!(a.len(), 3);
    }
}
