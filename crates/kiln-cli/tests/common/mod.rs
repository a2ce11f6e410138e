//! Helpers shared by the tests that drive the real kiln binary as root.
#![allow(dead_code)]

pub mod actions;
pub mod proxy;
pub mod registry;
pub mod web;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

pub fn kiln(store: &Path, args: &[&str]) -> Out {
    kiln_env(store, args, &[])
}

pub fn kiln_env(store: &Path, args: &[&str], env: &[(&str, &str)]) -> Out {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
    cmd.arg("--store")
        .arg(store)
        .args(args)
        .env_remove("SOURCE_DATE_EPOCH");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("running kiln");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

pub fn ok(o: Out) -> Out {
    assert_eq!(o.code, 0, "kiln failed:\n{}\n{}", o.stdout, o.stderr);
    o
}

/// A context that builds a busybox base image FROM scratch: the shared
/// small fixture of these tests (Debian's busybox-static).
pub fn busybox_context(dir: &Path) -> PathBuf {
    let ctx = dir.join("busybox");
    busybox_rootfs(&ctx.join("rootfs"), Path::new("/bin/busybox"));
    fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nCOPY rootfs/ /\nENV PATH=/usr/sbin:/usr/bin:/sbin:/bin\nCMD [\"sh\"]\n",
    )
    .unwrap();
    ctx
}

/// The busybox fixture for amd64 and arm64: `ARCH/` holds each root, and
/// the Dockerfile copies `${TARGETARCH}/`, so `--platform
/// linux/amd64,linux/arm64` builds a two-platform busybox.
pub fn multi_busybox_context(dir: &Path) -> PathBuf {
    let ctx = dir.join("busybox-multi");
    busybox_rootfs(&ctx.join("amd64"), Path::new("/bin/busybox"));
    busybox_rootfs(&ctx.join("arm64"), &arm64_busybox());
    fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nARG TARGETARCH\nCOPY ${TARGETARCH}/ /\nENV PATH=/usr/sbin:/usr/bin:/sbin:/bin\nCMD [\"sh\"]\n",
    )
    .unwrap();
    ctx
}

/// A busybox root filesystem in `root` with the static binary `busybox`.
fn busybox_rootfs(root: &Path, busybox: &Path) {
    let bin = root.join("bin");
    fs::create_dir_all(&bin).unwrap();
    fs::copy(busybox, bin.join("busybox"))
        .expect("busybox-static must be installed (.ci/run installs it)");
    let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" {
            std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
        }
    }
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::create_dir_all(root.join("tmp")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n",
    )
    .unwrap();
    fs::write(
        root.join("etc/group"),
        "root:x:0:\napp:x:1000:\nextra:x:2000:app\n",
    )
    .unwrap();
}

/// Debian's arm64 busybox-static, extracted once per machine by mmdebstrap
/// (`--variant=extract`: nothing runs).
pub fn arm64_busybox() -> PathBuf {
    mmdebstrap_fixture(
        "busybox-arm64",
        &[
            "--variant=extract",
            "--architectures=arm64",
            "--include=busybox-static",
        ],
    )
    .join("bin/busybox")
}

