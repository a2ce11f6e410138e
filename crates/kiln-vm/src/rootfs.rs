//! The VM's root filesystem: the image's layer snapshots merged by hard
//! links (so every change below replaces a file, never writes into one:
//! the store's snapshot shares its inode), the kernel
//! found, host leftovers removed and first-boot settings written; `mke2fs -d`
//! then reads the tree, or one normalized tar of it when identical bytes
//! are asked for ([`source`]).

use std::path::{Component, Path, PathBuf};

use kiln_oci::layer::{write_layer, Compression, LayerOptions};
use kiln_oci::merge::apply_diff;
use kiln_store::{Image, Store};

use crate::disk::Layout;
use crate::{VmError, VmSpec};

/// What the disk writer takes from the root filesystem.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub kernel_version: String,
    pub bootloader: Loader,
}

/// Where the bootloader comes from.
#[derive(Debug, Clone)]
pub enum Loader {
    /// systemd-boot's EFI binary (the image's, else this machine's).
    SystemdBoot(PathBuf),
    /// GRUB's x86_64-efi modules directory (the image's, else this machine's).
    Grub(PathBuf),
}

const SYSTEMD_BOOT: &str = "usr/lib/systemd/boot/efi/systemd-bootx64.efi";
const GRUB_MODULES: &str = "usr/lib/grub/x86_64-efi";

/// The unit that tells a boot test the machine is fully up: once
/// multi-user.target is reached it runs the boot report (which does
/// nothing unless kiln's boot test attached the `kiln.marker` port).
const READY_UNIT: &str = "[Unit]
Description=kiln: report a finished boot to the boot test
After=multi-user.target

[Service]
Type=oneshot
ExecStart=/usr/lib/kiln/boot-report

[Install]
WantedBy=multi-user.target
";

/// kiln's power-off request: `kiln rollout` shuts a VM down cleanly
/// through the virtio-serial port `kiln.control` (an image without logind
/// and D-Bus ignores the ACPI power button).
const CONTROL_UNIT: &str = "[Unit]
Description=kiln: power off when kiln asks (kiln rollout)

[Service]
ExecStart=/usr/lib/kiln/control

[Install]
WantedBy=multi-user.target
";

/// Waits for `poweroff` on the port, when kiln gave the VM one.
const CONTROL: &str = r#"#!/bin/sh
# Written by kiln. When the virtio-serial port kiln.control exists (a VM
# kiln rollout started), a line `poweroff` on it shuts the VM down cleanly.
# A read of the port ends at once while kiln is not connected to it.
port=/dev/virtio-ports/kiln.control
i=0
while [ ! -e "$port" ] && [ "$i" -lt 600 ]; do sleep 0.2; i=$((i + 1)); done
[ -e "$port" ] || exit 0
while :; do
  while read -r cmd; do
    if [ "$cmd" = poweroff ]; then exec systemctl poweroff; fi
  done < "$port"
  sleep 0.5
done
"#;

