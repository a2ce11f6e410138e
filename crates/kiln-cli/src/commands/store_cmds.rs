//! The store commands: run, images, inspect, rmi, fsck, save.

use std::path::Path;

use anyhow::Context as _;
use kiln_build::export;
use kiln_build::{run_image, RunOptions};
use kiln_store::{Image, Store};
use serde_json::json;

use crate::args::{ImagesArgs, InspectArgs, RmiArgs, RunArgs, SaveArgs};
use crate::exit::{Exit, Failure};
use crate::printer::{Printer, StepPrinter};

pub fn run(args: RunArgs, store: &Store, printer: &Printer) -> anyhow::Result<Exit> {
    let network_none = match args.network.as_str() {
        "host" | "default" => false,
        "none" => true,
        other => {
            return Err(Failure::usage(format!(
                "--network {other:?}: use host or none"
            )))
        }
    };
    let opts = RunOptions {
        command: args.command,
        kiln_exe: std::env::current_exe().context("finding the kiln binary")?,
        network_none,
        capture: false,
    };
    let mut out = StepPrinter::passthrough(printer);
    let code = run_image(store, &args.image, &opts, &mut out)
        .with_context(|| format!("running {}", args.image))?;
    std::process::exit(code)
}

pub fn images(args: ImagesArgs, store: &Store, printer: &Printer) -> anyhow::Result<Exit> {
    let list = store.list()?;
    if args.json {
        let items: Vec<_> = list
            .iter()
            .map(|(n, d)| json!({"name": n, "digest": d.digest, "size": d.size}))
            .collect();
        printer.data(&serde_json::to_string_pretty(&items)?);
        return Ok(Exit::Success);
    }
    let mut out = format!("{:<40} {}\n", "NAME", "DIGEST");
    for (name, desc) in list {
        out.push_str(&format!("{name:<40} {}\n", desc.digest));
    }
    printer.data(&out);
    Ok(Exit::Success)
}

pub fn inspect(args: InspectArgs, store: &Store, printer: &Printer) -> anyhow::Result<Exit> {
    let img = store.image(&args.image)?;
    let v = json!({"name": img.name, "digest": img.manifest_digest.to_string(), "manifest": img.manifest, "config": img.config});
    printer.data(&serde_json::to_string_pretty(&v)?);
    Ok(Exit::Success)
}

pub fn rmi(args: RmiArgs, store: &Store, printer: &Printer) -> anyhow::Result<Exit> {
    for name in &args.images {
        store.untag(name)?;
        printer.error(&format!("removed {name}"));
    }
    Ok(Exit::Success)
}

pub fn fsck(store: &Store, printer: &Printer) -> anyhow::Result<Exit> {
    let problems = store.fsck()?;
    for p in &problems {
        printer.data(&p.to_string());
    }
    if problems.is_empty() {
        printer.error(&format!("{}: clean", store.root().display()));
        return Ok(Exit::Success);
    }
    printer.error(&format!(
        "{}: {} problem(s)",
        store.root().display(),
        problems.len()
    ));
    Ok(Exit::Failure)
}

pub fn prune(store: &Store, printer: &Printer) -> anyhow::Result<Exit> {
    let r = store.prune()?;
    printer.error(&format!(
        "removed {} blob(s) ({} bytes), {} snapshot(s), {} cache entr(ies)",
        r.blobs, r.bytes, r.snapshots, r.cache_entries
    ));
    Ok(Exit::Success)
}

pub fn save(args: SaveArgs, store: &Store, printer: &Printer) -> anyhow::Result<Exit> {
    let img = store.image(&args.image)?;
    let kind = match args.format.as_str() {
        "oci" | "docker" => args.format.clone(),
        other => {
            return Err(Failure::usage(format!(
                "--format {other:?}: use oci or docker"
            )))
        }
    };
    export(
        store,
        &img,
        std::slice::from_ref(&img.name),
        &kind,
        &args.output,
    )?;
    printer.error(&format!("wrote {} to {}", img.name, args.output.display()));
    Ok(Exit::Success)
}

/// Writes `img` as `kind` to `dest`, atomically for archive files.
pub fn export(
    store: &Store,
    img: &Image,
    names: &[String],
    kind: &str,
    dest: &Path,
) -> anyhow::Result<()> {
    match kind {
        "oci" | "docker" => export::save_archive_file(store, img, names, kind == "docker", dest)?,
        "oci-layout" => export::save_layout_dir(store, img, dest)?,
        "local" => export::save_rootfs(store, img, dest)?,
        other => anyhow::bail!("unknown output type {other}"),
    }
    Ok(())
}
