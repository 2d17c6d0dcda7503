//! Where should artifact bytes live: in sled, or in content-addressed files
//! under `data_dir`? Writes one 64 MiB image each way (durably), then reads
//! random 4 KiB blocks, and prints a table (docs/BENCHMARKS.md).
//!
//! `cargo run -p ota-bridge --example artifact_storage_bench [DIR]`
//! (DIR defaults to a temporary directory; put it on the disk you care about).

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

const IMAGE: usize = 64 * 1024 * 1024;
const BLOCK: usize = 4096;
const READS: usize = 20_000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tmp = tempfile::tempdir()?;
    let dir = std::env::args()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| tmp.path().to_path_buf());
    let image = pseudo_random(IMAGE);
    let blocks = IMAGE / BLOCK;
    let order = pseudo_random_indices(READS, blocks);

    println!(
        "| store | write 64 MiB (durable) | on disk | random 4 KiB read, mean | p99 | RSS growth |"
    );
    println!("|---|---|---|---|---|---|");

    // sled: one value per 4 KiB block, key = artifact id ‖ be32(index).
    {
        let base = rss_mib();
        let path = dir.join("sled");
        let db = sled::Config::new().path(&path).open()?;
        let tree = db.open_tree("artifact_blocks")?;
        let t = Instant::now();
        for (i, chunk) in image.chunks(BLOCK).enumerate() {
            tree.insert(key(i as u32), chunk)?;
        }
        db.flush()?;
        let write = t.elapsed();
        let mut lat = Vec::with_capacity(READS);
        let mut sum = 0u64;
        for &i in &order {
            let t = Instant::now();
            let v = tree.get(key(i as u32))?.ok_or("missing block")?;
            lat.push(t.elapsed());
            sum += u64::from(v[0]);
        }
        std::hint::black_box(sum);
        row("sled (value per block)", write, du(&path), &mut lat, base);
    }
    // Content-addressed file: written to a temp name, fsynced, renamed.
    {
        let base = rss_mib();
        let path = dir.join("files");
        std::fs::create_dir_all(&path)?;
        let t = Instant::now();
        let tmp = path.join("upload.part");
        let mut f = File::create(&tmp)?;
        for chunk in image.chunks(48 * 1024) {
            f.write_all(chunk)?;
        }
        f.sync_all()?;
        let final_path = path.join("0123abcd");
        std::fs::rename(&tmp, &final_path)?;
        File::open(&path)?.sync_all()?;
        let write = t.elapsed();
        let f = File::open(&final_path)?;
        let mut buf = vec![0u8; BLOCK];
        let mut lat = Vec::with_capacity(READS);
        let mut sum = 0u64;
        for &i in &order {
            let t = Instant::now();
            f.read_exact_at(&mut buf, (i * BLOCK) as u64)?;
            lat.push(t.elapsed());
            sum += u64::from(buf[0]);
        }
        std::hint::black_box(sum);
        row("file (pread)", write, du(&path), &mut lat, base);
    }
    Ok(())
}

fn key(i: u32) -> Vec<u8> {
    let mut k = b"fw-1.0.0-esp32\0".to_vec();
    k.extend_from_slice(&i.to_be_bytes());
    k
}

fn row(name: &str, write: Duration, disk: u64, lat: &mut [Duration], base: u64) {
    lat.sort();
    let mean = lat.iter().sum::<Duration>() / lat.len() as u32;
    let p99 = lat[lat.len() * 99 / 100];
    println!(
        "| {name} | {:.0} ms | {:.0} MiB | {:.1} µs | {:.1} µs | {} MiB |",
        write.as_secs_f64() * 1e3,
        disk as f64 / 1048576.0,
        mean.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6,
        rss_mib().saturating_sub(base)
    );
}

fn du(p: &Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(p) {
        for e in entries.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => total += du(&e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

fn rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .map(str::to_owned)
        })
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb / 1024)
}

/// xorshift bytes: incompressible, reproducible.
fn pseudo_random(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(n);
    out
}

fn pseudo_random_indices(n: usize, below: usize) -> Vec<usize> {
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % below as u64) as usize
        })
        .collect()
}
