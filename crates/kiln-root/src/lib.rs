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
//! follows a symlink the image made. What a walk returns is the clean path
//! inside the root of what it found, every component of which is a real
//! directory: nothing else writes in these trees while kiln does, so that
//! path, joined to the root, reaches it without going through a symlink.
#![cfg_attr(not(test), deny(clippy::print_stdout, clippy::print_stderr))]

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{FileType, Mode, OFlags};
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
    /// Its clean path inside the root, no component a symlink.
    pub rel: PathBuf,
    /// What the walk created, in order, as clean paths.
    pub created: Vec<PathBuf>,
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(Errno) -> Error + 'a {
    move |e| Error::Io {
        what,
        path: path.to_path_buf(),
        source: e.into(),
    }
}

/// `path`'s components in walking order, `..` kept (so a symlink's target
/// can be resolved component by component inside a root): `/`, `.` and
/// empty ones say nothing inside a root.
pub fn components(path: &Path) -> Vec<OsString> {
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
        self.run(components(self.path), false)?;
        Ok(Found {
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

    /// The clean path of `name` in the current directory (for errors and
    /// what was created; the walk itself needs only handles).
    fn at(&self, name: &OsStr) -> PathBuf {
        self.rel().join(name)
    }

    /// Walks `parts`; with `dirs_only`, every component must end as a
    /// directory, else the last may be anything.
    fn run(&mut self, mut parts: Vec<OsString>, dirs_only: bool) -> Result<(), Error> {
        parts.reverse();
        while let Some(name) = parts.pop() {
            let last = parts.is_empty() && !dirs_only;
            if self.step(&name, &mut parts, last)? {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Takes one component: enters a directory or queues a symlink's
    /// target; true when it ended the walk at a last non-directory.
    fn step(&mut self, name: &OsStr, queue: &mut Vec<OsString>, last: bool) -> Result<bool, Error> {
        if name == ".." {
            self.dirs.pop(); // never above the root
            return Ok(false);
        }
        let fd = match rustix::fs::openat(
            self.cur(),
            name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::NOENT) if self.missing == Missing::CreateDirs => {
                if last && self.make_file {
                    self.touch(name)?
                } else {
                    self.mkdir(name)?
                }
            }
            Err(Errno::NOENT) => {
                return Err(Error::NotFound {
                    path: self.path.to_path_buf(),
                    at: self.at(name),
                })
            }
            Err(e) => return Err(io("opening", &self.root.host_path(&self.at(name)))(e)),
        };
        let stat = rustix::fs::fstat(&fd)
            .map_err(|e| io("reading", &self.root.host_path(&self.at(name)))(e))?;
        match FileType::from_raw_mode(stat.st_mode) {
            FileType::Directory => {
                self.dirs.push((fd, name.to_os_string()));
                Ok(false)
            }
            FileType::Symlink => {
                self.follow(name, queue)?;
                Ok(false)
            }
            _ if last => {
                self.file = Some(name.to_os_string());
                Ok(true)
            }
            _ => Err(Error::NotDir {
                path: self.path.to_path_buf(),
                at: self.at(name),
            }),
        }
    }

    fn mkdir(&mut self, name: &OsStr) -> Result<OwnedFd, Error> {
        let at = self.at(name);
        match rustix::fs::mkdirat(self.cur(), name, Mode::from_raw_mode(0o755)) {
            Ok(()) => self.created.push(at.clone()),
            Err(Errno::EXIST) => {} // made meanwhile: opened below all the same
            Err(e) => return Err(io("creating", &self.root.host_path(&at))(e)),
        }
        rustix::fs::openat(
            self.cur(),
            name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(io("opening", &self.root.host_path(&at)))
    }

    fn touch(&mut self, name: &OsStr) -> Result<OwnedFd, Error> {
        let at = self.at(name);
        let fd = rustix::fs::openat(
            self.cur(),
            name,
            OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        )
        .map_err(io("creating", &self.root.host_path(&at)))?;
        self.created.push(at);
        Ok(fd)
    }

    /// Queues the components of the symlink `name`'s target.
    fn follow(&mut self, name: &OsStr, queue: &mut Vec<OsString>) -> Result<(), Error> {
        if self.symlinks == Symlinks::Reject {
            return Err(Error::Symlink {
                path: self.path.to_path_buf(),
                at: self.at(name),
            });
        }
        self.hops += 1;
        if self.hops > MAX_HOPS {
            return Err(Error::Loop {
                path: self.path.to_path_buf(),
            });
        }
        let target = rustix::fs::readlinkat(self.cur(), name, Vec::new())
            .map_err(|e| io("reading the symlink", &self.root.host_path(&self.at(name)))(e))?;
        let target: PathBuf =
            <OsString as std::os::unix::ffi::OsStringExt>::from_vec(target.into_bytes()).into();
        if target.is_absolute() {
            self.dirs.clear();
        }
        queue.extend(components(&target).into_iter().rev());
        Ok(())
    }
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
}
