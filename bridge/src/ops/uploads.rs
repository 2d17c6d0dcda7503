//! The upload actor: `artifact_upload` chunks, off core. Core checks and
//! accepts the command, then hands the chunk here with `try_send` on a
//! bounded queue (full: the operator is told to send it again), so core
//! never waits on an upload while presence, fleet and campaign work queue
//! behind it. Here each push's manifest is verified once (kept by its
//! text while the push goes on), every chunk is written on the blocking
//! pool, and the last one is hashed and its Merkle tree built there too.
//! The actor audits and replies itself ([`super::conclude`]); a store
//! failure stops it, and with it the bridge.

use std::collections::HashMap;
use std::sync::Arc;

use schemas::cose::TrustStore;
use schemas::keys::{Kid, VerifyingKey};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::{conclude, Accepted, OpsError};
use crate::artifacts::{ArtifactError, ArtifactStore, VerifiedManifest};
use crate::mqtt::Publisher;
use crate::state::CoreError;
use crate::store::Store;

/// Chunks queued at once (a push sends one chunk at a time, so this is
/// how many pushes can be under way before one is told to wait).
pub const QUEUE: usize = 16;
/// Verified manifests kept (pushes under way at once, about).
const VERIFIED: usize = 32;

/// One chunk of a push, accepted by core.
#[derive(Debug)]
pub struct Chunk {
    pub accepted: Accepted,
    pub manifest: String,
    pub offset: u64,
    pub data: String,
}

/// The actor's inbox. Cheap to clone.
#[derive(Clone)]
pub struct Uploads {
    tx: mpsc::Sender<Chunk>,
}

impl Uploads {
    /// Queues a chunk without waiting; the chunk comes back when the queue
    /// is full (or the actor stopped).
    pub fn submit(&self, chunk: Chunk) -> Result<(), Box<Chunk>> {
        self.tx.try_send(chunk).map_err(|e| {
            Box::new(match e {
                mpsc::error::TrySendError::Full(c) | mpsc::error::TrySendError::Closed(c) => c,
            })
        })
    }
}

/// Starts the actor. It ends when `shutdown` is cancelled (after the chunk
/// in hand) or with the store failure that stops the bridge.
pub fn spawn(
    artifacts: ArtifactStore,
    release_keys: &std::collections::BTreeMap<Kid, VerifyingKey>,
    store: Store,
    publisher: Publisher,
    shutdown: CancellationToken,
) -> (Uploads, JoinHandle<Result<(), CoreError>>) {
    let (tx, rx) = mpsc::channel(QUEUE);
    let actor = Actor {
        rx,
        artifacts,
        trust: TrustStore::new(release_keys.values().copied()),
        store,
        publisher,
        verified: HashMap::new(),
    };
    (Uploads { tx }, tokio::spawn(actor.run(shutdown)))
}

struct Actor {
    rx: mpsc::Receiver<Chunk>,
    artifacts: ArtifactStore,
    trust: TrustStore,
    store: Store,
    publisher: Publisher,
    /// Manifests verified, by their base64 text.
    verified: HashMap<String, Arc<VerifiedManifest>>,
}

impl Actor {
    async fn run(mut self, shutdown: CancellationToken) -> Result<(), CoreError> {
        loop {
            let chunk = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                c = self.rx.recv() => match c {
                    Some(c) => c,
                    None => break,
                },
            };
            let result = self.chunk(&chunk).await.map_err(OpsError::from);
            conclude(&self.store, &self.publisher, &chunk.accepted, result).await?;
        }
        debug!("upload actor stopped");
        Ok(())
    }

    async fn chunk(&mut self, c: &Chunk) -> Result<serde_json::Value, ArtifactError> {
        let known = self.verified.get(&c.manifest).cloned();
        let (artifacts, trust) = (self.artifacts.clone(), self.trust.clone());
        let (manifest, data, offset, now) =
            (c.manifest.clone(), c.data.clone(), c.offset, c.accepted.at);
        let (verified, progress) = crate::rt::blocking(move || {
            let verified = match known {
                Some(v) => v,
                None => Arc::new(VerifiedManifest::verify(&trust, &manifest)?),
            };
            let progress = artifacts.accept_verified(&verified, offset, &data, now);
            Ok::<_, ArtifactError>((verified, progress))
        })
        .await
        .map_err(|e| ArtifactError::Task(e.to_string()))??;
        let progress = progress?;
        if progress.complete {
            self.verified.remove(&c.manifest);
        } else {
            if self.verified.len() >= VERIFIED {
                // Pushes abandoned midway: forget them all; one re-check each.
                self.verified.clear();
            }
            self.verified.insert(c.manifest.clone(), verified);
        }
        Ok(progress.to_json())
    }
}
