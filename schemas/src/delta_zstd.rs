//! E3's payload: one zstd frame that rebuilds the target image with the
//! installed image as a raw-content reference prefix, what
//! `zstd --patch-from=OLD NEW` writes and `zstd -d --patch-from=OLD` reads.
//!
//! Making follows the CLI's `--patch-from`: the old image as a reference
//! prefix (`ZSTD_CCtx_refPrefix`, always raw content, even when the image
//! begins with the dictionary magic `37 a4 30 ec`), a window covering the
//! larger image, long-distance matching and a high level. A raw-content
//! dictionary at level 3 without those settings barely uses the old image
//! past a few MiB.
//!
//! Pure byte transformations; the writer of [`apply`] is where the caller
//! puts the target (a file, a hasher), so the target is never held twice.

use std::io::{self, Read, Write};

use sha2::{Digest, Sha256};

/// The compression level deltas are made at (of 1..=22; 19 is the
/// highest that needs no `--ultra`).
pub const LEVEL: i32 = 19;

/// zstd's smallest window log.
const MIN_WINDOW_LOG: u32 = 10;
/// The largest window log a reader accepts: 64 MiB images, 2^26.
pub const MAX_WINDOW_LOG: u32 = 27;

/// The window log that covers the larger of two images: log2 rounded up.
pub fn window_log(old_len: u64, new_len: u64) -> u32 {
    let larger = old_len.max(new_len).max(1);
    let log = 64 - (larger - 1).leading_zeros();
    log.clamp(MIN_WINDOW_LOG, MAX_WINDOW_LOG)
}

/// Why a payload does not rebuild the target: every case is
/// `failed`/`hash_mismatch` on the device.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("the payload is not exactly one zstd frame: {0}")]
    NotOneFrame(String),
    #[error("the payload does not decompress with the installed image: {0}")]
    Corrupt(io::Error),
    #[error("the rebuilt image is over {max} bytes")]
    TooLarge { max: u64 },
    #[error("the rebuilt image is {got} bytes, the manifest says {want}")]
    Size { got: u64, want: u64 },
    #[error("the rebuilt image's sha256 is not the manifest's target_sha256")]
    Hash,
    #[error("cannot write the rebuilt image: {0}")]
    Write(io::Error),
}

/// Makes the delta payload that rebuilds `new` from `old`.
pub fn make(old: &[u8], new: &[u8]) -> io::Result<Vec<u8>> {
    let mut enc = zstd::stream::write::Encoder::with_ref_prefix(Vec::new(), LEVEL, old)?;
    enc.window_log(window_log(old.len() as u64, new.len() as u64))?;
    enc.long_distance_matching(true)?;
    enc.set_pledged_src_size(Some(new.len() as u64))?;
    enc.include_checksum(true)?;
    enc.write_all(new)?;
    enc.finish()
}

/// What a payload rebuilt: its size and SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rebuilt {
    /// Bytes written.
    pub size: u64,
    /// SHA-256 of what was written.
    pub sha256: [u8; 32],
}

/// Rebuilds the target from `payload` with `old` as the reference prefix,
/// streaming it into `out`, and checks it is `target_size` bytes hashing to
/// `target_sha256`. The window is bounded by the larger of the two sizes.
pub fn apply(
    old: &[u8],
    payload: &[u8],
    target_size: u64,
    target_sha256: &[u8; 32],
    out: impl Write,
) -> Result<Rebuilt, ApplyError> {
    match zstd::zstd_safe::find_frame_compressed_size(payload) {
        Ok(n) if n == payload.len() => {}
        Ok(n) => {
            return Err(ApplyError::NotOneFrame(format!(
                "the first frame is {n} of {} bytes",
                payload.len()
            )))
        }
        Err(code) => {
            return Err(ApplyError::NotOneFrame(
                zstd::zstd_safe::get_error_name(code).to_string(),
            ))
        }
    }
    let mut dec = zstd::stream::read::Decoder::with_ref_prefix(payload, old)
        .map_err(ApplyError::Corrupt)?
        .single_frame();
    dec.window_log_max(window_log(old.len() as u64, target_size))
        .map_err(ApplyError::Corrupt)?;
    let mut sink = Sink {
        out,
        hash: Sha256::new(),
        size: 0,
        max: target_size,
    };
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match dec.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ApplyError::Corrupt(e)),
        };
        sink.take(&buf[..n])?;
    }
    sink.out.flush().map_err(ApplyError::Write)?;
    if sink.size != target_size {
        return Err(ApplyError::Size {
            got: sink.size,
            want: target_size,
        });
    }
    let sha256: [u8; 32] = sink.hash.finalize().into();
    if &sha256 != target_sha256 {
        return Err(ApplyError::Hash);
    }
    Ok(Rebuilt {
        size: sink.size,
        sha256,
    })
}

