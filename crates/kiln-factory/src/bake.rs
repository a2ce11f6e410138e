//! `kiln bake`: rebuild what the plan says is stale, wave by wave (the
//! images of a wave concurrently), each image through the pipeline of
//! [`crate::job`] (build, test, publish, record in its lock file) — one
//! image at a time, so a bake cut off at any point resumes with what is
//! still stale.

use std::collections::BTreeMap;
use std::sync::Mutex;

use kiln_definition::Factory;
use kiln_registry::Client;
use kiln_store::Store;

use crate::graph::Graph;
use crate::plan::{self, Locks, Plan, Resolver};
use crate::FactoryError;

pub use crate::baked::{BakeOptions, ImageResult, Outcome, Summary};

/// Where a bake says what it does: one line at a time, prefixed by the
/// caller as it likes.
pub type Log<'a> = &'a dyn BakeLog;

/// What a bake reports: lines about an image (or the whole bake when the
/// image is empty), and the end of each image's work.
pub trait BakeLog: Sync {
    fn line(&self, image: &str, text: &str);
    /// `image` is done (built, failed or skipped).
    fn done(&self, _image: &str, _outcome: &Outcome) {}
}

impl<F: Fn(&str, &str) + Sync> BakeLog for F {
    fn line(&self, image: &str, text: &str) {
        self(image, text)
    }
}

/// Bakes the factory.
#[allow(clippy::too_many_arguments)]
pub fn bake(
    factory: &Factory,
    g: &Graph,
    locks: &mut Locks,
    store: &Store,
    client: &Client,
    resolver: &dyn Resolver,
    opts: &BakeOptions,
    history: Option<&crate::history::History>,
    log: Log<'_>,
) -> Result<Summary, FactoryError> {
    let mut plan = plan::plan(factory, g, locks, resolver, &opts.plan)?;
    for w in &plan.warnings {
        log.line("", &format!("warning: {w}"));
    }
    let mut not_baked = not_baked(&plan, opts.dry_run);
    if opts.runner.is_some() {
        not_baked.extend(taken_as_locked(&mut plan, &opts.plan.selected));
    }
    let results = Mutex::new(not_baked);
    if !opts.dry_run {
        crate::job::cache::open(factory, &plan, store, client, opts, log);
        let locks_m = Mutex::new(std::mem::take(locks));
        let shared = crate::job::Bake {
            factory,
            g,
            plan: &plan,
            locks: &locks_m,
            results: &results,
            store,
            client,
            opts,
            log,
        };
        for (w, wave) in plan.waves.iter().enumerate() {
            if opts.cancelled() {
                log.line("", "cancelled: the next waves do not start");
                break;
            }
            log.line("", &format!("wave {}: {}", w + 1, wave.join(", ")));
            std::thread::scope(|s| {
                for name in wave {
                    let shared = &shared;
                    s.spawn(move || bake_recorded(shared, history, name, w));
                }
            });
        }
        *locks = locks_m.into_inner().expect("locks");
    }
    let mut results = results.into_inner().expect("results");
    let images = plan
        .images
        .iter()
        .filter_map(|i| results.remove(&i.name))
        .collect();
    Ok(Summary { plan, images })
}

/// The results of the images this bake does not build: those up to date,
/// and with `dry_run` those it would build.
fn not_baked(plan: &Plan, dry_run: bool) -> BTreeMap<String, ImageResult> {
    let wave_of: BTreeMap<&str, usize> = plan
        .waves
        .iter()
        .enumerate()
        .flat_map(|(i, w)| w.iter().map(move |n| (n.as_str(), i)))
        .collect();
    let result = |image: &plan::ImagePlan, outcome| {
        unbaked(image, outcome, wave_of.get(image.name.as_str()).copied())
    };
    plan.images
        .iter()
        .filter_map(|image| match (image.stale, dry_run) {
            (false, _) => Some(result(image, Outcome::Reused)),
            (true, true) => Some(result(image, Outcome::WouldBuild)),
            (true, false) => None,
        })
        .map(|r| (r.name.clone(), r))
        .collect()
}

/// A runner job builds only the images it was asked for: a stale image
/// they stand on is another job's, so it is taken as its lock entry (with
/// the fragments merged in) holds it — or, with no entry, is not there.
fn taken_as_locked(plan: &mut Plan, selected: &[String]) -> BTreeMap<String, ImageResult> {
    let mut out = BTreeMap::new();
    if selected.is_empty() {
        return out;
    }
    for image in plan.images.iter().filter(|i| i.stale) {
        if selected.contains(&image.name) {
            continue;
        }
        let outcome = match (&image.version, &image.digest) {
            (Some(_), Some(_)) => Outcome::Reused,
            _ => Outcome::Skipped {
                because: "another job builds it, and neither kiln.lock nor a fragment has it"
                    .into(),
            },
        };
        out.insert(image.name.clone(), unbaked(image, outcome, None));
    }
    for wave in &mut plan.waves {
        wave.retain(|n| !out.contains_key(n));
    }
    plan.waves.retain(|w| !w.is_empty());
    out
}

/// The result of an image this bake does not build.
fn unbaked(image: &plan::ImagePlan, outcome: Outcome, wave: Option<usize>) -> ImageResult {
    ImageResult {
        name: image.name.clone(),
        outcome,
        reasons: image.reasons.clone(),
        version: image.version.clone(),
        digest: image.digest.clone(),
        tests_passed: 0,
        published: vec![],
        started: None,
        finished: None,
        seconds: 0.0,
        inputs: image.inputs.clone(),
        wave,
    }
}

/// Bakes one image, records it in the history, and reports it done.
fn bake_recorded(
    shared: &crate::job::Bake<'_>,
    history: Option<&crate::history::History>,
    name: &str,
    wave: usize,
) {
    let r = crate::job::run(shared, name, wave);
    let (factory, log) = (shared.factory, shared.log);
    if let Some(h) = history {
        let image = &factory.images[name];
        let file = &factory.files[image.file].path;
        if let Err(e) = h.record(file, &r, image.tests.len()) {
            log.line(name, &format!("warning: {e}"));
        }
    }
    log.done(name, &r.outcome);
    shared
        .results
        .lock()
        .expect("results")
        .insert(name.to_string(), r);
}
