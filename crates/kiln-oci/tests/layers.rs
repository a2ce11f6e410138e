//! Layers written from real directories and unpacked again, as root.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use kiln_oci::layer::{write_layer, Compression, LayerOptions, OPAQUE_XATTR};
use kiln_oci::unpack::{unpack, Target};
use kiln_oci::{tree, xattr};

fn sample(root: &Path) {
    fs::create_dir_all(root.join("etc/app")).unwrap();
    fs::write(root.join("etc/app/config"), "key=value\n").unwrap();
    fs::write(root.join("bin-tool"), "#!/bin/sh\n").unwrap();
    fs::set_permissions(root.join("bin-tool"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::hard_link(root.join("bin-tool"), root.join("bin-tool-link")).unwrap();
    symlink("etc/app/config", root.join("config-link")).unwrap();
    std::os::unix::fs::chown(root.join("etc/app/config"), Some(1000), Some(1001)).unwrap();
    xattr::set(
        &root.join("bin-tool"),
        "security.capability",
        &[
            1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ],
    )
    .unwrap();
    // an overlay whiteout and an opaque directory, as an upper dir has them
    rustix::fs::mknodat(
        rustix::fs::CWD,
        root.join("deleted"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::empty(),
        0,
    )
    .unwrap();
    fs::create_dir(root.join("opaque")).unwrap();
    xattr::set(&root.join("opaque"), OPAQUE_XATTR, b"y").unwrap();
    fs::write(root.join("opaque/new"), "n").unwrap();
}

fn layer_bytes(root: &Path, opts: &LayerOptions) -> (Vec<u8>, kiln_oci::layer::LayerInfo) {
    let mut out = Vec::new();
    let info = write_layer(root, &mut out, opts).unwrap();
    (out, info)
}

#[test]
fn overlay_diff_round_trip_keeps_everything() {
    let src = tempfile::tempdir().unwrap();
    sample(src.path());
    let (bytes, info) = layer_bytes(src.path(), &LayerOptions::default());
    assert_eq!(info.size, bytes.len() as u64);
    assert_eq!(info.digest, kiln_oci::digest::sha256(&bytes));
    let dst = tempfile::tempdir().unwrap();
    let diff_id = unpack(&bytes[..], dst.path(), Target::OverlayDiff).unwrap();
    assert_eq!(diff_id, info.diff_id);
    let a = tree::dump(src.path()).unwrap();
    let b = tree::dump(dst.path()).unwrap();
    // the root's own mode and times come from the temp dir, not the layer
    assert_eq!(a[1..], b[1..]);
    assert!(b
        .iter()
        .any(|l| l.starts_with("/bin-tool file 4755") && l.contains("xattr:security.capability")));
    assert!(b
        .iter()
        .any(|l| l.starts_with("/deleted char") && l.ends_with("0:0")));
    assert!(b
        .iter()
        .any(|l| l.starts_with("/opaque dir") && l.contains("trusted.overlay.opaque=79")));
}

#[test]
fn same_tree_same_digest_and_epoch_clamps_times() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    sample(a.path());
    sample(b.path());
    let opts = LayerOptions {
        compression: Compression::Gzip,
        source_date_epoch: Some(1_000_000),
    };
    let (_, la) = layer_bytes(a.path(), &opts);
    let (_, lb) = layer_bytes(b.path(), &opts);
    assert_eq!(la, lb, "the same tree must give the same digests anywhere");
    let (plain, _) = layer_bytes(
        a.path(),
        &LayerOptions {
            compression: Compression::None,
            source_date_epoch: Some(1_000_000),
        },
    );
    let mut archive = tar::Archive::new(&plain[..]);
    for e in archive.entries().unwrap() {
        assert!(e.unwrap().header().mtime().unwrap() <= 1_000_000);
    }
}

#[test]
fn flat_target_applies_whiteouts_and_opaque_dirs() {
    let base = tempfile::tempdir().unwrap();
    fs::create_dir_all(base.path().join("opaque")).unwrap();
    fs::write(base.path().join("opaque/old"), "o").unwrap();
    fs::write(base.path().join("deleted"), "d").unwrap();
    fs::write(base.path().join("kept"), "k").unwrap();
    let (l1, _) = layer_bytes(base.path(), &LayerOptions::default());
    let upper = tempfile::tempdir().unwrap();
    sample(upper.path());
    let (l2, _) = layer_bytes(upper.path(), &LayerOptions::default());
    let root = tempfile::tempdir().unwrap();
    unpack(&l1[..], root.path(), Target::Flat).unwrap();
    unpack(&l2[..], root.path(), Target::Flat).unwrap();
    assert!(!root.path().join("deleted").exists());
    assert!(!root.path().join("opaque/old").exists());
    assert!(root.path().join("opaque/new").exists());
    assert!(root.path().join("kept").exists());
}

/// A tar whose entry names are written raw, as a hostile layer would.
fn raw_tar(entries: &[(&str, tar::EntryType, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind, link) in entries {
        let mut h = tar::Header::new_gnu();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_entry_type(*kind);
        h.set_mode(0o755);
        h.set_size(0);
        if !link.is_empty() {
            h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        h.set_cksum();
        b.append(&h, std::io::empty()).unwrap();
    }
    b.into_inner().unwrap()
}

#[test]
fn hostile_layers_are_rejected_and_write_nothing_outside() {
    let outside = tempfile::tempdir().unwrap();
    let root_parent = tempfile::tempdir().unwrap();
    let root = root_parent.path().join("root");
    fs::create_dir(&root).unwrap();
    let escape = format!("{}", outside.path().display());
    let cases: Vec<Vec<u8>> = vec![
        raw_tar(&[("../evil", tar::EntryType::Regular, "")]),
        raw_tar(&[("a/../../evil", tar::EntryType::Regular, "")]),
        raw_tar(&[("/etc/evil", tar::EntryType::Regular, "")]),
        raw_tar(&[
            ("link", tar::EntryType::Symlink, &escape),
            ("link/evil", tar::EntryType::Regular, ""),
        ]),
        raw_tar(&[
            ("up", tar::EntryType::Symlink, "../../../../.."),
            ("up/evil", tar::EntryType::Regular, ""),
        ]),
        raw_tar(&[("hl", tar::EntryType::Link, "../../etc/passwd")]),
        // a hard link through a symlink out of the root: the host's file
        // must not be linked into the store
        raw_tar(&[
            ("l", tar::EntryType::Symlink, &escape),
            ("hl", tar::EntryType::Link, "l/secret"),
        ]),
        raw_tar(&[
            ("l", tar::EntryType::Symlink, "../../../../.."),
            ("hl", tar::EntryType::Link, &format!("l{escape}/secret")),
        ]),
    ];
    fs::write(outside.path().join("secret"), b"host").unwrap();
    for (i, tar) in cases.iter().enumerate() {
        for target in [Target::Flat, Target::OverlayDiff] {
            if i == 4 && target == Target::Flat {
                // `..` stops at the root, as in the container
                unpack(&tar[..], &root, target).unwrap();
                assert!(root.join("evil").is_file());
                let _ = fs::remove_dir_all(&root);
                fs::create_dir(&root).unwrap();
                continue;
            }
            if i == 3 && target == Target::Flat {
                // an absolute symlink points into the root, as it would in the
                // container: the file lands inside the root, never outside
                unpack(&tar[..], &root, target).unwrap();
                assert!(root
                    .join(escape.trim_start_matches('/'))
                    .join("evil")
                    .is_file());
                let _ = fs::remove_dir_all(&root);
                fs::create_dir(&root).unwrap();
                continue;
            }
            let err = unpack(&tar[..], &root, target)
                .expect_err(&format!("case {i} {target:?} was accepted"));
            assert!(
                matches!(err, kiln_oci::Error::HostileEntry { .. }),
                "case {i}: {err}"
            );
            let _ = fs::remove_dir_all(&root);
            fs::create_dir(&root).unwrap();
        }
    }
    let names: Vec<_> = fs::read_dir(outside.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names, ["secret"], "nothing was created outside the root");
    assert_eq!(
        fs::metadata(outside.path().join("secret")).unwrap().nlink(),
        1,
        "the host file was hard-linked into the root"
    );
    assert!(!root_parent.path().join("evil").exists());
}

#[test]
fn symlinks_inside_the_root_are_followed_in_a_flat_tree() {
    let root = tempfile::tempdir().unwrap();
    let tar = raw_tar(&[
        ("usr/lib/", tar::EntryType::Directory, ""),
        ("lib", tar::EntryType::Symlink, "usr/lib"),
        ("lib/libx.so", tar::EntryType::Regular, ""),
    ]);
    unpack(&tar[..], root.path(), Target::Flat).unwrap();
    assert!(root.path().join("usr/lib/libx.so").is_file());
}

#[test]
fn zstd_layers_round_trip() {
    let src = tempfile::tempdir().unwrap();
    sample(src.path());
    let opts = LayerOptions {
        compression: Compression::Zstd,
        source_date_epoch: Some(1),
    };
    let (bytes, info) = layer_bytes(src.path(), &opts);
    assert_eq!(&bytes[..4], &[0x28, 0xb5, 0x2f, 0xfd], "a zstd frame");
    let (_, gz) = layer_bytes(
        src.path(),
        &LayerOptions {
            compression: Compression::Gzip,
            source_date_epoch: Some(1),
        },
    );
    assert_eq!(info.diff_id, gz.diff_id, "the same tar inside");
    let dst = tempfile::tempdir().unwrap();
    assert_eq!(
        unpack(&bytes[..], dst.path(), Target::OverlayDiff).unwrap(),
        info.diff_id
    );
    assert_eq!(
        tree::dump(src.path()).unwrap()[1..],
        tree::dump(dst.path()).unwrap()[1..]
    );
}

#[test]
fn a_diff_id_alone_is_the_one_its_blob_has_later() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    sample(&root);
    // more than a few of the hasher's 1 MiB chunks
    let big: Vec<u8> = (0..5_300_000u32).map(|i| (i % 251) as u8).collect();
    fs::write(root.join("big"), big).unwrap();
    for epoch in [None, Some(1_000_000)] {
        for compression in [Compression::Gzip, Compression::Zstd, Compression::None] {
            let opts = LayerOptions {
                compression,
                source_date_epoch: epoch,
            };
            let (_, info) = layer_bytes(&root, &opts);
            assert_eq!(
                kiln_oci::layer::diff_id(&root, &opts).unwrap(),
                info.diff_id
            );
        }
    }
    // a tree that cannot be read is an error, not a digest
    assert!(
        kiln_oci::layer::diff_id(&dir.path().join("missing"), &LayerOptions::default()).is_err()
    );
}
