//! Who is who (PROTOCOL.md E1): every device its own credentials, every
//! topic its owner.
//!
//! - [`store`]: the `credentials` tree (a `$6$` hash per device, never the
//!   password, and its standing: active, pending, revoked).
//! - [`authority`]: [`Identity`], the in-memory registry the embedded
//!   broker asks on every CONNECT, PUBLISH, SUBSCRIBE and will
//!   ([`broker::Authority`]); the core asks it whether a Hello counts and
//!   the block server whether a device may fetch an artifact.
//! - [`grants`]: group and artifact topics, following the retained
//!   Memberships and announcements.
//! - [`mosquitto`]: the same rules as Mosquitto password and ACL files.
//! - [`refusals`]: refusals counted by reason, logged once per interval.
//! - `wire`: how the embedded broker is given the [`Identity`].

pub mod authority;
pub mod grants;
pub mod mosquitto;
pub mod refusals;
pub mod store;
#[cfg(test)]
mod tests;
mod wire;

pub use authority::{Admission, Disconnector, Identity, IdentityConfig, OPERATOR_CLIENT_PREFIX};
pub use refusals::{Refusals, Refused};
pub use store::{CredentialRecord, CredentialStore, Standing};
pub use wire::wire_embedded;
