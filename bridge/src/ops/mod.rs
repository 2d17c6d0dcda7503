//! Operator commands: signed JSON on `P/ops/commands`, a JSON reply on
//! `P/ops/replies/{request_id}`, every command audited.
//!
//! - [`auth`]: signature, time window, replay cache.
//! - [`dispatch`]: the one `match` from a command to its handler.
//! - [`fleet_cmds`], [`artifact_cmds`], [`campaign_cmds`]: the handlers,
//!   each borrowing what it needs from core's state.
//! - [`errors`]: [`OpsError`], the reply's error, and the `From` impls
//!   that map each layer's error into it (and keep a store failure fatal).
//! - [`uploads`]: the upload actor: `artifact_upload` chunks off core,
//!   each push's manifest verified once, hashing on the blocking pool.
//! - [`identity_cmds`]: device credentials (provision, rotate, revoke).
//! - [`enrollment_cmds`]: enrolled devices (accept, reject, the pending list).
//! - [`refusal_budget`]: how many refused commands a minute are audited.
//! - [`retention`]: the audit trail's retention, pruned hourly.
//! - [`prepare`]: what a command over the whole fleet waits for before
//!   it runs, found by core in slices between its other messages.
//! - [`queries`]: the HTTP listener's read-only queries, answered by core
//!   from the same shapes (never signed, never audited, change nothing).
//!
//! The path of one command ([`Ops::handle`]): check it; audit it (accepted or
//! refused, with why); run it; flush the store, so that what the reply
//! reports (and the audit entry that stops a replay) survives a crash;
//! reply. A refusal is replied to when the command names a request id,
//! so that an operator with a wrong key or clock learns why.
//!
//! Refusals are always counted (`ota_commands_refused_total`, by reason).
//! A flood of them (forged, replayed, garbage) must not fill the disk or
//! the log: at most [`REFUSALS_AUDITED_PER_MINUTE`] a minute are audited
//! in full, the next audited one says how many were not
//! (`AuditEntry::unaudited`), and the warning is logged once per
//! interval with a count (`crate::quiet`).

pub mod artifact_cmds;
pub mod auth;
pub mod campaign_cmds;
pub mod dispatch;
pub mod enrollment_cmds;
pub mod errors;
pub mod fleet_cmds;
pub mod identity_cmds;
pub mod prepare;
pub mod queries;
pub mod refusal_budget;
pub mod retention;
pub mod uploads;

use schemas::ops::{Command, Reply};
use schemas::topic::Topic;
use schemas::RequestId;
use tracing::{info, warn};

pub use artifact_cmds::InUse;
pub use auth::{Authenticator, Refusal};
pub use errors::OpsError;
pub use refusal_budget::{RefusalBudget, REFUSALS_AUDITED_PER_MINUTE};
pub use uploads::Uploads;

use crate::metrics::Metrics;
use crate::mqtt::Publisher;
use crate::state::{CoreError, CoreState};
use crate::store::{AuditEntry, Store};

/// The ops layer's own state, beside the core state it is lent: who may
/// command, and the upload actor's inbox.
pub struct Ops {
    auth: Authenticator,
    uploads: Uploads,
    refusals: RefusalBudget,
}

/// What is known of an accepted command once it is checked: enough to
/// audit it and reply to it, whoever carries it out.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub request_id: RequestId,
    pub op: &'static str,
    pub issued_at: u64,
    /// When it was accepted (Unix seconds).
    pub at: u64,
}

impl Ops {
    /// `auth` already seeded with the request ids seen before a restart.
    pub fn new(auth: Authenticator, uploads: Uploads) -> Self {
        Self {
            auth,
            uploads,
            refusals: RefusalBudget::new(REFUSALS_AUDITED_PER_MINUTE),
        }
    }

    /// Handles one command payload: [`Ops::accept`], then [`Ops::run`].
    pub async fn handle(&mut self, state: &mut CoreState, payload: &[u8]) -> Result<(), CoreError> {
        match self.accept(state, payload).await? {
            Some((command, accepted)) => self.run(state, command, accepted).await,
            None => Ok(()),
        }
    }

    /// Checks one command payload (signature, time, replay). A refusal is
    /// audited and replied to here (`None`); an accepted command is
    /// returned, to be [`Ops::run`] (at once, or once the work it waits
    /// for is prepared: [`prepare`]). Errors returned are the bridge's
    /// own (store, connection): they stop the bridge.
    pub async fn accept(
        &mut self,
        state: &mut CoreState,
        payload: &[u8],
    ) -> Result<Option<(Command, Accepted)>, CoreError> {
        let now = crate::rt::unix_now();
        let body = match self.auth.check(payload, now) {
            Ok(b) => b,
            Err(r) => {
                refuse(state, &mut self.refusals, r, now).await?;
                return Ok(None);
            }
        };
        Metrics::add(&state.metrics().commands_accepted, 1);
        let accepted = Accepted {
            request_id: body.request_id.clone(),
            op: body.command.name(),
            issued_at: body.issued_at,
            at: now,
        };
        Ok(Some((body.command, accepted)))
    }

    /// Runs an accepted command; everything about the command itself ends
    /// in a reply. An upload chunk is handed to the upload actor, which
    /// replies: core never waits on an upload.
    pub async fn run(
        &mut self,
        state: &mut CoreState,
        command: Command,
        accepted: Accepted,
    ) -> Result<(), CoreError> {
        let now = crate::rt::unix_now();
        let result = match command {
            Command::ArtifactUpload {
                manifest,
                offset,
                data,
            } => match self.uploads.submit(uploads::Chunk {
                accepted,
                manifest,
                offset,
                data,
            }) {
                Ok(()) => return Ok(()),
                Err(busy) => {
                    let accepted = busy.accepted;
                    let e = OpsError::Busy(format!(
                        "{} uploads are queued at the bridge: send this chunk again in a moment (`ota artifact push` resumes where it stopped)",
                        uploads::QUEUE
                    ));
                    return conclude(state.store(), state.publisher(), &accepted, Err(e)).await;
                }
            },
            command => {
                let settles = command.settles();
                let result = dispatch::dispatch(state, command, now).await;
                if let (true, Ok(v)) = (settles && state.identity().external_copy(), &result) {
                    let change = state.identity().change();
                    return conclude_settled(state, &accepted, v.clone(), change).await;
                }
                result
            }
        };
        conclude(state.store(), state.publisher(), &accepted, result).await
    }
}

