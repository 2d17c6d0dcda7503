//! The operator command contract: signed JSON over MQTT.
//!
//! - Commands go to `P/ops/commands` as a [`CommandEnvelope`]:
//!   `{"kid": hex, "sig": hex, "body": "<json text>"}`. The signature is
//!   ed25519 over the exact UTF-8 bytes of `body`, by an operator key whose
//!   kid (first 8 bytes of SHA-256 of the public key) the bridge trusts.
//! - The body is a [`CommandBody`]: a unique `request_id`, an `issued_at`
//!   time (Unix seconds) and the [`Command`]. The bridge refuses a body
//!   outside its time window and a `request_id` it has already seen
//!   ([`ReplayGuard`]), so a captured command cannot be replayed.
//! - Replies go to `P/ops/replies/{request_id}` as a [`Reply`]; events to
//!   `P/ops/events` as [`Event`]s. A bridge with a director key (E2) signs
//!   both in the same envelope as commands ([`CommandEnvelope::sign_json`]),
//!   so an operator who pins that key ([`CommandEnvelope::open`]) believes
//!   only the bridge.
//! - A body names its audience, the kid of the bridge's director key, when
//!   the operator knows it: another bridge refuses it
//!   ([`CommandError::WrongAudience`]), so a command captured on one bridge
//!   does not run on another that trusts the same operator key.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::ids::{ArtifactId, CampaignId, DeviceId, GroupName, RequestId};
use crate::keys::{Kid, SigningKey, VerifyingKey};

/// Largest command envelope accepted (an artifact chunk of 64 KiB in base64
/// plus the envelope).
pub const MAX_COMMAND_BYTES: usize = 128 * 1024;

/// Most devices in one `device_list` reply.
pub const MAX_PAGE: u32 = 500;

/// Largest reply the bridge publishes; a larger one is replaced by an error
/// that says how to narrow the query (brokers refuse oversized packets).
pub const MAX_REPLY_BYTES: usize = 192 * 1024;

/// Largest raw chunk of an artifact upload.
pub const UPLOAD_CHUNK: usize = 48 * 1024;

/// Most devices in one `device_provision` command (about 160 bytes each).
pub const MAX_PROVISION_BATCH: usize = 500;

/// One device of a `device_provision` command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvisionEntry {
    pub id: DeviceId,
    /// `$6$salt$digest` of its password.
    pub hash: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The kids of the release keys its provisioning file trusts (at most
    /// [`MAX_TRUSTS`]), so that the bridge can refuse a campaign whose
    /// release no targeted device could verify. Absent: not known.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::keys::opt_kids_hex"
    )]
    pub trusts: Option<Vec<Kid>>,
    /// The SHA-256 fingerprint (64 lowercase hex digits, `tls::fingerprint`)
    /// of the client certificate its provisioning file holds, when it has
    /// one (`ota devices provision --mtls`): when the device is rotated or
    /// revoked, the embedded broker refuses that certificate from then on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_sha256: Option<String>,
}

/// Most release keys one [`ProvisionEntry`] may name.
pub const MAX_TRUSTS: usize = 16;

/// The signed envelope published on `P/ops/commands`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandEnvelope {
    /// Hex of the signing key's kid (16 hex characters).
    pub kid: String,
    /// Hex of the 64-byte ed25519 signature over `body`'s bytes.
    pub sig: String,
    /// The JSON text of a [`CommandBody`], signed as it is.
    pub body: String,
}

/// What an operator asks, with its replay protection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandBody {
    /// Unique per command; names the reply topic.
    pub request_id: RequestId,
    /// When the operator issued it (Unix seconds).
    pub issued_at: u64,
    /// The command.
    pub command: Command,
    /// The kid (hex) of the director key of the bridge it is meant for;
    /// absent from operators that do not pin a bridge key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
}

