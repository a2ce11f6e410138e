//! The steps before a build: the factory images it stands on, its new
//! version, and those images in the store.

use std::ops::ControlFlow::{Break, Continue};

use kiln_dockerfile::Platform;
use kiln_registry::Reference;

use super::{Flow, Job};
use crate::baked::Outcome;
use crate::plan::{self, Reason};
use crate::transfer;

/// The factory images it is built on must have been baked (or be up to
/// date): their versions and digests become its bases.
pub(super) fn dependencies(job: &mut Job<'_>) -> Flow {
    let results = job.bake.results.lock().expect("results");
    for dep in &job.bake.g.deps[job.name] {
        let because = match results.get(dep) {
            Some(d) if d.outcome.ok() => {
                let (Some(v), Some(digest)) = (&d.version, &d.digest) else {
                    return skipped(format!("{dep} has no built version"));
                };
                job.deps.insert(dep.clone(), format!("{dep}:{v}"));
                job.result.inputs.bases.insert(dep.clone(), digest.clone());
                continue;
            }
            Some(d) => match &d.outcome {
                Outcome::Skipped { because } => format!("{dep} was skipped ({because})"),
                _ => format!("{dep} failed"),
            },
            None => format!("{dep} was not baked"),
        };
        return skipped(because);
    }
    drop(results);
    upstream_unchanged(job)
}

/// An image stale only because images it is built on were going to be
/// rebuilt stays as it is when they all came out unchanged.
fn upstream_unchanged(job: &mut Job<'_>) -> Flow {
    let results = job.bake.results.lock().expect("results");
    let unchanged = |dep: &str| {
        results
            .get(dep)
            .is_some_and(|d| matches!(d.outcome, Outcome::Unchanged | Outcome::Reused))
    };
    let only_upstream = !job.result.reasons.is_empty()
        && job.result.reasons.iter().all(|r| match r {
            Reason::UpstreamWillRebuild { image } => unchanged(image),
            _ => false,
        });
    drop(results);
    let locked = job.bake.locks.lock().expect("locks").get(job.name).cloned();
    let (true, Some(locked)) = (only_upstream, locked) else {
        return Continue(());
    };
    job.say("up to date: what it is built on was rebuilt unchanged");
    job.result.version = Some(locked.version);
    job.result.digest = Some(locked.digest);
    Break(Outcome::Reused)
}

fn skipped(because: String) -> Flow {
    Break(Outcome::Skipped { because })
}

/// Its new version, from its scheme and its previous lock entry.
pub(super) fn version(job: &mut Job<'_>) -> Flow {
    let previous = job.bake.locks.lock().expect("locks").get(job.name).cloned();
    let factory = job.bake.factory;
    match crate::version::version(factory, job.image, previous.as_ref(), job.started) {
        Ok(v) => job.version = v,
        Err(error) => return Break(Outcome::Failed { error }),
    }
    job.result.version = Some(job.version.clone());
    let planned = job.bake.plan.image(job.name).expect("planned");
    job.say(&format!(
        "building {} ({})",
        job.store_name(),
        plan::describe(&planned.reasons)
    ));
    Continue(())
}

/// Every factory image it is built on is in the store: under its
/// `NAME:VERSION`, or pulled from where it was published.
pub(super) fn bases(job: &mut Job<'_>) -> Flow {
    for (dep, store_ref) in &job.deps {
        if let Err(error) = ensure_local(job, dep, store_ref) {
            return Break(Outcome::Failed { error });
        }
    }
    Continue(())
}

fn ensure_local(job: &Job<'_>, dep: &str, store_ref: &str) -> Result<(), String> {
    let (store, log) = (job.bake.store, job.bake.log);
    let locked = job.bake.locks.lock().expect("locks").get(dep).cloned();
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
    let Some(r) = locked.published.iter().find_map(|p| {
        let mut r = Reference::parse(p.strip_prefix("docker://")?).ok()?;
        r.tag = None;
        r.digest = Some(locked.digest.clone());
        Some(r)
    }) else {
        return Err(format!("{dep} {} is in neither the store nor a registry it was published to; run `kiln bake --force {dep}`", locked.digest));
    };
    log.line(dep, &format!("fetching {r} (not in the store)"));
    let mut platforms: Vec<Platform> = locked
        .platforms
        .keys()
        .filter_map(|p| Platform::parse(p).ok())
        .collect();
    if job.bake.opts.runner.is_some() {
        // a runner job needs the platforms it builds for, and the
        // machine's for a stage built on $BUILDPLATFORM
        let (host, own) = (Platform::host(), job.platforms());
        platforms.retain(|p| p == &host || own.contains(p));
    }
    if platforms.is_empty() {
        platforms.push(Platform::host());
    }
    let mut pulled_name = None;
    for platform in &platforms {
        let pulled = transfer::pull(job.bake.client, store, &r, platform, &|l: &str| {
            log.line(dep, l)
        })
        .map_err(|e| format!("fetching {dep} ({platform}) from {r}: {e}"))?;
        pulled_name = Some(pulled.name);
    }
    if let Some(n) = pulled_name {
        store.tag_as(&n, store_ref).map_err(|e| e.to_string())?;
    }
    Ok(())
}
