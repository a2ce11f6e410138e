//! The disk: a GPT with an EFI system partition and an ext4 root, each
//! filesystem written at its partition's offset in the raw file.

use std::path::Path;
use std::process::Command;

use crate::rootfs::{Loader, Prepared};
use crate::{Format, VmError, VmSpec};
use kiln_tool::run;

const MIB: u64 = 1 << 20;
const SECTOR: u64 = 512;
/// A 256 MiB FAT32 ESP (one sector per cluster: mtools reads the default
/// cluster size of this size wrongly).
const ESP_SIZE: u64 = 256 * MIB;
/// The GRUB modules built into its EFI image: enough to find the ESP by
/// its volume id and boot a Linux kernel with an initramfs.
const GRUB_BUILT_IN: &[&str] = &[
    "part_gpt",
    "fat",
    "search",
    "search_fs_uuid",
    "linux",
    "echo",
    "boot",
];
const ESP_TYPE: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
/// The Discoverable Partitions type of an x86-64 root filesystem.
const ROOT_TYPE: &str = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709";
/// The Discoverable Partitions type of /var.
const VAR_TYPE: &str = "4D21B016-B534-45C2-A9FB-5C16E091FD2D";

/// Where the partitions are and what they are called; every identifier is
/// derived from a seed (the image digest and the VM's name), so the same
/// image and definition give the same disk.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Layout {
    pub disk_size: u64,
    pub esp_start: u64,
    pub esp_size: u64,
    pub root_start: u64,
    pub root_size: u64,
    pub disk_guid: String,
    pub esp_guid: String,
    /// The root partition's GUID: the kernel finds it as `root=PARTUUID=…`.
    pub root_guid: String,
    /// The ext4 filesystem's UUID.
    pub root_fs_uuid: String,
    /// The FAT volume id (8 hex digits).
    pub esp_volume_id: String,
    /// A separate /var partition after the root.
    pub var: Option<VarPartition>,
}

/// The /var partition.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VarPartition {
    pub start: u64,
    pub size: u64,
    pub guid: String,
    pub fs_uuid: String,
}

impl Layout {
    pub fn new(disk_size: u64, var: Option<u64>, seed: &str) -> Layout {
        let disk_size = disk_size / MIB * MIB;
        let esp_start = MIB;
        let root_start = esp_start + ESP_SIZE;
        let var_size = var.map_or(0, |v| v.div_ceil(MIB) * MIB);
        // the backup GPT takes the last 33 sectors: leave the last MiB
        let root_size = disk_size.saturating_sub(root_start + var_size + MIB);
        let id = |what: &str| uuid_from(&format!("{seed}:{what}"));
        let var = var.map(|_| VarPartition {
            start: root_start + root_size,
            size: var_size,
            guid: id("var"),
            fs_uuid: id("var-fs"),
        });
        Layout {
            disk_size,
            esp_start,
            esp_size: ESP_SIZE,
            root_start,
            root_size,
            disk_guid: id("disk"),
            esp_guid: id("esp"),
            root_guid: id("root"),
            root_fs_uuid: id("root-fs"),
            esp_volume_id: id("esp-fs")[..8].to_string(),
            var,
        }
    }

    /// A root filesystem of `need` bytes of files must fit, with room for
    /// ext4's own structures.
    pub fn check_fits(&self, need: u64) -> Result<(), VmError> {
        let need_fs = fs_size(need);
        if need_fs > self.root_size {
            return Err(VmError::TooSmall {
                need_mib: need_fs.div_ceil(MIB),
                have_mib: self.root_size / MIB,
                disk_mib: self.disk_size / MIB,
            });
        }
        Ok(())
    }

    /// `need` bytes of /var must fit its partition.
    pub fn check_var_fits(&self, need: u64) -> Result<(), VmError> {
        let Some(var) = &self.var else { return Ok(()) };
        let need_fs = fs_size(need);
        if need_fs > var.size {
            return Err(VmError::Tool(format!(
                "the /var partition is too small: the image's /var needs {} MiB, the partition has {} MiB",
                need_fs.div_ceil(MIB),
                var.size / MIB
            )));
        }
        Ok(())
    }

    fn sfdisk_script(&self) -> String {
        format!(
            "label: gpt\nlabel-id: {}\nunit: sectors\nfirst-lba: 2048\n\
             start={}, size={}, type={ESP_TYPE}, uuid={}, name=\"ESP\"\n\
             start={}, size={}, type={ROOT_TYPE}, uuid={}, name=\"root\"\n",
            self.disk_guid,
            self.esp_start / SECTOR,
            self.esp_size / SECTOR,
            self.esp_guid,
            self.root_start / SECTOR,
            self.root_size / SECTOR,
            self.root_guid,
        ) + &self
            .var
            .as_ref()
            .map(|v| {
                format!(
                    "start={}, size={}, type={VAR_TYPE}, uuid={}, name=\"var\"\n",
                    v.start / SECTOR,
                    v.size / SECTOR,
                    v.guid
                )
            })
            .unwrap_or_default()
    }
}

