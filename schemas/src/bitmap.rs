//! BlockRequest bitmaps and the device's set of verified blocks.
//!
//! A BlockRequest names the blocks a device lacks as `offset` plus a bitmap
//! of 1 to 128 bytes: bit `i` set means block `offset + i` is wanted, and
//! bit `i` is `(bitmap[i / 8] >> (i % 8)) & 1` (least significant bit
//! first). One request covers at most 1024 blocks; [`requests_for_missing`]
//! splits a download's gaps into as few requests as that allows.
//!
//! [`BlockSet`] is the device's record of verified blocks. It uses the same
//! bit order, so its bytes can be persisted as they are and survive a power
//! loss (PROTOCOL.md step 6).

/// The longest bitmap a BlockRequest may carry.
pub const MAX_BITMAP_BYTES: usize = 128;
/// The most blocks one BlockRequest may ask for.
pub const MAX_BLOCKS_PER_REQUEST: u32 = 1024;

/// Why persisted block-set bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BitmapError {
    #[error("a set of {blocks} blocks takes {expected} bytes, found {found}")]
    Length {
        blocks: u32,
        expected: usize,
        found: usize,
    },
    #[error("bits are set past block {blocks}, the last block of the set")]
    BitsPastEnd { blocks: u32 },
}

/// True when bit `i` of `bytes` is set (LSB first); false past the end.
fn bit(bytes: &[u8], i: usize) -> bool {
    bytes.get(i / 8).is_some_and(|b| (b >> (i % 8)) & 1 == 1)
}

/// The absolute indices of the blocks a bitmap asks for, in ascending order.
///
/// Only the first [`MAX_BITMAP_BYTES`] bytes are read, and indices that
/// would pass `u32::MAX` are skipped.
pub fn wanted(offset: u32, bitmap: &[u8]) -> impl Iterator<Item = u32> + '_ {
    let bytes = &bitmap[..bitmap.len().min(MAX_BITMAP_BYTES)];
    (0..bytes.len() * 8)
        .filter(move |&i| bit(bytes, i))
        // i < 1024, so the cast is lossless.
        .map_while(move |i| offset.checked_add(i as u32))
}

/// The bitmap asking for every index of `missing` in
/// `offset..offset + 1024`; indices outside that window are left out.
/// Trailing zero bytes are trimmed, but the bitmap has at least one byte.
pub fn build(offset: u32, missing: impl IntoIterator<Item = u32>) -> Vec<u8> {
    let mut bitmap = vec![0u8; MAX_BITMAP_BYTES];
    for index in missing {
        let Some(rel) = index.checked_sub(offset) else {
            continue;
        };
        if rel < MAX_BLOCKS_PER_REQUEST {
            // rel < 1024, so the byte index is below 128, the bitmap's length.
            bitmap[rel as usize / 8] |= 1 << (rel % 8);
        }
    }
    let len = bitmap
        .iter()
        .rposition(|&b| b != 0)
        .map_or(1, |last| last + 1);
    bitmap.truncate(len);
    bitmap
}

/// Every block below `blocks` that `have` lacks, as `(offset, bitmap)`
/// requests of at most 1024 blocks each. Each request starts at a missing
/// block, so there are as few requests and as short bitmaps as possible.
/// Empty when nothing is missing.
pub fn requests_for_missing(have: &BlockSet, blocks: u32) -> Vec<(u32, Vec<u8>)> {
    let mut requests = Vec::new();
    let mut current: Option<(u32, Vec<u8>)> = None;
    for index in (0..blocks).filter(|&i| !have.contains(i)) {
        if let Some((offset, bitmap)) = &mut current {
            // Missing blocks come in ascending order, so index >= offset.
            let rel = index - *offset;
            if rel < MAX_BLOCKS_PER_REQUEST {
                let byte = rel as usize / 8;
                if bitmap.len() <= byte {
                    bitmap.resize(byte + 1, 0);
                }
                bitmap[byte] |= 1 << (rel % 8);
                continue;
            }
        }
        if let Some(done) = current.replace((index, vec![1])) {
            requests.push(done);
        }
    }
    requests.extend(current);
    requests
}

/// A set of block indices in `0..len`, stored as a bitmap (LSB first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockSet {
    bits: Vec<u8>,
    len: u32,
    count: u32,
}

