//! The factory commands: `kiln plan`, `kiln bake`, `kiln history`.

use std::path::PathBuf;

use anyhow::Context as _;
use kiln_definition::Factory;
use kiln_factory::bake::{self, BakeOptions, Outcome};
use kiln_factory::graph::Graph;
use kiln_factory::history::History;
use kiln_factory::plan::{self, Locks, PlanOptions};
use kiln_factory::probe::Probing;
use kiln_registry::Client;
use kiln_store::Store;

use super::build;

use crate::args::{BakeArgs, FactoryFiles, HistoryArgs, PlanArgs};
use crate::exit::{Exit, Failure};
use crate::printer::{BakePrinter, Printer};

/// The factory files or directories the -f options name, or the current
/// directory.
pub(super) fn factory_paths(files: &[PathBuf]) -> Vec<PathBuf> {
    if files.is_empty() {
        vec![PathBuf::from(".")]
    } else {
        files.to_vec()
    }
}

/// The factory the -f options name (default: the current directory), its
/// graph and its locks. Every problem is an input failure (exit 1).
pub(super) fn open_factory(files: &[PathBuf]) -> anyhow::Result<(Factory, Graph, Locks)> {
    kiln_factory::open(&factory_paths(files)).map_err(|e| Failure::failed(e.to_string()))
}

fn open(files: &FactoryFiles) -> anyhow::Result<(Factory, Graph, Locks)> {
    open_factory(&files.files)
}

/// The store's bake history.
fn open_history(store: &Store) -> anyhow::Result<History> {
    History::open(&store.root().join("history.db")).map_err(|e| Failure::failed(e.to_string()))
}

/// What `kiln plan` and `kiln bake` plan with: the selection and flags, and
/// when each image was last found unchanged.
fn plan_options(
    args: &FactoryFiles,
    store: &Store,
    history: &History,
    factory: &Factory,
    locks: &Locks,
) -> anyhow::Result<PlanOptions> {
    let now = PlanOptions::now(&args.images, factory, locks, history, store.root())
        .map_err(|e| Failure::failed(e.to_string()))?;
    Ok(PlanOptions {
        force: args.force,
        refresh: args.refresh,
        offline: args.offline,
        strict: args.strict,
        ..now
    })
}

pub fn plan(
    args: PlanArgs,
    store: &Store,
    client: &Client,
    printer: &Printer,
) -> anyhow::Result<Exit> {
    let (factory, g, locks) = open(&args.factory)?;
    let history = open_history(store)?;
    let opts = plan_options(&args.factory, store, &history, &factory, &locks)?;
    let plan = plan::plan(&factory, &g, &locks, &Probing::new(store, client), &opts)
        .map_err(|e| Failure::failed(e.to_string()))?;
    for w in &plan.warnings {
        printer.error(&format!("warning: {w}"));
    }
    for n in &plan.notes {
        printer.error(&format!("note: {n}"));
    }
    if args.json {
        printer.data(&serde_json::to_string_pretty(&plan)?);
        return Ok(Exit::Success);
    }
    let width = name_width(plan.images.iter().map(|i| i.name.as_str()));
    for image in &plan.images {
        if image.stale {
            printer.data(&format!(
                "{:width$}  stale       {}",
                image.name,
                plan::describe(&image.reasons)
            ));
        } else {
            printer.data(&format!(
                "{:width$}  up to date  {} {}",
                image.name,
                image.version.as_deref().unwrap_or(""),
                image.digest.as_deref().unwrap_or("")
            ));
        }
        // a multi-platform image: its index digest above, each image here
        for (platform, digest) in &image.platforms {
            printer.data(&format!("{:width$}    {platform:<12} {digest}", ""));
        }
    }
    if plan.waves.is_empty() {
        printer.data("nothing to bake");
    } else {
        for (i, wave) in plan.waves.iter().enumerate() {
            printer.data(&format!("wave {}: {}", i + 1, wave.join(", ")));
        }
    }
    Ok(Exit::Success)
}

pub fn bake(
    args: BakeArgs,
    store: &Store,
    client: &Client,
    printer: &Printer,
) -> anyhow::Result<Exit> {
    let (factory, g, mut locks) = open(&args.factory)?;
    let runner = super::ci::runner(
        &args.runner,
        &args.factory.images,
        &factory,
        &mut locks,
        printer,
    )?;
    let history = open_history(store)?;
    let opts = BakeOptions {
        plan: plan_options(&args.factory, store, &history, &factory, &locks)?,
        dry_run: args.dry_run,
        no_publish: args.no_publish,
        kiln_exe: std::env::current_exe().context("finding the kiln binary")?,
        compression: build::compression(&args.compression)?,
        source_date_epoch: build::source_date_epoch(args.source_date_epoch),
        cancel: None,
        runner,
        cache_from: args.cache_from.clone(),
        cache_to: args.cache_to.clone(),
    };
    let log = BakePrinter::new(printer);
    let summary = bake::bake(
        &factory,
        &g,
        &mut locks,
        store,
        client,
        &Probing::new(store, client),
        &opts,
        Some(&history),
        &log,
    )
    .map_err(|e| Failure::failed(e.to_string()))?;
    if args.json {
        printer.data(&serde_json::to_string_pretty(&summary)?);
    } else {
        print_summary(&summary, args.no_publish, client.downloaded(), printer);
    }
    if let [name] = &args.factory.images[..] {
        super::ci::hand_on(&args.runner, name, &factory, &locks, &summary, printer)?;
    }
    // a runner job rolls nothing out: the lock it stands on is not merged yet
    let rolled_out = opts.runner.is_some()
        || auto_rollouts(&factory, &locks, &history, store, &summary, printer);
    Ok(if summary.all_ok() && rolled_out {
        Exit::Success
    } else {
        Exit::Failure
    })
}

