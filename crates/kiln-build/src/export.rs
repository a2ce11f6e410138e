//! Getting an image out of the store: `docker load` archives, OCI archives
//! and layouts, and the flattened root filesystem.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use kiln_oci::image::{is_index_media, Descriptor, Index, MEDIA_MANIFEST};
use kiln_oci::unpack::{unpack, Target};
use kiln_store::{parse_digest, Image, Store};
use serde_json::json;

use crate::BuildError;

/// What an OCI export writes: one image, or an image index with those of
/// its images that are in the store.
#[derive(Debug, Clone)]
pub struct Export {
    pub name: String,
    /// The manifest or index descriptor the layout's index.json names.
    pub top: Descriptor,
    pub images: Vec<Image>,
    /// More manifests the layout names besides the image (its signatures
    /// and attestations): each descriptor, named, and the blobs it needs.
    pub extra: Vec<(Descriptor, Vec<String>)>,
}

impl Export {
    /// The image or index the store's `name` holds.
    pub fn of(store: &Store, name: &str) -> Result<Export, BuildError> {
        let (full, mut top) = store.lookup(name)?;
        top.annotations.clear();
        Ok(Export {
            name: full,
            top,
            images: store.images_of(name)?,
            extra: Vec::new(),
        })
    }

    /// Adds the manifest the store's `name` holds (not an image: any
    /// manifest whose blobs are in the store), named `ref_name` in the
    /// layout's index.json.
    pub fn add_manifest(
        &mut self,
        store: &Store,
        name: &str,
        ref_name: &str,
    ) -> Result<(), BuildError> {
        let (_, mut d) = store.lookup(name)?;
        let bytes = store.read_blob(&kiln_store::parse_digest(&d.digest)?)?;
        let m: kiln_oci::image::Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| BuildError::Context(format!("{name}: {e}")))?;
        let mut blobs = vec![d.digest.clone(), m.config.digest.clone()];
        blobs.extend(m.layers.iter().map(|l| l.digest.clone()));
        d.annotations.clear();
        d.annotations
            .insert("org.opencontainers.image.ref.name".into(), ref_name.into());
        self.extra.push((d, blobs));
        Ok(())
    }

    /// One image.
    pub fn image(img: &Image) -> Export {
        Export {
            name: img.name.clone(),
            top: Descriptor {
                media_type: MEDIA_MANIFEST.into(),
                digest: img.manifest_digest.to_string(),
                size: img.manifest_size,
                annotations: Default::default(),
                platform: None,
            },
            images: vec![img.clone()],
            extra: Vec::new(),
        }
    }

    /// Every blob, the index's first.
    fn blobs(&self) -> Vec<String> {
        let index = is_index_media(&self.top.media_type).then(|| self.top.digest.clone());
        let mut out: Vec<String> = index.into_iter().collect();
        for img in &self.images {
            out.push(img.manifest_digest.to_string());
            out.push(img.manifest.config.digest.clone());
            out.extend(img.manifest.layers.iter().map(|l| l.digest.clone()));
        }
        for (_, blobs) in &self.extra {
            out.extend(blobs.iter().cloned());
        }
        let mut seen = std::collections::HashSet::new();
        out.retain(|b| seen.insert(b.clone()));
        out
    }

    /// The layout's index.json: the image or index, named.
    fn layout_index(&self, name: &str) -> Index {
        let mut d = self.top.clone();
        d.annotations
            .insert("org.opencontainers.image.ref.name".into(), name.to_string());
        d.annotations
            .insert("io.containerd.image.name".into(), name.to_string());
        let mut manifests = vec![d];
        manifests.extend(self.extra.iter().map(|(d, _)| d.clone()));
        Index {
            manifests,
            ..Index::default()
        }
    }
}

fn add_file(
    tar: &mut tar::Builder<impl Write>,
    name: &str,
    bytes: &[u8],
) -> Result<(), BuildError> {
    let mut h = tar::Header::new_ustar();
    h.set_size(bytes.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut h, name, bytes)
        .map_err(|e| BuildError::io(format!("writing {name}"), e))
}

fn add_blob(
    tar: &mut tar::Builder<impl Write>,
    store: &Store,
    digest: &str,
) -> Result<(), BuildError> {
    let d = parse_digest(digest)?;
    let path = store.blob_path(&d);
    let mut f =
        File::open(&path).map_err(|e| BuildError::io(format!("opening {}", path.display()), e))?;
    let name = format!("blobs/sha256/{}", d.digest());
    tar.append_file(&name, &mut f)
        .map_err(|e| BuildError::io(format!("writing {name}"), e))
}

