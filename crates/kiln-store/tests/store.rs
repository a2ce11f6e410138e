//! The store on a real directory.

use kiln_oci::image::{Descriptor, MEDIA_MANIFEST};
use kiln_store::{Problem, Store};

#[test]
fn blobs_names_and_fsck() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert!(dir.path().join("oci/oci-layout").is_file());
    let d = store.put_blob(b"{}").unwrap();
    assert_eq!(store.read_blob(&d).unwrap(), b"{}");
    // a manifest that names a missing config is reported, not trusted
    let manifest = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","size":0},"layers":[]}"#;
    let m = store.put_blob(manifest).unwrap();
    let desc = Descriptor {
        media_type: MEDIA_MANIFEST.into(),
        digest: m.to_string(),
        size: manifest.len() as u64,
        annotations: Default::default(),
        platform: None,
    };
    assert_eq!(store.tag("app", &desc).unwrap(), "app:latest");
    assert_eq!(store.list().unwrap().len(), 1);
    let problems = store.fsck().unwrap();
    assert!(
        matches!(&problems[..], [Problem::BrokenImage { name, .. }] if name == "app:latest"),
        "{problems:?}"
    );
    store.put_blob(b"").unwrap();
    assert!(store.fsck().unwrap().is_empty());
    // a blob whose content no longer matches its digest is found
    std::fs::write(store.blob_path(&d), b"tampered").unwrap();
    let problems = store.fsck().unwrap();
    assert!(
        matches!(&problems[..], [Problem::CorruptBlob { .. }]),
        "{problems:?}"
    );
    store.untag("app:latest").unwrap();
    assert!(store.list().unwrap().is_empty());
}

#[test]
fn put_blob_from_checks_the_digest() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let wrong = kiln_oci::digest::sha256(b"other");
    assert!(store.put_blob_from(&b"content"[..], Some(&wrong)).is_err());
    assert!(!store.has_blob(&wrong));
    assert_eq!(
        std::fs::read_dir(store.tmp_dir()).unwrap().count(),
        0,
        "nothing left behind"
    );
}

/// A layer's snapshot is unpacked from its blob once, checked against its
/// diff_id, and a blob that does not match leaves no snapshot behind.
#[test]
#[cfg_attr(
    not(feature = "system-tests"),
    ignore = "needs root (owners, whiteout devices): scripts/test runs it"
)]
fn snapshots_are_unpacked_once_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_size(5);
    b.append_data(&mut h, "etc/motd", &b"hello"[..]).unwrap();
    let layer = b.into_inner().unwrap();
    let blob = store.put_blob(&layer).unwrap();
    let diff_id = kiln_oci::digest::sha256(&layer);
    let chain = kiln_store::chain_id(None, &diff_id);
    assert!(store.snapshot(&chain).is_none());
    let snap = store.ensure_snapshot(&blob, &diff_id, &chain).unwrap();
    assert_eq!(std::fs::read(snap.join("etc/motd")).unwrap(), b"hello");
    assert_eq!(store.snapshot(&chain), Some(snap.clone()));
    // present: not unpacked again
    std::fs::write(snap.join("marker"), "").unwrap();
    let again = store.ensure_snapshot(&blob, &diff_id, &chain).unwrap();
    assert!(again.join("marker").exists());
    // a diff_id the blob does not have: an error, no snapshot, nothing left
    let wrong = kiln_oci::digest::sha256(b"other");
    let wrong_chain = kiln_store::chain_id(Some(&chain), &wrong);
    let e = store
        .ensure_snapshot(&blob, &wrong, &wrong_chain)
        .unwrap_err()
        .to_string();
    assert!(e.contains(&wrong.to_string()), "{e}");
    assert!(store.snapshot(&wrong_chain).is_none());
    assert_eq!(std::fs::read_dir(store.tmp_dir()).unwrap().count(), 0);
}

#[test]
fn the_store_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("a/store");
    kiln_store::Store::open(&root).unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&root), 0o700);
    assert_ne!(
        mode(&dir.path().join("a")),
        0o700,
        "only the store itself is private"
    );
    // an existing store made before is made private when opened
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
    kiln_store::Store::open(&root).unwrap();
    assert_eq!(mode(&root), 0o700);
}
