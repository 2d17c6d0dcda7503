//! The two runtime helpers every layer uses: the wall clock in Unix
//! seconds, and running a blocking piece of work (sled, files, hashing)
//! on tokio's blocking pool instead of an async thread.

/// Unix seconds now (0 if the clock is before 1970).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Runs `f` on the blocking pool. `Err` only when it panicked (or the
/// runtime is shutting down).
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, tokio::task::JoinError> {
    tokio::task::spawn_blocking(f).await
}
