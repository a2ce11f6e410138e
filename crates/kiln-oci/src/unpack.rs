//! Unpacking a layer blob safely.
//!
//! Two targets: an overlay *diff dir* (one per layer, whiteouts become 0:0
//! character devices and opaque markers become `trusted.overlay.opaque=y`,
//! ready to serve as an overlay lower dir), or a *flat* root filesystem onto
//! which layers are applied in order (whiteouts delete).
//!
//! Layer content is untrusted. Entries with `..` or an absolute path are
//! rejected. Every path an entry names (its own and a hard link's target)
//! is walked through [`kiln_root::Root`]: in a flat tree symlinks are
//! followed inside the root, as the image would (an absolute one from the
//! root, `..` never above it); in a diff dir a path through a symlink is
//! refused. Nothing is ever written, created or linked outside `dest`.

use std::collections::HashSet;
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use flate2::read::MultiGzDecoder;
use oci_spec::image::Digest;
use rustix::fs::{AtFlags, FileType, Mode as FsMode, Timespec, Timestamps, CWD};

use kiln_root::{Missing, Root, Symlinks};

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
    let plain = decompressed(blob)?;
    let mut hashed = HashReader::new(plain);
    let mut archive = tar::Archive::new(&mut hashed);
    let mut u = Unpacker {
        root: Root::open(dest).map_err(|e| walk_error("/", e))?,
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

/// A layer blob's tar: gzip and zstd are recognised by their magic bytes,
/// anything else is read as a plain tar.
pub fn decompressed<'a, R: Read + 'a>(blob: R) -> Result<Box<dyn Read + 'a>, Error> {
    let mut buffered = BufReader::new(blob);
    let magic = buffered
        .fill_buf()
        .map_err(|e| Error::io("reading the layer", e))?;
    Ok(if magic.starts_with(&[0x1f, 0x8b]) {
        Box::new(MultiGzDecoder::new(buffered))
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(
            zstd::stream::read::Decoder::with_buffer(buffered)
                .map_err(|e| Error::io("starting zstd", e))?,
        )
    } else {
        Box::new(buffered)
    })
}

struct Unpacker {
    root: Root,
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

/// A path walk's refusal as the entry's error.
fn walk_error(raw: &str, e: kiln_root::Error) -> Error {
    match e {
        kiln_root::Error::Symlink { at, .. } => hostile(
            raw,
            &format!("its path goes through the symlink /{}", at.display()),
        ),
        kiln_root::Error::Loop { .. } => hostile(raw, "too many levels of symlinks in its path"),
        kiln_root::Error::NotDir { at, .. } => hostile(
            raw,
            &format!("/{} in its path is not a directory", at.display()),
        ),
        kiln_root::Error::NotFound { at, .. } => hostile(
            raw,
            &format!("/{} in its path does not exist", at.display()),
        ),
        kiln_root::Error::Io { what, path, source } => Error::path(what, &path, source),
    }
}

fn io_err<'a>(what: &str, p: &'a Path) -> impl Fn(std::io::Error) -> Error + 'a {
    let what = what.to_string();
    move |e| Error::path(&what, p, e)
}

/// Removes whatever is at `p` (a directory with its contents), never
/// following a symlink; nothing there is no error.
pub fn remove_any(p: &Path) -> Result<(), Error> {
    match fs::symlink_metadata(p) {
        Err(_) => Ok(()),
        Ok(m) if m.is_dir() => fs::remove_dir_all(p).map_err(io_err("removing", p)),
        Ok(_) => fs::remove_file(p).map_err(io_err("removing", p)),
    }
}

impl Unpacker {
    /// How this target walks an entry's parent path: a flat tree follows
    /// symlinks inside the root, as the image would; in an overlay diff dir
    /// a symlinked parent means something else in every layer below, so it
    /// is refused.
    fn symlinks(&self) -> Symlinks {
        match self.target {
            Target::Flat => Symlinks::Follow,
            Target::OverlayDiff => Symlinks::Reject,
        }
    }

    /// Resolves the parent directory of `rel` inside the root, creating
    /// missing directories; returns the entry's path on this machine, whose
    /// parents are real directories inside the root.
    fn entry_path(&self, raw: &str, rel: &Path) -> Result<PathBuf, Error> {
        let parent = self
            .root
            .parent(rel, self.symlinks(), Missing::CreateDirs)
            .map_err(|e| walk_error(raw, e))?;
        Ok(self.root.host_path(&parent.entry()))
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<R>) -> Result<(), Error> {
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let rel = clean_rel(&raw)?;
        let Some(name) = rel.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            return Ok(()); // the root itself ("./")
        };
        let path = self.entry_path(&raw, &rel)?;
        let parent = path.parent().unwrap_or(&path).to_path_buf();
        if name == OPAQUE_MARKER {
            return self.opaque(&parent);
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
            return self.whiteout(&raw, &parent.join(hidden));
        }
        self.create(entry, &raw, &path)?;
        self.created.insert(path);
        Ok(())
    }

    /// The file a hard link entry names, resolved inside the root like
    /// any entry's path (never through a symlink out of it); it must exist.
    fn link_source(&self, raw: &str, target: &Path) -> Result<PathBuf, Error> {
        let rel = clean_rel(&target.to_string_lossy())?;
        let not_here = || {
            hostile(
                raw,
                &format!(
                    "hard link to {} which is not in this layer",
                    target.display()
                ),
            )
        };
        let parent = match self.root.parent(&rel, self.symlinks(), Missing::Fail) {
            Ok(p) => p,
            Err(kiln_root::Error::NotFound { .. } | kiln_root::Error::NotDir { .. }) => {
                return Err(not_here())
            }
            Err(e) => return Err(walk_error(raw, e)),
        };
        let source = self.root.host_path(&parent.entry());
        match fs::symlink_metadata(&source) {
            Ok(m) if !m.is_dir() => Ok(source),
            Ok(_) => Err(hostile(raw, "hard link to a directory")),
            Err(_) => Err(not_here()),
        }
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
                // O_EXCL: never written through a symlink that appeared meanwhile
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(path)
                    .map_err(io_err("creating", path))?;
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
                let source = self.link_source(raw, &target)?;
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

/// Whether `meta` is an overlay whiteout (a 0:0 character device).
pub fn is_whiteout(meta: &fs::Metadata) -> bool {
    use std::os::unix::fs::FileTypeExt;
    meta.file_type().is_char_device() && meta.rdev() == 0
}
