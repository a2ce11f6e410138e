//! `kiln plan` and `kiln bake` on a real chain of images, published to a
//! real `docker-registry`, read back with skopeo and run by the Docker
//! engine. The chain is busybox-based so it builds in seconds; the bundled
//! Debian example is baked by `examples/demo.sh` in its own test.

use std::fs;
use std::path::Path;
use std::process::Command;

mod common;
use common::registry::{skopeo, skopeo_digest, Registry};
use common::*;

const FACTORY: &str = r#"kiln = 1

[factory]
registry = "${KILN_TEST_REGISTRY}/factory"

[image.base]
context = "busybox"
tags = ["latest"]

[image.tools]
context = "tools"
tags = ["latest", "stable"]
test = ["test -x /usr/local/bin/greet"]

[image.app1]
context = "apps/app1"
tags = ["latest"]
test = ["greet | grep -q app1"]

[image.app2]
context = "apps/app2"
test = [["/usr/local/bin/greet"]]

[image.app3]
context = "apps/app3"

[image.other]
context = "other"
publish = ["docker://${KILN_TEST_REGISTRY}/factory/other", "oci-archive:out/other.tar", "store"]
"#;

fn factory(dir: &Path) {
    busybox_context(dir);
    let w = |p: &str, text: &str| {
        let p = dir.join(p);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    };
    w("kiln.toml", FACTORY);
    // the base's build argument shapes it, so a new value is a new image
    let base = dir.join("busybox/Dockerfile");
    let text = fs::read_to_string(&base).unwrap();
    w(
        "busybox/Dockerfile",
        &format!("{text}ARG PATCH=1\nLABEL patch=$PATCH\n"),
    );
    w(
        "tools/Dockerfile",
        "FROM base\nENV PATH=/usr/local/bin:$PATH\nRUN mkdir -p /usr/local/bin && printf '#!/bin/sh\\ncat /app/name\\n' > /usr/local/bin/greet && chmod +x /usr/local/bin/greet\n",
    );
    for app in ["app1", "app2", "app3"] {
        // Each app's RUN takes a while, so concurrent builds overlap visibly.
        w(
            &format!("apps/{app}/Dockerfile"),
            "FROM tools\nCOPY name /app/name\nRUN sleep 2\nCMD [\"greet\"]\n",
        );
        w(&format!("apps/{app}/name"), &format!("{app}\n"));
    }
    w("other/Dockerfile", "FROM base\nCOPY note /note\n");
    w("other/note", "one\n");
}

fn bake(dir: &Path, store: &Path, reg: &Registry, args: &[&str]) -> (Out, serde_json::Value) {
    let mut all = vec!["bake", "-f", dir.to_str().unwrap(), "--json"];
    all.extend_from_slice(args);
    let out = kiln_env(store, &all, &[("KILN_TEST_REGISTRY", &reg.addr)]);
    let v = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", out.stdout, out.stderr));
    (out, v)
}

/// A bake that must succeed; its JSON report.
fn bake_ok(dir: &Path, store: &Path, reg: &Registry, args: &[&str]) -> serde_json::Value {
    let (out, v) = bake(dir, store, reg, args);
    assert_eq!(out.code, 0, "{}", out.stderr);
    v
}

fn plan(dir: &Path, store: &Path, reg: &Registry) -> serde_json::Value {
    let out = ok(kiln_env(
        store,
        &["plan", "-f", dir.to_str().unwrap(), "--json"],
        &[("KILN_TEST_REGISTRY", &reg.addr)],
    ));
    serde_json::from_str(&out.stdout).unwrap()
}

fn image<'a>(v: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    v["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == name)
        .unwrap_or_else(|| panic!("{name} in {v}"))
}

fn outcomes(v: &serde_json::Value) -> Vec<(String, String)> {
    v["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["name"].as_str().unwrap().to_string(),
                i["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn lock(dir: &Path) -> toml::Table {
    toml::from_str(&fs::read_to_string(dir.join("kiln.lock")).unwrap()).unwrap()
}

fn locked<'a>(lock: &'a toml::Table, name: &str, key: &str) -> &'a str {
    lock["image"][name][key].as_str().unwrap()
}

fn registry_digest(reg: &Registry, repo_tag: &str) -> String {
    skopeo_digest(&format!("docker://{}/factory/{repo_tag}", reg.addr))
}

fn time(v: &serde_json::Value, name: &str, key: &str) -> chrono::DateTime<chrono::Utc> {
    image(v, name)[key].as_str().unwrap().parse().unwrap()
}