/// An ext4 filesystem holding `need` bytes of files, with room for its
/// own structures.
fn fs_size(need: u64) -> u64 {
    need + need / 10 + 64 * MIB
}

/// A version-4-shaped UUID from sha256 of `text`.
fn uuid_from(text: &str) -> String {
    let d = kiln_oci::digest::sha256(text.as_bytes());
    let h = d.digest();
    format!(
        "{}-{}-4{}-8{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

/// Writes the raw disk `raw`: partition table, ESP, root filesystem.
pub fn write(
    raw: &Path,
    layout: &Layout,
    source: &Path,
    var_source: Option<&Path>,
    prepared: &Prepared,
    spec: &VmSpec,
    work: &Path,
) -> Result<(), VmError> {
    let partial = raw.with_extension("raw.partial");
    let _ = std::fs::remove_file(&partial);
    let f = std::fs::File::create(&partial).map_err(|e| VmError::io("creating", &partial, e))?;
    f.set_len(layout.disk_size)
        .map_err(|e| VmError::io("sizing", &partial, e))?;
    drop(f);
    let result = (|| {
        partition(&partial, layout)?;
        write_esp(&partial, layout, prepared, spec, work)?;
        let root = Ext4 {
            label: "root",
            start: layout.root_start,
            size: layout.root_size,
            uuid: &layout.root_fs_uuid,
        };
        root.write(&partial, source, spec)?;
        if let (Some(v), Some(var_source)) = (&layout.var, var_source) {
            let var = Ext4 {
                label: "var",
                start: v.start,
                size: v.size,
                uuid: &v.fs_uuid,
            };
            var.write(&partial, var_source, spec)?;
        }
        std::fs::rename(&partial, raw).map_err(|e| VmError::io("renaming", raw, e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result
}

fn partition(disk: &Path, layout: &Layout) -> Result<(), VmError> {
    kiln_tool::run_with_input(
        Command::new("sfdisk")
            .args(["--quiet", "--no-reread", "--no-tell-kernel"])
            .arg(disk),
        layout.sfdisk_script().as_bytes(),
    )?;
    Ok(())
}

/// FAT32 at the ESP's offset, then systemd-boot, its loader entry, the
/// kernel and the initramfs copied in with mtools.
fn write_esp(
    disk: &Path,
    layout: &Layout,
    prepared: &Prepared,
    spec: &VmSpec,
    work: &Path,
) -> Result<(), VmError> {
    run(Command::new("mkfs.vfat")
        .args(["-F", "32", "-s", "1", "-n", "ESP", "--invariant", "-i"])
        .arg(&layout.esp_volume_id)
        .arg(format!("--offset={}", layout.esp_start / SECTOR))
        .arg(disk)
        .arg((layout.esp_size / 1024).to_string()))?;
    let esp = work.join("esp");
    let mkdir = |d: &str| {
        std::fs::create_dir_all(esp.join(d)).map_err(|e| VmError::io("creating", &esp, e))
    };
    mkdir("EFI/BOOT")?;
    copy(&prepared.kernel, &esp.join("vmlinuz"))?;
    copy(&prepared.initrd, &esp.join("initrd.img"))?;
    let options = format!(
        "root=PARTUUID={} rw console=tty0 console=ttyS0,115200 {}",
        layout.root_guid, spec.cmdline
    );
    let options = options.trim();
    let boot_efi = esp.join("EFI/BOOT/BOOTX64.EFI");
    match &prepared.bootloader {
        Loader::SystemdBoot(binary) => {
            copy(binary, &boot_efi)?;
            mkdir("loader/entries")?;
            write_file(
                &esp.join("loader/loader.conf"),
                "default kiln.conf\ntimeout 0\n",
            )?;
            write_file(
                &esp.join("loader/entries/kiln.conf"),
                &format!(
                    "title {}\nlinux /vmlinuz\ninitrd /initrd.img\noptions {options}\n",
                    spec.name
                ),
            )?;
        }
        Loader::Grub(modules) => {
            // everything GRUB needs is built into one EFI image, its
            // configuration too: no modules or grub.cfg on the ESP to find
            let volume = &layout.esp_volume_id;
            let config = work.join("grub-early.cfg");
            write_file(
                &config,
                &format!(
                    "search --no-floppy --fs-uuid --set=root {}-{}\n\
                     linux /vmlinuz {options}\ninitrd /initrd.img\nboot\n",
                    &volume[..4],
                    &volume[4..]
                ),
            )?;
            run(Command::new("grub-mkimage")
                .args(["-O", "x86_64-efi", "-p", "/EFI/BOOT", "-d"])
                .arg(modules)
                .arg("-c")
                .arg(&config)
                .arg("-o")
                .arg(&boot_efi)
                .args(GRUB_BUILT_IN))?;
        }
    }
    // mtools takes file times from the files: clamp them
    let epoch = spec.source_date_epoch.unwrap_or(0);
    set_times(&esp, epoch)?;
    let target = format!("{}@@{}", disk.display(), layout.esp_start);
    let mut cmd = Command::new("mcopy");
    cmd.env("MTOOLS_SKIP_CHECK", "1")
        .env("SOURCE_DATE_EPOCH", epoch.to_string())
        .args(["-s", "-p", "-m", "-i", &target]);
    for entry in ["EFI", "loader", "vmlinuz", "initrd.img"] {
        if esp.join(entry).exists() {
            cmd.arg(esp.join(entry));
        }
    }
    cmd.arg("::/");
    run(&mut cmd)?;
    Ok(())
}

/// An ext4 filesystem at a partition's offset.
struct Ext4<'a> {
    label: &'a str,
    start: u64,
    size: u64,
    uuid: &'a str,
}

impl Ext4<'_> {
    /// Makes the filesystem, filled from `source` (a directory or a tar).
    fn write(&self, disk: &Path, source: &Path, spec: &VmSpec) -> Result<(), VmError> {
        let mut cmd = Command::new("mke2fs");
        cmd.args(["-q", "-F", "-t", "ext4", "-L", self.label, "-U", self.uuid])
            .arg("-E")
            .arg(format!(
                "offset={},hash_seed={},root_owner=0:0",
                self.start, self.uuid
            ))
            .arg("-d")
            .arg(source)
            .arg(disk)
            .arg(format!("{}k", self.size / 1024));
        let epoch = spec.source_date_epoch.unwrap_or(0);
        cmd.env("E2FSPROGS_FAKE_TIME", epoch.to_string())
            .env("SOURCE_DATE_EPOCH", epoch.to_string());
        run(&mut cmd)?;
        Ok(())
    }
}

/// Converts the raw disk with qemu-img.
pub fn convert(raw: &Path, out: &Path, format: Format) -> Result<(), VmError> {
    let partial = out.with_extension(format!("{}.partial", format.name()));
    let _ = std::fs::remove_file(&partial);
    run(Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", format.name()])
        .arg(raw)
        .arg(&partial))?;
    std::fs::rename(&partial, out).map_err(|e| VmError::io("renaming", out, e))
}

fn copy(from: &Path, to: &Path) -> Result<(), VmError> {
    std::fs::copy(from, to).map_err(|e| VmError::io("copying", from, e))?;
    Ok(())
}

fn write_file(path: &Path, text: &str) -> Result<(), VmError> {
    std::fs::write(path, text).map_err(|e| VmError::io("writing", path, e))
}

/// Sets the mtime of everything under `dir` to `epoch`.
fn set_times(dir: &Path, epoch: u64) -> Result<(), VmError> {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(epoch);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            for e in std::fs::read_dir(&p).map_err(|e| VmError::io("reading", &p, e))? {
                stack.push(e.map_err(|e| VmError::io("reading", &p, e))?.path());
            }
        }
        let f = std::fs::File::open(&p).map_err(|e| VmError::io("opening", &p, e))?;
        f.set_modified(t)
            .map_err(|e| VmError::io("setting the time of", &p, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_aligned_and_seeded() {
        let a = Layout::new(2 << 30, None, "img:vm");
        assert_eq!(a.esp_start, MIB);
        assert_eq!(a.root_start, MIB + ESP_SIZE);
        assert_eq!(a.root_start + a.root_size + MIB, 2 << 30);
        assert_eq!(a.root_guid, Layout::new(2 << 30, None, "img:vm").root_guid);
        assert_ne!(
            a.root_guid,
            Layout::new(2 << 30, None, "img:other").root_guid
        );
        assert_eq!(a.root_guid.len(), 36);
        assert!(a.check_fits(1 << 30).is_ok());
        let e = a.check_fits(2 << 30).unwrap_err().to_string();
        assert!(
            e.contains("too small") && e.contains("2048 MiB disk"),
            "{e}"
        );
        // a /var partition takes the end of the disk
        let b = Layout::new(2 << 30, Some(512 << 20), "img:vm");
        let v = b.var.as_ref().unwrap();
        assert_eq!(b.root_start + b.root_size, v.start);
        assert_eq!(v.start + v.size + MIB, 2 << 30);
        assert_eq!(b.root_size, a.root_size - (512 << 20));
        assert!(b.sfdisk_script().contains("name=\"var\""));
        assert!(b.check_var_fits(600 << 20).is_err());
    }
}
