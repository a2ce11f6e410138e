//! A readable dump of a file tree: one line per path with its type, mode,
//! owner, size, content digest, link target and xattrs. Tests compare trees
//! through it so a difference reads as a line diff.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::layer::OPAQUE_XATTR;
use crate::unpack::is_whiteout;
use crate::{digest, layer, xattr, Error};

/// One line per entry below `root`, sorted by path; `root` itself is `/`.
pub fn dump(root: &Path) -> Result<Vec<String>, Error> {
    let mut out = Vec::new();
    let meta = fs::symlink_metadata(root).map_err(|e| Error::path("reading", root, e))?;
    out.push(line("/", root, &meta, false)?);
    walk(root, "", &mut out)?;
    Ok(out)
}

fn walk(dir: &Path, rel: &str, out: &mut Vec<String>) -> Result<(), Error> {
    for name in layer::sorted_names(dir)? {
        let full = dir.join(&name);
        let rel = format!("{rel}/{}", name.to_string_lossy());
        let meta = fs::symlink_metadata(&full).map_err(|e| Error::path("reading", &full, e))?;
        out.push(line(&rel, &full, &meta, false)?);
        if meta.is_dir() {
            walk(&full, &rel, out)?;
        }
    }
    Ok(())
}

/// What an image holds, from its layers' overlay diff dirs (bottom first,
/// as the store keeps them): every path of the merged tree, as overlayfs
/// shows it, with what it holds — type, mode, owner, the digest of its
/// bytes, link target, device numbers, xattrs — and never its times or
/// link counts. Two images with the same content list the same.
pub fn content(diffs: &[PathBuf]) -> Result<BTreeMap<String, String>, Error> {
    let mut out = BTreeMap::new();
    for diff in diffs {
        merge(diff, "", &mut out)?;
    }
    Ok(out)
}

fn merge(dir: &Path, rel: &str, out: &mut BTreeMap<String, String>) -> Result<(), Error> {
    for name in layer::sorted_names(dir)? {
        let full = dir.join(&name);
        let rel = format!("{rel}/{}", name.to_string_lossy());
        let meta = fs::symlink_metadata(&full).map_err(|e| Error::path("reading", &full, e))?;
        let below = |out: &mut BTreeMap<String, String>| {
            let prefix = format!("{rel}/");
            let gone: Vec<String> = out
                .range(prefix.clone()..)
                .take_while(|(k, _)| k.starts_with(&prefix))
                .map(|(k, _)| k.clone())
                .collect();
            gone.into_iter().for_each(|k| {
                out.remove(&k);
            });
        };
        if is_whiteout(&meta) {
            out.remove(&rel);
            below(out);
            continue;
        }
        let was_dir = out
            .get(&rel)
            .is_some_and(|l| l[rel.len()..].starts_with(" dir "));
        let opaque = meta.is_dir() && xattr::get(&full, OPAQUE_XATTR)?.as_deref() == Some(b"y");
        if !meta.is_dir() || !was_dir || opaque {
            below(out);
        }
        out.insert(rel.clone(), line(&rel, &full, &meta, true)?);
        if meta.is_dir() {
            merge(&full, &rel, out)?;
        }
    }
    Ok(())
}

/// The bytes of the regular file `path` (absolute, in the image) in the
/// merged tree of `diffs` (bottom first), as overlayfs shows it: `None`
/// when it is not there, is not a regular file, or is reached through a
/// symlink — an image's symlinks are never followed here.
pub fn read_merged(diffs: &[PathBuf], path: &str) -> Result<Option<Vec<u8>>, Error> {
    match find_merged(diffs, path)? {
        Some((full, meta)) if meta.is_file() => fs::read(&full)
            .map(Some)
            .map_err(|e| Error::path("reading", &full, e)),
        _ => Ok(None),
    }
}

/// The names in the directory `dir` of the merged tree of `diffs`, sorted;
/// empty when it is not a directory there.
pub fn list_merged(diffs: &[PathBuf], dir: &str) -> Result<Vec<String>, Error> {
    let mut names = std::collections::BTreeSet::new();
    let mut seen = std::collections::BTreeSet::new();
    for diff in diffs.iter().rev() {
        let layer = in_layer(diff, dir)?;
        match &layer.found {
            Some((full, meta)) if meta.is_dir() => {
                for name in layer::sorted_names(full)? {
                    let name = name.to_string_lossy().into_owned();
                    let entry = full.join(&name);
                    let m = fs::symlink_metadata(&entry)
                        .map_err(|e| Error::path("reading", &entry, e))?;
                    if seen.insert(name.clone()) && !is_whiteout(&m) {
                        names.insert(name);
                    }
                }
                if xattr::get(full, OPAQUE_XATTR)?.as_deref() == Some(b"y") {
                    break;
                }
            }
            Some(_) => break,
            None if layer.hides => break,
            None => {}
        }
    }
    Ok(names.into_iter().collect())
}