#[test]
fn a_chain_is_baked_published_and_rebuilt_where_it_changed() {
    let (dir, store) = setup();
    let fdir = dir.path().join("factory");
    fs::create_dir_all(&fdir).unwrap();
    factory(&fdir);
    let reg = Registry::start(dir.path());

    // 1. A first bake builds all six, in three waves, and publishes them.
    let (out, v) = bake(&fdir, &store, &reg, &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        outcomes(&v).iter().all(|(_, o)| o == "built"),
        "{:?}",
        outcomes(&v)
    );
    assert_eq!(
        v["plan"]["waves"],
        serde_json::json!([["base"], ["other", "tools"], ["app1", "app2", "app3"]])
    );
    let l = lock(&fdir);
    for name in ["base", "tools", "app1", "app2", "app3", "other"] {
        let version = locked(&l, name, "version");
        let digest = locked(&l, name, "digest");
        assert_eq!(
            registry_digest(&reg, &format!("{name}:{version}")),
            digest,
            "{name} in the registry"
        );
        let published = l["image"][name]["published"].as_array().unwrap();
        assert_eq!(
            published[0].as_str().unwrap(),
            format!("docker://{}/factory/{name}:{version}@{digest}", reg.addr)
        );
    }
    assert_eq!(
        registry_digest(&reg, "tools:stable"),
        locked(&l, "tools", "digest")
    );
    assert_eq!(
        l["image"]["app1"]["inputs"]["bases"]["tools"]
            .as_str()
            .unwrap(),
        locked(&l, "tools", "digest")
    );
    // The three applications built concurrently: every one started before
    // any of them finished.
    let last_start = ["app1", "app2", "app3"]
        .map(|a| time(&v, a, "started"))
        .into_iter()
        .max()
        .unwrap();
    let first_end = ["app1", "app2", "app3"]
        .map(|a| time(&v, a, "finished"))
        .into_iter()
        .min()
        .unwrap();
    assert!(last_start < first_end, "apps did not overlap: {v}");
    assert!(time(&v, "tools", "started") >= time(&v, "base", "finished"));
    assert!(time(&v, "app1", "started") >= time(&v, "tools", "finished"));

    // Docker pulls an application from the registry and runs it.
    let app1 = format!(
        "{}/factory/app1:{}",
        reg.addr,
        locked(&l, "app1", "version")
    );
    assert_eq!(docker_pull_and_run(&app1), "app1\n");

    // The OCI archive target holds the same image.
    let archive = fdir.join("out/other.tar");
    assert_eq!(
        skopeo_digest(&format!("oci-archive:{}", archive.display())),
        locked(&l, "other", "digest")
    );
    assert_eq!(
        l["image"]["other"]["published"][1].as_str().unwrap(),
        format!("oci-archive:{}", archive.display())
    );

    // 2. Nothing changed: nothing to do.
    let v = bake_ok(&fdir, &store, &reg, &[]);
    assert!(
        outcomes(&v).iter().all(|(_, o)| o == "reused"),
        "{:?}",
        outcomes(&v)
    );
    // --force rebuilds, and a rebuild the same as what is locked is
    // unchanged: no new version, nothing published, the lock as it was.
    let lock_text = fs::read(fdir.join("kiln.lock")).unwrap();
    let v = bake_ok(&fdir, &store, &reg, &["--force", "tools"]);
    assert_eq!(
        outcomes(&v),
        [
            ("base".to_string(), "unchanged".to_string()),
            ("tools".to_string(), "unchanged".to_string())
        ]
    );
    assert_eq!(
        image(&v, "tools")["version"],
        locked(&l, "tools", "version")
    );
    assert_eq!(
        fs::read(fdir.join("kiln.lock")).unwrap(),
        lock_text,
        "an unchanged image leaves kiln.lock byte for byte"
    );
    // --no-publish builds and tests but leaves the lock alone.
    fs::write(fdir.join("apps/app3/name"), "app3, unpublished\n").unwrap();
    let v = bake_ok(&fdir, &store, &reg, &["--no-publish", "app3"]);
    assert_eq!(image(&v, "app3")["outcome"], "built");
    assert_eq!(lock(&fdir), l, "--no-publish leaves kiln.lock alone");
    fs::write(fdir.join("apps/app3/name"), "app3\n").unwrap();

    // 3. One application file changes: plan says why, bake rebuilds it alone.
    fs::write(fdir.join("apps/app2/name"), "app2, changed\n").unwrap();
    let p = plan(&fdir, &store, &reg);
    assert_eq!(p["waves"], serde_json::json!([["app2"]]));
    assert_eq!(
        image(&p, "app2")["reasons"],
        serde_json::json!([{"reason": "context-changed", "files": ["changed name"]}])
    );
    let v = bake_ok(&fdir, &store, &reg, &[]);
    let built: Vec<String> = outcomes(&v)
        .into_iter()
        .filter(|(_, o)| o == "built")
        .map(|(n, _)| n)
        .collect();
    assert_eq!(built, ["app2"]);
    let l2 = lock(&fdir);
    assert_ne!(
        locked(&l2, "app2", "version"),
        locked(&l, "app2", "version"),
        "a new version tag"
    );
    assert_eq!(locked(&l2, "app1", "digest"), locked(&l, "app1", "digest"));

    // 4. The base changes: everything above it rebuilds, in order.
    let toml = fs::read_to_string(fdir.join("kiln.toml")).unwrap();
    let toml = toml.replace(
        "context = \"busybox\"",
        "context = \"busybox\"\nargs = { PATCH = \"2\" }",
    );
    fs::write(fdir.join("kiln.toml"), &toml).unwrap();
    let p = plan(&fdir, &store, &reg);
    assert_eq!(
        image(&p, "base")["reasons"],
        serde_json::json!([{"reason": "definition-changed"}])
    );
    assert_eq!(
        image(&p, "app3")["reasons"],
        serde_json::json!([{"reason": "upstream-will-rebuild", "image": "tools"}])
    );
    let v = bake_ok(&fdir, &store, &reg, &[]);
    assert!(
        outcomes(&v).iter().all(|(_, o)| o == "built"),
        "{:?}",
        outcomes(&v)
    );
    assert!(time(&v, "tools", "started") >= time(&v, "base", "finished"));
    assert!(time(&v, "app3", "started") >= time(&v, "tools", "finished"));

    // 5. A failing test in tools: its applications are not built or
    // published; the unrelated image still is.
    let l3 = lock(&fdir);
    fs::write(
        fdir.join("kiln.toml"),
        toml.replace(
            "test = [\"test -x /usr/local/bin/greet\"]",
            "test = [\"test -x /usr/local/bin/missing\"]",
        ),
    )
    .unwrap();
    fs::write(fdir.join("other/note"), "two\n").unwrap();
    let (out, v) = bake(&fdir, &store, &reg, &[]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let o = outcomes(&v);
    assert_eq!(image(&v, "tools")["outcome"], "test-failed", "{o:?}");
    for app in ["app1", "app2", "app3"] {
        assert_eq!(image(&v, app)["outcome"], "skipped", "{o:?}");
        assert!(image(&v, app)["because"]
            .as_str()
            .unwrap()
            .contains("tools failed"));
    }
    assert_eq!(image(&v, "other")["outcome"], "built", "{o:?}");
    let l4 = lock(&fdir);
    assert_eq!(
        l4["image"]["tools"], l3["image"]["tools"],
        "tools' lock entry is untouched"
    );
    assert_ne!(
        locked(&l4, "other", "digest"),
        locked(&l3, "other", "digest")
    );
    let failed_version = image(&v, "tools")["version"].as_str().unwrap();
    let missing = Command::new("skopeo")
        .args([
            "inspect",
            "--tls-verify=false",
            &format!("docker://{}/factory/tools:{failed_version}", reg.addr),
        ])
        .output()
        .unwrap();
    assert!(
        !missing.status.success(),
        "a failed image must not be published"
    );
    assert_eq!(
        registry_digest(&reg, "tools:latest"),
        locked(&l3, "tools", "digest"),
        "moving tags stay"
    );
    assert_eq!(
        registry_digest(&reg, &format!("other:{}", locked(&l4, "other", "version"))),
        locked(&l4, "other", "digest")
    );

    // 6. Every bake is in the history: why, inputs, result, tests, where.
    let h: serde_json::Value =
        serde_json::from_str(&ok(kiln(&store, &["history", "app2", "--json"])).stdout).unwrap();
    let h = h.as_array().unwrap();
    let outcomes: Vec<&str> = h.iter().map(|e| e["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["built", "built", "built", "skipped"]);
    assert_eq!(
        h[1]["reasons"],
        serde_json::json!(["its build context changed: changed name"])
    );
    assert_eq!(
        h[1]["digest"].as_str().unwrap(),
        locked(&l2, "app2", "digest")
    );
    assert_eq!(
        h[1]["inputs"]["bases"]["tools"].as_str().unwrap(),
        locked(&l, "tools", "digest")
    );
    assert_eq!(
        (h[1]["tests_passed"].as_u64(), h[1]["tests_total"].as_u64()),
        (Some(1), Some(1))
    );
    assert!(h[1]["published"][0]
        .as_str()
        .unwrap()
        .starts_with(&format!("docker://{}/factory/app2:", reg.addr)));
    let all = ok(kiln(&store, &["history"])).stdout;
    assert!(
        all.lines()
            .any(|l| l
                .contains("  tools  test-failed (test -x /usr/local/bin/missing (exit code 1))")),
        "{all}"
    );
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            fs::copy(e.path(), target).unwrap();
        }
    }
}

/// The bundled example, as the README's main command bakes it: a Debian
/// base from mmdebstrap, tools on it (apt-get), three applications on tools.
#[test]
fn the_bundled_example_bakes_publishes_and_rebuilds_on_a_base_change() {
    let (dir, store) = setup();
    let fdir = dir.path().join("example");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/factory"),
        &fdir,
    );
    let _ = fs::remove_file(fdir.join("kiln.lock"));
    // the VM's admin logs in with a key whose private half the test holds
    let key = dir.path().join("admin-key");
    let made = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "admin@test", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(made.success());
    fs::copy(key.with_extension("pub"), fdir.join("keys/admin.pub")).unwrap();
    // baked with a signing key: every image and the VM disk is signed and
    // carries its SBOM and provenance
    let signing = dir.path().join("signing");
    ok(kiln(
        &store,
        &["key", "generate", "-o", signing.to_str().unwrap()],
    ));
    let toml_path = fdir.join("kiln.toml");
    let text = fs::read_to_string(&toml_path).unwrap().replacen(
        "[factory]\n",
        &format!(
            "[factory]\nsign = {{ key = \"{}\" }}\nverify_bases = {{ key = \"{}\" }}\n",
            signing.with_extension("key").display(),
            signing.with_extension("pub").display()
        ),
        1,
    );
    fs::write(&toml_path, text).unwrap();
    let reg = Registry::start(dir.path());
    let env = [("KILN_EXAMPLE_REGISTRY", reg.addr.as_str())];
    let bake_logged = |extra: &[&str]| {
        let mut args = vec!["bake", "-f", fdir.to_str().unwrap(), "--json"];
        args.extend_from_slice(extra);
        let out = kiln_env(&store, &args, &env);
        assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
        (
            serde_json::from_str::<serde_json::Value>(&out.stdout).unwrap(),
            out.stderr,
        )
    };
    let bake = |extra: &[&str]| bake_logged(extra).0;
    let names = [
        "base",
        "tools",
        "count",
        "greet",
        "hello",
        "toolchain",
        "hello-c",
        "node",
    ];

    let (v, log) = bake_logged(&[]);
    assert!(
        outcomes(&v).iter().all(|(_, o)| o == "built"),
        "{:?}",
        outcomes(&v)
    );
    let l = lock(&fdir);
    signed_checks(&l, &reg, &store, &signing.with_extension("pub"));
    // verify_bases with the same key: each image's factory base was signed
    // by the bake before the image was built on it
    for (image, base) in [("tools", "base"), ("hello", "tools"), ("node-vm", "node")] {
        assert!(
            log.lines()
                .any(|l| l.starts_with(&format!("[{image}] base {base}"))
                    && l.contains("is signed by")),
            "{image}: {log}"
        );
    }
    multi_platform_checks(&l, &log, &reg, &store);
    vm_checks(&l, &log, &reg, &store, dir.path());
    let first_boot = vm_boot_check(&store, locked_vm(&l, "version"));
    assert_eq!(first_boot.len(), 1, "{first_boot:?}");
    let login = vm_ssh_login(&store, &key);
    assert_eq!(
        login.lines().collect::<Vec<_>>(),
        ["node-vm", "admin", &first_boot[0]],
        "{login}"
    );
    // kiln plan shows each platform's digest next to the index's
    let p = plan(&fdir, &store, &reg);
    assert_eq!(image(&p, "hello")["digest"], locked(&l, "hello", "digest"));
    assert_eq!(
        image(&p, "hello")["platforms"]["linux/arm64"],
        l["image"]["hello"]["platforms"]["linux/arm64"]
            .as_str()
            .unwrap()
    );
    for name in names {
        let tag = format!(
            "{}/kiln-example/{name}:{}",
            reg.addr,
            locked(&l, name, "version")
        );
        assert_eq!(
            skopeo_digest(&format!("docker://{tag}")),
            locked(&l, name, "digest"),
            "{name}"
        );
    }
    for (app, expect) in [
        ("hello", "hello from 12."),
        ("greet", "\"good morning\""),
        ("count", ""),
    ] {
        let r = format!(
            "{}/kiln-example/{app}:{}",
            reg.addr,
            locked(&l, app, "version")
        );
        let stdout = docker_pull_and_run(&r);
        assert!(stdout.starts_with(expect), "{app}: {stdout}");
    }

    // One file of one application changes: only it is rebuilt.
    fs::write(fdir.join("apps/count/file1.txt"), "changed\n").unwrap();
    let v = bake(&[]);
    let built: Vec<String> = outcomes(&v)
        .into_iter()
        .filter(|(_, o)| o == "built")
        .map(|(n, _)| n)
        .collect();
    assert_eq!(built, ["count"]);
    assert_eq!(
        image(&v, "count")["reasons"],
        serde_json::json!([{"reason": "context-changed", "files": ["changed file1.txt"]}])
    );

    // The base's package set changes: all four images above it rebuild,
    // after it, the applications concurrently; the toolchain chain stays.
    let toml = fs::read_to_string(fdir.join("kiln.toml")).unwrap();
    fs::write(
        fdir.join("kiln.toml"),
        toml.replace(
            "packages = [\"ca-certificates\"]",
            "packages = [\"ca-certificates\", \"less\"]",
        ),
    )
    .unwrap();
    let v = bake(&[]);
    let chain = [
        "base", "tools", "count", "greet", "hello", "node", "node-vm",
    ];
    assert!(
        outcomes(&v)
            .iter()
            .all(|(n, o)| (o == "built") == chain.contains(&n.as_str())),
        "{:?}",
        outcomes(&v)
    );
    assert_eq!(
        v["plan"]["waves"],
        serde_json::json!([
            ["base"],
            ["node", "tools"],
            ["count", "greet", "hello", "node-vm"]
        ])
    );
    assert_eq!(
        image(&v, "base")["reasons"],
        serde_json::json!([{"reason": "definition-changed"}])
    );
    assert!(time(&v, "tools", "started") >= time(&v, "base", "finished"));
    let apps = ["count", "greet", "hello"];
    assert!(apps
        .iter()
        .all(|a| time(&v, a, "started") >= time(&v, "tools", "finished")));
    let last_start = apps
        .map(|a| time(&v, a, "started"))
        .into_iter()
        .max()
        .unwrap();
    let first_end = apps
        .map(|a| time(&v, a, "finished"))
        .into_iter()
        .min()
        .unwrap();
    assert!(
        last_start < first_end,
        "the applications did not build concurrently: {v}"
    );
    assert!(time(&v, "node-vm", "started") >= time(&v, "node", "finished"));
    assert_eq!(
        image(&v, "node-vm")["reasons"],
        serde_json::json!([{"reason": "upstream-will-rebuild", "image": "node"}])
    );
    let l2 = lock(&fdir);
    for name in chain.iter().filter(|n| **n != "node-vm") {
        assert_ne!(
            locked(&l2, name, "digest"),
            locked(&l, name, "digest"),
            "{name} was rebuilt"
        );
    }
    assert_ne!(locked_vm(&l2, "digest"), locked_vm(&l, "digest"));
    // the OS disk is replaced by the new version; the data disk is kept:
    // what the first boot wrote on it is still there
    let second_boot = vm_boot_check(&store, locked_vm(&l2, "version"));
    assert_eq!(second_boot.len(), 2, "{second_boot:?}");
    assert_eq!(second_boot[0], first_boot[0]);
    // both versions are kept until removed; `latest` moved to the new one
    let kept = |store: &Path| -> Vec<(String, serde_json::Value)> {
        let out = ok(kiln(store, &["vm", "ls", "--json"]));
        let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|k| {
                (
                    k["version"].as_str().unwrap().to_string(),
                    k["tags"].clone(),
                )
            })
            .collect()
    };
    let (old, new) = (locked_vm(&l, "version"), locked_vm(&l2, "version"));
    assert_eq!(
        kept(&store),
        [
            (old.to_string(), serde_json::json!([])),
            (new.to_string(), serde_json::json!(["latest"]))
        ]
    );
    ok(kiln(&store, &["vm", "rm", &format!("node-vm:{old}")]));
    assert_eq!(
        kept(&store),
        [(new.to_string(), serde_json::json!(["latest"]))]
    );
}

