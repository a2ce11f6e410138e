//! The test step: every test of the image, on every platform it was built
//! for (foreign ones under QEMU). A VM image's tests ran in its boot test.

use std::ops::ControlFlow::{Break, Continue};

use kiln_build::RunOptions;
use kiln_dockerfile::Platform;

use super::{Flow, Job};
use crate::baked::Outcome;

pub(super) fn test(job: &mut Job<'_>) -> Flow {
    if job.made().vm.is_some() {
        return Continue(());
    }
    if already_tested(job) {
        return Continue(());
    }
    let built = job.platforms();
    let platforms: Vec<Option<&Platform>> = if built.is_empty() {
        vec![None]
    } else {
        built.iter().map(Some).collect()
    };
    for platform in platforms {
        for (i, argv) in job.image.tests.iter().enumerate() {
            if let Break(outcome) = one(job, platform, i, argv) {
                let _ = job.bake.store.untag(&job.store_name());
                return Break(outcome);
            }
            job.result.tests_passed += 1;
        }
    }
    Continue(())
}

/// With a registry cache (its layers are in a registry, not here): a
/// build that came out as the image the lock holds, defined as it was, is
/// the image whose tests passed — they are not run again, and its layers
/// are not downloaded for them.
fn already_tested(job: &Job<'_>) -> bool {
    if !job.bake.store.has_remote() {
        return false;
    }
    let Some(locked) = job.bake.locks.lock().expect("locks").get(job.name).cloned() else {
        return false;
    };
    let same = job.locked_digest(&locked) == Some(&job.made().digest);
    if !same || locked.inputs.definition != job.result.inputs.definition {
        return false;
    }
    job.say(&format!(
        "the image {}:{} holds, whose tests passed: not tested again",
        job.name, locked.version
    ));
    true
}

/// Runs test `i` (`argv`) in the new image.
fn one(job: &Job<'_>, platform: Option<&Platform>, i: usize, argv: &[String]) -> Flow {
    let on = platform.map(|p| format!(" on {p}")).unwrap_or_default();
    let opts = RunOptions {
        command: argv.to_vec(),
        kiln_exe: job.bake.opts.kiln_exe.clone(),
        network_none: false,
        capture: true,
        platform: platform.cloned(),
    };
    let shown = test_text(argv);
    let n = i + 1;
    let ran = kiln_build::run_image(
        job.bake.store,
        &job.store_name(),
        &opts,
        &mut job.progress(),
    );
    let exit_code = match ran {
        Ok(0) => {
            job.say(&format!("test {n} passed{on}: {shown}"));
            return Continue(());
        }
        Ok(code) => {
            job.say(&format!(
                "test {n} FAILED{on} with exit code {code}: {shown}"
            ));
            code
        }
        Err(e) => {
            job.say(&format!("test {n} could not run{on}: {e}"));
            -1
        }
    };
    Break(Outcome::TestFailed {
        test: format!("{shown}{on}"),
        exit_code,
    })
}

/// A test as the user wrote it: the shell script, or the argv as JSON.
pub(crate) fn test_text(argv: &[String]) -> String {
    match argv {
        [sh, c, script] if sh == "/bin/sh" && c == "-c" => script.clone(),
        _ => serde_json::to_string(argv).unwrap_or_default(),
    }
}
