//! `kiln ci github`: the factory graph as a GitHub Actions workflow.

use std::path::{Path, PathBuf};

use chrono::Datelike as _;
use kiln_ci::github::{self, Image, Spec};
use kiln_definition::Recipe;

use crate::args::{CiGithubArgs, LockMergeArgs};
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
    let paths = if args.files.is_empty() {
        vec![PathBuf::from(".")]
    } else {
        args.files.clone()
    };
    let (factory, g, _) = kiln_factory::open(&paths).map_err(|e| Failure::failed(e.to_string()))?;
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
    use kiln_factory::fragment;
    let paths = if args.files.is_empty() {
        vec![PathBuf::from(".")]
    } else {
        args.files.clone()
    };
    let (factory, _, mut locks) =
        kiln_factory::open(&paths).map_err(|e| Failure::failed(e.to_string()))?;
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