/// `kiln vm boot node-vm --ssh-port P`, as a person boots it: the
/// definition's admin logs in over SSH with its key (the VM took its address
/// by DHCP from QEMU's user-mode network) and reads the data disk; then
/// kiln and its QEMU are stopped.
fn vm_ssh_login(store: &Path, key: &Path) -> String {
    use std::os::unix::process::CommandExt;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("--store")
        .arg(store)
        .args(["vm", "boot", "node-vm", "--ssh-port", &port])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    // kiln and QEMU are one process group: it ends with the test
    struct Group(std::process::Child);
    impl Drop for Group {
        fn drop(&mut self) {
            // `--`: procps's kill would read `-PGID` as a signal
            let _ = Command::new("kill")
                .args(["-s", "TERM", "--", &format!("-{}", self.0.id())])
                .status();
            let _ = self.0.wait();
        }
    }
    let _group = Group(child);
    let started = std::time::Instant::now();
    loop {
        let out = Command::new("ssh")
            .arg("-i")
            .arg(key)
            .args(["-p", &port, "-o", "StrictHostKeyChecking=no"])
            .args([
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "ConnectTimeout=5",
            ])
            .args([
                "-o",
                "BatchMode=yes",
                "-o",
                "LogLevel=ERROR",
                "admin@127.0.0.1",
            ])
            .arg("hostname && id -un && cat /srv/data/boots.log")
            .output()
            .unwrap();
        if out.status.success() {
            return String::from_utf8_lossy(&out.stdout).into_owned();
        }
        assert!(
            started.elapsed().as_secs() < 300,
            "no SSH login within 300 s: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

fn locked_vm<'a>(lock: &'a toml::Table, key: &str) -> &'a str {
    lock["vm"]["node-vm"][key].as_str().unwrap()
}

/// `kiln vm boot node-vm --check`: it boots the newest version with its
/// data disk from the store; returns the boots recorded on the data disk
/// (the example's last VM test appends one line per boot and prints them).
fn vm_boot_check(store: &Path, version: &str) -> Vec<String> {
    let out = kiln(store, &["vm", "boot", "node-vm", "--check"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        out.stdout.trim(),
        "KILN-READY node-vm root=/dev/vda2 /srv/data=/dev/vdb",
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains(&format!("node-vm:{version} from node:")),
        "{}",
        out.stderr
    );
    out.stderr
        .lines()
        .filter_map(|l| l.trim().strip_prefix("test 4: "))
        .map(str::to_string)
        .collect()
}

/// The bundled example's VM image: baked from node, boot-tested until the
/// marker with its data disk mounted and its tests passed (over the serial
/// port), kept as raw, qcow2 and vmdk, published as an OCI artifact that
/// `kiln vm pull` fetches back byte-identical.
/// `kiln verify` passes for each image and the VM disk, straight from the
/// registry, with an SBOM and provenance required.
fn signed_checks(l: &toml::Table, reg: &Registry, store: &Path, public: &Path) {
    let images = l["image"].as_table().unwrap().iter();
    let vms = l["vm"].as_table().unwrap().iter();
    for (name, entry) in images.chain(vms) {
        let version = entry["version"].as_str().unwrap();
        let r = format!("{}/kiln-example/{name}:{version}", reg.addr);
        let out = kiln(
            store,
            &[
                "verify",
                &r,
                "--key",
                public.to_str().unwrap(),
                "--require",
                "sbom,provenance",
            ],
        );
        assert_eq!(out.code, 0, "{r}:\n{}\n{}", out.stdout, out.stderr);
        assert!(
            entry["attachments"]
                .as_table()
                .is_some_and(|a| !a.is_empty()),
            "{name}: the lock records its attachments"
        );
    }
    // the kept VM image, by name: verified from the store, and its SBOM is
    // its image's packages bound to the disk files the lock pins
    for (name, entry) in l["vm"].as_table().unwrap() {
        let kept = format!("{name}:{}", entry["version"].as_str().unwrap());
        let key = public.to_str().unwrap();
        ok(kiln(
            store,
            &["verify", &kept, "--key", key, "--require", "sbom"],
        ));
        let spdx = ok(kiln(store, &["sbom", &kept])).stdout;
        assert!(spdx.contains("pkg:deb/debian/"), "{kept}: {spdx}");
        let file = store.with_file_name(format!("{name}.spdx.json"));
        fs::write(&file, &spdx).unwrap();
        let validator = Path::new(&common::web::test_python()).with_file_name("pyspdxtools");
        let v = Command::new(validator)
            .arg("-i")
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            v.status.success(),
            "pyspdxtools: {}{}",
            String::from_utf8_lossy(&v.stdout),
            String::from_utf8_lossy(&v.stderr)
        );
        for (file, digest) in entry["files"].as_table().unwrap() {
            let hex = digest.as_str().unwrap().trim_start_matches("sha256:");
            assert!(spdx.contains(file) && spdx.contains(hex), "{file}: {spdx}");
        }
    }
}

fn vm_checks(l: &toml::Table, log: &str, reg: &Registry, store: &Path, tmp: &Path) {
    let vm: Vec<&str> = log.lines().filter(|l| l.starts_with("[node-vm]")).collect();
    let shown = vm.join("\n");
    assert!(
        vm.iter().any(|l| l.contains("boot test passed")
            && l.ends_with("KILN-READY node-vm root=/dev/vda2 /srv/data=/dev/vdb")),
        "{shown}"
    );
    for t in ["systemctl is-active ssh", "id admin"] {
        assert!(
            vm.iter()
                .any(|l| l.contains("passed in the VM") && l.ends_with(t)),
            "{t}: {shown}"
        );
    }
    assert_eq!(
        l["vm"]["node-vm"]["inputs"]["bases"]["node"].as_str(),
        Some(locked(l, "node", "digest"))
    );
    let version = locked_vm(l, "version");
    let kept = store.join("vms/node-vm").join(version);
    assert_eq!(qemu_img_format(&kept.join("node-vm.qcow2")), "qcow2");
    assert_eq!(qemu_img_format(&kept.join("node-vm.vmdk")), "vmdk");
    assert_eq!(qemu_img_format(&kept.join("node-vm.raw")), "raw");
    let files = l["vm"]["node-vm"]["files"].as_table().unwrap();
    assert_eq!(
        files.keys().collect::<Vec<_>>(),
        ["node-vm.qcow2", "node-vm.vmdk"]
    );
    // the registry holds the artifact the lock pins
    let repo = format!("{}/kiln-example/node-vm", reg.addr);
    let raw = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{repo}:{version}"),
    ]);
    assert_eq!(
        kiln_oci::digest::sha256(raw.as_bytes()).to_string(),
        locked_vm(l, "digest")
    );
    let m: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(m["artifactType"], "application/vnd.kiln.vm.v1");
    let types: Vec<&str> = m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["mediaType"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "application/vnd.kiln.vm.disk.v1.qcow2",
            "application/vnd.kiln.vm.disk.v1.vmdk"
        ]
    );
    // pulled back by the digest in the lock: the same bytes
    let back = tmp.join("node-vm-pulled");
    let by_digest = format!("{repo}@{}", locked_vm(l, "digest"));
    let out = kiln(
        store,
        &["vm", "pull", &by_digest, "-o", back.to_str().unwrap()],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    for (name, digest) in files {
        assert_eq!(sha256(&back.join(name)), digest.as_str().unwrap(), "{name}");
        assert_eq!(sha256(&back.join(name)), sha256(&kept.join(name)), "{name}");
    }
}

