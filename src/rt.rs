//! The tokio runtime for the subcommands that need one (serve, sim, demo,
//! bench), and the shutdown signal they pass into their library's `run`.
//! Subcommands that only read and write files (keygen, artifact) never
//! start a runtime.

use std::future::Future;

use anyhow::Context as _;

/// Runs `fut` to completion on a multi-threaded runtime.
pub fn block_on<F: Future>(fut: F) -> anyhow::Result<F::Output> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    Ok(rt.block_on(fut))
}

/// Resolves at the first Ctrl-C or SIGTERM: pass it to a library's
/// `run(config, shutdown)`.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for sigterm");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("ctrl-c: shutting down"),
        () = term => tracing::info!("sigterm: shutting down"),
    }
}
