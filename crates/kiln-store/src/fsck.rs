//! Checking the store: every blob against its digest, every name's manifest,
//! config and layers present, every snapshot complete.

use std::fs;

use kiln_oci::digest::{from_hex, HashReader};
use kiln_oci::image::{is_index_media, Index, Manifest};

use crate::store::parse_digest;

use crate::{Error, Store};

/// One problem `fsck` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// A blob whose content does not match its name.
    CorruptBlob { digest: String, actual: String },
    /// A blob file whose name is not a digest.
    StrayBlob(String),
    /// A name whose manifest, config or layer is missing or unreadable.
    BrokenImage { name: String, reason: String },
    /// A snapshot that differs from the layer it was unpacked from;
    /// `removed` when `--repair` took it away (it is unpacked again from
    /// its layer when next needed).
    BrokenSnapshot {
        chain: String,
        layer: String,
        reason: String,
        removed: bool,
    },
    /// A snapshot of a layer whose blob was never written (`--full`) that
    /// is not what its step made; `removed` when `--repair` took it and its
    /// cache entry away (the step runs again when next needed).
    BrokenPending {
        chain: String,
        reason: String,
        removed: bool,
    },
}

/// How thoroughly `fsck` looks, and whether it repairs.
#[derive(Debug, Clone, Copy, Default)]
pub struct FsckOptions {
    /// Hash every file of every snapshot (otherwise types, modes, owners,
    /// sizes and link targets are compared, which reads no file).
    pub full: bool,
    /// Remove broken snapshots: each is unpacked again from its layer the
    /// next time a build, run or VM image needs it.
    pub repair: bool,
}

impl Problem {
    /// Whether `--repair` took care of it (a broken snapshot removed).
    pub fn repaired(&self) -> bool {
        matches!(
            self,
            Problem::BrokenSnapshot { removed: true, .. }
                | Problem::BrokenPending { removed: true, .. }
        )
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::CorruptBlob { digest, actual } => write!(
                f,
                "blob sha256:{digest} is corrupt: its content hashes to {actual}"
            ),
            Problem::StrayBlob(name) => write!(f, "blobs/sha256/{name} is not named by a digest"),
            Problem::BrokenImage { name, reason } => write!(f, "image {name}: {reason}"),
            Problem::BrokenSnapshot {
                chain,
                layer,
                reason,
                removed,
            } => {
                write!(f, "snapshot {chain} (of layer {layer}): {reason}; ")?;
                if *removed {
                    write!(
                        f,
                        "removed, it is unpacked again from its layer when next needed"
                    )
                } else {
                    write!(f, "run `kiln fsck --repair` to remove it (it is unpacked again from its layer when next needed)")
                }
            }
            Problem::BrokenPending {
                chain,
                reason,
                removed,
            } => {
                write!(f, "snapshot {chain} (a layer with no blob yet): {reason}; ")?;
                if *removed {
                    write!(f, "removed with its cache entry; the step that made it runs again when next needed")
                } else {
                    write!(f, "run `kiln fsck --full --repair` to remove it (the step that made it runs again when next needed)")
                }
            }
        }
    }
}

impl Store {
    /// Verifies the store; an empty list means it is clean. Leftovers of
    /// interrupted writes in tmp/ are removed first: they were never visible.
    pub fn fsck(&self) -> Result<Vec<Problem>, Error> {
        self.fsck_with(FsckOptions::default())
    }

    /// [`Store::fsck`], with snapshots checked as `opts` says.
    pub fn fsck_with(&self, opts: FsckOptions) -> Result<Vec<Problem>, Error> {
        let _lock = self.lock(true)?;
        self.clean_tmp()?;
        let mut problems = self.check_blobs()?;
        for (name, desc) in self.list()? {
            let checked = parse_digest(&desc.digest)
                .map_err(|e| e.to_string())
                .and_then(|d| {
                    if is_index_media(&desc.media_type) {
                        self.check_index(&d)
                    } else {
                        self.check_image(&d)
                    }
                });
            if let Err(reason) = checked {
                problems.push(Problem::BrokenImage { name, reason });
            }
        }
        problems.extend(self.check_snapshots(opts)?);
        if opts.full {
            problems.extend(self.check_pending(opts.repair)?);
        }
        Ok(problems)
    }

