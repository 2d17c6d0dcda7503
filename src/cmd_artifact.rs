//! `ota artifact sign | inspect`: make a signed manifest (COSE_Sign1) from
//! an image, and show what a signed manifest says and whether it verifies.
//! The manifest itself is built by `schemas::release`.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use schemas::cose::TrustStore;
use schemas::ids::ArtifactId;
use schemas::keys;
use schemas::msg::manifest::{sign, verify_entry, ManifestError};
use schemas::msg::{limits, Kind, Manifest};
use schemas::release::{self, ReleaseSpec, MAX_IMAGE_BYTES};
use schemas::ComponentName;

use crate::cmd_artifact_ops::{manifest_path, suffixed};
use crate::keyfile::{self, Role};
use crate::Run;

/// Sign an image into a manifest, inspect a signed manifest, or push,
/// list, show and delete the artifacts a bridge holds.
#[derive(clap::Subcommand)]
pub enum Artifact {
    Sign(Sign),
    Inspect(Inspect),
    Push(crate::cmd_artifact_ops::Push),
    List(crate::cmd_artifact_ops::List),
    Show(crate::cmd_artifact_ops::Show),
    Delete(crate::cmd_artifact_ops::Delete),
}

impl Run for Artifact {
    fn run(self) -> anyhow::Result<()> {
        match self {
            Artifact::Sign(s) => s.run(),
            Artifact::Inspect(i) => i.run(),
            Artifact::Push(p) => p.run(),
            Artifact::List(l) => l.run(),
            Artifact::Show(s) => s.run(),
            Artifact::Delete(d) => d.run(),
        }
    }
}

/// Sign an image: write its manifest, a COSE_Sign1 signed with your
/// release key.
///
/// The manifest says what the image is (kind, component, version, arch),
/// holds its size, SHA-256 and the Merkle root of its blocks, and is what
/// devices verify before they download a single block. The image itself
/// is not changed. Images of 1 byte to 64 MiB are accepted.
#[derive(clap::Args)]
#[command(
    after_help = "Example:\n  ota artifact sign fw-1.3.0.bin --kind firmware --component main \\\n      \
                        --version 1.3.0 --arch esp32 --key keys/release.key"
)]
pub struct Sign {
    /// The image file to sign.
    #[arg(value_name = "IMAGE")]
    image: PathBuf,

    /// What the image is: firmware (the device reboots into it), app or
    /// config (installed in place).
    #[arg(long, value_name = "KIND", value_parser = parse_kind)]
    kind: Kind,

    /// The component on the device the image replaces, e.g. main. It must
    /// be one the device reports in its versions.
    #[arg(long, value_name = "NAME", value_parser = parse_name::<ComponentName>)]
    component: ComponentName,

    /// The image's version, semver 2.0 (e.g. 1.3.0 or 2.0.0-rc.1).
    /// Devices install it only over a lower version, unless
    /// --allow-downgrade.
    #[arg(long, value_name = "SEMVER", value_parser = parse_semver)]
    version: String,

    /// The device architecture the image is built for (esp32, armv7,
    /// aarch64, x86_64, ...), or `any` for images every device can run.
    #[arg(long, value_name = "ARCH", value_parser = parse_arch)]
    arch: String,

    /// Bytes per block: a power of two from 256 to 65536. Devices fetch
    /// and verify the image block by block.
    #[arg(long, value_name = "N", default_value_t = schemas::merkle::DEFAULT_BLOCK_SIZE, value_parser = parse_block_size)]
    block_size: u32,

    /// The artifact's unique id (1-64 characters of [A-Za-z0-9._-]).
    /// Default: {component}-{version}-{arch}, other characters replaced
    /// by '-'.
    /// (`--artifact-id` is the old spelling, still accepted.)
    #[arg(long = "id", alias = "artifact-id", value_name = "ID", value_parser = parse_name::<ArtifactId>)]
    artifact_id: Option<ArtifactId>,

    /// The lowest version a device must run before it may install this
    /// one (semver); devices below it report `min_version`.
    #[arg(long, value_name = "SEMVER", value_parser = parse_semver)]
    min_version: Option<String>,

    /// Let devices that run a higher version install this one (a
    /// rollback release). Without it they refuse with `version_rejected`.
    #[arg(long)]
    allow_downgrade: bool,

    /// Your private release key (release.key from `ota keygen`).
    #[arg(long, value_name = "RELEASE_KEY")]
    key: PathBuf,

