//! `kiln rollout`, `kiln rollback`, `kiln services`, `kiln pin`:
//! kiln-rollout driven from the factory's definition, its lock and its
//! bake history.

use std::path::PathBuf;

use kiln_definition::{Factory, Service};
use kiln_factory::history::History;
use kiln_factory::plan::Locks;
use kiln_rollout::deploy::Deploy;
use kiln_rollout::pin::Pinned;
use kiln_rollout::rollout::{Report, RolloutError};
use kiln_store::Store;

use crate::args::{PinArgs, RollbackArgs, RolloutArgs, ServicesArgs};
use crate::exit::{Exit, Failure};
use crate::printer::Printer;

fn open(files: &[PathBuf]) -> anyhow::Result<(Factory, Locks)> {
    let (factory, _, locks) = super::factory::open_factory(files)?;
    Ok((factory, locks))
}

fn history(store: &Store) -> anyhow::Result<History> {
    History::open(&store.root().join("history.db")).map_err(|e| Failure::failed(e.to_string()))
}

fn service<'a>(factory: &'a Factory, name: &str) -> anyhow::Result<&'a Service> {
    factory.services.get(name).ok_or_else(|| {
        let known: Vec<&str> = factory.services.keys().map(String::as_str).collect();
        Failure::usage(format!(
            "no service {name:?} in the factory (services: {})",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        ))
    })
}

/// Runs `f` on service `name` of the factory `files` name, with a
/// `Deploy` of it, and reports how it went.
fn deploy(
    files: &[PathBuf],
    name: &str,
    store: &Store,
    printer: &Printer,
    f: impl FnOnce(&Deploy<'_>, &Service) -> Result<Report, RolloutError>,
) -> anyhow::Result<Exit> {
    let (factory, locks) = open(files)?;
    let s = service(&factory, name)?;
    let history = history(store)?;
    let say = |l: &str| printer.error(l);
    let d = Deploy {
        factory: &factory,
        locks: &locks,
        history: &history,
        store_root: store.root(),
        say: &say,
    };
    report(&s.name, f(&d, s), printer)
}

pub fn rollout(args: RolloutArgs, store: &Store, printer: &Printer) -> anyhow::Result<Exit> {
    let to = args.to.clone();
    deploy(&args.files, &args.service, store, printer, |d, s| {
        d.rollout(s, to.as_deref())
    })
}

pub fn rollback(args: RollbackArgs, store: &Store, printer: &Printer) -> anyhow::Result<Exit> {
    deploy(&args.files, &args.service, store, printer, |d, s| {
        d.rollback(s)
    })
}

/// Prints how a rollout went (stdout), or fails with why it did not.
pub fn report(
    name: &str,
    r: Result<Report, RolloutError>,
    printer: &Printer,
) -> anyhow::Result<Exit> {
    match r.map_err(|e| Failure::failed(e.to_string()))? {
        Report::AlreadyLive(live) => {
            printer.data(&format!(
                "{name} {} is live ({})",
                live.version, live.digest
            ));
        }
        Report::Switched {
            live,
            replaced,
            to_traffic,
        } => {
            printer.data(&format!(
                "{name} {} is live ({}); traffic on it {:.1} s after the start{}",
                live.version,
                live.digest,
                to_traffic.as_secs_f64(),
                replaced.map_or(String::new(), |b| format!(
                    "; {} kept for rollback",
                    b.version
                ))
            ));
        }
    }
    Ok(Exit::Success)
}

pub fn services(args: ServicesArgs, store: &Store, printer: &Printer) -> anyhow::Result<Exit> {
    let (factory, _) = open(&args.files)?;
    let state =
        kiln_rollout::deploy::state(store.root()).map_err(|e| Failure::failed(e.to_string()))?;
    let mut rows = Vec::new();
    for s in factory.services.values() {
        let rec = state
            .record(&s.name)
            .map_err(|e| Failure::failed(e.to_string()))?;
        let health =
            rec.live.as_ref().map(
                |l| match kiln_rollout::health::probe(&s.health.check, l.addr) {
                    Ok(()) => "healthy".to_string(),
                    Err(e) => format!("unhealthy: {e}"),
                },
            );
        rows.push(serde_json::json!({
            "service": s.name,
            "runs": s.runs,
            "driver": s.driver,
            "live": rec.live,
            "since": rec.since,
            "standby": rec.standby,
            "standby_until": rec.standby_until,
            "health": health,
        }));
    }
    if args.json {
        printer.data(&serde_json::to_string_pretty(&rows)?);
        return Ok(Exit::Success);
    }
    printer.data("SERVICE  RUNS  LIVE  SINCE  STANDBY  HEALTH");
    for r in &rows {
        let v = |k: &str| r[k]["version"].as_str().unwrap_or("-").to_string();
        printer.data(&format!(
            "{}  {}  {}  {}  {}  {}",
            r["service"].as_str().unwrap_or(""),
            r["runs"].as_str().unwrap_or(""),
            v("live"),
            r["since"].as_str().unwrap_or("-"),
            v("standby"),
            r["health"].as_str().unwrap_or("-"),
        ));
    }
    Ok(Exit::Success)
}

/// The lock's images as manifests should name them: each published to a
/// registry, by repository.
fn pins(locks: &Locks, factory: &Factory) -> Vec<Pinned> {
    factory
        .images
        .keys()
        .filter_map(|name| locks.get(name))
        .flat_map(|l| {
            l.published.iter().filter_map(move |p| {
                let r = p.strip_prefix("docker://")?;
                Some(Pinned {
                    repository: kiln_rollout::pin::repository(r).to_string(),
                    version: l.version.clone(),
                    digest: l.digest.clone(),
                })
            })
        })
        .collect()
}

pub fn pin(args: PinArgs, printer: &Printer) -> anyhow::Result<Exit> {
    let (factory, locks) = open(&args.files)?;
    let pins = pins(&locks, &factory);
    let mut behind = 0;
    for m in &args.manifests {
        let text = std::fs::read_to_string(m)
            .map_err(|e| Failure::failed(format!("reading {}: {e}", m.display())))?;
        let (out, changes) = kiln_rollout::pin::pin(&text, &pins)
            .map_err(|e| Failure::failed(format!("{}: {e}", m.display())))?;
        for c in &changes {
            let what = if c.from.is_empty() {
                format!("adds {}", c.to)
            } else {
                format!("{} → {}", c.from, c.to)
            };
            printer.data(&format!("{}:{}: {what}", m.display(), c.line));
        }
        behind += changes.len();
        if !args.check && !changes.is_empty() {
            // the new text beside the file, then renamed over it
            let tmp = m.with_extension("kiln-pin.tmp");
            std::fs::write(&tmp, out)
                .and_then(|()| std::fs::rename(&tmp, m))
                .map_err(|e| Failure::failed(format!("writing {}: {e}", m.display())))?;
        }
    }
    if args.check && behind > 0 {
        printer.error(&format!(
            "{behind} image reference{} behind kiln.lock: run `kiln pin` to update",
            if behind == 1 { " is" } else { "s are" }
        ));
        return Ok(Exit::Failure);
    }
    Ok(Exit::Success)
}
