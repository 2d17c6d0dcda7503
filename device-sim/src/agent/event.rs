//! The protocol between the pure state machine and its I/O: what happens to
//! a device ([`Event`]) and what the machine asks for in return ([`Action`]).
//! Enums, not callbacks, so a test can feed events and read actions without
//! a broker, a disk or a clock.

use schemas::msg::{Announcement, Block, ErrorCode, Kind, Membership, StatusAck, StatusState};
use schemas::topic::Topic;
use schemas::{ArtifactId, CampaignId, ComponentName};

/// Something that happened to the device. Times come with
/// [`Agent::handle`](super::Agent::handle), never from a clock inside.
#[derive(Debug, Clone)]
pub enum Event {
    /// The first event after the agent was built: a boot (power-up, process
    /// start, or after a firmware reboot). Re-arms timers kept in the state.
    Start,
    /// The outcome of booting into a new firmware, fed right after
    /// [`Event::Start`] when [`Agent::pending_boot`](super::Agent::pending_boot)
    /// named one.
    Booted(BootOutcome),
    /// The MQTT connection is up (CONNACK received).
    Connected {
        /// What the broker said; devices use clean sessions, so it is
        /// informational.
        session_present: bool,
    },
    /// The MQTT connection went down.
    Disconnected,
    /// A Membership on `P/devices/{id}/groups` (an empty payload is no groups).
    Membership(Membership),
    /// An announcement topic's retained message changed.
    Announcement {
        /// `GroupCampaign`, `GroupEmergency` or `Emergency`.
        topic: Topic,
        /// `None`: an empty retained payload, "no campaign".
        payload: Option<Announcement>,
    },
    /// A Block from either block topic.
    Block(Block),
    /// A StatusAck on `P/devices/{id}/ack`.
    Ack(StatusAck),
    /// The broker's SUBACK for one [`Action::Subscribe`]: granted, or
    /// refused (return code 0x80, PROTOCOL.md E1).
    Subscribed {
        /// The topic subscribed.
        topic: Topic,
        /// False: the SUBACK's failure code.
        granted: bool,
    },
    /// A timer set with [`Action::SetTimer`] is due.
    Timer(TimerId),
    /// The answer to [`Action::CheckImage`].
    ImageChecked {
        /// The image checked.
        artifact: ArtifactId,
        /// Its size and SHA-256, or why it could not be read.
        result: Result<ImageDigest, String>,
    },
    /// The answer to [`Action::Install`].
    InstallDone {
        /// The campaign whose image was installed.
        campaign: CampaignId,
        /// `Ok` once written (firmware) or written, started and healthy
        /// (app, config); `Err` with why it failed.
        result: Result<(), String>,
    },
    /// The answer to [`Action::Rebuild`] (E3).
    Rebuilt {
        /// The campaign whose delta was applied.
        campaign: CampaignId,
        /// Size and SHA-256 of the rebuilt target, or why the payload did
        /// not rebuild it (`hash_mismatch`).
        result: Result<ImageDigest, String>,
    },
    /// The block store could not keep a block the machine verified
    /// ([`Action::StoreBlock`] failed): the machine forgets it and asks again.
    BlockLost {
        /// The artifact.
        artifact: ArtifactId,
        /// The block index.
        index: u32,
    },
}

/// The shape of an image, from its manifest: where each block goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Bytes of the whole image.
    pub size: u64,
    /// Bytes per block (the last may be shorter).
    pub block_size: u32,
    /// Blocks in the image.
    pub blocks: u32,
    /// The Merkle root: with the artifact id, names the image exactly.
    pub merkle_root: [u8; 32],
}

impl Geometry {
    /// The geometry a manifest describes.
    pub fn of(m: &schemas::msg::Manifest) -> Self {
        Self {
            size: m.size,
            block_size: m.block_size,
            blocks: m.blocks,
            merkle_root: m.merkle_root,
        }
    }

    /// Byte offset of block `index`.
    pub fn offset(&self, index: u32) -> u64 {
        u64::from(index) * u64::from(self.block_size)
    }
}

/// Size and SHA-256 of an assembled image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageDigest {
    /// Bytes.
    pub size: u64,
    /// SHA-256 of the whole image.
    pub sha256: [u8; 32],
}

/// How booting into a new firmware went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootOutcome {
    /// The new image runs and passed its health check.
    Healthy,
    /// The new image did not boot or failed its health check; the device
    /// fell back to the previous one.
    RolledBack {
        /// Why, for the Status `detail`.
        detail: String,
    },
}

/// Timers the machine asks for. Setting one that is already set moves it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TimerId {
    /// After a reconnect: resend the outbox if no StatusAck came first.
    ResendWait,
    /// Resend the outbox when its oldest entry has waited 30 s.
    Resend,
    /// The running download's quiet spell.
    Quiet,
    /// Look at a deferred campaign again.
    Relook(CampaignId),
    /// Subscribe again to filters the broker refused, whose back-off is
    /// over.
    Resubscribe,
}

