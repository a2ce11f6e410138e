//! `kiln ci github`: the factory graph as a GitHub Actions workflow.

use std::path::{Path, PathBuf};

use chrono::Datelike as _;
use kiln_ci::github::{self, Image, Spec};
use kiln_definition::Recipe;

use kiln_definition::Factory;
use kiln_dockerfile::Platform;
use kiln_factory::bake::{Outcome, Summary};
use kiln_factory::baked::RunnerJob;
use kiln_factory::plan::Locks;
use kiln_factory::{assemble, fragment};
use kiln_registry::Client;

use super::factory::{factory_paths, open_factory};
use crate::args::{CiGithubArgs, CiIndexArgs, LockMergeArgs, RunnerArgs};
use crate::exit::{Exit, Failure};
use crate::printer::Printer;

/// The repository's root: where `git` says it is, else the current folder.
fn repo_root(dir: &Path) -> PathBuf {
    std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["rev-parse", "--show-toplevel"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .unwrap_or_else(|| std::env::current_dir().unwrap_or_default())
}

/// `path` from the repository's root (`/`-separated).
fn relative(root: &Path, path: &Path) -> String {
    let abs = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    let rel = abs.strip_prefix(&root).unwrap_or(&abs);
    let s = rel.to_string_lossy().into_owned();
    if s.is_empty() {
        ".".into()
    } else {
        s
    }
}

pub fn github(args: CiGithubArgs, printer: &Printer) -> anyhow::Result<Exit> {
    let paths = factory_paths(&args.files);
    let (factory, g, _) = open_factory(&paths)?;
    let root = repo_root(&paths[0]);
    let mut images = Vec::new();
    let mut schedules = Vec::new();
    for name in &g.order {
        let img = &factory.images[name];
        let file = &factory.files[img.file].path;
        let mut watched = vec![relative(&root, file)];
        if let Recipe::Dockerfile {
            context,
            dockerfile,
            ..
        } = &img.recipe
        {
            watched.push(format!("{}/**", relative(&root, context)));
            if !dockerfile.starts_with(context) {
                watched.push(relative(&root, dockerfile));
            }
        }
        if let Some(s) = &img.schedule {
            let entry = (s.expr.clone(), s.timezone);
            if !schedules.contains(&entry) {
                schedules.push(entry);
            }
        }
        images.push(Image {
            name: name.clone(),
            needs: g.deps.get(name).into_iter().flatten().cloned().collect(),
            platforms: img.platforms.iter().map(|p| p.to_string()).collect(),
            paths: watched,
        });
    }
    let spec = Spec {
        factory: paths.iter().map(|p| relative(&root, p)).collect(),
        images,
        schedules,
        install: args.install.clone(),
        pull_request: args.pull_request,
        year: chrono::Utc::now().year(),
        login: args.login.clone(),
    };
    let made = github::workflow(&spec).map_err(|e| Failure::failed(e.to_string()))?;
    for (image, id) in &made.renamed {
        printer.error(&format!(
            "image {image:?} is job {id} (a job id holds only letters, digits, - and _)"
        ));
    }
    for p in &made.emulated {
        printer.error(&format!(
            "{p}: GitHub has no runner for it; built under QEMU user emulation"
        ));
    }
    match (&args.output, args.check) {
        (None, _) => printer.data(made.text.trim_end()),
        (Some(out), true) => {
            let now = std::fs::read_to_string(out).unwrap_or_default();
            if now != made.text {
                printer.error(&format!(
                    "{}: out of date with the factory; run `kiln ci github -o {}`",
                    out.display(),
                    out.display()
                ));
                return Ok(Exit::Failure);
            }
            printer.error(&format!("{}: up to date", out.display()));
        }
        (Some(out), false) => {
            if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(out, &made.text)?;
            printer.error(&format!("wrote {}", out.display()));
        }
    }
    Ok(Exit::Success)
}

pub fn lock_merge(args: LockMergeArgs, printer: &Printer) -> anyhow::Result<Exit> {
    let (factory, _, mut locks) = open_factory(&args.files)?;
    let fragments = fragment::read(&args.fragments).map_err(|e| Failure::failed(e.to_string()))?;
    let merged = fragment::merge(&factory, &mut locks, &fragments);
    for u in &merged.unknown {
        printer.error(&format!(
            "warning: {u}: not an image of this factory; left out"
        ));
    }
    for i in &merged.incomplete {
        printer.error(&format!(
            "warning: {i}: only some platforms' fragments (its index was not assembled); its entry is unchanged"
        ));
    }
    fragment::write(&locks, &merged.recorded).map_err(|e| Failure::failed(e.to_string()))?;
    printer.error(&format!(
        "merged {} fragment(s): {} image(s) recorded{}",
        fragments.len(),
        merged.recorded.len(),
        if merged.recorded.is_empty() {
            String::new()
        } else {
            format!(" ({})", merged.recorded.join(", "))
        }
    ));
    Ok(Exit::Success)
}

/// `kiln bake --fragment`: one job of a graph spread over runners. The
/// fragments of earlier jobs are read into `locks` (in memory), and the
/// one image named is checked against `--platform`.
pub fn runner(
    args: &RunnerArgs,
    images: &[String],
    factory: &Factory,
    locks: &mut Locks,
    printer: &Printer,
) -> anyhow::Result<Option<RunnerJob>> {
    if args.fragment.is_none() {
        return Ok(None);
    }
    let [name] = images else {
        return Err(Failure::usage(
            "--fragment: name the one image this job bakes",
        ));
    };
    let image = factory
        .images
        .get(name)
        .ok_or_else(|| Failure::failed(format!("no image {name:?} in the factory")))?;
    let present: Vec<PathBuf> = args
        .fragments
        .iter()
        .filter(|p| p.exists())
        .cloned()
        .collect();
    for missing in args.fragments.iter().filter(|p| !p.exists()) {
        printer.error(&format!("{}: no fragments yet", missing.display()));
    }
    let fragments = fragment::read(&present).map_err(|e| Failure::failed(e.to_string()))?;
    let merged = fragment::merge(factory, locks, &fragments);
    if !merged.recorded.is_empty() {
        printer.error(&format!(
            "taken from the fragments: {}",
            merged.recorded.join(", ")
        ));
    }
    let platform = match &args.platform {
        None => None,
        Some(p) => {
            let p =
                Platform::parse(p).map_err(|e| Failure::usage(format!("--platform {p}: {e}")))?;
            let own = if image.platforms.is_empty() {
                vec![Platform::host()]
            } else {
                image.platforms.clone()
            };
            if !own.contains(&p) {
                let own: Vec<String> = own.iter().map(|p| p.to_string()).collect();
                return Err(Failure::failed(format!(
                    "--platform {p}: {name} is built for {}",
                    own.join(", ")
                )));
            }
            Some(p)
        }
    };
    Ok(Some(RunnerJob {
        platform,
        push_by_digest: args.push_by_digest,
    }))
}

/// After a runner job's bake: its image's lock entry (one platform's part
/// of it, with `--platform`) written to the `--fragment` file, when the
/// image came out well.
pub fn hand_on(
    args: &RunnerArgs,
    name: &str,
    factory: &Factory,
    locks: &Locks,
    summary: &Summary,
    printer: &Printer,
) -> anyhow::Result<()> {
    let Some(path) = &args.fragment else {
        return Ok(());
    };
    let Some(result) = summary.images.iter().find(|i| i.name == name) else {
        return Ok(());
    };
    if !result.outcome.ok() || matches!(result.outcome, Outcome::WouldBuild) {
        printer.error(&format!(
            "{}: not written ({name} did not come out well)",
            path.display()
        ));
        return Ok(());
    }
    let Some(entry) = locks.get(name) else {
        return Err(Failure::failed(format!("{name}: no lock entry to hand on")));
    };
    let image = &factory.images[name];
    let entry = match (&args.platform, image.platforms.len() > 1) {
        (Some(p), true) => fragment::narrowed(entry, p).ok_or_else(|| {
            Failure::failed(format!("{name}: its lock entry has no image for {p}"))
        })?,
        _ => entry.clone(),
    };
    let vm = matches!(image.recipe, Recipe::Vm(_));
    fragment::write_one(path, name, &entry, vm).map_err(|e| Failure::failed(e.to_string()))?;
    printer.error(&format!(
        "wrote {} ({name} {})",
        path.display(),
        entry.digest
    ));
    Ok(())
}

pub fn index(args: CiIndexArgs, client: &Client, printer: &Printer) -> anyhow::Result<Exit> {
    let (factory, _, locks) = open_factory(&args.files)?;
    let fragments = fragment::read(&args.fragments).map_err(|e| Failure::failed(e.to_string()))?;
    let log = |l: &str| printer.error(l);
    let made = assemble::index(
        &factory,
        locks.get(&args.image),
        &fragments,
        &args.image,
        client,
        &log,
    )
    .map_err(|e| Failure::failed(e.to_string()))?;
    fragment::write_one(&args.fragment, &args.image, &made.entry, false)
        .map_err(|e| Failure::failed(e.to_string()))?;
    printer.error(&format!(
        "{} {} {}: {}",
        args.image,
        made.entry.version,
        made.entry.digest,
        if made.unchanged {
            "the index the lock holds (nothing pushed)"
        } else {
            "index pushed"
        }
    ));
    printer.data(&made.entry.digest);
    Ok(Exit::Success)
}