/// The bundled example's platforms: every chain image is an index of an
/// amd64 and an arm64 image (in kiln.lock, in the registry, run by Docker
/// on arm64), arm64 RUN steps ran under QEMU, and the cross-compiled C
/// program was built with no emulated step yet runs on arm64.
fn multi_platform_checks(l: &toml::Table, log: &str, reg: &Registry, store: &Path) {
    let version = locked(l, "hello", "version");
    let hello = format!("{}/kiln-example/hello:{version}", reg.addr);
    let platforms = l["image"]["hello"]["platforms"].as_table().unwrap();
    assert_eq!(
        platforms.keys().collect::<Vec<_>>(),
        ["linux/amd64", "linux/arm64"]
    );
    let raw: serde_json::Value = serde_json::from_str(&skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{hello}"),
    ]))
    .unwrap();
    assert_eq!(raw["mediaType"], "application/vnd.oci.image.index.v1+json");
    for m in raw["manifests"].as_array().unwrap() {
        let p = format!("linux/{}", m["platform"]["architecture"].as_str().unwrap());
        assert_eq!(
            m["digest"].as_str().unwrap(),
            platforms[&p].as_str().unwrap()
        );
    }
    let arch = docker_pull_and_run_on(&hello, Some("linux/arm64"), &["uname", "-m"]);
    assert_eq!(arch.trim(), "aarch64");
    assert!(
        l["image"]["toolchain"].get("platforms").is_none(),
        "the toolchain is built for this machine only"
    );

    // arm64 RUN steps are emulated and the log says so; the cross build is not
    assert!(
        log.lines()
            .any(|l| l.starts_with("[tools] linux/arm64") && l.contains("[emulated: linux/arm64]")),
        "{log}"
    );
    let cross: Vec<&str> = log.lines().filter(|l| l.starts_with("[hello-c]")).collect();
    assert!(
        cross.iter().any(|l| l.contains("aarch64-linux-gnu-gcc")),
        "{log}"
    );
    assert!(
        cross.iter().all(|l| !l.contains("emulated")),
        "no step of the cross build ran emulated:\n{}",
        cross.join("\n")
    );
    // the source COPY is the same for both platforms: done once
    assert_eq!(
        cross
            .iter()
            .filter(|l| l.contains("COPY [\"hello.c\"") && l.ends_with("(cached)"))
            .count(),
        1,
        "{}",
        cross.join("\n")
    );
    let run = kiln(
        store,
        &["run", "--platform", "linux/arm64", "hello-c:latest"],
    );
    assert_eq!(
        run.stdout.trim(),
        "hello from C on aarch64",
        "{}",
        run.stderr
    );
}

