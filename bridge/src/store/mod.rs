//! The bridge's durable state: one sled database at `data_dir/db`, one
//! file per domain, each owning its trees.
//!
//! - [`devices`]: the registry (one JSON record per device).
//! - [`groups`]: group definitions.
//! - [`status`]: every Status's exact bytes, conflicts, the current state per
//!   (device, campaign), and each device's ack counter (epoch, base, next).
//! - [`retained`]: the retained messages the bridge owns (topic → payload),
//!   republished at start.
//! - [`audit`]: every accepted or refused operator command.
//! - [`private`]: `data_dir` and its files are 0700/0600.
//! - [`counter`]: the director key's counter reservation (E2).
//! - [`strmap`]: the compact labels and versions map of a device record.
//!
//! Inserts are in memory and take microseconds; durability comes from
//! [`Store::flush`] (sled's `flush_async`, which fsyncs on sled's own
//! thread pool), awaited before anything that promises durability.
//! Opening the database blocks (0.3 s for a million entries): do it with
//! `spawn_blocking`.

pub mod audit;
pub mod counter;
pub mod devices;
pub mod groups;
pub mod private;
pub mod records;
pub mod retained;
pub mod status;
pub mod strmap;

use std::path::{Path, PathBuf};

pub use audit::{AuditEntry, AuditStore};
pub use counter::CounterStore;
pub use devices::{DeviceRecord, DeviceStore};
pub use groups::{GroupRecord, GroupStore};
pub use records::Records;
pub use retained::RetainedStore;
pub use status::{CurrentState, EpochRecord, StatusStore};
pub use strmap::StrMap;

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the database at {path}: {source} (is another `ota serve` using this data_dir? only one process may open it)")]
    Open {
        path: PathBuf,
        #[source]
        source: sled::Error,
    },
    #[error("cannot make {path} private (mode 0700, its files 0600): {source} (the bridge's user must own data_dir)")]
    Private {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("database error: {0} (check free disk space and the data_dir's permissions)")]
    Sled(#[from] sled::Error),
    #[error("record {key} in tree {tree} is unreadable: {reason} (restore data_dir from a backup, or delete the record)")]
    Corrupt {
        tree: &'static str,
        key: String,
        reason: String,
    },
}

/// The bridge's database and its domains. Cheap to clone (sled handles are
/// reference counted) and safe to share between tasks.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    pub devices: DeviceStore,
    pub groups: GroupStore,
    pub status: StatusStore,
    pub retained: RetainedStore,
    pub audit: AuditStore,
    pub counter: CounterStore,
}

/// The page cache sled keeps by default here (`[bridge] cache_mib`).
///
/// sled's own default is 1 GiB, and it fills it: with a million devices
/// that was a gigabyte of the bridge's 3.5 GB (issue 19). The hot paths
/// read little back (a device's current state per report, its ack
/// counter), and a page not cached is read from the file, which the
/// kernel's page cache usually still holds. Measured at 1,000,000
/// devices (`ota bench --only registry`): 32 MiB cost the status ingest
/// 15 %; 128 MiB and 256 MiB ingested at the same rate (22,300/s).
pub const DEFAULT_CACHE_BYTES: u64 = 128 << 20;

impl Store {
    /// Opens (or creates) the database at `data_dir/db`, and makes
    /// `data_dir` and everything in it private ([`private`]), with the
    /// default cache. Blocks.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        Self::open_with_cache(data_dir, DEFAULT_CACHE_BYTES)
    }

    /// [`Store::open`] with a page cache of `cache_bytes`.
    pub fn open_with_cache(data_dir: &Path, cache_bytes: u64) -> Result<Self, StoreError> {
        let path = data_dir.join("db");
        private::create_dir(data_dir).map_err(|source| StoreError::Private {
            path: data_dir.to_path_buf(),
            source,
        })?;
        let db = open_db_with_cache(&path, cache_bytes).map_err(|source| StoreError::Open {
            path: path.clone(),
            source,
        })?;
        private::restrict(data_dir).map_err(|source| StoreError::Private {
            path: data_dir.to_path_buf(),
            source,
        })?;
        Ok(Self {
            devices: DeviceStore::open(&db)?,
            groups: GroupStore::open(&db)?,
            status: StatusStore::open(&db)?,
            retained: RetainedStore::open(&db)?,
            audit: AuditStore::open(&db)?,
            counter: CounterStore::open(&db)?,
            db,
        })
    }

    /// Makes every insert so far durable. Runs the fsync on sled's thread
    /// pool, so it never blocks the async runtime.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_async().await?;
        Ok(())
    }

    /// A unique, increasing id (for keys that need one).
    pub fn generate_id(&self) -> Result<u64, StoreError> {
        Ok(self.db.generate_id()?)
    }

    /// The sled database, for domains added by other modules.
    pub fn db(&self) -> &sled::Db {
        &self.db
    }
}

