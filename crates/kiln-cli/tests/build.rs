//! `kiln build` and `kiln run` as a user runs them, as root, with real
//! namespaces and overlay mounts, and the images checked by real tools
//! (Docker engine, skopeo, umoci). Each test has its own store.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::*;

#[test]
fn build_and_run_an_image() {
    let (dir, store) = setup();
    let ctx = app_context(dir.path(), APP);
    let b = ok(kiln(
        &store,
        &["build", "-t", "app:1", ctx.to_str().unwrap()],
    ));
    assert!(
        b.stderr.contains("  base | hello from the context"),
        "RUN output is shown:\n{}",
        b.stderr
    );
    assert!(
        b.stderr.contains("  stage-1 | heredoc in /app"),
        "{}",
        b.stderr
    );
    let r = ok(kiln(&store, &["run", "app:1"]));
    assert_eq!(r.stdout, "hello from the context\n");
    let r = kiln(
        &store,
        &[
            "run",
            "app:1",
            "--",
            "sh",
            "-c",
            "cat /id; ls /bin/false; stat -c '%U:%G' /app/src/a; hostname; echo $$; exit 7",
        ],
    );
    assert_eq!(r.code, 7, "kiln run returns the command's exit code");
    assert!(
        r.stdout
            .contains("uid=1000(app) gid=1000(app) groups=1000(app),2000(extra)"),
        "USER resolved through passwd and group:\n{}",
        r.stdout
    );
    assert!(r.stdout.contains("app:app"), "--chown:\n{}", r.stdout);
    assert!(
        r.stdout.contains("kiln\n1\n"),
        "own UTS and PID namespaces:\n{}",
        r.stdout
    );
    assert!(
        r.stderr.contains("/bin/false: No such file"),
        "the whiteout hides the deleted file:\n{}",
        r.stderr
    );
}

#[test]
fn nothing_changed_runs_nothing_and_one_change_reruns_only_what_follows() {
    let (dir, store) = setup();
    let ctx = app_context(dir.path(), APP);
    let first = ok(kiln(
        &store,
        &["build", "-t", "app:1", ctx.to_str().unwrap()],
    ));
    let before = files_and_times(&store);
    let again = ok(kiln(
        &store,
        &["build", "-t", "app:1", ctx.to_str().unwrap()],
    ));
    assert_eq!(
        before,
        files_and_times(&store),
        "a rebuild with nothing changed writes nothing"
    );
    assert!(again.stderr.contains("(0 steps run"), "{}", again.stderr);
    assert_eq!(first.stdout, again.stdout, "the same image digest");
    fs::write(ctx.join("src/b"), "changed\n").unwrap();
    let changed = ok(kiln(
        &store,
        &["build", "-t", "app:1", ctx.to_str().unwrap()],
    ));
    // layer steps: RUN, WORKDIR, COPY, COPY src/, RUN | COPY --from, RUN;
    // COPY src/ and everything after it rerun
    assert!(
        changed.stderr.contains("(4 steps run, 3 cached)"),
        "{}",
        changed.stderr
    );
    assert!(
        changed
            .stderr
            .contains("line 4: COPY [\"greeting.txt\",\".\"] CACHED"),
        "{}",
        changed.stderr
    );
    let no_cache = ok(kiln(
        &store,
        &["build", "--no-cache", "-t", "app:1", ctx.to_str().unwrap()],
    ));
    assert!(
        no_cache.stderr.contains("(7 steps run, 0 cached)"),
        "{}",
        no_cache.stderr
    );
}

#[test]
fn same_inputs_same_digest_in_two_stores() {
    let dir = tempfile::tempdir().unwrap();
    let base = busybox_context(dir.path());
    let ctx = app_context(dir.path(), APP);
    let mut digests = Vec::new();
    for name in ["one", "two"] {
        let store = dir.path().join(name);
        let env = [("SOURCE_DATE_EPOCH", "1700000000")];
        ok(kiln_env(
            &store,
            &["build", "-t", "busybox:test", base.to_str().unwrap()],
            &env,
        ));
        digests.push(
            ok(kiln_env(
                &store,
                &["build", "-t", "app:1", ctx.to_str().unwrap()],
                &env,
            ))
            .stdout,
        );
    }
    assert_eq!(digests[0], digests[1]);
}