/// The topmost layer's entry for `path`, if the merged tree has one.
fn find_merged(diffs: &[PathBuf], path: &str) -> Result<Option<(PathBuf, fs::Metadata)>, Error> {
    for diff in diffs.iter().rev() {
        let layer = in_layer(diff, path)?;
        if layer.found.is_some() || layer.hides {
            return Ok(layer.found);
        }
    }
    Ok(None)
}

/// What one layer holds at a path.
struct InLayer {
    /// Its entry there (never a whiteout).
    found: Option<(PathBuf, fs::Metadata)>,
    /// Whether it hides the layers below at that path: a whiteout, a
    /// non-directory on the way, or an opaque directory on the way.
    hides: bool,
}

fn in_layer(diff: &Path, path: &str) -> Result<InLayer, Error> {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    let absent = |hides| InLayer { found: None, hides };
    if parts.contains(&"..") {
        return Ok(absent(true));
    }
    let mut at = diff.to_path_buf();
    let mut opaque = false;
    for (i, part) in parts.iter().enumerate() {
        at.push(part);
        let Ok(meta) = fs::symlink_metadata(&at) else {
            return Ok(absent(opaque));
        };
        if is_whiteout(&meta) {
            return Ok(absent(true));
        }
        if i + 1 == parts.len() {
            return Ok(InLayer {
                found: Some((at, meta)),
                hides: true,
            });
        }
        if !meta.is_dir() {
            return Ok(absent(true));
        }
        opaque |= xattr::get(&at, OPAQUE_XATTR)?.as_deref() == Some(b"y");
    }
    // the root itself
    let meta = fs::symlink_metadata(&at).map_err(|e| Error::path("reading", &at, e))?;
    Ok(InLayer {
        found: Some((at, meta)),
        hides: true,
    })
}

/// `content_only`: without link counts and overlayfs's own xattrs.
fn line(rel: &str, full: &Path, meta: &fs::Metadata, content_only: bool) -> Result<String, Error> {
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
        if !content_only && meta.nlink() > 1 {
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
    // overlayfs's own attributes (opaque, copy-up origins) are not content
    let own = |k: &str| content_only && k.starts_with("trusted.overlay.");
    for (k, v) in xattr::list(full)?.into_iter().filter(|(k, _)| !own(k)) {
        s.push_str(&format!(" xattr:{k}={}", hex::encode(v)));
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_merges_layers_and_ignores_times() {
        let t = tempfile::tempdir().unwrap();
        let (lower, upper) = (t.path().join("lower"), t.path().join("upper"));
        fs::create_dir_all(lower.join("etc/app")).unwrap();
        fs::write(lower.join("etc/app/conf"), "a").unwrap();
        fs::write(lower.join("etc/app/old"), "o").unwrap();
        fs::create_dir_all(lower.join("opt")).unwrap();
        fs::write(lower.join("opt/tool"), "t").unwrap();
        fs::create_dir_all(upper.join("etc/app")).unwrap();
        fs::write(upper.join("etc/app/conf"), "b").unwrap();
        // a file over a directory hides what was below it
        fs::write(upper.join("opt"), "now a file").unwrap();
        let c = content(&[lower.clone(), upper.clone()]).unwrap();
        let keys: Vec<&str> = c.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            ["/etc", "/etc/app", "/etc/app/conf", "/etc/app/old", "/opt"]
        );
        assert!(c["/etc/app/conf"].contains(&digest::sha256(b"b").to_string()));
        assert!(c["/opt"].starts_with("/opt file "));
        // the same files written later hold the same content
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(upper.join("etc/app/conf"), "b").unwrap();
        assert_eq!(content(&[lower.clone(), upper.clone()]).unwrap(), c);
        // single files and directories read from the merged tree
        let diffs = [lower.clone(), upper.clone()];
        assert_eq!(read_merged(&diffs, "/etc/app/conf").unwrap().unwrap(), b"b");
        assert_eq!(read_merged(&diffs, "/etc/app/old").unwrap().unwrap(), b"o");
        assert_eq!(read_merged(&diffs, "/opt/tool").unwrap(), None);
        assert_eq!(read_merged(&diffs, "/etc/../opt").unwrap(), None);
        assert_eq!(list_merged(&diffs, "/etc/app").unwrap(), ["conf", "old"]);
        assert!(list_merged(&diffs, "/opt").unwrap().is_empty());
        // a symlink on the way is not followed
        std::os::unix::fs::symlink("/etc", upper.join("link")).unwrap();
        assert_eq!(read_merged(&diffs, "/link/app/conf").unwrap(), None);
    }
}
