//! How the campaign commands reach the bridge: the fleet commands'
//! [`Conn`] flags (`--config`, or `--broker` and `--key`), and the one
//! look-up `campaign create` makes before it sends the spec.

use anyhow::{bail, Context as _};
use bridge::campaign::spec::Kind;
use bridge::client::OpsClient;
use schemas::ops::Command;
use schemas::ArtifactId;

pub(crate) use crate::cmd_fleet::Conn;

/// Connects with `conn`'s options.
pub async fn connect(conn: &Conn) -> anyhow::Result<OpsClient> {
    Ok(OpsClient::connect(conn.options()?).await?)
}

/// Connects, runs `f` with the client, and closes the connection whatever
/// `f` returned.
pub async fn with_client<T>(
    conn: &Conn,
    f: impl AsyncFnOnce(&OpsClient) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let client = connect(conn).await?;
    let result = f(&client).await;
    client.close().await;
    result
}

/// The kind of the release's first artifact, asked of the bridge.
pub async fn kind_of(client: &OpsClient, release: &[ArtifactId]) -> anyhow::Result<Kind> {
    let Some(first) = release.first() else {
        bail!("give the release with --release A,B");
    };
    let detail: serde_json::Value = client
        .call_ok(Command::ArtifactShow { id: first.clone() })
        .await
        .with_context(|| format!("cannot look up artifact {first} (give --kind to skip this)"))?;
    let kind = detail
        .get("kind")
        .cloned()
        .with_context(|| format!("artifact {first} has no kind in its record: give --kind"))?;
    serde_json::from_value(kind)
        .with_context(|| format!("artifact {first}: unknown kind, give --kind"))
}
