//! [`Encoder`]: from (artifact, index) to the bytes of a Block message with
//! its Merkle proof. It keeps the Merkle tree and open file of recently
//! served artifacts and an LRU of encoded blocks. Everything here blocks
//! (file reads; loading an artifact hashes its whole image): the worker
//! runs it with `spawn_blocking`, one window's batch at a time.
//!
//! Loading checks the image against the stored manifest's Merkle root, and
//! every block read is checked against its leaf, so a damaged file is
//! never served (devices would drop such blocks and ask forever).

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;

use bytes::Bytes;
use schemas::merkle::{block_range, leaf_hash, MerkleTree};
use schemas::msg::{Block, WireMessage};
use schemas::ArtifactId;

use crate::artifacts::{ArtifactError, ArtifactRecord, ArtifactStore};

use super::cache::BlockCache;

/// An artifact ready to serve.
struct Loaded {
    record: ArtifactRecord,
    tree: MerkleTree,
    file: File,
    last_used: u64,
}

/// Encodes blocks; owned by the worker, used on blocking threads.
pub struct Encoder {
    store: ArtifactStore,
    loaded: HashMap<ArtifactId, Loaded>,
    max_loaded: usize,
    cache: BlockCache,
    tick: u64,
}

impl Encoder {
    /// An encoder keeping at most `max_loaded` artifacts and `cache_bytes`
    /// of encoded blocks.
    pub fn new(store: ArtifactStore, max_loaded: usize, cache_bytes: usize) -> Self {
        Self {
            store,
            loaded: HashMap::new(),
            max_loaded: max_loaded.max(1),
            cache: BlockCache::new(cache_bytes),
            tick: 0,
        }
    }

    /// Forgets an artifact (deleted or replaced).
    pub fn forget(&mut self, artifact: &ArtifactId) {
        self.loaded.remove(artifact);
        self.cache.remove_artifact(artifact);
    }

    /// Forgets `artifact` if the store no longer holds the version this
    /// encoder loaded (deleted, or deleted and pushed again under the same
    /// id): the deletion event may have been missed. One index read.
    pub fn revalidate(&mut self, artifact: &ArtifactId) {
        let Some(loaded) = self.loaded.get(artifact) else {
            return;
        };
        let same = matches!(
            self.store.get(artifact),
            Ok(Some(r)) if r.sha256 == loaded.record.sha256 && r.merkle_root == loaded.record.merkle_root
        );
        if !same {
            self.forget(artifact);
        }
    }

    /// The encoded Block `index` of `artifact`. Blocks.
    pub fn encode(&mut self, artifact: &ArtifactId, index: u32) -> Result<Bytes, ArtifactError> {
        if let Some(b) = self.cache.get(artifact, index) {
            return Ok(b);
        }
        self.tick += 1;
        let tick = self.tick;
        let loaded = self.load(artifact)?;
        loaded.last_used = tick;
        let r = &loaded.record;
        let corrupt = |reason: String| ArtifactError::Corrupt {
            id: artifact.to_string(),
            reason,
        };
        let range = block_range(r.size, r.block_size, index).ok_or_else(|| {
            corrupt(format!(
                "block {index} is past the end ({} blocks)",
                r.blocks
            ))
        })?;
        let mut data = vec![0u8; range.len()];
        loaded
            .file
            .read_exact_at(&mut data, range.start as u64)
            .map_err(|e| corrupt(format!("reading block {index}: {e}")))?;
        if loaded.tree.leaf(index) != Some(leaf_hash(&data)) {
            let e = corrupt(format!(
                "block {index} no longer matches its hash: the image file is damaged"
            ));
            self.forget(artifact);
            return Err(e);
        }
        let proof = loaded
            .tree
            .proof(index)
            .ok_or_else(|| corrupt(format!("no proof for block {index}")))?;
        let bytes = Bytes::from(
            Block {
                artifact: artifact.clone(),
                index,
                data,
                proof,
            }
            .encode(),
        );
        self.cache.insert(artifact, index, bytes.clone());
        Ok(bytes)
    }

    /// The loaded artifact, loading it (and evicting the least recently
    /// used one) if needed.
    fn load(&mut self, artifact: &ArtifactId) -> Result<&mut Loaded, ArtifactError> {
        if !self.loaded.contains_key(artifact) {
            let record = self
                .store
                .get(artifact)?
                .ok_or_else(|| ArtifactError::NotFound(artifact.clone()))?;
            let image = self.store.read_image(&record)?;
            let corrupt = |reason: String| ArtifactError::Corrupt {
                id: artifact.to_string(),
                reason,
            };
            if image.len() as u64 != record.size {
                return Err(corrupt(format!(
                    "the image file has {} bytes, the manifest says {}",
                    image.len(),
                    record.size
                )));
            }
            let tree =
                MerkleTree::build(&image, record.block_size).map_err(|e| corrupt(e.to_string()))?;
            if tree.root() != record.root()? {
                return Err(corrupt(
                    "the image file no longer matches its Merkle root: it is damaged".into(),
                ));
            }
            drop(image);
            let file = self.store.open_image(&record)?;
            while self.loaded.len() >= self.max_loaded {
                let Some(oldest) = self
                    .loaded
                    .iter()
                    .min_by_key(|(_, l)| l.last_used)
                    .map(|(id, _)| id.clone())
                else {
                    break;
                };
                self.loaded.remove(&oldest);
            }
            tracing::debug!(artifact = %artifact, blocks = record.blocks, "artifact loaded for serving");
            self.loaded.insert(
                artifact.clone(),
                Loaded {
                    record,
                    tree,
                    file,
                    last_used: self.tick,
                },
            );
        }
        self.loaded
            .get_mut(artifact)
            .ok_or_else(|| ArtifactError::NotFound(artifact.clone()))
    }
}