struct Sink<W> {
    out: W,
    hash: Sha256,
    size: u64,
    max: u64,
}

impl<W: Write> Sink<W> {
    fn take(&mut self, chunk: &[u8]) -> Result<(), ApplyError> {
        self.size += chunk.len() as u64;
        if self.size > self.max {
            return Err(ApplyError::TooLarge { max: self.max });
        }
        self.hash.update(chunk);
        self.out.write_all(chunk).map_err(ApplyError::Write)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A deterministic pseudo-random image.
    pub fn image(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// `old` with a few scattered edits and an insertion.
    pub fn edited(old: &[u8]) -> Vec<u8> {
        let mut new = old.to_vec();
        for i in (0..new.len()).step_by(new.len() / 8 + 1) {
            new[i] ^= 0x5a;
        }
        let mid = new.len() / 2;
        new.splice(mid..mid, image(4096, 99));
        new
    }

    fn sha(b: &[u8]) -> [u8; 32] {
        Sha256::digest(b).into()
    }

    #[test]
    fn window_covers_the_larger_image() {
        assert_eq!(window_log(1, 1), 10);
        assert_eq!(window_log(1 << 20, 1000), 20);
        assert_eq!(window_log(1000, (1 << 20) + 1), 21);
        assert_eq!(window_log(64 << 20, 64 << 20), 26);
    }

    #[test]
    fn rebuilds_and_is_small() {
        let old = image(256 * 1024, 1);
        let new = edited(&old);
        let d = make(&old, &new).unwrap();
        assert!(d.len() < new.len() / 20, "delta {} bytes", d.len());
        let mut out = Vec::new();
        let r = apply(&old, &d, new.len() as u64, &sha(&new), &mut out).unwrap();
        assert_eq!(out, new);
        assert_eq!(r.size, new.len() as u64);
    }

    #[test]
    fn old_images_with_the_dictionary_magic_are_raw_content() {
        let mut old = vec![0x37, 0xa4, 0x30, 0xec];
        old.extend(image(64 * 1024, 2));
        let new = edited(&old);
        let d = make(&old, &new).unwrap();
        let mut out = Vec::new();
        apply(&old, &d, new.len() as u64, &sha(&new), &mut out).unwrap();
        assert_eq!(out, new);
    }

    #[test]
    fn refuses_what_does_not_rebuild_the_target() {
        let old = image(64 * 1024, 3);
        let new = edited(&old);
        let d = make(&old, &new).unwrap();
        let (n, h) = (new.len() as u64, sha(&new));
        // Another installed image.
        let other = image(64 * 1024, 4);
        assert!(apply(&other, &d, n, &h, io::sink()).is_err());
        // A wrong target hash or size.
        assert!(matches!(
            apply(&old, &d, n, &[0; 32], io::sink()),
            Err(ApplyError::Hash)
        ));
        assert!(matches!(
            apply(&old, &d, n - 1, &h, io::sink()),
            Err(ApplyError::TooLarge { .. })
        ));
        assert!(matches!(
            apply(&old, &d, n + 1, &h, io::sink()),
            Err(ApplyError::Size { .. })
        ));
        // Two frames, a truncated frame, garbage.
        let mut two = d.clone();
        two.extend_from_slice(&d);
        assert!(matches!(
            apply(&old, &two, n, &h, io::sink()),
            Err(ApplyError::NotOneFrame(_))
        ));
        assert!(apply(&old, &d[..d.len() - 3], n, &h, io::sink()).is_err());
        assert!(apply(&old, b"not zstd", n, &h, io::sink()).is_err());
        // A flipped byte inside the frame.
        let mut bad = d.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 0xff;
        assert!(apply(&old, &bad, n, &h, io::sink()).is_err());
    }
}
