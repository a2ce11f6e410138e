//! The `kiln vm` commands: build, boot, push, pull, ls, rm.

use std::time::Duration;

use kiln_definition::{parse_size, Bootloader, DataDisk, DiskFormat, VmRecipe, VmUser};
use kiln_store::Store;

use crate::args::{VmBootArgs, VmBuildArgs, VmLsArgs, VmPullArgs, VmPushArgs, VmRmArgs};
use crate::exit::{Exit, Failure};
use crate::printer::Printer;

pub fn build(args: VmBuildArgs, store: &Store, printer: &Printer) -> anyhow::Result<Exit> {
    let name = args.name.clone().unwrap_or_else(|| {
        let last = args.image.rsplit('/').next().unwrap_or(&args.image);
        last.split([':', '@']).next().unwrap_or(last).to_string()
    });
    let recipe = recipe(&args, &name)?;
    let sde = super::build::source_date_epoch(args.source_date_epoch);
    let spec = kiln_factory::vm::spec(&name, &recipe, &args.tests, sde);
    let log = |l: &str| printer.error(l);
    let disk = match kiln_vm::bake(store, &args.image, &spec, &args.output, &log) {
        Ok(d) => d,
        Err(e) => {
            printer.error(&format!("error: {e}"));
            return Ok(Exit::Failure);
        }
    };
    for (f, path) in &disk.files {
        printer.error(&format!("wrote {} {}", f.name(), path.display()));
    }
    let data_dir = args.data_dir.clone().unwrap_or_else(|| args.output.clone());
    let checked = kiln_vm::boot::data_disks(&spec.data_disks, &data_dir, &log).and_then(|data| {
        if !args.boot_test {
            return Ok(());
        }
        let work = store.temp_path("boot");
        let timeout = Duration::from_secs(args.timeout);
        let booted = kiln_vm::boot::check(&disk.raw, &data, &spec.tests, &work, timeout, &log);
        let _ = std::fs::remove_dir_all(&work);
        booted.map(drop)
    });
    if let Err(e) = checked {
        printer.error(&format!("error: {}: {e}", disk.raw.display()));
        return Ok(Exit::Failure);
    }
    printer.data(&disk.raw.display().to_string());
    Ok(Exit::Success)
}

/// The flags as a VM image definition, checked as kiln.toml's `[vm.NAME]`
/// values are.
fn recipe(args: &VmBuildArgs, name: &str) -> anyhow::Result<VmRecipe> {
    fn usage(flag: &'static str) -> impl Fn(String) -> anyhow::Error {
        move |e| Failure::usage(format!("{flag}: {e}"))
    }
    let var = match &args.var {
        Some(v) => Some(parse_size(v).map_err(usage("--var"))?),
        None => None,
    };
    let mut formats = Vec::new();
    for f in args.formats.iter().filter(|f| !f.is_empty()) {
        let f = DiskFormat::parse(f).map_err(usage("--format"))?;
        if !formats.contains(&f) {
            formats.push(f);
        }
    }
    let data_disks = args
        .data_disks
        .iter()
        .map(|d| DataDisk::parse(d).map_err(usage("--data-disk")))
        .collect::<Result<Vec<_>, _>>()?;
    let user = match (&args.user, &args.ssh_key) {
        (Some(name), Some(key)) => {
            let text = std::fs::read_to_string(key)
                .map_err(|e| Failure::usage(format!("--ssh-key {}: {e}", key.display())))?;
            Some(VmUser::new(name, &text).map_err(usage("--user/--ssh-key"))?)
        }
        _ => None,
    };
    Ok(VmRecipe {
        image: args.image.clone(),
        image_span: 0..0,
        size: parse_size(&args.size).map_err(usage("--size"))?,
        var,
        bootloader: Bootloader::parse(&args.bootloader).map_err(usage("--bootloader"))?,
        cmdline: args.cmdline.clone(),
        hostname: args.hostname.clone().unwrap_or_else(|| name.to_string()),
        user,
        formats,
        data_disks,
        boot_timeout: args.timeout,
    })
}

