//! Multi-platform images as a user builds and ships them: `kiln build
//! --platform linux/amd64,linux/arm64` on this amd64 machine, arm64 steps
//! under QEMU user emulation (binfmt_misc, set up by scripts/test), one
//! image index stored, saved, pushed to a real registry, pulled back and
//! run by kiln and by the Docker engine.

mod common;

use common::registry::{skopeo, Registry};
use common::*;

const BOTH: &str = "linux/amd64,linux/arm64";

/// A store holding `busybox:multi`, an index of an amd64 and an arm64 busybox.
fn setup_multi() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let ctx = multi_busybox_context(dir.path());
    ok(kiln(
        &store,
        &[
            "build",
            "-t",
            "busybox:multi",
            "--platform",
            BOTH,
            ctx.to_str().unwrap(),
        ],
    ));
    (dir, store)
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// The platforms an index (JSON) lists, in order.
fn index_platforms(index: &serde_json::Value) -> Vec<String> {
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            format!(
                "{}/{}",
                m["platform"]["os"].as_str().unwrap(),
                m["platform"]["architecture"].as_str().unwrap()
            )
        })
        .collect()
}

const UNAME: &str =
    "FROM busybox:multi\nRUN uname -m > /arch\nCOPY Dockerfile /\nCMD [\"cat\", \"/arch\"]\n";

#[test]
fn a_multi_platform_build_is_one_index_that_kiln_skopeo_and_docker_run() {
    let (dir, store) = setup_multi();
    let ctx = dockerfile_dir(dir.path(), "uname", UNAME);
    let build_both = || {
        ok(kiln(
            &store,
            &[
                "build",
                "-t",
                "uname:1",
                "--platform",
                BOTH,
                ctx.to_str().unwrap(),
            ],
        ))
    };
    let built = build_both();
    // the arm64 RUN ran under QEMU and the log says so; the amd64 one did not
    let emulated: Vec<&str> = built
        .stderr
        .lines()
        .filter(|l| l.contains("[emulated: linux/arm64]"))
        .collect();
    assert_eq!(emulated.len(), 1, "{}", built.stderr);
    assert!(emulated[0].contains("linux/arm64") && emulated[0].contains("RUN uname -m"));
    let index_digest = built.stdout.trim().to_string();

    // the name holds an index of both images
    let inspect = json(&ok(kiln(&store, &["inspect", "uname:1"])).stdout);
    assert_eq!(inspect["digest"], index_digest.as_str());
    assert_eq!(
        index_platforms(&inspect["index"]),
        ["linux/amd64", "linux/arm64"]
    );
    let arm = json(
        &ok(kiln(
            &store,
            &["inspect", "--platform", "linux/arm64", "uname:1"],
        ))
        .stdout,
    );
    assert_eq!(arm["config"]["architecture"], "arm64");
    assert!(ok(kiln(&store, &["images"]))
        .stdout
        .contains("linux/amd64,linux/arm64"));

    // each image runs, the arm64 one through the binfmt handler
    let run_arm = ok(kiln(
        &store,
        &["run", "--platform", "linux/arm64", "uname:1"],
    ));
    assert_eq!(run_arm.stdout.trim(), "aarch64");
    let run_host = ok(kiln(&store, &["run", "uname:1"]));
    assert_eq!(run_host.stdout.trim(), "x86_64");

    // nothing changed: every step of both platforms is cached, same index
    let again = build_both();
    assert_eq!(again.stdout.trim(), index_digest);
    assert_mentions(&again.stderr, &["(0 steps run, 4 cached)"]);

    // an OCI archive keeps the index whole; skopeo reads it
    let archive = dir.path().join("uname.tar");
    ok(kiln(
        &store,
        &["save", "uname:1", "-o", archive.to_str().unwrap()],
    ));
    let raw = json(&skopeo(&[
        "inspect",
        "--raw",
        &format!("oci-archive:{}", archive.display()),
    ]));
    assert_eq!(raw["mediaType"], "application/vnd.oci.image.index.v1+json");
    assert_eq!(index_platforms(&raw), ["linux/amd64", "linux/arm64"]);
    // a docker archive holds one platform: `save` takes this machine's (or
    // --platform's); a multi-platform build's docker output is refused
    let docker_tar = dir.path().join("uname-docker.tar");
    ok(kiln(
        &store,
        &[
            "save",
            "--format",
            "docker",
            "--platform",
            "linux/arm64",
            "uname:1",
            "-o",
            docker_tar.to_str().unwrap(),
        ],
    ));
    let refused = kiln(
        &store,
        &[
            "build",
            "--platform",
            BOTH,
            "-o",
            &format!("type=docker,dest={}", docker_tar.display()),
            ctx.to_str().unwrap(),
        ],
    );
    assert_eq!(refused.code, 1);
    assert_mentions(&refused.stderr, &["multi-platform image", "one platform"]);

    // pushed as an index: skopeo sees it, Docker runs the arm64 image
    let reg = Registry::start(dir.path());
    let target = format!("{}/uname:1", reg.addr);
    let pushed = ok(kiln(&store, &["push", "uname:1", &target]));
    assert_eq!(pushed.stdout.trim(), index_digest);
    let remote = json(&skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{target}"),
    ]));
    assert_eq!(index_platforms(&remote), ["linux/amd64", "linux/arm64"]);
    let arch = docker_pull_and_run_on(&target, Some("linux/arm64"), &["uname", "-m"]);
    assert_eq!(arch.trim(), "aarch64");
    let baked = docker_pull_and_run_on(&target, Some("linux/arm64"), &[]);
    assert_eq!(
        baked.trim(),
        "aarch64",
        "the RUN ran as arm64 at build time"
    );

    // pulled back one platform at a time into a fresh store
    let fresh = dir.path().join("fresh");
    ok(kiln(
        &fresh,
        &["pull", "--platform", "linux/arm64", &target],
    ));
    let only_arm = kiln(&fresh, &["run", "--platform", "linux/amd64", &target]);
    assert_ne!(only_arm.code, 0);
    assert_mentions(&only_arm.stderr, &["linux/amd64", "not pulled"]);
    assert_eq!(
        ok(kiln(&fresh, &["run", "--platform", "linux/arm64", &target]))
            .stdout
            .trim(),
        "aarch64"
    );
    ok(kiln(
        &fresh,
        &["pull", "--platform", "linux/amd64", &target],
    ));
    assert_eq!(ok(kiln(&fresh, &["run", &target])).stdout.trim(), "x86_64");
    ok(kiln(&fresh, &["fsck"]));
}

