//! `kiln bake`: rebuild what the plan says is stale, wave by wave (the
//! images of a wave concurrently), test each new image, publish it, and
//! record it in its lock file — one image at a time, so a bake cut off at
//! any point resumes with what is still stale.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use chrono::Utc;
use kiln_build::{BuildOptions, ImageSource, Progress, RunOptions};
use kiln_definition::{Factory, Publish, Recipe};
use kiln_dockerfile::Platform;
use kiln_registry::{Client, Reference};
use kiln_store::Store;

use crate::graph::Graph;
use crate::lock::Locked;
use crate::plan::{self, Locks, Plan, Resolver};
use crate::{transfer, FactoryError, RegistrySource};

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
    let plan = plan::plan(factory, g, locks, resolver, &opts.plan)?;
    let wave_of: BTreeMap<&str, usize> = plan
        .waves
        .iter()
        .enumerate()
        .flat_map(|(i, w)| w.iter().map(move |n| (n.as_str(), i)))
        .collect();
    let results: Mutex<BTreeMap<String, ImageResult>> = Mutex::new(BTreeMap::new());
    for image in &plan.images {
        if !image.stale || opts.dry_run {
            let outcome = if image.stale {
                Outcome::WouldBuild
            } else {
                Outcome::Reused
            };
            results.lock().expect("results").insert(
                image.name.clone(),
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
                    wave: wave_of.get(image.name.as_str()).copied(),
                },
            );
        }
    }
    if !opts.dry_run {
        let locks_m = Mutex::new(std::mem::take(locks));
        for (w, wave) in plan.waves.iter().enumerate() {
            log.line("", &format!("wave {}: {}", w + 1, wave.join(", ")));
            std::thread::scope(|s| {
                for name in wave {
                    let (results, locks_m, plan) = (&results, &locks_m, &plan);
                    s.spawn(move || {
                        let r = bake_one(
                            factory, g, plan, locks_m, results, store, client, opts, name, w, log,
                        );
                        if let Some(h) = history {
                            let image = &factory.images[name.as_str()];
                            let file = &factory.files[image.file].path;
                            if let Err(e) = h.record(file, &r, image.tests.len()) {
                                log.line(name, &format!("warning: {e}"));
                            }
                        }
                        log.done(name, &r.outcome);
                        results.lock().expect("results").insert(name.clone(), r);
                    });
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

#[allow(clippy::too_many_arguments)]
fn bake_one(
    factory: &Factory,
    g: &Graph,
    plan: &Plan,
    locks: &Mutex<Locks>,
    results: &Mutex<BTreeMap<String, ImageResult>>,
    store: &Store,
    client: &Client,
    opts: &BakeOptions,
    name: &str,
    wave: usize,
    log: Log<'_>,
) -> ImageResult {
    let planned = plan.image(name).expect("planned");
    let image = &factory.images[name];
    let started = Utc::now();
    let clock = Instant::now();
    let mut r = ImageResult {
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
    };
    let finish = |mut r: ImageResult, outcome: Outcome| {
        r.outcome = outcome;
        r.finished = Some(Utc::now());
        r.seconds = clock.elapsed().as_secs_f64();
        r
    };
    // The factory images it is built on: their new or locked versions.
    let mut dep_names = BTreeMap::new();
    {
        let results = results.lock().expect("results");
        for dep in &g.deps[name] {
            match results.get(dep) {
                Some(d) if d.outcome.ok() => {
                    let (Some(v), Some(digest)) = (&d.version, &d.digest) else {
                        return finish(
                            r,
                            Outcome::Skipped {
                                because: format!("{dep} has no built version"),
                            },
                        );
                    };
                    dep_names.insert(dep.clone(), format!("{dep}:{v}"));
                    r.inputs.bases.insert(dep.clone(), digest.clone());
                }
                Some(d) => {
                    let because = match &d.outcome {
                        Outcome::Skipped { because } => format!("{dep} was skipped ({because})"),
                        _ => format!("{dep} failed"),
                    };
                    return finish(r, Outcome::Skipped { because });
                }
                None => {
                    return finish(
                        r,
                        Outcome::Skipped {
                            because: format!("{dep} was not baked"),
                        },
                    )
                }
            }
        }
    }
    let previous = locks.lock().expect("locks").get(name).cloned();
    let version = match crate::version::version(factory, image, previous.as_ref(), started) {
        Ok(v) => v,
        Err(e) => return finish(r, Outcome::Failed { error: e }),
    };
    r.version = Some(version.clone());
    let store_name = format!("{name}:{version}");
    // Moving tags are set only once the tests pass.
    let tags = vec![store_name.clone()];
    log.line(
        name,
        &format!(
            "building {store_name} ({})",
            plan::describe(&planned.reasons)
        ),
    );

    // Make sure every up-to-date factory base is in the store.
    for (dep, store_ref) in &dep_names {
        if let Err(e) = ensure_local(store, client, locks, dep, store_ref, log) {
            return finish(r, Outcome::Failed { error: e });
        }
    }
    if let Recipe::Vm(vm) = &image.recipe {
        let vlog = |l: &str| log.line(name, l);
        let job = crate::vm::VmJob {
            store,
            name,
            version: &version,
            recipe: vm,
            image: &dep_names[&vm.image],
            tests: &image.tests,
            tags: &image.tags,
            source_date_epoch: opts.source_date_epoch,
            log: &vlog,
        };
        let built = match crate::vm::bake(&job) {
            Ok(b) => b,
            Err(outcome) => return finish(r, outcome),
        };
        r.digest = Some(built.digest.clone());
        r.tests_passed = built.tests_passed;
        if opts.no_publish {
            return finish(r, Outcome::Built);
        }
        let published = publish_each(&mut r, name, log, &image.publish, |target| {
            crate::vm::publish(client, target, name, &version, &image.tags, &built, &vlog)
        });
        if let Err(outcome) = published {
            return finish(r, outcome);
        }
        let locked = Locked {
            version: version.clone(),
            digest: built.digest.clone(),
            files: built.files.clone(),
            tags: std::iter::once(version.clone())
                .chain(image.tags.iter().cloned())
                .collect(),
            published: r.published.clone(),
            baked_at: started.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            inputs: r.inputs.clone(),
            ..Locked::default()
        };
        return match record(locks, name, locked) {
            Ok(()) => finish(r, Outcome::Built),
            Err(error) => finish(r, Outcome::PublishFailed { error }),
        };
    }
    let mut progress = Prefixed { image: name, log };
    let built = match &image.recipe {
        Recipe::Dockerfile {
            context,
            dockerfile,
            args,
            target,
            secrets,
            ..
        } => {
            let mut map = BTreeMap::new();
            for (reference, dep) in &g.factory_bases[name] {
                map.insert(reference.clone(), dep_names[dep].clone());
            }
            for reference in &g.external[name] {
                if let (Some(d), Ok(parsed)) =
                    (r.inputs.bases.get(reference), Reference::parse(reference))
                {
                    if parsed.digest.is_none() {
                        let mut pinned = parsed.clone();
                        pinned.tag = None;
                        pinned.digest = Some(d.clone());
                        map.insert(reference.clone(), pinned.to_string());
                    }
                }
            }
            let source = FactorySource {
                map,
                inner: RegistrySource {
                    store,
                    client,
                    log: &|l: &str| log.line(name, l),
                },
            };
            let bopts = BuildOptions {
                dockerfile: dockerfile.clone(),
                context: context.clone(),
                build_args: args.clone(),
                target: target.clone(),
                tags: tags.clone(),
                no_cache: false,
                secrets: secrets.clone(),
                source_date_epoch: opts.source_date_epoch,
                compression: opts.compression,
                kiln_exe: opts.kiln_exe.clone(),
                hidden: crate::lock::hidden_paths(factory),
                platforms: image.platforms.clone(),
            };
            kiln_build::build(store, &source, &bopts, &mut progress).map_err(|e| e.to_string())
        }
        Recipe::Mmdebstrap(m) => {
            crate::bootstrap::bootstrap(store, m, &image.platforms, &tags, opts, &mut progress)
        }
        Recipe::Vm(_) => unreachable!("VM images are baked above"),
    };
    let built = match built {
        Ok(b) => b,
        Err(e) => {
            log.line(name, &format!("build failed: {e}"));
            return finish(r, Outcome::Failed { error: e });
        }
    };
    r.digest = Some(built.manifest_digest.clone());
    log.line(
        name,
        &format!(
            "built {store_name} {} ({} steps run, {} cached)",
            built.manifest_digest, built.steps_run, built.steps_cached
        ),
    );

    // every platform's image is tested (foreign ones under QEMU)
    let platforms: Vec<Option<&Platform>> = if image.platforms.is_empty() {
        vec![None]
    } else {
        image.platforms.iter().map(Some).collect()
    };
    for platform in platforms {
        let on = platform.map(|p| format!(" on {p}")).unwrap_or_default();
        for (i, test) in image.tests.iter().enumerate() {
            let ropts = RunOptions {
                command: test.clone(),
                kiln_exe: opts.kiln_exe.clone(),
                network_none: false,
                capture: true,
                platform: platform.cloned(),
            };
            let shown = test_text(test);
            let mut out = Prefixed { image: name, log };
            let code = match kiln_build::run_image(store, &store_name, &ropts, &mut out) {
                Ok(0) => {
                    r.tests_passed += 1;
                    log.line(name, &format!("test {} passed{on}: {shown}", i + 1));
                    continue;
                }
                Ok(code) => {
                    log.line(
                        name,
                        &format!("test {} FAILED{on} with exit code {code}: {shown}", i + 1),
                    );
                    code
                }
                Err(e) => {
                    log.line(name, &format!("test {} could not run{on}: {e}", i + 1));
                    -1
                }
            };
            let _ = store.untag(&store_name);
            return finish(
                r,
                Outcome::TestFailed {
                    test: format!("{shown}{on}"),
                    exit_code: code,
                },
            );
        }
    }
    if let Err(e) = tag_moving(store, name, &store_name, &image.tags) {
        return finish(r, Outcome::PublishFailed { error: e });
    }
    if opts.no_publish {
        return finish(r, Outcome::Built);
    }
    let digest = built.manifest_digest.clone();
    let moving: Vec<String> = image.tags.clone();
    let published = publish_each(&mut r, name, log, &image.publish, |target| match target {
        Publish::Registry(repo) => {
            let dest = Reference::parse(&format!("{repo}:{version}"))
                .map_err(|e| format!("{repo}: {e}"))?;
            transfer::push(
                client,
                store,
                &store_name,
                &dest,
                &moving,
                false,
                &|l: &str| log.line(name, l),
            )
            .map(|p| format!("docker://{repo}:{version}@{}", p.digest))
            .map_err(|e| format!("pushing to {repo}: {e}"))
        }
        Publish::OciArchive(path) => write_archive(store, &store_name, path)
            .map(|()| format!("oci-archive:{}", path.display())),
        Publish::Store => Ok(format!("store:{store_name}")),
        Publish::Dir(d) => Err(format!(
            "{}: an image is not published to a directory",
            d.display()
        )),
    });
    if let Err(outcome) = published {
        return finish(r, outcome);
    }
    let mut all_tags = vec![version.clone()];
    all_tags.extend(moving);
    let locked = Locked {
        version: version.clone(),
        digest,
        platforms: if built.platforms.len() > 1 {
            built.platforms.iter().cloned().collect()
        } else {
            BTreeMap::new()
        },
        tags: all_tags,
        published: r.published.clone(),
        baked_at: started.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        inputs: r.inputs.clone(),
        files: BTreeMap::new(),
    };
    match record(locks, name, locked) {
        Ok(()) => finish(r, Outcome::Built),
        Err(error) => finish(r, Outcome::PublishFailed { error }),
    }
}

/// Publishes to each target in turn (`one` returns how the lock names the
/// result); the first failure is the outcome.
fn publish_each(
    r: &mut ImageResult,
    name: &str,
    log: Log<'_>,
    targets: &[Publish],
    mut one: impl FnMut(&Publish) -> Result<String, String>,
) -> Result<(), Outcome> {
    for target in targets {
        match one(target) {
            Ok(p) => {
                log.line(name, &format!("published {p}"));
                r.published.push(p);
            }
            Err(error) => {
                log.line(name, &format!("publishing failed: {error}"));
                return Err(Outcome::PublishFailed { error });
            }
        }
    }
    Ok(())
}

/// Writes `name`'s new lock entry (its lock file, atomically).
fn record(locks: &Mutex<Locks>, name: &str, locked: Locked) -> Result<(), String> {
    let mut locks = locks.lock().expect("locks");
    locks.set(name, locked);
    locks.write_for(name).map_err(|e| e.to_string())
}

/// Points NAME:TAG at the image NAME:VERSION in the store.
fn tag_moving(store: &Store, name: &str, store_name: &str, tags: &[String]) -> Result<(), String> {
    for t in tags {
        store
            .tag_as(store_name, &format!("{name}:{t}"))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

pub(crate) fn test_text(argv: &[String]) -> String {
    match argv {
        [sh, c, script] if sh == "/bin/sh" && c == "-c" => script.clone(),
        _ => serde_json::to_string(argv).unwrap_or_default(),
    }
}

/// An up-to-date factory image another image is built on: in the store
/// under NAME:VERSION, or pulled from where it was published.
fn ensure_local(
    store: &Store,
    client: &Client,
    locks: &Mutex<Locks>,
    dep: &str,
    store_ref: &str,
    log: Log<'_>,
) -> Result<(), String> {
    let locked = locks.lock().expect("locks").get(dep).cloned();
    let Some(locked) = locked else { return Ok(()) };
    // every platform it was built for must be here, not just its name
    let whole = store
        .lookup(store_ref)
        .is_ok_and(|(_, d)| d.digest == locked.digest)
        && store
            .images_of(store_ref)
            .is_ok_and(|imgs| imgs.len() >= locked.platforms.len().max(1));
    if whole {
        return Ok(());
    }
    for p in &locked.published {
        let Some(rest) = p.strip_prefix("docker://") else {
            continue;
        };
        let repo = rest.split('@').next().unwrap_or(rest);
        let repo = repo.rsplit_once(':').map_or(repo, |(r, _)| r);
        let Ok(r) = Reference::parse(&format!("{repo}@{}", locked.digest)) else {
            continue;
        };
        log.line(dep, &format!("fetching {r} (not in the store)"));
        let mut platforms: Vec<Platform> = locked
            .platforms
            .keys()
            .filter_map(|p| Platform::parse(p).ok())
            .collect();
        if platforms.is_empty() {
            platforms.push(Platform::host());
        }
        let mut pulled_name = None;
        for platform in &platforms {
            let pulled = transfer::pull(client, store, &r, platform, &|l: &str| log.line(dep, l))
                .map_err(|e| format!("fetching {dep} ({platform}) from {r}: {e}"))?;
            pulled_name = Some(pulled.name);
        }
        if let Some(n) = pulled_name {
            store.tag_as(&n, store_ref).map_err(|e| e.to_string())?;
        }
        return Ok(());
    }
    Err(format!("{dep} {} is in neither the store nor a registry it was published to; run `kiln bake --force {dep}`", locked.digest))
}

/// Bases for a factory build: references that name factory images (or
/// pinned registry bases) map to store names; the rest as usual.
struct FactorySource<'a> {
    map: BTreeMap<String, String>,
    inner: RegistrySource<'a>,
}

impl ImageSource for FactorySource<'_> {
    fn resolve(
        &self,
        reference: &str,
        platform: &Platform,
    ) -> Result<kiln_build::BaseImage, kiln_build::SourceError> {
        match self.map.get(reference) {
            Some(mapped) => {
                let mut img = self.inner.resolve(mapped, platform)?;
                img.reference = reference.to_string();
                Ok(img)
            }
            None => self.inner.resolve(reference, platform),
        }
    }
}

fn write_archive(store: &Store, name: &str, path: &Path) -> Result<(), String> {
    let export = kiln_build::export::Export::of(store, name).map_err(|e| e.to_string())?;
    kiln_build::export::save_archive_file(store, &export, &[], false, path)
        .map_err(|e| e.to_string())
}

/// Engine progress as bake log lines of one image.
struct Prefixed<'a> {
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
