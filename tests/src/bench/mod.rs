//! Benchmarks behind `ota bench`: each returns figures, the caller prints.
//!
//! # Layout
//!
//! - [`suite`]: the plan (`--quick` or full) and the run of every step.
//! - [`table`]: the one table, the machine, Markdown.
//! - [`downloads`]: a 1 MiB image to N devices through a broker process.
//! - [`raw_fanout`]: the same bytes over raw loopback TCP, the machine's limit.
//! - [`bulk`]: bulk loopback TCP, one stream per core (iperf3-like).
//! - [`emergency`]: command to every device `accepted`, p50 and p99.
//! - [`busy_emergency`]: the same while a download to N other devices
//!   runs through the same broker and bridge.
//! - [`child`]: helper processes (the broker alone, raw readers) and /proc RSS.
//! - [`run_error`]: why a run on a stack failed, shared by the suites.
//!
//! - [`download_run`]: one run of N protocol devices downloading one image
//!   from a bridge ([`crate::downloader`]), measured.
//! - [`ingest`]: the durable status ingest (stored, flushed, acked).
//! - [`line`]: a factory line's batch of fresh devices to its release.
//! - [`firmware`]: images that compress like firmware, and a realistic
//!   change of one.
//! - [`delta_size`]: E3 delta against full for that change and for a
//!   program built twice.
//! - [`delta_campaign`]: a campaign to a fleet on two versions, with
//!   deltas and without.
//! - [`block_tally`]: block bytes by artifact, as the broker carries them.
//! - [`acl_cost`]: the connect storm and a firmware campaign through an
//!   anonymous broker and through E1's per-device logins and ACLs.
//! - [`tls_cost`]: the connect storm and a download over plain TCP and
//!   over mutual TLS, with their CPU seconds.
//! - [`scale`]: `--only scale`, a campaign through the topology past one
//!   broker (core + edge Mosquittos, several `ota sim`), issue 19.
//! - [`registry`]: the bridge with a large registry (1,000,000 devices by
//!   default, `--only registry`), Hellos from a few connections.
//! - [`watcher`]: `--watched`, an open dashboard and a 1 s scraper of
//!   `/metrics` beside the download and ingest rows' bridge.

pub mod acl_cost;
pub mod block_tally;
pub mod bulk;
pub mod busy_emergency;
pub mod child;
pub mod delta_campaign;
pub mod delta_size;
pub mod download_run;
pub mod downloads;
pub mod emergency;
pub mod firmware;
pub mod ingest;
pub mod line;
pub mod raw_fanout;
pub mod registry;
pub mod run_error;
pub mod scale;
pub mod suite;
pub mod table;
pub mod tls_cost;
pub mod watcher;
