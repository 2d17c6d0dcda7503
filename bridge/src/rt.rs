//! The runtime helpers every layer uses: the wall clock in Unix seconds,
//! running a blocking piece of work (sled, files, hashing) on tokio's
//! blocking pool instead of an async thread, and the thread's CPU time.

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

/// CPU time this thread has used (`CLOCK_THREAD_CPUTIME_ID`): beside a
/// wall-clock time it tells work from waiting (a thread the kernel did
/// not run, on a machine whose cores are busy). Zero where the clock
/// cannot be read.
pub fn thread_cpu() -> std::time::Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to write.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return std::time::Duration::ZERO;
    }
    std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

#[cfg(test)]
mod tests {
    /// Work moves the thread's CPU clock; sleeping does not (much).
    #[test]
    fn the_thread_cpu_clock_counts_work_not_sleep() {
        let t0 = super::thread_cpu();
        std::thread::sleep(std::time::Duration::from_millis(50));
        let slept = super::thread_cpu() - t0;
        let t1 = super::thread_cpu();
        let mut x = 0u64;
        while super::thread_cpu() - t1 < std::time::Duration::from_millis(20) {
            x = x.wrapping_add(1);
        }
        assert!(x > 0);
        assert!(slept < std::time::Duration::from_millis(20), "{slept:?}");
    }
}
