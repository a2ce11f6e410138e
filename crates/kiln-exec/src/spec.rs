//! What a step needs, passed to the helper processes as JSON.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Network {
    /// The host's network (package managers work).
    #[default]
    Host,
    /// A new network namespace with nothing in it.
    None,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MountKind {
    /// A host path bound into the step.
    Bind { source: PathBuf, readonly: bool },
    /// A secret: its file copied into a tmpfs of the step's own (so nothing
    /// of it is written to disk) with `mode`, `uid` and `gid`, and bound
    /// read-only at the target (none when the target is empty); with `env`,
    /// also given to the command as that environment variable.
    Secret {
        source: PathBuf,
        mode: u32,
        uid: u32,
        gid: u32,
        env: Option<String>,
        /// A directory outside the root for the tmpfs.
        staging: PathBuf,
    },
    /// A fresh tmpfs; `size` in bytes.
    Tmpfs { size: Option<u64> },
    /// Another stage's or image's layers, overlaid read-write with the
    /// writes discarded; `source` is the path inside them to bind.
    Layers {
        lowers: Vec<PathBuf>,
        source: String,
        readonly: bool,
        /// A directory outside the root for the overlay's mount, upper and work dirs.
        staging: PathBuf,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// Absolute path inside the step's root.
    pub target: String,
    pub kind: MountKind,
}

/// Everything the helper needs to run one command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSpec {
    /// Overlay lower dirs, top-most first; may be empty (a step on scratch).
    pub lowers: Vec<PathBuf>,
    /// The overlay upper dir: what the step changes becomes its layer.
    pub upper: PathBuf,
    pub work: PathBuf,
    /// Where the root is mounted before pivot_root.
    pub rootfs: PathBuf,
    /// An empty directory, used as the lower dir of a step on scratch.
    pub empty: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub hostname: String,
    pub network: Network,
    /// The generated /etc/hosts, bound read-only into the step.
    pub hosts_file: PathBuf,
    /// The host's resolv.conf, bound read-only (host network only).
    pub resolv_conf: Option<PathBuf>,
    pub mounts: Vec<Mount>,
    /// Where the helper lists the mount points it had to create in the root;
    /// the caller removes them from the upper dir so they stay out of the layer.
    pub stubs_file: PathBuf,
}
