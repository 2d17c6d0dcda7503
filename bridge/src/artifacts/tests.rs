//! The artifact store with real sled files and real signatures.

use base64::Engine as _;
use schemas::cose::TrustStore;
use schemas::keys::SigningKey;
use schemas::msg::manifest::sign;
use schemas::msg::{Kind, Manifest};
use schemas::ops::UPLOAD_CHUNK;
use schemas::release::{build_manifest, ReleaseSpec};
use schemas::{ArtifactId, ComponentName};

use super::*;

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn image(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

fn manifest_of(image: &[u8], id: &str) -> Manifest {
    let mut spec = ReleaseSpec::new(
        Kind::Firmware,
        ComponentName::new("main").unwrap(),
        "1.2.0",
        "esp32",
        1_790_000_000,
    );
    spec.artifact = Some(ArtifactId::new(id).unwrap());
    spec.block_size = 1024;
    build_manifest(image, &spec).unwrap()
}

struct Fixture {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    store: ArtifactStore,
    trust: TrustStore,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let db = crate::store::open_db(&path.join("db")).unwrap();
    Fixture {
        store: ArtifactStore::open(&db, &path).unwrap(),
        trust: TrustStore::new([key(1).verifying_key()]),
        path,
        _dir: dir,
    }
}

/// Pushes `image` in chunks of `chunk` bytes from `from`, following `received`.
fn push(f: &Fixture, env: &[u8], image: &[u8], chunk: usize) -> Progress {
    let mut at = 0u64;
    loop {
        let end = (at as usize + chunk).min(image.len());
        let p = f
            .store
            .accept_chunk(&f.trust, &b64(env), at, &b64(&image[at as usize..end]), 7)
            .unwrap();
        if p.complete {
            return p;
        }
        at = p.received;
    }
}

#[test]
fn a_push_in_chunks_is_verified_and_stored() {
    let f = fixture();
    let img = image(100_000);
    let m = manifest_of(&img, "fw-a");
    let env = sign(&m, &key(1));
    let p = push(&f, &env, &img, UPLOAD_CHUNK);
    assert_eq!((p.received, p.size, p.complete), (100_000, 100_000, true));
    let r = f.store.get(&m.artifact).unwrap().unwrap();
    assert_eq!(r.sha256, hex::encode(m.sha256));
    assert_eq!(r.blocks, 98);
    assert_eq!(r.stored_at, 7);
    assert_eq!(r.manifest_bytes().unwrap(), env);
    assert_eq!(r.manifest().unwrap(), m);
    assert_eq!(
        r.kid,
        hex::encode(schemas::keys::kid(&key(1).verifying_key()))
    );
    assert_eq!(f.store.read_image(&r).unwrap(), img);
    assert!(f
        .store
        .blob_path(&r)
        .starts_with(f.path.join("artifacts/blobs")));
    assert_eq!(f.store.list().unwrap().len(), 1);
    assert!(f.store.uploads().unwrap().is_empty());
    // Pushing the same again answers "complete" at once.
    let again = f
        .store
        .accept_chunk(&f.trust, &b64(&env), 0, "", 8)
        .unwrap();
    assert!(again.complete && !again.accepted);
}

#[test]
fn a_chunk_at_the_wrong_offset_gets_the_expected_one_back() {
    let f = fixture();
    let img = image(5000);
    let env = sign(&manifest_of(&img, "fw-b"), &key(1));
    let p = f
        .store
        .accept_chunk(&f.trust, &b64(&env), 0, &b64(&img[..1000]), 0)
        .unwrap();
    assert_eq!((p.received, p.accepted), (1000, true));
    // A repeat of the first chunk (a client asking where it stands).
    let p = f
        .store
        .accept_chunk(&f.trust, &b64(&env), 0, &b64(&img[..1000]), 0)
        .unwrap();
    assert_eq!((p.received, p.accepted), (1000, false));
    let p = f
        .store
        .accept_chunk(&f.trust, &b64(&env), 3000, &b64(&img[3000..4000]), 0)
        .unwrap();
    assert_eq!((p.received, p.accepted), (1000, false));
    let p = f
        .store
        .accept_chunk(&f.trust, &b64(&env), 1000, &b64(&img[1000..]), 0)
        .unwrap();
    assert!(p.complete);
}

#[test]
fn a_broken_off_push_resumes_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let trust = TrustStore::new([key(1).verifying_key()]);
    let img = image(10_000);
    let env = sign(&manifest_of(&img, "fw-c"), &key(1));
    {
        let db = crate::store::open_db(&dir.path().join("db")).unwrap();
        let store = ArtifactStore::open(&db, dir.path()).unwrap();
        store
            .accept_chunk(&trust, &b64(&env), 0, &b64(&img[..4000]), 0)
            .unwrap();
        db.flush().unwrap();
    }
    let db = crate::store::open_db(&dir.path().join("db")).unwrap();
    let store = ArtifactStore::open(&db, dir.path()).unwrap();
    let ups = store.uploads().unwrap();
    assert_eq!(ups.len(), 1);
    assert_eq!(ups[0].received, 4000);
    let p = store.accept_chunk(&trust, &b64(&env), 0, "", 0).unwrap();
    assert_eq!(p.received, 4000);
    let p = store
        .accept_chunk(&trust, &b64(&env), 4000, &b64(&img[4000..]), 0)
        .unwrap();
    assert!(p.complete);
    assert_eq!(
        store
            .read_image(&store.get(&p.artifact).unwrap().unwrap())
            .unwrap(),
        img
    );
}

