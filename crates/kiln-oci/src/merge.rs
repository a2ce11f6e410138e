//! Applying an overlay diff dir (a store snapshot, see [`crate::unpack`])
//! onto a flat root filesystem, with overlayfs's own rules: an entry of the
//! diff replaces what the root has at its path, except that a directory
//! over a directory merges (unless it is opaque, `trusted.overlay.opaque=y`,
//! which hides what was below); a 0:0 character device deletes.
//!
//! Regular files are *hard-linked* from the diff dir, never copied: a
//! flattened root costs no data writes. The root then shares inodes with
//! the snapshot, so whoever changes it must replace a file (remove, then
//! create), never write into one. Directories, symlinks and devices are
//! made anew in the root, so changing their metadata there is safe.
//!
//! The diff dir is the store's own (made by kiln from a verified layer or
//! an overlay upper dir), the root is a fresh directory: no path is ever
//! resolved through a symlink of the root, because every entry replaces
//! a non-directory at its path before anything is made below it.

use std::fs;
use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode as FsMode, Timespec, Timestamps, CWD};

use crate::layer::{sorted_names, OPAQUE_XATTR};
use crate::unpack::{is_whiteout, remove_any};
use crate::{xattr, Error};

/// Applies the diff dir `diff` onto the flat root filesystem `root`.
pub fn apply_diff(diff: &Path, root: &Path) -> Result<(), Error> {
    apply_dir(diff, root)
}

fn apply_dir(from: &Path, to: &Path) -> Result<(), Error> {
    for name in sorted_names(from)? {
        let src = from.join(&name);
        let dst = to.join(&name);
        let meta = fs::symlink_metadata(&src).map_err(|e| Error::path("reading", &src, e))?;
        let ft = meta.file_type();
        if is_whiteout(&meta) {
            remove_any(&dst)?;
        } else if ft.is_dir() {
            match fs::symlink_metadata(&dst) {
                Ok(m) if m.is_dir() => {
                    if xattr::get(&src, OPAQUE_XATTR)?.as_deref() == Some(b"y") {
                        for child in sorted_names(&dst)? {
                            remove_any(&dst.join(child))?;
                        }
                    }
                }
                _ => {
                    remove_any(&dst)?;
                    fs::create_dir(&dst).map_err(|e| Error::path("creating", &dst, e))?;
                }
            }
            apply_dir(&src, &dst)?;
            // after the children, whose creation changed the times
            copy_metadata(&src, &dst, &meta)?;
        } else if ft.is_file() {
            remove_any(&dst)?;
            // overlayfs's own attributes (an upper dir's copy-up origin)
            // stay in the snapshot: such a file is copied without them
            let overlay_attrs = xattr::list(&src)?
                .iter()
                .any(|(k, _)| k.starts_with("trusted.overlay."));
            if overlay_attrs || !hard_link(&src, &dst)? {
                fs::copy(&src, &dst).map_err(|e| Error::path("copying", &dst, e))?;
                copy_metadata(&src, &dst, &meta)?;
            }
        } else if ft.is_symlink() {
            remove_any(&dst)?;
            let target = fs::read_link(&src).map_err(|e| Error::path("reading link", &src, e))?;
            symlink(&target, &dst).map_err(|e| Error::path("creating symlink", &dst, e))?;
            copy_metadata(&src, &dst, &meta)?;
        } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() {
            remove_any(&dst)?;
            let kind = if ft.is_char_device() {
                FileType::CharacterDevice
            } else if ft.is_block_device() {
                FileType::BlockDevice
            } else {
                FileType::Fifo
            };
            rustix::fs::mknodat(
                CWD,
                &dst,
                kind,
                FsMode::from_raw_mode(meta.mode() & 0o7777),
                meta.rdev(),
            )
            .map_err(|e| Error::path("creating device", &dst, e.into()))?;
            copy_metadata(&src, &dst, &meta)?;
        }
        // sockets: a layer cannot carry them, and neither does the root
    }
    Ok(())
}

/// Links `dst` to `src`; false when they are on different filesystems.
fn hard_link(src: &Path, dst: &Path) -> Result<bool, Error> {
    match fs::hard_link(src, dst) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::XDEV.raw_os_error()) => Ok(false),
        Err(e) => Err(Error::path("linking", dst, e)),
    }
}