    /// Every snapshot of a layer whose blob was never written (a cache
    /// entry's `pending` layer), against the diff ID its step recorded: the
    /// tree is made into its tar again and hashed.
    fn check_pending(&self, repair: bool) -> Result<Vec<Problem>, Error> {
        let mut problems = Vec::new();
        for (path, entry) in self.cache_files()? {
            let Some(layer) = entry.and_then(|c| c.layer) else {
                continue;
            };
            let (None, Some(pending)) = (&layer.digest, &layer.pending) else {
                continue;
            };
            let Some(snapshot) = parse_digest(&pending.chain)
                .ok()
                .and_then(|c| self.snapshot(&c))
            else {
                continue; // gone: the entry is not used, prune removes it
            };
            let opts = kiln_oci::layer::LayerOptions {
                compression: kiln_oci::layer::Compression::None,
                source_date_epoch: pending.source_date_epoch,
            };
            let reason = match kiln_oci::layer::diff_id(&snapshot, &opts) {
                Ok(d) if d.to_string() == layer.diff_id => continue,
                Ok(d) => format!("its content hashes to {d}, its step made {}", layer.diff_id),
                Err(e) => format!("it cannot be read: {e}"),
            };
            let removed =
                repair && self.remove_snapshot(&snapshot).is_ok() && fs::remove_file(&path).is_ok();
            problems.push(Problem::BrokenPending {
                chain: pending.chain.clone(),
                reason,
                removed,
            });
        }
        problems.sort_by_key(|p| p.to_string());
        Ok(problems)
    }

    /// Every snapshot a name reaches, against its layer blob.
    fn check_snapshots(&self, opts: FsckOptions) -> Result<Vec<Problem>, Error> {
        let mut problems = Vec::new();
        for (chain, layer) in self.reachable()?.chains {
            let dir = self.root().join("snapshots").join(&chain);
            if !dir.is_dir() {
                continue; // never unpacked, or removed: made when needed
            }
            let Ok(blob) = self.open_blob(&layer) else {
                continue; // reported with the image that names it
            };
            let Err(reason) = crate::snapcheck::check(&dir, blob, opts.full) else {
                continue;
            };
            let removed = opts.repair && self.remove_snapshot(&dir).is_ok();
            problems.push(Problem::BrokenSnapshot {
                chain: format!("sha256:{chain}"),
                layer: layer.to_string(),
                reason,
                removed,
            });
        }
        problems.sort_by_key(|p| p.to_string());
        Ok(problems)
    }

    /// Takes a snapshot away at once (renamed into tmp), then deletes it.
    fn remove_snapshot(&self, dir: &std::path::Path) -> Result<(), Error> {
        let gone = self.temp_path("broken-snapshot");
        fs::rename(dir, &gone).map_err(|e| Error::io("removing", dir, e))?;
        fs::remove_dir_all(&gone).map_err(|e| Error::io("removing", &gone, e))
    }

    /// Removes what interrupted writes left in tmp/.
    pub fn clean_tmp(&self) -> Result<(), Error> {
        let tmp = self.tmp_dir();
        for entry in fs::read_dir(&tmp).map_err(|e| Error::io("reading", &tmp, e))? {
            let p = entry.map_err(|e| Error::io("reading", &tmp, e))?.path();
            let _ = if p.is_dir() {
                fs::remove_dir_all(&p)
            } else {
                fs::remove_file(&p)
            };
        }
        Ok(())
    }

    fn check_blobs(&self) -> Result<Vec<Problem>, Error> {
        let dir = self.oci_dir().join("blobs/sha256");
        let mut problems = Vec::new();
        for entry in fs::read_dir(&dir).map_err(|e| Error::io("reading", &dir, e))? {
            let entry = entry.map_err(|e| Error::io("reading", &dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(expected) = from_hex(&name) else {
                problems.push(Problem::StrayBlob(name));
                continue;
            };
            let f =
                fs::File::open(entry.path()).map_err(|e| Error::io("opening", &entry.path(), e))?;
            let (actual, _) = HashReader::new(f)
                .finish()
                .map_err(|e| Error::io("reading", &entry.path(), e))?;
            if actual != expected {
                problems.push(Problem::CorruptBlob {
                    digest: name,
                    actual: actual.to_string(),
                });
            }
        }
        Ok(problems)
    }

    /// An index's entries that are in the store must be whole; entries
    /// never pulled (another platform of a registry image) may be absent.
    fn check_index(&self, digest: &kiln_oci::Digest) -> Result<(), String> {
        let bytes = self.read_blob(digest).map_err(|e| e.to_string())?;
        let index: Index =
            serde_json::from_slice(&bytes).map_err(|e| format!("index {digest}: {e}"))?;
        for d in &index.manifests {
            let child = parse_digest(&d.digest).map_err(|e| e.to_string())?;
            if self.has_blob(&child) {
                self.check_image(&child)?;
            }
        }
        Ok(())
    }

    fn check_image(&self, manifest: &kiln_oci::Digest) -> Result<(), String> {
        let bytes = self.read_blob(manifest).map_err(|e| e.to_string())?;
        let m: Manifest =
            serde_json::from_slice(&bytes).map_err(|e| format!("manifest {manifest}: {e}"))?;
        for d in std::iter::once(&m.config).chain(&m.layers) {
            let digest = parse_digest(&d.digest).map_err(|e| e.to_string())?;
            if !self.has_blob(&digest) {
                return Err(format!("blob {} of the manifest is missing", d.digest));
            }
        }
        Ok(())
    }
}
