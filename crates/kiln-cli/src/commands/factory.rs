//! `kiln plan` (and, with the factory's growth, `kiln bake`, `kiln history`).

use std::path::PathBuf;

use kiln_definition::Factory;
use kiln_factory::graph::{self, Graph};
use kiln_factory::plan::{self, Locks, PlanOptions, RegistryResolver};
use kiln_registry::Client;

use crate::args::{FactoryFiles, PlanArgs};
use crate::exit::{Exit, Failure};
use crate::printer::Printer;

/// The factory the -f options name (default: the current directory), its
/// graph and its locks. Every problem is an input failure (exit 1).
fn open(files: &FactoryFiles) -> anyhow::Result<(Factory, Graph, Locks)> {
    let paths = if files.files.is_empty() {
        vec![PathBuf::from(".")]
    } else {
        files.files.clone()
    };
    let factory = kiln_definition::load(&paths).map_err(|e| Failure::failed(e.to_string()))?;
    let g = graph::graph(&factory).map_err(|e| Failure::failed(e.to_string()))?;
    let locks = Locks::read(&factory).map_err(|e| Failure::failed(e.to_string()))?;
    Ok((factory, g, locks))
}

pub fn plan(args: PlanArgs, client: &Client, printer: &Printer) -> anyhow::Result<Exit> {
    let (factory, g, locks) = open(&args.factory)?;
    let opts = PlanOptions {
        selected: args.images,
        force: args.force,
        now: chrono::Utc::now(),
    };
    let plan = plan::plan(&factory, &g, &locks, &RegistryResolver { client }, &opts)
        .map_err(|e| Failure::failed(e.to_string()))?;
    if args.json {
        printer.data(&serde_json::to_string_pretty(&plan)?);
        return Ok(Exit::Success);
    }
    let width = plan
        .images
        .iter()
        .map(|i| i.name.len())
        .max()
        .unwrap_or(5)
        .max(5);
    for image in &plan.images {
        if image.stale {
            let why: Vec<String> = image.reasons.iter().map(ToString::to_string).collect();
            printer.data(&format!(
                "{:width$}  stale       {}",
                image.name,
                why.join("; ")
            ));
        } else {
            printer.data(&format!(
                "{:width$}  up to date  {} {}",
                image.name,
                image.version.as_deref().unwrap_or(""),
                image.digest.as_deref().unwrap_or("")
            ));
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
