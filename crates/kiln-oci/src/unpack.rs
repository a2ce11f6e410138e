//! Unpacking a layer blob safely.
//!
//! Two targets: an overlay *diff dir* (one per layer, whiteouts become 0:0
//! character devices and opaque markers become `trusted.overlay.opaque=y`,
//! ready to serve as an overlay lower dir), or a *flat* root filesystem onto
//! which layers are applied in order (whiteouts delete).
//!
//! Layer content is untrusted. Entries with `..` or an absolute path are
//! rejected; in a flat tree, symlinks in an entry's parent path are resolved
//! inside the root and rejected when they would lead out of it; in a diff dir
//! a parent that is a symlink is rejected. Nothing is ever written outside
//! `dest`.

use std::collections::HashSet;
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use flate2::read::MultiGzDecoder;
use oci_spec::image::Digest;
use rustix::fs::{AtFlags, FileType, Mode as FsMode, Timespec, Timestamps, CWD};

use crate::digest::HashReader;
use crate::layer::{OPAQUE_MARKER, OPAQUE_XATTR, WHITEOUT_PREFIX};
use crate::{xattr, Error};

/// Where a layer is unpacked to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// An empty directory that becomes this layer's overlay lower dir.
    OverlayDiff,
    /// A root filesystem the layer is applied onto.
    Flat,
}

/// Unpacks a (possibly gzip-compressed) layer tar into `dest`; returns the
/// layer's diff_id (sha256 of the uncompressed tar).
pub fn unpack<R: Read>(blob: R, dest: &Path, target: Target) -> Result<Digest, Error> {
    let mut buffered = BufReader::new(blob);
    let magic = buffered
        .fill_buf()
        .map_err(|e| Error::io("reading the layer", e))?;
    let plain: Box<dyn Read> = if magic.starts_with(&[0x1f, 0x8b]) {
        Box::new(MultiGzDecoder::new(buffered))
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(
            zstd::stream::read::Decoder::with_buffer(buffered)
                .map_err(|e| Error::io("starting zstd", e))?,
        )
    } else {
        Box::new(buffered)
    };
    let mut hashed = HashReader::new(plain);
    let mut archive = tar::Archive::new(&mut hashed);
    let mut u = Unpacker {
        dest: dest.to_path_buf(),
        target,
        created: HashSet::new(),
        dirs: Vec::new(),
    };
    for entry in archive
        .entries()
        .map_err(|e| Error::io("reading the layer tar", e))?
    {
        let mut entry = entry.map_err(|e| Error::io("reading the layer tar", e))?;
        u.entry(&mut entry)?;
    }
    u.finish_dirs()?;
    let (diff_id, _) = hashed
        .finish()
        .map_err(|e| Error::io("reading the layer", e))?;
    Ok(diff_id)
}

struct Unpacker {
    dest: PathBuf,
    target: Target,
    /// Paths this layer created, which its own opaque markers must keep.
    created: HashSet<PathBuf>,
    /// Directories whose times are set last (adding children changes them).
    dirs: Vec<(PathBuf, u64)>,
}

fn hostile(entry: &str, reason: &str) -> Error {
    Error::HostileEntry {
        entry: entry.to_string(),
        reason: reason.to_string(),
    }
}

/// The entry's path as clean relative components.
fn clean_rel(raw: &str) -> Result<PathBuf, Error> {
    if raw.starts_with('/') {
        return Err(hostile(raw, "absolute paths are not allowed in a layer"));
    }
    let mut out = PathBuf::new();
    for c in Path::new(raw).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(hostile(raw, "`..` is not allowed in a layer path"))
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(hostile(raw, "absolute paths are not allowed in a layer"))
            }
        }
    }
    Ok(out)
}

fn io_err<'a>(what: &str, p: &'a Path) -> impl Fn(std::io::Error) -> Error + 'a {
    let what = what.to_string();
    move |e| Error::path(&what, p, e)
}

pub(crate) fn remove_any(p: &Path) -> Result<(), Error> {
    match fs::symlink_metadata(p) {
        Err(_) => Ok(()),
        Ok(m) if m.is_dir() => fs::remove_dir_all(p).map_err(io_err("removing", p)),
        Ok(_) => fs::remove_file(p).map_err(io_err("removing", p)),
    }
}

