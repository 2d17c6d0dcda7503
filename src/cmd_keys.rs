//! `ota keygen`: a release key pair, an operator key pair and a director
//! key pair, as text files (see `keyfile.rs` for the format and the file
//! modes). `ota http-token`: a read token for the HTTP listener and the
//! hash the config keeps.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use schemas::keys;

use crate::keyfile::{self, PRIVATE_EXT, PUBLIC_EXT};
use crate::Run;

/// Create a release, an operator and a director key pair.
///
/// Writes six files into DIR: release.key and release.pub, operator.key
/// and operator.pub, director.key and director.pub. Each holds 64 hex
/// characters and a newline; the private (.key) files get mode 0600.
///
/// The release key signs what devices install: keep release.key offline
/// and give release.pub to your devices when you provision them. The
/// operator key signs the commands you send to the bridge: give
/// operator.pub to the bridge and keep operator.key for the ota CLI. The
/// director key signs what the bridge tells devices (groups, campaigns,
/// acks): give director.key to the bridge ([bridge] director_key) and
/// director.pub to your devices.
///
/// keygen never overwrites a key unless you pass --force. In a DIR that
/// holds the release and operator pairs of an older keygen, it adds the
/// director pair only.
#[derive(clap::Args)]
#[command(after_help = "Example:\n  ota keygen --out keys/")]
pub struct Keygen {
    /// The directory to write the six key files into; created if missing.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,

    /// Replace key files that already exist. The old keys are lost: images
    /// signed with the old release key no longer verify on devices that
    /// only trust the new one.
    #[arg(long)]
    force: bool,
}

/// The pairs keygen writes, by file stem.
pub(crate) const PAIRS: [&str; 3] = ["release", "operator", "director"];

impl Run for Keygen {
    fn run(self) -> anyhow::Result<()> {
        if self.out.exists() && !self.out.is_dir() {
            bail!("{} exists and is not a directory", self.out.display());
        }
        std::fs::create_dir_all(&self.out)
            .with_context(|| format!("cannot create {}", self.out.display()))?;

        // Check every target first, so a refusal leaves no half-written set.
        // A whole pair already there is kept (an older keygen wrote no
        // director pair); anything else that exists is a refusal.
        let mut todo: Vec<&str> = PAIRS.to_vec();
        if !self.force {
            let exists = |stem: &str, ext: &str| file(&self.out, stem, ext).exists();
            let whole = |stem: &str| exists(stem, PRIVATE_EXT) && exists(stem, PUBLIC_EXT);
            let kept: Vec<&str> = PAIRS.iter().copied().filter(|s| whole(s)).collect();
            if kept.len() < PAIRS.len() {
                todo.retain(|s| !kept.contains(s));
            }
            for stem in &todo {
                for ext in [PRIVATE_EXT, PUBLIC_EXT] {
                    let path = file(&self.out, stem, ext);
                    if path.exists() {
                        bail!(
                            "{} already exists: keys are never overwritten; use --force to replace them (the old keys are lost)",
                            path.display()
                        );
                    }
                }
            }
            for stem in &kept {
                if todo.len() < PAIRS.len() {
                    println!("{stem} key pair: kept (already in {})", self.out.display());
                }
            }
        }

        let mut kids = Vec::new();
        for stem in todo {
            let (private, public, kid) = write_pair(&self.out, stem, self.force)?;
            kids.push((stem, kid, private, public));
        }

        for (stem, kid, private, public) in &kids {
            println!(
                "{stem} key pair: {} (private, mode 0600) and {} (kid {kid})",
                private.display(),
                public.display()
            );
        }
        let release_key = file(&self.out, "release", PRIVATE_EXT);
        let release_pub = file(&self.out, "release", PUBLIC_EXT);
        let (rk, rp) = (release_key.display(), release_pub.display());
        let op = file(&self.out, "operator", PUBLIC_EXT);
        let ok = file(&self.out, "operator", PRIVATE_EXT);
        println!();
        println!("next steps:");
        println!("  keep {rk} offline: whoever holds it can sign images your devices install");
        println!("  provision your devices with {rp} (their trusted release key)");
        println!("  sign an image:  ota artifact sign IMAGE --kind firmware --component main --version 1.0.0 --arch esp32 --key {rk}");
        println!("  check it:       ota artifact inspect IMAGE.manifest --trust {rp}");
        println!(
            "  give {} to the bridge (a trusted operator key); the ota fleet commands sign with {}",
            op.display(),
            ok.display()
        );
        println!(
            "  give {} to the bridge ([bridge] director_key) and provision your devices with {} (their director key)",
            file(&self.out, "director", PRIVATE_EXT).display(),
            file(&self.out, "director", PUBLIC_EXT).display()
        );
        Ok(())
    }
}

/// Writes a new key pair `DIR/STEM.key` (mode 0600) and `DIR/STEM.pub`;
/// returns both paths and the kid in hex.
pub(crate) fn write_pair(
    dir: &Path,
    stem: &str,
    force: bool,
) -> anyhow::Result<(PathBuf, PathBuf, String)> {
    let key = keys::generate();
    let private = file(dir, stem, PRIVATE_EXT);
    let public = file(dir, stem, PUBLIC_EXT);
    keyfile::write_key_file(&private, &keys::signing_key_to_text(&key), true, force)?;
    keyfile::write_key_file(
        &public,
        &keys::verifying_key_to_text(&key.verifying_key()),
        false,
        force,
    )?;
    Ok((
        private,
        public,
        keys::kid_to_hex(&keys::kid(&key.verifying_key())),
    ))
}

fn file(dir: &Path, stem: &str, ext: &str) -> PathBuf {
    dir.join(format!("{stem}.{ext}"))
}

/// Make a read token for the HTTP listener (dashboard, /api, /metrics).
///
/// Prints a new random token, and the line for [http] read_tokens in
/// ota.toml, which holds only the token's SHA-256: the bridge never
/// stores the token. Give the token to the reader (a Prometheus
/// `authorization` credential, or the dashboard as /#token=TOKEN); it is
/// shown once. With --hash, prints the line for a token you already have
/// (read from stdin).
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  ota http-token\n  printf %s \"$TOKEN\" | ota http-token --hash"
)]
pub struct HttpToken {
    /// Read an existing token from stdin and print only its config line.
    #[arg(long)]
    hash: bool,
}

impl Run for HttpToken {
    fn run(self) -> anyhow::Result<()> {
        use bridge::config::http::{new_token, TokenHash};
        let token = if self.hash {
            let mut t = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut t)
                .context("cannot read the token from stdin")?;
            let t = t.trim().to_string();
            if t.is_empty() {
                bail!("no token on stdin: pipe the token in, e.g. printf %s \"$TOKEN\" | ota http-token --hash");
            }
            t
        } else {
            let t = new_token();
            println!("token (give it to the reader; it is not stored anywhere):\n  {t}");
            t
        };
        let line = TokenHash::of(token.as_bytes()).to_config();
        println!("add its hash to [http] read_tokens in ota.toml:\n  read_tokens = [\"{line}\"]");
        Ok(())
    }
}
