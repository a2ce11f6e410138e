//! `[vm.NAME]`: a VM image's definition, checked field by field so every
//! error points at the value that is wrong.

use std::ops::Range;
use std::path::Path;

use crate::values::{self, Bootloader, DataDisk, DiskFormat, KeyFile, VmUser};
use toml::Spanned;

use crate::model::VmDef;
use crate::{Error, VmRecipe};

/// The boot test's default wait: software emulation under load is slow.
pub const DEFAULT_BOOT_TIMEOUT: u64 = 300;

type ErrAt<'a> = &'a dyn Fn(Range<usize>, String) -> Error;

fn size(v: &Spanned<String>, what: &str, err: ErrAt<'_>) -> Result<u64, Error> {
    let n = values::parse_size(v.get_ref())
        .map_err(|m| err(v.span(), format!("{what}: {m}")).with_hint("e.g. \"2G\", \"512M\""))?;
    if n == 0 {
        return Err(err(v.span(), format!("{what} must not be 0")));
    }
    Ok(n)
}

/// Accepts only `only` (the default when absent).
fn only(v: Option<&Spanned<String>>, what: &str, only: &str, err: ErrAt<'_>) -> Result<(), Error> {
    match v {
        Some(v) if v.get_ref() != only => Err(err(
            v.span(),
            format!("{what} {:?} is not supported", v.get_ref()),
        )
        .with_hint(format!("kiln writes {only}"))),
        _ => Ok(()),
    }
}

pub(crate) fn read(
    name: &str,
    name_span: Range<usize>,
    vm: VmDef,
    dir: &Path,
    err: ErrAt<'_>,
) -> Result<VmRecipe, Error> {
    let disk = match &vm.size {
        Some(v) => size(v, "size", err)?,
        None => 2 << 30,
    };
    let var = match &vm.var {
        Some(v) => {
            let n = size(v, "var", err)?;
            if n >= disk {
                return Err(err(
                    v.span(),
                    format!(
                        "the /var partition ({} MiB) does not fit on the {} MiB disk",
                        n >> 20,
                        disk >> 20
                    ),
                ));
            }
            Some(n)
        }
        None => None,
    };
    only(vm.filesystem.as_ref(), "filesystem", "ext4", err)?;
    let bootloader = match &vm.bootloader {
        Some(b) => Bootloader::parse(b.get_ref()).map_err(|m| err(b.span(), m))?,
        None => Bootloader::SystemdBoot,
    };
    let mut formats = Vec::new();
    for f in vm.formats.as_deref().unwrap_or_default() {
        let parsed = DiskFormat::parse(f.get_ref()).map_err(|e| err(f.span(), e))?;
        if formats.contains(&parsed) {
            return Err(err(
                f.span(),
                format!("format {:?} is listed twice", f.get_ref()),
            ));
        }
        formats.push(parsed);
    }
    if vm.formats.is_none() {
        formats.push(DiskFormat::Qcow2);
    }
    let user = match &vm.user {
        Some(u) => {
            let (key, span) = (u.ssh_key.get_ref(), u.ssh_key.span());
            let user = VmUser::named(&u.name).map_err(|m| err(span.clone(), m))?;
            if key.contains(' ') {
                let ssh_key = values::check_key(key).map_err(|m| err(span, m))?;
                Some(VmUser { ssh_key, ..user })
            } else {
                // read by the loader: parsing reads no files
                let path = dir.join(key);
                let key_file = Some(KeyFile { path, span });
                Some(VmUser { key_file, ..user })
            }
        }
        None => None,
    };
    let mut data_disks: Vec<DataDisk> = Vec::new();
    for d in &vm.data_disks {
        only(d.filesystem.as_ref(), "data disk filesystem", "ext4", err)?;
        let label = values::check_label(d.label.get_ref()).map_err(|m| err(d.label.span(), m))?;
        let mount = values::check_mount(d.mount.get_ref()).map_err(|m| err(d.mount.span(), m))?;
        if data_disks.iter().any(|o| o.label == label) {
            return Err(err(
                d.label.span(),
                format!("data disk label {label:?} is used twice"),
            ));
        }
        if data_disks.iter().any(|o| o.mount == mount) || (var.is_some() && mount == "/var") {
            return Err(err(d.mount.span(), format!("{mount} is mounted twice")));
        }
        data_disks.push(DataDisk {
            label,
            size: size(&d.size, "data disk size", err)?,
            mount,
        });
    }
    let boot_timeout = match &vm.boot_timeout {
        Some(t) if *t.get_ref() == 0 => {
            return Err(err(
                t.span(),
                "boot_timeout must be at least 1 second".into(),
            ))
        }
        Some(t) => *t.get_ref(),
        None => DEFAULT_BOOT_TIMEOUT,
    };
    let hostname = vm.hostname.unwrap_or_else(|| name.to_string());
    let ok = !hostname.is_empty()
        && hostname.len() <= 63
        && !hostname.starts_with('-')
        && hostname
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-');
    if !ok {
        return Err(err(
            name_span,
            format!("VM image {name:?}: hostname {hostname:?} is not valid"),
        )
        .with_hint(
            "up to 63 letters, digits and `-` (set `hostname` when the name has `.` or `_`)",
        ));
    }
    Ok(VmRecipe {
        image_span: vm.image.span(),
        image: vm.image.into_inner(),
        size: disk,
        var,
        bootloader,
        cmdline: vm.cmdline,
        hostname,
        user,
        formats,
        data_disks,
        boot_timeout,
    })
}
