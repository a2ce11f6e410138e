//! Where base images come from. The engine only sees [`ImageSource`]; the
//! store-backed source here also imports `oci-layout:DIR[:TAG]` bases.

use std::path::Path;

use kiln_dockerfile::Platform;
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

/// Resolves a FROM reference to an image in the store, for a platform: an
/// index gives that platform's entry. A single-platform image is returned
/// whatever its platform; the engine compares.
pub trait ImageSource {
    fn resolve(&self, reference: &str, platform: &Platform) -> Result<BaseImage, SourceError>;
}

/// Why a base image could not be had: a caller tells a base that does not
/// exist from a registry that could not be asked and from an image that is
/// there but not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// No such image: not in the store, not in its registry.
    #[error("{0}")]
    NotFound(String),
    /// The registry could not be asked, or the transfer failed part way.
    #[error("{0}")]
    Unreachable(String),
    /// The image is there but cannot be used: a broken archive or layout,
    /// a hostile layer, no entry for the platform.
    #[error("{0}")]
    Invalid(String),
}

/// Resolves each reference once per build: the frontend (base configs),
/// the runnability check and the stages all ask, and resolving may pull
/// or import an archive.
pub(crate) struct Memo<'a> {
    pub inner: &'a (dyn ImageSource + Sync),
    done: std::sync::Mutex<std::collections::HashMap<(String, String), BaseImage>>,
}

impl<'a> Memo<'a> {
    pub fn new(inner: &'a (dyn ImageSource + Sync)) -> Self {
        Memo {
            inner,
            done: Default::default(),
        }
    }
}

impl ImageSource for Memo<'_> {
    fn resolve(&self, reference: &str, platform: &Platform) -> Result<BaseImage, SourceError> {
        let key = (reference.to_string(), platform.to_string());
        let known = self
            .done
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .cloned();
        if let Some(img) = known {
            return Ok(img);
        }
        let img = self.inner.resolve(reference, platform)?;
        self.done
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, img.clone());
        Ok(img)
    }
}

/// Images already in the store, and OCI layouts on disk.
pub struct StoreSource<'a> {
    pub store: &'a Store,
}

impl ImageSource for StoreSource<'_> {
    fn resolve(&self, reference: &str, platform: &Platform) -> Result<BaseImage, SourceError> {
        let platform = oci_platform(platform);
        if let Some(rest) = reference.strip_prefix("oci-layout:") {
            let (dir, tag) = split_tag(rest);
            return import_layout(self.store, reference, Path::new(dir), tag, &platform)
                .map_err(SourceError::Invalid);
        }
        if let Some(rest) = reference.strip_prefix("oci-archive:") {
            let (file, tag) = split_tag(rest);
            let dir = extract(self.store, Path::new(file)).map_err(SourceError::Invalid)?;
            return import_layout(self.store, reference, dir.path(), tag, &platform)
                .map_err(SourceError::Invalid);
        }
        if let Some(rest) = reference.strip_prefix("docker-archive:") {
            let (file, tag) = split_tag(rest);
            let dir = extract(self.store, Path::new(file)).map_err(SourceError::Invalid)?;
            return import_docker(self.store, reference, dir.path(), tag)
                .map_err(SourceError::Invalid);
        }
        let img = self
            .store
            .image_for(reference, &platform)
            .map_err(|e| match e {
                kiln_store::Error::NoSuchImage(_) => SourceError::NotFound(e.to_string()),
                e => SourceError::Invalid(e.to_string()),
            })?;
        Ok(BaseImage {
            reference: img.name,
            manifest_digest: img.manifest_digest.to_string(),
            config: img.config,
            layers: img.manifest.layers,
        })
    }
}

/// The engine's platform in the image spec's terms.
pub fn oci_platform(p: &Platform) -> kiln_oci::image::Platform {
    kiln_oci::image::Platform::new(&p.os, &p.architecture, &p.variant)
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("parsing {}: {e}", path.display()))
}

/// `PATH[:TAG]`: the path is the longest prefix that exists; what follows
/// the next colon names the image (and may itself contain colons).
fn split_tag(spec: &str) -> (&str, Option<&str>) {
    if Path::new(spec).exists() {
        return (spec, None);
    }
    let mut best = (spec, None);
    for (i, _) in spec.match_indices(':') {
        if Path::new(&spec[..i]).exists() {
            best = (&spec[..i], Some(&spec[i + 1..]));
        }
    }
    best
}

