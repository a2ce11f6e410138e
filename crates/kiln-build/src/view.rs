//! A read-only merged view of a stack of overlay diff dirs, without mounting:
//! the lookups overlayfs would do, for COPY --from, users and WORKDIR.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Component, Path, PathBuf};

use kiln_oci::layer::OPAQUE_XATTR;
use kiln_oci::unpack::is_whiteout;

/// Layers, top-most first.
#[derive(Debug, Clone, Default)]
pub struct View {
    pub layers: Vec<PathBuf>,
}

fn is_opaque(dir: &Path) -> bool {
    kiln_oci::xattr::get(dir, OPAQUE_XATTR)
        .ok()
        .flatten()
        .as_deref()
        == Some(b"y")
}

impl View {
    pub fn new(layers: Vec<PathBuf>) -> Self {
        View { layers }
    }

    /// The file backing `rel` (no symlinks resolved), if it exists in the merged tree.
    pub fn lookup_exact(&self, rel: &Path) -> Option<PathBuf> {
        let parts: Vec<&std::ffi::OsStr> = rel
            .components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n),
                _ => None,
            })
            .collect();
        if parts.is_empty() {
            return self.layers.first().cloned();
        }
        'layers: for layer in &self.layers {
            let mut cur = layer.clone();
            for (i, part) in parts.iter().enumerate() {
                cur.push(part);
                let last = i + 1 == parts.len();
                match fs::symlink_metadata(&cur) {
                    Ok(m) if is_whiteout(&m) => return None,
                    Ok(m) if last => {
                        let _ = m;
                        return Some(cur);
                    }
                    Ok(m) if m.is_dir() => {
                        if is_opaque(&cur) {
                            // nothing below this layer shows through here
                            return self.lookup_in_single(&cur, &parts[i + 1..]);
                        }
                    }
                    Ok(_) => return None, // a file hides the rest of the path
                    Err(_) => continue 'layers,
                }
            }
        }
        None
    }

    fn lookup_in_single(&self, dir: &Path, rest: &[&std::ffi::OsStr]) -> Option<PathBuf> {
        let mut cur = dir.to_path_buf();
        for p in rest {
            cur.push(p);
        }
        fs::symlink_metadata(&cur)
            .ok()
            .filter(|m| !is_whiteout(m))
            .map(|_| cur)
    }

    /// Resolves symlinks in `rel` inside the root (as the container would)
    /// and returns the clean path and its backing file.
    pub fn resolve(&self, rel: &Path, follow_last: bool) -> Option<(PathBuf, PathBuf)> {
        let cur = self.walk(rel, follow_last, false)?;
        let backing = self.lookup_exact(&cur)?;
        Some((cur, backing))
    }

    /// The path `rel` names as the image sees it, for writing to it: its
    /// symlinks followed inside the root (absolute ones from the root, a
    /// final one too, dangling ones to where they point), and the part that
    /// does not exist yet appended as written. BuildKit and buildah resolve
    /// a COPY destination and a WORKDIR this way, so an image's `/lib ->
    /// usr/lib` is written through, never replaced by a directory.
    pub fn resolve_dest(&self, rel: &Path) -> PathBuf {
        self.walk(rel, true, true).unwrap_or_else(|| {
            rel.components()
                .filter(|c| matches!(c, std::path::Component::Normal(_)))
                .collect()
        })
    }

    /// Walks `rel` through the merged tree, following symlinks inside the
    /// root (a final one when `follow_last`; `..` never above the root).
    /// A missing component ends the walk, or with `missing_ok` is taken as
    /// written; a symlink loop ends it.
    fn walk(&self, rel: &Path, follow_last: bool, missing_ok: bool) -> Option<PathBuf> {
        let mut cur = PathBuf::new();
        let mut queue = kiln_root::components(rel);
        queue.reverse();
        let mut hops = 0;
        while let Some(name) = queue.pop() {
            if name == ".." {
                cur.pop();
                continue;
            }
            let next = cur.join(&name);
            let Some(backing) = self.lookup_exact(&next) else {
                if !missing_ok {
                    return None;
                }
                cur = next;
                continue;
            };
            let is_link = fs::symlink_metadata(&backing)
                .ok()?
                .file_type()
                .is_symlink();
            if is_link && (!queue.is_empty() || follow_last) {
                hops += 1;
                if hops > 40 {
                    return None;
                }
                let target = fs::read_link(&backing).ok()?;
                if target.is_absolute() {
                    cur = PathBuf::new();
                }
                let parts = kiln_root::components(&target);
                queue.extend(parts.into_iter().rev());
                continue;
            }
            cur = next;
        }
        Some(cur)
    }

    /// Names in the merged directory `rel` (already resolved), sorted.
    pub fn list(&self, rel: &Path) -> Vec<std::ffi::OsString> {
        let mut seen = BTreeSet::new();
        let mut hidden = BTreeSet::new();
        for layer in &self.layers {
            let dir = layer.join(rel);
            let Ok(meta) = fs::symlink_metadata(&dir) else {
                continue;
            };
            if is_whiteout(&meta) || !meta.is_dir() {
                break;
            }
            if let Ok(rd) = fs::read_dir(&dir) {
                for e in rd.flatten() {
                    let name = e.file_name();
                    if seen.contains(&name) || hidden.contains(&name) {
                        continue;
                    }
                    match e.metadata() {
                        Ok(m) if is_whiteout(&m) => {
                            hidden.insert(name);
                        }
                        _ => {
                            seen.insert(name);
                        }
                    }
                }
            }
            if is_opaque(&dir) {
                break;
            }
        }
        seen.into_iter().collect()
    }

    /// Reads a file of the merged tree, following symlinks inside the root.
    pub fn read(&self, rel: &str) -> Option<Vec<u8>> {
        let (_, backing) = self.resolve(Path::new(rel.trim_start_matches('/')), true)?;
        fs::read(backing).ok()
    }
}