#[test]
fn a_tampered_image_is_refused_and_discarded() {
    let f = fixture();
    let img = image(3000);
    let m = manifest_of(&img, "fw-d");
    let env = sign(&m, &key(1));
    let mut bad = img.clone();
    bad[1500] ^= 1;
    let e = f
        .store
        .accept_chunk(&f.trust, &b64(&env), 0, &b64(&bad), 0)
        .unwrap_err();
    assert!(matches!(e, ArtifactError::HashMismatch { .. }), "{e}");
    assert!(e.to_string().contains("push again"), "{e}");
    assert!(f.store.get(&m.artifact).unwrap().is_none());
    assert!(
        f.store.uploads().unwrap().is_empty(),
        "the upload starts clean next time"
    );
    // The right bytes go through afterwards.
    assert!(push(&f, &env, &img, 1000).complete);
}

#[test]
fn a_manifest_not_made_from_the_image_is_refused() {
    let f = fixture();
    let img = image(3000);
    let mut m = manifest_of(&img, "fw-e");
    m.merkle_root = [0; 32];
    let e = f
        .store
        .accept_chunk(&f.trust, &b64(&sign(&m, &key(1))), 0, &b64(&img), 0)
        .unwrap_err();
    assert!(matches!(e, ArtifactError::RootMismatch { .. }), "{e}");
}

#[test]
fn untrusted_or_broken_manifests_are_refused_before_any_byte() {
    let f = fixture();
    let img = image(3000);
    let m = manifest_of(&img, "fw-f");
    let e = f
        .store
        .accept_chunk(&f.trust, &b64(&sign(&m, &key(2))), 0, &b64(&img), 0)
        .unwrap_err();
    assert!(
        matches!(&e, ArtifactError::Manifest { code, .. } if code.as_str() == "unknown_key"),
        "{e}"
    );
    let mut env = sign(&m, &key(1));
    let n = env.len();
    env[n - 1] ^= 1;
    let e = f
        .store
        .accept_chunk(&f.trust, &b64(&env), 0, &b64(&img), 0)
        .unwrap_err();
    assert!(
        matches!(&e, ArtifactError::Manifest { code, .. } if code.as_str() == "bad_signature"),
        "{e}"
    );
    let e = f.store.accept_chunk(&f.trust, "!!", 0, "", 0).unwrap_err();
    assert!(matches!(e, ArtifactError::ManifestEncoding(_)), "{e}");
    let e = f
        .store
        .accept_chunk(&TrustStore::default(), &b64(&sign(&m, &key(1))), 0, "", 0)
        .unwrap_err();
    assert!(matches!(e, ArtifactError::NoReleaseKeys), "{e}");
    assert!(f.store.uploads().unwrap().is_empty());
}

