//! The `kiln` binary as a user runs it.

use std::path::Path;

use assert_cmd::Command;

fn kiln(dir: &Path) -> Command {
    let mut cmd = Command::cargo_bin("kiln").unwrap();
    cmd.current_dir(dir).env_remove("HTTP_PROXY");
    cmd
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

fn output(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn repo_root() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn bundled_example_is_valid() {
    let (code, stdout, stderr) = output(kiln(&repo_root()).args([
        "dockerfile",
        "check",
        "--platform",
        "linux/amd64",
        "examples/app",
    ]));
    assert_eq!(code, 0, "{stderr}");
    insta::assert_snapshot!(stdout);
}

#[test]
fn json_output_of_a_valid_file() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "Dockerfile",
        "ARG V=1\nFROM alpine AS base\nARG V\nRUN echo $V\nFROM base AS app\nENV X=${V:-none}\n",
    );
    let (code, stdout, _) =
        output(kiln(dir.path()).args(["dockerfile", "check", "--json", "--build-arg", "V=2"]));
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["valid"], true);
    let stages = v["graph"]["stages"].as_array().unwrap();
    assert_eq!(stages[1]["name"], "app");
    assert_eq!(
        stages[1]["base"],
        serde_json::json!({"kind": "stage", "index": 0})
    );
    // V was declared in base, inherited by app; X sees the build arg
    assert_eq!(stages[1]["config"]["env"][1], serde_json::json!(["X", "2"]));
}

#[test]
fn invalid_file_exits_1_with_a_located_error() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "Dockerfile",
        "FROM alpine AS build\nRUN make\nFROM alpine\nCOPY --fro=build /out /out\n",
    );
    let (code, stdout, stderr) = output(kiln(dir.path()).args(["dockerfile", "check"]));
    assert_eq!(code, 1);
    assert!(stdout.is_empty());
    insta::assert_snapshot!(stderr);
}

#[test]
fn invalid_file_as_json() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "build.Dockerfile",
        "FROM alpine\nENV A=\"${NEED:?set NEED}\"\n",
    );
    let (code, stdout, _) =
        output(kiln(dir.path()).args(["dockerfile", "check", "--json", "-f", "build.Dockerfile"]));
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["valid"], false);
    assert_eq!(v["error"]["kind"], "expansion");
    assert_eq!(v["error"]["span"]["line"], 2);
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("NEED: set NEED"));
}

#[test]
fn target_prunes_unneeded_stages() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "Dockerfile",
        "FROM alpine AS dev\nRUN true\nFROM alpine AS broken\nWORKDIR ${X:?never needed}\n",
    );
    let (code, stdout, _) =
        output(kiln(dir.path()).args(["dockerfile", "check", "--target", "dev"]));
    assert_eq!(code, 0);
    assert!(stdout.contains("skipped: the target does not need it"));
    let (code, _, stderr) = output(kiln(dir.path()).args(["dockerfile", "check"]));
    assert_eq!(code, 1);
    assert!(stderr.contains("X: never needed"), "{stderr}");
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, stderr) = output(kiln(dir.path()).args(["dockerfile", "check"]));
    assert_eq!(code, 2);
    assert!(stderr.contains("no such Dockerfile"), "{stderr}");
    write(dir.path(), "Dockerfile", "FROM alpine\n");
    let (code, _, stderr) =
        output(kiln(dir.path()).args(["dockerfile", "check", "--platform", "linux/"]));
    assert_eq!(code, 2);
    assert!(stderr.contains("--platform"), "{stderr}");
    let (code, _, _) = output(kiln(dir.path()).args(["dockerfile", "check", "--no-such-flag"]));
    assert_eq!(code, 2);
}

#[test]
fn dockerignore_is_checked_and_the_specific_one_wins() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "Dockerfile", "FROM alpine\n");
    write(dir.path(), ".dockerignore", "ok\n[broken\n");
    let (code, _, stderr) = output(kiln(dir.path()).args(["dockerfile", "check"]));
    assert_eq!(code, 1);
    assert!(stderr.contains(".dockerignore:2:"), "{stderr}");
    write(dir.path(), "Dockerfile.dockerignore", "*\n!src\n");
    let (code, _, stderr) =
        output(kiln(dir.path()).args(["dockerfile", "check", "-f", "Dockerfile"]));
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn help_explains_the_commands() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stdout, _) = output(kiln(dir.path()).arg("--help"));
    assert_eq!(code, 0);
    assert!(stdout.contains("dockerfile"));
    let (code, stdout, _) = output(kiln(dir.path()).args(["dockerfile", "check", "--help"]));
    assert_eq!(code, 0);
    for flag in [
        "--file",
        "--build-arg",
        "--target",
        "--platform",
        "--json",
        "Exit status",
    ] {
        assert!(stdout.contains(flag), "{flag} missing from help");
    }
}

