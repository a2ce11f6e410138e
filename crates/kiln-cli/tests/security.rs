//! A hostile image must not reach the host: layers, an image's symlinks and
//! what a RUN step may do, checked as root through the real binary.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// A tar of `entries` (name, kind, link target), each regular file empty.
fn tar_of(entries: &[(&str, tar::EntryType, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind, link) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_path(name).unwrap();
        h.set_entry_type(*kind);
        h.set_mode(0o755);
        h.set_size(0);
        if !link.is_empty() {
            h.set_link_name(link).unwrap();
        }
        h.set_cksum();
        b.append(&h, std::io::empty()).unwrap();
    }
    b.into_inner().unwrap()
}

/// A directory standing for the host's secrets: one file, linked once.
fn host_secret(dir: &Path) -> PathBuf {
    let host = dir.join("host-secrets");
    fs::create_dir_all(&host).unwrap();
    fs::write(host.join("secret"), "the host's secret\n").unwrap();
    host
}

fn assert_untouched(host: &Path) {
    let names: Vec<_> = fs::read_dir(host)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        ["secret"],
        "kiln created files in {}",
        host.display()
    );
    assert_eq!(
        fs::metadata(host.join("secret")).unwrap().nlink(),
        1,
        "the host's file was hard-linked into the store"
    );
}

