//! The machine's own limit for our kind of work: the same bytes written
//! to N loopback TCP sockets, with no broker and no protocol, as fast as a
//! tuned program can: every socket its own task (all cores, no socket
//! waiting behind a slow one), each handed the whole image at once (one
//! large write, what a writev of all its blocks would give the kernel).
//! Every MQTT figure is read against this one, and against the bulk
//! loopback rate of [`super::bulk`].

use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use super::child::{read_up_to, ChildCmd, ChildError, ChildProc, ChildRole};

/// What one raw fan-out run measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RawFanout {
    /// Sockets written to.
    pub clients: usize,
    /// Bytes each socket received.
    pub bytes_per_client: u64,
    /// From the first write to the last byte read by the last client.
    pub wall: Duration,
}

impl RawFanout {
    /// Aggregate throughput in Gbit/s.
    pub fn gbit_per_s(&self) -> f64 {
        (self.clients as f64 * self.bytes_per_client as f64 * 8.0) / self.wall.as_secs_f64() / 1e9
    }
}

/// Errors of the raw fan-out run.
#[derive(Debug, thiserror::Error)]
pub enum RawFanoutError {
    #[error("socket i/o failed: {0} (is `ulimit -n` above {1}?)")]
    Io(std::io::Error, usize),
    #[error("a reader task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    #[error("the reading child: {0}")]
    Child(#[from] ChildError),
}

/// Writes `image` to `clients` loopback sockets and waits until every
/// client has read it all.
pub async fn run(clients: usize, image: &[u8]) -> Result<RawFanout, RawFanoutError> {
    let io = |e| RawFanoutError::Io(e, clients * 2 + 50);
    let listener = TcpListener::bind("127.0.0.1:0").await.map_err(io)?;
    let addr = listener.local_addr().map_err(io)?;
    let total = image.len() as u64;

    let mut readers = Vec::with_capacity(clients);
    let mut writers = Vec::with_capacity(clients);
    for _ in 0..clients {
        let mut client = TcpStream::connect(addr).await.map_err(io)?;
        let (server, _) = listener.accept().await.map_err(io)?;
        server.set_nodelay(true).map_err(io)?;
        writers.push(server);
        readers.push(tokio::spawn(
            async move { read_up_to(&mut client, total).await },
        ));
    }

    let started = Instant::now();
    let keep = write_all(writers, image).await?;
    let mut min_got = u64::MAX;
    for r in readers {
        min_got = min_got.min(r.await?.map_err(io)?);
    }
    let wall = started.elapsed();
    drop(keep);
    Ok(RawFanout {
        clients,
        bytes_per_client: if clients == 0 { 0 } else { min_got },
        wall,
    })
}

/// [`run`] with the reading sockets in a child process (`cmd` in the
/// [`ChildRole::RawReaders`] role): 10,000 connections need 10,000
/// descriptors on each side, more than one process may open here.
pub async fn run_split(
    cmd: &ChildCmd,
    clients: usize,
    image: &[u8],
) -> Result<RawFanout, RawFanoutError> {
    let io = |e| RawFanoutError::Io(e, clients + 50);
    let listener = TcpListener::bind("127.0.0.1:0").await.map_err(io)?;
    let addr = listener.local_addr().map_err(io)?;
    let total = image.len() as u64;
    let accept = tokio::spawn(async move {
        let mut socks = Vec::with_capacity(clients);
        while socks.len() < clients {
            let (s, _) = listener.accept().await?;
            s.set_nodelay(true)?;
            socks.push(s);
        }
        Ok::<_, std::io::Error>(socks)
    });
    let role = ChildRole::RawReaders {
        addr,
        clients,
        bytes: total,
    };
    let mut child = ChildProc::spawn(cmd, &role)?;
    let connect_time = Duration::from_secs(30 + clients as u64 / 200);
    child.expect("connected", connect_time).await?;
    let writers = accept.await?.map_err(io)?;

    let started = Instant::now();
    let kept = write_all(writers, image).await?;
    let done = child.expect("done", Duration::from_secs(600)).await?;
    let wall = started.elapsed();
    drop(kept);
    child.stop().await;
    let min_got = done
        .parse()
        .map_err(|_| RawFanoutError::Child(ChildError::Role(done.clone())))?;
    Ok(RawFanout {
        clients,
        bytes_per_client: min_got,
        wall,
    })
}

/// Writes the whole image to every socket, each from its own task;
/// returns the sockets, still open.
async fn write_all(
    writers: Vec<TcpStream>,
    image: &[u8],
) -> Result<Vec<TcpStream>, RawFanoutError> {
    let clients = writers.len();
    let io = |e| RawFanoutError::Io(e, clients + 50);
    let image = bytes::Bytes::copy_from_slice(image);
    let mut tasks = tokio::task::JoinSet::new();
    for mut s in writers {
        let image = image.clone();
        tasks.spawn(async move {
            s.write_all(&image).await?;
            s.flush().await?;
            Ok::<_, std::io::Error>(s)
        });
    }
    let mut keep = Vec::with_capacity(clients);
    while let Some(t) = tasks.join_next().await {
        keep.push(t?.map_err(io)?);
    }
    Ok(keep)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_client_gets_every_byte() {
        let image: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        let r = run(8, &image).await.unwrap();
        assert_eq!(r.clients, 8);
        assert_eq!(r.bytes_per_client, image.len() as u64);
    }
}