impl Unpacker {
    /// Resolves the parent directory of `rel` inside the root, creating
    /// missing directories; symlinks are followed only within the root.
    fn parent_dir(&self, raw: &str, rel: &Path) -> Result<PathBuf, Error> {
        let mut cur = PathBuf::new();
        let parents: Vec<_> = rel
            .parent()
            .map(|p| p.components().collect())
            .unwrap_or_default();
        let mut hops = 0;
        let mut queue: Vec<std::ffi::OsString> = parents
            .iter()
            .map(|c| c.as_os_str().to_os_string())
            .collect();
        queue.reverse();
        while let Some(name) = queue.pop() {
            if name == ".." {
                if !cur.pop() {
                    return Err(hostile(raw, "a symlink in its path leads out of the root"));
                }
                continue;
            }
            if name == "." || name.is_empty() {
                continue;
            }
            let next = cur.join(&name);
            let full = self.dest.join(&next);
            match fs::symlink_metadata(&full) {
                Ok(m) if m.is_dir() => cur = next,
                Ok(m) if m.file_type().is_symlink() => {
                    if self.target == Target::OverlayDiff {
                        return Err(hostile(raw, "its parent path goes through a symlink"));
                    }
                    hops += 1;
                    if hops > 40 {
                        return Err(hostile(raw, "too many levels of symlinks"));
                    }
                    let link = fs::read_link(&full).map_err(io_err("reading link", &full))?;
                    if link.is_absolute() {
                        cur = PathBuf::new();
                    }
                    // the target's components are resolved one by one, so
                    // symlinks and `..` inside it are checked the same way
                    let parts = link_components(&link);
                    queue.extend(parts.into_iter().rev());
                }
                Ok(_) => {
                    // a file where a directory is needed: the layer replaces it
                    fs::remove_file(&full).map_err(io_err("replacing", &full))?;
                    fs::create_dir(&full).map_err(io_err("creating", &full))?;
                    cur = next;
                }
                Err(_) => {
                    fs::create_dir(&full).map_err(io_err("creating", &full))?;
                    cur = next;
                }
            }
        }
        Ok(self.dest.join(cur))
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<R>) -> Result<(), Error> {
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let rel = clean_rel(&raw)?;
        let Some(name) = rel.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            return Ok(()); // the root itself ("./")
        };
        let parent = self.parent_dir(&raw, &rel)?;
        if name == OPAQUE_MARKER {
            return self.opaque(&parent);
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
            return self.whiteout(&raw, &parent.join(hidden));
        }
        let path = parent.join(&name);
        self.create(entry, &raw, &path)?;
        self.created.insert(path);
        Ok(())
    }

    fn opaque(&mut self, dir: &Path) -> Result<(), Error> {
        match self.target {
            Target::OverlayDiff => xattr::set(dir, OPAQUE_XATTR, b"y"),
            Target::Flat => {
                for name in crate::layer::sorted_names(dir)? {
                    let child = dir.join(name);
                    if !self.created.contains(&child) {
                        remove_any(&child)?;
                    }
                }
                Ok(())
            }
        }
    }

    fn whiteout(&mut self, raw: &str, path: &Path) -> Result<(), Error> {
        if path.file_name().is_none() {
            return Err(hostile(raw, "whiteout of nothing"));
        }
        remove_any(path)?;
        if self.target == Target::OverlayDiff {
            rustix::fs::mknodat(CWD, path, FileType::CharacterDevice, FsMode::empty(), 0)
                .map_err(|e| Error::path("creating whiteout", path, e.into()))?;
        }
        Ok(())
    }

    fn create<R: Read>(
        &mut self,
        entry: &mut tar::Entry<R>,
        raw: &str,
        path: &Path,
    ) -> Result<(), Error> {
        let header = entry.header().clone();
        let kind = header.entry_type();
        let mode = header
            .mode()
            .map_err(|e| Error::io("reading the entry mode", e))?
            & 0o7777;
        let existing = fs::symlink_metadata(path).ok();
        if !(kind.is_dir() && existing.as_ref().is_some_and(|m| m.is_dir())) {
            remove_any(path)?;
        }
        match kind {
            tar::EntryType::Directory => {
                if existing.as_ref().is_none_or(|m| !m.is_dir()) {
                    fs::create_dir(path).map_err(io_err("creating", path))?;
                }
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                let mut f = fs::File::create(path).map_err(io_err("creating", path))?;
                std::io::copy(entry, &mut f).map_err(io_err("writing", path))?;
            }
            tar::EntryType::Symlink => {
                let target = header
                    .link_name()
                    .map_err(|e| Error::io("reading link target", e))?
                    .unwrap_or_default();
                symlink(&target, path).map_err(io_err("creating symlink", path))?;
            }
            tar::EntryType::Link => {
                let target = header
                    .link_name()
                    .map_err(|e| Error::io("reading link target", e))?
                    .unwrap_or_default();
                let target_rel = clean_rel(&target.to_string_lossy())?;
                let source = self.dest.join(&target_rel);
                if fs::symlink_metadata(&source).is_err() {
                    return Err(hostile(
                        raw,
                        &format!(
                            "hard link to {} which is not in this layer",
                            target.display()
                        ),
                    ));
                }
                fs::hard_link(&source, path).map_err(io_err("creating hard link", path))?;
                return Ok(()); // a hard link shares the target's metadata
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let ft = match kind {
                    tar::EntryType::Char => FileType::CharacterDevice,
                    tar::EntryType::Block => FileType::BlockDevice,
                    _ => FileType::Fifo,
                };
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                rustix::fs::mknodat(
                    CWD,
                    path,
                    ft,
                    FsMode::from_raw_mode(mode),
                    rustix::fs::makedev(major, minor),
                )
                .map_err(|e| Error::path("creating device", path, e.into()))?;
            }
            _ => return Ok(()), // PAX/GNU metadata entries are consumed by the tar reader
        }
        self.metadata(entry, &header, path, mode, kind)
    }

    fn metadata<R: Read>(
        &mut self,
        entry: &mut tar::Entry<R>,
        header: &tar::Header,
        path: &Path,
        mode: u32,
        kind: tar::EntryType,
    ) -> Result<(), Error> {
        let uid = header.uid().unwrap_or(0) as u32;
        let gid = header.gid().unwrap_or(0) as u32;
        rustix::fs::chownat(
            CWD,
            path,
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| Error::path("setting owner of", path, e.into()))?;
        if let Ok(Some(exts)) = entry.pax_extensions() {
            for ext in exts.flatten() {
                if let Some(name) = ext.key().ok().and_then(|k| k.strip_prefix("SCHILY.xattr.")) {
                    xattr::set(path, name, ext.value_bytes())?;
                }
            }
        }
        if kind != tar::EntryType::Symlink {
            // after chown, which clears setuid/setgid bits
            fs::set_permissions(path, fs::Permissions::from_mode(mode))
                .map_err(io_err("setting mode of", path))?;
        }
        let mtime = header.mtime().unwrap_or(0);
        if kind.is_dir() {
            self.dirs.push((path.to_path_buf(), mtime));
            return Ok(());
        }
        set_mtime(path, mtime)
    }

    fn finish_dirs(&mut self) -> Result<(), Error> {
        for (dir, mtime) in self.dirs.iter().rev() {
            if fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir()) {
                set_mtime(dir, *mtime)?;
            }
        }
        Ok(())
    }
}

fn set_mtime(path: &Path, secs: u64) -> Result<(), Error> {
    let t = Timespec {
        tv_sec: secs as i64,
        tv_nsec: 0,
    };
    let times = Timestamps {
        last_access: t,
        last_modification: t,
    };
    rustix::fs::utimensat(CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW)
        .map_err(|e| Error::path("setting times of", path, e.into()))
}

/// A symlink target as path components, `..` kept, so it can be resolved
/// component by component inside a root.
pub fn link_components(target: &Path) -> Vec<std::ffi::OsString> {
    target
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect()
}

/// Whether `meta` is an overlay whiteout (a 0:0 character device).
pub fn is_whiteout(meta: &fs::Metadata) -> bool {
    use std::os::unix::fs::FileTypeExt;
    meta.file_type().is_char_device() && meta.rdev() == 0
}