impl BlockSet {
    /// An empty set of `len` blocks; it takes `ceil(len / 8)` bytes.
    pub fn new(len: u32) -> Self {
        Self {
            bits: vec![0; (len as usize).div_ceil(8)],
            len,
            count: 0,
        }
    }

    /// Restores a set from [`BlockSet::as_bytes`]: exactly `ceil(len / 8)`
    /// bytes, with no bit set at or past `len`.
    pub fn from_bytes(len: u32, bytes: &[u8]) -> Result<Self, BitmapError> {
        let expected = (len as usize).div_ceil(8);
        if bytes.len() != expected {
            return Err(BitmapError::Length {
                blocks: len,
                expected,
                found: bytes.len(),
            });
        }
        // The unused high bits of the last byte must be clear.
        let spare = expected * 8 - len as usize;
        if spare > 0 && bytes.last().is_some_and(|last| last >> (8 - spare) != 0) {
            return Err(BitmapError::BitsPastEnd { blocks: len });
        }
        Ok(Self {
            bits: bytes.to_vec(),
            len,
            count: bytes.iter().map(|b| b.count_ones()).sum(),
        })
    }

    /// The bytes to persist; bit i is `(bytes[i / 8] >> (i % 8)) & 1`.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bits
    }

    /// The number of blocks the set ranges over.
    pub fn len(&self) -> u32 {
        self.len
    }

    /// True when the set ranges over no blocks at all.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds block `index`; true when it was newly added, false when it was
    /// already there or is out of range.
    pub fn insert(&mut self, index: u32) -> bool {
        if index >= self.len || self.contains(index) {
            return false;
        }
        // Invariant: index < len, so the byte exists.
        self.bits[index as usize / 8] |= 1 << (index % 8);
        self.count += 1;
        true
    }

    /// True when block `index` is in the set (false when out of range).
    pub fn contains(&self, index: u32) -> bool {
        index < self.len && bit(&self.bits, index as usize)
    }

    /// How many blocks are in the set.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// True when every block is in the set.
    pub fn is_complete(&self) -> bool {
        self.count == self.len
    }

    /// The blocks not in the set, ascending.
    pub fn missing(&self) -> impl Iterator<Item = u32> + '_ {
        self.bits
            .iter()
            .enumerate()
            .filter(|(_, &b)| b != 0xFF)
            .flat_map(move |(byte, &b)| {
                (0..8u32)
                    .filter(move |bit| (b >> bit) & 1 == 0)
                    // byte < ceil(len / 8), so byte * 8 fits in u64 and the
                    // filter below drops anything past len.
                    .map(move |bit| byte as u64 * 8 + u64::from(bit))
            })
            .take_while(move |&i| i < u64::from(self.len))
            .map(|i| i as u32)
    }

    /// The blocks in the set, ascending.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.len).filter(move |&i| self.contains(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_order_is_lsb_first() {
        // Bits 0, 3 and 9: 0b0000_1001 then 0b0000_0010.
        assert_eq!(build(0, [0, 3, 9]), vec![0x09, 0x02]);
        assert_eq!(wanted(0, &[0x09, 0x02]).collect::<Vec<_>>(), vec![0, 3, 9]);
        assert_eq!(wanted(100, &[0x80]).collect::<Vec<_>>(), vec![107]);
        assert_eq!(build(100, [107]), vec![0x80]);
        let mut s = BlockSet::new(10);
        s.insert(0);
        s.insert(3);
        s.insert(9);
        assert_eq!(s.as_bytes(), &[0x09, 0x02]);
    }

    #[test]
    fn build_window_and_trim() {
        assert_eq!(build(0, []), vec![0]);
        assert_eq!(build(50, [1, 49, 50 + 1024, 5000]), vec![0]);
        let full = build(10, 10..10 + 1024);
        assert_eq!(full, vec![0xFF; 128]);
        assert_eq!(build(0, [1023]).len(), 128);
        assert_eq!(build(0, [7]), vec![0x80]);
        assert_eq!(build(0, [8]), vec![0x00, 0x01]);
        assert_eq!(build(u32::MAX, [u32::MAX]), vec![0x01]);
    }

    #[test]
    fn wanted_round_trips_and_guards_overflow() {
        let idx = [5u32, 6, 70, 500, 1023];
        assert_eq!(
            wanted(1000, &build(1000, idx.map(|i| i + 1000))).collect::<Vec<_>>(),
            idx.map(|i| i + 1000)
        );
        assert_eq!(
            wanted(u32::MAX - 1, &[0xFF]).collect::<Vec<_>>(),
            vec![u32::MAX - 1, u32::MAX]
        );
        assert_eq!(wanted(0, &[]).count(), 0);
        // Bytes past 128 are not read.
        let mut long = vec![0u8; 200];
        long[150] = 1;
        assert_eq!(wanted(0, &long).count(), 0);
    }

    #[test]
    fn block_set_basics() {
        let mut s = BlockSet::new(11);
        assert_eq!(s.as_bytes().len(), 2);
        assert!(!s.is_complete());
        assert_eq!(s.missing().collect::<Vec<_>>(), (0..11).collect::<Vec<_>>());
        assert!(s.insert(4));
        assert!(!s.insert(4));
        assert!(!s.insert(11));
        assert!(!s.insert(u32::MAX));
        assert!(s.contains(4));
        assert!(!s.contains(5));
        assert!(!s.contains(100));
        assert_eq!(s.count(), 1);
        for i in 0..11 {
            s.insert(i);
        }
        assert!(s.is_complete());
        assert_eq!(s.count(), 11);
        assert_eq!(s.missing().count(), 0);
        assert_eq!(s.iter().count(), 11);

        let empty = BlockSet::new(0);
        assert!(empty.is_empty());
        assert!(empty.is_complete());
        assert_eq!(empty.missing().count(), 0);
    }

    #[test]
    fn block_set_persists() {
        let mut s = BlockSet::new(21);
        for i in [0, 7, 8, 20] {
            s.insert(i);
        }
        let back = BlockSet::from_bytes(21, s.as_bytes()).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.count(), 4);
        assert_eq!(back.missing().count(), 17);
        assert_eq!(
            BlockSet::from_bytes(21, &[0, 0]),
            Err(BitmapError::Length {
                blocks: 21,
                expected: 3,
                found: 2
            })
        );
        assert_eq!(
            BlockSet::from_bytes(21, &[0, 0, 0x20]),
            Err(BitmapError::BitsPastEnd { blocks: 21 })
        );
        assert!(BlockSet::from_bytes(16, &[0xFF, 0xFF])
            .unwrap()
            .is_complete());
        assert!(BlockSet::from_bytes(0, &[]).unwrap().is_complete());
    }

    #[test]
    fn requests_cover_exactly_the_missing_blocks() {
        for (len, have) in [
            (0u32, vec![]),
            (1, vec![]),
            (1, vec![0]),
            (3000, vec![]),
            (3000, (0..3000).filter(|i| i % 3 != 0).collect()),
            (
                5000,
                (0..5000)
                    .filter(|i| !(1500..1510).contains(i) && *i != 4999)
                    .collect(),
            ),
            (2048, (0..2048).collect::<Vec<_>>()),
        ] {
            let mut set = BlockSet::new(len);
            for i in have {
                set.insert(i);
            }
            let requests = requests_for_missing(&set, len);
            let mut asked = Vec::new();
            for (offset, bitmap) in &requests {
                assert!((1..=MAX_BITMAP_BYTES).contains(&bitmap.len()));
                assert_ne!(bitmap.last(), Some(&0), "trimmed");
                let w: Vec<u32> = wanted(*offset, bitmap).collect();
                assert_eq!(w.first(), Some(offset), "starts at a missing block");
                assert!(w.iter().all(|&i| i - offset < MAX_BLOCKS_PER_REQUEST));
                assert_eq!(bitmap, &build(*offset, w.iter().copied()));
                asked.extend(w);
            }
            assert_eq!(asked, set.missing().collect::<Vec<_>>(), "len {len}");
            if set.is_complete() {
                assert!(requests.is_empty());
            }
        }
    }

    #[test]
    fn requests_split_at_1024() {
        let set = BlockSet::new(3000);
        let r = requests_for_missing(&set, 3000);
        let offsets: Vec<u32> = r.iter().map(|(o, _)| *o).collect();
        assert_eq!(offsets, vec![0, 1024, 2048]);
        assert_eq!(r[0].1, vec![0xFF; 128]);
        assert_eq!(r[2].1.len(), (3000 - 2048) / 8);

        let mut sparse = BlockSet::new(4000);
        for i in 0..4000 {
            if i != 10 && i != 3990 {
                sparse.insert(i);
            }
        }
        assert_eq!(
            requests_for_missing(&sparse, 4000),
            vec![(10, vec![1]), (3990, vec![1])]
        );
    }
}
