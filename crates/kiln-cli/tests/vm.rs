//! VM disk images as a user bakes them: `kiln vm build` on a real Debian
//! image with a kernel and systemd (made once by mmdebstrap), booted in
//! QEMU under software emulation until its first-boot unit reports a full
//! boot, converted by qemu-img, reproducible byte for byte; bad inputs
//! rejected before any disk is written.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;

/// A Debian bookworm root filesystem with a kernel and systemd, made once
/// per machine by mmdebstrap (~35 s).
fn vm_rootfs() -> PathBuf {
    mmdebstrap_fixture(
        "vm-rootfs.tar",
        &[
            "--variant=minbase",
            "--include=linux-image-cloud-amd64,systemd-sysv,udev",
        ],
    )
}

#[test]
fn a_debian_image_becomes_a_disk_that_boots_converts_and_reproduces() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let ctx = dir.path().join("debian");
    fs::create_dir_all(&ctx).unwrap();
    fs::hard_link(vm_rootfs(), ctx.join("rootfs.tar"))
        .or_else(|_| fs::copy(vm_rootfs(), ctx.join("rootfs.tar")).map(|_| ()))
        .unwrap();
    fs::write(ctx.join("Dockerfile"), "FROM scratch\nADD rootfs.tar /\n").unwrap();
    ok(kiln(
        &store,
        &["build", "-t", "debian-vm:1", ctx.to_str().unwrap()],
    ));

    let out = dir.path().join("out");
    let data_dir = dir.path().join("data");
    let vm_build = |image: &str, out: &Path, extra: &[&str]| {
        let mut args = vec![
            "vm",
            "build",
            image,
            "-o",
            out.to_str().unwrap(),
            "--name",
            "node",
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--data-disk",
            "data:256M:/srv/data",
        ];
        args.extend_from_slice(extra);
        ok(kiln(&store, &args))
    };
    // the definition (formats, tests), then the boot test
    let first_boot = [
        "--format",
        "qcow2,vmdk",
        "--test",
        "echo written in the first boot > /srv/data/first",
        "--boot-test",
        "--timeout",
        "300",
    ];
    let built = vm_build("debian-vm:1", &out, &first_boot);
    let raw = out.join("node.raw");
    assert_eq!(built.stdout.trim(), raw.to_str().unwrap());
    // the first-boot unit reported multi-user.target, on the baked root,
    // with the data disk mounted by its label
    assert_mentions(
        &built.stderr,
        &[
            "created data disk",
            "booted in",
            "KILN-READY node root=/dev/vda2 /srv/data=/dev/vdb",
        ],
    );
    assert_eq!(qemu_img_format(&out.join("node.qcow2")), "qcow2");
    assert_eq!(qemu_img_format(&out.join("node.vmdk")), "vmdk");
    assert_eq!(qemu_img_format(&raw), "raw");

    // published to a registry as one OCI artifact, pulled back byte-identical
    let reg = common::registry::Registry::start(dir.path());
    let target = format!("{}/vms/node:1", reg.addr);
    let files = [out.join("node.qcow2"), out.join("node.vmdk")];
    let pushed = ok(kiln(
        &store,
        &[
            "vm",
            "push",
            &target,
            files[0].to_str().unwrap(),
            files[1].to_str().unwrap(),
        ],
    ));
    let raw_manifest: serde_json::Value = serde_json::from_str(&common::registry::skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{target}"),
    ]))
    .unwrap();
    assert_eq!(raw_manifest["artifactType"], "application/vnd.kiln.vm.v1");
    assert_eq!(
        raw_manifest["layers"][0]["mediaType"],
        "application/vnd.kiln.vm.disk.v1.qcow2"
    );
    let back = dir.path().join("pulled");
    let by_digest = format!("{}/vms/node@{}", reg.addr, pushed.stdout.trim());
    ok(kiln(
        &store,
        &["vm", "pull", &by_digest, "-o", back.to_str().unwrap()],
    ));
    for f in &files {
        let name = f.file_name().unwrap();
        assert_eq!(sha256(&back.join(name)), sha256(f), "{name:?}");
    }
    drop(reg);

    // the same image and definition give the same raw bytes, made from
    // the image's snapshots alone: its compressed layers are set aside
    // meanwhile
    let layers: Vec<PathBuf> = image_blobs(&store, "debian-vm:1")
        .layers
        .iter()
        .map(|hex| store.join("oci/blobs/sha256").join(hex))
        .collect();
    for l in &layers {
        fs::rename(l, l.with_extension("aside")).unwrap();
    }
    let again = dir.path().join("again");
    vm_build("debian-vm:1", &again, &first_boot[..4]);
    for l in &layers {
        fs::rename(l.with_extension("aside"), l).unwrap();
    }
    assert_eq!(sha256(&again.join("node.raw")), sha256(&raw));

    // a newer image replaces the OS disk; the data disk keeps what the
    // first boot wrote
    let v2 = dockerfile_dir(
        dir.path(),
        "v2",
        "FROM debian-vm:1\nCOPY version /etc/kiln-v2\n",
    );
    fs::write(v2.join("version"), "v2\n").unwrap();
    ok(kiln(
        &store,
        &["build", "-t", "debian-vm:2", v2.to_str().unwrap()],
    ));
    // and a login user with an SSH key, made at bake time
    let key = dir.path().join("id.pub");
    fs::write(
        &key,
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKilnTestKey ops@kiln\n",
    )
    .unwrap();
    let replaced = vm_build(
        "debian-vm:2",
        &dir.path().join("out2"),
        &[
            "--boot-test",
            "--test",
            "cat /srv/data/first",
            "--test",
            "cat /etc/kiln-v2",
            "--user",
            "ops",
            "--ssh-key",
            key.to_str().unwrap(),
            "--test",
            "stat -c %U:%a /home/ops/.ssh/authorized_keys && cat /home/ops/.ssh/authorized_keys",
            // a separate /var, filled with the image's, and GRUB
            "--var",
            "512M",
            "--bootloader",
            "grub",
            "--test",
            "findmnt -n -o SOURCE,FSTYPE /var && test -s /var/lib/dpkg/status",
        ],
    );
    assert_mentions(
        &replaced.stderr,
        &[
            "kept data disk",
            "test 1: written in the first boot",
            "test 2: v2",
            "test 3: ops:600",
            "test 3: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKilnTestKey ops@kiln",
            "test 4: /dev/vda3 ext4",
            "root=/dev/vda2 /var=/dev/vda3 /srv/data=/dev/vdb",
        ],
    );
}

