//! kiln's local store.
//!
//! ```text
//! STORE/
//!   oci/                 an OCI image layout: oci-layout, index.json, blobs/sha256/…
//!   snapshots/<chain>/   one unpacked layer per layer chain, an overlay lower dir
//!   cache/<key>.json     build step cache: step key → the layer it produced
//!                        (its blob may be elsewhere: `sources/`, fetched through a `Remote`)
//!   tmp/                 where every write starts before its atomic rename
//!   lock                 advisory lock file
//! ```
//!
//! Every write goes to `tmp/`, is fsynced, then renamed into place, so a
//! process killed at any moment leaves only garbage in `tmp/`, never a
//! half-written blob, snapshot or index. `index.json` changes happen under an
//! exclusive lock; builds hold a shared lock so `prune` cannot remove what a
//! running build uses.
#![cfg_attr(not(test), deny(clippy::print_stdout, clippy::print_stderr))]

mod atomic;
mod cache;
mod fsck;
mod prune;
mod refs;
mod snapcheck;
mod store;

pub use atomic::{remove_temps_of, RemoveOnDrop};
pub use cache::{CacheEntry, CachedLayer, Pending};
pub use fsck::{FsckOptions, Problem};
pub use prune::PruneReport;
pub use refs::normalize_name;
pub use store::{chain_id, parse_digest, platforms_of, Image, Remote, Store, StoreLock};

use std::path::PathBuf;

/// What went wrong in the store, naming the object.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("blob {0} is not in the store")]
    MissingBlob(kiln_oci::Digest),
    #[error("no image named {0:?} in the store")]
    NoSuchImage(String),
    #[error("{name} has no image for {platform} in the store (it has {have})")]
    NoPlatform {
        name: String,
        platform: String,
        have: String,
    },
    #[error("{what}: {source}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{0}")]
    Oci(#[from] kiln_oci::Error),
    #[error("blob {expected}: content has digest {actual}")]
    DigestMismatch {
        expected: kiln_oci::Digest,
        actual: kiln_oci::Digest,
    },
    #[error("{0}")]
    Spec(String),
    /// A blob whose length is not the one its descriptor declares.
    #[error("blob {digest}: its descriptor declares {declared} bytes, the content has {actual}")]
    SizeMismatch {
        digest: kiln_oci::Digest,
        declared: u64,
        actual: u64,
    },
    /// A layer that could not be unpacked (a hostile or malformed entry).
    #[error("unpacking layer {layer}: {source}")]
    Layer {
        layer: kiln_oci::Digest,
        #[source]
        source: Box<kiln_oci::Error>,
    },
}

impl Error {
    pub(crate) fn io(what: &str, path: &std::path::Path, source: std::io::Error) -> Self {
        Error::Io {
            what: what.to_string(),
            path: path.to_path_buf(),
            source,
        }
    }
}

/// The default store location: `$KILN_STORE`, else `/var/lib/kiln` for root,
/// else `$XDG_DATA_HOME/kiln` (or `~/.local/share/kiln`).
pub fn default_root() -> PathBuf {
    if let Some(p) = std::env::var_os("KILN_STORE").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    if rustix_is_root() {
        return PathBuf::from("/var/lib/kiln");
    }
    let data = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."));
    data.join("kiln")
}

fn rustix_is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}
