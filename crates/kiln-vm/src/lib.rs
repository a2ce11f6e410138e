//! VM disk images from images in kiln's store, without booting a builder VM.
//!
//! [`bake`] flattens the image's layers into one root filesystem (hard links
//! to the store's unpacked layer snapshots: no decompression, no copy), sets what
//! must not leak from the build host (hostname, machine-id, resolv.conf, SSH
//! host keys) and what a VM needs (fstab, a first-boot marker unit), and
//! lays out a raw GPT disk: an EFI system partition (FAT32, systemd-boot,
//! the image's kernel and initramfs) and an ext4 root filled by `mke2fs -d`
//! at its offset, from the tree itself or, when `SOURCE_DATE_EPOCH` asks
//! for identical bytes, from a normalized tar of it — no loop
//! devices, no mounts. `qemu-img` converts the raw disk to the requested
//! formats. [`boot::boot_test`] boots a disk under QEMU with OVMF and waits
//! for the marker the first-boot unit writes to a virtio-serial port.
#![cfg_attr(not(test), deny(clippy::print_stdout, clippy::print_stderr))]

pub mod boot;
mod disk;
pub mod kept;
mod rootfs;

use std::path::{Path, PathBuf};

pub use disk::Layout;

/// Output formats of a VM image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Raw,
    Qcow2,
    Vmdk,
    Vhdx,
}

impl Format {
    /// Its name, which is also its files' extension.
    pub fn name(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
            Format::Vmdk => "vmdk",
            Format::Vhdx => "vhdx",
        }
    }
}

/// The EFI bootloader written to the ESP as `EFI/BOOT/BOOTX64.EFI`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Bootloader {
    /// systemd-boot (from the image, else this machine) with a loader entry.
    #[default]
    SystemdBoot,
    /// A GRUB EFI image made by `grub-mkimage` (the image's GRUB modules,
    /// else this machine's) with its configuration built in.
    Grub,
}

/// What to bake: the disk and the first-boot settings.
#[derive(Debug, Clone)]
pub struct VmSpec {
    /// The VM image's name (files are `NAME.raw`, `NAME.qcow2`, …).
    pub name: String,
    /// Disk size in bytes.
    pub size: u64,
    /// A separate /var partition of this many bytes.
    pub var: Option<u64>,
    pub bootloader: Bootloader,
    /// Extra kernel command line (after root= and the serial console).
    pub cmdline: String,
    pub hostname: String,
    pub formats: Vec<Format>,
    /// Clamps file times and seeds every UUID, for identical raw bytes.
    pub source_date_epoch: Option<u64>,
    /// Disks kept apart from the OS disk, mounted by label.
    pub data_disks: Vec<DataDisk>,
    /// Shell commands the booted VM runs under the boot test; each must
    /// exit 0.
    pub tests: Vec<String>,
    /// A login user (locked password) whose `authorized_keys` is this
    /// public key.
    pub user: Option<User>,
}

/// A user made at bake time, for SSH logins with a key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct User {
    pub name: String,
    /// One line of `authorized_keys` (`ssh-ed25519 AAAA… comment`).
    pub ssh_key: String,
}

/// A data disk: an ext4 filesystem on a whole disk of its own, created
/// once, mounted by its label; replacing the OS disk keeps it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DataDisk {
    pub label: String,
    pub size: u64,
    /// Absolute mount point in the VM.
    pub mount: String,
}

impl DataDisk {
    /// Makes the data disk `path` unless it exists: a data disk is created
    /// once and then only ever attached.
    pub fn ensure(&self, path: &Path) -> Result<bool, VmError> {
        if path.exists() {
            return Ok(false);
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| VmError::io("creating", dir, e))?;
        }
        let partial = path.with_extension("partial");
        let f =
            std::fs::File::create(&partial).map_err(|e| VmError::io("creating", &partial, e))?;
        f.set_len(self.size)
            .map_err(|e| VmError::io("sizing", &partial, e))?;
        drop(f);
        kiln_tool::run(
            std::process::Command::new("mke2fs")
                .args(["-q", "-F", "-t", "ext4", "-L", &self.label])
                .arg(&partial),
        )?;
        std::fs::rename(&partial, path).map_err(|e| VmError::io("renaming", path, e))?;
        Ok(true)
    }
}