/// The boot report: the VM image's boot tests (one file each), their
/// output and exit codes, then the marker line with the root and each data
/// disk's mount, all to the virtio-serial port.
fn boot_report(mounts: &[String]) -> String {
    let mounts = mounts.join(" ");
    format!(
        r#"#!/bin/sh
# Written by kiln. Under kiln's boot test (the virtio-serial port
# kiln.marker exists) runs the boot tests and reports a finished boot.
port=/dev/virtio-ports/kiln.marker
i=0
while [ ! -e "$port" ] && [ "$i" -lt 50 ]; do sleep 0.2; i=$((i + 1)); done
[ -e "$port" ] || exit 0
# the data disks are mounted (nofail: the boot does not wait for them)
for m in {mounts}; do
  i=0
  while ! mountpoint -q "$m" && [ "$i" -lt 600 ]; do sleep 0.2; i=$((i + 1)); done
done
{{
  n=0
  for t in /usr/lib/kiln/boot-tests/*; do
    [ -f "$t" ] || continue
    n=$((n + 1))
    out=$(sh "$t" 2>&1)
    code=$?
    [ -z "$out" ] || printf '%s\n' "$out" | sed "s/^/KILN-OUT $n: /"
    echo "KILN-TEST $n exit=$code"
  done
  # what the tests wrote reaches the disks before QEMU is ended
  sync
  mounts=""
  for m in {mounts}; do
    mounts="$mounts $m=$(findmnt -n -o SOURCE "$m" || echo none)"
  done
  echo "KILN-READY $(cat /etc/hostname) root=$(findmnt -n -o SOURCE /)$mounts"
}} > "$port"
"#
    )
}

/// Host keys are made on the VM's first boot, never baked in: Ed25519 and
/// ECDSA, what current OpenSSH clients use. Not RSA: a 3072-bit RSA key
/// takes seconds to generate on a slow or emulated CPU, and the SSH server
/// (and with it multi-user.target) would wait for it.
const SSH_KEYS_UNIT: &str = "[Unit]
Description=kiln: generate SSH host keys on first boot
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -q -t ed25519 -N \"\" -f /etc/ssh/ssh_host_ed25519_key
ExecStart=/usr/bin/ssh-keygen -q -t ecdsa -N \"\" -f /etc/ssh/ssh_host_ecdsa_key

[Install]
WantedBy=multi-user.target
";

/// Flattens `img` into `root` and makes it a VM's root filesystem.
pub fn prepare(
    store: &Store,
    img: &Image,
    name: &str,
    root: &Path,
    spec: &VmSpec,
    layout: &Layout,
) -> Result<Prepared, VmError> {
    std::fs::create_dir_all(root).map_err(|e| VmError::io("creating", root, e))?;
    // the store's unpacked layers, hard-linked: no decompression, no data
    // written (what prepare changes below, it replaces, never writes into)
    for snapshot in store.snapshots(img)? {
        apply_diff(&snapshot, root)?;
    }
    let (kernel_version, kernel) = newest_kernel(root).ok_or_else(|| VmError::NoKernel {
        image: name.to_string(),
    })?;
    let initrd = root.join(format!("boot/initrd.img-{kernel_version}"));
    if !initrd.is_file() {
        return Err(VmError::NoInitramfs {
            image: name.to_string(),
            version: kernel_version,
        });
    }
    let bootloader = match spec.bootloader {
        crate::Bootloader::SystemdBoot => {
            let found = [root.join(SYSTEMD_BOOT), Path::new("/").join(SYSTEMD_BOOT)]
                .into_iter()
                .find(|p| p.is_file())
                .ok_or_else(|| {
                    VmError::Tool(format!(
                        "no systemd-boot: neither {name} nor this machine has /{SYSTEMD_BOOT} (apt-get install systemd-boot-efi)"
                    ))
                })?;
            Loader::SystemdBoot(found)
        }
        crate::Bootloader::Grub => {
            let found = [root.join(GRUB_MODULES), Path::new("/").join(GRUB_MODULES)]
                .into_iter()
                .find(|p| p.join("linux.mod").is_file())
                .ok_or_else(|| {
                    VmError::Tool(format!(
                        "no GRUB for EFI: neither {name} nor this machine has /{GRUB_MODULES} (apt-get install grub-efi-amd64-bin)"
                    ))
                })?;
            Loader::Grub(found)
        }
    };
    // what must not leak from the build host into every VM
    write(root, "etc/hostname", &format!("{}\n", spec.hostname))?;
    write(
        root,
        "etc/hosts",
        &format!(
            "127.0.0.1\tlocalhost\n127.0.1.1\t{}\n::1\tlocalhost ip6-localhost ip6-loopback\n",
            spec.hostname
        ),
    )?;
    write(root, "etc/machine-id", "")?; // empty: systemd makes one on first boot
    remove(root, "var/lib/dbus/machine-id")?;
    remove(root, "etc/resolv.conf")?;
    if let Ok(entries) = std::fs::read_dir(root.join("etc/ssh")) {
        for e in entries.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with("ssh_host_") {
                remove(root, &format!("etc/ssh/{n}"))?;
            }
        }
    }
    // data disks are mounted by label and never part of this disk
    let mut fstab = format!(
        "# written by kiln\nPARTUUID={} / ext4 rw,errors=remount-ro 0 1\n",
        layout.root_guid
    );
    for d in &spec.data_disks {
        fstab.push_str(&format!(
            "LABEL={} {} ext4 defaults,nofail 0 2\n",
            d.label, d.mount
        ));
        let dir = inside(root, &format!("{}/.kiln", d.mount.trim_matches('/')))?;
        if let Some(parent) = dir.parent() {
            std::fs::create_dir_all(parent).map_err(|e| VmError::io("creating", parent, e))?;
        }
    }
    if let Some(var) = &layout.var {
        fstab.push_str(&format!("PARTUUID={} /var ext4 rw 0 2\n", var.guid));
    }
    write(root, "etc/fstab", &fstab)?;
    let mut mounts: Vec<String> = spec.data_disks.iter().map(|d| d.mount.clone()).collect();
    if layout.var.is_some() {
        mounts.insert(0, "/var".into());
    }
    write(root, "usr/lib/kiln/boot-report", &boot_report(&mounts))?;
    make_executable(&inside(root, "usr/lib/kiln/boot-report")?)?;
    let tests = inside(root, "usr/lib/kiln/boot-tests/x")?;
    if let Some(dir) = tests.parent() {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).map_err(|e| VmError::io("creating", dir, e))?;
    }
    for (i, t) in spec.tests.iter().enumerate() {
        write(
            root,
            &format!("usr/lib/kiln/boot-tests/{:03}", i + 1),
            &format!("{t}\n"),
        )?;
    }
    if let Some(user) = &spec.user {
        add_user(root, user)?;
    }
    enable(root, "kiln-ready.service", READY_UNIT)?;
    write(root, "usr/lib/kiln/control", CONTROL)?;
    make_executable(&inside(root, "usr/lib/kiln/control")?)?;
    enable(root, "kiln-control.service", CONTROL_UNIT)?;
    network(root)?;
    if root.join("usr/bin/ssh-keygen").is_file() {
        enable(root, "kiln-ssh-keygen.service", SSH_KEYS_UNIT)?;
    }
    Ok(Prepared {
        kernel,
        initrd,
        kernel_version,
        bootloader,
    })
}

/// Moves the root filesystem's /var to `var` (its own filesystem) and
/// leaves an empty /var to mount it on.
pub fn split_var(root: &Path, var: &Path) -> Result<(), VmError> {
    let inner = inside(root, "var")?;
    let meta = std::fs::symlink_metadata(&inner).map_err(|e| VmError::io("reading", &inner, e))?;
    if !meta.is_dir() {
        return Err(VmError::Tool(
            "the image's /var is not a directory: it cannot be a partition of its own".into(),
        ));
    }
    std::fs::rename(&inner, var).map_err(|e| VmError::io("moving", &inner, e))?;
    std::fs::create_dir(&inner).map_err(|e| VmError::io("creating", &inner, e))?;
    std::fs::set_permissions(&inner, meta.permissions())
        .map_err(|e| VmError::io("setting the mode of", &inner, e))?;
    Ok(())
}

/// What `mke2fs -d` fills a filesystem from, and the bytes it must hold
/// (the size of the tar, or what a tar of the directory would be).
pub struct Source {
    pub path: PathBuf,
    pub need: u64,
}

/// The filesystem source for the tree `dir`: with `epoch`, a tar of it
/// (times clamped, so the filesystem's bytes are reproducible: `mke2fs`
/// would copy a directory's access and change times); without, the
/// directory itself, which saves writing and reading the whole tree again.
pub fn source(dir: &Path, tar: &Path, epoch: Option<u64>) -> Result<Source, VmError> {
    match epoch {
        Some(epoch) => Ok(Source {
            path: tar.to_path_buf(),
            need: write_tar(dir, tar, epoch)?,
        }),
        None => Ok(Source {
            path: dir.to_path_buf(),
            need: tar_size(dir)?,
        }),
    }
}

/// The size of a tar of `dir`: a 512-byte header per entry, file data in
/// 512-byte blocks.
fn tar_size(dir: &Path) -> Result<u64, VmError> {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).map_err(|e| VmError::io("reading", &d, e))? {
            let e = e.map_err(|e| VmError::io("reading", &d, e))?;
            let meta = e
                .metadata()
                .map_err(|err| VmError::io("reading", &e.path(), err))?;
            total += 512;
            if meta.is_dir() {
                stack.push(e.path());
            } else if meta.is_file() {
                total += meta.len().div_ceil(512) * 512;
            }
        }
    }
    Ok(total)
}

/// Writes the root filesystem as a tar (times clamped to the epoch) and
/// returns its size, what the filesystem must hold.
fn write_tar(root: &Path, tar: &Path, epoch: u64) -> Result<u64, VmError> {
    let f = std::fs::File::create(tar).map_err(|e| VmError::io("creating", tar, e))?;
    let opts = LayerOptions {
        compression: Compression::None,
        source_date_epoch: Some(epoch),
    };
    let info = write_layer(root, std::io::BufWriter::new(f), &opts)?;
    Ok(info.size)
}

/// The newest `/boot/vmlinuz-VERSION`, by version order.
fn newest_kernel(root: &Path) -> Option<(String, PathBuf)> {
    let mut found: Vec<(String, PathBuf)> = std::fs::read_dir(root.join("boot"))
        .ok()?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let version = name.strip_prefix("vmlinuz-")?.to_string();
            e.path().is_file().then(|| (version, e.path()))
        })
        .collect();
    found.sort_by_key(|a| version_key(&a.0));
    found.pop()
}

/// Numbers compare as numbers: 6.1.10 after 6.1.9.
fn version_key(v: &str) -> Vec<(u64, String)> {
    v.split(|c: char| !c.is_ascii_alphanumeric())
        .map(|part| (part.parse().unwrap_or(0), part.to_string()))
        .collect()
}

/// `root/rel` with every parent a real directory inside `root` (made when
/// missing): a symlink in the image never redirects a write to the host.
fn inside(root: &Path, rel: &str) -> Result<PathBuf, VmError> {
    let rel = Path::new(rel);
    let mut p = root.to_path_buf();
    let parts: Vec<Component> = rel.components().collect();
    for (i, c) in parts.iter().enumerate() {
        let Component::Normal(n) = c else {
            return Err(VmError::Tool(format!(
                "{} is not a plain relative path",
                rel.display()
            )));
        };
        p.push(n);
        if i + 1 == parts.len() {
            break;
        }
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(VmError::Tool(format!(
                "/{} in the image is not a directory (a symlink?); kiln will not write through it",
                rel.display()
            )))
            }
            Err(_) => std::fs::create_dir(&p).map_err(|e| VmError::io("creating", &p, e))?,
        }
    }
    Ok(p)
}

fn remove(root: &Path, rel: &str) -> Result<(), VmError> {
    let p = inside(root, rel)?;
    match std::fs::symlink_metadata(&p) {
        Ok(m) if m.is_dir() => Err(VmError::Tool(format!("/{rel} in the image is a directory"))),
        Ok(_) => std::fs::remove_file(&p).map_err(|e| VmError::io("removing", &p, e)),
        Err(_) => Ok(()),
    }
}

/// Replaces `rel` with a new file holding `text` (a symlink is replaced,
/// never followed; a regular file keeps its owner and mode, e.g.
/// /etc/shadow's group shadow).
fn write(root: &Path, rel: &str, text: &str) -> Result<(), VmError> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let p = inside(root, rel)?;
    let before = std::fs::symlink_metadata(&p).ok().filter(|m| m.is_file());
    remove(root, rel)?;
    std::fs::write(&p, text).map_err(|e| VmError::io("writing", &p, e))?;
    if let Some(m) = before {
        std::os::unix::fs::chown(&p, Some(m.uid()), Some(m.gid()))
            .map_err(|e| VmError::io("setting the owner of", &p, e))?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(m.mode() & 0o7777))
            .map_err(|e| VmError::io("setting the mode of", &p, e))?;
    }
    Ok(())
}

/// The text of the image's `rel`, empty when it has none; a symlink is
/// refused rather than read (it could name a file of this machine).
fn read(root: &Path, rel: &str) -> Result<String, VmError> {
    let p = inside(root, rel)?;
    match std::fs::symlink_metadata(&p) {
        Ok(m) if m.is_file() => {
            std::fs::read_to_string(&p).map_err(|e| VmError::io("reading", &p, e))
        }
        Ok(_) => Err(VmError::Tool(format!(
            "/{rel} in the image is not a regular file (a symlink?); kiln will not read through it"
        ))),
        Err(_) => Ok(String::new()),
    }
}

/// Adds `user` (the first free id from 1000, its own group, a locked
/// password) with `~/.ssh/authorized_keys` holding its key.
fn add_user(root: &Path, user: &crate::User) -> Result<(), VmError> {
    let (passwd, group, shadow) = (
        read(root, "etc/passwd")?,
        read(root, "etc/group")?,
        read(root, "etc/shadow")?,
    );
    let field = |line: &str, i: usize| line.split(':').nth(i).unwrap_or("").to_string();
    if passwd.lines().any(|l| field(l, 0) == user.name) {
        return Err(VmError::Tool(format!(
            "the image already has a user {:?}",
            user.name
        )));
    }
    let used: Vec<u32> = passwd
        .lines()
        .map(|l| field(l, 2))
        .chain(group.lines().map(|l| field(l, 2)))
        .filter_map(|id| id.parse().ok())
        .collect();
    let id = (1000..60000).find(|i| !used.contains(i)).unwrap_or(60000);
    let shell = if root.join("bin/bash").exists() {
        "/bin/bash"
    } else {
        "/bin/sh"
    };
    let name = &user.name;
    let line = |text: &str, add: String| {
        let mut t = text.to_string();
        if !t.is_empty() && !t.ends_with('\n') {
            t.push('\n');
        }
        t + &add
    };
    write(
        root,
        "etc/passwd",
        &line(
            &passwd,
            format!("{name}:x:{id}:{id}::/home/{name}:{shell}\n"),
        ),
    )?;
    write(
        root,
        "etc/group",
        &line(&group, format!("{name}:x:{id}:\n")),
    )?;
    // a locked password and no date of last change: 0 there would mean
    // "change the password at the next login", which ends every SSH session
    write(
        root,
        "etc/shadow",
        &line(&shadow, format!("{name}:!::0:99999:7:::\n")),
    )?;
    use std::os::unix::fs::PermissionsExt;
    let shadow_path = inside(root, "etc/shadow")?;
    std::fs::set_permissions(&shadow_path, std::fs::Permissions::from_mode(0o640))
        .map_err(|e| VmError::io("setting the mode of", &shadow_path, e))?;
    let keys = format!("home/{name}/.ssh/authorized_keys");
    write(root, &keys, &format!("{}\n", user.ssh_key))?;
    for (rel, mode) in [
        (format!("home/{name}"), 0o755),
        (format!("home/{name}/.ssh"), 0o700),
        (keys, 0o600),
    ] {
        let p = inside(root, &rel)?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))
            .map_err(|e| VmError::io("setting the mode of", &p, e))?;
        std::os::unix::fs::chown(&p, Some(id), Some(id))
            .map_err(|e| VmError::io("setting the owner of", &p, e))?;
    }
    Ok(())
}

fn make_executable(p: &Path) -> Result<(), VmError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| VmError::io("making executable", p, e))
}

/// Installs a unit in /etc/systemd/system and enables it for multi-user.target.
fn enable(root: &Path, unit: &str, text: &str) -> Result<(), VmError> {
    write(root, &format!("etc/systemd/system/{unit}"), text)?;
    want(
        root,
        "multi-user.target",
        &format!("/etc/systemd/system/{unit}"),
    )
}

/// Links the unit file at `unit` (a path in the image) into `target`'s
/// wants, as `systemctl enable` would.
fn want(root: &Path, target: &str, unit: &str) -> Result<(), VmError> {
    let name = unit.rsplit('/').next().unwrap_or(unit);
    let link = format!("etc/systemd/system/{target}.wants/{name}");
    remove(root, &link)?;
    let p = inside(root, &link)?;
    std::os::unix::fs::symlink(unit, &p).map_err(|e| VmError::io("linking", &p, e))
}

/// DHCP on every Ethernet interface through systemd-networkd, when the
/// image has networkd and no network configuration of its own (so `kiln vm
/// boot --ssh-port` and a cloud's virtual NIC work out of the box).
fn network(root: &Path) -> Result<bool, VmError> {
    let units = "usr/lib/systemd/system";
    if !root.join(units).join("systemd-networkd.service").is_file() {
        return Ok(false);
    }
    let configured = std::fs::read_dir(root.join("etc/systemd/network")).is_ok_and(|d| {
        d.flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(".network"))
    });
    let ifupdown = std::fs::read_to_string(root.join("etc/network/interfaces")).is_ok_and(|t| {
        t.lines()
            .any(|l| l.trim_start().starts_with("iface") && !l.contains(" lo "))
    });
    if configured || ifupdown {
        return Ok(false);
    }
    write(
        root,
        "etc/systemd/network/80-kiln-dhcp.network",
        "# written by kiln: DHCP on every Ethernet interface\n[Match]\nName=en* eth*\n\n[Network]\nDHCP=yes\n",
    )?;
    want(
        root,
        "multi-user.target",
        &format!("/{units}/systemd-networkd.service"),
    )?;
    want(
        root,
        "sockets.target",
        &format!("/{units}/systemd-networkd.socket"),
    )?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_kernel_by_version() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("boot")).unwrap();
        for v in ["6.1.9-amd64", "6.1.10-amd64", "5.10.0-cloud-amd64"] {
            std::fs::write(dir.path().join(format!("boot/vmlinuz-{v}")), "").unwrap();
        }
        assert_eq!(newest_kernel(dir.path()).unwrap().0, "6.1.10-amd64");
    }

    #[test]
    fn writes_never_follow_symlinks_out_of_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join("etc")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("victim"), root.join("etc/resolv.conf"))
            .unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("var")).unwrap();
        write(root, "etc/resolv.conf", "x").unwrap();
        assert!(!outside.path().join("victim").exists());
        assert!(!std::fs::symlink_metadata(root.join("etc/resolv.conf"))
            .unwrap()
            .is_symlink());
        assert!(write(root, "var/lib/x", "y").is_err());
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
        // nor reads: a symlinked passwd would copy this machine's file
        std::fs::write(outside.path().join("secret"), "host").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), root.join("etc/passwd")).unwrap();
        let e = read(root, "etc/passwd").unwrap_err().to_string();
        assert!(
            e.contains("/etc/passwd in the image is not a regular file"),
            "{e}"
        );
        std::fs::remove_file(outside.path().join("secret")).unwrap();
    }

    /// A replaced file keeps its owner and mode: /etc/shadow stays
    /// readable by group shadow (unix_chkpwd) after kiln adds a user.
    #[test]
    #[cfg_attr(
        not(feature = "system-tests"),
        ignore = "needs root (owners, whiteout devices): scripts/test runs it"
    )]
    fn replaced_files_keep_owner_and_mode() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join("etc")).unwrap();
        let shadow = root.join("etc/shadow");
        std::fs::write(&shadow, "root:*:19000:0:99999:7:::\n").unwrap();
        std::os::unix::fs::chown(&shadow, Some(0), Some(42)).unwrap();
        std::fs::set_permissions(&shadow, std::fs::Permissions::from_mode(0o640)).unwrap();
        std::fs::write(root.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
        std::fs::write(root.join("etc/group"), "root:x:0:\nshadow:x:42:\n").unwrap();
        let user = crate::User {
            name: "admin".into(),
            ssh_key: "ssh-ed25519 AAAA test".into(),
        };
        add_user(root, &user).unwrap();
        let m = std::fs::metadata(&shadow).unwrap();
        assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (0, 42, 0o640));
        let text = std::fs::read_to_string(&shadow).unwrap();
        assert!(
            text.starts_with("root:*:") && text.contains("\nadmin:!::0:"),
            "{text}"
        );
    }
}
