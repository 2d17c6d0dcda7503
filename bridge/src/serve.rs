//! [`run`]: `ota serve`'s whole life: start the bridge, wait for the
//! shutdown signal or for an actor to fail, stop.

use std::future::Future;

use tracing::{error, info};

use crate::{Bridge, BridgeError, Config};

/// Runs the bridge until `shutdown` completes (the caller wires Ctrl-C and
/// SIGTERM to it), or until a task fails.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), BridgeError> {
    let mut bridge = Bridge::start(config).await?;
    tokio::pin!(shutdown);
    let failure = tokio::select! {
        _ = &mut shutdown => None,
        e = bridge.failed() => Some(e),
    };
    match failure {
        None => {
            info!("shutting down");
            bridge.shutdown().await
        }
        Some(e) => {
            error!(error = %e, "the bridge cannot go on; stopping");
            let _ = bridge.shutdown().await;
            Err(e)
        }
    }
}
