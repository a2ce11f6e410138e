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

    // the same image and definition give the same raw bytes
    let again = dir.path().join("again");
    vm_build("debian-vm:1", &again, &first_boot[..4]);
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
