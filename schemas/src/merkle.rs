//! The block Merkle tree: PROTOCOL.md "Block integrity".
//!
//! An image is cut into `block_size` pieces (the last may be shorter). Each
//! block is a leaf, `leaf(i) = SHA-256(0x00 ‖ block_i)`; inner nodes are
//! `node(l, r) = SHA-256(0x01 ‖ l ‖ r)`. Each level pairs nodes left to
//! right, and a last node without a partner moves up unchanged (it is not
//! hashed with itself). The root of a one-block image is its leaf.
//!
//! A Block's `proof` lists the siblings from the leaf level upward, one per
//! level where the node has a sibling. [`verify_block`] is the device side:
//! it needs only the manifest's `merkle_root` and `blocks`, and refuses a
//! proof that is not used up exactly.
//!
//! The bridge builds a [`MerkleTree`] once per artifact; it keeps every
//! level so a proof costs O(log n) lookups.

use sha2::{Digest, Sha256};
use std::ops::Range;

/// The smallest block size the protocol allows.
pub const MIN_BLOCK_SIZE: u32 = 256;
/// The largest block size the protocol allows.
pub const MAX_BLOCK_SIZE: u32 = 65536;
/// The default block size.
pub const DEFAULT_BLOCK_SIZE: u32 = 4096;

/// A SHA-256 digest: a leaf, a node or a root.
pub type Hash = [u8; 32];

/// Why a tree could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MerkleError {
    #[error("the image is empty: an artifact needs at least one byte")]
    EmptyImage,
    #[error("block size {0} is not allowed: use a power of two from 256 to 65536")]
    BadBlockSize(u32),
    #[error("the image has {blocks} blocks of {block_size} bytes: at most 2^32 - 1 blocks are allowed, use a larger block size")]
    TooManyBlocks { blocks: u64, block_size: u32 },
}

/// True when `block_size` is a power of two in 256..=65536.
pub fn is_valid_block_size(block_size: u32) -> bool {
    block_size.is_power_of_two() && (MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&block_size)
}

/// `leaf(i) = SHA-256(0x00 ‖ block_i)`.
pub fn leaf_hash(block: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(block);
    h.finalize().into()
}

/// `node(l, r) = SHA-256(0x01 ‖ l ‖ r)`.
pub fn node_hash(l: &Hash, r: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0x01]);
    h.update(l);
    h.update(r);
    h.finalize().into()
}

/// The number of blocks of an image of `size` bytes: `ceil(size / block_size)`.
/// A `block_size` of 0 cuts nothing: the result is 0.
pub fn blocks_for(size: u64, block_size: u32) -> u64 {
    if block_size == 0 {
        return 0;
    }
    size.div_ceil(u64::from(block_size))
}

/// The byte range of block `index` in an image of `size` bytes, or `None`
/// when there is no such block (index past the end, `block_size` 0, or a
/// range that does not fit in memory addresses).
pub fn block_range(size: u64, block_size: u32, index: u32) -> Option<Range<usize>> {
    if u64::from(index) >= blocks_for(size, block_size) {
        return None;
    }
    let start = u64::from(index) * u64::from(block_size);
    let end = start.saturating_add(u64::from(block_size)).min(size);
    Some(usize::try_from(start).ok()?..usize::try_from(end).ok()?)
}

/// A Merkle tree over the blocks of one image, with every level kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MerkleTree {
    /// `levels[0]` are the leaves, the last level holds only the root.
    /// Never empty, and no level is empty.
    levels: Vec<Vec<Hash>>,
    block_size: u32,
}

impl MerkleTree {
    /// Hashes `image` cut into `block_size` pieces.
    pub fn build(image: &[u8], block_size: u32) -> Result<Self, MerkleError> {
        if !is_valid_block_size(block_size) {
            return Err(MerkleError::BadBlockSize(block_size));
        }
        if image.is_empty() {
            return Err(MerkleError::EmptyImage);
        }
        // usize -> u64 is lossless on every platform Rust supports.
        let blocks = blocks_for(image.len() as u64, block_size);
        if u32::try_from(blocks).is_err() {
            return Err(MerkleError::TooManyBlocks { blocks, block_size });
        }
        let leaves: Vec<Hash> = image.chunks(block_size as usize).map(leaf_hash).collect();
        Ok(Self::from_leaves(leaves, block_size))
    }

    /// Builds the upper levels over `leaves` (which must not be empty).
    fn from_leaves(leaves: Vec<Hash>, block_size: u32) -> Self {
        let mut levels = vec![leaves];
        loop {
            // Invariant: `levels` starts with the leaves and only grows.
            let level = &levels[levels.len() - 1];
            if level.len() <= 1 {
                break;
            }
            let mut next = Vec::with_capacity(level.len().div_ceil(2));
            let mut nodes = level.iter();
            while let Some(l) = nodes.next() {
                next.push(match nodes.next() {
                    Some(r) => node_hash(l, r),
                    // A last node without a partner moves up unchanged.
                    None => *l,
                });
            }
            levels.push(next);
        }
        Self { levels, block_size }
    }

