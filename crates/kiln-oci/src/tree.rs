//! A readable dump of a file tree: one line per path with its type, mode,
//! owner, size, content digest, link target and xattrs. Tests compare trees
//! through it so a difference reads as a line diff.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use crate::{digest, layer, xattr, Error};

/// One line per entry below `root`, sorted by path; `root` itself is `/`.
pub fn dump(root: &Path) -> Result<Vec<String>, Error> {
    let mut out = Vec::new();
    let meta = fs::symlink_metadata(root).map_err(|e| Error::path("reading", root, e))?;
    out.push(line("/", root, &meta)?);
    walk(root, "", &mut out)?;
    Ok(out)
}

fn walk(dir: &Path, rel: &str, out: &mut Vec<String>) -> Result<(), Error> {
    for name in layer::sorted_names(dir)? {
        let full = dir.join(&name);
        let rel = format!("{rel}/{}", name.to_string_lossy());
        let meta = fs::symlink_metadata(&full).map_err(|e| Error::path("reading", &full, e))?;
        out.push(line(&rel, &full, &meta)?);
        if meta.is_dir() {
            walk(&full, &rel, out)?;
        }
    }
    Ok(())
}

fn line(rel: &str, full: &Path, meta: &fs::Metadata) -> Result<String, Error> {
    let ft = meta.file_type();
    let kind = if ft.is_dir() {
        "dir"
    } else if ft.is_symlink() {
        "symlink"
    } else if ft.is_file() {
        "file"
    } else if ft.is_char_device() {
        "char"
    } else if ft.is_block_device() {
        "block"
    } else if ft.is_fifo() {
        "fifo"
    } else {
        "socket"
    };
    let mut s = format!(
        "{rel} {kind} {:04o} {}:{}",
        meta.mode() & 0o7777,
        meta.uid(),
        meta.gid()
    );
    if ft.is_file() {
        let bytes = fs::read(full).map_err(|e| Error::path("reading", full, e))?;
        s.push_str(&format!(" size={} {}", bytes.len(), digest::sha256(&bytes)));
        if meta.nlink() > 1 {
            s.push_str(&format!(" links={}", meta.nlink()));
        }
    } else if ft.is_symlink() {
        let target = fs::read_link(full).map_err(|e| Error::path("reading link", full, e))?;
        s.push_str(&format!(" -> {}", target.display()));
    } else if ft.is_char_device() || ft.is_block_device() {
        s.push_str(&format!(
            " {}:{}",
            rustix::fs::major(meta.rdev()),
            rustix::fs::minor(meta.rdev())
        ));
    }
    for (k, v) in xattr::list(full)? {
        s.push_str(&format!(" xattr:{k}={}", hex::encode(v)));
    }
    Ok(s)
}
