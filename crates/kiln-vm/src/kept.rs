//! VM images kept in kiln's store, for `kiln vm boot NAME` and for the
//! data disks that outlive them.
//!
//! ```text
//! STORE/vms/NAME/VERSION/      NAME.raw, NAME.qcow2, …, vm.json
//! STORE/vms/NAME/tags/TAG      the version TAG names (`newest`: the last baked)
//! STORE/vms/NAME/data/L.raw    data disk L, made on first boot, kept across versions
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{DataDisk, VmError};

/// The file of a kept VM image's directory holding its OCI artifact
/// manifest (the digest it is published and signed under).
pub const ARTIFACT_MANIFEST: &str = "artifact.json";

/// The tag every kept VM image moves: the version baked last.
pub const NEWEST: &str = "newest";

/// What `vm.json` says about a kept VM image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kept {
    pub name: String,
    pub version: String,
    /// The image it was made from (store name) and its manifest digest.
    pub image: String,
    pub image_digest: String,
    /// The OCI artifact digest of its published files.
    pub digest: String,
    pub data_disks: Vec<DataDisk>,
    /// Its files, by name, in its directory (the raw disk first).
    pub files: Vec<String>,
    /// Where it was made (filled in when read).
    #[serde(skip)]
    pub dir: PathBuf,
}

impl Kept {
    /// The raw disk.
    pub fn raw(&self) -> PathBuf {
        self.dir.join(format!("{}.raw", self.name))
    }
}

/// `STORE/vms/NAME`.
pub fn dir(store_root: &Path, name: &str) -> PathBuf {
    store_root.join("vms").join(name)
}

/// A fresh directory to bake into, on the store's filesystem, so keeping
/// it is a rename.
pub fn staging(store_root: &Path, name: &str, version: &str) -> PathBuf {
    dir(store_root, name).join(format!(".{version}.partial-{}", std::process::id()))
}

/// Moves a baked (and tested) VM image from `staged` to its version
/// directory and points `tags` and [`NEWEST`] at it.
pub fn keep(
    store_root: &Path,
    staged: &Path,
    kept: &Kept,
    tags: &[String],
) -> Result<PathBuf, VmError> {
    let json = serde_json::to_vec_pretty(kept).map_err(|e| VmError::Tool(e.to_string()))?;
    let meta = staged.join("vm.json");
    std::fs::write(&meta, json).map_err(|e| VmError::io("writing", &meta, e))?;
    let base = dir(store_root, &kept.name);
    let target = base.join(&kept.version);
    if target.exists() {
        std::fs::remove_dir_all(&target).map_err(|e| VmError::io("replacing", &target, e))?;
    }
    std::fs::rename(staged, &target).map_err(|e| VmError::io("keeping", &target, e))?;
    let tag_dir = base.join("tags");
    std::fs::create_dir_all(&tag_dir).map_err(|e| VmError::io("creating", &tag_dir, e))?;
    for tag in tags.iter().map(String::as_str).chain([NEWEST]) {
        let path = tag_dir.join(tag);
        let tmp = tag_dir.join(format!(".{tag}.tmp"));
        std::fs::write(&tmp, &kept.version)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| VmError::io("tagging", &path, e))?;
    }
    Ok(target)
}

/// The kept VM image `NAME[:TAG|:VERSION]` (no tag: the newest).
pub fn find(store_root: &Path, reference: &str) -> Result<Kept, VmError> {
    let (name, tag) = reference.split_once(':').unwrap_or((reference, NEWEST));
    let base = dir(store_root, name);
    let none =
        |why: String| VmError::Boot(format!("no VM image {reference:?} in the store: {why}"));
    if name.is_empty() || name.contains('/') || tag.contains('/') || !base.is_dir() {
        return Err(none("`kiln bake` a factory's [vm.NAME] first".into()));
    }
    let version = match std::fs::read_to_string(base.join("tags").join(tag)) {
        Ok(v) => v.trim().to_string(),
        Err(_) => tag.to_string(),
    };
    let vdir = base.join(&version);
    let meta = vdir.join("vm.json");
    let text = std::fs::read(&meta).map_err(|_| {
        let mut have = versions(&base);
        have.sort();
        none(format!("versions kept: {}", have.join(", ")))
    })?;
    let mut kept: Kept = serde_json::from_slice(&text)
        .map_err(|e| VmError::Tool(format!("{}: {e}", meta.display())))?;
    kept.dir = vdir;
    Ok(kept)
}

/// A kept VM image with the tags that name it.
#[derive(Debug, Clone)]
pub struct Listed {
    pub kept: Kept,
    pub tags: Vec<String>,
    /// Bytes its files take on disk (raw disks are sparse).
    pub disk_usage: u64,
}

/// Every kept VM image, by name, then in the order they were baked.
pub fn list(store_root: &Path) -> Result<Vec<Listed>, VmError> {
    let vms = store_root.join("vms");
    let mut out = Vec::new();
    let Ok(names) = std::fs::read_dir(&vms) else {
        return Ok(out);
    };
    let mut names: Vec<String> = names
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for name in names {
        let tags = tags_of(&dir(store_root, &name));
        // in the order they were baked
        let base = dir(store_root, &name);
        let mut versions = versions(&base);
        versions.sort_by_key(|v| {
            let made = std::fs::metadata(base.join(v).join("vm.json")).and_then(|m| m.modified());
            (made.ok(), v.clone())
        });
        for v in versions {
            let Ok(kept) = find(store_root, &format!("{name}:{v}")) else {
                continue;
            };
            let disk_usage = kept
                .files
                .iter()
                .filter_map(|f| std::fs::metadata(kept.dir.join(f)).ok())
                .map(|m| std::os::unix::fs::MetadataExt::blocks(&m) * 512)
                .sum();
            let tags = tags
                .iter()
                .filter(|(t, to)| *to == v && t != NEWEST)
                .map(|(t, _)| t.clone())
                .collect();
            out.push(Listed {
                kept,
                tags,
                disk_usage,
            });
        }
    }
    Ok(out)
}

