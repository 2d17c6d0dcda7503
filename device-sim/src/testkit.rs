//! Signed releases and blocks for tests, the simulator's own checks and
//! demos: build an image's manifest and Merkle tree, sign it, cut blocks
//! with their proofs. The same work the bridge does, done with `schemas`
//! only, so a device can be exercised without a bridge.

use schemas::keys::SigningKey;
use schemas::merkle::{block_range, MerkleTree};
use schemas::msg::{manifest, Announcement, Block, CampaignState, Kind, Manifest};
use schemas::{ArtifactId, CampaignId, ComponentName};
use sha2::{Digest, Sha256};

/// Why a test image could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TestkitError {
    /// A name outside the alphabet.
    #[error(transparent)]
    Name(#[from] schemas::NameError),
    /// An empty image or a bad block size.
    #[error(transparent)]
    Merkle(#[from] schemas::merkle::MerkleError),
}

/// An image with its manifest and Merkle tree.
#[derive(Debug, Clone)]
pub struct TestImage {
    /// The bytes.
    pub image: Vec<u8>,
    /// The manifest (unsigned).
    pub manifest: Manifest,
    tree: MerkleTree,
}

impl TestImage {
    /// Builds the manifest and tree of `image`.
    pub fn new(
        artifact: &str,
        kind: Kind,
        component: &str,
        version: &str,
        arch: &str,
        image: Vec<u8>,
        block_size: u32,
    ) -> Result<Self, TestkitError> {
        let tree = MerkleTree::build(&image, block_size)?;
        let manifest = Manifest {
            artifact: ArtifactId::new(artifact)?,
            kind,
            component: ComponentName::new(component)?,
            version: version.into(),
            arch: arch.into(),
            size: image.len() as u64,
            sha256: Sha256::digest(&image).into(),
            block_size,
            blocks: tree.blocks(),
            merkle_root: tree.root(),
            created: 1_790_000_000,
            min_version: None,
            allow_downgrade: false,
            delta: None,
        };
        Ok(Self {
            image,
            manifest,
            tree,
        })
    }

    /// The release entry: the manifest signed with `key`.
    pub fn envelope(&self, key: &SigningKey) -> Vec<u8> {
        manifest::sign(&self.manifest, key)
    }

    /// Block `index` with its proof, or `None` past the end.
    pub fn block(&self, index: u32) -> Option<Block> {
        let range = block_range(self.manifest.size, self.manifest.block_size, index)?;
        Some(Block {
            artifact: self.manifest.artifact.clone(),
            index,
            data: self.image.get(range)?.to_vec(),
            proof: self.tree.proof(index)?,
        })
    }

    /// Blocks in the image.
    pub fn blocks(&self) -> u32 {
        self.manifest.blocks
    }
}

/// `len` bytes of a pattern that differs with `seed`.
pub fn pattern_image(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (i as u8)
                .wrapping_mul(31)
                .wrapping_add(seed)
                .rotate_left((i % 7) as u32)
        })
        .collect()
}

/// An announcement of `release` for everyone (`cohort` 10000), active.
pub fn announcement(
    campaign: &str,
    kind: Kind,
    release: Vec<Vec<u8>>,
) -> Result<Announcement, TestkitError> {
    Ok(Announcement {
        campaign: CampaignId::new(campaign)?,
        kind,
        release,
        cohort: 10_000,
        emergency: false,
        state: CampaignState::Active,
        deadline: None,
        deltas: Vec::new(),
    })
}