pub fn boot(args: VmBootArgs, store: &Store, printer: &Printer) -> anyhow::Result<Exit> {
    let log = |l: &str| printer.error(l);
    let file = std::path::Path::new(&args.vm);
    let (disk, mut data) = if file.is_file() {
        (file.to_path_buf(), Vec::new())
    } else {
        let kept = kiln_vm::kept::find(store.root(), &args.vm).map_err(|e| {
            Failure::failed(format!(
                "{e} ({} is not a disk file either)",
                file.display()
            ))
        })?;
        printer.error(&format!(
            "{}:{} from {} ({})",
            kept.name, kept.version, kept.image, kept.digest
        ));
        let data = kiln_vm::kept::data_disks(store.root(), &kept, &log)?;
        (kept.raw(), data)
    };
    data.extend(args.data.iter().cloned());
    let work = store.temp_path("boot");
    if args.check {
        let timeout = Duration::from_secs(args.timeout);
        let booted = kiln_vm::boot::check(&disk, &data, &[], &work, timeout, &log);
        let _ = std::fs::remove_dir_all(&work);
        return match booted {
            Ok(b) => {
                printer.data(&b.marker);
                Ok(Exit::Success)
            }
            Err(e) => {
                printer.error(&format!("error: booting {}: {e}", disk.display()));
                Ok(Exit::Failure)
            }
        };
    }
    if let Some(port) = args.ssh_port {
        printer.error(&format!(
            "the VM's SSH server will be at 127.0.0.1:{port}: ssh -p {port} USER@127.0.0.1"
        ));
    }
    let status = kiln_vm::boot::boot_console(&disk, &data, &work, args.ssh_port);
    let _ = std::fs::remove_dir_all(&work);
    let status = status?;
    printer.error(&format!("QEMU ended ({status})"));
    Ok(if status.success() {
        Exit::Success
    } else {
        Exit::Failure
    })
}

pub fn push(
    args: VmPushArgs,
    client: &kiln_registry::Client,
    printer: &Printer,
) -> anyhow::Result<Exit> {
    let target =
        kiln_registry::Reference::parse(&args.target).map_err(|e| Failure::usage(e.to_string()))?;
    let mut files = Vec::new();
    for f in &args.files {
        let ext = f.extension().and_then(|e| e.to_str()).unwrap_or("");
        let format = DiskFormat::parse(ext).map_err(|_| {
            Failure::usage(format!(
                "{}: a VM disk file ends in .raw, .qcow2, .vmdk or .vhdx",
                f.display()
            ))
        })?;
        if !f.is_file() {
            return Err(Failure::usage(format!("{}: no such file", f.display())));
        }
        files.push((
            f.clone(),
            kiln_factory::artifact::disk_media_type(format.name()),
        ));
    }
    let log = |l: &str| printer.error(l);
    let digest = kiln_factory::artifact::push_files(
        client,
        &target,
        kiln_factory::artifact::VM_ARTIFACT_TYPE,
        &files,
        &log,
    )
    .map_err(|e| Failure::failed(format!("pushing to {target}: {e}")))?;
    printer.data(&digest);
    Ok(Exit::Success)
}

pub fn pull(
    args: VmPullArgs,
    client: &kiln_registry::Client,
    printer: &Printer,
) -> anyhow::Result<Exit> {
    let r = kiln_registry::Reference::parse(&args.reference)
        .map_err(|e| Failure::usage(e.to_string()))?;
    let log = |l: &str| printer.error(l);
    let files = kiln_factory::artifact::pull_files(client, &r, &args.output, &log)
        .map_err(|e| Failure::failed(format!("pulling {r}: {e}")))?;
    for f in files {
        printer.data(&f.display().to_string());
    }
    Ok(Exit::Success)
}

pub fn ls(args: VmLsArgs, store: &Store, printer: &Printer) -> anyhow::Result<Exit> {
    let listed = kiln_vm::kept::list(store.root())?;
    if args.json {
        let items: Vec<_> = listed
            .iter()
            .map(|l| {
                serde_json::json!({
                    "name": l.kept.name,
                    "version": l.kept.version,
                    "tags": l.tags,
                    "digest": l.kept.digest,
                    "image": l.kept.image,
                    "image_digest": l.kept.image_digest,
                    "files": l.kept.files,
                    "dir": l.kept.dir,
                    "disk_usage": l.disk_usage,
                })
            })
            .collect();
        printer.data(&serde_json::to_string_pretty(&items)?);
        return Ok(Exit::Success);
    }
    let mut out = format!(
        "{:<20} {:<14} {:<16} {:<20} {:<28} {}\n",
        "NAME", "VERSION", "TAGS", "DIGEST", "IMAGE", "ON DISK"
    );
    for l in &listed {
        let digest = l
            .kept
            .digest
            .strip_prefix("sha256:")
            .unwrap_or(&l.kept.digest);
        out.push_str(&format!(
            "{:<20} {:<14} {:<16} {:<20} {:<28} {} MiB\n",
            l.kept.name,
            l.kept.version,
            l.tags.join(","),
            &digest[..digest.len().min(12)],
            l.kept.image,
            l.disk_usage >> 20
        ));
    }
    printer.data(out.trim_end());
    Ok(Exit::Success)
}

pub fn rm(args: VmRmArgs, store: &Store, printer: &Printer) -> anyhow::Result<Exit> {
    let mut exit = Exit::Success;
    for r in &args.versions {
        match kiln_vm::kept::remove(store.root(), r) {
            Ok(k) => printer.data(&format!("removed {}:{}", k.name, k.version)),
            Err(e) => {
                printer.error(&format!("error: {e}"));
                exit = Exit::Failure;
            }
        }
    }
    Ok(exit)
}
