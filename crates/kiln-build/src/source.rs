//! Where base images come from. The engine only sees [`ImageSource`]; the
//! store-backed source here also imports `oci-layout:DIR[:TAG]` bases.

use std::path::Path;

use kiln_oci::image::{Descriptor, ImageConfig, Index, Manifest, MEDIA_INDEX};
use kiln_store::{parse_digest, Store};

/// A base image whose blobs are in the store.
#[derive(Debug, Clone)]
pub struct BaseImage {
    pub reference: String,
    pub manifest_digest: String,
    pub config: ImageConfig,
    pub layers: Vec<Descriptor>,
}

/// Resolves a FROM reference to an image in the store.
pub trait ImageSource {
    fn resolve(&self, reference: &str) -> Result<BaseImage, String>;
}

/// Images already in the store, and OCI layouts on disk.
pub struct StoreSource<'a> {
    pub store: &'a Store,
}

impl ImageSource for StoreSource<'_> {
    fn resolve(&self, reference: &str) -> Result<BaseImage, String> {
        if let Some(rest) = reference.strip_prefix("oci-layout:") {
            return import_layout(self.store, reference, rest);
        }
        let img = self.store.image(reference).map_err(|e| {
            format!("{e}; kiln has no registry client yet: load it with `kiln build` or use FROM oci-layout:DIR[:TAG]")
        })?;
        Ok(BaseImage {
            reference: img.name,
            manifest_digest: img.manifest_digest.to_string(),
            config: img.config,
            layers: img.manifest.layers,
        })
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("parsing {}: {e}", path.display()))
}

/// Copies an image out of an OCI layout directory into the store, checking
/// every blob against its digest.
fn import_layout(store: &Store, reference: &str, spec: &str) -> Result<BaseImage, String> {
    let (dir, tag) = match spec.rsplit_once(':') {
        Some((d, t)) if !t.contains('/') && !d.is_empty() => (d, Some(t)),
        _ => (spec, None),
    };
    let dir = Path::new(dir);
    let index: Index = read_json(&dir.join("index.json"))?;
    let wanted = index
        .manifests
        .iter()
        .filter(|d| d.media_type != MEDIA_INDEX)
        .find(|d| match tag {
            Some(t) => d
                .annotations
                .get("org.opencontainers.image.ref.name")
                .is_some_and(|n| n == t),
            None => true,
        });
    let desc = wanted.ok_or_else(|| {
        format!(
            "{}: no image{} in its index.json",
            dir.display(),
            tag.map(|t| format!(" tagged {t:?}")).unwrap_or_default()
        )
    })?;
    let copy = |d: &Descriptor| -> Result<(), String> {
        let digest = parse_digest(&d.digest).map_err(|e| e.to_string())?;
        if store.has_blob(&digest) {
            return Ok(());
        }
        let path = dir.join("blobs/sha256").join(digest.digest());
        let f =
            std::fs::File::open(&path).map_err(|e| format!("opening {}: {e}", path.display()))?;
        store
            .put_blob_from(f, Some(&digest))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(())
    };
    copy(desc)?;
    let manifest: Manifest = read_json(
        &dir.join("blobs/sha256")
            .join(desc.digest.trim_start_matches("sha256:")),
    )?;
    copy(&manifest.config)?;
    for l in &manifest.layers {
        copy(l)?;
    }
    let config: ImageConfig = read_json(
        &dir.join("blobs/sha256")
            .join(manifest.config.digest.trim_start_matches("sha256:")),
    )?;
    Ok(BaseImage {
        reference: reference.to_string(),
        manifest_digest: desc.digest.clone(),
        config,
        layers: manifest.layers,
    })
}
