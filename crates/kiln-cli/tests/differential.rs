//! Differential test: for the same Dockerfile and context, the root
//! filesystem kiln builds equals the one buildah builds — paths, types,
//! modes, owners, link targets, contents and xattrs (timestamps aside).
//! Both images are unpacked by the same third tool (umoci) before comparing.
//! Runs as root; needs buildah, umoci and busybox-static (.ci/run installs them).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn kiln(store: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kiln"));
    c.arg("--store").arg(store).env_remove("SOURCE_DATE_EPOCH");
    c
}

/// The shared fixture: a busybox base built by kiln, saved as an OCI archive
/// both tools read with `FROM oci-archive:…`.
fn base(dir: &Path, store: &Path) -> PathBuf {
    for p in ["buildah", "umoci", "busybox"] {
        let found = std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(p).is_file()));
        assert!(
            found,
            "this test needs `{p}`: scripts/test installs it (scripts/packages)"
        );
    }
    let ctx = dir.join("base");
    let bin = ctx.join("rootfs/bin");
    fs::create_dir_all(&bin).unwrap();
    fs::copy("/bin/busybox", bin.join("busybox")).expect("busybox-static must be installed");
    let list = run(Command::new("/bin/busybox").arg("--list"), "busybox --list");
    for applet in list.lines().filter(|a| *a != "busybox") {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
    }
    for d in ["etc", "tmp", "home/app", "srv/old"] {
        fs::create_dir_all(ctx.join("rootfs").join(d)).unwrap();
    }
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(ctx.join("rootfs/tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::write(
        ctx.join("rootfs/etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n",
    )
    .unwrap();
    fs::write(ctx.join("rootfs/etc/group"), "root:x:0:\napp:x:1000:\n").unwrap();
    fs::write(ctx.join("rootfs/srv/old/one"), "1").unwrap();
    fs::write(ctx.join("rootfs/srv/old/two"), "2").unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nCOPY rootfs/ /\nENV PATH=/bin\n",
    )
    .unwrap();
    run(
        kiln(store).args(["build", "-t", "diffbase:1"]).arg(&ctx),
        "kiln build base",
    );
    let archive = dir.join("base.tar");
    run(
        kiln(store)
            .args(["save", "diffbase:1", "--format", "oci", "-o"])
            .arg(&archive),
        "kiln save",
    );
    archive
}

