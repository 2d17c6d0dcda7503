//! `ota artifact push | list | show | delete`: the artifacts a running
//! bridge holds, through signed operator commands (`bridge::client`). The
//! push itself (checks, chunks, resume) is `bridge::client::push`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use bridge::client::push::push;
use bridge::client::OpsClient;
use indicatif::{ProgressBar, ProgressStyle};
use schemas::ops::Command;
use schemas::release::MAX_IMAGE_BYTES;
use schemas::ArtifactId;
use serde_json::Value;

use crate::cmd_fleet::Conn;
use crate::rt;

/// Upload an image and its signed manifest to the bridge.
///
/// The bridge checks the manifest against its release keys, then the
/// image's size, SHA-256 and Merkle root, before it stores anything. A
/// push that broke off resumes where it stopped: run it again.
#[derive(clap::Args)]
#[command(after_help = "Example:\n  ota artifact push fw-1.3.0.bin --config ota.toml")]
pub struct Push {
    /// The image file.
    #[arg(value_name = "IMAGE")]
    image: PathBuf,
    /// Its signed manifest. Default: IMAGE.manifest beside the image (what
    /// `ota artifact sign` writes).
    #[arg(long, value_name = "FILE")]
    manifest: Option<PathBuf>,
    /// Print the bridge's final answer as JSON (no progress bar).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: Conn,
}

/// List the artifacts the bridge holds (and pushes not finished yet).
#[derive(clap::Args)]
pub struct List {
    /// Print the bridge's JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: Conn,
}

/// Show one artifact: its manifest's fields, hashes and signing key.
#[derive(clap::Args)]
pub struct Show {
    /// The artifact id.
    #[arg(value_name = "ID")]
    id: ArtifactId,
    /// Print the bridge's JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: Conn,
}

/// Delete an artifact (refused while a campaign uses it), or a push not
/// finished.
#[derive(clap::Args)]
pub struct Delete {
    /// The artifact id.
    #[arg(value_name = "ID")]
    id: ArtifactId,
    /// Print the bridge's JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: Conn,
}

impl Push {
    pub fn run(self) -> anyhow::Result<()> {
        let meta = std::fs::metadata(&self.image)
            .with_context(|| format!("cannot read image {}", self.image.display()))?;
        if meta.len() > MAX_IMAGE_BYTES {
            bail!(
                "image {} is {} bytes, over the limit of {MAX_IMAGE_BYTES} bytes (64 MiB): nothing was sent",
                self.image.display(),
                meta.len()
            );
        }
        let manifest_file = self
            .manifest
            .clone()
            .unwrap_or_else(|| manifest_path(&self.image));
        let manifest = std::fs::read(&manifest_file).with_context(|| {
            format!(
                "cannot read manifest {} (sign the image first: `ota artifact sign`, or give --manifest)",
                manifest_file.display()
            )
        })?;
        let image = std::fs::read(&self.image)
            .with_context(|| format!("cannot read image {}", self.image.display()))?;
        let opts = self.conn.options()?;
        let bar = if self.json {
            ProgressBar::hidden()
        } else {
            ProgressBar::new(image.len() as u64)
        };
        bar.set_style(
            ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        let done = rt::block_on(async {
            let client = OpsClient::connect(opts).await?;
            let result = push(&client, &manifest, &image, |received, _| {
                bar.set_position(received)
            })
            .await;
            client.close().await;
            Ok::<_, anyhow::Error>(result?)
        })??;
        bar.finish_and_clear();
        if self.json {
            println!("{}", serde_json::to_string_pretty(&done)?);
            return Ok(());
        }
        println!("{} stored ({} bytes)", done.artifact, done.size);
        Ok(())
    }
}

impl List {
    pub fn run(self) -> anyhow::Result<()> {
        let v: Value = self.conn.call(Command::ArtifactList)?;
        if self.json {
            println!("{}", serde_json::to_string_pretty(&v)?);
            return Ok(());
        }
        let empty = Vec::new();
        let artifacts = v["artifacts"].as_array().unwrap_or(&empty);
        println!(
            "{:<40} {:<9} {:<12} {:<12} {:<10} {:>10}",
            "ARTIFACT", "KIND", "COMPONENT", "VERSION", "ARCH", "SIZE"
        );
        for a in artifacts {
            println!(
                "{:<40} {:<9} {:<12} {:<12} {:<10} {:>10}",
                text(&a["artifact"]),
                text(&a["kind"]),
                text(&a["component"]),
                text(&a["version"]),
                text(&a["arch"]),
                a["size"].as_u64().unwrap_or(0)
            );
        }
        for u in v["uploads"].as_array().unwrap_or(&empty) {
            println!(
                "{:<40} push not finished: {} of {} bytes (run the push again to resume)",
                text(&u["artifact"]),
                u["received"].as_u64().unwrap_or(0),
                u["size"].as_u64().unwrap_or(0)
            );
        }
        Ok(())
    }
}

impl Show {
    pub fn run(self) -> anyhow::Result<()> {
        let v: Value = self.conn.call(Command::ArtifactShow { id: self.id })?;
        if self.json {
            println!("{}", serde_json::to_string_pretty(&v)?);
            return Ok(());
        }
        for key in [
            "artifact",
            "kind",
            "component",
            "version",
            "arch",
            "size",
            "block_size",
            "blocks",
            "sha256",
            "merkle_root",
            "created",
            "min_version",
            "allow_downgrade",
            "kid",
            "stored_at",
        ] {
            if !v[key].is_null() {
                println!("{key:<16} {}", text(&v[key]));
            }
        }
        Ok(())
    }
}

impl Delete {
    pub fn run(self) -> anyhow::Result<()> {
        let v: Value = self.conn.call(Command::ArtifactDelete {
            id: self.id.clone(),
        })?;
        if self.json {
            println!("{}", serde_json::to_string_pretty(&v)?);
            return Ok(());
        }
        println!("{} deleted", self.id);
        Ok(())
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// `IMAGE.manifest`: the image's whole file name with `.manifest` added,
/// as `ota artifact sign` writes it and `push` looks for it.
pub(crate) fn manifest_path(image: &Path) -> PathBuf {
    suffixed(image, ".manifest")
}

/// `path` with `suffix` added to its whole file name (`fw.bin` +
/// `.manifest` is `fw.bin.manifest`), in the same directory.
pub(crate) fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut name: OsString = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(suffix);
    path.with_file_name(name)
}