#[test]
fn plan_of_the_bundled_factory_shows_waves_and_reasons() {
    let (code, stdout, stderr) =
        output(kiln(&repo_root()).args(["plan", "-f", "examples/factory"]));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains(
            "wave 1: base, toolchain\nwave 2: hello-c, node, tools\nwave 3: count, greet, hello, node-vm"
        ),
        "{stdout}"
    );
    let (code, stdout, _) = output(kiln(&repo_root()).args([
        "plan",
        "-f",
        "examples/factory",
        "--json",
        "--force",
        "hello",
    ]));
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let names: Vec<&str> = v["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["base", "tools", "hello"]);
    assert_eq!(v["images"][2]["depends_on"], serde_json::json!(["tools"]));
}

#[test]
fn a_bad_factory_file_exits_1_naming_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "kiln.toml",
        "kiln = 1\n[image.app]\nschedule = \"0 4 * *\"\n",
    );
    let (code, stdout, stderr) = output(kiln(dir.path()).arg("plan"));
    assert_eq!(code, 1);
    assert!(stdout.is_empty());
    assert!(
        stderr.contains("kiln.toml:3:12: cron expression \"0 4 * *\" has 4 fields, not 5"),
        "{stderr}"
    );
    assert!(stderr.contains("hint: 5 fields"), "{stderr}");
    let (code, _, stderr) = output(kiln(dir.path()).args(["plan", "nothing-here"]));
    assert_eq!(code, 1, "{stderr}");
}

#[test]
fn schema_is_printed() {
    let (code, stdout, _) = output(kiln(&repo_root()).arg("schema"));
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["title"], "kiln.toml");
}

/// The job ids a generated job `needs`.
fn needs_of(job: &yaml_rust2::Yaml) -> std::collections::BTreeSet<String> {
    job["needs"]
        .as_vec()
        .map(|v| {
            v.iter()
                .filter_map(|n| n.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn the_github_workflow_of_the_bundled_example_follows_its_graph() {
    let root = repo_root();
    let (code, out, err) = output(kiln(&root).args(["ci", "github", "-f", "examples/factory"]));
    assert_eq!(code, 0, "{err}");
    let doc = &yaml_rust2::YamlLoader::load_from_str(&out).unwrap()[0];
    let jobs = doc["jobs"].as_hash().unwrap();
    let (_, g, _) = kiln_factory::open(&[root.join("examples/factory")]).unwrap();
    for (name, deps) in &g.deps {
        let job = &doc["jobs"][format!("img-{name}").as_str()];
        assert!(!job.is_badvalue(), "no job for {name}: {out}");
        let mut want: std::collections::BTreeSet<String> = ["plan".to_string()].into();
        for d in deps {
            want.insert(format!("img-{d}"));
            if jobs.contains_key(&yaml_rust2::Yaml::String(format!("img-{d}-index"))) {
                want.insert(format!("img-{d}-index"));
            }
        }
        assert_eq!(needs_of(job), want, "{name}");
    }
    // the lock job waits for every job
    assert_eq!(needs_of(&doc["jobs"]["lock"]).len(), jobs.len() - 1);
    assert!(out.starts_with("# Generated by `kiln ci github`"), "{out}");
}

#[test]
fn kiln_ci_github_maps_names_refuses_schedules_and_checks_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("app")).unwrap();
    write(d, "app/Dockerfile", "FROM scratch\nCOPY . /\n");
    let factory = |schedule: &str| {
        format!(
            "kiln = 1\n[factory]\nschedule = \"{schedule}\"\ntimezone = \"Europe/Berlin\"\n\
             [image.\"my.app\"]\ncontext = \"app\"\n\
             [image.wide]\ncontext = \"app\"\nplatforms = [\"linux/amd64\", \"linux/riscv64\"]\n"
        )
    };
    write(d, "kiln.toml", &factory("0 0 1 * *"));
    let (code, _, err) = output(kiln(d).args(["ci", "github", "-o", "wf.yml"]));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("GitHub's cron cannot express it"), "{err}");
    write(d, "kiln.toml", &factory("30 5 * * 1-5"));
    let (code, _, err) = output(kiln(d).args(["ci", "github", "-o", "wf.yml"]));
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("image \"my.app\" is job img-my_app"), "{err}");
    let wf = std::fs::read_to_string(d.join("wf.yml")).unwrap();
    // GitHub has no riscv64 runner: that row is built on amd64 under QEMU
    assert!(
        err.contains("linux/riscv64: GitHub has no runner for it; built under QEMU"),
        "{err}"
    );
    let doc = &yaml_rust2::YamlLoader::load_from_str(&wf).unwrap()[0];
    let rows = doc["jobs"]["img-wide"]["strategy"]["matrix"]["include"]
        .as_vec()
        .unwrap();
    let row = rows
        .iter()
        .find(|r| r["platform"].as_str() == Some("linux/riscv64"))
        .unwrap();
    assert_eq!(row["runner"].as_str(), Some("ubuntu-24.04"));
    assert_eq!(row["qemu"].as_bool(), Some(true));
    assert!(
        wf.contains("# no GitHub runner for linux/riscv64: built under QEMU"),
        "{wf}"
    );
    // 05:30 in Berlin: 04:30 UTC in winter, 03:30 in summer
    assert!(
        wf.contains("    - cron: \"30 4 * * 1-5\"\n    - cron: \"30 3 * * 1-5\"\n"),
        "{wf}"
    );
    let (code, _, err) = output(kiln(d).args(["ci", "github", "-o", "wf.yml", "--check"]));
    assert_eq!(code, 0, "{err}");
    write(d, "kiln.toml", &factory("30 6 * * 1-5"));
    let (code, _, err) = output(kiln(d).args(["ci", "github", "-o", "wf.yml", "--check"]));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("out of date"), "{err}");
}

