//! Where artifacts live: a sled index (`artifacts` tree: id → JSON
//! [`ArtifactRecord`]) and the image bytes in content-addressed files,
//! `data_dir/artifacts/blobs/{sha256 hex}`, written once and never changed.
//! Files, not sled, by measurement (docs/BENCHMARKS.md, "Artifact
//! storage"): a 64 MiB image is written 5x faster and takes 64 MiB on disk
//! instead of 117, and a random 4 KiB block reads in 2 µs from the page
//! cache without growing the process's memory.
//!
//! Partial uploads are in `data_dir/artifacts/uploads/{artifact}.part`, with
//! their manifest in the `artifact_uploads` tree ([`super::upload`]).
//!
//! Every method here blocks (file I/O, sled flush): call them from
//! `spawn_blocking`, as the artifact commands and the block server do.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use schemas::ArtifactId;

use super::{ArtifactError, ArtifactRecord};

const INDEX_TREE: &str = "artifacts";
const UPLOADS_TREE: &str = "artifact_uploads";

/// The artifact store. Cheap to clone; safe to share between tasks.
#[derive(Clone)]
pub struct ArtifactStore {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub(super) db: sled::Db,
    pub(super) index: sled::Tree,
    pub(super) uploads: sled::Tree,
    pub(super) blobs: PathBuf,
    pub(super) parts: PathBuf,
    /// Serializes every change (uploads, deletes): two chunks of one push
    /// must not interleave. A std mutex: it is only taken on blocking
    /// threads, never across an await.
    pub(super) lock: Mutex<()>,
}

impl ArtifactStore {
    /// Opens the index in `db` and the directories under
    /// `data_dir/artifacts`, creating them. Blocks.
    pub fn open(db: &sled::Db, data_dir: &Path) -> Result<Self, ArtifactError> {
        let root = data_dir.join("artifacts");
        let blobs = root.join("blobs");
        let parts = root.join("uploads");
        for dir in [&blobs, &parts] {
            crate::store::private::create_dir(dir)
                .map_err(ArtifactError::io("create directory", dir))?;
        }
        Ok(Self {
            inner: Arc::new(Inner {
                db: db.clone(),
                index: db.open_tree(INDEX_TREE)?,
                uploads: db.open_tree(UPLOADS_TREE)?,
                blobs,
                parts,
                lock: Mutex::new(()),
            }),
        })
    }

    /// The stored artifact `id`, if any. Microseconds (an in-memory sled
    /// read): fine on the runtime.
    pub fn get(&self, id: &ArtifactId) -> Result<Option<ArtifactRecord>, ArtifactError> {
        match self.inner.index.get(id.as_str())? {
            None => Ok(None),
            Some(bytes) => decode(id.as_str(), &bytes).map(Some),
        }
    }

    /// True when `id` is stored.
    pub fn contains(&self, id: &ArtifactId) -> Result<bool, ArtifactError> {
        Ok(self.inner.index.contains_key(id.as_str())?)
    }

    /// Every stored artifact, by id. A record that cannot be read is
    /// skipped with a warning (it still shows in `show` with its error).
    pub fn list(&self) -> Result<Vec<ArtifactRecord>, ArtifactError> {
        let mut out = Vec::new();
        for entry in self.inner.index.iter() {
            let (key, bytes) = entry?;
            let key = String::from_utf8_lossy(&key).into_owned();
            match decode(&key, &bytes) {
                Ok(r) => out.push(r),
                Err(e) => tracing::warn!(artifact = %key, error = %e, "artifact record skipped"),
            }
        }
        Ok(out)
    }

    /// The file holding the image of `record`.
    pub fn blob_path(&self, record: &ArtifactRecord) -> PathBuf {
        // sha256 was written by us as 64 hex characters: no path tricks.
        self.inner.blobs.join(&record.sha256)
    }

    /// Opens the image file of `record` for reading blocks. Blocks.
    pub fn open_image(&self, record: &ArtifactRecord) -> Result<File, ArtifactError> {
        let path = self.blob_path(record);
        File::open(&path).map_err(ArtifactError::io("open image", path))
    }

    /// Reads the whole image of `record`. Blocks (up to 64 MiB).
    pub fn read_image(&self, record: &ArtifactRecord) -> Result<Vec<u8>, ArtifactError> {
        let path = self.blob_path(record);
        std::fs::read(&path).map_err(ArtifactError::io("read image", path))
    }

    /// Deletes artifact `id` (its record, and its file when no other record
    /// shares the content), or its partial upload. Blocks.
    pub fn delete(&self, id: &ArtifactId) -> Result<(), ArtifactError> {
        let _guard = self.lock();
        let record = self.get(id)?;
        let partial = self.inner.uploads.remove(id.as_str())?;
        if record.is_none() && partial.is_none() {
            return Err(ArtifactError::NotFound(id.clone()));
        }
        let part = self.part_path(id);
        if part.exists() {
            std::fs::remove_file(&part).map_err(ArtifactError::io("remove", &part))?;
        }
        if let Some(record) = record {
            self.inner.index.remove(id.as_str())?;
            let shared = self.list()?.iter().any(|r| r.sha256 == record.sha256);
            if !shared {
                let path = self.blob_path(&record);
                if let Err(e) = std::fs::remove_file(&path) {
                    // The record is gone already; a leftover file only costs disk.
                    tracing::warn!(path = %path.display(), error = %e, "artifact file not removed");
                }
            }
        }
        self.inner.db.flush()?;
        Ok(())
    }

    pub(super) fn part_path(&self, id: &ArtifactId) -> PathBuf {
        // Artifact ids are [A-Za-z0-9._-]{1,64}; ".." alone would be a
        // name, so prefix it: the file always stays in `parts`.
        self.inner.parts.join(format!("upload-{id}.part"))
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        // A panic while holding it leaves no half-done state we rely on:
        // every step re-reads the files and the index.
        self.inner.lock.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn decode(id: &str, bytes: &[u8]) -> Result<ArtifactRecord, ArtifactError> {
    serde_json::from_slice(bytes).map_err(|e| ArtifactError::Corrupt {
        id: id.to_string(),
        reason: e.to_string(),
    })
}
