//! A VM image in a bake: the disk written from its factory image, boot-tested
//! in QEMU with fresh data disks, kept in the store, then published as an
//! OCI artifact (and to directories). Nothing is kept or published unless
//! the boot test passed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kiln_definition::{Bootloader, DiskFormat, Publish, VmRecipe};
use kiln_registry::{Client, Reference};
use kiln_store::Store;
use kiln_vm::{Format, VmSpec};

use crate::artifact;
use crate::baked::Outcome;
use crate::job::test_text;
use kiln_store::RemoveOnDrop;

/// A VM image baked, tested and kept.
pub(crate) struct VmBuilt {
    /// The artifact digest of its published files.
    pub digest: String,
    /// File name → sha256 digest.
    pub files: BTreeMap<String, String>,
    pub tests_passed: usize,
    pub artifact: artifact::Artifact,
}

pub(crate) struct VmJob<'a> {
    pub store: &'a Store,
    pub name: &'a str,
    pub version: &'a str,
    pub recipe: &'a VmRecipe,
    /// Its image in the store (`NAME:VERSION`).
    pub image: &'a str,
    pub tests: &'a [Vec<String>],
    pub tags: &'a [String],
    pub source_date_epoch: Option<u64>,
    pub log: &'a (dyn Fn(&str) + Sync),
}

/// A VM image's definition as kiln-vm's spec: the raw disk is always
/// written (the boot test and the store use it), then the formats asked for.
pub fn spec(
    name: &str,
    recipe: &VmRecipe,
    tests: &[String],
    source_date_epoch: Option<u64>,
) -> VmSpec {
    let mut formats = vec![Format::Raw];
    formats.extend(
        recipe
            .formats
            .iter()
            .map(|f| format(*f))
            .filter(|f| *f != Format::Raw),
    );
    VmSpec {
        name: name.to_string(),
        size: recipe.size,
        var: recipe.var,
        bootloader: match recipe.bootloader {
            Bootloader::SystemdBoot => kiln_vm::Bootloader::SystemdBoot,
            Bootloader::Grub => kiln_vm::Bootloader::Grub,
        },
        cmdline: recipe.cmdline.clone(),
        hostname: recipe.hostname.clone(),
        formats,
        source_date_epoch,
        data_disks: data_disks(recipe),
        tests: tests.to_vec(),
        user: recipe.user.as_ref().map(|u| kiln_vm::User {
            name: u.name.clone(),
            ssh_key: u.ssh_key.clone(),
        }),
    }
}

/// A disk format as kiln-vm writes it.
pub fn format(f: DiskFormat) -> Format {
    match f {
        DiskFormat::Raw => Format::Raw,
        DiskFormat::Qcow2 => Format::Qcow2,
        DiskFormat::Vmdk => Format::Vmdk,
        DiskFormat::Vhdx => Format::Vhdx,
    }
}

fn data_disks(recipe: &VmRecipe) -> Vec<kiln_vm::DataDisk> {
    recipe
        .data_disks
        .iter()
        .map(|d| kiln_vm::DataDisk {
            label: d.label.clone(),
            size: d.size,
            mount: d.mount.clone(),
        })
        .collect()
}

/// Bakes, boot-tests and keeps the VM image; a failure is the outcome to
/// report, with nothing kept.
pub(crate) fn bake(job: &VmJob<'_>) -> Result<VmBuilt, Outcome> {
    let tests: Vec<String> = job.tests.iter().map(|t| test_text(t)).collect();
    let spec = spec(job.name, job.recipe, &tests, job.source_date_epoch);
    let staged = kiln_vm::kept::staging(job.store.root(), job.name, job.version);
    let _ = std::fs::remove_dir_all(&staged);
    let cleanup = RemoveOnDrop(staged.clone());
    let log = |l: &str| (job.log)(l);
    let disk = kiln_vm::bake(job.store, job.image, &spec, &staged, &log)
        .map_err(|e| failed(job, format!("{}: {e}", job.image)))?;
    boot_test(job, &spec, &disk)?;
    let built = keep(job, &spec, &disk, &staged)?;
    drop(cleanup);
    Ok(built)
}

fn failed(job: &VmJob<'_>, error: String) -> Outcome {
    (job.log)(&format!("failed: {error}"));
    Outcome::Failed { error }
}

