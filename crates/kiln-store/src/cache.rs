//! The step cache: `cache/<sha256 of key>.json` per step, what the step
//! produced (its layer: a blob, or only a snapshot until an image needs
//! the blob).

use std::fs;
use std::path::PathBuf;

use kiln_oci::Digest;
use serde::{Deserialize, Serialize};

use crate::store::parse_digest;
use crate::{atomic, Error, Store};

/// What the step cache remembers of a step: the layer it produced (if any)
/// and the history line it added.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheEntry {
    /// `None` for a step that changes only the config.
    pub layer: Option<CachedLayer>,
    /// When the step ran, reused so a cached rebuild gives the same image.
    #[serde(default)]
    pub created: Option<String>,
}

/// The layer a step made. Its blob is written only when an image needs
/// it: until then the layer is its snapshot and diff ID (`pending`), and
/// `digest` and `size` are unknown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedLayer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    pub diff_id: String,
    #[serde(default)]
    pub size: u64,
    /// The media type its blob has, or will have.
    pub media_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<Pending>,
}

/// A layer kept only as its snapshot: what writing its blob needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// The chain ID naming its snapshot.
    pub chain: String,
    /// The clamp of its tar's timestamps its diff ID was computed with.
    #[serde(default)]
    pub source_date_epoch: Option<u64>,
}

impl CachedLayer {
    /// The blob's digest, when it is written.
    pub fn blob(&self) -> Option<Digest> {
        self.digest.as_deref().and_then(|d| parse_digest(d).ok())
    }
}

impl Store {
    /// The file of the cache entry kept under `id` ([`Store::cache_id`]).
    fn cache_file(&self, id: &str) -> PathBuf {
        self.root().join("cache").join(format!("{id}.json"))
    }

    /// What a step with cache key `key` produced before, if its layer is
    /// still here: its blob (here, or to be fetched), or, for a layer whose
    /// blob was never written, its snapshot.
    pub fn cache_get(&self, key: &str) -> Option<CacheEntry> {
        let entry = self.cache_entry(&Self::cache_id(key))?;
        let Some(l) = &entry.layer else {
            return Some(entry);
        };
        let usable = match (l.blob(), &l.pending) {
            (Some(d), _) => self.can_read_blob(&d),
            (None, Some(p)) => parse_digest(&p.chain).is_ok_and(|c| self.snapshot(&c).is_some()),
            (None, None) => false,
        };
        usable.then_some(entry)
    }

    /// The name a step's cache key is kept under (the digest of the key).
    pub fn cache_id(key: &str) -> String {
        kiln_oci::digest::sha256(key.as_bytes())
            .digest()
            .to_string()
    }

    /// The cache entry kept under `id` ([`Store::cache_id`]), as it is.
    pub fn cache_entry(&self, id: &str) -> Option<CacheEntry> {
        let bytes = fs::read(self.cache_file(id)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Keeps `entry` under `id` unless an entry is there already (a
    /// registry cache's entries never replace this machine's).
    pub fn cache_adopt(&self, id: &str, entry: &CacheEntry) -> Result<(), Error> {
        if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::Spec(format!("{id:?} is not a cache key digest")));
        }
        if self.cache_file(id).exists() {
            return Ok(());
        }
        self.write_cache_entry(id, entry)
    }

    pub fn cache_put(&self, key: &str, entry: &CacheEntry) -> Result<(), Error> {
        self.write_cache_entry(&Self::cache_id(key), entry)
    }

    fn write_cache_entry(&self, id: &str, entry: &CacheEntry) -> Result<(), Error> {
        let bytes = serde_json::to_vec(entry).map_err(|e| Error::Json {
            what: "writing cache entry".into(),
            source: e,
        })?;
        atomic::write(&self.tmp_dir(), &self.cache_file(id), &bytes)
    }

    /// Every cache entry file, with its entry when it parses.
    pub(crate) fn cache_files(&self) -> Result<Vec<(PathBuf, Option<CacheEntry>)>, Error> {
        let dir = self.root().join("cache");
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).map_err(|e| Error::io("reading", &dir, e))? {
            let path = entry.map_err(|e| Error::io("reading", &dir, e))?.path();
            let parsed = fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            out.push((path, parsed));
        }
        Ok(out)
    }
}