#[test]
fn runner_jobs_and_registry_caches_refuse_what_they_cannot_do() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let store = d.join("store");
    let store = store.to_str().unwrap();
    std::fs::create_dir_all(d.join("app")).unwrap();
    write(&d.join("app"), "Dockerfile", "FROM scratch\nCOPY . /\n");
    write(
        d,
        "kiln.toml",
        "kiln = 1\n[factory]\nregistry = \"127.0.0.1:1/x\"\nplatforms = [\"linux/amd64\", \"linux/arm64\"]\n[image.app]\ncontext = \"app\"\n[image.other]\ncontext = \"app\"\n",
    );
    // a fragment is one image's
    let (code, _, stderr) =
        output(kiln(d).args(["--store", store, "bake", "--fragment", "f.toml"]));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("name the one image this job bakes"),
        "{stderr}"
    );
    // a platform the image is not built for
    let (code, _, stderr) = output(kiln(d).args([
        "--store",
        store,
        "bake",
        "app",
        "--platform",
        "linux/riscv64",
        "--fragment",
        "f.toml",
    ]));
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("--platform linux/riscv64: app is built for linux/amd64, linux/arm64"),
        "{stderr}"
    );
    // --platform and --push-by-digest belong to a runner job
    let (code, _, stderr) =
        output(kiln(d).args(["--store", store, "bake", "app", "--push-by-digest"]));
    assert_eq!(code, 2, "{stderr}");
    // an index needs its platforms' fragments
    std::fs::create_dir_all(d.join("frags")).unwrap();
    let (code, _, stderr) = output(kiln(d).args([
        "--store",
        store,
        "ci",
        "index",
        "app",
        "--fragments",
        "frags",
        "--fragment",
        "out.toml",
    ]));
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("app: no fragment for linux/amd64, linux/arm64"),
        "{stderr}"
    );
    // a cache is a repository, not a tag
    write(
        d,
        "kiln.toml",
        "kiln = 1\n[factory]\ncache = \"127.0.0.1:1/cache:v1\"\n[image.app]\ncontext = \"app\"\n",
    );
    let (code, _, stderr) = output(kiln(d).args(["--store", store, "plan"]));
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("kiln.toml:3:"), "{stderr}");
    assert!(stderr.contains("without a tag or digest"), "{stderr}");
}

#[test]
fn a_ca_certificate_file_without_a_certificate_is_refused_before_any_request() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "ca.crt", "not a certificate\n");
    // port 9 (discard) on loopback: were it reached, the error would say so
    let (code, _, stderr) = output(kiln(dir.path()).args([
        "--store",
        "store",
        "--ca-cert",
        "ca.crt",
        "pull",
        "127.0.0.1:9/nothing/here:1",
    ]));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("reading CA certificate ca.crt: no PEM certificate in it"),
        "{stderr}"
    );
}
