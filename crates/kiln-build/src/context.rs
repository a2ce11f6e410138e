//! The build context: which files COPY and ADD may read, after
//! `.dockerignore`, and a content hash of them for the step cache.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use kiln_dockerfile::dockerignore::{self, Matcher};
use kiln_dockerfile::glob::{self, has_wildcard};
use sha2_shim::Hasher;

use crate::statcache::{Stat, StatCache};

/// A context entry: its relative path, mode, and content (a file's digest,
/// a link's target, empty for a directory).
pub type Entry = (PathBuf, u32, String);

/// The context directory and its ignore rules.
pub struct Context {
    pub root: PathBuf,
    matcher: Option<Matcher>,
    /// Paths (relative to the root) a build never sees besides
    /// `.dockerignore`'s: the factory's own lock files.
    hidden: Vec<PathBuf>,
    /// What earlier builds hashed of this context ([`Context::known_from`]):
    /// a file whose metadata vouches for its digest is not read again.
    known: StatCache,
    /// Where that is kept, and what this build hashed, saved for the next.
    cache_file: Option<PathBuf>,
    seen: std::sync::Mutex<StatCache>,
}

impl Context {
    /// Opens `root`, reading `<dockerfile>.dockerignore` or `.dockerignore`.
    pub fn open(root: &Path, dockerfile: Option<&Path>) -> Result<Self, String> {
        let names = dockerignore::candidate_files(
            &dockerfile
                .map(|d| d.display().to_string())
                .unwrap_or_default(),
        );
        let candidates = [
            dockerfile.map(|_| PathBuf::from(&names[0])),
            Some(root.join(&names[1])),
        ];
        for path in candidates.into_iter().flatten() {
            if path.is_file() {
                let text = fs::read_to_string(&path)
                    .map_err(|e| format!("reading {}: {e}", path.display()))?;
                let m = Matcher::from_dockerignore(&text)
                    .map_err(|e| format!("{}:{}: {}", path.display(), e.line, e.message))?;
                return Ok(Context {
                    root: root.to_path_buf(),
                    matcher: Some(m),
                    hidden: Vec::new(),
                    known: StatCache::default(),
                    cache_file: None,
                    seen: Default::default(),
                });
            }
        }
        Ok(Context {
            root: root.to_path_buf(),
            matcher: None,
            hidden: Vec::new(),
            known: StatCache::default(),
            cache_file: None,
            seen: Default::default(),
        })
    }

    /// Hides these paths (absolute, or relative to the root) from the build.
    pub fn hide(mut self, paths: &[PathBuf]) -> Self {
        for p in paths {
            let rel = p.strip_prefix(&self.root).unwrap_or(p);
            if rel.is_relative() {
                self.hidden.push(rel.to_path_buf());
            }
        }
        self
    }

    /// Reuses the digests kept in `cache_file` by earlier builds, with the
    /// rule the plan uses (see `statcache`), and keeps this build's there
    /// ([`Context::save_known`]).
    pub fn known_from(mut self, cache_file: PathBuf) -> Self {
        self.known = StatCache::load(&cache_file);
        self.cache_file = Some(cache_file);
        self
    }

    /// Saves what this build hashed for the next one (best effort), when
    /// it learned something: a rebuild with nothing changed writes nothing.
    pub fn save_known(&self) {
        let Some(path) = &self.cache_file else {
            return;
        };
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.teaches(&self.known) {
            let mut all = std::mem::take(&mut *seen);
            all.keep_from(&self.known);
            all.save(path);
        }
    }

    pub fn excluded(&self, rel: &Path) -> bool {
        let s = rel.to_string_lossy();
        !s.is_empty()
            && (self.hidden.iter().any(|h| h == rel)
                || self.matcher.as_ref().is_some_and(|m| m.excluded(&s)))
    }

    /// What the context path `rel` stands for: its symlinks followed inside
    /// the context (never out of it), as BuildKit reads a named source or a
    /// bind mount's source. A clean path inside the context, no component a
    /// symlink.
    pub fn follow(&self, rel: &Path) -> Result<PathBuf, String> {
        let root = kiln_root::Root::open(&self.root).map_err(|e| e.to_string())?;
        root.resolve(rel, kiln_root::Symlinks::Follow, kiln_root::Missing::Fail)
            .map(|f| f.rel)
            .map_err(|e| format!("{}: {e}", rel.display()))
    }

    /// The context paths a COPY source names: the path itself, or every
    /// match of a wildcard pattern. Errors name what is wrong.
    pub fn expand(&self, source: &str) -> Result<Vec<PathBuf>, String> {
        let rel =
            clean(source).ok_or_else(|| format!("{source:?} is outside the build context"))?;
        if !has_wildcard(source) {
            let full = self.root.join(&rel);
            if fs::symlink_metadata(&full).is_err() || self.excluded(&rel) {
                return Err(format!(
                    "{source:?} not found in the build context (or excluded by .dockerignore)"
                ));
            }
            return Ok(vec![rel]);
        }
        let mut found = Vec::new();
        self.glob(
            PathBuf::new(),
            &rel.components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>(),
            &mut found,
        );
        // a wildcard that matches nothing copies nothing (BuildKit's rule)
        Ok(found)
    }

    fn glob(&self, prefix: PathBuf, parts: &[String], out: &mut Vec<PathBuf>) {
        let Some((first, rest)) = parts.split_first() else {
            out.push(prefix);
            return;
        };
        let dir = self.root.join(&prefix);
        let Ok(names) = kiln_oci::layer::sorted_names(&dir) else {
            return;
        };
        for name in names {
            let name = name.to_string_lossy().into_owned();
            if !glob::matches(first, &name) {
                continue;
            }
            let p = prefix.join(&name);
            if self.excluded(&p) {
                continue;
            }
            if rest.is_empty() || dir.join(&name).is_dir() {
                self.glob(p, rest, out);
            }
        }
    }