/// What `mmdebstrap ARGS bookworm` makes, once per machine, in
/// /var/tmp/kiln-test-fixtures/NAME: a directory, or a tarball when NAME
/// ends in `.tar` (mmdebstrap picks its output from the name).
pub fn mmdebstrap_fixture(name: &str, args: &[&str]) -> PathBuf {
    need(&["mmdebstrap"]);
    static ONCE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = ONCE.lock().unwrap_or_else(|p| p.into_inner());
    let dir = Path::new("/var/tmp/kiln-test-fixtures");
    let done = dir.join(name);
    if done.exists() {
        return done;
    }
    fs::create_dir_all(dir).unwrap();
    let partial = match name.strip_suffix(".tar") {
        Some(stem) => dir.join(format!("{stem}.{}.tar", std::process::id())),
        None => dir.join(format!("{name}.{}", std::process::id())),
    };
    let _ = fs::remove_dir_all(&partial);
    let out = Command::new("mmdebstrap")
        .args(args)
        .args(["--quiet", "bookworm"])
        .arg(&partial)
        .output()
        .expect("mmdebstrap (.ci/run installs it)");
    assert!(
        out.status.success(),
        "mmdebstrap {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    fs::rename(&partial, &done).unwrap();
    done
}

/// Fails at once, saying what is missing, when this machine cannot run the
/// system tests: they need root and the programs scripts/test installs.
pub fn need(programs: &[&str]) {
    use std::os::unix::fs::MetadataExt;
    assert!(
        fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0),
        "this test builds in namespaces and needs root: run scripts/test as root"
    );
    for p in programs {
        let found = std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(p).is_file()));
        assert!(found, "this test needs `{p}`, which is not installed: scripts/test installs it (scripts/packages)");
    }
}

pub fn setup() -> (tempfile::TempDir, PathBuf) {
    need(&["busybox"]);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let ctx = busybox_context(dir.path());
    ok(kiln(
        &store,
        &["build", "-t", "busybox:test", ctx.to_str().unwrap()],
    ));
    (dir, store)
}

pub fn app_context(dir: &Path, dockerfile: &str) -> PathBuf {
    let ctx = dir.join("app");
    fs::create_dir_all(ctx.join("src")).unwrap();
    fs::write(ctx.join("greeting.txt"), "hello from the context\n").unwrap();
    fs::write(ctx.join("src/a"), "a\n").unwrap();
    fs::write(ctx.join("src/b"), "b\n").unwrap();
    fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    ctx
}

pub const APP: &str = r#"FROM busybox:test AS base
RUN echo built > /built && rm /bin/false && mkdir -p /data
WORKDIR /app
COPY greeting.txt .
COPY --chown=app:app src/ ./src/
USER app
RUN id > /tmp/id && cat greeting.txt
FROM base
USER root
COPY --from=base /tmp/id /id
RUN <<EOF
echo "heredoc in $(pwd)"
EOF
CMD ["cat", "/app/greeting.txt"]
"#;

