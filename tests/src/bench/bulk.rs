//! The machine's bulk loopback TCP rate, as `iperf3 -P N` measures it:
//! one stream per core, each writing 256 KiB buffers as fast as the
//! kernel takes them for a fixed time, read on the other side. No
//! fan-out, no small writes: the most bytes loopback moves here, the
//! ceiling for the large-block download rows.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Bytes of each write.
const BUF: usize = 256 * 1024;

/// What one run measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Bulk {
    /// Parallel streams.
    pub streams: usize,
    /// Bytes read, all streams.
    pub bytes: u64,
    /// First write to the last read.
    pub wall: Duration,
}

impl Bulk {
    /// Bytes per second, all streams.
    pub fn bytes_per_sec(&self) -> f64 {
        self.bytes as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    /// Gbit/s, all streams.
    pub fn gbit_per_s(&self) -> f64 {
        self.bytes_per_sec() * 8.0 / 1e9
    }
}

/// Runs `streams` loopback streams for `length`.
pub async fn run(streams: usize, length: Duration) -> std::io::Result<Bulk> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let mut pairs = Vec::with_capacity(streams);
    for _ in 0..streams.max(1) {
        let client = TcpStream::connect(addr).await?;
        let (server, _) = listener.accept().await?;
        pairs.push((server, client));
    }
    let started = Instant::now();
    let until = started + length;
    let mut tasks = tokio::task::JoinSet::new();
    for (mut w, mut r) in pairs {
        tasks.spawn(async move {
            let buf = vec![0x5au8; BUF];
            loop {
                w.write_all(&buf).await?;
                if Instant::now() >= until {
                    break;
                }
            }
            drop(w);
            Ok::<u64, std::io::Error>(0)
        });
        tasks.spawn(async move {
            let mut buf = vec![0u8; BUF];
            let mut got = 0u64;
            loop {
                let n = r.read(&mut buf).await?;
                if n == 0 {
                    return Ok::<u64, std::io::Error>(got);
                }
                got += n as u64;
            }
        });
    }
    let mut bytes = 0;
    while let Some(t) = tasks.join_next().await {
        bytes += t.map_err(std::io::Error::other)??;
    }
    Ok(Bulk {
        streams: streams.max(1),
        bytes,
        wall: started.elapsed(),
    })
}

/// One stream per core of this machine.
pub fn streams() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_stream_moves_bytes_and_all_are_counted() {
        let b = run(2, Duration::from_millis(100)).await.unwrap();
        assert_eq!(b.streams, 2);
        assert!(b.bytes >= 2 * BUF as u64, "{} bytes", b.bytes);
        assert!(b.gbit_per_s() > 0.0);
    }
}