/// [`conclude`] for a done command whose reply waits until an external
/// broker's files hold change `change`: audited and flushed here, the
/// reply sent by a task of its own once the files are current (at most
/// [`crate::identity::Identity::apply_wait`]), so that core goes on
/// meanwhile. A rewrite of 100,000 devices' files takes tens of seconds.
async fn conclude_settled(
    state: &CoreState,
    a: &Accepted,
    result: serde_json::Value,
    change: u64,
) -> Result<(), CoreError> {
    let (reply, _) = record(state.store(), a, Ok(result)).await?;
    let identity = state.identity().clone();
    let publisher = state.publisher().clone();
    let request = a.request_id.clone();
    // At most one per accepted command, and each ends within apply_wait.
    tokio::spawn(async move {
        identity.applied_to(change).await;
        if let Err(e) = send_reply(&publisher, &request, &reply).await {
            warn!(request = %request, error = %e, "could not send the reply of a settled command");
        }
    });
    Ok(())
}

/// The end of every accepted command: audit it (with its error), flush, so
/// that what the reply reports (and the audit entry that stops a replay)
/// survives a crash, then reply. A store failure stops the bridge once
/// the reply is out.
pub async fn conclude(
    store: &Store,
    publisher: &Publisher,
    a: &Accepted,
    result: Result<serde_json::Value, OpsError>,
) -> Result<(), CoreError> {
    let (reply, error) = record(store, a, result).await?;
    send_reply(publisher, &a.request_id, &reply).await?;
    // The store is broken: stop rather than acknowledge what may be lost.
    match error.and_then(OpsError::fatal) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Audits a done command (with its error) and flushes the store: the
/// reply to send, and the error.
async fn record(
    store: &Store,
    a: &Accepted,
    result: Result<serde_json::Value, OpsError>,
) -> Result<(Reply, Option<OpsError>), CoreError> {
    let (reply, error) = match result {
        Ok(v) => (Reply::ok(a.request_id.clone(), v), None),
        Err(e) => (Reply::err(a.request_id.clone(), e.to_string()), Some(e)),
    };
    store.audit.append(&AuditEntry {
        at: a.at,
        request_id: Some(a.request_id.to_string()),
        kid: None,
        op: Some(a.op.to_string()),
        issued_at: Some(a.issued_at),
        accepted: true,
        error: error.as_ref().map(|e| e.to_string()),
        unaudited: 0,
    })?;
    let t = std::time::Instant::now();
    store.flush().await?;
    let flushed = t.elapsed();
    if flushed > std::time::Duration::from_millis(20) {
        // Core waits for the disk here (issue 19 counts it as handling).
        tracing::debug!(
            op = a.op,
            ms = flushed.as_millis() as u64,
            "a command's flush was slow"
        );
    }
    let (request, op) = (&a.request_id, a.op);
    match &error {
        None => info!(request = %request, op, "operator command done"),
        Some(e) => warn!(request = %request, op, error = %e, "operator command failed"),
    }
    Ok((reply, error))
}

async fn refuse(
    state: &mut CoreState,
    budget: &mut RefusalBudget,
    r: Box<Refusal>,
    now: u64,
) -> Result<(), CoreError> {
    Metrics::add(&state.metrics().commands_refused, 1);
    state.metrics().count_drop(r.reason);
    if let Some(held) = state.metrics().quiet.command_refused.tick() {
        warn!(
            reason = r.reason.as_str(),
            request = ?r.request_id.as_ref().map(|x| x.as_str()),
            kid = ?r.kid,
            op = ?r.op,
            error = %r.error,
            held,
            "operator command refused (held: refusals not logged since the last such line)"
        );
    }
    if let Some(unaudited) = budget.take(now) {
        state.store().audit.append(&AuditEntry {
            at: now,
            request_id: r.request_id.as_ref().map(|x| x.to_string()),
            kid: r.kid.clone(),
            op: r.op.clone(),
            issued_at: r.issued_at,
            accepted: false,
            error: Some(r.error.to_string()),
            unaudited,
        })?;
    }
    if let Some(id) = &r.request_id {
        send_reply(
            state.publisher(),
            id,
            &Reply::err(id.clone(), r.error.to_string()),
        )
        .await?;
    }
    Ok(())
}

async fn send_reply(publisher: &Publisher, id: &RequestId, reply: &Reply) -> Result<(), CoreError> {
    let mut json = publisher.ops_payload(reply);
    if json.len() > schemas::ops::MAX_REPLY_BYTES {
        // A broker refuses (and disconnects) an oversized publish: say what
        // to do instead of losing the connection.
        tracing::warn!(request = %id, bytes = json.len(), "reply too large; sent an error instead");
        let err = Reply::err(
            id.clone(),
            format!(
                "the reply is {} bytes, over the {} bytes a reply may have: narrow the query (e.g. a group, or fewer items a page)",
                json.len(),
                schemas::ops::MAX_REPLY_BYTES
            ),
        );
        json = publisher.ops_payload(&err);
    }
    publisher
        .publish(&Topic::OpsReply(id.clone()), json, false)
        .await?;
    Ok(())
}