    /// A digest of everything under the given context paths: names, types,
    /// modes, contents and link targets (not times), for the step cache.
    /// Files the known digests vouch for are not read.
    pub fn hash(&self, paths: &[PathBuf]) -> Result<String, String> {
        let (entries, fresh) = self.entries_known(paths, &self.known)?;
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .absorb(fresh);
        let mut h = Hasher::default();
        for (path, mode, content) in entries {
            h.update(format!("{}\0{:o}\0", path.display(), mode).as_bytes());
            h.update(content.as_bytes());
        }
        Ok(h.finish())
    }

    /// Every entry under the given context paths as (path, mode, content):
    /// content is a file's digest, a link's target, empty for directories.
    /// Only the files whose digests `known` cannot vouch for are read, on
    /// every core; with the cache of what was read and reused.
    pub fn entries_known(
        &self,
        paths: &[PathBuf],
        known: &StatCache,
    ) -> Result<(Vec<Entry>, StatCache), String> {
        let mut out = Vec::new();
        let mut files = Vec::new();
        for p in paths {
            self.walk(p, &mut out, &mut files)?;
        }
        let taken = crate::statcache::now_ns();
        let mut unknown = Vec::new();
        for (i, stat) in &files {
            match known.digest(&out[*i].0, stat) {
                Some(d) => out[*i].2 = d.to_string(),
                None => unknown.push(*i),
            }
        }
        for (i, digest) in digest_files(&self.root, &out, &unknown)? {
            out[i].2 = digest;
        }
        let cache = StatCache::of(
            taken,
            files
                .iter()
                .map(|(i, s)| (out[*i].0.clone(), *s, out[*i].2.clone())),
        );
        Ok((out, cache))
    }

    /// Lists the entries under `rel` in walk order; a file's content is
    /// left empty and its index noted in `files`.
    fn walk(
        &self,
        rel: &Path,
        out: &mut Vec<(PathBuf, u32, String)>,
        files: &mut Vec<(usize, Stat)>,
    ) -> Result<(), String> {
        if self.excluded(rel) {
            return Ok(());
        }
        let full = self.root.join(rel);
        let meta =
            fs::symlink_metadata(&full).map_err(|e| format!("reading {}: {e}", full.display()))?;
        if meta.is_file() {
            files.push((out.len(), Stat::of(&meta)));
            out.push((rel.to_path_buf(), meta.mode(), String::new()));
        } else if meta.file_type().is_symlink() {
            let target = fs::read_link(&full).map_err(|e| e.to_string())?;
            out.push((
                rel.to_path_buf(),
                meta.mode(),
                target.to_string_lossy().into_owned(),
            ));
        } else {
            out.push((rel.to_path_buf(), meta.mode(), String::new()));
            if meta.is_dir() {
                for name in kiln_oci::layer::sorted_names(&full).map_err(|e| e.to_string())? {
                    self.walk(&rel.join(name), out, files)?;
                }
            }
        }
        Ok(())
    }
}

/// The sha256 of each listed file, read on as many threads as there are
/// cores, each thread taking the next file not yet taken.
fn digest_files(
    root: &Path,
    entries: &[(PathBuf, u32, String)],
    files: &[usize],
) -> Result<Vec<(usize, String)>, String> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(files.len().max(1));
    let work = || -> Result<Vec<(usize, String)>, String> {
        let mut done = Vec::new();
        loop {
            let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Some(&i) = files.get(n) else {
                return Ok(done);
            };
            let full = root.join(&entries[i].0);
            let fail = |e: std::io::Error| format!("reading {}: {e}", full.display());
            let f = fs::File::open(&full).map_err(fail)?;
            // large reads: few system calls for big files
            let reader = std::io::BufReader::with_capacity(256 << 10, f);
            let (digest, _) = kiln_oci::digest::HashReader::new(reader)
                .finish()
                .map_err(fail)?;
            done.push((i, digest.to_string()));
        }
    };
    std::thread::scope(|s| {
        let helpers: Vec<_> = (1..threads).map(|_| s.spawn(work)).collect();
        let mut all = work()?;
        for h in helpers {
            all.extend(
                h.join()
                    .map_err(|_| "a hashing thread panicked".to_string())??,
            );
        }
        Ok(all)
    })
}

/// A source path cleaned to components inside the context; `None` if it
/// climbs out.
pub fn clean(source: &str) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in Path::new(source.trim_start_matches('/')).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir if !out.pop() => return None,
            _ => {}
        }
    }
    Some(out)
}

/// A small incremental sha256 over strings, on kiln-oci's digest helpers.
mod sha2_shim {
    use std::io::Write;

    use kiln_oci::digest::HashWriter;

    pub struct Hasher(HashWriter<std::io::Sink>);

    impl Default for Hasher {
        fn default() -> Self {
            Hasher(HashWriter::new(std::io::sink()))
        }
    }

    impl Hasher {
        pub fn update(&mut self, bytes: &[u8]) {
            let _ = self.0.write_all(bytes);
        }

        pub fn finish(self) -> String {
            self.0.finish().1.to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleaning() {
        assert_eq!(clean("/a/./b/../c"), Some(PathBuf::from("a/c")));
        assert_eq!(clean("../x"), None);
        assert_eq!(clean("."), Some(PathBuf::new()));
    }
}