/// A base from another team's registry is pinned by digest in kiln.lock;
/// when its tag moves, plan says so and bake rebuilds on the new digest.
#[test]
fn a_registry_base_is_pinned_and_a_moved_tag_rebuilds() {
    let (dir, store) = setup();
    let reg = Registry::start(dir.path());
    let upstream = format!("{}/upstream/base:1", reg.addr);
    ok(kiln(&store, &["push", "busybox:test", &upstream]));
    let fdir = dir.path().join("edge");
    fs::create_dir_all(&fdir).unwrap();
    fs::write(
        fdir.join("Dockerfile"),
        format!("FROM {upstream}\nRUN echo edge > /edge\n"),
    )
    .unwrap();
    fs::write(fdir.join("kiln.toml"), "kiln = 1\n[factory]\nregistry = \"${KILN_TEST_REGISTRY}/factory\"\n[image.edge]\ntest = [\"grep -q edge /edge\"]\n").unwrap();
    let upstream_digest = || skopeo_digest(&format!("docker://{upstream}"));
    let first = upstream_digest();

    let v = bake_ok(&fdir, &store, &reg, &[]);
    assert_eq!(image(&v, "edge")["outcome"], "built");
    let l = lock(&fdir);
    assert_eq!(
        l["image"]["edge"]["inputs"]["bases"][&upstream]
            .as_str()
            .unwrap(),
        first
    );

    // The tag moves to another image.
    let other = dir.path().join("other");
    fs::create_dir_all(&other).unwrap();
    fs::write(
        other.join("Dockerfile"),
        "FROM busybox:test\nRUN touch /patched\n",
    )
    .unwrap();
    ok(kiln(
        &store,
        &["build", "-t", "patched:1", other.to_str().unwrap()],
    ));
    ok(kiln(&store, &["push", "patched:1", &upstream]));
    let second = upstream_digest();
    assert_ne!(first, second);

    let p = plan(&fdir, &store, &reg);
    assert_eq!(
        image(&p, "edge")["reasons"],
        serde_json::json!([{"reason": "base-moved", "base": upstream, "from": first, "to": second}])
    );
    let v = bake_ok(&fdir, &store, &reg, &["--dry-run"]);
    assert_eq!(image(&v, "edge")["outcome"], "would-build");
    assert_eq!(lock(&fdir), l, "a dry run changes nothing");

    let v = bake_ok(&fdir, &store, &reg, &[]);
    assert_eq!(image(&v, "edge")["outcome"], "built");
    let l2 = lock(&fdir);
    assert_eq!(
        l2["image"]["edge"]["inputs"]["bases"][&upstream]
            .as_str()
            .unwrap(),
        second
    );
    // The new image is built on the moved base: it has /patched.
    let version = locked(&l2, "edge", "version");
    let run = ok(kiln(
        &store,
        &["run", &format!("edge:{version}"), "--", "ls", "/patched"],
    ));
    assert_eq!(run.stdout, "/patched\n");
}

