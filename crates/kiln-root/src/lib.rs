//! Paths inside a root filesystem, resolved the way a process whose root is
//! that directory would see them, and never out of it.
//!
//! kiln writes into trees that come from images of anywhere: layer
//! snapshots, a step's overlay root before `pivot_root`, a VM's flattened
//! root. Such a tree may hold symlinks that point anywhere (`etc ->
//! /etc`, `up -> ../../..`). Every path kiln creates, links or mounts in it
//! goes through [`Root`], which walks the path one component at a time from
//! a directory handle with `O_NOFOLLOW`: a symlink is read and its target
//! resolved again inside the root (absolute targets from the root, `..`
//! never above it, as `RESOLVE_IN_ROOT` does), so the kernel itself never
//! follows a symlink the image made. What the walk returns is a handle on
//! the directory (or file) it found and the clean path of it inside the
//! root, every component of which is a real directory.
#![cfg_attr(not(test), deny(clippy::print_stdout, clippy::print_stderr))]

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

/// How many symlinks one walk may follow (Linux's limit).
const MAX_HOPS: u32 = 40;

/// What went wrong resolving a path inside a root.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: goes through the symlink /{at}, which is not allowed here")]
    Symlink { path: PathBuf, at: PathBuf },
    #[error("{path}: too many levels of symlinks")]
    Loop { path: PathBuf },
    #[error("{path}: /{at} is not a directory")]
    NotDir { path: PathBuf, at: PathBuf },
    #[error("{path}: /{at} does not exist")]
    NotFound { path: PathBuf, at: PathBuf },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Whether a walk may go through symlinks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Symlinks {
    /// Follow them inside the root, as the image would.
    Follow,
    /// Refuse a path that goes through one (an overlay diff dir, where a
    /// symlinked parent means something else in every layer below).
    Reject,
}

/// What a walk does with a component that does not exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// Fail with [`Error::NotFound`].
    Fail,
    /// Create it as a directory (mode 0755, owned by the caller), also
    /// where a dangling symlink points, as `mkdir -p` in the image would.
    CreateDirs,
}

/// A directory tree treated as the root of everything below it.
#[derive(Debug)]
pub struct Root {
    fd: OwnedFd,
    path: PathBuf,
}

/// The directory that holds a path's last component, and that component.
#[derive(Debug)]
pub struct Parent {
    /// A handle on the directory.
    pub dir: OwnedFd,
    /// The directory's clean path inside the root (empty for the root).
    pub rel: PathBuf,
    /// The last component as written: not resolved, possibly absent.
    pub name: OsString,
}

impl Parent {
    /// The entry's clean path inside the root.
    pub fn entry(&self) -> PathBuf {
        self.rel.join(&self.name)
    }
}

/// A path resolved to what it names.
#[derive(Debug)]
pub struct Found {
    /// An `O_PATH` handle on what was found (usable with `/proc/self/fd`).
    pub fd: OwnedFd,
    /// Its clean path inside the root, no component a symlink.
    pub rel: PathBuf,
    /// Directories the walk created, in order, as clean paths.
    pub created: Vec<PathBuf>,
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(Errno) -> Error + 'a {
    move |e| Error::Io {
        what,
        path: path.to_path_buf(),
        source: e.into(),
    }
}

/// `path`'s components in walking order, `..` kept: `/`, `.` and empty ones
/// say nothing inside a root.
fn components(path: &Path) -> Vec<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect()
}