    /// The root: `merkle_root` of the manifest.
    pub fn root(&self) -> Hash {
        // Invariant: `levels` is never empty and its last level holds one hash.
        self.levels[self.levels.len() - 1][0]
    }

    /// The number of blocks (leaves).
    pub fn blocks(&self) -> u32 {
        // Invariant: `build` refused more than u32::MAX blocks.
        self.levels[0].len() as u32
    }

    /// The block size the tree was built with.
    pub fn block_size(&self) -> u32 {
        self.block_size
    }

    /// The leaf hash of block `index`.
    pub fn leaf(&self, index: u32) -> Option<Hash> {
        self.levels[0].get(index as usize).copied()
    }

    /// The proof of block `index`: its siblings from the leaf level upward,
    /// one per level where it has one. `None` when there is no such block.
    pub fn proof(&self, index: u32) -> Option<Vec<Hash>> {
        let mut i = index as usize;
        if i >= self.levels[0].len() {
            return None;
        }
        let mut proof = Vec::with_capacity(self.levels.len());
        for level in &self.levels[..self.levels.len() - 1] {
            if let Some(sibling) = level.get(i ^ 1) {
                proof.push(*sibling);
            }
            i /= 2;
        }
        Some(proof)
    }
}

/// Verifies block `index` of an image of `blocks` blocks against `root`.
///
/// True when `index < blocks`, the proof is used up exactly, and the hash
/// climbed from `leaf(data)` through the proof equals `root`. The caller
/// checks the block's length against the manifest (see [`block_range`]).
pub fn verify_block(root: &Hash, index: u32, blocks: u32, data: &[u8], proof: &[Hash]) -> bool {
    if index >= blocks {
        return false;
    }
    let mut h = leaf_hash(data);
    let mut i = index;
    let mut width = blocks;
    let mut entries = proof.iter();
    while width > 1 {
        if (i ^ 1) < width {
            let Some(s) = entries.next() else {
                return false;
            };
            h = if i % 2 == 1 {
                node_hash(s, &h)
            } else {
                node_hash(&h, s)
            };
        }
        i /= 2;
        width = width.div_ceil(2);
    }
    entries.next().is_none() && h == *root
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex32(s: &str) -> Hash {
        let v = hex::decode(s).unwrap();
        v.try_into().unwrap()
    }

    /// The spec's test image: SHA-256(be32(0)) ‖ SHA-256(be32(1)) ‖ …, cut to `len`.
    fn spec_image(len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 32);
        let mut n: u32 = 0;
        while out.len() < len {
            out.extend_from_slice(&Sha256::digest(n.to_be_bytes()));
            n += 1;
        }
        out.truncate(len);
        out
    }

    #[test]
    fn spec_test_vector() {
        let image = spec_image(10_000);
        assert_eq!(
            Sha256::digest(&image).as_slice(),
            hex32("01b944a73e124115caaed0787c66b896ed7662d3116ced9cb08ef7aafc109f16")
        );
        let tree = MerkleTree::build(&image, 4096).unwrap();
        assert_eq!(tree.blocks(), 3);
        assert_eq!(tree.block_size(), 4096);
        let leaves = [
            "d2cd71e37960bc7dec93073538f3ab9ed2798541c31e4e0dada59bf8cd02fe8d",
            "918090ae8e6d0b12c61f67e3ec75f544340783ca429eee19a05a74d0b3bbac7f",
            "4c5cc22b9f05462c9f1bbf6058be398ecb6b631a195700c398a37064b35383c1",
        ];
        for (i, leaf) in leaves.iter().enumerate() {
            assert_eq!(tree.leaf(i as u32), Some(hex32(leaf)), "leaf {i}");
        }
        let root = hex32("b7d5cbc64854196d0f9ec5d81b0c26c1d2feb9d1c4bb93a4330399fdb7eb477d");
        assert_eq!(tree.root(), root);
        let proof2 = tree.proof(2).unwrap();
        assert_eq!(
            proof2,
            vec![hex32(
                "b403cc4bf98fdfcd753c04c88fcc9b9ae79563d4af82dd80af2144021160d65c"
            )]
        );
        // The lone third leaf moves up unchanged: its only sibling is node(l0, l1).
        assert_eq!(proof2[0], node_hash(&hex32(leaves[0]), &hex32(leaves[1])));
        let range = block_range(10_000, 4096, 2).unwrap();
        assert_eq!(range, 8192..10_000);
        assert!(verify_block(&root, 2, 3, &image[range], &proof2));
    }

    #[test]
    fn one_block_root_is_its_leaf() {
        let tree = MerkleTree::build(b"x", 256).unwrap();
        assert_eq!(tree.root(), leaf_hash(b"x"));
        assert_eq!(tree.proof(0), Some(vec![]));
        assert_eq!(tree.proof(1), None);
        assert!(verify_block(&tree.root(), 0, 1, b"x", &[]));
    }

    #[test]
    fn every_block_verifies_for_1_to_20_blocks() {
        let bs = 256u32;
        for n in 1..=20usize {
            // Vary the last block's length too.
            let image = spec_image(n * bs as usize - (n % 3) * 7);
            let tree = MerkleTree::build(&image, bs).unwrap();
            assert_eq!(tree.blocks() as usize, n);
            for i in 0..n as u32 {
                let r = block_range(image.len() as u64, bs, i).unwrap();
                let proof = tree.proof(i).unwrap();
                assert!(
                    verify_block(&tree.root(), i, n as u32, &image[r], &proof),
                    "block {i} of {n}"
                );
            }
        }
    }

    #[test]
    fn tampering_fails() {
        let bs = 256u32;
        for n in [2usize, 3, 5, 8, 13] {
            let image = spec_image(n * bs as usize - 5);
            let tree = MerkleTree::build(&image, bs).unwrap();
            let root = tree.root();
            let blocks = n as u32;
            for i in 0..blocks {
                let data = &image[block_range(image.len() as u64, bs, i).unwrap()];
                let proof = tree.proof(i).unwrap();
                assert!(verify_block(&root, i, blocks, data, &proof));

                let mut bad = data.to_vec();
                bad[data.len() / 2] ^= 0x10;
                assert!(!verify_block(&root, i, blocks, &bad, &proof), "data bit");

                for e in 0..proof.len() {
                    let mut p = proof.clone();
                    p[e][31] ^= 1;
                    assert!(!verify_block(&root, i, blocks, data, &p), "proof entry {e}");
                }

                let wrong = (i + 1) % blocks;
                assert!(!verify_block(&root, wrong, blocks, data, &proof), "index");
                assert!(
                    !verify_block(&root, i + blocks, blocks, data, &proof),
                    "index out of range"
                );

                let mut longer = proof.clone();
                longer.push([0; 32]);
                assert!(
                    !verify_block(&root, i, blocks, data, &longer),
                    "extra entry"
                );
                if !proof.is_empty() {
                    let shorter = &proof[..proof.len() - 1];
                    assert!(
                        !verify_block(&root, i, blocks, data, shorter),
                        "missing entry"
                    );
                }

                let mut bad_root = root;
                bad_root[0] ^= 1;
                assert!(!verify_block(&bad_root, i, blocks, data, &proof), "root");
            }
        }
    }

    #[test]
    fn wrong_block_count_fails() {
        let image = spec_image(5 * 256);
        let tree = MerkleTree::build(&image, 256).unwrap();
        let data = &image[block_range(image.len() as u64, 256, 4).unwrap()];
        let proof = tree.proof(4).unwrap();
        assert!(verify_block(&tree.root(), 4, 5, data, &proof));
        assert!(!verify_block(&tree.root(), 4, 6, data, &proof));
        assert!(!verify_block(&tree.root(), 4, 8, data, &proof));
        assert!(!verify_block(&tree.root(), 0, 0, data, &proof));
    }

    #[test]
    fn build_refuses_bad_input() {
        assert_eq!(MerkleTree::build(&[], 4096), Err(MerkleError::EmptyImage));
        for bs in [0, 1, 128, 255, 257, 1000, 4095, 131_072, u32::MAX] {
            assert_eq!(
                MerkleTree::build(b"abc", bs),
                Err(MerkleError::BadBlockSize(bs)),
                "{bs}"
            );
        }
        for bs in [256, 512, 4096, 65536] {
            assert!(MerkleTree::build(b"abc", bs).is_ok(), "{bs}");
        }
    }

    #[test]
    fn block_arithmetic() {
        assert_eq!(blocks_for(0, 4096), 0);
        assert_eq!(blocks_for(1, 4096), 1);
        assert_eq!(blocks_for(4096, 4096), 1);
        assert_eq!(blocks_for(4097, 4096), 2);
        assert_eq!(blocks_for(10_000, 4096), 3);
        assert_eq!(blocks_for(u64::MAX, 256), u64::MAX / 256 + 1);
        assert_eq!(blocks_for(100, 0), 0);
        assert_eq!(block_range(10_000, 4096, 0), Some(0..4096));
        assert_eq!(block_range(10_000, 4096, 1), Some(4096..8192));
        assert_eq!(block_range(10_000, 4096, 3), None);
        assert_eq!(block_range(8192, 4096, 1), Some(4096..8192));
        assert_eq!(block_range(8192, 4096, 2), None);
        assert_eq!(block_range(0, 4096, 0), None);
        assert_eq!(block_range(100, 0, 0), None);
        assert_eq!(block_range(u64::MAX, 65536, u32::MAX).map(|r| r.len()), {
            // Fits only where usize is 64 bits.
            usize::try_from(u64::MAX).ok().map(|_| 65536)
        });
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn random_images_verify(
            image in proptest::collection::vec(any::<u8>(), 1..6000),
            shift in 8u32..=12,
        ) {
            let bs = 1u32 << shift;
            let tree = MerkleTree::build(&image, bs).unwrap();
            let blocks = tree.blocks();
            prop_assert_eq!(u64::from(blocks), blocks_for(image.len() as u64, bs));
            for i in 0..blocks {
                let r = block_range(image.len() as u64, bs, i).unwrap();
                let proof = tree.proof(i).unwrap();
                prop_assert!(verify_block(&tree.root(), i, blocks, &image[r], &proof));
            }
        }
    }
}
