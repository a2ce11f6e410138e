//! What a bake is asked to do and what it reports: the options, each
//! image's outcome and result, the whole summary. A module of their own so
//! the bake's steps (`vm`, `history`, `bootstrap`, …) and the bake itself
//! all import them from here, never from one another.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use kiln_build::Compression;
use serde::Serialize;

use crate::lock::Inputs;
use crate::plan::{self, Plan, PlanOptions};

/// What `kiln bake` was asked to do.
#[derive(Debug, Clone)]
pub struct BakeOptions {
    pub plan: PlanOptions,
    /// Plan only.
    pub dry_run: bool,
    /// Build and test, but publish nothing and leave the locks alone.
    pub no_publish: bool,
    pub kiln_exe: PathBuf,
    pub compression: Compression,
    pub source_date_epoch: Option<u64>,
    /// Set to stop the bake cleanly (`kiln serve` on SIGTERM): an image
    /// whose publishing has not begun ends [`Outcome::Cancelled`] after the
    /// step it is in, and no further wave starts. Publishing, once begun,
    /// runs to its end, so a lock never lags what a registry holds.
    pub cancel: Option<Arc<AtomicBool>>,
    /// One job of a CI engine's graph (`kiln bake --fragment`): see
    /// [`RunnerJob`].
    pub runner: Option<RunnerJob>,
    /// Registry repositories whose step caches it reads (`--cache-from`),
    /// besides each image's `[factory] cache`.
    pub cache_from: Vec<String>,
    /// The repository it writes each image's step cache to (`--cache-to`),
    /// besides its `[factory] cache`.
    pub cache_to: Option<String>,
}

/// A bake that is one job of a graph spread over runners, each with an
/// empty store: only the images asked for are built — those they stand on
/// are taken as their lock entries (and the fragments merged into them)
/// say, pulled by digest — and no lock file is written: the caller hands
/// the entry on as a fragment.
#[derive(Debug, Clone, Default)]
pub struct RunnerJob {
    /// Build only this platform of a multi-platform image; its index is
    /// assembled by a later job from every platform's digest.
    pub platform: Option<kiln_dockerfile::Platform>,
    /// Push to registries by digest only: no tag is moved.
    pub push_by_digest: bool,
}

impl BakeOptions {
    /// Whether the bake was asked to stop.
    pub fn cancelled(&self) -> bool {
        self.cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Relaxed))
    }

    /// The one platform a runner job builds, if it was given one.
    pub fn platform(&self) -> Option<&kiln_dockerfile::Platform> {
        self.runner.as_ref().and_then(|r| r.platform.as_ref())
    }
}

/// What happened to one image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum Outcome {
    /// Rebuilt, tested and (unless --no-publish) published.
    Built,
    /// Up to date: the locked image stays.
    Reused,
    /// Rebuilt, and the same as the locked image: no new version, nothing
    /// published, its lock entry as it was.
    Unchanged,
    /// Would be built (--dry-run).
    WouldBuild,
    /// Not built because an image it is built on failed.
    Skipped { because: String },
    /// The build failed.
    Failed { error: String },
    /// A test failed: nothing was published.
    TestFailed { test: String, exit_code: i32 },
    /// Tests passed but a publish target failed.
    PublishFailed { error: String },
    /// Stopped before it published anything (the bake was cancelled).
    Cancelled,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        matches!(
            self,
            Outcome::Built | Outcome::Reused | Outcome::Unchanged | Outcome::WouldBuild
        )
    }
}

/// One image's result.
#[derive(Debug, Clone, Serialize)]
pub struct ImageResult {
    pub name: String,
    #[serde(flatten)]
    pub outcome: Outcome,
    pub reasons: Vec<plan::Reason>,
    pub version: Option<String>,
    pub digest: Option<String>,
    pub tests_passed: usize,
    pub published: Vec<String>,
    pub started: Option<DateTime<Utc>>,
    pub finished: Option<DateTime<Utc>>,
    pub seconds: f64,
    /// The inputs this bake recorded (what the lock holds once published).
    #[serde(skip)]
    pub inputs: Inputs,
    #[serde(skip)]
    pub wave: Option<usize>,
}

/// A whole bake.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub plan: Plan,
    /// Every planned image, in dependency order.
    pub images: Vec<ImageResult>,
}

impl Summary {
    pub fn all_ok(&self) -> bool {
        self.images.iter().all(|i| i.outcome.ok())
    }
}