    /// Where to write the manifest. Default: IMAGE.manifest beside the
    /// image. An existing manifest there is replaced.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,

    /// Also make a delta (E3) from an older image installed as VERSION:
    /// writes IMAGE.from-VERSION.zst (a zstd --patch-from frame) and its
    /// signed manifest IMAGE.from-VERSION.zst.manifest beside the image.
    /// Repeat it for several older versions (at most 6 per release).
    #[arg(long, value_name = "OLD@VERSION", value_parser = parse_delta_from)]
    delta_from: Vec<DeltaFrom>,
}

/// `--delta-from OLD.bin@VERSION`.
#[derive(Clone)]
struct DeltaFrom {
    image: PathBuf,
    version: String,
}

fn parse_delta_from(s: &str) -> Result<DeltaFrom, String> {
    let (image, version) = s
        .rsplit_once('@')
        .ok_or("use OLD.bin@VERSION, e.g. fw-1.2.0.bin@1.2.0")?;
    if image.is_empty() {
        return Err("the old image's path is empty: use OLD.bin@VERSION".into());
    }
    Ok(DeltaFrom {
        image: image.into(),
        version: parse_semver(version)?,
    })
}

impl Run for Sign {
    fn run(self) -> anyhow::Result<()> {
        let key = keyfile::load_signing_key(&self.key, Role::Release)?;
        let spec = ReleaseSpec {
            kind: self.kind,
            component: self.component,
            version: self.version,
            arch: self.arch,
            block_size: self.block_size,
            artifact: self.artifact_id,
            min_version: self.min_version,
            allow_downgrade: self.allow_downgrade,
            created: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .context("the system clock is before 1970")?
                .as_secs(),
        };
        release::check_spec(&spec)?;
        let image = read_image(&self.image)?;
        let manifest = release::build_manifest(&image, &spec)?;
        let envelope = sign(&manifest, &key);
        // Check what we wrote the way a device will, with the public key.
        verify_entry(&envelope, &TrustStore::new([key.verifying_key()])).map_err(|e| {
            anyhow::anyhow!(
                "the manifest just signed does not verify ({}): this is a bug in ota",
                describe(&e)
            )
        })?;

        let out = self.out.unwrap_or_else(|| manifest_path(&self.image));
        write_atomically(&out, &envelope)?;
        println!(
            "signed {}: artifact {}, {} {} {} for {}, {} bytes in {} blocks of {}",
            self.image.display(),
            manifest.artifact,
            manifest.kind,
            manifest.component,
            manifest.version,
            manifest.arch,
            manifest.size,
            manifest.blocks,
            manifest.block_size
        );
        println!(
            "wrote {} ({} bytes), signed by kid {}",
            out.display(),
            envelope.len(),
            keys::kid_to_hex(&keys::kid(&key.verifying_key()))
        );
        if self.delta_from.len() > limits::MAX_DELTAS {
            bail!(
                "{} --delta-from given: an announcement carries at most {} deltas",
                self.delta_from.len(),
                limits::MAX_DELTAS
            );
        }
        for from in &self.delta_from {
            sign_delta(&self.image, &image, &manifest, from, &key)?;
        }
        Ok(())
    }
}

/// Makes, signs and writes the delta from `from` to `image`.
fn sign_delta(
    path: &Path,
    image: &[u8],
    full: &Manifest,
    from: &DeltaFrom,
    key: &keys::SigningKey,
) -> anyhow::Result<()> {
    let old = read_image(&from.image)?;
    let (payload, delta) = release::build_delta(&old, image, full, &from.version)
        .with_context(|| format!("cannot make the delta from {}", from.image.display()))?;
    let envelope = sign(&delta, key);
    let payload_path = suffixed(path, &format!(".from-{}.zst", from.version));
    write_atomically(&payload_path, &payload)?;
    let manifest_out = manifest_path(&payload_path);
    write_atomically(&manifest_out, &envelope)?;
    println!(
        "delta from {} ({}): artifact {}, {} bytes for {} ({:.1}% of the image), wrote {} and {}",
        from.version,
        from.image.display(),
        delta.artifact,
        payload.len(),
        full.size,
        100.0 * payload.len() as f64 / full.size as f64,
        payload_path.display(),
        manifest_out.display()
    );
    Ok(())
}