/// Owner, mode, extended attributes (overlayfs's own excepted) and times
/// of `src` onto `dst`, never following a symlink.
fn copy_metadata(src: &Path, dst: &Path, meta: &fs::Metadata) -> Result<(), Error> {
    rustix::fs::chownat(
        CWD,
        dst,
        Some(rustix::fs::Uid::from_raw(meta.uid())),
        Some(rustix::fs::Gid::from_raw(meta.gid())),
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(|e| Error::path("setting owner of", dst, e.into()))?;
    let symlink = meta.file_type().is_symlink();
    if !symlink {
        for (k, v) in xattr::list(src)? {
            if !k.starts_with("trusted.overlay.") {
                xattr::set(dst, &k, &v)?;
            }
        }
        // after chown, which clears setuid/setgid bits
        fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777))
            .map_err(|e| Error::path("setting mode of", dst, e))?;
    }
    let times = Timestamps {
        last_access: Timespec {
            tv_sec: meta.atime(),
            tv_nsec: meta.atime_nsec(),
        },
        last_modification: Timespec {
            tv_sec: meta.mtime(),
            tv_nsec: meta.mtime_nsec(),
        },
    };
    rustix::fs::utimensat(CWD, dst, &times, AtFlags::SYMLINK_NOFOLLOW)
        .map_err(|e| Error::path("setting times of", dst, e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unpack::{unpack, Target};

    /// A layer tar from (path, kind) entries: "d" dir, "f:TEXT" file,
    /// "l:TARGET" symlink.
    fn layer(entries: &[(&str, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind) in entries {
            let mut h = tar::Header::new_ustar();
            h.set_mtime(1000);
            h.set_uid(0);
            h.set_gid(0);
            if *kind == "d" {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                b.append_data(&mut h, path, std::io::empty()).unwrap();
            } else if let Some(t) = kind.strip_prefix("l:") {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                b.append_link(&mut h, path, t).unwrap();
            } else {
                let text = kind.strip_prefix("f:").unwrap();
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                h.set_size(text.len() as u64);
                b.append_data(&mut h, path, text.as_bytes()).unwrap();
            }
        }
        b.into_inner().unwrap()
    }

    fn read(p: &Path) -> Option<String> {
        fs::read_to_string(p).ok()
    }

    /// The same layers give the same tree whether applied from their
    /// snapshots or unpacked flat from their tars.
    #[test]
    #[cfg_attr(
        not(feature = "system-tests"),
        ignore = "needs root (owners, whiteout devices): scripts/test runs it"
    )]
    fn snapshots_merge_like_flat_unpacking() {
        let layers = [
            layer(&[
                ("etc/", "d"),
                ("etc/a", "f:one"),
                ("etc/b", "f:two"),
                ("opt/", "d"),
                ("opt/keep", "f:k"),
                ("opt/old", "f:o"),
                ("bin", "l:usr/bin"),
            ]),
            layer(&[
                ("etc/", "d"),
                ("etc/.wh.b", "f:"),
                ("etc/a", "f:changed"),
                ("opt/", "d"),
                ("opt/.wh..wh..opq", "f:"),
                ("opt/new", "f:n"),
                ("bin/", "d"),
                ("bin/tool", "f:t"),
            ]),
        ];
        let t = tempfile::tempdir().unwrap();
        let (flat, merged) = (t.path().join("flat"), t.path().join("merged"));
        fs::create_dir_all(&flat).unwrap();
        fs::create_dir_all(&merged).unwrap();
        for (i, l) in layers.iter().enumerate() {
            let diff = t.path().join(format!("diff{i}"));
            fs::create_dir(&diff).unwrap();
            unpack(&l[..], &diff, Target::OverlayDiff).unwrap();
            apply_diff(&diff, &merged).unwrap();
        }
        // a directory over a symlink replaces it in both (a flat unpack of
        // `bin/` with `bin` a symlink to a missing usr/bin replaces it too)
        unpack(&layers[0][..], &flat, Target::Flat).unwrap();
        unpack(&layers[1][..], &flat, Target::Flat).unwrap();
        // (each merged file has a second link: its snapshot's)
        let merged_tree: Vec<String> = crate::tree::dump(&merged)
            .unwrap()
            .into_iter()
            .map(|l| l.replace(" links=2", ""))
            .collect();
        assert_eq!(merged_tree, crate::tree::dump(&flat).unwrap());
        assert_eq!(read(&merged.join("etc/a")).as_deref(), Some("changed"));
        assert!(!merged.join("etc/b").exists());
        assert!(!merged.join("opt/keep").exists());
        assert_eq!(read(&merged.join("opt/new")).as_deref(), Some("n"));
    }

    /// Files are hard links to the snapshot's, and replacing one in the
    /// root (remove, create) leaves the snapshot as it was.
    #[test]
    #[cfg_attr(
        not(feature = "system-tests"),
        ignore = "needs root (owners, whiteout devices): scripts/test runs it"
    )]
    fn files_are_links_and_the_snapshot_survives_a_replacement() {
        let t = tempfile::tempdir().unwrap();
        let (diff, root) = (t.path().join("diff"), t.path().join("root"));
        fs::create_dir_all(&diff).unwrap();
        fs::create_dir_all(&root).unwrap();
        unpack(
            &layer(&[("etc/", "d"), ("etc/hostname", "f:builder")])[..],
            &diff,
            Target::OverlayDiff,
        )
        .unwrap();
        apply_diff(&diff, &root).unwrap();
        let (a, b) = (diff.join("etc/hostname"), root.join("etc/hostname"));
        assert_eq!(
            fs::metadata(&a).unwrap().ino(),
            fs::metadata(&b).unwrap().ino()
        );
        fs::remove_file(&b).unwrap();
        fs::write(&b, "vm").unwrap();
        assert_eq!(read(&a).as_deref(), Some("builder"));
        // the root's directories are its own
        assert_ne!(
            fs::metadata(diff.join("etc")).unwrap().ino(),
            fs::metadata(root.join("etc")).unwrap().ino()
        );
    }
}
