//! `kiln build`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context as _;
use kiln_build::{build, BuildOptions, Compression};
use kiln_store::Store;

use crate::args::BuildArgs;
use crate::exit::{Exit, Failure};
use crate::printer::{Printer, StepPrinter};

pub fn run(
    args: BuildArgs,
    store: &Store,
    client: &kiln_registry::Client,
    printer: &Printer,
) -> anyhow::Result<Exit> {
    let dockerfile = super::dockerfile_path(args.dockerfile.file.clone(), &args.context)?;
    if !args.context.is_dir() {
        return Err(Failure::usage(format!(
            "{}: the build context is not a directory",
            args.context.display()
        )));
    }
    let outputs = args
        .outputs
        .iter()
        .map(|o| parse_output(o))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let opts = BuildOptions {
        dockerfile,
        context: args.context.clone(),
        build_args: build_args(&args.dockerfile.build_args)?,
        target: args.dockerfile.target.clone(),
        tags: args.tags.clone(),
        no_cache: args.no_cache,
        refresh: kiln_build::Refresh::Off,
        secrets: secrets(&args.secrets)?,
        source_date_epoch: source_date_epoch(args.source_date_epoch),
        compression: compression(&args.compression)?,
        kiln_exe: std::env::current_exe().context("finding the kiln binary")?,
        hidden: Vec::new(),
        platforms: platforms(&args.platforms)?,
    };
    let mut progress = StepPrinter::new(printer);
    let log = |l: &str| printer.error(l);
    let source = kiln_factory::RegistrySource {
        store,
        client,
        log: &log,
    };
    let result = build(store, &source, &opts, &mut progress);
    drop(progress); // finishes the spinners before anything else is printed
    let result = match result {
        Ok(r) => r,
        Err(e) => {
            printer.error(&format!("error: {e}"));
            return Ok(Exit::Failure);
        }
    };
    printer.error(&format!(
        "built {} ({} steps run, {} cached)",
        result.manifest_digest, result.steps_run, result.steps_cached
    ));
    if result.platforms.len() > 1 {
        for (platform, digest) in &result.platforms {
            printer.error(&format!("  {platform}: {digest}"));
        }
    }
    for (reference, digest) in &result.bases {
        printer.error(&format!("base {reference} is {digest}"));
    }
    for name in &result.names {
        printer.error(&format!("named {name}"));
    }
    if !outputs.is_empty() {
        let mut what = kiln_build::export::Export::of(store, &result.manifest_digest)?;
        if let Some(first) = result.names.first() {
            what.name = first.clone();
        }
        for (kind, dest) in outputs {
            if let Err(e) =
                crate::commands::store_cmds::export_to(store, &what, &result.names, &kind, &dest)
            {
                printer.error(&format!("error: --output type={kind}: {e:#}"));
                return Ok(Exit::Failure);
            }
            printer.error(&format!("wrote {kind} output to {}", dest.display()));
        }
    }
    if args.push {
        for name in &result.names {
            super::registry::push_image(store, client, printer, name, &[], false)?;
        }
    }
    if let Some(f) = &args.digest_file {
        std::fs::write(f, format!("{}\n", result.manifest_digest))
            .with_context(|| format!("writing {}", f.display()))?;
    }
    printer.data(&result.manifest_digest);
    Ok(Exit::Success)
}

/// `--platform`, each checked; the same platform twice is an error.
fn platforms(list: &[String]) -> anyhow::Result<Vec<kiln_dockerfile::Platform>> {
    let mut out: Vec<kiln_dockerfile::Platform> = Vec::new();
    for p in list.iter().filter(|p| !p.trim().is_empty()) {
        let parsed = super::platform(Some(p.trim()))?.expect("given");
        if out.contains(&parsed) {
            return Err(Failure::usage(format!(
                "--platform {parsed} is given twice"
            )));
        }
        out.push(parsed);
    }
    Ok(out)
}

fn parse_output(spec: &str) -> anyhow::Result<(String, PathBuf)> {
    let mut kind = None;
    let mut dest = None;
    for field in spec.split(',') {
        match field.split_once('=') {
            Some(("type", t)) => kind = Some(t.to_string()),
            Some(("dest", d)) => dest = Some(PathBuf::from(d)),
            _ => {
                return Err(Failure::usage(format!(
                    "--output {spec:?}: expected type=TYPE,dest=PATH"
                )))
            }
        }
    }
    match (kind, dest) {
        (Some(k), Some(d)) if ["oci", "docker", "oci-layout", "local"].contains(&k.as_str()) => {
            Ok((k, d))
        }
        (Some(k), Some(_)) => Err(Failure::usage(format!(
            "--output type={k}: kiln writes oci, docker, oci-layout or local"
        ))),
        _ => Err(Failure::usage(format!(
            "--output {spec:?}: both type= and dest= are needed"
        ))),
    }
}

/// `--source-date-epoch`, else `$SOURCE_DATE_EPOCH`.
pub fn source_date_epoch(flag: Option<u64>) -> Option<u64> {
    flag.or_else(|| {
        std::env::var("SOURCE_DATE_EPOCH")
            .ok()
            .and_then(|v| v.parse().ok())
    })
}

/// `--compression`.
pub fn compression(name: &str) -> anyhow::Result<Compression> {
    match name {
        "gzip" => Ok(Compression::Gzip),
        "zstd" => Ok(Compression::Zstd),
        "none" | "uncompressed" => Ok(Compression::None),
        other => Err(Failure::usage(format!(
            "--compression {other:?}: kiln supports gzip, zstd and none"
        ))),
    }
}

/// `--build-arg` values: KEY=VALUE, or a bare KEY that takes its value
/// from the environment when set (as docker does).
pub fn build_args(list: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for a in list {
        match a.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                out.insert(k.to_string(), v.to_string());
            }
            Some(_) => {
                return Err(Failure::usage(format!(
                    "--build-arg {a:?}: the name is empty"
                )))
            }
            None => {
                if let Ok(v) = std::env::var(a) {
                    out.insert(a.clone(), v);
                }
            }
        }
    }
    Ok(out)
}

fn secrets(list: &[String]) -> anyhow::Result<BTreeMap<String, PathBuf>> {
    let mut out = BTreeMap::new();
    for s in list {
        let mut id = None;
        let mut src = None;
        for field in s.split(',') {
            match field.split_once('=') {
                Some(("id", v)) => id = Some(v.to_string()),
                Some(("src" | "source", v)) => src = Some(PathBuf::from(v)),
                _ => {
                    return Err(Failure::usage(format!(
                        "--secret {s:?}: expected id=ID,src=PATH"
                    )))
                }
            }
        }
        let (Some(id), Some(src)) = (id, src) else {
            return Err(Failure::usage(format!(
                "--secret {s:?}: both id= and src= are needed"
            )));
        };
        if !src.is_file() {
            return Err(Failure::usage(format!(
                "--secret {s:?}: {} is not a file",
                src.display()
            )));
        }
        out.insert(id, src);
    }
    Ok(out)
}
