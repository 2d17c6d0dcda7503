//! Images that compress like firmware, for the delta rows: deterministic,
//! neither all zeros (a delta of zeros is a few bytes whatever changed) nor
//! all random (random bytes do not compress, so a delta of random edits is
//! the edited bytes themselves, and zstd's gain on real images goes
//! unmeasured).
//!
//! [`firmware_like`] lays an image out as a microcontroller's flash image
//! is laid out: 62% code (16-bit Thumb-like instructions from a skewed
//! table of common opcodes with register fields, 32-bit calls to random
//! targets, push/pop prologues and epilogues, literal pools of flash and
//! RAM addresses), 18% read-only strings (log messages from a small
//! vocabulary), 10% lookup tables (slowly rising 16- and 32-bit values)
//! and 10% initialised data (runs of zeros among random words). `zstd -19`
//! takes such an image to about 62% of its size, as it does Cortex-M and
//! ESP32 application images (55 to 70%); Linux executables, with their
//! symbol tables, compress further (about 40%).
//!
//! [`realistic_change`] is the release the delta rows measure: a few
//! scattered edits and a 16 KiB insertion of new code, all of it as
//! compressible as the rest.

/// xorshift64, seeded as `schemas::delta_zstd`'s test images are.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(6364136223846793005).wrapping_add(1) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform in `0..n` (n > 0; the bias is irrelevant here).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// In `0..n`, small values far more likely (the least of three draws).
    fn skewed(&mut self, n: u64) -> usize {
        (0..3).map(|_| self.below(n)).min().unwrap_or(0) as usize
    }
}

/// Common 16-bit Thumb encodings (mov, movs, ldr, str, adds, cmp, b, bx lr,
/// ldrb, strb, ...), most frequent first; register fields are or-ed in.
const OPS: [u16; 32] = [
    0x4600, 0x2000, 0x6800, 0x6000, 0x3000, 0x1c00, 0x4280, 0xd000, 0xe000, 0x4770, 0x7800, 0x7000,
    0x8800, 0x8000, 0x4000, 0x4300, 0x0000, 0x0800, 0x1800, 0x1a00, 0x9800, 0x9000, 0xb000, 0x4200,
    0xd100, 0x2800, 0x3800, 0x6840, 0x6040, 0xbf00, 0x4618, 0x4620,
];
/// Opcodes whose low byte is an immediate (movs, adds, b<cond>, cmp, subs).
const IMM8: [usize; 6] = [1, 4, 7, 8, 25, 26];
const PROLOGUES: [u16; 4] = [0xb5f0, 0xb570, 0xb510, 0xb538];
const EPILOGUES: [u16; 4] = [0xbdf0, 0xbd70, 0xbd10, 0xbd38];
const WORDS: [&str; 44] = [
    "error",
    "timeout",
    "init",
    "wifi",
    "mqtt",
    "sensor",
    "read",
    "write",
    "config",
    "flash",
    "boot",
    "update",
    "failed",
    "ok",
    "retry",
    "connect",
    "disconnect",
    "buffer",
    "overflow",
    "task",
    "queue",
    "heap",
    "stack",
    "gpio",
    "uart",
    "spi",
    "i2c",
    "adc",
    "dma",
    "irq",
    "clock",
    "power",
    "sleep",
    "wake",
    "version",
    "image",
    "block",
    "verify",
    "signature",
    "key",
    "reset",
    "watchdog",
    "battery",
    "level",
];

/// `len` bytes laid out like a firmware image, reproducible from `seed`.
pub fn firmware_like(len: usize, seed: u64) -> Vec<u8> {
    let mut r = Rng::new(seed);
    let mut out = Vec::with_capacity(len + 1024);
    let code_end = len * 62 / 100;
    let strings_end = len * 80 / 100;
    let tables_end = len * 90 / 100;
    while out.len() < code_end {
        function(&mut r, &mut out, len as u64);
    }
    out.truncate(code_end);
    while out.len() < strings_end {
        let words = 1 + r.below(6);
        let msg: Vec<&str> = (0..words)
            .map(|_| WORDS[r.skewed(WORDS.len() as u64)])
            .collect();
        out.extend_from_slice(msg.join(" ").as_bytes());
        if r.below(2) == 0 {
            out.extend_from_slice(b": %d");
        }
        out.extend_from_slice(b"\n\0");
    }
    out.truncate(strings_end);
    while out.len() < tables_end {
        let (wide, n) = (r.below(3) == 0, 16 + r.below(240));
        let (base, step) = (r.below(1 << 16), r.below(64));
        for j in 0..n {
            let v = base + j * step + r.below(4);
            if wide {
                out.extend_from_slice(&(v as u32).to_le_bytes());
            } else {
                out.extend_from_slice(&(v as u16).to_le_bytes());
            }
        }
    }
    out.truncate(tables_end);
    while out.len() < len {
        if r.below(3) == 0 {
            out.extend_from_slice(&(r.next() as u32).to_le_bytes());
        } else {
            out.resize(out.len() + 4 * (1 + r.below(64) as usize), 0);
        }
    }
    out.truncate(len);
    out
}