/// The boot test: fresh data disks, the OS disk unchanged (snapshot).
fn boot_test(job: &VmJob<'_>, spec: &VmSpec, disk: &kiln_vm::Disk) -> Result<(), Outcome> {
    let log = |l: &str| (job.log)(l);
    let work = job.store.temp_path("vm-boot");
    let _work = RemoveOnDrop(work.clone());
    let data = kiln_vm::boot::data_disks(&spec.data_disks, &work, &log)
        .map_err(|e| failed(job, format!("data disks: {e}")))?;
    let timeout = Duration::from_secs(job.recipe.boot_timeout);
    let booted = kiln_vm::boot::check(
        &disk.raw,
        &data,
        &spec.tests,
        &work.join("qemu"),
        timeout,
        &log,
    );
    booted.map(drop).map_err(|e| {
        (job.log)(&format!("boot test FAILED: {e}"));
        Outcome::TestFailed {
            test: "boot test".into(),
            exit_code: 1,
        }
    })
}

/// Keeps the tested disk in the store and describes (hashes) once what is
/// published: its digest pins it.
fn keep(
    job: &VmJob<'_>,
    spec: &VmSpec,
    disk: &kiln_vm::Disk,
    staged: &Path,
) -> Result<VmBuilt, Outcome> {
    let published: Vec<(PathBuf, String)> = disk
        .files
        .iter()
        .filter(|(f, _)| job.recipe.formats.iter().any(|d| format(*d) == *f))
        .map(|(f, p)| (p.clone(), artifact::disk_media_type(f.name())))
        .collect();
    let mut described = artifact::describe(artifact::VM_ARTIFACT_TYPE, &published)
        .map_err(|e| failed(job, e.to_string()))?;
    let files: BTreeMap<String, String> = described
        .files
        .iter()
        .map(|(p, d)| (file_name(p), d.digest.clone()))
        .collect();
    let kept = kiln_vm::kept::Kept {
        name: job.name.to_string(),
        version: job.version.to_string(),
        image: job.image.to_string(),
        image_digest: disk.image_digest.clone(),
        digest: described.digest.clone(),
        data_disks: spec.data_disks.clone(),
        files: disk.files.iter().map(|(_, p)| file_name(p)).collect(),
        dir: PathBuf::new(),
    };
    // the artifact's manifest, for `kiln sbom` and `kiln verify` of the kept image
    let manifest = staged.join(kiln_vm::kept::ARTIFACT_MANIFEST);
    std::fs::write(&manifest, &described.manifest)
        .map_err(|e| failed(job, format!("writing {}: {e}", manifest.display())))?;
    let dir = kiln_vm::kept::keep(job.store.root(), staged, &kept, job.tags)
        .map_err(|e| failed(job, e.to_string()))?;
    // the files moved with their directory
    for (p, _) in described.files.iter_mut() {
        *p = dir.join(file_name(p));
    }
    (job.log)(&format!("kept {} ({})", dir.display(), described.digest));
    Ok(VmBuilt {
        digest: described.digest.clone(),
        files,
        tests_passed: job.tests.len(),
        artifact: described,
    })
}

/// Publishes a kept VM image to one target; returns how the lock names it.
pub(crate) fn publish(
    client: &Client,
    target: &Publish,
    name: &str,
    version: &str,
    tags: &[String],
    built: &VmBuilt,
    log: &(dyn Fn(&str) + Sync),
) -> Result<String, String> {
    match target {
        Publish::Registry(repo) => {
            let dest = Reference::parse(&format!("{repo}:{version}"))
                .map_err(|e| format!("{repo}: {e}"))?;
            artifact::push(client, &dest, &built.artifact, tags, log)
                .map(|d| format!("docker://{repo}:{version}@{d}"))
                .map_err(|e| format!("pushing to {repo}: {e}"))
        }
        Publish::Dir(dir) => {
            copy_files(&built.artifact, dir)?;
            Ok(format!("dir:{}", dir.display()))
        }
        Publish::Store => Ok(format!("store:vms/{name}/{version}")),
        Publish::OciArchive(p) => Err(format!(
            "{}: a VM image is not published as an OCI archive",
            p.display()
        )),
    }
}

/// Copies the files into `dir`, each as a partial file renamed when whole.
fn copy_files(a: &artifact::Artifact, dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    for (path, _) in &a.files {
        let name = file_name(path);
        let partial = dir.join(format!(".{name}.partial"));
        std::fs::copy(path, &partial)
            .and_then(|_| std::fs::rename(&partial, dir.join(&name)))
            .map_err(|e| {
                let _ = std::fs::remove_file(&partial);
                format!("copying {name} to {}: {e}", dir.display())
            })?;
    }
    Ok(())
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}
