//! [`WantSet`]: which blocks of one artifact are wanted, as a bitset with a
//! count, and a wrapping "next wanted from here" for round-robin serving.

/// A set of block indices in `0..len`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WantSet {
    words: Vec<u64>,
    len: u32,
    count: u32,
}

impl WantSet {
    /// An empty set of `len` blocks.
    pub fn new(len: u32) -> Self {
        Self {
            words: vec![0; (len as usize).div_ceil(64)],
            len,
            count: 0,
        }
    }

    /// How many indices are in the set.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// True when nothing is wanted.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// True when `i` is in the set.
    pub fn contains(&self, i: u32) -> bool {
        i < self.len && self.words[(i / 64) as usize] & (1 << (i % 64)) != 0
    }

    /// Adds `i`; false when it was there already or is out of range.
    pub fn insert(&mut self, i: u32) -> bool {
        if i >= self.len || self.contains(i) {
            return false;
        }
        self.words[(i / 64) as usize] |= 1 << (i % 64);
        self.count += 1;
        true
    }

    /// Removes `i`; false when it was not there.
    pub fn remove(&mut self, i: u32) -> bool {
        if !self.contains(i) {
            return false;
        }
        self.words[(i / 64) as usize] &= !(1 << (i % 64));
        self.count -= 1;
        true
    }

    /// The first index at or after `from`, wrapping around to 0.
    pub fn next_from(&self, from: u32) -> Option<u32> {
        if self.count == 0 {
            return None;
        }
        let from = if from >= self.len { 0 } else { from };
        self.scan(from, self.len).or_else(|| self.scan(0, from))
    }

    /// The indices in the set, in order.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        let mut next = self.scan(0, self.len);
        std::iter::from_fn(move || {
            let i = next?;
            next = self.scan(i + 1, self.len);
            Some(i)
        })
    }

    /// The first index in `start..end`.
    fn scan(&self, start: u32, end: u32) -> Option<u32> {
        let mut i = start;
        while i < end {
            let word = self.words[(i / 64) as usize] >> (i % 64);
            if word != 0 {
                let found = i + word.trailing_zeros();
                return (found < end).then_some(found);
            }
            i = (i / 64 + 1) * 64;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_remove_count() {
        let mut s = WantSet::new(130);
        assert!(s.insert(0));
        assert!(!s.insert(0));
        assert!(s.insert(129));
        assert!(!s.insert(130));
        assert_eq!(s.count(), 2);
        assert!(s.remove(0));
        assert!(!s.remove(0));
        assert_eq!(s.count(), 1);
        assert!(s.contains(129));
    }

    #[test]
    fn next_from_wraps() {
        let mut s = WantSet::new(200);
        assert_eq!(s.next_from(0), None);
        for i in [3, 64, 150] {
            s.insert(i);
        }
        assert_eq!(s.next_from(0), Some(3));
        assert_eq!(s.next_from(4), Some(64));
        assert_eq!(s.next_from(64), Some(64));
        assert_eq!(s.next_from(65), Some(150));
        assert_eq!(s.next_from(151), Some(3));
        assert_eq!(s.next_from(500), Some(3));
        let mut one = WantSet::new(1);
        one.insert(0);
        assert_eq!(one.next_from(0), Some(0));
        assert_eq!(one.next_from(1), Some(0));
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![3, 64, 150]);
        assert_eq!(WantSet::new(0).iter().next(), None);
    }
}