/// Show what a signed manifest says and whether it verifies.
///
/// Prints every field of the manifest (hashes in hex) and the kid of the
/// key that signed it. With --trust, also checks the signature the way a
/// device does, and exits with 1 when it does not verify.
#[derive(clap::Args)]
#[command(
    after_help = "Example:\n  ota artifact inspect fw-1.3.0.bin.manifest --trust keys/release.pub"
)]
pub struct Inspect {
    /// The signed manifest file (IMAGE.manifest from `ota artifact sign`).
    #[arg(value_name = "MANIFEST")]
    manifest: PathBuf,

    /// A trusted release public key (release.pub). Repeat it to trust
    /// several; the manifest verifies when its kid names one of them and
    /// the signature holds.
    #[arg(long, value_name = "PUBKEY")]
    trust: Vec<PathBuf>,

    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

impl Run for Inspect {
    fn run(self) -> anyhow::Result<()> {
        let trust = self
            .trust
            .iter()
            .map(|p| keyfile::load_verifying_key(p))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let envelope = read_manifest(&self.manifest)?;
        let Some(read) = release::read_unverified(&envelope) else {
            bail!(
                "{} is not a signed manifest (bad_manifest): expected a COSE_Sign1 array [protected, unprotected, payload, signature]",
                self.manifest.display()
            );
        };
        let manifest = read.manifest.as_ref().map_err(|e| {
            anyhow::anyhow!(
                "{} holds no valid manifest (bad_manifest): {e}",
                self.manifest.display()
            )
        })?;
        let verdict =
            (!trust.is_empty()).then(|| verify_entry(&envelope, &TrustStore::new(trust.clone())));

        let kid = read.kid.map(|k| keys::kid_to_hex(&k));
        if self.json {
            print_json(
                manifest,
                kid.as_deref(),
                read.tagged,
                &trust,
                verdict.as_ref(),
            )?;
        } else {
            print_text(
                manifest,
                kid.as_deref(),
                read.tagged,
                &self.trust,
                verdict.as_ref(),
            );
        }
        match verdict {
            Some(Err(e)) => bail!(
                "{} does not verify: {}",
                self.manifest.display(),
                describe(&e)
            ),
            _ => Ok(()),
        }
    }
}

fn print_text(
    m: &Manifest,
    kid: Option<&str>,
    tagged: bool,
    trust: &[PathBuf],
    verdict: Option<&Result<Manifest, ManifestError>>,
) {
    let row = |k: &str, v: &dyn std::fmt::Display| println!("{k:<16}{v}");
    row("artifact", &m.artifact);
    row("kind", &m.kind);
    row("component", &m.component);
    row("version", &m.version);
    row("arch", &m.arch);
    row("size", &format!("{} bytes", m.size));
    row("sha256", &hex(&m.sha256));
    row("block_size", &m.block_size);
    row("blocks", &m.blocks);
    row("merkle_root", &hex(&m.merkle_root));
    row("created", &format!("{} ({})", m.created, utc(m.created)));
    row("min_version", &m.min_version.as_deref().unwrap_or("-"));
    row("allow_downgrade", &m.allow_downgrade);
    row("kid", &kid.unwrap_or("- (none: no device will accept it)"));
    row(
        "envelope",
        &if tagged {
            "COSE_Sign1, tagged (18)"
        } else {
            "COSE_Sign1, untagged"
        },
    );
    let names = trust
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let signature = match verdict {
        None => "not checked (give --trust PUBKEY to check it)".to_string(),
        Some(Ok(_)) => format!("verified with {names}"),
        Some(Err(e)) => format!("DOES NOT VERIFY with {names}: {}", describe(e)),
    };
    row("signature", &signature);
}

fn print_json(
    m: &Manifest,
    kid: Option<&str>,
    tagged: bool,
    trust: &[keys::VerifyingKey],
    verdict: Option<&Result<Manifest, ManifestError>>,
) -> anyhow::Result<()> {
    let (verified, error) = match verdict {
        None => (serde_json::Value::Null, serde_json::Value::Null),
        Some(Ok(_)) => (true.into(), serde_json::Value::Null),
        Some(Err(e)) => (
            false.into(),
            serde_json::json!({ "code": e.code.as_str(), "detail": describe(e) }),
        ),
    };
    let out = serde_json::json!({
        "artifact": m.artifact.as_str(),
        "kind": m.kind.as_str(),
        "component": m.component.as_str(),
        "version": m.version,
        "arch": m.arch,
        "size": m.size,
        "sha256": hex(&m.sha256),
        "block_size": m.block_size,
        "blocks": m.blocks,
        "merkle_root": hex(&m.merkle_root),
        "created": m.created,
        "min_version": m.min_version,
        "allow_downgrade": m.allow_downgrade,
        "kid": kid,
        "tagged": tagged,
        "trusted_kids": trust.iter().map(|k| keys::kid_to_hex(&keys::kid(k))).collect::<Vec<_>>(),
        "verified": verified,
        "error": error,
    });
    println!(
        "{}",
        serde_json::to_string_pretty(&out).context("cannot print JSON")?
    );
    Ok(())
}

/// Reads an image, refusing an empty one and one over 64 MiB before
/// reading it.
fn read_image(path: &Path) -> anyhow::Result<Vec<u8>> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read image {}", path.display()))?;
    if !meta.is_file() {
        bail!("image {} is not a file", path.display());
    }
    if meta.len() == 0 {
        bail!(
            "image {} is empty: an artifact needs at least one byte",
            path.display()
        );
    }
    if meta.len() > MAX_IMAGE_BYTES {
        bail!(
            "image {} is {} bytes, over the limit of {MAX_IMAGE_BYTES} (64 MiB)",
            path.display(),
            meta.len()
        );
    }
    std::fs::read(path).with_context(|| format!("cannot read image {}", path.display()))
}