#[test]
fn bad_vm_input_is_refused_before_any_disk_is_written() {
    let (dir, store) = setup();
    let out = dir.path().join("out");
    // busybox has no kernel
    let r = kiln(
        &store,
        &["vm", "build", "busybox:test", "-o", out.to_str().unwrap()],
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_mentions(
        &r.stderr,
        &["busybox:test has no kernel", "linux-image-cloud-amd64"],
    );
    assert!(!out.join("busybox.raw").exists());

    // a kernel, but a disk too small for the root filesystem
    let ctx = dockerfile_dir(
        dir.path(),
        "kernel",
        "FROM busybox:test\nRUN mkdir -p /boot && head -c 400000000 /dev/zero > /boot/vmlinuz-6.1.0-9-amd64 && touch /boot/initrd.img-6.1.0-9-amd64\n",
    );
    ok(kiln(
        &store,
        &["build", "-t", "fat:1", ctx.to_str().unwrap()],
    ));
    let r = kiln(
        &store,
        &[
            "vm",
            "build",
            "fat:1",
            "--size",
            "400M",
            "-o",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_mentions(&r.stderr, &["the disk is too small", "400 MiB disk"]);
    assert!(!out.join("fat.raw").exists() && !out.join("fat.raw.partial").exists());

    // an unknown format is a usage error
    let r = kiln(
        &store,
        &[
            "vm",
            "build",
            "fat:1",
            "--format",
            "vdi",
            "-o",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert_mentions(
        &r.stderr,
        &["unknown disk format \"vdi\"", "raw, qcow2, vmdk and vhdx"],
    );
}

/// A small HTTP service in the Debian VM image: busybox httpd serving
/// `/srv/www` (its `version`, and `data` → the data disk), started by
/// systemd once the data disk is mounted; the first version to run writes
/// its version to the data disk's `note`, every start adds its version to
/// `seen`. An unhealthy version serves in its boot test (a fresh data
/// disk) but powers its VM off when it finds data earlier versions wrote,
/// so the rollout sees it stop instead of waiting out the health timeout.
fn vm_service_context(ctx: &Path, version: &str, healthy: bool) {
    fs::create_dir_all(ctx.join("www")).unwrap();
    if !ctx.join("rootfs.tar").exists() {
        fs::hard_link(vm_rootfs(), ctx.join("rootfs.tar"))
            .or_else(|_| fs::copy(vm_rootfs(), ctx.join("rootfs.tar")).map(|_| ()))
            .unwrap();
        fs::copy("/bin/busybox", ctx.join("busybox")).unwrap();
    }
    fs::write(ctx.join("www/version"), format!("{version}\n")).unwrap();
    let serve = "/usr/local/bin/busybox httpd -f -p 8080 -h /srv/www";
    let start = if healthy {
        serve.to_string()
    } else {
        format!(
            "/bin/sh -c 'if [ $(wc -l < /srv/data/seen) -gt 1 ]; then systemctl poweroff; sleep 600; fi; exec {serve}'"
        )
    };
    fs::write(
        ctx.join("web.service"),
        format!(
            "[Unit]\nDescription=test web server\nRequiresMountsFor=/srv/data\nAfter=network.target\n\
             [Service]\nExecStartPre=/bin/sh -c 'cat /srv/www/version >> /srv/data/seen; [ -f /srv/data/note ] || cat /srv/www/version > /srv/data/note; sync'\n\
             ExecStart={start}\n[Install]\nWantedBy=multi-user.target\n"
        ),
    )
    .unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nADD rootfs.tar /\nCOPY busybox /usr/local/bin/busybox\nCOPY www/ /srv/www/\n\
         COPY web.service /etc/systemd/system/web.service\n\
         RUN mkdir -p /etc/systemd/system/multi-user.target.wants \
         && ln -s /etc/systemd/system/web.service /etc/systemd/system/multi-user.target.wants/web.service \
         && ln -s /srv/data /srv/www/data\n",
    )
    .unwrap();
}

#[test]
fn a_vm_service_is_replaced_with_its_data_disk_moved() {
    need(&["haproxy", "qemu-system-x86_64"]);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let fdir = dir.path().join("factory");
    let front = format!(
        "127.0.0.1:{}",
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    );
    fs::create_dir_all(&fdir).unwrap();
    fs::write(
        fdir.join("kiln.toml"),
        format!(
            "kiln = 1\n[image.vmweb]\ncontext = \"vmweb\"\npublish = [\"store\"]\n\
             [vm.node]\nimage = \"vmweb\"\npublish = [\"store\"]\n\
             data_disks = [{{ label = \"data\", size = \"64M\", mount = \"/srv/data\" }}]\n\
             [service.node]\nvm = \"node\"\nport = 8080\n\
             health = {{ http = \"/version\", timeout = \"240s\" }}\n\
             front = {{ listen = \"{front}\" }}\nsoak = \"1h\"\n"
        ),
    )
    .unwrap();
    struct Stop(PathBuf);
    impl Drop for Stop {
        fn drop(&mut self) {
            for f in [
                "services/node/vm-1/qemu.pid",
                "services/node/vm-2/qemu.pid",
                "services/node/haproxy.pid",
            ] {
                if let Ok(pid) = fs::read_to_string(self.0.join(f)) {
                    let _ = std::process::Command::new("kill")
                        .args(["-9", pid.trim()])
                        .output();
                }
            }
        }
    }
    let _stop = Stop(store.clone());
    let f = fdir.to_str().unwrap().to_string();
    let get = |path: &str| common::web::get(&format!("http://{front}{path}"));

    // v1, rolled out: it writes its note to the data disk
    vm_service_context(&fdir.join("vmweb"), "v1", true);
    ok(kiln(&store, &["bake", "-f", &f]));
    ok(kiln(&store, &["rollout", "node", "-f", &f]));
    assert_eq!(get("/version").body.trim(), "v1");
    assert_eq!(get("/data/note").body.trim(), "v1");

    // v2: blue is shut down, its data disk moves to green; requests fail
    // only during the measured pause
    vm_service_context(&fdir.join("vmweb"), "v2", true);
    ok(kiln(&store, &["bake", "-f", &f]));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (s, url) = (stop.clone(), format!("http://{front}/version"));
    let load = std::thread::spawn(move || {
        let mut failed: Vec<std::time::Instant> = Vec::new();
        let mut ok = 0;
        while !s.load(std::sync::atomic::Ordering::Relaxed) {
            if common::web::get(&url).status == 200 {
                ok += 1;
            } else {
                failed.push(std::time::Instant::now());
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        (ok, failed)
    });
    let out = ok(kiln(&store, &["rollout", "node", "-f", &f]));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (served, failed) = load.join().unwrap();
    let pause: f64 = out
        .stderr
        .split("writes paused ")
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("the pause is reported: {}", out.stderr));
    if let (Some(first), Some(last)) = (failed.first(), failed.last()) {
        let window = (*last - *first).as_secs_f64();
        assert!(
            window <= pause + 2.0,
            "requests failed over {window:.1} s, the pause was {pause:.1} s: {}",
            out.stderr
        );
    }
    assert!(served > 0);
    assert_eq!(get("/version").body.trim(), "v2");
    assert_eq!(
        get("/data/note").body.trim(),
        "v1",
        "the data disk moved to green"
    );

    assert_eq!(get("/data/seen").body, "v1\nv2\n");

    // back to v1, the data disk handed back to it
    ok(kiln(&store, &["rollback", "node", "-f", &f]));
    assert_eq!(get("/version").body.trim(), "v1");
    assert_eq!(get("/data/seen").body, "v1\nv2\nv1\n");

    // a green that stops before it is healthy: blue comes back with its data
    vm_service_context(&fdir.join("vmweb"), "v3", false);
    ok(kiln(&store, &["bake", "-f", &f]));
    let out = kiln(&store, &["rollout", "node", "-f", &f]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("did not become healthy"),
        "{}",
        out.stderr
    );
    assert_eq!(get("/version").body.trim(), "v1", "{}", out.stderr);
    assert_eq!(get("/data/note").body.trim(), "v1");
    let seen = get("/data/seen").body;
    assert!(seen.starts_with("v1\nv2\nv1\n"), "{seen}");
    assert!(
        !fs::exists(store.join("services/node/vm-2")).unwrap(),
        "the unhealthy green is removed"
    );
}
