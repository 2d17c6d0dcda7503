//! `ota devices enrollment-token | accept | reject`: devices that enroll
//! themselves with a fleet token (`[devices] admission = "enroll"`,
//! docs/protocol.md "Enrollment"), and the operator's decision on each.

use std::path::PathBuf;

use bridge::ops::identity_cmds::CredentialView;
use schemas::ops::Command;
use schemas::provisioning::{generate_password, hash_password};
use schemas::DeviceId;

use crate::conn::Conn;
use crate::keyfile;

/// Make a fleet enrollment token: DIR/enrollment.token (the token, for
/// the devices' image) and DIR/enrollment.hash (its `$6$` hash, for the
/// bridge's `[devices] enrollment_token_hash`).
///
/// A device that logs in with username = its id and password =
/// TOKEN:SECRET (a secret of at least 32 characters it chose for itself)
/// is admitted as pending: it says Hello, takes part in nothing, and
/// waits for `ota devices accept`. The bridge keeps only the hash of the
/// token, and of each device's secret.
#[derive(clap::Args)]
#[command(after_help = "Example:\n  \
    ota devices enrollment-token --out keys/\n  \
    # then in ota.toml:\n  \
    [devices]\n  admission = \"enroll\"\n  enrollment_token_hash = \"keys/enrollment.hash\"")]
pub struct EnrollmentToken {
    /// Where to write enrollment.token and enrollment.hash.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Replace existing files (devices with the old token can no longer
    /// enroll; enrolled devices keep logging in with their secrets).
    #[arg(long)]
    force: bool,
}

impl crate::Run for EnrollmentToken {
    fn run(self) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.out)?;
        let token = generate_password();
        let (token_file, hash_file) = (
            self.out.join("enrollment.token"),
            self.out.join("enrollment.hash"),
        );
        keyfile::write_key_file(&token_file, &format!("{token}\n"), true, self.force)?;
        keyfile::write_key_file(
            &hash_file,
            &format!("{}\n", hash_password(&token)),
            true,
            self.force,
        )?;
        println!(
            "wrote {} (the token: put it in the devices' image, keep it from anyone else) and {} \
             (its hash, for the bridge)",
            token_file.display(),
            hash_file.display()
        );
        println!(
            "in ota.toml:\n[devices]\nadmission = \"enroll\"\nenrollment_token_hash = \"{}\"",
            hash_file.display()
        );
        Ok(())
    }
}

/// Accept a pending device: it takes part from now on (groups, campaigns),
/// logging in with the secret it chose at enrollment.
#[derive(clap::Args)]
#[command(after_help = "Example:\n  ota devices accept dev-0042 --config ota.toml")]
pub struct Accept {
    /// The device id (see `ota devices list`: pending devices).
    id: DeviceId,
    /// Print JSON (for scripts).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: Conn,
}

/// Reject a pending device: disconnected, refused at every login after.
#[derive(clap::Args)]
#[command(after_help = "Example:\n  ota devices reject dev-0042 --config ota.toml")]
pub struct Reject {
    /// The device id (see `ota devices list`: pending devices).
    id: DeviceId,
    /// Print JSON (for scripts).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: Conn,
}

fn decide(conn: &Conn, command: Command, json: bool, said: &str) -> anyhow::Result<()> {
    let v: CredentialView = conn.call(command)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("{}: {said}", v.id);
    }
    Ok(())
}

impl crate::Run for Accept {
    fn run(self) -> anyhow::Result<()> {
        decide(
            &self.conn,
            Command::DeviceAccept { id: self.id },
            self.json,
            "accepted; it logs in again and takes part from now on",
        )
    }
}

impl crate::Run for Reject {
    fn run(self) -> anyhow::Result<()> {
        decide(
            &self.conn,
            Command::DeviceReject { id: self.id },
            self.json,
            "rejected; it is disconnected and refused at every login",
        )
    }
}