/// One function: prologue, body, epilogue, literal pool.
fn function(r: &mut Rng, out: &mut Vec<u8>, image_len: u64) {
    let half = |out: &mut Vec<u8>, h: u16| out.extend_from_slice(&h.to_le_bytes());
    half(out, PROLOGUES[r.below(4) as usize]);
    for _ in 0..8 + r.below(100) {
        if r.below(16) == 0 {
            // A 32-bit call (bl) to anywhere in 4 MiB.
            let off = r.below(1 << 22) as u16;
            half(out, 0xf000 | (off >> 11));
            half(out, 0xf800 | (off & 0x7ff));
            continue;
        }
        let i = r.skewed(OPS.len() as u64);
        let op = if IMM8.contains(&i) {
            OPS[i] | r.below(256) as u16
        } else {
            let rn = if r.below(2) == 0 { r.below(8) << 3 } else { 0 };
            OPS[i] | (r.below(8) | rn) as u16
        };
        half(out, op);
    }
    half(out, EPILOGUES[r.below(4) as usize]);
    if !out.len().is_multiple_of(4) {
        half(out, 0xbf00);
    }
    for _ in 0..r.below(4) {
        let addr = if r.below(3) == 0 {
            0x2000_0000 + (r.below(1 << 16) & !3)
        } else {
            0x0800_0000 + (r.below(image_len) & !3)
        };
        out.extend_from_slice(&(addr as u32).to_le_bytes());
    }
}

/// What [`realistic_change`] changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Change {
    /// Scattered edits, each 32 to 511 bytes of new code or data.
    pub edits: usize,
    /// Bytes those edits replaced.
    pub edited_bytes: usize,
    /// Bytes of new code inserted in the middle.
    pub inserted_bytes: usize,
}

impl Change {
    /// Changed bytes as a share of the new image.
    pub fn share(&self, new_len: usize) -> f64 {
        (self.edited_bytes + self.inserted_bytes) as f64 / new_len.max(1) as f64
    }
}

/// The bytes inserted by [`realistic_change`]: 16 KiB.
pub const INSERTED: usize = 16 * 1024;
/// The scattered edits of [`realistic_change`].
pub const EDITS: usize = 32;

/// `old` with [`EDITS`] scattered edits (each 32 to 511 bytes of new
/// firmware-like bytes at a pseudo-random place) and [`INSERTED`] bytes of
/// new code inserted in the middle: a release that changes 2 to 3% of a
/// 1 MiB image. `seed` makes another release of the same kind.
pub fn realistic_change(old: &[u8], seed: u64) -> (Vec<u8>, Change) {
    let mut new = old.to_vec();
    let mut r = Rng::new(seed ^ 0x0de1_7a00);
    let mut edited_bytes = 0;
    for k in 0..EDITS {
        let len = (32 + r.below(480) as usize).min(new.len() / 4);
        let at = r.below((new.len() - len).max(1) as u64) as usize;
        let bytes = firmware_like(len, seed.wrapping_mul(1000) + k as u64);
        new[at..at + len].copy_from_slice(&bytes);
        edited_bytes += len;
    }
    let mid = new.len() / 2;
    new.splice(mid..mid, firmware_like(INSERTED, seed.wrapping_add(77)));
    (
        new,
        Change {
            edits: EDITS,
            edited_bytes,
            inserted_bytes: INSERTED,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compresses_like_firmware_and_is_reproducible() {
        let img = firmware_like(256 * 1024, 7);
        assert_eq!(img.len(), 256 * 1024);
        assert_eq!(img, firmware_like(256 * 1024, 7));
        assert_ne!(img, firmware_like(256 * 1024, 8));
        let z = zstd::bulk::compress(&img, 19).unwrap();
        let ratio = z.len() as f64 / img.len() as f64;
        assert!((0.5..0.75).contains(&ratio), "zstd -19 ratio {ratio:.2}");
    }

    #[test]
    fn the_change_is_a_few_percent_and_the_delta_small() {
        let old = firmware_like(1024 * 1024, 1);
        let (new, change) = realistic_change(&old, 2);
        assert_eq!(new.len(), old.len() + INSERTED);
        let share = change.share(new.len());
        assert!((0.015..0.04).contains(&share), "{share}");
        let d = schemas::delta_zstd::make(&old, &new).unwrap();
        assert!(d.len() * 20 < new.len(), "delta {} bytes", d.len());
    }
}