/// How long [`open_db`] waits for a database that was just closed.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Opens the sled database at `path`. Blocks.
///
/// A `sled::Db` dropped in this process keeps its file lock until sled's
/// background flusher thread notices, up to one flush interval (500 ms)
/// later; a bridge restarted in the same process (the tests do it) would
/// otherwise fail to open its own database. So a held lock is retried for
/// [`LOCK_WAIT`]; a lock held longer than that belongs to another process,
/// and the error says so.
pub fn open_db(path: &Path) -> Result<sled::Db, sled::Error> {
    open_db_with_cache(path, DEFAULT_CACHE_BYTES)
}

/// [`open_db`] with a page cache of `cache_bytes`.
pub fn open_db_with_cache(path: &Path, cache_bytes: u64) -> Result<sled::Db, sled::Error> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match sled::Config::new()
            .path(path)
            .cache_capacity(cache_bytes)
            .open()
        {
            Err(e) if is_locked(&e) && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(25));
            }
            other => return other,
        }
    }
}

/// sled reports a held lock as an I/O error wrapping `WouldBlock`.
fn is_locked(e: &sled::Error) -> bool {
    let sled::Error::Io(io) = e else { return false };
    io.kind() == std::io::ErrorKind::WouldBlock
        || io
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<std::io::Error>())
            .is_some_and(|inner| inner.kind() == std::io::ErrorKind::WouldBlock)
        || io.to_string().contains("could not acquire lock")
}

/// `a ‖ 0x00 ‖ b ‖ 0x00 ‖ …`: names never contain 0x00, so prefixes built
/// this way never match a longer name.
pub(crate) fn key_of(parts: &[&[u8]]) -> Vec<u8> {
    let mut k = Vec::with_capacity(parts.iter().map(|p| p.len() + 1).sum::<usize>() + 8);
    for p in parts {
        k.extend_from_slice(p);
        k.push(0);
    }
    k
}

/// Splits a key built by [`key_of`] (plus an optional binary tail) back into
/// its text parts; `None` when it is not shaped so.
pub(crate) fn split_key(key: &[u8], parts: usize) -> Option<(Vec<&str>, &[u8])> {
    let mut out = Vec::with_capacity(parts);
    let mut rest = key;
    for _ in 0..parts {
        let at = rest.iter().position(|b| *b == 0)?;
        out.push(std::str::from_utf8(&rest[..at]).ok()?);
        rest = &rest[at + 1..];
    }
    Some((out, rest))
}

pub(crate) fn corrupt(tree: &'static str, key: &[u8], reason: impl ToString) -> StoreError {
    StoreError::Corrupt {
        tree,
        key: String::from_utf8_lossy(key).replace('\0', "/"),
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_split_back() {
        let k = key_of(&[b"dev-1", b"ep"]);
        let mut k2 = k.clone();
        k2.extend_from_slice(&7u64.to_be_bytes());
        let (parts, tail) = split_key(&k2, 2).unwrap();
        assert_eq!(parts, vec!["dev-1", "ep"]);
        assert_eq!(tail, 7u64.to_be_bytes());
        assert!(split_key(b"no-separator", 1).is_none());
        assert!(!key_of(&[b"dev-1"]).starts_with(&key_of(&[b"dev"])));
    }

    #[test]
    fn reopen_keeps_flushed_data() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            s.retained.put("a/b", b"x").unwrap();
            rt.block_on(s.flush()).unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(
            s.retained.all().unwrap(),
            vec![("a/b".to_string(), b"x".to_vec())]
        );
    }
}
