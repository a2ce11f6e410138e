//! Checking a snapshot (a layer unpacked as an overlay diff dir) against
//! its layer blob: every entry of the tar is in the snapshot with its type,
//! mode, owner, size and link target, and the snapshot holds nothing else.
//! With `full`, every file's content is hashed and compared too.

use std::collections::HashSet;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

use kiln_oci::digest::HashReader;
use kiln_oci::layer::{OPAQUE_MARKER, OPAQUE_XATTR, WHITEOUT_PREFIX};
use kiln_oci::unpack::{decompressed, is_whiteout};

/// The first difference between snapshot `dir` and the layer tar `blob`.
pub(crate) fn check(dir: &Path, blob: impl Read, full: bool) -> Result<(), String> {
    let plain = decompressed(blob).map_err(|e| e.to_string())?;
    let mut archive = tar::Archive::new(plain);
    let mut seen = HashSet::new();
    for entry in archive
        .entries()
        .map_err(|e| format!("reading the layer: {e}"))?
    {
        let mut entry = entry.map_err(|e| format!("reading the layer: {e}"))?;
        let raw = entry.path().map_err(|e| e.to_string())?.into_owned();
        let rel: PathBuf = raw
            .components()
            .filter(|c| matches!(c, Component::Normal(_)))
            .collect();
        let Some(name) = rel.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            continue;
        };
        if name == OPAQUE_MARKER {
            let parent = dir.join(rel.parent().unwrap_or(Path::new("")));
            if kiln_oci::xattr::get(&parent, OPAQUE_XATTR)
                .ok()
                .flatten()
                .as_deref()
                != Some(b"y")
            {
                return Err(format!(
                    "/{} lost its opaque marker",
                    rel.parent().unwrap_or(Path::new("")).display()
                ));
            }
            continue;
        }
        let (rel, whiteout) = match name.strip_prefix(WHITEOUT_PREFIX) {
            Some(hidden) => (rel.with_file_name(hidden), true),
            None => (rel, false),
        };
        let path = dir.join(&rel);
        let meta =
            fs::symlink_metadata(&path).map_err(|_| format!("/{} is missing", rel.display()))?;
        if whiteout {
            if !is_whiteout(&meta) {
                return Err(format!("/{} is no longer a whiteout", rel.display()));
            }
        } else {
            entry_matches(&mut entry, &path, &meta, full)
                .map_err(|why| format!("/{}: {why}", rel.display()))?;
        }
        for ancestor in rel.ancestors() {
            if !seen.insert(ancestor.to_path_buf()) {
                break;
            }
        }
    }
    extra(dir, Path::new(""), &seen)
}

/// Whether the snapshot's file at `path` is what the tar entry says.
fn entry_matches<R: Read>(
    entry: &mut tar::Entry<R>,
    path: &Path,
    meta: &fs::Metadata,
    full: bool,
) -> Result<(), String> {
    let header = entry.header().clone();
    let kind = header.entry_type();
    let ft = meta.file_type();
    let same_kind = match kind {
        tar::EntryType::Directory => ft.is_dir(),
        tar::EntryType::Symlink => ft.is_symlink(),
        tar::EntryType::Char => ft.is_char_device(),
        tar::EntryType::Block => ft.is_block_device(),
        tar::EntryType::Fifo => ft.is_fifo(),
        tar::EntryType::Link => ft.is_file(),
        _ => ft.is_file(),
    };
    if !same_kind {
        return Err(format!(
            "its layer has a {kind:?}, the snapshot something else"
        ));
    }
    if kind == tar::EntryType::Link {
        return Ok(()); // the same file as its target, checked there
    }
    if kind == tar::EntryType::Symlink {
        let want = header
            .link_name()
            .ok()
            .flatten()
            .unwrap_or_default()
            .into_owned();
        let have = fs::read_link(path).unwrap_or_default();
        return if want == have {
            Ok(())
        } else {
            Err(format!(
                "points to {} instead of {}",
                have.display(),
                want.display()
            ))
        };
    }
    let mode = header.mode().unwrap_or(0) & 0o7777;
    if meta.mode() & 0o7777 != mode {
        return Err(format!(
            "mode {:o} instead of {mode:o}",
            meta.mode() & 0o7777
        ));
    }
    let (uid, gid) = (header.uid().unwrap_or(0), header.gid().unwrap_or(0));
    if (u64::from(meta.uid()), u64::from(meta.gid())) != (uid, gid) {
        return Err(format!(
            "owner {}:{} instead of {uid}:{gid}",
            meta.uid(),
            meta.gid()
        ));
    }
    if !ft.is_file() {
        return Ok(());
    }
    let size = header.size().unwrap_or(0);
    if meta.len() != size {
        return Err(format!("{} bytes instead of {size}", meta.len()));
    }
    if full {
        let (want, _) = HashReader::new(entry).finish().map_err(|e| e.to_string())?;
        let f = fs::File::open(path).map_err(|e| e.to_string())?;
        let (have, _) = HashReader::new(f).finish().map_err(|e| e.to_string())?;
        if want != have {
            return Err("its content differs from its layer's".into());
        }
    }
    Ok(())
}

/// The first path in the snapshot that its layer does not have.
fn extra(dir: &Path, rel: &Path, seen: &HashSet<PathBuf>) -> Result<(), String> {
    let Ok(entries) = fs::read_dir(dir.join(rel)) else {
        return Ok(());
    };
    for e in entries.flatten() {
        let child = rel.join(e.file_name());
        if !seen.contains(&child) {
            return Err(format!("/{} is not in its layer", child.display()));
        }
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            extra(dir, &child, seen)?;
        }
    }
    Ok(())
}