#[test]
fn a_hard_link_through_a_symlink_never_links_a_host_file() {
    let (dir, store) = setup();
    let host = host_secret(dir.path());
    let layer = tar_of(&[
        ("l", tar::EntryType::Symlink, host.to_str().unwrap()),
        ("hl", tar::EntryType::Link, "l/secret"),
    ]);
    // as a base image (the same unpacking serves oci-layout, oci-archive
    // and registry pulls)
    let archive = docker_archive(dir.path(), "evil", &layer);
    let ctx = dockerfile_dir(
        dir.path(),
        "from-archive",
        &format!(
            "FROM docker-archive:{}\nCOPY --from=busybox:test /bin/busybox /bin/sh\n",
            archive.display()
        ),
    );
    let r = kiln(&store, &["build", "-t", "evil:1", ctx.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_mentions(
        &r.stderr,
        &[
            "Dockerfile:1: FROM docker-archive:",
            "unpacking layer sha256:",
            "layer entry \"hl\"",
        ],
    );
    // unpacked by ADD from the context
    let ctx = dockerfile_dir(dir.path(), "add", "FROM busybox:test\nADD evil.tar /x/\n");
    fs::write(ctx.join("evil.tar"), &layer).unwrap();
    let r = kiln(&store, &["build", "-t", "evil:2", ctx.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_mentions(&r.stderr, &["Dockerfile:2: ADD", "layer entry \"hl\""]);
    let left: Vec<_> = fs::read_dir(store.join("tmp"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(
        left.is_empty(),
        "the failed ADD left {left:?} in the store's tmp"
    );
    assert_untouched(&host);
    assert_eq!(ok(kiln(&store, &["fsck"])).stdout, "");
}

#[test]
fn an_images_symlinks_never_make_kiln_write_on_the_host() {
    let (dir, store) = setup();
    let host_etc = host_secret(&dir.path().join("etc"));
    let host_run = host_secret(&dir.path().join("run"));
    let host_dev = host_secret(&dir.path().join("dev"));
    let host_proc = host_secret(&dir.path().join("proc"));
    let secret = dir.path().join("token");
    fs::write(&secret, "s3cret").unwrap();
    // the image's /etc, /run, /dev and /proc are absolute symlinks to
    // directories of this machine
    let df = format!(
        "FROM busybox:test\nCOPY rootfs/ /\n\
         RUN --mount=type=secret,id=tok cat /run/secrets/tok /etc/hosts > /dev/null && ls {etc}\n",
        etc = host_etc.display(),
    );
    let ctx = dockerfile_dir(dir.path(), "links", &df);
    fs::create_dir_all(ctx.join("rootfs")).unwrap();
    for (name, host) in [
        ("etc", &host_etc),
        ("run", &host_run),
        ("dev", &host_dev),
        ("proc", &host_proc),
    ] {
        std::os::unix::fs::symlink(host, ctx.join("rootfs").join(name)).unwrap();
    }
    let r = kiln(
        &store,
        &[
            "build",
            "--secret",
            &format!("id=tok,src={}", secret.display()),
            "-t",
            "links:1",
            ctx.to_str().unwrap(),
        ],
    );
    // inside the step, the image's own path (under its root) holds them
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_mentions(&r.stderr, &["hosts"]);
    for host in [&host_etc, &host_run, &host_dev, &host_proc] {
        assert_untouched(host);
    }
    // and the mount points kiln made are not in the image's layer
    let out = dir.path().join("out");
    ok(kiln(
        &store,
        &[
            "build",
            "-t",
            "links:1",
            "-o",
            &format!("type=local,dest={}", out.display()),
            ctx.to_str().unwrap(),
        ],
    ));
    let inside = out.join(host_etc.strip_prefix("/").unwrap());
    assert!(!inside.exists(), "{} is in the image", inside.display());
}

/// The capability sets a process in `image` has, from /proc/self/status.
fn caps(out: &str) -> Vec<String> {
    out.lines()
        .filter(|l| l.starts_with("Cap"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

#[test]
fn a_run_step_has_no_more_privilege_than_a_docker_container() {
    let (dir, store) = setup();
    // what the Docker engine gives a container with default settings
    let archive = dir.path().join("busybox-docker.tar");
    ok(kiln(
        &store,
        &[
            "save",
            "busybox:test",
            "--format",
            "docker",
            "-o",
            archive.to_str().unwrap(),
        ],
    ));
    let load = Command::new("docker")
        .arg("load")
        .arg("-i")
        .arg(&archive)
        .output()
        .unwrap();
    assert!(
        load.status.success(),
        "{}",
        String::from_utf8_lossy(&load.stderr)
    );
    let docker = Command::new("docker")
        .args([
            "run",
            "--rm",
            "--network",
            "host",
            "busybox:test",
            "grep",
            "^Cap",
            "/proc/self/status",
        ])
        .output()
        .unwrap();
    assert!(
        docker.status.success(),
        "{}",
        String::from_utf8_lossy(&docker.stderr)
    );
    let docker_caps = caps(&String::from_utf8_lossy(&docker.stdout));
    let kiln_caps = caps(
        &ok(kiln(
            &store,
            &[
                "run",
                "busybox:test",
                "--",
                "grep",
                "^Cap",
                "/proc/self/status",
            ],
        ))
        .stdout,
    );
    assert!(
        docker_caps.iter().any(|l| l.starts_with("CapBnd:")),
        "{docker_caps:?}"
    );
    let bnd = |v: &[String]| v.iter().find(|l| l.starts_with("CapBnd:")).cloned();
    assert_eq!(
        bnd(&kiln_caps),
        bnd(&docker_caps),
        "kiln {kiln_caps:?}\ndocker {docker_caps:?}"
    );
    assert_eq!(kiln_caps, docker_caps);

    // what a hostile step tries, each refused; a build step runs the same way
    let probe = "mount -t tmpfs none /mnt && echo MOUNTED; \
                 mknod /blk b 8 0 && echo BLOCK-DEVICE; \
                 echo 1 > /proc/sys/kernel/panic_on_oops && echo PROC-SYS-WRITTEN; \
                 unshare -m true && echo UNSHARED; \
                 [ -c /proc/keys ] && echo keys-masked; \
                 echo probed";
    let ctx = dockerfile_dir(
        dir.path(),
        "probe",
        &format!("FROM busybox:test\nRUN mkdir -p /mnt; {probe}\n"),
    );
    let r = ok(kiln(
        &store,
        &["build", "-t", "probe:1", ctx.to_str().unwrap()],
    ));
    assert_mentions(&r.stderr, &["| probed", "| keys-masked"]);
    for escaped in ["MOUNTED", "BLOCK-DEVICE", "PROC-SYS-WRITTEN", "UNSHARED"] {
        assert!(
            !r.stderr.contains(&format!("| {escaped}")),
            "a RUN step could do {escaped}:\n{}",
            r.stderr
        );
    }
    // a device node an image brings cannot be opened; a character device
    // may be made (CAP_MKNOD, as in Docker), and the default ones work
    let r = ok(kiln(
        &store,
        &["run", "busybox:test", "--", "sh", "-c", "mknod /mem c 1 1 && (head -c1 /mem && echo READ-MEM); echo x > /dev/null && echo devnull"],
    ));
    assert!(!r.stdout.contains("READ-MEM"), "{}", r.stdout);
    assert!(r.stdout.contains("devnull"), "{}{}", r.stdout, r.stderr);
}

#[test]
fn secrets_as_environment_variables_and_files_with_their_mode_and_owner() {
    let (dir, store) = setup();
    let secret = dir.path().join("token");
    fs::write(&secret, "s3cret-value").unwrap();
    let df = "FROM busybox:test\n\
              RUN --mount=type=secret,id=tok,env=TOKEN echo \"env:${#TOKEN}\"; test -e /run/secrets/tok || echo no-file\n\
              RUN --mount=type=secret,id=tok,mode=0440,uid=1000,gid=1001 stat -c 'file:%a %u:%g %s' /run/secrets/tok\n\
              RUN --mount=type=secret,id=tok stat -c 'default:%a %u:%g' /run/secrets/tok\n\
              RUN --mount=type=secret,id=tok,env=BOTH,target=/etc/both test \"$BOTH\" = \"$(cat /etc/both)\" && echo both-agree\n";
    let ctx = dockerfile_dir(dir.path(), "secrets", df);
    let out = dir.path().join("out");
    let r = ok(kiln(
        &store,
        &[
            "build",
            "--secret",
            &format!("id=tok,src={}", secret.display()),
            "-t",
            "sec:1",
            "-o",
            &format!("type=local,dest={}", out.display()),
            ctx.to_str().unwrap(),
        ],
    ));
    assert_mentions(
        &r.stderr,
        &[
            "| env:12",
            "| no-file",
            "| file:440 1000:1001 12",
            "| default:400 0:0",
            "| both-agree",
        ],
    );
    // never in the image: no file left at the targets, no value anywhere
    assert!(!out.join("run/secrets/tok").exists() && !out.join("etc/both").exists());
    let grep = Command::new("grep")
        .args(["-r", "-l", "s3cret-value"])
        .arg(&out)
        .arg(store.join("oci"))
        .output()
        .unwrap();
    assert!(
        grep.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&grep.stdout)
    );
}

#[test]
fn a_layer_whose_declared_size_lies_is_refused() {
    let (dir, store) = setup();
    let layout = busybox_layout(dir.path(), &store);
    // the manifest says its layer has 2^50 bytes
    let index_path = layout.join("index.json");
    let mut index: serde_json::Value =
        serde_json::from_slice(&fs::read(&index_path).unwrap()).unwrap();
    let digest = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let blob = |d: &str| {
        layout
            .join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(blob(&digest)).unwrap()).unwrap();
    manifest["layers"][0]["size"] = serde_json::json!(1u64 << 50);
    let bytes = serde_json::to_vec(&manifest).unwrap();
    let lying = format!("sha256:{}", sha256_hex(&bytes));
    fs::write(blob(&lying), &bytes).unwrap();
    index["manifests"][0]["digest"] = serde_json::json!(lying);
    index["manifests"][0]["size"] = serde_json::json!(bytes.len());
    fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
    let fresh = dir.path().join("fresh");
    let ctx = dockerfile_dir(
        dir.path(),
        "lying",
        &format!("FROM oci-layout:{}\nRUN true\n", layout.display()),
    );
    let r = kiln(&fresh, &["build", "-t", "lying:1", ctx.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_mentions(
        &r.stderr,
        &[
            "Dockerfile:1: FROM oci-layout:",
            "declares 1125899906842624 bytes",
        ],
    );
}
