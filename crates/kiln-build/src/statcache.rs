//! What was known of a context's files the last time they were hashed:
//! each file's metadata and digest, so that a plan with nothing changed
//! reads no file again.
//!
//! The rule for trusting metadata: a file's size, modification and change
//! times (to the nanosecond), inode and device must all be as recorded,
//! and its modification and change times must be more than two seconds
//! older than the moment its digest was taken. A file written in the same
//! instant it was hashed ("racily clean", as git calls it) could change
//! again without its times showing it on a filesystem with coarse
//! timestamps, so it is read again; so is any file whose metadata differs
//! in any way, and any new file. The change time cannot be set by tools
//! that restore modification times (`touch -d`, `tar -x`, `rsync -t`), so
//! such a restore is still noticed.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The metadata that must not change for a digest to be reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stat {
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    ino: u64,
    dev: u64,
}

impl Stat {
    pub(crate) fn of(meta: &fs::Metadata) -> Stat {
        let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
        Stat {
            size: meta.size(),
            mtime_ns: ns(meta.mtime(), meta.mtime_nsec()),
            ctime_ns: ns(meta.ctime(), meta.ctime_nsec()),
            ino: meta.ino(),
            dev: meta.dev(),
        }
    }
}

/// Two seconds, in nanoseconds: how much older than the hashing a file's
/// times must be for its metadata to be trusted.
const RACY_NS: i128 = 2_000_000_000;

const HEADER: &str = "kiln-statcache 1";

/// Digests by path, with the metadata they were taken at.
#[derive(Debug, Default)]
pub struct StatCache {
    /// When the digests were taken (nanoseconds since the epoch).
    taken_ns: i128,
    entries: HashMap<PathBuf, (Stat, String)>,
}

impl StatCache {
    /// Reads a cache file; a missing or unreadable one is empty.
    pub fn load(path: &Path) -> StatCache {
        let Ok(text) = fs::read_to_string(path) else {
            return StatCache::default();
        };
        let mut lines = text.lines();
        let Some(taken) = lines
            .next()
            .and_then(|h| h.strip_prefix(HEADER))
            .and_then(|t| t.trim().parse().ok())
        else {
            return StatCache::default();
        };
        let entries = lines
            .filter_map(|l| {
                let mut f = l.splitn(7, ' ');
                let mut num = || f.next()?.parse::<i128>().ok();
                let stat = Stat {
                    size: num()? as u64,
                    mtime_ns: num()?,
                    ctime_ns: num()?,
                    ino: num()? as u64,
                    dev: num()? as u64,
                };
                let digest = f.next()?.to_string();
                Some((PathBuf::from(f.next()?), (stat, digest)))
            })
            .collect();
        StatCache {
            taken_ns: taken,
            entries,
        }
    }

    /// The digest recorded for `rel`, when its metadata can be trusted.
    pub(crate) fn digest(&self, rel: &Path, stat: &Stat) -> Option<&str> {
        let (known, digest) = self.entries.get(rel)?;
        let settled =
            stat.mtime_ns < self.taken_ns - RACY_NS && stat.ctime_ns < self.taken_ns - RACY_NS;
        (known == stat && settled).then_some(digest.as_str())
    }

    /// A cache of `files` (path, metadata, digest) taken at `taken_ns`.
    pub(crate) fn of(taken_ns: i128, files: impl Iterator<Item = (PathBuf, Stat, String)>) -> Self {
        StatCache {
            taken_ns,
            entries: files.map(|(p, s, d)| (p, (s, d))).collect(),
        }
    }

    /// Adds what `other` knows. The earlier of the two moments stands for
    /// both, which only makes the rule stricter for the later digests.
    pub(crate) fn absorb(&mut self, other: StatCache) {
        self.taken_ns = if self.entries.is_empty() {
            other.taken_ns
        } else {
            self.taken_ns.min(other.taken_ns)
        };
        self.entries.extend(other.entries);
    }