/// The context every case builds from.
fn context(dir: &Path, name: &str, dockerfile: &str) -> PathBuf {
    let ctx = dir.join("cases").join(name);
    fs::create_dir_all(ctx.join("src/sub")).unwrap();
    fs::write(ctx.join("src/a.txt"), "a\n").unwrap();
    fs::write(ctx.join("src/z.txt"), "z\n").unwrap();
    fs::write(ctx.join("src/b.md"), "b\n").unwrap();
    fs::write(ctx.join("src/sub/c.txt"), "c\n").unwrap();
    fs::write(ctx.join("script.sh"), "#!/bin/sh\necho hi\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(ctx.join("script.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(ctx.join("secret-input"), "ignored by .dockerignore\n").unwrap();
    std::os::unix::fs::symlink("src/a.txt", ctx.join("link-to-a")).unwrap();
    fs::create_dir_all(ctx.join("dir775")).unwrap();
    fs::write(ctx.join("dir775/f"), "f\n").unwrap();
    fs::set_permissions(ctx.join("dir775"), fs::Permissions::from_mode(0o775)).unwrap();
    fs::write(ctx.join(".dockerignore"), "secret-input\n**/*.md\n").unwrap();
    let tar_src = ctx.join("tarsrc");
    fs::create_dir_all(tar_src.join("t")).unwrap();
    fs::write(tar_src.join("t/inside"), "from the archive\n").unwrap();
    run(
        Command::new("tar")
            .arg("-czf")
            .arg(ctx.join("bundle.tar.gz"))
            .arg("-C")
            .arg(&tar_src)
            .arg("t"),
        "tar",
    );
    fs::remove_dir_all(&tar_src).unwrap();
    fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    ctx
}

/// buildah with its own storage under `root` (vfs driver, as root).
fn buildah(root: &Path, args: &[&str]) -> Command {
    let mut c = Command::new("buildah");
    c.arg("--root")
        .arg(root.join("root"))
        .arg("--runroot")
        .arg(root.join("run"))
        .args(["--storage-driver", "vfs"])
        .args(args);
    c
}

fn unpack(layout: &Path, tag: &str, into: &Path) -> Vec<String> {
    run(
        Command::new("umoci")
            .args(["unpack", "--image"])
            .arg(format!("{}:{tag}", layout.display()))
            .arg(into),
        "umoci unpack",
    );
    let mut lines = kiln_oci::tree::dump(&into.join("rootfs")).unwrap();
    lines.remove(0); // the root's own entry depends on the unpacker
    lines
}

/// Files that legitimately differ: the mount points buildah leaves in the
/// image (its chroot isolation's, and the targets of RUN --mount, which
/// BuildKit and kiln remove after the step when they are still empty, with
/// the parents made for them — moby/buildkit's executor/stubs.go,
/// `MountStubsCleaner`, recursive for Dockerfiles; the cache-mount case
/// creates /var/cache/thing in an image that has no /var, the tmpfs one
/// /scratch/tmp).
const BUILDAH_ONLY: &[&str] = &[
    "/etc/hosts ",
    "/etc/resolv.conf ",
    "/etc/hostname ",
    "/run ",
    "/proc ",
    "/sys ",
    "/dev ",
    "/run/secrets ",
    "/var ",
    "/var/cache ",
    "/scratch ",
];

fn filter(lines: Vec<String>) -> Vec<String> {
    lines
        .into_iter()
        .filter(|l| !BUILDAH_ONLY.iter().any(|p| l.starts_with(p)))
        .collect()
}

const CASES: &[(&str, &str)] = &[
    ("run-files", "RUN mkdir -p /data/deep && echo hello > /data/deep/f && touch /data/empty\n"),
    ("whiteout", "RUN rm /srv/old/one\n"),
    ("whiteout-later-step", "RUN echo x > /gone\nRUN rm /gone\n"),
    ("opaque-dir", "RUN rm -rf /srv/old && mkdir /srv/old && echo new > /srv/old/new\n"),
    ("hard-links", "RUN echo shared > /h1 && ln /h1 /h2\n"),
    ("setuid-modes", "RUN echo x > /suid && chmod 4755 /suid && mkdir /sticky && chmod 1777 /sticky && echo y > /g && chmod 2750 /g\n"),
    ("user-workdir-env", "ENV APP_HOME=/home/app/work\nUSER app\nWORKDIR $APP_HOME\nRUN echo $APP_HOME > made-by-app && id -u >> made-by-app\n"),
    ("symlinks", "RUN ln -s /etc/passwd /link-abs && ln -s ../etc /srv/link-rel && ln -s missing /dangling\n"),
    ("copy-file-and-dir", "COPY src/a.txt /opt/\nCOPY src/ /opt/src/\nCOPY script.sh /usr/local/bin/run\n"),
    ("copy-wildcard", "COPY src/*.txt /wild/\n"),
    ("copy-chown-chmod", "COPY --chown=app:app src/a.txt /home/app/a\nCOPY --chmod=600 src/sub/c.txt /c\nCOPY --chown=1000:1000 src/sub /owned/\n"),
    ("dockerignore", "COPY . /ctx/\n"),
    ("multi-stage", "FROM oci-archive:BASE AS build\nRUN mkdir /out && echo built > /out/artifact && chmod 640 /out/artifact\nFROM oci-archive:BASE\nCOPY --from=build /out/artifact /artifact\nCOPY --from=build /out /out-dir\n"),
    ("add-archive", "ADD bundle.tar.gz /unpacked/\nADD src/a.txt /added\n"),
    ("cache-and-secret-mounts", "RUN --mount=type=cache,target=/var/cache/thing echo cached > /var/cache/thing/x && echo done > /after-cache\nRUN --mount=type=secret,id=tok cat /run/secrets/tok | wc -c > /secret-size\nRUN --mount=type=tmpfs,target=/scratch/tmp touch /scratch/tmp/gone\n"),
    // an image's symlinks on a destination are followed inside its root
    // (usr-merged /lib, a link to a directory, a dangling one), never replaced
    ("copy-through-symlinks", "RUN mkdir -p /real /usr/lib && ln -s /real /link && ln -s /nonexistent /dangling && ln -s usr/lib /lib\nCOPY src/a.txt /link/f\nCOPY src/a.txt /dangling/\nCOPY src/a.txt lib/custom/f\nCOPY src/ /link/tree/\n"),
    ("workdir-through-symlink", "RUN mkdir -p /var/lib && ln -s /var/lib/tempest /tempest\nWORKDIR /tempest\nRUN echo here > made-here\n"),
    // a named source that is a symlink is copied as what it points to
    ("copy-source-symlinks", "FROM oci-archive:BASE AS base\nRUN mkdir -p /my/data && echo t > /target && ln -s /target /link && echo d > /my/data/x && ln -s /my/data /data\nFROM oci-archive:BASE\nCOPY --from=base /link /copied\nCOPY --from=base /data /data\nCOPY link-to-a /from-context\n"),
    // the directory a COPY makes for a directory source is 0755 (owned by
    // --chown's user): neither the source's 0775 nor --chmod reach it
    ("copy-new-directory-modes", "COPY --chown=42:43 --chmod=0640 src/sub/ /etc/app/\nCOPY dir775 /b\n"),
    // a wildcard that matches nothing is skipped beside one that matches;
    // several matches onto a path without a slash write one file, the last
    ("copy-wildcards", "COPY nomatch* src/a.txt /d/\nCOPY src/*.txt /testdir\n"),
    // a cache mount `from` a stage starts with that stage's files
    ("cache-from-stage", "FROM oci-archive:BASE AS builder\nRUN echo hello > /hello\nFROM oci-archive:BASE\nRUN --mount=type=cache,from=builder,target=/seeded cat /seeded/hello > /seen\n"),
    ("arg-and-env-paths", "ARG DIR=/argdir\nENV FILE=name.txt\nRUN mkdir -p $DIR && echo v > $DIR/$FILE\n"),
];

#[test]
fn kiln_and_buildah_build_the_same_root_filesystems() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let base = base(dir.path(), &store);
    let broot = dir.path().join("buildah");
    let secret = dir.path().join("token");
    fs::write(&secret, "twelve bytes").unwrap();
    let secret_arg = format!("id=tok,src={}", secret.display());
    let mut failures = Vec::new();
    let mut trees = std::collections::BTreeMap::new();
    for (name, body) in CASES {
        let dockerfile = if body.starts_with("FROM") {
            body.replace("BASE", &base.display().to_string())
        } else {
            format!("FROM oci-archive:{}\n{body}", base.display())
        };
        let ctx = context(dir.path(), name, &dockerfile);
        let klayout = dir.path().join("out-kiln").join(name);
        run(
            kiln(&store)
                .args([
                    "build",
                    "--secret",
                    &secret_arg,
                    "-t",
                    &format!("case:{name}"),
                    "-o",
                ])
                .arg(format!("type=oci-layout,dest={}", klayout.display()))
                .arg(&ctx),
            &format!("kiln build {name}"),
        );
        let blayout = dir.path().join("out-buildah").join(name);
        fs::create_dir_all(blayout.parent().unwrap()).unwrap();
        run(
            &mut buildah(
                &broot,
                &[
                    "bud",
                    "--isolation",
                    "chroot",
                    "--secret",
                    &secret_arg,
                    "-t",
                    &format!("case-{name}"),
                    ctx.to_str().unwrap(),
                ],
            ),
            &format!("buildah bud {name}"),
        );
        run(
            &mut buildah(
                &broot,
                &[
                    "push",
                    &format!("case-{name}"),
                    &format!("oci:{}:case", blayout.display()),
                ],
            ),
            "buildah push",
        );
        let k = filter(unpack(
            &klayout,
            &format!("case:{name}"),
            &dir.path().join("unpack-kiln").join(name),
        ));
        let b = filter(unpack(
            &blayout,
            "case",
            &dir.path().join("unpack-buildah").join(name),
        ));
        trees.insert(*name, k.clone());
        if k != b {
            let only_k: Vec<_> = k.iter().filter(|l| !b.contains(l)).collect();
            let only_b: Vec<_> = b.iter().filter(|l| !k.contains(l)).collect();
            failures.push(format!(
                "case {name}:\n  only kiln:    {only_k:#?}\n  only buildah: {only_b:#?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(CASES.len() >= 15);
    // the comparison is not vacuous: the trees hold what the cases made
    let has = |case: &str, prefix: &str, needle: &str| {
        trees[case]
            .iter()
            .any(|l| l.starts_with(prefix) && l.contains(needle))
    };
    assert!(has("hard-links", "/h1 file", "links=2"));
    assert!(has("setuid-modes", "/suid file 4755", ""));
    assert!(!has("whiteout", "/srv/old/one ", ""));
    assert!(has("opaque-dir", "/srv/old/new file", "") && !has("opaque-dir", "/srv/old/two ", ""));
    assert!(has(
        "copy-chown-chmod",
        "/home/app/a file 0644 1000:1000",
        ""
    ));
    assert!(
        !has("dockerignore", "/ctx/secret-input", "") && !has("dockerignore", "/ctx/src/b.md", "")
    );
    assert!(has("add-archive", "/unpacked/t/inside file", ""));
    assert!(has("copy-through-symlinks", "/lib symlink", "usr/lib"));
    assert!(has("copy-through-symlinks", "/usr/lib/custom/f file", ""));
    assert!(has("copy-through-symlinks", "/nonexistent/a.txt file", ""));
    assert!(has(
        "copy-through-symlinks",
        "/real/tree/sub/c.txt file",
        ""
    ));
    assert!(has(
        "workdir-through-symlink",
        "/var/lib/tempest/made-here file",
        ""
    ));
    assert!(has("copy-source-symlinks", "/copied file", ""));
    assert!(has(
        "copy-new-directory-modes",
        "/etc/app dir 0755 42:43",
        ""
    ));
    assert!(has(
        "copy-new-directory-modes",
        "/etc/app/c.txt file 0640 42:43",
        ""
    ));
    assert!(has("copy-new-directory-modes", "/b dir 0755 0:0", ""));
    assert!(has("copy-wildcards", "/d/a.txt file", ""));
    assert!(has("copy-wildcards", "/testdir file", ""));
    assert!(has("cache-from-stage", "/seen file 0644 0:0 size=6", ""));
    // the mount points made for cache, tmpfs and secret mounts are gone
    for stub in ["/var ", "/var/cache", "/scratch", "/run/secrets"] {
        assert!(!has("cache-and-secret-mounts", stub, ""), "{stub}");
    }
    assert!(has("cache-and-secret-mounts", "/after-cache file", ""));
    assert!(has("copy-source-symlinks", "/data/x file", ""));
    assert!(has("copy-source-symlinks", "/from-context file", ""));
    assert!(has(
        "user-workdir-env",
        "/home/app/work/made-by-app file 0644 1000:1000",
        ""
    ));
}

/// What apt and dpkg write that depends on when and how they ran: logs,
/// caches and backup files. Everything else must match.
const APT_NOISE: &[&str] = &[
    "/var/log/",
    "/var/cache/apt/",
    "/var/cache/debconf/",
    "/var/cache/ldconfig/",
    "/var/lib/apt/",
    "/var/lib/dpkg/status-old ",
    "/var/lib/dpkg/diversions-old ",
    "/var/lib/dpkg/statoverride-old ",
    "/etc/ld.so.cache ",
];

#[test]
fn apt_get_on_a_debian_base_matches_buildah() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    // a real Debian base, made by mmdebstrap and imported by kiln itself
    let ctx = dir.path().join("debian");
    fs::create_dir_all(&ctx).unwrap();
    run(
        Command::new("mmdebstrap")
            .args(["--variant=minbase", "--quiet", "bookworm"])
            .arg(ctx.join("rootfs.tar")),
        "mmdebstrap",
    );
    fs::write(ctx.join("Dockerfile"), "FROM scratch\nADD rootfs.tar /\n").unwrap();
    run(
        kiln(&store).args(["build", "-t", "debian:test"]).arg(&ctx),
        "kiln build debian base",
    );
    let base = dir.path().join("debian.tar");
    run(
        kiln(&store)
            .args(["save", "debian:test", "--format", "oci", "-o"])
            .arg(&base),
        "kiln save",
    );
    fs::remove_file(ctx.join("rootfs.tar")).unwrap();

    let app = dir.path().join("app");
    fs::create_dir_all(&app).unwrap();
    let df = format!("FROM oci-archive:{}\nRUN apt-get update && apt-get install -y --no-install-recommends hello && rm -rf /var/lib/apt/lists/*\n", base.display());
    fs::write(app.join("Dockerfile"), df).unwrap();
    let klayout = dir.path().join("kiln-out");
    run(
        kiln(&store)
            .args(["build", "-t", "hello:deb", "-o"])
            .arg(format!("type=oci-layout,dest={}", klayout.display()))
            .arg(&app),
        "kiln build apt",
    );
    let broot = dir.path().join("buildah");
    run(
        &mut buildah(
            &broot,
            &[
                "bud",
                "--isolation",
                "chroot",
                "-t",
                "hello-deb",
                app.to_str().unwrap(),
            ],
        ),
        "buildah bud apt",
    );
    let blayout = dir.path().join("buildah-out");
    run(
        &mut buildah(
            &broot,
            &[
                "push",
                "hello-deb",
                &format!("oci:{}:case", blayout.display()),
            ],
        ),
        "buildah push",
    );
    let noise = |lines: Vec<String>| -> Vec<String> {
        filter(lines)
            .into_iter()
            .filter(|l| !APT_NOISE.iter().any(|p| l.starts_with(p)))
            .collect()
    };
    let k = noise(unpack(&klayout, "hello:deb", &dir.path().join("uk")));
    let b = noise(unpack(&blayout, "case", &dir.path().join("ub")));
    let only_k: Vec<_> = k.iter().filter(|l| !b.contains(l)).collect();
    let only_b: Vec<_> = b.iter().filter(|l| !k.contains(l)).collect();
    assert!(
        only_k.is_empty() && only_b.is_empty(),
        "only kiln: {only_k:#?}\nonly buildah: {only_b:#?}"
    );
    assert!(
        k.iter()
            .any(|l| l.starts_with("/usr/bin/hello file 0755 0:0")),
        "hello was installed"
    );
}