fn write_layout(
    tar: &mut tar::Builder<impl Write>,
    store: &Store,
    export: &Export,
) -> Result<(), BuildError> {
    add_file(tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let index = serde_json::to_vec(&export.layout_index(&export.name))
        .map_err(|e| BuildError::Context(e.to_string()))?;
    add_file(tar, "index.json", &index)?;
    for b in export.blobs() {
        add_blob(tar, store, &b)?;
    }
    Ok(())
}

/// An OCI archive (`--output type=oci`): the image layout as a tar.
pub fn save_oci(store: &Store, export: &Export, out: impl Write) -> Result<(), BuildError> {
    let mut tar = tar::Builder::new(out);
    write_layout(&mut tar, store, export)?;
    tar.finish()
        .map_err(|e| BuildError::io("finishing the archive", e))
}

/// Writes an OCI archive (`docker: false`) or a `docker load` archive to
/// the file `dest` atomically: a partial file in the same directory,
/// synced, then renamed. A failure leaves no file at `dest`.
/// A `docker load` archive holds one image: an index is refused.
pub fn save_archive_file(
    store: &Store,
    export: &Export,
    names: &[String],
    docker: bool,
    dest: &Path,
) -> Result<(), BuildError> {
    if docker && is_index_media(&export.top.media_type) {
        return Err(BuildError::Context(format!(
            "{} is a multi-platform image: a docker archive holds one platform; \
             save it as an OCI archive, or pick one with --platform",
            export.name
        )));
    }
    if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent)
            .map_err(|e| BuildError::io(format!("creating {}", parent.display()), e))?;
    }
    let tmp = dest.with_extension("kiln-partial");
    let result = (|| {
        let file = File::create(&tmp)
            .map_err(|e| BuildError::io(format!("creating {}", tmp.display()), e))?;
        let mut w = std::io::BufWriter::new(file);
        if docker {
            save_docker(store, &export.images[0], names, &mut w)?;
        } else {
            save_oci(store, export, &mut w)?;
        }
        let file = w
            .into_inner()
            .map_err(|e| BuildError::io(format!("writing {}", tmp.display()), e.into_error()))?;
        file.sync_all()
            .map_err(|e| BuildError::io(format!("writing {}", tmp.display()), e))?;
        fs::rename(&tmp, dest).map_err(|e| BuildError::io(format!("writing {}", dest.display()), e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// A `docker load` archive: the OCI layout plus Docker's manifest.json.
pub fn save_docker(
    store: &Store,
    img: &Image,
    names: &[String],
    out: impl Write,
) -> Result<(), BuildError> {
    let mut tar = tar::Builder::new(out);
    write_layout(&mut tar, store, &Export::image(img))?;
    let path = |d: &str| format!("blobs/sha256/{}", d.trim_start_matches("sha256:"));
    let manifest = json!([{
        "Config": path(&img.manifest.config.digest),
        "RepoTags": names.iter().map(|n| docker_name(n)).collect::<Vec<_>>(),
        "Layers": img.manifest.layers.iter().map(|l| path(&l.digest)).collect::<Vec<_>>(),
    }]);
    add_file(&mut tar, "manifest.json", manifest.to_string().as_bytes())?;
    tar.finish()
        .map_err(|e| BuildError::io("finishing the archive", e))
}

/// Docker's RepoTags need a tag and no digest.
fn docker_name(name: &str) -> String {
    name.split('@').next().unwrap_or(name).to_string()
}

/// An OCI layout directory (`--output type=oci-layout`).
pub fn save_layout_dir(store: &Store, export: &Export, dir: &Path) -> Result<(), BuildError> {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs)
        .map_err(|e| BuildError::io(format!("creating {}", blobs.display()), e))?;
    for b in export.blobs() {
        let d = parse_digest(&b)?;
        fs::copy(store.blob_path(&d), blobs.join(d.digest()))
            .map_err(|e| BuildError::io(format!("copying blob {b}"), e))?;
    }
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
        .map_err(|e| BuildError::io("writing oci-layout", e))?;
    let index = serde_json::to_vec(&export.layout_index(&export.name))
        .map_err(|e| BuildError::Context(e.to_string()))?;
    fs::write(dir.join("index.json"), index).map_err(|e| BuildError::io("writing index.json", e))
}

/// The root filesystem, layers applied in order (`--output type=local`).
pub fn save_rootfs(store: &Store, img: &Image, dir: &Path) -> Result<(), BuildError> {
    fs::create_dir_all(dir)
        .map_err(|e| BuildError::io(format!("creating {}", dir.display()), e))?;
    for l in &img.manifest.layers {
        let blob = store.open_blob(&parse_digest(&l.digest)?)?;
        unpack(blob, dir, Target::Flat)?;
    }
    Ok(())
}
