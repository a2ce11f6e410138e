//! kiln.lock: what the last bake of each image was made from and what it
//! produced, so a deployment can pin an exact image and `kiln plan` can say
//! what changed. One lock file sits beside each factory file
//! (`kiln.toml` → `kiln.lock`, `team.kiln.toml` → `team.kiln.lock`) and is
//! always replaced atomically.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use kiln_definition::{Factory, Recipe};
use serde::{Deserialize, Serialize};

use crate::FactoryError;

/// The lock format version.
pub const LOCK_FORMAT: u32 = 1;

/// One lock file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lock {
    pub kiln_lock: u32,
    #[serde(default)]
    pub image: BTreeMap<String, Locked>,
    /// The VM images, as `[vm.NAME]` in kiln.toml.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub vm: BTreeMap<String, Locked>,
}

/// The last bake of one image.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Locked {
    /// The version tag it was given.
    pub version: String,
    /// Manifest digest of the image (of its image index, when it is built
    /// for several platforms).
    pub digest: String,
    /// Each platform's image digest (`linux/arm64` → `sha256:…`), when it
    /// is built for several platforms.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub platforms: BTreeMap<String, String>,
    /// A VM image's files (`NAME.qcow2` → `sha256:…`); its `digest` is
    /// that of the OCI artifact holding them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub files: BTreeMap<String, String>,
    /// Every tag it carries: the version and the moving tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Where it was published, each pinned by digest.
    #[serde(default)]
    pub published: Vec<String>,
    /// When it was baked (RFC 3339, UTC).
    pub baked_at: String,
    pub inputs: Inputs,
    /// Its signatures and attestations (`[factory] sign`): each tag
    /// (`sha256-<hex>.sig`, `.att`) → the digest of its manifest.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attachments: BTreeMap<String, String>,
}

/// What an image was made from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inputs {
    /// Digest of the image's definition in kiln.toml.
    pub definition: String,
    /// Digest of its build context and Dockerfile (none for bootstrap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// Each base as written (a factory image name or a registry reference)
    /// → the digest it resolved to.
    #[serde(default)]
    pub bases: BTreeMap<String, String>,
}

/// The lock file beside a factory file.
pub fn lock_path(factory_file: &Path) -> PathBuf {
    let name = factory_file
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("kiln.toml");
    let stem = name.strip_suffix(".toml").unwrap_or(name);
    factory_file.with_file_name(format!("{stem}.lock"))
}

/// Where a lock file is written before it is renamed into place.
pub fn temp_path(lock: &Path) -> PathBuf {
    let name = lock
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("kiln.lock");
    lock.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Files of the factory itself that builds must not see: every lock file
/// and its temporary (a context is often the factory's own directory).
pub fn hidden_paths(factory: &kiln_definition::Factory) -> Vec<PathBuf> {
    factory
        .files
        .iter()
        .flat_map(|f| {
            let lock = lock_path(&f.path);
            [temp_path(&lock), lock]
        })
        .collect()
}

/// Why a lock file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}:{line}: {message} (kiln writes this file; delete it to start afresh)", path.display())]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{}: lock format {found} is not known", path.display())]
    Format { path: PathBuf, found: u32 },
    #[error("{}: cannot write: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("a lock entry cannot be written as TOML: {0}")]
    Serialize(#[from] toml::ser::Error),
}

impl Lock {
    /// Reads a lock file; a missing one is empty.
    pub fn read(path: &Path) -> Result<Lock, LockError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Lock {
                    kiln_lock: LOCK_FORMAT,
                    ..Lock::default()
                })
            }
            Err(source) => {
                return Err(LockError::Read {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        let lock: Lock = toml::from_str(&text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            LockError::Parse {
                path: path.to_path_buf(),
                line: line.unwrap_or(0),
                message: e.message().trim().to_string(),
            }
        })?;
        if lock.kiln_lock != LOCK_FORMAT {
            return Err(LockError::Format {
                path: path.to_path_buf(),
                found: lock.kiln_lock,
            });
        }
        Ok(lock)
    }

    /// Writes the lock file atomically: a temporary file in the same
    /// directory, synced, then renamed over the old one.
    pub fn write(&self, path: &Path) -> Result<(), LockError> {
        let body = toml::to_string(self)?;
        let text = format!("# Written by `kiln bake`: what each image was baked from and where it went. Do not edit.\n{body}");
        let dir = path.parent().unwrap_or(Path::new("."));
        let tmp = temp_path(path);
        let result = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)?;
            std::fs::File::open(dir)?.sync_all()
        })();
        result.map_err(|source| {
            let _ = std::fs::remove_file(&tmp);
            LockError::Write {
                path: path.to_path_buf(),
                source,
            }
        })
    }
}

/// The lock files of a factory, read together.
#[derive(Debug, Default)]
pub struct Locks {
    /// Lock path → its content, one per factory file.
    pub files: BTreeMap<PathBuf, Lock>,
    /// Image → the lock file it belongs to.
    pub owner: BTreeMap<String, PathBuf>,
    /// The names that are VM images (kept under `[vm.NAME]`).
    pub vms: BTreeSet<String>,
}

impl Locks {
    pub fn read(factory: &Factory) -> Result<Locks, FactoryError> {
        let mut locks = Locks::default();
        for f in &factory.files {
            let path = lock_path(&f.path);
            let lock = Lock::read(&path)?;
            locks.files.insert(path.clone(), lock);
        }
        for (name, image) in &factory.images {
            locks
                .owner
                .insert(name.clone(), lock_path(&factory.files[image.file].path));
            if let Recipe::Vm(_) = image.recipe {
                locks.vms.insert(name.clone());
            }
        }
        Ok(locks)
    }

    pub fn get(&self, image: &str) -> Option<&Locked> {
        let lock = self.files.get(self.owner.get(image)?)?;
        if self.vms.contains(image) {
            lock.vm.get(image)
        } else {
            lock.image.get(image)
        }
    }

    pub fn set(&mut self, image: &str, locked: Locked) {
        let vm = self.vms.contains(image);
        if let Some(path) = self.owner.get(image) {
            if let Some(lock) = self.files.get_mut(path) {
                let table = if vm { &mut lock.vm } else { &mut lock.image };
                table.insert(image.to_string(), locked);
            }
        }
    }

    /// Writes the lock file holding `image`.
    pub fn write_for(&self, image: &str) -> Result<(), FactoryError> {
        let path = &self.owner[image];
        Ok(self.files[path].write(path)?)
    }
}