#[test]
fn one_failing_platform_fails_the_build_and_names_nothing() {
    let (dir, store) = setup_multi();
    let ctx = dockerfile_dir(
        dir.path(),
        "x86only",
        "FROM busybox:multi\nRUN test \"$(uname -m)\" = x86_64\n",
    );
    let out = kiln(
        &store,
        &[
            "build",
            "-t",
            "half:1",
            "--platform",
            BOTH,
            ctx.to_str().unwrap(),
        ],
    );
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_mentions(&out.stderr, &["Dockerfile:2", "exited with code 1"]);
    assert_ne!(
        kiln(&store, &["inspect", "half:1"]).code,
        0,
        "nothing named"
    );

    // a single platform asked for must have a base of that platform
    let single = dir.path().join("single");
    ok(kiln(
        &store,
        &[
            "build",
            "-t",
            "amd-only",
            "--platform",
            "linux/amd64",
            multi_busybox_context(&single).to_str().unwrap(),
        ],
    ));
    let on_amd = dockerfile_dir(dir.path(), "on-amd", "FROM amd-only\nRUN true\n");
    let wrong = kiln(
        &store,
        &[
            "build",
            "--platform",
            "linux/arm64",
            on_amd.to_str().unwrap(),
        ],
    );
    assert_eq!(wrong.code, 1);
    assert_mentions(
        &wrong.stderr,
        &["Dockerfile:1", "the image is linux/amd64, not linux/arm64"],
    );

    // a bad platform is a usage error
    let bad = kiln(
        &store,
        &[
            "build",
            "--platform",
            "linux/nonsense",
            on_amd.to_str().unwrap(),
        ],
    );
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert_mentions(&bad.stderr, &["--platform", "nonsense"]);
}
