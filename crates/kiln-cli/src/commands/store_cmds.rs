//! The store commands: run, images, inspect, rmi, fsck, prune, save.

use std::path::Path;

use anyhow::Context as _;
use kiln_build::export;
use kiln_build::{run_image, RunOptions};
use kiln_store::{Image, Store};
use serde_json::json;

use crate::args::{FsckArgs, ImagesArgs, InspectArgs, RmiArgs, RunArgs, SaveArgs};
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
        platform: super::platform(args.platform.as_deref())?,
    };
    let mut out = StepPrinter::passthrough(printer);
    let code = run_image(store, &args.image, &opts, &mut out)
        .with_context(|| format!("running {}", args.image))?;
    std::process::exit(code)
}

pub fn images(args: ImagesArgs, store: &Store, printer: &Printer) -> anyhow::Result<Exit> {
    // signatures and attestations are not images (kiln verify reads them)
    let list: Vec<_> = store
        .list()?
        .into_iter()
        .filter(|(n, _)| !kiln_attest::cosign::is_attachment(n))
        .collect();
    if args.json {
        let items: Vec<_> = list
            .iter()
            .map(|(n, d)| json!({"name": n, "digest": d.digest, "size": d.size, "platforms": platforms(store, n)}))
            .collect();
        printer.data(&serde_json::to_string_pretty(&items)?);
        return Ok(Exit::Success);
    }
    let mut out = format!("{:<40} {:<72} {}\n", "NAME", "DIGEST", "PLATFORMS");
    for (name, desc) in list {
        let platforms = platforms(store, &name).join(",");
        out.push_str(&format!("{name:<40} {:<72} {platforms}\n", desc.digest));
    }
    printer.data(&out);
    Ok(Exit::Success)
}

/// The platforms of the images a name holds (those in the store).
fn platforms(store: &Store, name: &str) -> Vec<String> {
    store
        .images_of(name)
        .map(|imgs| {
            imgs.iter()
                .map(|i| i.config.platform().to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn image_json(img: &Image) -> serde_json::Value {
    json!({"name": img.name, "digest": img.manifest_digest.to_string(), "platform": img.config.platform().to_string(), "manifest": img.manifest, "config": img.config})
}

/// One image as JSON; a multi-platform image as its index with each image.
pub fn inspect(args: InspectArgs, store: &Store, printer: &Printer) -> anyhow::Result<Exit> {
    let v = match (store.image_index(&args.image)?, &args.platform) {
        (Some((desc, index)), None) => {
            let images: Vec<_> = store
                .images_of(&args.image)?
                .iter()
                .map(image_json)
                .collect();
            json!({"name": store.lookup(&args.image)?.0, "digest": desc.digest, "mediaType": desc.media_type, "index": index, "images": images})
        }
        _ => image_json(&super::image_for(
            store,
            &args.image,
            args.platform.as_deref(),
        )?),
    };
    printer.data(&serde_json::to_string_pretty(&v)?);
    Ok(Exit::Success)
}

/// Unnames each image; a name that cannot be removed (no such image) is
/// reported and the others are still removed, as `docker rmi` does; exit 1
/// when any failed.
pub fn rmi(args: RmiArgs, store: &Store, printer: &Printer) -> anyhow::Result<Exit> {
    let mut failed = 0;
    for name in &args.images {
        match store.untag(name) {
            Ok(()) => printer.error(&format!("removed {name}")),
            Err(e @ (kiln_store::Error::NoSuchImage(_) | kiln_store::Error::Spec(_))) => {
                failed += 1;
                printer.error(&format!("error: {e}"));
            }
            Err(e) => return Err(anyhow::Error::new(e).context(format!("removing {name}"))),
        }
    }
    Ok(if failed == 0 {
        Exit::Success
    } else {
        Exit::Failure
    })
}

pub fn fsck(args: FsckArgs, store: &Store, printer: &Printer) -> anyhow::Result<Exit> {
    let problems = store.fsck_with(kiln_store::FsckOptions {
        full: args.full,
        repair: args.repair,
    })?;
    for p in &problems {
        printer.data(&p.to_string());
    }
    if problems.iter().all(kiln_store::Problem::repaired) && !problems.is_empty() {
        printer.error(&format!(
            "{}: {} broken snapshot(s) removed; clean",
            store.root().display(),
            problems.len()
        ));
        return Ok(Exit::Success);
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
    let kind = match args.format.as_str() {
        "oci" | "docker" => args.format.clone(),
        other => {
            return Err(Failure::usage(format!(
                "--format {other:?}: use oci or docker"
            )))
        }
    };
    // an OCI archive keeps a multi-platform image whole; --platform or a
    // docker archive takes one image of it
    let mut what = if kind == "oci" && args.platform.is_none() {
        export::Export::of(store, &args.image)?
    } else {
        let img = super::image_for(store, &args.image, args.platform.as_deref())?;
        export::Export::image(&img)
    };
    if kind == "oci" {
        // its signatures and attestations travel with it
        kiln_factory::add_attachments(store, &mut what)?;
    }
    export_to(
        store,
        &what,
        std::slice::from_ref(&what.name),
        &kind,
        &args.output,
    )?;
    printer.error(&format!("wrote {} to {}", what.name, args.output.display()));
    Ok(Exit::Success)
}

/// Writes `what` as `kind` to `dest`, atomically for archive files. A
/// root filesystem of a multi-platform image is one directory per platform
/// (`dest/linux_arm64`), as BuildKit writes it.
pub fn export_to(
    store: &Store,
    what: &export::Export,
    names: &[String],
    kind: &str,
    dest: &Path,
) -> anyhow::Result<()> {
    match kind {
        "oci" | "docker" => export::save_archive_file(store, what, names, kind == "docker", dest)?,
        "oci-layout" => export::save_layout_dir(store, what, dest)?,
        "local" if what.images.len() == 1 => export::save_rootfs(store, &what.images[0], dest)?,
        "local" => {
            for img in &what.images {
                let dir = dest.join(img.config.platform().to_string().replace('/', "_"));
                export::save_rootfs(store, img, &dir)?;
            }
        }
        other => anyhow::bail!("unknown output type {other}"),
    }
    Ok(())
}
