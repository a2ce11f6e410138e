//! One image's bake as a pipeline: named steps over one job context.
//!
//! Each step reads what the steps before it filled in ([`Job`]) and either
//! lets the job go on or ends it with an [`Outcome`]. A new capability (an
//! SBOM, a signature, a decision that nothing changed, a rollout trigger)
//! is one more entry in [`STEPS`], in its own module.

pub(crate) mod attest;
mod build;
pub(crate) mod cache;
mod prepare;
mod publish;
mod test;
mod unchanged;

pub(crate) use test::test_text;

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::Mutex;
use std::time::Instant;

use chrono::{DateTime, Utc};
use kiln_build::Progress;
use kiln_definition::{Factory, Image};
use kiln_registry::Client;
use kiln_store::Store;

use crate::bake::Log;
use crate::baked::{BakeOptions, ImageResult, Outcome};
use crate::graph::Graph;
use crate::plan::{Locks, Plan};
use crate::vm::VmBuilt;

/// What every job of one bake shares.
pub(crate) struct Bake<'a> {
    pub factory: &'a Factory,
    pub g: &'a Graph,
    pub plan: &'a Plan,
    pub locks: &'a Mutex<Locks>,
    /// The results of the images baked so far (earlier waves).
    pub results: &'a Mutex<BTreeMap<String, ImageResult>>,
    pub store: &'a Store,
    pub client: &'a Client,
    pub opts: &'a BakeOptions,
    pub log: Log<'a>,
}

/// One image's bake as it goes: the result being filled in and what the
/// steps hand to one another.
pub(crate) struct Job<'a> {
    pub bake: &'a Bake<'a>,
    pub name: &'a str,
    pub image: &'a Image,
    pub started: DateTime<Utc>,
    pub result: ImageResult,
    /// Factory images it is built on → their `NAME:VERSION` in the store.
    pub deps: BTreeMap<String, String>,
    /// Its new version (the `version` step).
    pub version: String,
    /// What the `build` step made.
    pub made: Option<Made>,
    /// Attachment tag (`sha256-<hex>.sig|.att`) → its manifest digest
    /// (the `attest` step).
    pub attached: BTreeMap<String, String>,
}

/// What the `build` step made.
pub(crate) struct Made {
    /// The image's manifest (or index) digest, or the VM artifact's.
    pub digest: String,
    /// Each platform's manifest digest, when there are several.
    pub platforms: BTreeMap<String, String>,
    /// A VM image: kept, with its files, and already boot-tested.
    pub vm: Option<VmBuilt>,
    /// The cache keys of the steps its build ran or reused.
    pub keys: Vec<String>,
}

/// A step either lets the job go on or ends it with its outcome.
pub(crate) type Flow = ControlFlow<Outcome>;

/// The pipeline, in order.
const STEPS: [fn(&mut Job<'_>) -> Flow; 12] = [
    prepare::dependencies,
    prepare::version,
    prepare::bases,
    attest::trusted_bases,
    build::build,
    cache::write,
    test::test,
    unchanged::unchanged,
    attest::attest,
    publish::tag,
    publish::publish,
    publish::lock,
];

/// The index of the first step that changes something outside the store
/// (tags, registries, the lock): a cancelled bake stops before it, never
/// after.
const PUBLISHING: usize = 9;

/// Bakes one image of wave `wave`: every step in turn, until one ends it.
pub(crate) fn run(bake: &Bake<'_>, name: &str, wave: usize) -> ImageResult {
    let clock = Instant::now();
    let planned = bake.plan.image(name).expect("planned");
    let started = Utc::now();
    let mut job = Job {
        bake,
        name,
        image: &bake.factory.images[name],
        started,
        result: ImageResult {
            name: name.to_string(),
            outcome: Outcome::Built,
            reasons: planned.reasons.clone(),
            version: None,
            digest: None,
            tests_passed: 0,
            published: vec![],
            started: Some(started),
            finished: None,
            seconds: 0.0,
            inputs: planned.inputs.clone(),
            wave: Some(wave),
        },
        deps: BTreeMap::new(),
        version: String::new(),
        made: None,
        attached: BTreeMap::new(),
    };
    let outcome = STEPS
        .iter()
        .enumerate()
        .find_map(|(i, step)| {
            if i < PUBLISHING && bake.opts.cancelled() {
                return Some(Outcome::Cancelled);
            }
            step(&mut job).break_value()
        })
        .unwrap_or(Outcome::Built);
    let mut r = job.result;
    r.outcome = outcome;
    r.finished = Some(Utc::now());
    r.seconds = clock.elapsed().as_secs_f64();
    r
}

impl Job<'_> {
    /// A line of this image's log.
    pub fn say(&self, text: &str) {
        self.bake.log.line(self.name, text);
    }

    /// Its name in the store: `NAME:VERSION`.
    pub fn store_name(&self) -> String {
        format!("{}:{}", self.name, self.version)
    }

    /// What the build step made (the steps after it run only if it made
    /// something).
    pub fn made(&self) -> &Made {
        self.made.as_ref().expect("the build step ran")
    }

    /// Records its lock entry: in its lock file, or for a runner job only
    /// in memory, for the caller to hand on as a fragment.
    pub fn record(&self, entry: crate::lock::Locked) -> Result<(), crate::FactoryError> {
        let mut locks = self.bake.locks.lock().expect("locks");
        locks.set(self.name, entry);
        if self.bake.opts.runner.is_some() {
            return Ok(());
        }
        locks.write_for(self.name)
    }

    /// The digest of the image `locked` holds that this build is the same
    /// as when their digests are equal: a runner job's one platform's
    /// image, or the whole image's.
    pub fn locked_digest<'l>(&self, locked: &'l crate::lock::Locked) -> Option<&'l String> {
        match self.bake.opts.platform() {
            Some(p) if !locked.platforms.is_empty() => locked.platforms.get(&p.to_string()),
            _ => Some(&locked.digest),
        }
    }

    /// The platforms it is built for here: a runner job's one platform, or
    /// its own.
    pub fn platforms(&self) -> Vec<kiln_dockerfile::Platform> {
        match self.bake.opts.platform() {
            Some(p) => vec![p.clone()],
            None => self.image.platforms.clone(),
        }
    }

    /// Engine progress as lines of this image's log.
    pub fn progress(&self) -> Prefixed<'_> {
        Prefixed {
            image: self.name,
            log: self.bake.log,
        }
    }
}

/// Engine progress as bake log lines of one image.
pub(crate) struct Prefixed<'a> {
    image: &'a str,
    log: Log<'a>,
}

impl Progress for Prefixed<'_> {
    fn step(&mut self, stage: &str, line: usize, text: &str, cached: bool) {
        let cached = if cached { " (cached)" } else { "" };
        let stage = if stage.is_empty() {
            String::new()
        } else {
            format!("{stage} ")
        };
        self.log
            .line(self.image, &format!("{stage}#{line} {text}{cached}"));
    }
    fn output(&mut self, _stage: &str, line: &str) {
        self.log.line(self.image, &format!("  {line}"));
    }
}