impl Root {
    /// Opens the directory `path` as a root.
    pub fn open(path: &Path) -> Result<Root, Error> {
        let fd = rustix::fs::open(
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(io("opening", path))?;
        Ok(Root {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// The root's path on this machine.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The root's handle.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The path on this machine of a clean path a walk returned. Only for
    /// paths from [`Parent`] or [`Found`]: they contain no symlink.
    pub fn host_path(&self, rel: &Path) -> PathBuf {
        self.path.join(rel)
    }

    /// Resolves every component of `path` but the last, which is returned
    /// as written. A path whose last component is `..` (or that is empty)
    /// has no name of its own: it is resolved whole and `name` is empty.
    pub fn parent(
        &self,
        path: &Path,
        symlinks: Symlinks,
        missing: Missing,
    ) -> Result<Parent, Error> {
        let mut parts = components(path);
        let name = match parts.last() {
            Some(n) if n != ".." => parts.pop().unwrap_or_default(),
            _ => OsString::new(),
        };
        let mut walk = Walk::new(self, path, symlinks, missing);
        walk.run(parts, true)?;
        Ok(Parent {
            dir: walk.dir_owned()?,
            rel: walk.rel(),
            name,
        })
    }

    /// Resolves all of `path`, its last component too (a final symlink is
    /// followed). With [`Missing::CreateDirs`] every missing component is
    /// made a directory.
    pub fn resolve(
        &self,
        path: &Path,
        symlinks: Symlinks,
        missing: Missing,
    ) -> Result<Found, Error> {
        Walk::new(self, path, symlinks, missing).all(false)
    }

    /// Resolves all of `path` like [`Root::resolve`], creating missing
    /// directories on the way; a missing last component (or what a dangling
    /// final symlink names) is made an empty file when `file`, else a
    /// directory. For mount points.
    pub fn make(&self, path: &Path, file: bool) -> Result<Found, Error> {
        Walk::new(self, path, Symlinks::Follow, Missing::CreateDirs).all(file)
    }

    /// Resolves `path` as far as it exists and returns the clean path it
    /// names: symlinks followed inside the root, the missing rest appended
    /// as written (its `..` applied). Creates nothing.
    pub fn lexical(&self, path: &Path) -> Result<PathBuf, Error> {
        let mut walk = Walk::new(self, path, Symlinks::Follow, Missing::Fail);
        let mut queue = components(path);
        queue.reverse();
        while let Some(name) = queue.pop() {
            let last = queue.is_empty();
            match walk.step(&name, &mut queue, last, false) {
                Ok(_) => {}
                Err(Error::NotFound { .. }) => {
                    let mut rel = walk.rel();
                    for n in std::iter::once(name).chain(queue.into_iter().rev()) {
                        if n == ".." {
                            rel.pop();
                        } else {
                            rel.push(n);
                        }
                    }
                    return Ok(rel);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(walk.rel())
    }
}

/// One walk from the root: the directories entered so far, as handles.
struct Walk<'a> {
    root: &'a Root,
    path: &'a Path,
    symlinks: Symlinks,
    missing: Missing,
    dirs: Vec<(OwnedFd, OsString)>,
    /// The last component, when it is not a directory.
    file: Option<OsString>,
    /// Whether a missing last component is made an empty file.
    make_file: bool,
    hops: u32,
    created: Vec<PathBuf>,
}

impl<'a> Walk<'a> {
    fn new(root: &'a Root, path: &'a Path, symlinks: Symlinks, missing: Missing) -> Self {
        Walk {
            root,
            path,
            symlinks,
            missing,
            dirs: Vec::new(),
            file: None,
            make_file: false,
            hops: 0,
            created: Vec::new(),
        }
    }

    /// Walks all of the path, its last component too.
    fn all(mut self, make_file: bool) -> Result<Found, Error> {
        self.make_file = make_file;
        let fd = match self.run(components(self.path), false)? {
            Some(fd) => fd,
            None => self.dir_owned()?,
        };
        Ok(Found {
            fd,
            rel: self.rel(),
            created: self.created,
        })
    }

    fn cur(&self) -> BorrowedFd<'_> {
        self.dirs
            .last()
            .map_or(self.root.fd.as_fd(), |(fd, _)| fd.as_fd())
    }

    fn rel(&self) -> PathBuf {
        self.dirs
            .iter()
            .map(|(_, n)| n.as_os_str())
            .chain(self.file.as_deref())
            .collect()
    }

    fn dir_owned(&self) -> Result<OwnedFd, Error> {
        self.cur().try_clone_to_owned().map_err(|e| Error::Io {
            what: "duplicating a handle on",
            path: self.root.host_path(&self.rel()),
            source: e,
        })
    }

    /// Walks `parts`; with `dirs_only`, every component must end as a
    /// directory. Returns the handle of a final non-directory.
    fn run(&mut self, mut parts: Vec<OsString>, dirs_only: bool) -> Result<Option<OwnedFd>, Error> {
        parts.reverse();
        while let Some(name) = parts.pop() {
            let last = parts.is_empty() && !dirs_only;
            if let Some(fd) = self.step(&name, &mut parts, last, true)? {
                return Ok(Some(fd));
            }
        }
        Ok(None)
    }

    /// Takes one component: enters a directory, queues a symlink's target,
    /// or (the last component, not a directory) returns its handle.
    fn step(
        &mut self,
        name: &OsStr,
        queue: &mut Vec<OsString>,
        last: bool,
        create: bool,
    ) -> Result<Option<OwnedFd>, Error> {
        if name == ".." {
            self.dirs.pop(); // never above the root
            return Ok(None);
        }
        let at = self.rel().join(name);
        let fd = match rustix::fs::openat(
            self.cur(),
            name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::NOENT) if create && self.missing == Missing::CreateDirs => {
                if last && self.make_file {
                    self.touch(name, &at)?
                } else {
                    self.mkdir(name, &at)?
                }
            }
            Err(Errno::NOENT) => {
                return Err(Error::NotFound {
                    path: self.path.to_path_buf(),
                    at,
                })
            }
            Err(e) => return Err(io("opening", &self.root.host_path(&at))(e)),
        };
        let stat = rustix::fs::fstat(&fd).map_err(io("reading", &self.root.host_path(&at)))?;
        match FileType::from_raw_mode(stat.st_mode) {
            FileType::Directory => {
                self.dirs.push((fd, name.to_os_string()));
                Ok(None)
            }
            FileType::Symlink => {
                self.follow(name, &at, queue)?;
                Ok(None)
            }
            _ if last => {
                self.file = Some(name.to_os_string());
                Ok(Some(fd))
            }
            _ => Err(Error::NotDir {
                path: self.path.to_path_buf(),
                at,
            }),
        }
    }

    fn mkdir(&mut self, name: &OsStr, at: &Path) -> Result<OwnedFd, Error> {
        match rustix::fs::mkdirat(self.cur(), name, Mode::from_raw_mode(0o755)) {
            Ok(()) => self.created.push(at.to_path_buf()),
            Err(Errno::EXIST) => {} // made meanwhile: opened below all the same
            Err(e) => return Err(io("creating", &self.root.host_path(at))(e)),
        }
        rustix::fs::openat(
            self.cur(),
            name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(io("opening", &self.root.host_path(at)))
    }

    fn touch(&mut self, name: &OsStr, at: &Path) -> Result<OwnedFd, Error> {
        let fd = rustix::fs::openat(
            self.cur(),
            name,
            OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        )
        .map_err(io("creating", &self.root.host_path(at)))?;
        drop(fd);
        self.created.push(at.to_path_buf());
        rustix::fs::openat(
            self.cur(),
            name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(io("opening", &self.root.host_path(at)))
    }

    /// Queues the components of the symlink `name`'s target.
    fn follow(&mut self, name: &OsStr, at: &Path, queue: &mut Vec<OsString>) -> Result<(), Error> {
        if self.symlinks == Symlinks::Reject {
            return Err(Error::Symlink {
                path: self.path.to_path_buf(),
                at: at.to_path_buf(),
            });
        }
        self.hops += 1;
        if self.hops > MAX_HOPS {
            return Err(Error::Loop {
                path: self.path.to_path_buf(),
            });
        }
        let target = rustix::fs::readlinkat(self.cur(), name, Vec::new())
            .map_err(io("reading the symlink", &self.root.host_path(at)))?;
        let target: PathBuf =
            <OsString as std::os::unix::ffi::OsStringExt>::from_vec(target.into_bytes()).into();
        if target.is_absolute() {
            self.dirs.clear();
        }
        queue.extend(components(&target).into_iter().rev());
        Ok(())
    }
}

/// Whether `name` in `dir` exists, without following a symlink.
pub fn lstat(dir: BorrowedFd<'_>, name: &OsStr) -> Option<rustix::fs::Stat> {
    rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    struct Fixture {
        _dir: tempfile::TempDir,
        outside: PathBuf,
        root: Root,
    }

    /// A root beside an `outside` directory that holds a file, and
    /// symlinks in the root that point at it every way there is.
    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        let root = dir.path().join("root");
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("secret"), b"host").unwrap();
        fs::create_dir_all(root.join("usr/lib")).unwrap();
        symlink("usr/lib", root.join("lib")).unwrap();
        symlink(&outside, root.join("abs")).unwrap();
        symlink("../outside", root.join("up")).unwrap();
        symlink("/nonexistent", root.join("dangling")).unwrap();
        symlink("loop", root.join("loop")).unwrap();
        fs::write(root.join("file"), b"").unwrap();
        let root = Root::open(&root).unwrap();
        Fixture {
            _dir: dir,
            outside,
            root,
        }
    }

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let f = fixture();
        let found = f
            .root
            .resolve(Path::new("/lib"), Symlinks::Follow, Missing::Fail)
            .unwrap();
        assert_eq!(found.rel, Path::new("usr/lib"));
        // an absolute target is taken from the root, `..` stops at it
        for p in ["abs/secret", "up/secret", "../../outside/secret"] {
            let err = f
                .root
                .resolve(Path::new(p), Symlinks::Follow, Missing::Fail)
                .unwrap_err();
            assert!(matches!(err, Error::NotFound { .. }), "{p}: {err}");
        }
        let err = f
            .root
            .resolve(Path::new("loop/x"), Symlinks::Follow, Missing::Fail)
            .unwrap_err();
        assert!(matches!(err, Error::Loop { .. }), "{err}");
        let err = f
            .root
            .resolve(Path::new("file/x"), Symlinks::Follow, Missing::Fail)
            .unwrap_err();
        assert!(matches!(err, Error::NotDir { .. }), "{err}");
    }

    #[test]
    fn creating_follows_dangling_symlinks_inside_the_root() {
        let f = fixture();
        let found = f.root.make(Path::new("/abs/secret"), true).unwrap();
        let outside = f.outside.display().to_string();
        let expect = PathBuf::from(outside.trim_start_matches('/')).join("secret");
        assert_eq!(found.rel, expect);
        assert!(f.root.host_path(&expect).is_file());
        assert_eq!(fs::read(f.outside.join("secret")).unwrap(), b"host");
        let found = f.root.make(Path::new("dangling/a/b"), false).unwrap();
        assert_eq!(found.rel, Path::new("nonexistent/a/b"));
        assert_eq!(
            found.created,
            vec![
                PathBuf::from("nonexistent"),
                PathBuf::from("nonexistent/a"),
                PathBuf::from("nonexistent/a/b")
            ]
        );
        assert!(
            fs::symlink_metadata(f.root.host_path(Path::new("dangling")))
                .unwrap()
                .file_type()
                .is_symlink()
        );
    }

    #[test]
    fn parents_are_resolved_and_the_name_is_kept() {
        let f = fixture();
        let p = f
            .root
            .parent(Path::new("lib/x.so"), Symlinks::Follow, Missing::Fail)
            .unwrap();
        assert_eq!(p.entry(), Path::new("usr/lib/x.so"));
        let p = f
            .root
            .parent(Path::new("abs"), Symlinks::Reject, Missing::Fail)
            .unwrap();
        assert_eq!(
            p.entry(),
            Path::new("abs"),
            "the last component is not followed"
        );
        let err = f
            .root
            .parent(Path::new("lib/x.so"), Symlinks::Reject, Missing::Fail)
            .unwrap_err();
        assert!(matches!(err, Error::Symlink { .. }), "{err}");
    }

    #[test]
    fn lexical_resolves_what_exists_and_appends_the_rest() {
        let f = fixture();
        let cases = [
            ("lib/custom/f", "usr/lib/custom/f"),
            ("dangling/", "nonexistent"),
            ("abs/secret", &*format!("{}/secret", f.outside.display())),
            ("new/../usr/./lib", "usr/lib"),
            ("file", "file"),
        ];
        for (path, want) in cases {
            let got = f.root.lexical(Path::new(path)).unwrap();
            assert_eq!(got, Path::new(want.trim_start_matches('/')), "{path}");
        }
    }
}