#[test]
fn copying_a_directory_is_reproducible_without_source_date_epoch() {
    // COPY of a directory into a new and into an existing directory (the
    // new one takes the source directory's mtime, the existing one keeps
    // its own), of a file into new nested directories, and a new nested
    // WORKDIR: two builds seconds apart give the same layers
    let (dir, store) = setup();
    let ctx = app_context(
        dir.path(),
        "FROM busybox:test\nCOPY src /data\nCOPY src/ /bin/\nCOPY greeting.txt /new/deep/\nWORKDIR /work/a/b\n",
    );
    let src_mtime = fs::metadata(ctx.join("src"))
        .unwrap()
        .modified()
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut layers = Vec::new();
    for name in ["copy:1", "copy:2"] {
        ok(kiln(&store, &["build", "-t", name, ctx.to_str().unwrap()]));
        let inspect: serde_json::Value =
            serde_json::from_str(&ok(kiln(&store, &["inspect", name])).stdout).unwrap();
        // the image's creation time differs; its layers must not
        layers.push(inspect["manifest"]["layers"].clone());
        ok(kiln(&store, &["rmi", name]));
        ok(kiln(&store, &["prune"]));
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    assert_eq!(layers[0], layers[1]);
    ok(kiln(
        &store,
        &["build", "-t", "copy:3", ctx.to_str().unwrap()],
    ));
    let times = ok(kiln(
        &store,
        &["run", "copy:3", "--", "stat", "-c", "%Y", "/data", "/bin"],
    ))
    .stdout;
    let base_bin = ok(kiln(
        &store,
        &["run", "busybox:test", "--", "stat", "-c", "%Y", "/bin"],
    ))
    .stdout;
    assert_eq!(times, format!("{src_mtime}\n{}", base_bin));
}

#[test]
fn a_failing_step_names_its_line_and_leaves_the_store_intact() {
    let (dir, store) = setup();
    let ctx = app_context(dir.path(), "FROM busybox:test\nRUN echo first\nRUN echo about to fail && echo on stderr >&2 && exit 3\nRUN echo never\n");
    let r = kiln(
        &store,
        &["build", "-t", "busybox:test", ctx.to_str().unwrap()],
    );
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("Dockerfile:3: RUN echo about to fail"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("exited with code 3"), "{}", r.stderr);
    assert!(
        r.stderr.contains("| on stderr"),
        "the last lines of output:\n{}",
        r.stderr
    );
    assert!(!r.stderr.contains("never"));
    // the name still points at the earlier image, and the store is clean
    ok(kiln(&store, &["run", "busybox:test", "--", "true"]));
    let f = ok(kiln(&store, &["fsck"]));
    assert!(f.stdout.is_empty(), "{}", f.stdout);
}

#[test]
fn bad_sources_are_reported_with_their_line() {
    let (dir, store) = setup();
    for (df, want) in [
        (
            "FROM busybox:test\nCOPY missing.txt /\n",
            "Dockerfile:2: COPY",
        ),
        (
            "FROM busybox:test\nCOPY ../outside /\n",
            "outside the build context",
        ),
        (
            "FROM no-such-image:1\n",
            "Dockerfile:1: FROM no-such-image:1",
        ),
    ] {
        let ctx = app_context(dir.path(), df);
        let r = kiln(&store, &["build", "-t", "x:1", ctx.to_str().unwrap()]);
        assert_eq!(r.code, 1, "{df}");
        assert!(r.stderr.contains(want), "{df}: {}", r.stderr);
    }
    assert!(
        !kiln(&store, &["images"]).stdout.contains("x:1"),
        "nothing was tagged"
    );
}

#[test]
fn secrets_and_cache_mounts() {
    let (dir, store) = setup();
    let secret = dir.path().join("token");
    fs::write(&secret, "s3cret-value").unwrap();
    let df = "FROM busybox:test\nRUN --mount=type=secret,id=tok cat /run/secrets/tok > /dev/null && echo saw $(wc -c < /run/secrets/tok) bytes\nRUN --mount=type=cache,target=/cache echo x >> /cache/log && wc -l < /cache/log\n";
    let ctx = app_context(dir.path(), df);
    let r = ok(kiln(
        &store,
        &[
            "build",
            "--secret",
            &format!("id=tok,src={}", secret.display()),
            "-t",
            "s:1",
            ctx.to_str().unwrap(),
        ],
    ));
    assert!(r.stderr.contains("saw 12 bytes"), "{}", r.stderr);
    let out = dir.path().join("rootfs");
    ok(kiln(
        &store,
        &[
            "build",
            "--secret",
            &format!("id=tok,src={}", secret.display()),
            "-t",
            "s:1",
            "-o",
            &format!("type=local,dest={}", out.display()),
            ctx.to_str().unwrap(),
        ],
    ));
    assert!(
        !out.join("run/secrets").exists(),
        "the secret mount point stays out of the layer"
    );
    assert!(
        !out.join("cache").exists(),
        "the cache mount point stays out of the layer"
    );
    let blobs = store.join("oci/blobs/sha256");
    for entry in fs::read_dir(blobs).unwrap() {
        let bytes = fs::read(entry.unwrap().path()).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains("s3cret-value"), "the secret is in no blob");
    }
}