/// The bake's table of images and its one-line count (stderr).
fn print_summary(summary: &bake::Summary, no_publish: bool, downloaded: u64, printer: &Printer) {
    let width = name_width(summary.images.iter().map(|i| i.name.as_str()));
    for i in &summary.images {
        let what = match &i.outcome {
            Outcome::Built if no_publish => "built (not published)".to_string(),
            Outcome::Built => "built".to_string(),
            Outcome::Reused => "up to date".to_string(),
            Outcome::Unchanged => "unchanged (rebuilt the same; nothing published)".to_string(),
            Outcome::WouldBuild => format!("would build: {}", plan::describe(&i.reasons)),
            Outcome::Skipped { because } => format!("skipped: {because}"),
            Outcome::Failed { error } => {
                format!("FAILED: {}", error.lines().next().unwrap_or(""))
            }
            Outcome::TestFailed { test, exit_code } => {
                format!("TEST FAILED ({exit_code}): {test}")
            }
            Outcome::PublishFailed { error } => format!("PUBLISH FAILED: {error}"),
            Outcome::Cancelled => "cancelled".to_string(),
        };
        let mut line = format!(
            "{:width$}  {:<14} {:<72} {what}",
            i.name,
            i.version.as_deref().unwrap_or("-"),
            i.digest.as_deref().unwrap_or("-")
        );
        if i.started.is_some() && i.outcome != Outcome::Unchanged {
            line.push_str(&format!(
                " in {:.1}s, {} tests passed, published to {}",
                i.seconds,
                i.tests_passed,
                i.published.len()
            ));
        }
        printer.data(&line);
    }
    let count = |f: fn(&Outcome) -> bool| summary.images.iter().filter(|i| f(&i.outcome)).count();
    printer.error(&format!(
        "bake: {} built, {} unchanged, {} up to date, {} skipped, {} failed; {} bytes downloaded",
        count(|o| matches!(o, Outcome::Built)),
        count(|o| matches!(o, Outcome::Unchanged)),
        count(|o| matches!(o, Outcome::Reused)),
        count(|o| matches!(o, Outcome::Skipped { .. })),
        count(|o| matches!(
            o,
            Outcome::Failed { .. } | Outcome::TestFailed { .. } | Outcome::PublishFailed { .. }
        )),
        downloaded,
    ));
}

/// Rolls out the services with `auto = true` whose image this bake
/// published; whether every one of them went well.
fn auto_rollouts(
    factory: &Factory,
    locks: &Locks,
    history: &History,
    store: &Store,
    summary: &kiln_factory::baked::Summary,
    printer: &Printer,
) -> bool {
    let say = |l: &str| printer.error(l);
    let d = kiln_rollout::deploy::Deploy {
        factory,
        locks,
        history,
        store_root: store.root(),
        say: &say,
    };
    let mut ok = true;
    for (name, r) in d.auto(summary) {
        if let Err(e) = super::rollout::report(&name, r, printer) {
            printer.error(&format!("error: {e}"));
            ok = false;
        }
    }
    ok
}

pub fn history(args: HistoryArgs, store: &Store, printer: &Printer) -> anyhow::Result<Exit> {
    let history = open_history(store)?;
    let entries = history
        .entries(args.image.as_deref())
        .map_err(|e| Failure::failed(e.to_string()))?;
    if args.json {
        printer.data(&serde_json::to_string_pretty(&entries)?);
        return Ok(Exit::Success);
    }
    if entries.is_empty() {
        printer.error("no bakes recorded");
    }
    for e in &entries {
        let detail = if e.detail.is_empty() {
            String::new()
        } else {
            format!(" ({})", e.detail)
        };
        printer.data(&format!(
            "{}  {}  {}{detail}  {} {}  {:.1}s  tests {}/{}  published {}  because {}",
            e.started,
            e.image,
            e.outcome,
            e.version.as_deref().unwrap_or("-"),
            e.digest.as_deref().unwrap_or("-"),
            e.seconds,
            e.tests_passed,
            e.tests_total,
            if e.published.is_empty() {
                "nowhere".to_string()
            } else {
                e.published.join(", ")
            },
            e.reasons.join("; ")
        ));
    }
    Ok(Exit::Success)
}

/// The width of the image name column.
fn name_width<'a>(names: impl Iterator<Item = &'a str>) -> usize {
    names.map(str::len).max().unwrap_or(0).max(5)
}