/// A baked disk.
#[derive(Debug, Clone)]
pub struct Disk {
    /// The raw disk, always written.
    pub raw: PathBuf,
    /// Each requested format's file (raw included when asked for).
    pub files: Vec<(Format, PathBuf)>,
    pub layout: Layout,
    /// The kernel found in the image (`/boot/vmlinuz-VERSION`).
    pub kernel: String,
    /// The manifest digest of the image it was made from.
    pub image_digest: String,
}

/// Why a VM image could not be baked or booted.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("{image} has no kernel: /boot holds no vmlinuz-* (install a kernel package in the image, e.g. linux-image-cloud-amd64)")]
    NoKernel { image: String },
    #[error("{image} has a kernel but no initramfs (/boot/initrd.img-{version}): install initramfs-tools in the image")]
    NoInitramfs { image: String, version: String },
    #[error("the disk is too small: the root filesystem needs {need_mib} MiB, the root partition of a {disk_mib} MiB disk has {have_mib} MiB")]
    TooSmall {
        need_mib: u64,
        have_mib: u64,
        disk_mib: u64,
    },
    #[error("{0}")]
    Tool(String),
    /// An external tool (sfdisk, mkfs.vfat, mtools, mke2fs, qemu-img)
    /// could not run or failed.
    #[error("{0}{hint}", hint = if .0.is_missing() { " (kiln needs fdisk, dosfstools, mtools, e2fsprogs >= 1.47.2 and qemu-utils)" } else { "" })]
    Run(#[from] kiln_tool::ToolError),
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] kiln_store::Error),
    #[error(transparent)]
    Oci(#[from] kiln_oci::Error),
    #[error("{0}")]
    Boot(String),
}

impl VmError {
    pub(crate) fn io(what: &str, path: &Path, source: std::io::Error) -> Self {
        VmError::Io {
            what: what.to_string(),
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Bakes the store image `image` into a VM disk in `out_dir`. Checks the
/// image (a kernel, an initramfs) and the size before writing any disk.
pub fn bake(
    store: &kiln_store::Store,
    image: &str,
    spec: &VmSpec,
    out_dir: &Path,
    log: &dyn Fn(&str),
) -> Result<Disk, VmError> {
    let img = store.image(image)?;
    let work = store.temp_path("vm");
    std::fs::create_dir_all(&work).map_err(|e| VmError::io("creating", &work, e))?;
    let _cleanup = RemoveOnDrop(work.clone());
    let seed = format!("{}:{}", img.manifest_digest, spec.name);
    let layout = Layout::new(spec.size, spec.var, &seed);
    log(&format!(
        "{image}: flattening {} layers",
        img.manifest.layers.len()
    ));
    let root = work.join("rootfs");
    let prepared = rootfs::prepare(store, &img, image, &root, spec, &layout)?;
    // a separate /var: its contents go to their own filesystem, the root
    // keeps an empty mount point
    let var_source = match &layout.var {
        Some(_) => {
            let var = work.join("varfs");
            rootfs::split_var(&root, &var)?;
            let source = rootfs::source(&var, &work.join("var.tar"), spec.source_date_epoch)?;
            layout.check_var_fits(source.need)?;
            Some(source.path)
        }
        None => None,
    };
    let source = rootfs::source(&root, &work.join("rootfs.tar"), spec.source_date_epoch)?;
    layout.check_fits(source.need)?;
    std::fs::create_dir_all(out_dir).map_err(|e| VmError::io("creating", out_dir, e))?;
    let raw = out_dir.join(format!("{}.raw", spec.name));
    log(&format!(
        "{}: writing a {} MiB disk (kernel {})",
        spec.name,
        spec.size >> 20,
        prepared.kernel_version
    ));
    disk::write(
        &raw,
        &layout,
        &source.path,
        var_source.as_deref(),
        &prepared,
        spec,
        &work,
    )?;
    let mut files = Vec::new();
    for f in &spec.formats {
        if *f == Format::Raw {
            files.push((*f, raw.clone()));
            continue;
        }
        let out = out_dir.join(format!("{}.{}", spec.name, f.name()));
        log(&format!("{}: converting to {}", spec.name, f.name()));
        disk::convert(&raw, &out, *f)?;
        files.push((*f, out));
    }
    Ok(Disk {
        raw,
        files,
        layout,
        kernel: format!("/boot/vmlinuz-{}", prepared.kernel_version),
        image_digest: img.manifest_digest.to_string(),
    })
}

pub(crate) use kiln_store::RemoveOnDrop;