/// Reads a manifest file, refusing one too large to be a manifest (an
/// image given by mistake, say).
fn read_manifest(path: &Path) -> anyhow::Result<Vec<u8>> {
    let meta = std::fs::metadata(path)
        .with_context(|| format!("cannot read manifest {}", path.display()))?;
    if !meta.is_file() {
        bail!("manifest {} is not a file", path.display());
    }
    if meta.len() > limits::MAX_MANIFEST_BYTES as u64 {
        bail!(
            "{} is {} bytes: a signed manifest is at most {} bytes; is it the image rather than its .manifest?",
            path.display(),
            meta.len(),
            limits::MAX_MANIFEST_BYTES
        );
    }
    std::fs::read(path).with_context(|| format!("cannot read manifest {}", path.display()))
}

/// Writes `bytes` to a temporary file beside `path`, then renames it over
/// `path`, so a reader never sees half a manifest.
fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = suffixed(path, ".tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

/// `code: detail`, without repeating the code when the detail starts with it.
fn describe(e: &ManifestError) -> String {
    if e.detail.starts_with(e.code.as_str()) {
        e.detail.clone()
    } else {
        e.to_string()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Unix seconds as `YYYY-MM-DD HH:MM:SS UTC` (proleptic Gregorian).
fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

// Value parsers: a bad value is a usage error (exit 2) that names the flag.

fn parse_kind(s: &str) -> Result<Kind, String> {
    s.parse()
}

fn parse_name<T: std::str::FromStr<Err = schemas::NameError>>(s: &str) -> Result<T, String> {
    s.parse().map_err(|e: schemas::NameError| e.to_string())
}

fn parse_semver(s: &str) -> Result<String, String> {
    if s.len() > release::MAX_VERSION_LEN {
        return Err(format!(
            "at most {} characters are allowed",
            release::MAX_VERSION_LEN
        ));
    }
    if schemas::version::is_valid_semver(s) {
        Ok(s.to_string())
    } else {
        Err("not a semver 2.0 version: use MAJOR.MINOR.PATCH, e.g. 1.3.0 or 2.0.0-rc.1".into())
    }
}

fn parse_arch(s: &str) -> Result<String, String> {
    if schemas::ids::is_valid_name(s) {
        Ok(s.to_string())
    } else {
        Err("use 1-64 characters of [A-Za-z0-9._-], e.g. esp32, armv7 or any".into())
    }
}

pub(crate) fn parse_block_size(s: &str) -> Result<u32, String> {
    let n: u32 = s
        .parse()
        .map_err(|_| "not a number: use a power of two from 256 to 65536".to_string())?;
    if schemas::merkle::is_valid_block_size(n) {
        Ok(n)
    } else {
        Err("use a power of two from 256 to 65536 (default 4096)".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_790_000_000), "2026-09-21 14:13:20 UTC");
    }

    #[test]
    fn manifest_goes_beside_the_image() {
        assert_eq!(
            manifest_path(Path::new("out/fw.bin")),
            PathBuf::from("out/fw.bin.manifest")
        );
    }
}
