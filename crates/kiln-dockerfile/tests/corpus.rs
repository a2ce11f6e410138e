//! The Dockerfile corpus: real-world-style files, each with a snapshot of its
//! evaluated graph (valid/) or of its error (invalid/). A `NAME.opts` file
//! beside a Dockerfile sets `target`, `platform` or `build-arg K=V` lines.

use std::path::Path;

mod common;

use kiln_dockerfile::{evaluate, BuildGraph, Diagnostic, Options, Platform, UnknownBases};

fn options_for(path: &Path) -> Options {
    let mut opts = Options {
        platform: Some(Platform::parse("linux/amd64").unwrap()),
        build_platform: Some(Platform::parse("linux/amd64").unwrap()),
        ..Options::default()
    };
    let Ok(text) = std::fs::read_to_string(path.with_extension("opts")) else {
        return opts;
    };
    for line in text.lines() {
        match line.split_once(' ') {
            Some(("target", t)) => opts.target = Some(t.to_string()),
            Some(("platform", p)) => opts.platform = Some(Platform::parse(p).unwrap()),
            Some(("build-arg", kv)) => {
                let (k, v) = kv.split_once('=').unwrap();
                opts.build_args.insert(k.into(), v.into());
            }
            _ => panic!("{}: bad option line {line:?}", path.display()),
        }
    }
    opts
}

fn eval(path: &Path) -> (String, Result<BuildGraph, Diagnostic>) {
    let text = std::fs::read_to_string(path).unwrap();
    let result = evaluate(&text, &options_for(path), &UnknownBases);
    (text, result)
}

fn name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

#[test]
fn valid_dockerfiles() {
    insta::glob!("corpus/valid/*.Dockerfile", |path| {
        let (_, result) = eval(path);
        let graph = result.unwrap_or_else(|e| panic!("{}: {}", name(path), e.message));
        // the evaluated graph, printed and read again, is the same graph
        let again = evaluate(&graph.to_dockerfile(), &options_for(path), &UnknownBases)
            .unwrap_or_else(|e| {
                panic!(
                    "{} reprinted: {}\n{}",
                    name(path),
                    e.message,
                    graph.to_dockerfile()
                )
            });
        assert_eq!(
            common::normalized(&graph),
            common::normalized(&again),
            "{} reprinted differently:\n{}",
            name(path),
            graph.to_dockerfile()
        );
        insta::assert_snapshot!(graph.describe(&name(path)));
    });
}

#[test]
fn invalid_dockerfiles() {
    insta::glob!("corpus/invalid/*.Dockerfile", |path| {
        let (text, result) = eval(path);
        let err = match result {
            Ok(_) => panic!("{} was accepted", name(path)),
            Err(e) => e,
        };
        assert!(err.span.line >= 1, "{}: no line", name(path));
        insta::assert_snapshot!(err.render(&name(path), &text));
    });
}

#[test]
fn corpus_is_large_enough() {
    let count = |dir: &str| {
        std::fs::read_dir(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/corpus")
                .join(dir),
        )
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "Dockerfile")
        })
        .count()
    };
    assert!(count("valid") >= 60);
    assert!(count("invalid") >= 25);
}
