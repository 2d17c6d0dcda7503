//! The simulator's view into a device's I/O loop: observation and fault
//! hooks ([`Hooks`]), and the disruptions it can inject. A real device
//! uses [`NoHooks`].

use super::event::Notice;

/// A disruption the simulator injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disruption {
    /// Drop the connection (the will is published), then reconnect.
    Disconnect,
    /// Power loss: drop everything not saved and boot again from the store.
    PowerLoss,
}

/// Observation and fault hooks (the simulator's; a real device uses
/// [`NoHooks`]). All default to doing nothing.
pub trait Hooks: Send + Sync + 'static {
    /// The connection went up or down.
    fn link(&mut self, _up: bool) {}
    /// A connection attempt ended before the broker accepted it (a
    /// refused login, a broker away): what the client said.
    fn connect_failed(&mut self, _error: &str) {}
    /// The broker refused the login with a CONNACK (bad username or
    /// password, not authorised): retrying with the same credentials
    /// cannot help. `reason` names the code.
    fn login_refused(&mut self, _reason: &str) {}
    /// The TLS handshake failed (the broker's certificate is not trusted,
    /// not for this host or expired; our certificate was refused):
    /// `line` is `tls::explain`'s one line. Retrying cannot help either.
    fn tls_failed(&mut self, _line: &str) {}
    /// The agent noticed something (Status queued, acks, rejected blocks...).
    fn notice(&mut self, _notice: &Notice) {}
    /// A payload was refused (malformed, bad names) and dropped.
    fn dropped(&mut self, _what: &'static str) {}
    /// A Block of `bytes` (its whole payload) arrived on a block topic.
    fn block_bytes(&mut self, _bytes: usize) {}
    /// A block arrived: `false` loses it (block loss).
    fn keep_block(&mut self) -> bool {
        true
    }
    /// After each block: disrupt the device now?
    fn disrupt(&mut self, _have: u32, _blocks: u32) -> Option<Disruption> {
        None
    }
    /// The device booted (the first time, and after every reboot).
    fn booted(&mut self, _boot: u32) {}
}

/// No hooks.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoHooks;

impl Hooks for NoHooks {}