/// A bake killed in the middle resumes: what was published and locked is
/// kept, the rest is built by the next bake, and the store stays sound.
#[test]
fn a_killed_bake_resumes_where_it_stopped() {
    let (dir, store) = setup();
    let fdir = dir.path().join("factory");
    fs::create_dir_all(&fdir).unwrap();
    factory(&fdir);
    let reg = Registry::start(dir.path());
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("--store")
        .arg(&store)
        .args(["bake", "-f", fdir.to_str().unwrap()])
        .env("KILN_TEST_REGISTRY", &reg.addr)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until tools is locked: the applications (each sleeping 2 s in a
    // RUN) are then being built.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let text = fs::read_to_string(fdir.join("kiln.lock")).unwrap_or_default();
        if text.contains("[image.tools]") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "tools was never locked"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    child.kill().unwrap();
    child.wait().unwrap();
    let l = lock(&fdir);
    assert!(
        l["image"].get("app1").is_none(),
        "the apps were cut off: {l:?}"
    );

    let v = bake_ok(&fdir, &store, &reg, &[]);
    for name in ["base", "tools"] {
        assert_eq!(image(&v, name)["outcome"], "reused", "{name}");
    }
    for name in ["app1", "app2", "app3"] {
        assert_eq!(image(&v, name)["outcome"], "built", "{name}");
        assert_eq!(
            image(&v, name)["reasons"],
            serde_json::json!([{"reason": "never-built"}])
        );
    }
    let l2 = lock(&fdir);
    assert_eq!(l2["image"]["tools"], l["image"]["tools"]);
    let fsck = ok(kiln(&store, &["fsck"]));
    assert!(
        fsck.stdout.contains("clean") || fsck.stderr.contains("clean"),
        "{}{}",
        fsck.stdout,
        fsck.stderr
    );
}

/// A VM image made from an image without a kernel: its bake fails with the
/// reason before any disk is written — nothing kept, no lock entry — while
/// the image itself is baked and recorded as usual.
#[test]
fn a_vm_image_of_an_image_without_a_kernel_fails_before_any_disk() {
    let (dir, store) = setup();
    let fdir = dir.path().join("f");
    busybox_context(&fdir);
    fs::write(
        fdir.join("kiln.toml"),
        "kiln = 1\n[image.base]\ncontext = \"busybox\"\npublish = [\"store\"]\n\n[vm.base-vm]\nimage = \"base\"\npublish = [\"store\"]\n",
    )
    .unwrap();
    let out = kiln(&store, &["bake", "-f", fdir.to_str().unwrap(), "--json"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        outcomes(&v),
        [
            ("base".to_string(), "built".to_string()),
            ("base-vm".to_string(), "failed".to_string())
        ]
    );
    let error = image(&v, "base-vm")["error"].as_str().unwrap();
    assert!(
        error.contains("has no kernel") && error.contains("linux-image-cloud-amd64"),
        "{error}"
    );
    let l = lock(&fdir);
    assert!(l["image"].get("base").is_some());
    assert!(l.get("vm").is_none(), "{l:?}");
    let kept: Vec<_> = fs::read_dir(store.join("vms/base-vm"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(kept.is_empty(), "{kept:?}");
    // plan still says it is stale, and why
    let out = kiln(&store, &["plan", "-f", fdir.to_str().unwrap()]);
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("base-vm") && l.contains("never built")),
        "{}",
        out.stdout
    );
}

/// Freshness: a rebuild for `--refresh` or a due schedule runs the package
/// steps again instead of taking them from the cache; when it comes out the
/// same (but for volatile files such as apt's log) nothing is released and
/// nothing above it is rebuilt; when the repository changed, it is.
#[test]
fn a_refreshed_rebuild_releases_only_what_changed() {
    let (dir, store) = setup();
    let fdir = dir.path().join("factory");
    let repo = dir.path().join("repo");
    fs::create_dir_all(&repo).unwrap();
    fs::write(repo.join("version"), "1.0\n").unwrap();
    let files = HttpFiles::serve(&repo);
    let reg = Registry::start(dir.path());
    let w = |p: &str, text: &str| {
        let p = fdir.join(p);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    };
    busybox_context(&fdir);
    // a stand-in package manager: "installs" what the repository offers
    // and logs when it ran
    w(
        "busybox/rootfs/usr/bin/apt-get",
        &format!(
            "#!/bin/sh\nset -e\nmkdir -p /var/lib/fake /var/log/apt\nwget -q -O /var/lib/fake/version http://{}/version\ncat /proc/uptime >> /var/log/apt/history.log\n",
            files.addr
        ),
    );
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(
        fdir.join("busybox/rootfs/usr/bin/apt-get"),
        fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    w(
        "kiln.toml",
        "kiln = 1\n[factory]\nregistry = \"${KILN_TEST_REGISTRY}/fresh\"\n\
         [image.base]\ncontext = \"busybox\"\n\
         [image.app]\ncontext = \"app\"\nschedule = \"0 3 * * *\"\n\
         [image.top]\ncontext = \"top\"\n",
    );
    w("app/Dockerfile", "FROM base\nRUN apt-get install thing\n");
    w("top/Dockerfile", "FROM app\nCOPY note /note\n");
    w("top/note", "on top\n");
    let tags = |name: &str| {
        skopeo(&[
            "list-tags",
            "--tls-verify=false",
            &format!("docker://{}/fresh/{name}", reg.addr),
        ])
    };

    let v = bake_ok(&fdir, &store, &reg, &[]);
    assert!(outcomes(&v).iter().all(|(_, o)| o == "built"), "{v}");
    let l = lock(&fdir);
    let lock_text = fs::read(fdir.join("kiln.lock")).unwrap();
    let (app_tags, top_tags) = (tags("app"), tags("top"));

    // its schedule comes due (baked two days ago): the package step runs
    // again, the result is the same, top is not rebuilt, and the next plan
    // counts the schedule from this check
    let stale_text = String::from_utf8(lock_text.clone()).unwrap().replace(
        locked(&l, "app", "baked_at"),
        &(chrono::Utc::now() - chrono::Duration::days(2))
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    );
    fs::write(fdir.join("kiln.lock"), &stale_text).unwrap();
    let p = plan(&fdir, &store, &reg);
    assert_eq!(
        image(&p, "app")["reasons"][0]["reason"],
        "schedule-due",
        "{p}"
    );
    let (out, v) = bake(&fdir, &store, &reg, &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(image(&v, "app")["outcome"], "unchanged", "{v}");
    assert_eq!(image(&v, "top")["outcome"], "reused", "{v}");
    assert!(
        out.stderr.contains("(1 steps run, 0 cached)"),
        "{}",
        out.stderr
    );
    assert_eq!(
        fs::read_to_string(fdir.join("kiln.lock")).unwrap(),
        stale_text
    );
    let p = plan(&fdir, &store, &reg);
    assert_eq!(image(&p, "app")["stale"], false, "{p}");
    assert_eq!(
        (tags("app"), tags("top")),
        (app_tags.clone(), top_tags.clone())
    );

    // --refresh: the package step runs again (apt's log differs, the rest
    // is the same): unchanged, nothing published, the lock byte for byte
    let (out, v) = bake(&fdir, &store, &reg, &["--refresh"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        outcomes(&v).iter().all(|(_, o)| o == "unchanged"),
        "{:?}",
        outcomes(&v)
    );
    assert!(
        out.stderr.contains("(1 steps run, 0 cached)"),
        "the package step ran again:\n{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("the same content but for volatile files")
            && out.stderr.contains("/var/log/apt/history.log"),
        "{}",
        out.stderr
    );
    assert_eq!(
        fs::read_to_string(fdir.join("kiln.lock")).unwrap(),
        stale_text
    );
    assert_eq!(
        (tags("app"), tags("top")),
        (app_tags.clone(), top_tags.clone())
    );
    assert_eq!(image(&v, "app")["version"], locked(&l, "app", "version"));

    // the repository publishes 2.0: a refresh releases app and top anew
    fs::write(repo.join("version"), "2.0\n").unwrap();
    let (out, v) = bake(&fdir, &store, &reg, &["--refresh"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(image(&v, "base")["outcome"], "unchanged", "{v}");
    assert_eq!(image(&v, "app")["outcome"], "built", "{v}");
    assert_eq!(image(&v, "top")["outcome"], "built", "{v}");
    assert!(out.stderr.contains("differs from app:"), "{}", out.stderr);
    let l2 = lock(&fdir);
    assert_ne!(locked(&l2, "app", "version"), locked(&l, "app", "version"));
    let inside = ok(kiln(
        &store,
        &[
            "run",
            &format!("app:{}", locked(&l2, "app", "version")),
            "--",
            "cat",
            "/var/lib/fake/version",
        ],
    ));
    assert_eq!(inside.stdout, "2.0\n");
    assert_ne!(tags("app"), app_tags);
}