/// Every operator command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Command {
    /// Create or replace a group: a label selector or an explicit member list.
    GroupPut {
        name: GroupName,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        selector: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        members: Option<Vec<DeviceId>>,
    },
    /// Delete a group.
    GroupDelete { name: GroupName },
    /// List groups with their member counts.
    GroupList,
    /// List devices, optionally of one group, a page at a time (by id,
    /// at most [`MAX_PAGE`] a reply, so a reply stays under the broker's
    /// payload limit whatever the fleet's size).
    DeviceList {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        group: Option<GroupName>,
        /// Start after this id (the previous page's `next`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<DeviceId>,
        /// Page size, at most [`MAX_PAGE`] (the default).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
    },
    /// One device's registry entry and campaign states.
    DeviceShow { id: DeviceId },
    /// Provision devices (or, with `replace`, give provisioned ones new
    /// credentials: `ota devices rotate`). Each `hash` is the `$6$` hash of
    /// the password the operator's CLI generated and wrote into the
    /// device's provisioning file (`crate::provisioning`): the password
    /// itself never reaches the bridge. At most [`MAX_PROVISION_BATCH`]
    /// devices a command; all or none are taken.
    DeviceProvision {
        devices: Vec<ProvisionEntry>,
        /// Replace existing credentials (rotate; a revoked device becomes
        /// active again). Without it a provisioned id is refused.
        #[serde(default)]
        replace: bool,
        /// New or provisioned, either is fine (a simulator's fleet, run
        /// again against the same bridge). Overrides `replace`.
        #[serde(default)]
        upsert: bool,
        /// More batches of the same provisioning follow: the reply does
        /// not wait for an external Mosquitto's files to hold these
        /// devices. The last batch (without it) waits for every batch
        /// before it too, so a fleet waits for one rewrite, not one per
        /// batch.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        more_batches: bool,
    },
    /// Revoke a device: disconnected at once, refused from then on.
    DeviceRevoke { id: DeviceId },
    /// Accept a pending (enrolled) device: it takes part from now on, and
    /// logs in again with its full rights (its connection is closed).
    DeviceAccept { id: DeviceId },
    /// Reject a pending (enrolled) device: disconnected, refused from then
    /// on (its id stays taken).
    DeviceReject { id: DeviceId },
    /// One chunk of an artifact upload. The first chunk (offset 0) carries
    /// the manifest; the reply says how many bytes the bridge holds, so a
    /// broken-off push resumes there.
    ArtifactUpload {
        /// Base64 (standard) of the COSE_Sign1 manifest.
        manifest: String,
        /// Where `data` starts in the image.
        offset: u64,
        /// Base64 (standard) of up to [`UPLOAD_CHUNK`] bytes.
        data: String,
    },
    /// List artifacts.
    ArtifactList,
    /// One artifact.
    ArtifactShow { id: ArtifactId },
    /// Delete an artifact (refused while a campaign uses it).
    ArtifactDelete { id: ArtifactId },
    /// Create a campaign from a spec (JSON; see the bridge's campaign docs).
    CampaignCreate { spec: serde_json::Value },
    /// What `CampaignCreate` with this spec would do, from the fleet as it
    /// is now; changes nothing.
    CampaignPlan { spec: serde_json::Value },
    /// Start a created campaign.
    CampaignStart { id: CampaignId },
    /// Pause a running campaign.
    CampaignPause { id: CampaignId },
    /// Resume a paused or halted campaign.
    CampaignResume { id: CampaignId },
    /// Abort a campaign.
    CampaignAbort { id: CampaignId },
    /// Change a campaign's gates (e.g. relax a bar after investigating a
    /// halt, then resume). `gates` holds only the keys to change, named as
    /// in the campaign spec (`success_bar_bp`, `failure_halt_bp`,
    /// `min_sample`, `wave_timeout_secs`, `soak_secs`).
    CampaignSetGates {
        id: CampaignId,
        gates: serde_json::Value,
    },
    /// A campaign's state, waves and counts.
    CampaignStatus { id: CampaignId },
    /// All campaigns.
    CampaignList,
    /// Roll a campaign back now: abort it if it still runs, then start
    /// its rollback campaign (its `rollback` release, to the devices that
    /// installed it), as a halt does by itself.
    CampaignRollback { id: CampaignId },
    /// A standing campaign moves to a newer release: a new standing
    /// campaign (`new_id`, by default `{id}-r2`, `-r3`, ...) with the same
    /// groups, waves and gates starts at once, and `id` is aborted, so
    /// devices that have not started take the new release and devices
    /// installing the old one finish.
    CampaignRetarget {
        id: CampaignId,
        release: Vec<ArtifactId>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        new_id: Option<CampaignId>,
    },
    /// A follow-up: a new draft campaign (`new_id`, by default
    /// `{id}-retry`) with the same release and gates whose members are
    /// exactly the leftovers of `id` (`only`: `timed-out`, `failed`,
    /// `failed:{error}`, `offline`; none given means `timed-out` and
    /// `failed`), held in an explicit group of the same name.
    CampaignRetry {
        id: CampaignId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        new_id: Option<CampaignId>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        only: Vec<String>,
    },
    /// An emergency: skip the waves and every deferral.
    Emergency {
        /// The campaign id (made up by the CLI when not given).
        id: CampaignId,
        /// One artifact per architecture.
        release: Vec<ArtifactId>,
        /// Target groups; empty with `all` = every device.
        #[serde(default)]
        groups: Vec<GroupName>,
        /// Every device, on `P/emergency`.
        #[serde(default)]
        all: bool,
    },
}