/// A temporary directory in the store, removed when dropped.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Unpacks an archive file into a temporary directory; the tar reader keeps
/// every entry inside it.
fn extract(store: &Store, file: &Path) -> Result<TempDir, String> {
    let dir = TempDir(store.temp_path("archive"));
    std::fs::create_dir(dir.path())
        .map_err(|e| format!("creating {}: {e}", dir.path().display()))?;
    let f = std::fs::File::open(file).map_err(|e| format!("opening {}: {e}", file.display()))?;
    let mut archive = tar::Archive::new(std::io::BufReader::new(f));
    for entry in archive
        .entries()
        .map_err(|e| format!("reading {}: {e}", file.display()))?
    {
        let mut entry = entry.map_err(|e| format!("reading {}: {e}", file.display()))?;
        if !entry
            .unpack_in(dir.path())
            .map_err(|e| format!("unpacking {}: {e}", file.display()))?
        {
            return Err(format!(
                "{}: entry {:?} would land outside the archive",
                file.display(),
                entry.path().unwrap_or_default()
            ));
        }
    }
    Ok(dir)
}

/// Imports the image of a `docker save` archive: manifest.json names the
/// config and the layer tars.
fn import_docker(
    store: &Store,
    reference: &str,
    dir: &Path,
    tag: Option<&str>,
) -> Result<BaseImage, String> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Entry {
        config: String,
        #[serde(default)]
        repo_tags: Vec<String>,
        layers: Vec<String>,
    }
    let entries: Vec<Entry> = read_json(&dir.join("manifest.json"))?;
    let entry = entries
        .iter()
        .find(|e| {
            tag.is_none_or(|t| {
                e.repo_tags
                    .iter()
                    .any(|r| r == t || r.ends_with(&format!(":{t}")))
            })
        })
        .ok_or_else(|| {
            format!(
                "{}: no image{} in manifest.json",
                dir.display(),
                tag.map(|t| format!(" named {t:?}")).unwrap_or_default()
            )
        })?;
    let inside = |p: &str| {
        crate::context::clean(p)
            .map(|c| dir.join(c))
            .ok_or_else(|| format!("manifest.json names {p:?}, outside the archive"))
    };
    let config_bytes =
        std::fs::read(inside(&entry.config)?).map_err(|e| format!("reading the config: {e}"))?;
    let config: ImageConfig =
        serde_json::from_slice(&config_bytes).map_err(|e| format!("parsing the config: {e}"))?;
    let config_digest = store.put_blob(&config_bytes).map_err(|e| e.to_string())?;
    let mut layers = Vec::new();
    for l in &entry.layers {
        let path = inside(l)?;
        let f = std::fs::File::open(&path).map_err(|e| format!("opening layer {l}: {e}"))?;
        let (digest, size) = store.put_blob_from(f, None).map_err(|e| e.to_string())?;
        let mut head = [0u8; 2];
        let gz = std::fs::File::open(&path)
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head))
            .is_ok()
            && head == [0x1f, 0x8b];
        let media_type = if gz {
            kiln_oci::image::MEDIA_LAYER_GZIP
        } else {
            kiln_oci::image::MEDIA_LAYER
        };
        layers.push(Descriptor {
            media_type: media_type.into(),
            digest: digest.to_string(),
            size,
            annotations: Default::default(),
            platform: None,
        });
    }
    Ok(BaseImage {
        reference: reference.to_string(),
        manifest_digest: format!("docker-archive-config:{config_digest}"),
        config,
        layers,
    })
}

/// Copies an image out of an OCI layout directory into the store, checking
/// every blob against its digest.
fn import_layout(
    store: &Store,
    reference: &str,
    dir: &Path,
    tag: Option<&str>,
    platform: &kiln_oci::image::Platform,
) -> Result<BaseImage, String> {
    let index: Index = read_json(&dir.join("index.json"))?;
    let wanted = index.manifests.iter().find(|d| match tag {
        Some(t) => d
            .annotations
            .get("org.opencontainers.image.ref.name")
            .is_some_and(|n| n == t),
        None => true,
    });
    let mut desc = wanted
        .ok_or_else(|| {
            format!(
                "{}: no image{} in its index.json",
                dir.display(),
                tag.map(|t| format!(" tagged {t:?}")).unwrap_or_default()
            )
        })?
        .clone();
    // a multi-platform image: the entry for the platform
    if desc.media_type == MEDIA_INDEX {
        let path = dir
            .join("blobs/sha256")
            .join(desc.digest.trim_start_matches("sha256:"));
        let inner: Index = read_json(&path)?;
        desc = inner
            .manifests
            .iter()
            .find(|d| d.platform.as_ref().is_some_and(|p| p.serves(platform)))
            .cloned()
            .ok_or_else(|| {
                format!(
                    "{}: the image index has no image for {platform} (it has {})",
                    dir.display(),
                    kiln_store::platforms_of(&inner).join(", ")
                )
            })?;
    }
    let desc = &desc;
    let copy = |d: &Descriptor| -> Result<(), String> {
        let digest = parse_digest(&d.digest).map_err(|e| e.to_string())?;
        if store.has_blob(&digest) {
            return Ok(());
        }
        let path = dir.join("blobs/sha256").join(digest.digest());
        let f =
            std::fs::File::open(&path).map_err(|e| format!("opening {}: {e}", path.display()))?;
        store
            .put_described(f, &digest, d.size)
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