/// Waits until something listens on `addr` (a few seconds at most).
pub fn wait_for_port(addr: &str) {
    for _ in 0..100 {
        if std::net::TcpStream::connect(addr).is_ok() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// `docker pull REF` then `docker run --rm --network host REF`, asserting the
/// pull worked; returns the run's stdout, asserting it exited 0. The image
/// is removed from Docker afterwards.
pub fn docker_pull_and_run(reference: &str) -> String {
    docker_pull_and_run_on(reference, None, &[])
}

/// [`docker_pull_and_run`] for one platform of the image (`--platform` on
/// both) with an optional command.
pub fn docker_pull_and_run_on(reference: &str, platform: Option<&str>, cmd: &[&str]) -> String {
    need(&["docker"]);
    let platform: Vec<&str> = platform.map(|p| vec!["--platform", p]).unwrap_or_default();
    let pull = Command::new("docker")
        .arg("pull")
        .args(&platform)
        .arg(reference)
        .output()
        .expect("docker (started by scripts/test)");
    assert!(
        pull.status.success(),
        "docker pull {reference}: {}",
        String::from_utf8_lossy(&pull.stderr)
    );
    let run = Command::new("docker")
        .args(["run", "--rm", "--network", "host"])
        .args(&platform)
        .arg(reference)
        .args(cmd)
        .output()
        .unwrap();
    let _ = Command::new("docker").args(["rmi", reference]).output();
    assert!(
        run.status.success(),
        "docker run {reference}: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    String::from_utf8_lossy(&run.stdout).into_owned()
}

/// A directory `dir/name` holding a Dockerfile with `text`: a build context.
pub fn dockerfile_dir(dir: &Path, name: &str, text: &str) -> PathBuf {
    let ctx = dir.join(name);
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("Dockerfile"), text).unwrap();
    ctx
}

/// Fails, showing `text` whole, unless it contains each of `needles`.
pub fn assert_mentions(text: &str, needles: &[&str]) {
    for n in needles {
        assert!(text.contains(n), "expected {n:?} in:\n{text}");
    }
}

/// The hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    kiln_oci::digest::sha256(bytes).digest().to_string()
}

/// A `docker save`-style archive `dir/NAME.tar` of one image `NAME:1`
/// whose only layer is the tar `layer`.
pub fn docker_archive(dir: &Path, name: &str, layer: &[u8]) -> PathBuf {
    let d = dir.join(format!("{name}-archive"));
    fs::create_dir_all(&d).unwrap();
    fs::write(d.join("layer.tar"), layer).unwrap();
    let diff = format!("sha256:{}", sha256_hex(layer));
    fs::write(
        d.join("config.json"),
        format!(r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{diff}"]}}}}"#),
    )
    .unwrap();
    fs::write(
        d.join("manifest.json"),
        format!(r#"[{{"Config":"config.json","RepoTags":["{name}:1"],"Layers":["layer.tar"]}}]"#),
    )
    .unwrap();
    let archive = dir.join(format!("{name}.tar"));
    let status = Command::new("tar")
        .arg("-cf")
        .arg(&archive)
        .arg("-C")
        .arg(&d)
        .args(["manifest.json", "config.json", "layer.tar"])
        .status()
        .unwrap();
    assert!(status.success());
    archive
}

/// The busybox fixture of `setup()` built again into the OCI layout
/// `dir/layout`, tagged busybox:test.
pub fn busybox_layout(dir: &Path, store: &Path) -> PathBuf {
    let layout = dir.join("layout");
    ok(kiln(
        store,
        &[
            "build",
            "-t",
            "busybox:test",
            "-o",
            &format!("type=oci-layout,dest={}", layout.display()),
            dir.join("busybox").to_str().unwrap(),
        ],
    ));
    layout
}

/// The sha256 digest of a file, as `sha256:HEX`.
pub fn sha256(path: &Path) -> String {
    kiln_oci::digest::sha256(&fs::read(path).unwrap()).to_string()
}

/// The disk format `qemu-img info` reads in `path`.
pub fn qemu_img_format(path: &Path) -> String {
    let out = Command::new("qemu-img")
        .args(["info", "--output=json"])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "qemu-img info {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["format"].as_str().unwrap().to_string()
}

/// A loopback HTTP server (python3's) for the files in `dir`; killed when
/// dropped.
pub struct HttpFiles {
    pub addr: String,
    child: std::process::Child,
}

impl HttpFiles {
    pub fn serve(dir: &Path) -> HttpFiles {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        HttpFiles::serve_on(dir, port)
    }

    /// Serves `dir` on loopback port `port` (one an earlier server left).
    pub fn serve_on(dir: &Path, port: u16) -> HttpFiles {
        let child = Command::new("python3")
            .args(["-m", "http.server", "--bind", "127.0.0.1"])
            .arg(port.to_string())
            .current_dir(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3 serves the test's files");
        let addr = format!("127.0.0.1:{port}");
        wait_for_port(&addr);
        HttpFiles { child, addr }
    }
}

impl Drop for HttpFiles {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The blobs of an image in the store, as hex digests (the files are
/// `STORE/oci/blobs/sha256/HEX`), from `kiln inspect`.
pub struct ImageBlobs {
    /// in the manifest's order
    pub layers: Vec<String>,
    pub config: String,
    pub manifest: String,
}

pub fn image_blobs(store: &Path, name: &str) -> ImageBlobs {
    let v: serde_json::Value =
        serde_json::from_str(&ok(kiln(store, &["inspect", name])).stdout).unwrap();
    let hex = |d: &serde_json::Value| d["digest"].as_str().unwrap()["sha256:".len()..].to_string();
    let m = &v["manifest"];
    ImageBlobs {
        layers: m["layers"].as_array().unwrap().iter().map(hex).collect(),
        config: hex(&m["config"]),
        manifest: hex(&v),
    }
}