impl Command {
    /// The command's name, for logs and the audit trail.
    /// Is its reply held until an external broker's files hold what it
    /// changed? A provisioning (its last batch) and a revocation: `ota
    /// devices provision` returns when the devices can log in, `revoke`
    /// when the device is out. The bridge holds the reply; a client waits
    /// longer for it.
    pub fn settles(&self) -> bool {
        matches!(
            self,
            Command::DeviceProvision {
                more_batches: false,
                ..
            } | Command::DeviceRevoke { .. }
        )
    }

    pub fn name(&self) -> &'static str {
        match self {
            Command::GroupPut { .. } => "group_put",
            Command::GroupDelete { .. } => "group_delete",
            Command::GroupList => "group_list",
            Command::DeviceList { .. } => "device_list",
            Command::DeviceShow { .. } => "device_show",
            Command::DeviceProvision { .. } => "device_provision",
            Command::DeviceRevoke { .. } => "device_revoke",
            Command::DeviceAccept { .. } => "device_accept",
            Command::DeviceReject { .. } => "device_reject",
            Command::ArtifactUpload { .. } => "artifact_upload",
            Command::ArtifactList => "artifact_list",
            Command::ArtifactShow { .. } => "artifact_show",
            Command::ArtifactDelete { .. } => "artifact_delete",
            Command::CampaignCreate { .. } => "campaign_create",
            Command::CampaignPlan { .. } => "campaign_plan",
            Command::CampaignStart { .. } => "campaign_start",
            Command::CampaignPause { .. } => "campaign_pause",
            Command::CampaignResume { .. } => "campaign_resume",
            Command::CampaignAbort { .. } => "campaign_abort",
            Command::CampaignSetGates { .. } => "campaign_set_gates",
            Command::CampaignStatus { .. } => "campaign_status",
            Command::CampaignList => "campaign_list",
            Command::CampaignRetry { .. } => "campaign_retry",
            Command::CampaignRollback { .. } => "campaign_rollback",
            Command::CampaignRetarget { .. } => "campaign_retarget",
            Command::Emergency { .. } => "emergency",
        }
    }
}

/// The bridge's answer on `P/ops/replies/{request_id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    /// The command's request id.
    pub request_id: RequestId,
    /// True when the command was carried out.
    pub ok: bool,
    /// What the command returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    /// Why it was refused, and what to do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Reply {
    /// A success.
    pub fn ok(request_id: RequestId, result: serde_json::Value) -> Self {
        Self {
            request_id,
            ok: true,
            result: Some(result),
            error: None,
        }
    }

    /// A refusal.
    pub fn err(request_id: RequestId, error: impl Into<String>) -> Self {
        Self {
            request_id,
            ok: false,
            result: None,
            error: Some(error.into()),
        }
    }
}

/// Something that happened, on `P/ops/events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Unix seconds.
    pub ts: u64,
    /// e.g. `campaign.wave_started`, `campaign.halted`, `device.registered`.
    pub kind: String,
    /// The campaign concerned, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign: Option<CampaignId>,
    /// One line for people.
    pub message: String,
    /// Details for scripts.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub data: serde_json::Value,
}