    /// Whether it vouches for a file `older` cannot: only then is it worth
    /// keeping. (A digest taken within two seconds of a file's change is
    /// never trusted later, so a build of just-written files learns nothing.)
    pub(crate) fn teaches(&self, older: &StatCache) -> bool {
        self.entries
            .iter()
            .any(|(p, (stat, _))| self.digest(p, stat).is_some() && older.digest(p, stat).is_none())
    }

    /// Keeps what `older` vouched for and this does not mention (files
    /// another build of the context read), still trusted under this one's
    /// later moment: a file whose metadata is as recorded has not changed.
    pub(crate) fn keep_from(&mut self, older: &StatCache) {
        for (p, (stat, digest)) in &older.entries {
            if older.digest(p, stat).is_some() && !self.entries.contains_key(p) {
                self.entries.insert(p.clone(), (*stat, digest.clone()));
            }
        }
    }

    /// Writes it to `path` (atomically; best effort: it only saves reads).
    pub fn save(&self, path: &Path) {
        let mut out = format!("{HEADER} {}\n", self.taken_ns);
        for (p, (s, d)) in &self.entries {
            // a path with a newline cannot be written as a line; it is
            // simply read again next time
            let Some(p) = p.to_str().filter(|p| !p.contains('\n')) else {
                continue;
            };
            out.push_str(&format!(
                "{} {} {} {} {} {d} {p}\n",
                s.size, s.mtime_ns, s.ctime_ns, s.ino, s.dev
            ));
        }
        let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
        if path.parent().is_some_and(|d| fs::create_dir_all(d).is_ok())
            && fs::write(&tmp, out).is_ok()
        {
            let _ = fs::rename(&tmp, path);
        }
    }
}

/// Now, in nanoseconds since the epoch.
pub(crate) fn now_ns() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_is_trusted_only_when_settled_and_equal() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a");
        fs::write(&f, "one").unwrap();
        let stat = Stat::of(&fs::metadata(&f).unwrap());
        // hashed just now: racily clean, not trusted
        let fresh = StatCache::of(
            now_ns(),
            [(PathBuf::from("a"), stat, "d1".into())].into_iter(),
        );
        assert_eq!(fresh.digest(Path::new("a"), &stat), None);
        // hashed well after the file last changed: trusted
        let later = StatCache::of(
            stat.ctime_ns.max(stat.mtime_ns) + 3 * RACY_NS,
            [(PathBuf::from("a"), stat, "d1".into())].into_iter(),
        );
        assert_eq!(later.digest(Path::new("a"), &stat), Some("d1"));
        // any other metadata: not trusted
        let other = Stat { size: 4, ..stat };
        assert_eq!(later.digest(Path::new("a"), &other), None);
        // saved and loaded, the same
        let path = dir.path().join("cache");
        later.save(&path);
        let loaded = StatCache::load(&path);
        assert_eq!(loaded.digest(Path::new("a"), &stat), Some("d1"));
        assert_eq!(StatCache::load(&dir.path().join("none")).entries.len(), 0);
    }

    #[test]
    fn a_cache_is_worth_keeping_only_when_it_vouches_for_something_new() {
        let stat = Stat {
            size: 1,
            mtime_ns: 10 * RACY_NS,
            ctime_ns: 10 * RACY_NS,
            ino: 1,
            dev: 1,
        };
        let one = |p: &str, taken: i128| {
            StatCache::of(taken, [(PathBuf::from(p), stat, "d".into())].into_iter())
        };
        let old = one("a", 20 * RACY_NS);
        // the same file vouched for again teaches nothing
        assert!(!one("a", 30 * RACY_NS).teaches(&old));
        // a file hashed as it changed teaches nothing either
        assert!(!one("b", 10 * RACY_NS).teaches(&old));
        // a settled file the old cache did not know does
        let mut new = one("b", 30 * RACY_NS);
        assert!(new.teaches(&old));
        // and the old cache's files are kept beside it
        new.keep_from(&old);
        assert_eq!(new.digest(Path::new("a"), &stat), Some("d"));
        assert_eq!(new.digest(Path::new("b"), &stat), Some("d"));
    }
}
