//! `[bridge] cache_mib`: the database's page cache (sled's
//! `cache_capacity`), bounded; the default is the store's,
//! [`crate::store::DEFAULT_CACHE_BYTES`].

use std::ops::RangeInclusive;

/// The MiB `cache_mib` may take.
pub const CACHE_MIB_RANGE: RangeInclusive<u64> = 16..=65_536;

/// The cache in bytes, or why `cache_mib` is refused.
pub fn cache_bytes(mib: Option<u64>) -> Result<u64, String> {
    match mib {
        None => Ok(crate::store::DEFAULT_CACHE_BYTES),
        Some(m) if CACHE_MIB_RANGE.contains(&m) => Ok(m << 20),
        Some(m) => Err(format!(
            "{m} is outside {}..={} MiB (the default is {})",
            CACHE_MIB_RANGE.start(),
            CACHE_MIB_RANGE.end(),
            crate::store::DEFAULT_CACHE_BYTES >> 20
        )),
    }
}