/// Why a command was refused before it ran.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("command is not a valid envelope: {0}")]
    Malformed(String),
    #[error(
        "command signed by unknown operator key {0}: add its public key to [bridge] operator_keys"
    )]
    UnknownKey(String),
    #[error("command signature does not verify")]
    BadSignature,
    #[error("command issued at {issued_at}, outside the bridge's window of {window}s around {now}: check the operator's clock")]
    Stale {
        issued_at: u64,
        now: u64,
        window: u64,
    },
    #[error("command {0} was already received: replay refused")]
    Replay(String),
    #[error("command meant for the bridge with key {meant}, this bridge's key is {ours}: refused (check which bridge the CLI's --bridge-key or [operator] bridge_key names)")]
    WrongAudience { meant: String, ours: String },
    #[error("an unsigned or wrongly signed message claims to come from the bridge: {0}")]
    Unsigned(String),
}

impl CommandEnvelope {
    /// Signs `body` with an operator key.
    pub fn sign(body: &CommandBody, key: &SigningKey) -> Self {
        Self::sign_json(body, key)
    }

    /// Signs any JSON value (a reply, an event) with `key`: the bridge's
    /// director key.
    pub fn sign_json<T: Serialize>(value: &T, key: &SigningKey) -> Self {
        use ed25519_dalek::Signer;
        // Invariant: replies and events are plain JSON data.
        let text = serde_json::to_string(value).expect("a JSON value always serializes");
        let sig = key.sign(text.as_bytes());
        Self {
            kid: hex::encode(crate::keys::kid(&key.verifying_key())),
            sig: hex::encode(sig.to_bytes()),
            body: text,
        }
    }

    /// Reads `bytes` as a message from the bridge whose key is `pinned`:
    /// an envelope signed by that key. Anything else (plain JSON, another
    /// key, a bad signature) is [`CommandError::Unsigned`].
    pub fn open<T: serde::de::DeserializeOwned>(
        bytes: &[u8],
        pinned: &VerifyingKey,
    ) -> Result<T, CommandError> {
        // Replies and events may be larger than commands.
        let env = Self::parse_within(bytes, MAX_REPLY_BYTES)
            .map_err(|_| CommandError::Unsigned("not a signed envelope".into()))?;
        let keys = BTreeMap::from([(crate::keys::kid(pinned), *pinned)]);
        env.verify_json(&keys).map_err(|e| match e {
            CommandError::Malformed(m) => CommandError::Malformed(m),
            other => CommandError::Unsigned(other.to_string()),
        })
    }

    /// Reads a message from a bridge whose key is not pinned: the body of
    /// an envelope, unverified, or plain JSON (a bridge without a director
    /// key).
    pub fn read_unpinned<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, CommandError> {
        match Self::parse_within(bytes, MAX_REPLY_BYTES) {
            Ok(env) => {
                serde_json::from_str(&env.body).map_err(|e| CommandError::Malformed(e.to_string()))
            }
            Err(_) => {
                serde_json::from_slice(bytes).map_err(|e| CommandError::Malformed(e.to_string()))
            }
        }
    }

    /// The envelope as JSON bytes, to publish.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Invariant: three strings always serialize.
        serde_json::to_vec(self).expect("an envelope always serializes")
    }

    /// Parses an envelope from a payload.
    pub fn parse(bytes: &[u8]) -> Result<Self, CommandError> {
        Self::parse_within(bytes, MAX_COMMAND_BYTES)
    }

    /// [`Self::parse`] with another size limit ([`MAX_REPLY_BYTES`] for
    /// the bridge's replies and events).
    fn parse_within(bytes: &[u8], limit: usize) -> Result<Self, CommandError> {
        if bytes.len() > limit {
            return Err(CommandError::Malformed(format!(
                "{} bytes, over the limit of {limit}",
                bytes.len()
            )));
        }
        serde_json::from_slice(bytes).map_err(|e| CommandError::Malformed(e.to_string()))
    }

    /// Checks the signature against the trusted operator keys and parses the
    /// body. Freshness and replay are checked by [`ReplayGuard`].
    pub fn verify(&self, keys: &BTreeMap<Kid, VerifyingKey>) -> Result<CommandBody, CommandError> {
        self.verify_json(keys)
    }

    /// Checks the signature against `keys` and parses the body as `T`.
    pub fn verify_json<T: serde::de::DeserializeOwned>(
        &self,
        keys: &BTreeMap<Kid, VerifyingKey>,
    ) -> Result<T, CommandError> {
        let kid: Kid = hex::decode(&self.kid)
            .ok()
            .and_then(|k| k.try_into().ok())
            .ok_or_else(|| CommandError::UnknownKey(self.kid.chars().take(32).collect()))?;
        let key = keys
            .get(&kid)
            .ok_or_else(|| CommandError::UnknownKey(self.kid.clone()))?;
        let sig: [u8; 64] = hex::decode(&self.sig)
            .ok()
            .and_then(|s| s.try_into().ok())
            .ok_or(CommandError::BadSignature)?;
        let sig = ed25519_dalek::Signature::from_bytes(&sig);
        key.verify_strict(self.body.as_bytes(), &sig)
            .map_err(|_| CommandError::BadSignature)?;
        serde_json::from_str(&self.body).map_err(|e| CommandError::Malformed(e.to_string()))
    }
}

