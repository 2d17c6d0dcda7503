//! Operator commands: signed JSON on `P/ops/commands`, a JSON reply on
//! `P/ops/replies/{request_id}`, every command audited.
//!
//! - [`auth`]: signature, time window, replay cache.
//! - [`dispatch`]: the one `match` from a command to its handler; the
//!   artifact and campaign engineers add their arms there.
//! - [`fleet_cmds`]: group and device commands.
//! - [`identity_cmds`]: device credentials (provision, rotate, revoke).
//!
//! The path of one command ([`handle`]): check it; audit it (accepted or
//! refused, with why); run it; flush the store, so that what the reply
//! reports (and the audit entry that stops a replay) survives a crash;
//! reply. A refusal is replied to when the command names a request id,
//! so that an operator with a wrong key or clock learns why.

pub mod auth;
pub mod dispatch;
pub mod fleet_cmds;
pub mod identity_cmds;

use schemas::ops::Reply;
use schemas::topic::Topic;
use schemas::RequestId;
use tracing::{info, warn};

pub use auth::{Authenticator, Refusal};

use crate::core::CoreState;
use crate::metrics::Metrics;
use crate::mqtt::PublishError;
use crate::store::{AuditEntry, StoreError};
use crate::BridgeError;

/// Why an accepted command failed. The message is the reply's `error`: it
/// says what was wrong and what to do.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0} is not implemented yet")]
    NotImplemented(&'static str),
    #[error("the bridge's store failed: {0}")]
    Store(#[from] StoreError),
    #[error("the bridge could not publish: {0}")]
    Publish(#[from] PublishError),
}

impl From<BridgeError> for OpsError {
    fn from(e: BridgeError) -> Self {
        match e {
            BridgeError::Store(s) => OpsError::Store(s),
            BridgeError::Publish(p) => OpsError::Publish(p),
            other => OpsError::Invalid(other.to_string()),
        }
    }
}

/// Handles one command payload. Errors returned are the bridge's own
/// (store, connection): they stop the bridge. Everything about the
/// command itself ends in a reply.
pub async fn handle(state: &mut CoreState, payload: &[u8]) -> Result<(), BridgeError> {
    let now = crate::unix_now();
    let body = match state.auth.check(payload, now) {
        Ok(b) => b,
        Err(r) => return refuse(state, r, now).await,
    };
    Metrics::add(&state.metrics.commands_accepted, 1);
    let op = body.command.name();
    let request_id = body.request_id.clone();
    let result = dispatch::dispatch(state, body.command, now).await;
    let (reply, error) = match result {
        Ok(v) => (Reply::ok(request_id.clone(), v), None),
        Err(e) => (Reply::err(request_id.clone(), e.to_string()), Some(e)),
    };
    state.store.audit.append(&AuditEntry {
        at: now,
        request_id: Some(request_id.to_string()),
        kid: None,
        op: Some(op.to_string()),
        issued_at: Some(body.issued_at),
        accepted: true,
        error: error.as_ref().map(|e| e.to_string()),
    })?;
    state.store.flush().await?;
    match &error {
        None => info!(request = %request_id, op, "operator command done"),
        Some(e) => warn!(request = %request_id, op, error = %e, "operator command failed"),
    }
    send_reply(state, &request_id, &reply).await?;
    match error {
        // The store is broken: stop rather than acknowledge what may be lost.
        Some(OpsError::Store(e)) => Err(BridgeError::Store(e)),
        _ => Ok(()),
    }
}

async fn refuse(state: &mut CoreState, r: Box<Refusal>, now: u64) -> Result<(), BridgeError> {
    Metrics::add(&state.metrics.commands_refused, 1);
    state.metrics.count_drop(r.reason);
    warn!(
        reason = r.reason.as_str(),
        request = ?r.request_id.as_ref().map(|x| x.as_str()),
        kid = ?r.kid,
        op = ?r.op,
        error = %r.error,
        "operator command refused"
    );
    state.store.audit.append(&AuditEntry {
        at: now,
        request_id: r.request_id.as_ref().map(|x| x.to_string()),
        kid: r.kid.clone(),
        op: r.op.clone(),
        issued_at: r.issued_at,
        accepted: false,
        error: Some(r.error.to_string()),
    })?;
    if let Some(id) = &r.request_id {
        send_reply(state, id, &Reply::err(id.clone(), r.error.to_string())).await?;
    }
    Ok(())
}

async fn send_reply(state: &CoreState, id: &RequestId, reply: &Reply) -> Result<(), BridgeError> {
    // Invariant: a Reply holds a name, a bool, JSON and a string.
    let mut json = serde_json::to_vec(reply).expect("a reply always serializes");
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
        json = serde_json::to_vec(&err).expect("a reply always serializes");
    }
    state
        .publisher
        .publish(&Topic::OpsReply(id.clone()), json, false)
        .await?;
    Ok(())
}