#[test]
fn images_load_into_docker_and_real_tools_read_them() {
    let (dir, store) = setup();
    let ctx = app_context(dir.path(), APP);
    ok(kiln(
        &store,
        &["build", "-t", "kiln-test/app:docker", ctx.to_str().unwrap()],
    ));
    let archive = dir.path().join("app.tar");
    ok(kiln(
        &store,
        &[
            "save",
            "kiln-test/app:docker",
            "--format",
            "docker",
            "-o",
            archive.to_str().unwrap(),
        ],
    ));
    let load = Command::new("docker")
        .args(["load", "-i"])
        .arg(&archive)
        .output()
        .expect("docker (the engine is started by scripts/test)");
    assert!(
        load.status.success(),
        "docker load: {}",
        String::from_utf8_lossy(&load.stderr)
    );
    let run = Command::new("docker")
        .args(["run", "--rm", "--network", "host", "kiln-test/app:docker"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&run.stdout),
        "hello from the context\n",
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let _ = Command::new("docker")
        .args(["rmi", "kiln-test/app:docker"])
        .output();

    let inspect = Command::new("skopeo")
        .arg("inspect")
        .arg(format!("oci:{}/oci:kiln-test/app:docker", store.display()))
        .output()
        .unwrap();
    assert!(
        inspect.status.success(),
        "skopeo: {}",
        String::from_utf8_lossy(&inspect.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(v["Layers"].as_array().unwrap().len(), 8);

    let layout = dir.path().join("layout");
    ok(kiln(
        &store,
        &[
            "build",
            "-t",
            "app",
            "-o",
            &format!("type=oci-layout,dest={}", layout.display()),
            ctx.to_str().unwrap(),
        ],
    ));
    let bundle = dir.path().join("bundle");
    let umoci = Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:app:latest", layout.display()))
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(
        umoci.status.success(),
        "umoci: {}",
        String::from_utf8_lossy(&umoci.stderr)
    );
    assert_eq!(
        fs::read_to_string(bundle.join("rootfs/app/greeting.txt")).unwrap(),
        "hello from the context\n"
    );
}

#[test]
fn a_killed_build_leaves_a_usable_store() {
    let (dir, store) = setup();
    let df = "FROM busybox:test\nRUN echo one > /one && sleep 0.3\nCOPY greeting.txt /\nRUN echo two > /two && sleep 0.3\nRUN echo three > /three\n";
    let ctx = app_context(dir.path(), df);
    for delay_ms in [50u64, 250, 450, 700, 900] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .arg("--store")
            .arg(&store)
            .args([
                "build",
                "--no-cache",
                "-t",
                "killed:1",
                ctx.to_str().unwrap(),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let f = kiln(&store, &["fsck"]);
        assert_eq!(
            f.code, 0,
            "after a kill at {delay_ms} ms the store is clean:\n{}{}",
            f.stdout, f.stderr
        );
    }
    // no step of a killed build outlives it
    std::thread::sleep(std::time::Duration::from_millis(200));
    let ps = Command::new("ps").args(["-eo", "args"]).output().unwrap();
    let mine = store.display().to_string();
    let left: Vec<_> = String::from_utf8_lossy(&ps.stdout)
        .lines()
        .filter(|l| l.contains("__exec") && l.contains(&mine))
        .map(str::to_string)
        .collect();
    assert!(left.is_empty(), "step helpers left running: {left:?}");
    ok(kiln(
        &store,
        &["build", "-t", "killed:1", ctx.to_str().unwrap()],
    ));
    let r = ok(kiln(
        &store,
        &["run", "killed:1", "--", "cat", "/one", "/two", "/three"],
    ));
    assert_eq!(r.stdout, "one\ntwo\nthree\n");
}

#[test]
fn two_builds_into_one_store_at_once() {
    let (dir, store) = setup();
    let mut children = Vec::new();
    for n in 0..2 {
        let ctx = dir.path().join(format!("c{n}"));
        fs::create_dir_all(&ctx).unwrap();
        fs::write(
            ctx.join("Dockerfile"),
            format!("FROM busybox:test\nRUN echo shared > /shared\nRUN echo {n} > /n\n"),
        )
        .unwrap();
        children.push(
            Command::new(env!("CARGO_BIN_EXE_kiln"))
                .arg("--store")
                .arg(&store)
                .args(["build", "-t", &format!("par:{n}"), ctx.to_str().unwrap()])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap(),
        );
    }
    for (n, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "build {n}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for n in 0..2 {
        let r = ok(kiln(
            &store,
            &["run", &format!("par:{n}"), "--", "cat", "/shared", "/n"],
        ));
        assert_eq!(r.stdout, format!("shared\n{n}\n"));
    }
    assert_eq!(kiln(&store, &["fsck"]).code, 0);
}

#[test]
fn prune_keeps_what_names_reach() {
    let (dir, store) = setup();
    let ctx = app_context(dir.path(), APP);
    ok(kiln(
        &store,
        &["build", "-t", "app:1", ctx.to_str().unwrap()],
    ));
    let blobs = || {
        fs::read_dir(store.join("oci/blobs/sha256"))
            .unwrap()
            .count()
    };
    let before = blobs();
    ok(kiln(&store, &["rmi", "app:1"]));
    let p = ok(kiln(&store, &["prune"]));
    assert!(p.stderr.contains("removed"), "{}", p.stderr);
    assert!(blobs() < before);
    ok(kiln(&store, &["run", "busybox:test", "--", "true"]));
    assert_eq!(kiln(&store, &["fsck"]).code, 0);
    ok(kiln(
        &store,
        &["build", "-t", "app:1", ctx.to_str().unwrap()],
    ));
    assert_eq!(
        ok(kiln(&store, &["run", "app:1"])).stdout,
        "hello from the context\n"
    );
}

#[test]
fn bases_from_archives_and_layouts_and_hostile_ones_rejected() {
    let (dir, store) = setup();
    let oci = dir.path().join("base-oci.tar");
    let docker = dir.path().join("base-docker.tar");
    ok(kiln(
        &store,
        &[
            "save",
            "busybox:test",
            "--format",
            "oci",
            "-o",
            oci.to_str().unwrap(),
        ],
    ));
    ok(kiln(
        &store,
        &[
            "save",
            "busybox:test",
            "--format",
            "docker",
            "-o",
            docker.to_str().unwrap(),
        ],
    ));
    let layout = busybox_layout(dir.path(), &store);
    for from in [
        format!("oci-archive:{}", oci.display()),
        format!("docker-archive:{}", docker.display()),
        format!("oci-layout:{}:busybox:test", layout.display()),
    ] {
        let fresh = dir
            .path()
            .join(format!("store-{}", from.split(':').next().unwrap()));
        let ctx = app_context(
            dir.path(),
            &format!("FROM {from}\nRUN echo on an imported base > /msg\nCMD [\"cat\", \"/msg\"]\n"),
        );
        ok(kiln(
            &fresh,
            &["build", "-t", "imported:1", ctx.to_str().unwrap()],
        ));
        assert_eq!(
            ok(kiln(&fresh, &["run", "imported:1"])).stdout,
            "on an imported base\n",
            "{from}"
        );
    }

    // a docker archive whose layer writes outside the root
    let mut layer = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.as_old_mut().name[..9].copy_from_slice(b"../escape");
    h.set_size(0);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    layer.append(&h, std::io::empty()).unwrap();
    let archive = docker_archive(dir.path(), "hostile", &layer.into_inner().unwrap());
    let ctx = app_context(
        dir.path(),
        &format!("FROM docker-archive:{}\nRUN true\n", archive.display()),
    );
    let r = kiln(&store, &["build", "-t", "evil:1", ctx.to_str().unwrap()]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("Dockerfile:1: FROM docker-archive:")
            && r.stderr.contains("layer entry \"../escape\""),
        "{}",
        r.stderr
    );

    // a truncated archive is an error of the FROM line too
    let bytes = fs::read(&oci).unwrap();
    let cut = dir.path().join("truncated.tar");
    fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let ctx = app_context(
        dir.path(),
        &format!("FROM oci-archive:{}\nRUN true\n", cut.display()),
    );
    let r = kiln(&store, &["build", "-t", "cut:1", ctx.to_str().unwrap()]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("Dockerfile:1: FROM oci-archive:"),
        "{}",
        r.stderr
    );
    assert!(!dir.path().join("escape").exists() && !store.join("escape").exists());
    assert_eq!(kiln(&store, &["fsck"]).code, 0);
}

#[test]
fn add_from_a_url_checks_the_checksum() {
    let (dir, store) = setup();
    let www = dir.path().join("www");
    fs::create_dir_all(&www).unwrap();
    fs::write(www.join("tool.txt"), "downloaded content\n").unwrap();
    let sum = format!("sha256:{}", sha256_hex(b"downloaded content\n"));
    let http = HttpFiles::serve(&www);
    let url = format!("http://{}/tool.txt", http.addr);
    let ctx = app_context(
        dir.path(),
        &format!("FROM busybox:test\nADD --checksum={sum} {url} /opt/\nADD {url} /plain\n"),
    );
    ok(kiln(
        &store,
        &["build", "-t", "fetched:1", ctx.to_str().unwrap()],
    ));
    let r = ok(kiln(
        &store,
        &[
            "run",
            "fetched:1",
            "--",
            "sh",
            "-c",
            "cat /opt/tool.txt; stat -c %a /opt/tool.txt /plain",
        ],
    ));
    assert_eq!(r.stdout, "downloaded content\n600\n600\n");
    let wrong = format!("sha256:{}", "0".repeat(64));
    let ctx = app_context(
        dir.path(),
        &format!("FROM busybox:test\nADD --checksum={wrong} {url} /opt/\n"),
    );
    let r = kiln(
        &store,
        &["build", "-t", "fetched:bad", ctx.to_str().unwrap()],
    );
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("Dockerfile:2: ADD") && r.stderr.contains("checksum mismatch"),
        "{}",
        r.stderr
    );
    assert!(!kiln(&store, &["images"]).stdout.contains("fetched:bad"));
}

#[test]
fn run_mount_bind_from_another_stage() {
    let (dir, store) = setup();
    let df = "FROM busybox:test AS tools\nRUN mkdir -p /opt/tools && echo 'echo tool ran' > /opt/tools/tool.sh\nFROM busybox:test\nRUN --mount=type=bind,from=tools,source=/opt/tools,target=/mnt/tools sh /mnt/tools/tool.sh > /result && (touch /mnt/tools/x 2>/dev/null && echo writable || echo read-only) >> /result\n";
    let ctx = app_context(dir.path(), df);
    ok(kiln(
        &store,
        &["build", "-t", "bound:1", ctx.to_str().unwrap()],
    ));
    let r = ok(kiln(
        &store,
        &[
            "run",
            "bound:1",
            "--",
            "sh",
            "-c",
            "cat /result; ls /mnt 2>&1 || true",
        ],
    ));
    assert!(
        r.stdout.starts_with("tool ran\nread-only\n"),
        "{}",
        r.stdout
    );
    assert!(
        !r.stdout.contains("tools"),
        "the mount point stays out of the layer: {}",
        r.stdout
    );
}

#[test]
fn zstd_compressed_images() {
    let (dir, store) = setup();
    let ctx = app_context(dir.path(), "FROM busybox:test\nRUN echo zstd > /z\n");
    ok(kiln(
        &store,
        &[
            "build",
            "--compression",
            "zstd",
            "-t",
            "z:1",
            ctx.to_str().unwrap(),
        ],
    ));
    assert_eq!(
        ok(kiln(&store, &["run", "z:1", "--", "cat", "/z"])).stdout,
        "zstd\n"
    );
    let inspect = ok(kiln(&store, &["inspect", "z:1"]));
    assert!(
        inspect
            .stdout
            .contains("application/vnd.oci.image.layer.v1.tar+zstd"),
        "{}",
        inspect.stdout
    );
}

#[test]
fn independent_stages_build_at_the_same_time() {
    let (dir, store) = setup();
    // each stage waits for the other's marker in a shared cache mount: built
    // one after the other, the first would give up after five seconds
    let wait = |me: &str, other: &str| {
        format!("RUN --mount=type=cache,id=rendezvous,target=/sync touch /sync/{me} && for i in $(seq 50); do [ -e /sync/{other} ] && echo met > /{me} && exit 0; sleep 0.1; done; exit 1\n")
    };
    let df = format!(
        "FROM busybox:test AS a\n{}FROM busybox:test AS b\n{}FROM busybox:test\nCOPY --from=a /a /a\nCOPY --from=b /b /b\n",
        wait("a", "b"),
        wait("b", "a")
    );
    let ctx = app_context(dir.path(), &df);
    ok(kiln(
        &store,
        &["build", "-t", "waves:1", ctx.to_str().unwrap()],
    ));
    assert_eq!(
        ok(kiln(&store, &["run", "waves:1", "--", "cat", "/a", "/b"])).stdout,
        "met\nmet\n"
    );
}

#[test]
fn locked_cache_mounts_are_used_one_step_at_a_time() {
    let (dir, store) = setup();
    let step = |me: &str| {
        format!("RUN --mount=type=cache,id=serial,target=/c,sharing=locked echo start {me} >> /c/log && sleep 0.5 && echo end {me} >> /c/log && cp /c/log /log-{me}\n")
    };
    let df = format!("FROM busybox:test AS a\n{}FROM busybox:test AS b\n{}FROM busybox:test\nCOPY --from=a /log-a /\nCOPY --from=b /log-b /\n", step("a"), step("b"));
    let ctx = app_context(dir.path(), &df);
    ok(kiln(
        &store,
        &["build", "-t", "locked:1", ctx.to_str().unwrap()],
    ));
    let r = ok(kiln(
        &store,
        &[
            "run",
            "locked:1",
            "--",
            "sh",
            "-c",
            "cat /log-a /log-b | sort -u | wc -l; cat /log-a; echo; cat /log-b",
        ],
    ));
    // whichever ran second saw the first's complete start/end pair before its own
    let second = r.stdout.contains("\nstart a\nend a\nstart b\nend b\n")
        || r.stdout.contains("\nstart b\nend b\nstart a\nend a\n");
    assert!(second, "the steps overlapped:\n{}", r.stdout);
}

#[test]
fn network_none_has_only_loopback() {
    let (dir, store) = setup();
    let df = "FROM busybox:test\nRUN --network=none cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' ' > /ifaces\nRUN cat /proc/net/dev | tail -n +3 | wc -l > /host-count\n";
    let ctx = app_context(dir.path(), df);
    ok(kiln(
        &store,
        &["build", "-t", "net:1", ctx.to_str().unwrap()],
    ));
    let r = ok(kiln(
        &store,
        &[
            "run",
            "net:1",
            "--",
            "sh",
            "-c",
            "cat /ifaces; cat /host-count",
        ],
    ));
    let mut lines = r.stdout.lines();
    assert_eq!(lines.next(), Some("lo"));
    let host: usize = lines.last().unwrap().trim().parse().unwrap();
    assert!(host >= 1, "the default network is the host's");
}

/// Every file of a tree with its size and modification time.
fn files_and_times(root: &Path) -> Vec<(PathBuf, u64, std::time::SystemTime)> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for e in fs::read_dir(&dir).unwrap().flatten() {
            let m = fs::symlink_metadata(e.path()).unwrap();
            if m.is_dir() {
                todo.push(e.path());
            } else {
                out.push((e.path(), m.len(), m.modified().unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_relative_store_path_works_for_builds_and_runs() {
    let (dir, _) = setup();
    let ctx = dir.path().join("busybox");
    fs::write(
        ctx.join("Dockerfile.run"),
        "FROM scratch\nCOPY rootfs/ /\nRUN echo built > /built\n",
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .current_dir(dir.path())
            .args(["--store", "relative-store"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    run(&[
        "build",
        "-t",
        "rel:1",
        "-f",
        "busybox/Dockerfile.run",
        "busybox",
    ]);
    assert_eq!(run(&["run", "rel:1", "--", "cat", "/built"]), "built\n");
}

#[test]
fn foreign_architectures_without_a_binfmt_handler_fail_before_any_step() {
    // CI registers Debian's QEMU handlers; the loong64 one is unregistered
    // for this test (no other test uses loong64), so loong64 programs
    // cannot run here, as on a machine without qemu-user-static.
    let _off = HandlerOff::new("qemu-loongarch64");
    let (dir, store) = setup();
    let ctx = app_context(dir.path(), "FROM busybox:test\n");
    let layout = dir.path().join("layout");
    ok(kiln(
        &store,
        &[
            "build",
            "-t",
            "bb",
            "-o",
            &format!("type=oci-layout,dest={}", layout.display()),
            ctx.to_str().unwrap(),
        ],
    ));
    // umoci relabels the image loong64, as a pulled loong64 base would be
    let umoci = Command::new("umoci")
        .args([
            "config",
            "--architecture",
            "loong64",
            "--tag",
            "arm",
            "--image",
        ])
        .arg(format!("{}:bb:latest", layout.display()))
        .output()
        .unwrap();
    assert!(
        umoci.status.success(),
        "umoci: {}",
        String::from_utf8_lossy(&umoci.stderr)
    );
    let base = format!("oci-layout:{}:arm", layout.display());

    // without RUN nothing needs to execute: the build works and is loong64
    let plain = dockerfile_dir(
        dir.path(),
        "plain",
        &format!("FROM {base}\nCOPY Dockerfile /\n"),
    );
    ok(kiln(
        &store,
        &["build", "-t", "arm:1", plain.to_str().unwrap()],
    ));
    let inspect: serde_json::Value =
        serde_json::from_str(&ok(kiln(&store, &["inspect", "arm:1"])).stdout).unwrap();
    assert_eq!(inspect["config"]["architecture"], "loong64");

    // with RUN the build stops before its first step, naming the FROM line
    let runs = dockerfile_dir(
        dir.path(),
        "runs",
        &format!("FROM busybox:test AS native\nRUN echo native > /n\nFROM {base}\nCOPY --from=native /n /n\nRUN echo never\n"),
    );
    let out = kiln(&store, &["build", "-t", "arm:2", runs.to_str().unwrap()]);
    assert_ne!(out.code, 0);
    assert_mentions(
        &out.stderr,
        &[
            "Dockerfile:3",
            "cannot run loong64 programs",
            "apt-get install qemu-user-static",
        ],
    );
    assert!(
        !out.stderr.contains("RUN echo native"),
        "no step ran, not even the native stage's:\n{}",
        out.stderr
    );
    assert!(kiln(&store, &["inspect", "arm:2"]).code != 0);

    // kiln run says the same instead of failing with an exec format error
    let run = kiln(&store, &["run", "arm:1", "--", "true"]);
    assert_ne!(run.code, 0);
    assert_mentions(&run.stderr, &["cannot run arm:1", "qemu-user-static"]);
}

/// Unregisters a binfmt_misc handler until dropped, then registers it again
/// with binfmt-support's `update-binfmts --enable`; nothing happens where
/// the handler does not exist.
struct HandlerOff(Option<String>);

impl HandlerOff {
    fn new(name: &str) -> Self {
        let path = Path::new("/proc/sys/fs/binfmt_misc").join(name);
        let registered = path.exists();
        if registered {
            fs::write(&path, "-1").expect("unregistering the handler");
        }
        HandlerOff(registered.then(|| name.to_string()))
    }
}

impl Drop for HandlerOff {
    fn drop(&mut self) {
        if let Some(name) = &self.0 {
            let _ = Command::new("update-binfmts")
                .args(["--enable", name])
                .status();
        }
    }
}

#[test]
fn naming_waits_for_no_other_build_and_an_rmi_is_never_undone() {
    let (dir, store) = setup();
    let quick = |name: &str, text: &str| {
        let ctx = dir.path().join(format!("quick-{text}"));
        fs::create_dir_all(&ctx).unwrap();
        fs::write(
            ctx.join("Dockerfile"),
            format!("FROM busybox:test\nRUN echo {text} > /marker\n"),
        )
        .unwrap();
        kiln(&store, &["build", "-t", name, ctx.to_str().unwrap()])
    };
    ok(quick("x:1", "old"));
    // a long build of x:1: its step waits until the test lets it go
    let long = dir.path().join("long");
    fs::create_dir_all(&long).unwrap();
    fs::write(
        long.join("Dockerfile"),
        "FROM busybox:test\nRUN --mount=type=bind,source=.,target=/ctx sh -c 'echo waiting; while [ ! -e /ctx/go ]; do sleep 0.05; done; echo new > /marker'\n",
    )
    .unwrap();
    let mut a = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("--store")
        .arg(&store)
        .args(["build", "-t", "x:1", long.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(a.stderr.take().unwrap()));
    let started = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|l| l.contains("| waiting"));
    assert!(started, "the long build's step did not start");
    // another build names its image while the long one runs
    let b = ok(quick("y:1", "other"));
    assert!(!b.stderr.contains("waiting"), "{}", b.stderr);
    assert!(
        a.try_wait().unwrap().is_none(),
        "the long build ended early"
    );
    // rmi acts now, on the name as it is now (the old image)
    ok(kiln(&store, &["rmi", "x:1"]));
    assert!(a.try_wait().unwrap().is_none());
    fs::write(long.join("go"), "").unwrap();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(a.wait().unwrap().success(), "{rest:?}");
    assert!(rest.iter().any(|l| l.contains("named x:1")), "{rest:?}");
    // the name the build reported stays, and prune keeps its image
    ok(kiln(&store, &["prune"]));
    assert_eq!(
        ok(kiln(&store, &["run", "x:1", "--", "cat", "/marker"])).stdout,
        "new\n"
    );
    assert_eq!(
        ok(kiln(&store, &["run", "y:1", "--", "cat", "/marker"])).stdout,
        "other\n"
    );
    assert_eq!(kiln(&store, &["fsck"]).code, 0);
}

#[test]
fn rmi_removes_every_name_it_can_and_says_which_it_could_not() {
    let (_dir, store) = setup();
    ok(kiln(
        &store,
        &[
            "build",
            "-t",
            "present:1",
            "--no-cache",
            _dir.path().join("busybox").to_str().unwrap(),
        ],
    ));
    let r = kiln(&store, &["rmi", "missing:1", "present:1"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_mentions(&r.stderr, &["missing:1", "removed present:1"]);
    assert!(!kiln(&store, &["images"]).stdout.contains("present"));
}

#[test]
fn fsck_checks_snapshots_against_their_layers_and_repairs_them() {
    let (dir, store) = setup();
    let ctx = app_context(dir.path(), APP);
    ok(kiln(
        &store,
        &["build", "-t", "app:1", ctx.to_str().unwrap()],
    ));
    assert_eq!(ok(kiln(&store, &["fsck", "--full"])).stdout, "");
    let snapshot_of = |rel: &str| {
        fs::read_dir(store.join("snapshots"))
            .unwrap()
            .flatten()
            .map(|e| e.path().join(rel))
            .find(|p| p.is_file())
            .unwrap()
    };
    // emptied by hand: found by its size, without --full
    fs::write(snapshot_of("bin/busybox"), b"").unwrap();
    let r = kiln(&store, &["fsck"]);
    assert_eq!(r.code, 1);
    assert_mentions(
        &r.stdout,
        &["/bin/busybox: 0 bytes instead of", "kiln fsck --repair"],
    );
    // the same size, other bytes: only --full reads them
    let greeting = snapshot_of("app/greeting.txt");
    let len = fs::metadata(&greeting).unwrap().len() as usize;
    fs::write(&greeting, "x".repeat(len)).unwrap();
    let r = kiln(&store, &["fsck", "--full"]);
    assert_mentions(&r.stdout, &["/app/greeting.txt: its content differs"]);
    let r = ok(kiln(&store, &["fsck", "--full", "--repair"]));
    assert_eq!(r.stdout.lines().count(), 2, "{}", r.stdout);
    assert_mentions(&r.stdout, &["removed"]);
    assert_eq!(
        ok(kiln(&store, &["run", "app:1"])).stdout,
        "hello from the context\n"
    );
    assert_eq!(ok(kiln(&store, &["fsck", "--full"])).stdout, "");
}

#[test]
fn an_interrupted_build_leaves_nothing_in_the_stores_tmp() {
    let (dir, store) = setup();
    let ctx = dir.path().join("interrupted");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox:test\nRUN echo started; sleep 30\n",
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("--store")
        .arg(&store)
        .args(["build", "-t", "int:1", ctx.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stderr.take().unwrap()));
    assert!(lines
        .by_ref()
        .map_while(Result::ok)
        .any(|l| l.contains("| started")));
    let mine = format!("-{}-", child.id());
    let own = || -> Vec<String> {
        fs::read_dir(store.join("tmp"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(&mine))
            .collect()
    };
    assert!(
        !own().is_empty(),
        "the running step works in the store's tmp"
    );
    let status = Command::new("kill")
        .args(["-s", "INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(child.wait().unwrap().code(), Some(130));
    assert_eq!(own(), Vec::<String>::new());
    assert!(!kiln(&store, &["images"]).stdout.contains("int:1"));
    assert_eq!(ok(kiln(&store, &["fsck"])).stdout, "");
}

#[test]
fn copy_reuses_context_digests_and_still_sees_every_change() {
    let (dir, store) = setup();
    let ctx = app_context(
        dir.path(),
        "FROM busybox:test\nCOPY src/ /src/\nCMD [\"cat\", \"/src/a\"]\n",
    );
    let ctx = ctx.to_str().unwrap();
    // files that settled before the build (the statcache rule trusts no
    // digest taken within two seconds of a file's change)
    std::thread::sleep(std::time::Duration::from_millis(2200));
    ok(kiln(&store, &["build", "-t", "ctx:1", ctx]));
    let kept: Vec<PathBuf> = fs::read_dir(store.join("contexts"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("build-")
        })
        .collect();
    assert_eq!(kept.len(), 1, "the build kept its context's digests");
    let text = fs::read_to_string(&kept[0]).unwrap();
    assert!(
        text.contains(" src/a\n") && text.contains(" src/b\n"),
        "{text}"
    );
    let written = fs::metadata(&kept[0]).unwrap().modified().unwrap();
    let again = ok(kiln(&store, &["build", "-t", "ctx:1", ctx]));
    assert!(
        again.stderr.contains("(0 steps run, 1 cached)"),
        "{}",
        again.stderr
    );
    assert_eq!(
        fs::metadata(&kept[0]).unwrap().modified().unwrap(),
        written,
        "nothing new learned, nothing written"
    );
    // the same size and modification time, other content: the change time
    // still tells, and the COPY runs again
    let a = Path::new(ctx).join("src/a");
    let mtime = fs::metadata(&a).unwrap().modified().unwrap();
    fs::write(&a, "A\n").unwrap();
    fs::File::options()
        .write(true)
        .open(&a)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let changed = ok(kiln(&store, &["build", "-t", "ctx:1", ctx]));
    assert!(
        changed.stderr.contains("(1 steps run, 0 cached)"),
        "{}",
        changed.stderr
    );
    assert_eq!(ok(kiln(&store, &["run", "ctx:1"])).stdout, "A\n");
}

#[test]
fn a_run_steps_root_is_a_volatile_overlay() {
    // fsyncs in a step (dpkg's, one per unpacked file) do not wait for the
    // disk, as buildah mounts its build containers
    let (dir, store) = setup();
    let ctx = app_context(
        dir.path(),
        "FROM busybox:test\nRUN grep ' / / ' /proc/self/mountinfo > /root-mount\n",
    );
    ok(kiln(
        &store,
        &["build", "-t", "volatile:1", ctx.to_str().unwrap()],
    ));
    let line = ok(kiln(
        &store,
        &["run", "volatile:1", "--", "cat", "/root-mount"],
    ))
    .stdout;
    assert!(line.contains(" - overlay overlay "), "{line}");
    assert!(
        line.contains("fsync=volatile") || line.contains(",volatile"),
        "{line}"
    );
}