/// Removes the kept version `NAME:VERSION` (or the one `NAME:TAG` names)
/// and the tags naming it; [`NEWEST`] moves to the newest version left.
/// Data disks stay.
pub fn remove(store_root: &Path, reference: &str) -> Result<Kept, VmError> {
    if !reference.contains(':') {
        return Err(VmError::Boot(format!(
            "{reference}: name a version or a tag (NAME:VERSION), so that no version is removed by accident"
        )));
    }
    let kept = find(store_root, reference)?;
    let base = dir(store_root, &kept.name);
    std::fs::remove_dir_all(&kept.dir).map_err(|e| VmError::io("removing", &kept.dir, e))?;
    let mut newest_gone = false;
    for (tag, to) in tags_of(&base) {
        if to == kept.version {
            newest_gone |= tag == NEWEST;
            let path = base.join("tags").join(&tag);
            std::fs::remove_file(&path).map_err(|e| VmError::io("removing", &path, e))?;
        }
    }
    if newest_gone {
        let newest = versions(&base).into_iter().max_by_key(|v| {
            std::fs::metadata(base.join(v).join("vm.json"))
                .and_then(|m| m.modified())
                .ok()
        });
        if let Some(v) = newest {
            let path = base.join("tags").join(NEWEST);
            std::fs::write(&path, v).map_err(|e| VmError::io("tagging", &path, e))?;
        }
    }
    Ok(kept)
}

/// The version directories of `STORE/vms/NAME`.
fn versions(base: &Path) -> Vec<String> {
    std::fs::read_dir(base)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.') && n != "tags" && n != "data")
        .collect()
}

/// Tag → version, from `STORE/vms/NAME/tags`.
fn tags_of(base: &Path) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = std::fs::read_dir(base.join("tags"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let tag = e.file_name().to_string_lossy().into_owned();
            let v = std::fs::read_to_string(e.path()).ok()?;
            (!tag.starts_with('.')).then(|| (tag, v.trim().to_string()))
        })
        .collect();
    out.sort();
    out
}

/// The data disks of a kept VM image, made on first use in
/// `STORE/vms/NAME/data/` and attached ever after.
pub fn data_disks(
    store_root: &Path,
    kept: &Kept,
    log: &dyn Fn(&str),
) -> Result<Vec<PathBuf>, VmError> {
    let data = dir(store_root, &kept.name).join("data");
    let mut out = Vec::new();
    for d in &kept.data_disks {
        let path = data.join(format!("{}.raw", d.label));
        if d.ensure(&path)? {
            log(&format!(
                "created data disk {} ({} MiB, mounted at {})",
                path.display(),
                d.size >> 20,
                d.mount
            ));
        }
        out.push(path);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_image_is_found_by_name_tag_and_version() {
        let root = tempfile::tempdir().unwrap();
        let mut kept = Kept {
            name: "node".into(),
            version: "20261128.1".into(),
            image: "base:20261128.1".into(),
            image_digest: "sha256:aa".into(),
            digest: "sha256:bb".into(),
            data_disks: vec![],
            files: vec!["node.raw".into()],
            dir: PathBuf::new(),
        };
        for v in ["20261128.1", "20261128.2"] {
            kept.version = v.into();
            let staged = staging(root.path(), "node", v);
            std::fs::create_dir_all(&staged).unwrap();
            std::fs::write(staged.join("node.raw"), v).unwrap();
            keep(root.path(), &staged, &kept, &["stable".into()]).unwrap();
        }
        let newest = find(root.path(), "node").unwrap();
        assert_eq!(newest.version, "20261128.2");
        assert_eq!(std::fs::read_to_string(newest.raw()).unwrap(), "20261128.2");
        assert_eq!(
            find(root.path(), "node:stable").unwrap().version,
            "20261128.2"
        );
        assert_eq!(
            find(root.path(), "node:20261128.1").unwrap().version,
            "20261128.1"
        );
        let e = find(root.path(), "node:nope").unwrap_err().to_string();
        assert!(e.contains("20261128.1, 20261128.2"), "{e}");
        assert!(find(root.path(), "other").is_err());
        let listed = list(root.path()).unwrap();
        let shown: Vec<(&str, &[String])> = listed
            .iter()
            .map(|l| (l.kept.version.as_str(), l.tags.as_slice()))
            .collect();
        assert_eq!(
            shown,
            [
                ("20261128.1", &[][..]),
                ("20261128.2", &["stable".to_string()][..])
            ]
        );
        // removing the newest moves `newest` back; a bare name is refused
        assert!(remove(root.path(), "node").is_err());
        remove(root.path(), "node:stable").unwrap();
        assert_eq!(find(root.path(), "node").unwrap().version, "20261128.1");
        assert!(find(root.path(), "node:stable").is_err());
        assert_eq!(list(root.path()).unwrap().len(), 1);
    }
}
