//! Lock fragments: what a job that baked one image (or one platform of
//! it) on a runner of its own hands on — a lock file holding just that
//! entry — and merging them into the factory's lock files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use kiln_definition::Factory;

use crate::lock::{Lock, LockError, Locked, Locks};

/// What a merge did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Merged {
    /// Images whose entry was taken.
    pub recorded: Vec<String>,
    /// Multi-platform images with only some platforms' fragments (their
    /// index was not assembled): left as they were.
    pub incomplete: Vec<String>,
    /// `FILE: NAME` of entries naming no image of the factory.
    pub unknown: Vec<String>,
}

/// Whether `entry` is a whole image: one built for a single platform, or
/// the index of a multi-platform one (every platform, and a digest that
/// is none of theirs).
fn complete(entry: &Locked, platforms: usize) -> bool {
    platforms <= 1
        || (entry.platforms.len() == platforms
            && !entry.platforms.values().any(|d| d == &entry.digest))
}

/// The fragments in `paths`: files, or every `*.toml` of a directory.
pub fn read(paths: &[PathBuf]) -> Result<Vec<(PathBuf, Lock)>, LockError> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let entries = std::fs::read_dir(p).map_err(|source| LockError::Read {
                path: p.clone(),
                source,
            })?;
            let mut found: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "toml"))
                .collect();
            found.sort();
            files.extend(found);
        } else {
            files.push(p.clone());
        }
    }
    files
        .into_iter()
        .map(|f| {
            if !f.exists() {
                return Err(LockError::Read {
                    source: std::io::Error::from(std::io::ErrorKind::NotFound),
                    path: f,
                });
            }
            Lock::read(&f).map(|l| (f, l))
        })
        .collect()
}

/// Takes each whole entry of `fragments` into `locks` (the later bake
/// where two name one image); nothing is written.
pub fn merge(factory: &Factory, locks: &mut Locks, fragments: &[(PathBuf, Lock)]) -> Merged {
    let mut out = Merged::default();
    let mut chosen: BTreeMap<&str, &Locked> = BTreeMap::new();
    let mut partial: BTreeSet<&str> = BTreeSet::new();
    for (path, lock) in fragments {
        for (name, entry) in lock.image.iter().chain(&lock.vm) {
            let Some(image) = factory.images.get(name) else {
                out.unknown.push(format!("{}: {name}", path.display()));
                continue;
            };
            if !complete(entry, image.platforms.len()) {
                partial.insert(name);
                continue;
            }
            let newer = chosen
                .get(name.as_str())
                .is_none_or(|old| old.baked_at <= entry.baked_at);
            if newer {
                chosen.insert(name, entry);
            }
        }
    }
    for (name, entry) in chosen {
        locks.set(name, entry.clone());
        out.recorded.push(name.to_string());
    }
    out.incomplete = partial
        .into_iter()
        .filter(|n| !out.recorded.iter().any(|r| r == n))
        .map(str::to_string)
        .collect();
    out
}

/// Writes the lock files of the `recorded` images.
pub fn write(locks: &Locks, recorded: &[String]) -> Result<(), crate::FactoryError> {
    let mut done: BTreeSet<&Path> = BTreeSet::new();
    for name in recorded {
        if let Some(owner) = locks.owner.get(name) {
            if done.insert(owner) {
                locks.write_for(name)?;
            }
        }
    }
    Ok(())
}

/// What a runner job hands on for one platform of a multi-platform
/// image: `entry` (a whole image's, when the image came out as locked)
/// narrowed to that platform — its digest that platform's, published by
/// digest — so only the index job's fragment counts as the whole image.
pub fn narrowed(entry: &Locked, platform: &str) -> Option<Locked> {
    let digest = match entry.platforms.get(platform) {
        Some(d) => d.clone(),
        None if entry.platforms.is_empty() => entry.digest.clone(),
        None => return None,
    };
    let published = entry
        .published
        .iter()
        .map(|p| match p.strip_prefix("docker://") {
            Some(r) => {
                let repo = kiln_registry::Reference::parse(r).map_or(r.to_string(), |r| r.name());
                format!("docker://{repo}@{digest}")
            }
            None => p.clone(),
        })
        .collect();
    Some(Locked {
        platforms: BTreeMap::from([(platform.to_string(), digest.clone())]),
        digest,
        published,
        ..entry.clone()
    })
}

/// Writes a fragment holding `entry` alone (under `[vm]` for a VM image),
/// making its directory.
pub fn write_one(path: &Path, name: &str, entry: &Locked, vm: bool) -> Result<(), LockError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| LockError::Write {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    let mut lock = Lock {
        kiln_lock: crate::lock::LOCK_FORMAT,
        ..Lock::default()
    };
    let map = if vm { &mut lock.vm } else { &mut lock.image };
    map.insert(name.to_string(), entry.clone());
    lock.write(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(digest: &str, platforms: &[(&str, &str)], at: &str) -> Locked {
        Locked {
            version: "1".into(),
            digest: digest.into(),
            platforms: platforms
                .iter()
                .map(|(p, d)| (p.to_string(), d.to_string()))
                .collect(),
            baked_at: at.into(),
            ..Locked::default()
        }
    }

    #[test]
    fn whole_entries_are_taken_and_platform_parts_wait_for_their_index() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("kiln.toml"),
            "kiln = 1\n[image.base]\nmmdebstrap = { suite = \"bookworm\" }\n\
             platforms = [\"linux/amd64\", \"linux/arm64\"]\n\
             [image.one]\nmmdebstrap = { suite = \"bookworm\" }\n\
             [image.two]\nmmdebstrap = { suite = \"bookworm\" }\n\
             platforms = [\"linux/amd64\", \"linux/arm64\"]\n",
        )
        .unwrap();
        let factory = kiln_definition::load(&[dir.path().to_path_buf()]).unwrap();
        let mut locks = Locks::read(&factory).unwrap();
        let frag = |name: &str, e: Locked| {
            let mut l = Lock {
                kiln_lock: crate::lock::LOCK_FORMAT,
                ..Lock::default()
            };
            l.image.insert(name.into(), e);
            (PathBuf::from(format!("{name}.toml")), l)
        };
        let both = [("linux/amd64", "sha256:a"), ("linux/arm64", "sha256:b")];
        let fragments = vec![
            frag("base", entry("sha256:a", &both[..1], "t1")),
            frag("base", entry("sha256:i", &both, "t2")),
            frag("one", entry("sha256:o1", &[], "t1")),
            frag("one", entry("sha256:o2", &[], "t3")),
            frag(
                "two",
                entry("sha256:c", &[("linux/amd64", "sha256:c")], "t1"),
            ),
            frag("gone", entry("sha256:g", &[], "t1")),
        ];
        let m = merge(&factory, &mut locks, &fragments);
        assert_eq!(m.recorded, ["base", "one"]);
        assert_eq!(m.incomplete, ["two"]);
        assert_eq!(m.unknown, ["gone.toml: gone"]);
        assert_eq!(locks.get("base").unwrap().digest, "sha256:i");
        assert_eq!(
            locks.get("one").unwrap().digest,
            "sha256:o2",
            "the later bake"
        );
        assert!(locks.get("two").is_none());
        write(&locks, &m.recorded).unwrap();
        let written = Lock::read(&dir.path().join("kiln.lock")).unwrap();
        assert_eq!(written.image.len(), 2);
    }
}