#[test]
fn images_over_64_mib_and_oversized_chunks_are_refused() {
    let f = fixture();
    let mut m = manifest_of(&image(1000), "fw-big");
    m.size = MAX_IMAGE_BYTES + 1;
    m.blocks = u32::try_from(m.size.div_ceil(u64::from(m.block_size))).unwrap();
    let e = f
        .store
        .accept_chunk(&f.trust, &b64(&sign(&m, &key(1))), 0, "", 0)
        .unwrap_err();
    assert!(matches!(e, ArtifactError::TooLarge { .. }), "{e}");
    let img = image(UPLOAD_CHUNK + 10);
    let env = sign(&manifest_of(&img, "fw-g"), &key(1));
    let e = f
        .store
        .accept_chunk(&f.trust, &b64(&env), 0, &b64(&img), 0)
        .unwrap_err();
    assert!(matches!(e, ArtifactError::ChunkTooLarge { .. }), "{e}");
}

#[test]
fn another_manifest_for_a_stored_id_is_refused_and_delete_frees_it() {
    let f = fixture();
    let img = image(2000);
    let m = manifest_of(&img, "fw-h");
    push(&f, &sign(&m, &key(1)), &img, 1000);
    let other = image(2500);
    let env2 = sign(&manifest_of(&other, "fw-h"), &key(1));
    let e = f
        .store
        .accept_chunk(&f.trust, &b64(&env2), 0, "", 0)
        .unwrap_err();
    assert!(matches!(e, ArtifactError::Exists { .. }), "{e}");
    let r = f.store.get(&m.artifact).unwrap().unwrap();
    let blob = f.store.blob_path(&r);
    f.store.delete(&m.artifact).unwrap();
    assert!(!blob.exists());
    assert!(matches!(
        f.store.delete(&m.artifact),
        Err(ArtifactError::NotFound(_))
    ));
    assert!(push(&f, &env2, &other, 1000).complete);
}

#[test]
fn two_ids_with_the_same_bytes_share_one_file() {
    let f = fixture();
    let img = image(2000);
    let (a, b) = (manifest_of(&img, "fw-x"), manifest_of(&img, "fw-y"));
    push(&f, &sign(&a, &key(1)), &img, 2000);
    push(&f, &sign(&b, &key(1)), &img, 2000);
    let blob = f
        .store
        .blob_path(&f.store.get(&a.artifact).unwrap().unwrap());
    f.store.delete(&a.artifact).unwrap();
    assert!(blob.exists(), "still used by fw-y");
    f.store.delete(&b.artifact).unwrap();
    assert!(!blob.exists());
}

#[test]
fn a_new_manifest_mid_push_needs_offset_zero() {
    let f = fixture();
    let img = image(3000);
    let env1 = sign(&manifest_of(&img, "fw-i"), &key(1));
    f.store
        .accept_chunk(&f.trust, &b64(&env1), 0, &b64(&img[..1000]), 0)
        .unwrap();
    let img2 = image(3500);
    let env2 = sign(&manifest_of(&img2, "fw-i"), &key(1));
    let e = f
        .store
        .accept_chunk(&f.trust, &b64(&env2), 1000, "", 0)
        .unwrap_err();
    assert!(matches!(e, ArtifactError::ManifestChanged { .. }), "{e}");
    let p = f
        .store
        .accept_chunk(&f.trust, &b64(&env2), 0, &b64(&img2[..1000]), 0)
        .unwrap();
    assert_eq!((p.received, p.size), (1000, 3500));
}
