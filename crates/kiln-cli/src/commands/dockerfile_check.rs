//! `kiln dockerfile check`: evaluate a Dockerfile and report the graph or the error.

use std::path::{Path, PathBuf};

use anyhow::Context;
use kiln_dockerfile::dockerignore::{self, Matcher};
use kiln_dockerfile::{evaluate, Options, Platform, UnknownBases};
use serde_json::json;

use crate::args::CheckArgs;
use crate::exit::{Exit, Failure};
use crate::printer::Printer;

pub fn run(args: CheckArgs, printer: &Printer) -> anyhow::Result<Exit> {
    let file = super::dockerfile_path(args.dockerfile.file.clone(), &args.context)?;
    let text = fs_err::read_to_string(&file).context("reading the Dockerfile")?;
    let opts = options(&args)?;
    let shown = file.display().to_string();
    let result = evaluate(&text, &opts, &UnknownBases);
    let ignore = check_dockerignore(&args.context, &file)?;
    match (result, ignore) {
        (Ok(graph), Ok(_)) => {
            if args.json {
                printer.data(&serde_json::to_string_pretty(
                    &json!({"file": shown, "valid": true, "graph": graph}),
                )?);
            } else {
                printer.data(&graph.describe(&shown));
            }
            Ok(Exit::Success)
        }
        (Err(diag), _) => {
            if args.json {
                printer.data(&serde_json::to_string_pretty(
                    &json!({"file": shown, "valid": false, "error": diag}),
                )?);
            } else {
                printer.error(&format!("error: {}", diag.render(&shown, &text)));
            }
            Ok(Exit::Failure)
        }
        (Ok(_), Err((path, e))) => {
            let msg = format!("{}:{}: {}", path.display(), e.line, e.message);
            if args.json {
                printer.data(&serde_json::to_string_pretty(&json!({"file": path, "valid": false, "error": {"kind": "dockerignore", "message": e.message, "span": {"line": e.line, "column": 1, "len": 1}}}))?);
            } else {
                printer.error(&format!("error: {msg}"));
            }
            Ok(Exit::Failure)
        }
    }
}

fn options(args: &CheckArgs) -> anyhow::Result<Options> {
    let build_args = super::build::build_args(&args.dockerfile.build_args)?;
    let platform = match &args.platform {
        Some(p) => {
            Some(Platform::parse(p).map_err(|e| Failure::usage(format!("--platform: {e}")))?)
        }
        None => None,
    };
    Ok(Options {
        build_args,
        target: args.dockerfile.target.clone(),
        platform,
        build_platform: None,
    })
}

/// Finds the ignore file that applies and checks its patterns.
fn check_dockerignore(
    context: &Path,
    dockerfile: &Path,
) -> anyhow::Result<Result<(), (PathBuf, dockerignore::PatternError)>> {
    let names = dockerignore::candidate_files(&dockerfile.display().to_string());
    let specific = PathBuf::from(&names[0]);
    let general = context.join(&names[1]);
    for path in [specific, general] {
        if path.is_file() {
            let text = fs_err::read_to_string(&path)?;
            return Ok(Matcher::from_dockerignore(&text)
                .map(|_| ())
                .map_err(|e| (path, e)));
        }
    }
    Ok(Ok(()))
}