/// Refuses stale commands and replays: a request id is remembered for as
/// long as a command carrying it could still be inside the time window.
#[derive(Debug)]
pub struct ReplayGuard {
    window: u64,
    seen: HashMap<RequestId, u64>,
    order: VecDeque<(u64, RequestId)>,
}

impl ReplayGuard {
    /// A guard accepting `issued_at` within `window` seconds of now.
    pub fn new(window: u64) -> Self {
        Self {
            window,
            seen: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// The window in seconds.
    pub fn window(&self) -> u64 {
        self.window
    }

    /// Remembers a request id seen earlier (e.g. loaded from the audit log).
    pub fn remember(&mut self, id: RequestId, issued_at: u64) {
        if self.seen.insert(id.clone(), issued_at).is_none() {
            self.order.push_back((issued_at, id));
        }
    }

    /// Accepts the body once, if it is fresh.
    pub fn check(&mut self, body: &CommandBody, now: u64) -> Result<(), CommandError> {
        self.prune(now);
        if body.issued_at + self.window < now || body.issued_at > now + self.window {
            return Err(CommandError::Stale {
                issued_at: body.issued_at,
                now,
                window: self.window,
            });
        }
        if self.seen.contains_key(&body.request_id) {
            return Err(CommandError::Replay(body.request_id.to_string()));
        }
        self.remember(body.request_id.clone(), body.issued_at);
        Ok(())
    }

    fn prune(&mut self, now: u64) {
        // Entries are pushed roughly in time order; stop at the first fresh one.
        while let Some((t, _)) = self.order.front() {
            if t + 2 * self.window >= now {
                break;
            }
            if let Some((_, id)) = self.order.pop_front() {
                self.seen.remove(&id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn body(id: &str, at: u64) -> CommandBody {
        CommandBody {
            request_id: RequestId::new(id).unwrap(),
            issued_at: at,
            command: Command::GroupPut {
                name: GroupName::new("acme").unwrap(),
                selector: Some("customer=acme".into()),
                members: None,
            },
            audience: None,
        }
    }

    #[test]
    fn replies_open_only_with_the_pinned_key() {
        let (bridge, other) = (key(3), key(4));
        let reply = Reply::ok(RequestId::new("r1").unwrap(), serde_json::json!({"n": 1}));
        let signed = CommandEnvelope::sign_json(&reply, &bridge).to_bytes();
        let pinned = bridge.verifying_key();
        assert_eq!(
            CommandEnvelope::open::<Reply>(&signed, &pinned).unwrap(),
            reply
        );
        // Another key, plain JSON, a flipped body: refused.
        let by_other = CommandEnvelope::sign_json(&reply, &other).to_bytes();
        let plain = serde_json::to_vec(&reply).unwrap();
        let mut env = CommandEnvelope::sign_json(&reply, &bridge);
        env.body = env.body.replace("\"n\":1", "\"n\":2");
        for bytes in [by_other, plain.clone(), env.to_bytes()] {
            let e = CommandEnvelope::open::<Reply>(&bytes, &pinned).unwrap_err();
            assert!(matches!(e, CommandError::Unsigned(_)), "{e}");
        }
        // A reply larger than any command (a page of 500 devices) opens;
        // one over the reply limit does not.
        let big = Reply::ok(
            RequestId::new("r2").unwrap(),
            serde_json::json!({"pad": "x".repeat(MAX_COMMAND_BYTES + 1000)}),
        );
        let signed_big = CommandEnvelope::sign_json(&big, &bridge).to_bytes();
        assert!(signed_big.len() > MAX_COMMAND_BYTES);
        assert_eq!(
            CommandEnvelope::open::<Reply>(&signed_big, &pinned).unwrap(),
            big
        );
        let huge = Reply::ok(
            RequestId::new("r3").unwrap(),
            serde_json::json!({"pad": "x".repeat(MAX_REPLY_BYTES)}),
        );
        let signed_huge = CommandEnvelope::sign_json(&huge, &bridge).to_bytes();
        assert!(CommandEnvelope::open::<Reply>(&signed_huge, &pinned).is_err());
        assert_eq!(
            CommandEnvelope::read_unpinned::<Reply>(&signed_big).unwrap(),
            big
        );
        // Unpinned: either form reads.
        assert_eq!(
            CommandEnvelope::read_unpinned::<Reply>(&signed).unwrap(),
            reply
        );
        assert_eq!(
            CommandEnvelope::read_unpinned::<Reply>(&plain).unwrap(),
            reply
        );
    }

    #[test]
    fn a_body_without_audience_reads_as_before() {
        let text = r#"{"request_id":"r1","issued_at":5,"command":{"op":"group_list"}}"#;
        let b: CommandBody = serde_json::from_str(text).unwrap();
        assert_eq!(b.audience, None);
        let mut with = b.clone();
        with.audience = Some("0011223344556677".into());
        let back: CommandBody =
            serde_json::from_str(&serde_json::to_string(&with).unwrap()).unwrap();
        assert_eq!(back, with);
        assert!(!serde_json::to_string(&b).unwrap().contains("audience"));
    }

    fn trusted(k: &SigningKey) -> BTreeMap<Kid, VerifyingKey> {
        [(crate::keys::kid(&k.verifying_key()), k.verifying_key())].into()
    }

    #[test]
    fn signed_command_verifies() {
        let k = key(3);
        let env = CommandEnvelope::sign(&body("r1", 100), &k);
        let parsed = CommandEnvelope::parse(&env.to_bytes()).unwrap();
        assert_eq!(parsed.verify(&trusted(&k)).unwrap(), body("r1", 100));
    }

    #[test]
    fn forged_or_unknown_is_refused() {
        let k = key(3);
        let mut env = CommandEnvelope::sign(&body("r1", 100), &k);
        assert!(matches!(
            env.verify(&trusted(&key(4))),
            Err(CommandError::UnknownKey(_))
        ));
        env.body = env.body.replace("acme", "evil");
        assert_eq!(env.verify(&trusted(&k)), Err(CommandError::BadSignature));
        assert!(matches!(
            CommandEnvelope::parse(b"{}"),
            Err(CommandError::Malformed(_))
        ));
        assert!(matches!(
            CommandEnvelope::parse(b"\xff"),
            Err(CommandError::Malformed(_))
        ));
    }

    #[test]
    fn replay_and_staleness_are_refused() {
        let mut g = ReplayGuard::new(300);
        assert!(g.check(&body("r1", 1000), 1000).is_ok());
        assert!(matches!(
            g.check(&body("r1", 1000), 1001),
            Err(CommandError::Replay(_))
        ));
        assert!(matches!(
            g.check(&body("r2", 600), 1000),
            Err(CommandError::Stale { .. })
        ));
        assert!(matches!(
            g.check(&body("r3", 1400), 1000),
            Err(CommandError::Stale { .. })
        ));
        // Long after, the id is forgotten but the command is stale anyway.
        assert!(matches!(
            g.check(&body("r1", 1000), 5000),
            Err(CommandError::Stale { .. })
        ));
    }

    #[test]
    fn command_json_shape() {
        let c = Command::CampaignStart {
            id: CampaignId::new("c1").unwrap(),
        };
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            r#"{"op":"campaign_start","id":"c1"}"#
        );
        let c: Command = serde_json::from_str(r#"{"op":"group_list"}"#).unwrap();
        assert_eq!(c, Command::GroupList);
        // Unknown fields are refused on commands with fields (a typo in a
        // flag must not silently do something else).
        assert!(
            serde_json::from_str::<Command>(r#"{"op":"campaign_start","id":"c1","x":1}"#).is_err()
        );
    }
}
