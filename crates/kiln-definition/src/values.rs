//! The values a VM image's definition names — disk formats, bootloaders,
//! data disks, a login user, sizes — parsed and checked here, where the
//! user wrote them (kiln.toml, or `kiln vm build`'s flags). kiln-factory
//! maps them onto kiln-vm's, which only carries them out.

use std::ops::Range;
use std::path::PathBuf;

/// A format a VM image's disk is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskFormat {
    Raw,
    Qcow2,
    Vmdk,
    Vhdx,
}

impl DiskFormat {
    pub const ALL: [DiskFormat; 4] = [
        DiskFormat::Raw,
        DiskFormat::Qcow2,
        DiskFormat::Vmdk,
        DiskFormat::Vhdx,
    ];

    pub fn parse(s: &str) -> Result<DiskFormat, String> {
        DiskFormat::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| {
                format!("unknown disk format {s:?}: kiln writes raw, qcow2, vmdk and vhdx")
            })
    }

    /// Its name, which is also its files' extension.
    pub fn name(self) -> &'static str {
        match self {
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow2 => "qcow2",
            DiskFormat::Vmdk => "vmdk",
            DiskFormat::Vhdx => "vhdx",
        }
    }
}

/// The EFI bootloader of a VM image.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Bootloader {
    #[default]
    SystemdBoot,
    Grub,
}

impl Bootloader {
    pub fn parse(s: &str) -> Result<Bootloader, String> {
        match s {
            "systemd-boot" => Ok(Bootloader::SystemdBoot),
            "grub" => Ok(Bootloader::Grub),
            other => Err(format!(
                "unknown bootloader {other:?}: kiln installs systemd-boot or grub"
            )),
        }
    }
}

/// A login user made at bake time, for SSH logins with a key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VmUser {
    pub name: String,
    /// One line of `authorized_keys` (`ssh-ed25519 AAAA… comment`); empty
    /// until the loader has read `key_file`.
    pub ssh_key: String,
    /// The public key file the definition names, not yet read.
    #[serde(skip)]
    pub key_file: Option<KeyFile>,
}

/// A public key file named in kiln.toml, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFile {
    pub path: PathBuf,
    pub span: Range<usize>,
}

impl VmUser {
    /// A user with its key, both checked.
    pub fn new(name: &str, ssh_key: &str) -> Result<VmUser, String> {
        let user = VmUser::named(name)?;
        Ok(VmUser {
            ssh_key: check_key(ssh_key)?,
            ..user
        })
    }

    /// A user whose key is still to be read from `key_file`.
    pub fn named(name: &str) -> Result<VmUser, String> {
        let ok = !name.is_empty()
            && name.len() <= 32
            && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if !ok {
            return Err(format!("user name {name:?}: use lowercase letters, digits, _ and -, starting with a letter"));
        }
        Ok(VmUser {
            name: name.to_string(),
            ssh_key: String::new(),
            key_file: None,
        })
    }
}

/// One line of `authorized_keys`: `TYPE BASE64 [COMMENT]`.
pub fn check_key(key: &str) -> Result<String, String> {
    let key = key.trim();
    if key.lines().count() != 1
        || !key.starts_with(|c: char| c.is_ascii_alphabetic())
        || key.split_whitespace().count() < 2
    {
        return Err("the SSH public key must be one line: TYPE BASE64 [COMMENT]".into());
    }
    Ok(key.to_string())
}

/// A data disk: an ext4 filesystem on a whole disk of its own, created
/// once, mounted by its label; replacing the OS disk keeps it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DataDisk {
    pub label: String,
    pub size: u64,
    /// Absolute mount point in the VM.
    pub mount: String,
}

impl DataDisk {
    /// `LABEL:SIZE:MOUNT`, e.g. `data:1G:/srv/data`.
    pub fn parse(s: &str) -> Result<DataDisk, String> {
        let parts: Vec<&str> = s.splitn(3, ':').collect();
        let [label, size, mount] = parts[..] else {
            return Err(format!(
                "data disk {s:?}: expected LABEL:SIZE:MOUNT, e.g. data:1G:/srv/data"
            ));
        };
        let label = check_label(label).map_err(|e| format!("data disk {s:?}: {e}"))?;
        let mount = check_mount(mount).map_err(|e| format!("data disk {s:?}: {e}"))?;
        Ok(DataDisk {
            label,
            size: parse_size(size)?,
            mount,
        })
    }
}

/// A filesystem label ext4 accepts and a kernel command line can name.
pub fn check_label(label: &str) -> Result<String, String> {
    let ok = !label.is_empty()
        && label.len() <= 16
        && label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !ok {
        return Err(format!(
            "the label {label:?} must be 1 to 16 of [A-Za-z0-9_-] (ext4's limit)"
        ));
    }
    Ok(label.to_string())
}

/// An absolute mount point below `/`, without `..`.
pub fn check_mount(mount: &str) -> Result<String, String> {
    if !mount.starts_with('/') || mount == "/" || mount.split('/').any(|c| c == "..") {
        return Err(format!(
            "the mount point {mount:?} must be an absolute path below /"
        ));
    }
    Ok(mount.trim_end_matches('/').to_string())
}

/// Parses a size: bytes, or a number with K, M, G or T (powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => {
            let unit = t[i..]
                .trim_end_matches(['B', 'b', 'i'])
                .to_ascii_uppercase();
            let m = match unit.as_str() {
                "K" => 1u64 << 10,
                "M" => 1 << 20,
                "G" => 1 << 30,
                "T" => 1 << 40,
                _ => return Err(format!("size {s:?}: unknown unit (use K, M, G or T)")),
            };
            (&t[..i], m)
        }
        None => (t, 1),
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| format!("size {s:?} is not a number with an optional K, M, G or T"))?;
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4G").unwrap(), 4 << 30);
        assert_eq!(parse_size("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert!(parse_size("4X").is_err());
        assert!(parse_size("G").is_err());
    }

    #[test]
    fn formats() {
        assert_eq!(DiskFormat::parse("qcow2").unwrap(), DiskFormat::Qcow2);
        let e = DiskFormat::parse("vdi").unwrap_err();
        assert!(
            e.contains("\"vdi\"") && e.contains("raw, qcow2, vmdk and vhdx"),
            "{e}"
        );
    }

    #[test]
    fn data_disks_and_users() {
        let d = DataDisk::parse("data:1G:/srv/data/").unwrap();
        assert_eq!(
            (d.label.as_str(), d.size, d.mount.as_str()),
            ("data", 1 << 30, "/srv/data")
        );
        assert!(DataDisk::parse("data:1G:/srv/../etc").is_err());
        assert!(DataDisk::parse("a-label-far-too-long:1G:/d").is_err());
        assert!(VmUser::new("admin", "ssh-ed25519 AAAA c").is_ok());
        assert!(VmUser::new("Admin", "ssh-ed25519 AAAA").is_err());
        assert!(VmUser::new("admin", "AAAA").is_err());
    }
}