/// Everything needed to install one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallRequest {
    /// The campaign.
    pub campaign: CampaignId,
    /// The image, as kept by the block store.
    pub artifact: ArtifactId,
    /// Firmware reboots; app and config install in place.
    pub kind: Kind,
    /// What it replaces.
    pub component: ComponentName,
    /// The version it brings.
    pub version: String,
    /// Bytes.
    pub size: u64,
}

/// E3: everything needed to rebuild a delta's target image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebuildRequest {
    /// The campaign.
    pub campaign: CampaignId,
    /// The component whose installed image is the reference.
    pub component: ComponentName,
    /// SHA-256 the installed image must have (the delta's `from_sha256`).
    pub from_sha256: [u8; 32],
    /// The delta payload, complete and checked in the block store.
    pub payload: ArtifactId,
    /// The target: the full image's artifact id, where the rebuilt image
    /// is kept for the installer.
    pub target: ArtifactId,
    /// The target's shape (`size` is the delta's `target_size`).
    pub target_geometry: Geometry,
    /// The delta's `target_sha256`.
    pub target_sha256: [u8; 32],
}

/// What the machine asks its I/O to do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Subscribe (QoS 1).
    Subscribe(Topic),
    /// Unsubscribe.
    Unsubscribe(Topic),
    /// Publish (QoS 1). Status payloads are the exact outbox bytes.
    Publish {
        /// Where.
        topic: Topic,
        /// The encoded message.
        payload: Vec<u8>,
        /// Retained (Presence only).
        retain: bool,
    },
    /// Call back with [`Event::Timer`] at `at_ms` (same clock as `now_ms`).
    SetTimer {
        /// Which timer; replaces an earlier one with the same id.
        id: TimerId,
        /// When.
        at_ms: u64,
    },
    /// The persistent state changed: save [`Agent::state`](super::Agent::state)
    /// before performing any later action.
    Persist,
    /// Keep a verified block (and its bit) in the block store.
    StoreBlock {
        /// The artifact.
        artifact: ArtifactId,
        /// The image's shape.
        geometry: Geometry,
        /// The block's index.
        index: u32,
        /// Its bytes, already verified against the Merkle root.
        data: Vec<u8>,
    },
    /// The blocks of this artifact are no longer needed.
    DropBlocks {
        /// The artifact.
        artifact: ArtifactId,
    },
    /// Assemble the image and answer with [`Event::ImageChecked`].
    CheckImage {
        /// The artifact.
        artifact: ArtifactId,
        /// The image's shape.
        geometry: Geometry,
    },
    /// E3: decompress the checked delta payload against the installed
    /// image, keep the result as the target, and answer with
    /// [`Event::Rebuilt`].
    Rebuild(RebuildRequest),
    /// Install the image and answer with [`Event::InstallDone`].
    Install(InstallRequest),
    /// Reboot into the installed firmware; after the boot, build the agent
    /// again from the saved state and feed [`Event::Booted`].
    Reboot(InstallRequest),
    /// Something worth counting or logging; no effect on the device.
    Notice(Notice),
}

/// Observations for logs, counters and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A Status was added to the outbox.
    StatusQueued {
        /// Its seq.
        seq: u64,
        /// The campaign it is about.
        campaign: Option<CampaignId>,
        /// Its state.
        state: StatusState,
        /// Its error, if any.
        error: Option<ErrorCode>,
    },
    /// A StatusAck covered these outbox entries.
    Acked {
        /// The seqs now covered, oldest first.
        seqs: Vec<u64>,
    },
    /// A StatusAck above the last seq used was ignored.
    AckIgnored {
        /// The ack's seq.
        seq: u64,
    },
    /// A block failed its checks and was dropped.
    BlockRejected {
        /// The artifact.
        artifact: ArtifactId,
        /// The block's index.
        index: u32,
        /// Why.
        reason: &'static str,
    },
    /// An announcement arrived on a topic the device does not follow.
    AnnouncementIgnored,
    /// A download started or resumed.
    DownloadStarted {
        /// The campaign.
        campaign: CampaignId,
        /// Blocks already held.
        have: u32,
        /// Blocks in the image.
        blocks: u32,
    },
    /// A download stopped (paused, pre-empted, offline, gone).
    DownloadSuspended {
        /// The campaign.
        campaign: CampaignId,
    },
    /// The broker refused a subscription (SUBACK 0x80); it is tried again
    /// in `retry_in_ms`.
    SubscribeRefused {
        /// The topic refused.
        topic: Topic,
        /// Refusals in a row of this topic, 1 the first time.
        attempt: u32,
        /// The back-off before the next try.
        retry_in_ms: u64,
    },
    /// A subscription the broker had refused is granted now.
    SubscribeGranted {
        /// The topic.
        topic: Topic,
        /// How often it was refused first.
        refused: u32,
    },
    /// Requests were sent after a quiet spell.
    ReRequested {
        /// The campaign.
        campaign: CampaignId,
        /// Blocks still missing.
        missing: u32,
    },
}
