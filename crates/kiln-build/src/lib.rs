//! kiln's build engine: an evaluated Dockerfile graph and a build context to
//! an image in the store.
//!
//! Base images come through the [`ImageSource`] trait, so the engine never
//! depends on a registry. Each RUN runs through `kiln-exec` on an overlay of
//! the parent's snapshots; its upper dir becomes the layer. COPY and ADD
//! layers are written straight from the context. Every layer-producing step
//! has a cache key (parent, evaluated instruction, content of what it reads)
//! and is skipped when the store already holds its result.
#![cfg_attr(not(test), deny(clippy::print_stdout, clippy::print_stderr))]

mod compress;
mod context;
mod copy;
mod engine;
pub mod export;
mod fetch;
mod job;
mod refresh;
mod run;
mod source;
mod statcache;
mod state;
mod users;
mod view;

use std::collections::BTreeMap;
use std::path::PathBuf;

pub use compress::complete;
pub use job::build;
pub use kiln_oci::layer::Compression;
pub use refresh::Refresh;
pub use run::{run_image, RunOptions};
pub use source::{oci_platform, BaseImage, ImageSource, SourceError, StoreSource};
pub use statcache::StatCache;

/// A build context as a build reads it (after `.dockerignore`, without
/// `hidden` paths, as [`BuildOptions::hidden`]) with its Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ContextSummary {
    /// Changes when a build could change.
    pub digest: String,
    /// Each entry (relative path) → its mode and content digest or link
    /// target; the Dockerfile as `<Dockerfile>`. Tells what changed.
    pub files: BTreeMap<String, String>,
}

/// The summary of a context and its Dockerfile. With `cache` (a file in
/// the store), only the files whose metadata changed since the last
/// summary are read (see the rule in `statcache`), and the cache is
/// updated.
pub fn context_summary(
    root: &std::path::Path,
    dockerfile: &std::path::Path,
    hidden: &[PathBuf],
    cache: Option<&std::path::Path>,
) -> Result<ContextSummary, String> {
    let ctx = context::Context::open(root, Some(dockerfile))?.hide(hidden);
    let text =
        std::fs::read(dockerfile).map_err(|e| format!("reading {}: {e}", dockerfile.display()))?;
    let known = cache.map(StatCache::load).unwrap_or_default();
    // One walk of the context: the listing, and the digest of the listing.
    let (entries, now) = ctx.entries_known(&[PathBuf::new()], &known)?;
    if let Some(path) = cache {
        now.save(path);
    }
    let mut files: BTreeMap<String, String> = entries
        .into_iter()
        .filter(|(p, _, _)| !p.as_os_str().is_empty())
        .map(|(p, mode, content)| (p.display().to_string(), format!("{mode:o} {content}")))
        .collect();
    files.insert(
        "<Dockerfile>".into(),
        kiln_oci::digest::sha256(&text).to_string(),
    );
    let listing = serde_json::to_vec(&files).map_err(|e| e.to_string())?;
    Ok(ContextSummary {
        digest: kiln_oci::digest::sha256(&listing).to_string(),
        files,
    })
}

/// What `kiln build` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    pub dockerfile: PathBuf,
    pub context: PathBuf,
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    pub tags: Vec<String>,
    pub no_cache: bool,
    /// RUN steps that run again instead of coming from the cache (a
    /// rebuild for freshness).
    pub refresh: Refresh,
    /// `--secret id=ID,src=PATH`: id → file.
    pub secrets: BTreeMap<String, PathBuf>,
    pub source_date_epoch: Option<u64>,
    pub compression: Compression,
    /// The kiln binary, re-executed to run steps in isolation.
    pub kiln_exe: PathBuf,
    /// Context files the build never sees, as if listed in `.dockerignore`
    /// (the factory hides its lock files).
    pub hidden: Vec<PathBuf>,
    /// `--platform`: none builds for this machine; one gives an image of
    /// that platform; several give an image index with one image each.
    pub platforms: Vec<kiln_dockerfile::Platform>,
}

/// What a build produced.
#[derive(Debug, Clone)]
pub struct BuildResult {
    pub manifest_digest: String,
    pub manifest_size: u64,
    pub names: Vec<String>,
    /// Layer steps that ran, and those reused from the cache.
    pub steps_run: usize,
    pub steps_cached: usize,
    /// The cache key of every step it ran or reused (what `--cache-to`
    /// exports).
    pub cache_keys: Vec<String>,
    /// Each image base as written and the manifest digest it resolved to,
    /// so the build can be pinned.
    pub bases: Vec<(String, String)>,
    /// Each platform built (`linux/arm64`) and its image's manifest digest;
    /// `manifest_digest` is the index's when there are several.
    pub platforms: Vec<(String, String)>,
}

/// Where the engine reports what it does; the CLI prints it.
pub trait Progress {
    /// A step starts (`cached` when its result is reused).
    fn step(&mut self, stage: &str, line: usize, text: &str, cached: bool);
    /// A line a RUN of stage `stage` printed.
    fn output(&mut self, stage: &str, line: &str);
}

/// Progress that goes nowhere.
pub struct Quiet;

impl Progress for Quiet {
    fn step(&mut self, _: &str, _: usize, _: &str, _: bool) {}
    fn output(&mut self, _: &str, _: &str) {}
}

/// Why a build failed. Each names what it was doing and where.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The Dockerfile was rejected; `rendered` shows the line and a caret.
    #[error("{rendered}")]
    Dockerfile { rendered: String },
    /// A step failed at `file:line`.
    #[error("{file}:{line}: {instruction}: {message}")]
    Step {
        file: String,
        line: usize,
        instruction: String,
        message: String,
    },
    #[error("base image {reference}: {message}")]
    Base { reference: String, message: String },
    #[error("{0}")]
    Context(String),
    #[error(transparent)]
    Store(#[from] kiln_store::Error),
    #[error(transparent)]
    Oci(#[from] kiln_oci::Error),
    #[error(transparent)]
    Exec(#[from] kiln_exec::Error),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl BuildError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        BuildError::Io {
            what: what.into(),
            source,
        }
    }
}
