//! Builds a factory's view ([`FactoryView`]) from a plan, its locks and
//! the history: what the API, the pages and the metrics show.

use chrono::{DateTime, Utc};
use kiln_definition::Factory;
use kiln_factory::history::History;
use kiln_factory::plan::{Locks, Plan, PlanOptions, Reason};
use kiln_store::Store;

use crate::board::{status, FactoryView, ImageView, LastBake};

/// What a view is made of.
pub struct Sources<'a> {
    pub factory: &'a Factory,
    pub plan: &'a Plan,
    pub locks: &'a Locks,
    pub opts: &'a PlanOptions,
    pub history: &'a History,
    pub store: &'a Store,
}

/// The view of a factory just planned.
pub fn build(id: &str, dir: &str, src: &Sources<'_>, plan_seconds: f64) -> FactoryView {
    let now = src.opts.now;
    let images: Vec<ImageView> = src
        .plan
        .images
        .iter()
        .map(|p| image(src, &p.name, now))
        .collect();
    FactoryView {
        id: id.to_string(),
        dir: dir.to_string(),
        planned_at: Some(now),
        plan_seconds: Some(plan_seconds),
        next_tick: images.iter().filter_map(|i| i.next_run).min(),
        error: None,
        warnings: src.plan.warnings.clone(),
        images,
        running: None,
    }
}

fn time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn image(src: &Sources<'_>, name: &str, now: DateTime<Utc>) -> ImageView {
    let planned = src.plan.image(name).expect("planned");
    let def = &src.factory.images[name];
    let locked = src.locks.get(name);
    let baked_at = locked.and_then(|l| time(&l.baked_at));
    let (pending, security) = planned
        .reasons
        .iter()
        .find_map(|r| match r {
            Reason::PackageUpdates {
                count, security, ..
            } => Some((*count, *security)),
            _ => None,
        })
        .unwrap_or((0, 0));
    let file = src.factory.files[def.file].path.clone();
    let recent = src.history.recent(&file, name, 20).unwrap_or_default();
    let last = recent.first().map(|e| LastBake {
        outcome: e.outcome.clone(),
        finished: e.finished.clone(),
        seconds: e.seconds,
        version: e.version.clone(),
        tests_passed: e.tests_passed,
        tests_total: e.tests_total,
        detail: e.detail.clone(),
    });
    let last_success = recent
        .iter()
        .find(|e| matches!(e.outcome.as_str(), "built" | "unchanged"))
        .and_then(|e| time(&e.finished));
    let next_run = def.schedule.as_ref().and_then(|s| {
        let mut last = baked_at?;
        if let Some(c) = src.opts.checked.get(name) {
            last = last.max(*c);
        }
        s.next_after(last)
    });
    let mut view = ImageView {
        name: name.to_string(),
        kind: if src.locks.vms.contains(name) {
            "vm"
        } else {
            "image"
        },
        status: "fresh",
        stale: planned.stale,
        reasons: planned.reasons.clone(),
        version: planned.version.clone(),
        digest: planned.digest.clone(),
        baked_at,
        age_seconds: baked_at.map(|b| (now - b).num_seconds()),
        base_age_seconds: base_age(src, name, now),
        next_run,
        pending_updates: pending,
        security_updates: security,
        depends_on: planned.depends_on.clone(),
        published: locked.map(|l| l.published.clone()).unwrap_or_default(),
        file,
        last,
        last_success,
    };
    view.status = status(&view, false);
    view
}

/// The age of the image's newest base: a factory image since it was baked,
/// a registry image since it was created (read from the store, where its
/// bake pulled it).
fn base_age(src: &Sources<'_>, name: &str, now: DateTime<Utc>) -> Option<i64> {
    let locked = src.locks.get(name)?;
    locked
        .inputs
        .bases
        .values()
        .filter_map(|digest| {
            let of_factory = src
                .factory
                .images
                .keys()
                .filter_map(|n| src.locks.get(n))
                .find(|l| &l.digest == digest || l.platforms.values().any(|d| d == digest));
            let born = match of_factory {
                Some(l) => time(&l.baked_at),
                None => created(src.store, digest),
            }?;
            Some((now - born).num_seconds())
        })
        .min()
}

/// When the image (or the first image of the index) `digest` says it was
/// created, if the store holds it.
fn created(store: &Store, digest: &str) -> Option<DateTime<Utc>> {
    let read = |d: &str| -> Option<serde_json::Value> {
        let d = kiln_store::parse_digest(d).ok()?;
        serde_json::from_slice(&store.read_blob(&d).ok()?).ok()
    };
    let mut doc = read(digest)?;
    if let Some(first) = doc["manifests"].get(0) {
        doc = read(first["digest"].as_str()?)?;
    }
    let config = read(doc["config"]["digest"].as_str()?)?;
    time(config["created"].as_str()?)
}
