//! kiln's OCI foundation: digests, reproducible layer tars (write and
//! unpack, whiteouts included) and a readable dump of a file tree for tests.
#![cfg_attr(not(test), deny(clippy::print_stdout, clippy::print_stderr))]

pub mod digest;
pub mod image;
pub mod layer;
pub mod merge;
pub mod pgzip;
pub mod tree;
pub mod unpack;
pub mod xattr;

use std::path::{Path, PathBuf};

pub use oci_spec::image::{Digest, MediaType};

/// What went wrong, with the path or object it was about.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what} {}: {source}", path.display())]
    Path {
        what: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid sha256 digest {0:?}")]
    BadDigest(String),
    /// A layer entry that would land outside the root or is malformed.
    #[error("layer entry {entry:?}: {reason}")]
    HostileEntry { entry: String, reason: String },
    #[error("digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
}

impl Error {
    pub fn path(what: &str, path: &Path, source: std::io::Error) -> Self {
        Error::Path {
            what: what.to_string(),
            path: path.to_path_buf(),
            source,
        }
    }

    pub fn io(what: &str, source: std::io::Error) -> Self {
        Error::Io {
            what: what.to_string(),
            source,
        }
    }
}
