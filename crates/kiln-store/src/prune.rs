//! Removing what no image name reaches: blobs, snapshots and step-cache
//! entries. Cache mounts (`RUN --mount=type=cache`) are kept: they are
//! meant to persist.

use std::collections::{HashMap, HashSet};
use std::fs;

use kiln_oci::image::{is_index_media, ImageConfig, Index, Manifest};

use crate::store::{chain_id, parse_digest};
use crate::{Error, Store};

/// What `prune` removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    pub blobs: usize,
    pub bytes: u64,
    pub snapshots: usize,
    pub cache_entries: usize,
}

impl Store {
    /// Removes every blob, snapshot and cache entry no name reaches.
    /// Waits for running builds (they hold the lock shared).
    pub fn prune(&self) -> Result<PruneReport, Error> {
        let _lock = self.lock(true)?;
        self.clean_tmp()?;
        let Reach { blobs, chains } = self.reachable()?;
        let mut report = PruneReport::default();
        let blob_dir = self.oci_dir().join("blobs/sha256");
        for entry in fs::read_dir(&blob_dir)
            .map_err(|e| Error::io("reading", &blob_dir, e))?
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !blobs.contains(&name) {
                report.bytes += entry.metadata().map(|m| m.len()).unwrap_or(0);
                fs::remove_file(entry.path())
                    .map_err(|e| Error::io("removing", &entry.path(), e))?;
                report.blobs += 1;
            }
        }
        let snaps = self.root().join("snapshots");
        for entry in fs::read_dir(&snaps)
            .map_err(|e| Error::io("reading", &snaps, e))?
            .flatten()
        {
            if !chains.contains_key(&entry.file_name().to_string_lossy().into_owned()) {
                fs::remove_dir_all(entry.path())
                    .map_err(|e| Error::io("removing", &entry.path(), e))?;
                report.snapshots += 1;
            }
        }
        for (path, entry) in self.cache_files()? {
            // a layer never written as a blob goes with its snapshot
            let keep = entry.is_some_and(|c| {
                c.layer
                    .is_none_or(|l| l.blob().is_some_and(|d| blobs.contains(d.digest())))
            });
            if !keep {
                fs::remove_file(&path).map_err(|e| Error::io("removing", &path, e))?;
                report.cache_entries += 1;
            }
        }
        Ok(report)
    }
}

/// What the names in a store reach.
pub(crate) struct Reach {
    /// Blob digests (hex) of every manifest, index, config and layer.
    pub blobs: HashSet<String>,
    /// Snapshot (chain id, hex) → the layer blob it is unpacked from.
    pub chains: HashMap<String, kiln_oci::Digest>,
}

impl Store {
    /// Every blob and snapshot a name reaches (an index: its entries that
    /// are in the store).
    pub(crate) fn reachable(&self) -> Result<Reach, Error> {
        let mut blobs = HashSet::new();
        let mut chains = HashMap::new();
        let mut manifests = Vec::new();
        for (_, desc) in self.list()? {
            let digest = parse_digest(&desc.digest)?;
            blobs.insert(digest.digest().to_string());
            if !is_index_media(&desc.media_type) {
                manifests.push(digest);
                continue;
            }
            let Ok(bytes) = self.read_blob(&digest) else {
                continue;
            };
            // an index keeps every entry of it that is in the store
            if let Ok(index) = serde_json::from_slice::<Index>(&bytes) {
                for d in &index.manifests {
                    let child = parse_digest(&d.digest)?;
                    if self.has_blob(&child) {
                        blobs.insert(child.digest().to_string());
                        manifests.push(child);
                    }
                }
            }
        }
        for m_digest in manifests {
            let Ok(bytes) = self.read_blob(&m_digest) else {
                continue;
            };
            let Ok(m) = serde_json::from_slice::<Manifest>(&bytes) else {
                continue;
            };
            for d in std::iter::once(&m.config).chain(&m.layers) {
                blobs.insert(d.digest.trim_start_matches("sha256:").to_string());
            }
            let Ok(cfg_bytes) = self.read_blob(&parse_digest(&m.config.digest)?) else {
                continue;
            };
            let Ok(cfg) = serde_json::from_slice::<ImageConfig>(&cfg_bytes) else {
                continue;
            };
            let mut parent = None;
            for (diff, layer) in cfg.rootfs.diff_ids.iter().zip(&m.layers) {
                let c = chain_id(parent.as_ref(), &parse_digest(diff)?);
                chains.insert(c.digest().to_string(), parse_digest(&layer.digest)?);
                parent = Some(c);
            }
        }
        Ok(Reach { blobs, chains })
    }
}
