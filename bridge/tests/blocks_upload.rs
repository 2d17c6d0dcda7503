//! `artifact_upload` and friends through the real operator client: a push
//! that broke off resumes (across a bridge restart too), a tampered image
//! or a manifest signed by an unknown key is refused, images over 64 MiB
//! are refused before any byte is sent, and list/show/delete work.

mod blocks_common;
mod common;

use base64::Engine as _;
use blocks_common::*;
use bridge::blocks::BlocksConfig;
use bridge::client::push::{push, PushError};
use schemas::ops::{Command, UPLOAD_CHUNK};

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_off_push_resumes_after_a_bridge_restart() {
    let mut stack = stack(BlocksConfig::default()).await;
    let img = image(5 * UPLOAD_CHUNK + 1234, 20);
    let (m, env) = signed(&img, "fw-resume", 4096, &release_key());
    {
        // Two chunks, then the operator's link "breaks".
        let ops = stack.ops().await;
        for i in 0..2 {
            let r = ops
                .call(Command::ArtifactUpload {
                    manifest: b64(&env),
                    offset: (i * UPLOAD_CHUNK) as u64,
                    data: b64(&img[i * UPLOAD_CHUNK..(i + 1) * UPLOAD_CHUNK]),
                })
                .await
                .expect("a reply");
            assert!(r.ok, "{r:?}");
        }
        ops.close().await;
    }
    stack.restart_bridge().await;
    let ops = stack.ops().await;
    let mut seen = Vec::new();
    let done = push(&ops, &env, &img, |received, _| seen.push(received))
        .await
        .expect("the push completes");
    assert!(done.complete);
    assert_eq!(
        seen[0],
        2 * UPLOAD_CHUNK as u64,
        "the first answer says where the bridge stands"
    );
    assert_eq!(
        seen.len(),
        5,
        "three more chunks (5.03 of them), no byte twice: {seen:?}"
    );

    let list = ops.call(Command::ArtifactList).await.expect("a reply");
    let result = list.result.expect("a result");
    assert_eq!(result["artifacts"][0]["artifact"], "fw-resume");
    assert_eq!(result["uploads"].as_array().map(Vec::len), Some(0));
    let show = ops
        .call(Command::ArtifactShow {
            id: m.artifact.clone(),
        })
        .await
        .expect("a reply");
    let r = show.result.expect("a result");
    assert_eq!(r["sha256"], hex::encode(m.sha256));
    assert_eq!(r["merkle_root"], hex::encode(m.merkle_root));
    assert_eq!(r["size"], img.len());

    // And a device can download it.
    let dev = device(&stack, "dev-after-push", &m).await;
    let report = dev
        .download(&m, &quick())
        .await
        .expect("the download completes");
    assert_eq!(report.image.as_deref(), Some(img.as_slice()));

    let del = ops
        .call(Command::ArtifactDelete {
            id: m.artifact.clone(),
        })
        .await
        .expect("a reply");
    assert!(del.ok, "{del:?}");
    let gone = ops
        .call(Command::ArtifactShow {
            id: m.artifact.clone(),
        })
        .await
        .expect("a reply");
    assert!(!gone.ok);
    assert!(gone
        .error
        .unwrap_or_default()
        .contains("no artifact fw-resume"));
}

/// Why the bridge refuses `image`, sent whole with its manifest `env`.
async fn refused(ops: &bridge::client::OpsClient, env: &[u8], image: &[u8]) -> String {
    let r = ops
        .call(Command::ArtifactUpload {
            manifest: b64(env),
            offset: 0,
            data: b64(image),
        })
        .await
        .expect("a reply");
    assert!(!r.ok);
    r.error.unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_images_and_unknown_keys_are_refused() {
    let stack = stack(BlocksConfig::default()).await;
    let ops = stack.ops().await;
    let img = image(3000, 21);

    // Signed by a key the bridge does not trust.
    let stranger = schemas::keys::SigningKey::from_bytes(&[99; 32]);
    let (_, env) = signed(&img, "fw-stranger", 1024, &stranger);
    let e = refused(&ops, &env, &img).await;
    assert!(
        e.contains("unknown_key") && e.contains("release_keys"),
        "{e}"
    );

    // The right key, but the bytes differ from what was signed.
    let (m, env) = signed(&img, "fw-tampered", 1024, &release_key());
    let mut bad = img.clone();
    bad[100] ^= 0x40;
    let e = refused(&ops, &env, &bad).await;
    assert!(e.contains("sha256"), "{e}");
    let show = ops
        .call(Command::ArtifactShow { id: m.artifact })
        .await
        .expect("a reply");
    assert!(!show.ok, "nothing was stored");

    // The client refuses a mismatched pair before sending anything.
    match push(&ops, &env, &bad, |_, _| {}).await {
        Err(PushError::Mismatch(_)) => {}
        other => panic!("expected a mismatch, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_over_64_mib_is_refused_before_any_upload() {
    let stack = stack(BlocksConfig::default()).await;
    let ops = stack.ops().await;
    let before = stack.metrics().commands_accepted;
    let big = vec![0u8; (bridge::artifacts::MAX_IMAGE_BYTES + 1) as usize];
    match push(&ops, b"whatever", &big, |_, _| {}).await {
        Err(e @ PushError::TooLarge { .. }) => assert!(e.to_string().contains("64 MiB"), "{e}"),
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert_eq!(
        stack.metrics().commands_accepted,
        before,
        "no command was sent"
    );
}

/// Every directory under `root` (and `root`) and every file, with its mode.
#[cfg(unix)]
fn modes(root: &std::path::Path, out: &mut Vec<(std::path::PathBuf, u32)>) {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    out.push((root.to_path_buf(), mode(root)));
    for e in std::fs::read_dir(root).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            modes(&e.path(), out);
        } else {
            out.push((e.path(), mode(&e.path())));
        }
    }
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_dir_and_every_file_in_it_are_the_bridges_users_alone() {
    let stack = stack(BlocksConfig::default()).await;
    let data_dir = stack.config.bridge.data_dir.clone();
    // A stored artifact, and a push broken off after one chunk.
    store(&stack, &image(3 * UPLOAD_CHUNK, 41), "fw-private", 4096).await;
    let img = image(3 * UPLOAD_CHUNK, 42);
    let (_, env) = signed(&img, "fw-partial", 4096, &release_key());
    let ops = stack.ops().await;
    let r = ops
        .call(Command::ArtifactUpload {
            manifest: b64(&env),
            offset: 0,
            data: b64(&img[..UPLOAD_CHUNK]),
        })
        .await
        .expect("the first chunk is taken");
    assert!(r.ok, "{r:?}");
    stack.bridge().store().flush().await.expect("flushed");

    let mut all = Vec::new();
    modes(&data_dir, &mut all);
    let (dirs, files): (Vec<_>, Vec<_>) = all.iter().partition(|(p, _)| p.is_dir());
    assert!(
        files
            .iter()
            .any(|(p, _)| p.extension().is_some_and(|e| e == "part")),
        "{all:?}"
    );
    assert!(
        files.len() >= 4,
        "the database, a blob and a part at least: {all:?}"
    );
    for (p, m) in dirs {
        assert_eq!(*m, 0o700, "{} is {m:o}", p.display());
    }
    for (p, m) in files {
        assert_eq!(*m, 0o600, "{} is {m:o}", p.display());
    }
}
