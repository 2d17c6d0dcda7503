//! Key files on disk: 64 hex characters and a newline (`schemas::keys`).
//! Private files are written with mode 0600 and never replaced unless the
//! caller forces it. The two kinds of file look alike, so the name says
//! which is which (`*.key` private, `*.pub` public) and loading checks it.

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use schemas::keys::{self, SigningKey, VerifyingKey};

/// The extension of a private key file.
pub const PRIVATE_EXT: &str = "key";
/// The extension of a public key file.
pub const PUBLIC_EXT: &str = "pub";

/// Which key a command needs, for error messages.
#[derive(Debug, Clone, Copy)]
pub enum Role {
    /// Signs manifests (`release.key`).
    Release,
    /// Signs operator commands (`operator.key`).
    Operator,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Release => "release",
            Role::Operator => "operator",
        }
    }
}

fn has_ext(path: &Path, ext: &str) -> bool {
    path.extension().is_some_and(|e| e == ext)
}

fn read_text(path: &Path, what: &str) -> anyhow::Result<String> {
    let meta = match fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!(
                "{what} {} does not exist (`ota keygen --out DIR` creates key pairs)",
                path.display()
            )
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {what} {}", path.display())),
    };
    if !meta.is_file() {
        bail!("{what} {} is not a file", path.display());
    }
    // A key file is 65 bytes; refuse to slurp something else by mistake.
    if meta.len() > 1024 {
        bail!(
            "{what} {} is {} bytes: a key file holds 64 hex characters",
            path.display(),
            meta.len()
        );
    }
    fs::read_to_string(path).with_context(|| format!("cannot read {what} {}", path.display()))
}

/// Loads a private key for `role`. Refuses a `.pub` file, the other role's
/// key file by its usual name, and a key that does not match the `.pub`
/// file beside it.
pub fn load_signing_key(path: &Path, role: Role) -> anyhow::Result<SigningKey> {
    let what = format!("{} key", role.name());
    if has_ext(path, PUBLIC_EXT) {
        bail!(
            "{} is a public key (.{PUBLIC_EXT}): signing needs the private {what}, e.g. {}",
            path.display(),
            path.with_extension(PRIVATE_EXT).display()
        );
    }
    let other = match role {
        Role::Release => Role::Operator,
        Role::Operator => Role::Release,
    };
    if path.file_stem().is_some_and(|s| s == other.name()) {
        bail!(
            "{} is the {} key: this command needs the {what} ({}.{PRIVATE_EXT})",
            path.display(),
            other.name(),
            role.name()
        );
    }
    let text = read_text(path, &what)?;
    let key = keys::parse_signing_key(&text)
        .with_context(|| format!("{what} {} is not a key file", path.display()))?;
    warn_if_readable_by_others(path);
    let public = path.with_extension(PUBLIC_EXT);
    if has_ext(path, PRIVATE_EXT) && public.is_file() {
        if let Ok(text) = read_text(&public, "public key") {
            if let Ok(p) = keys::parse_verifying_key(&text) {
                if p != key.verifying_key() {
                    bail!(
                        "{} does not belong to {} beside it: one of them was replaced; run `ota keygen` again or restore the pair",
                        path.display(),
                        public.display()
                    );
                }
            }
        }
    }
    Ok(key)
}

/// Loads a public key. Refuses a `.key` file: a private key never needs to
/// leave the signer's machine.
pub fn load_verifying_key(path: &Path) -> anyhow::Result<VerifyingKey> {
    if has_ext(path, PRIVATE_EXT) {
        bail!(
            "{} is a private key (.{PRIVATE_EXT}): give the public key instead, e.g. {}",
            path.display(),
            path.with_extension(PUBLIC_EXT).display()
        );
    }
    let text = read_text(path, "public key")?;
    keys::parse_verifying_key(&text)
        .with_context(|| format!("public key {} is not a key file", path.display()))
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    if let Ok(meta) = fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(path = %path.display(), mode = format!("{mode:o}"), "private key file is readable by others: chmod 600 it");
        }
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &Path) {}

/// Writes one key file. `private` files get mode 0600 from the moment they
/// exist. Without `force` an existing file is an error and is left alone;
/// with it, the new file replaces the old one atomically.
pub fn write_key_file(path: &Path, text: &str, private: bool, force: bool) -> anyhow::Result<()> {
    let mode = if private { 0o600 } else { 0o644 };
    if force {
        let tmp = tmp_path(path);
        // A leftover from an earlier interrupted run is ours to replace.
        let _ = fs::remove_file(&tmp);
        create_new(&tmp, text, mode).with_context(|| format!("cannot write {}", tmp.display()))?;
        fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))?;
        return Ok(());
    }
    match create_new(path, text, mode) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => bail!(
            "{} already exists: keys are never overwritten; use --force to replace it (the old key is lost)",
            path.display()
        ),
        Err(e) => Err(e).with_context(|| format!("cannot write {}", path.display())),
    }
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Creates `path` (it must not exist) with `mode` and writes `text`, synced.
fn create_new(path: &Path, text: &str, mode: u32) -> std::io::Result<()> {
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = opts.open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}
