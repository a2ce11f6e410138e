//! The two [`Place`]s: the local store and a registry repository.

use std::io::Read;

use kiln_oci::image::Descriptor;
use kiln_registry::{Client, Reference};
use kiln_store::Store;

use crate::attach::{AttachError, Place};
use crate::cosign::{referrer_manifest, Kind, Layer, Manifest, MANIFEST};

/// A store name's repository and tag (`latest` when it has none).
pub fn split_name(name: &str) -> (&str, &str) {
    let last = name.rsplit('/').next().unwrap_or(name);
    match last.split_once(':') {
        Some((_, tag)) => (&name[..name.len() - tag.len() - 1], tag),
        None => (name, "latest"),
    }
}

/// The attachments the store holds for `digests` of the image `name`:
/// (store name, tag) of each, for an archive to carry them.
pub fn stored_attachments(store: &Store, name: &str, digests: &[String]) -> Vec<(String, String)> {
    let repo = split_name(name).0;
    let mut out = Vec::new();
    for d in digests {
        for kind in [
            crate::cosign::Kind::Signature,
            crate::cosign::Kind::Attestations,
        ] {
            let tag = kind.tag(d);
            let full = format!("{repo}:{tag}");
            if store.lookup(&full).is_ok() {
                out.push((full, tag));
            }
        }
    }
    out
}

/// The store: the attachments of image `NAME` are the names
/// `NAME:sha256-<hex>.sig` and `.att`.
pub struct StorePlace<'a> {
    pub store: &'a Store,
    /// The image's name without its tag.
    pub name: String,
}

impl<'a> StorePlace<'a> {
    /// The place of the image named `name` (`app:1.2`, or `app`).
    pub fn of(store: &'a Store, name: &str) -> Self {
        Self {
            store,
            name: split_name(name).0.to_string(),
        }
    }

    fn err(&self, e: impl std::fmt::Display) -> AttachError {
        AttachError::Place {
            place: format!("the store's {}", self.name),
            message: e.to_string(),
        }
    }
}

impl Place for StorePlace<'_> {
    fn manifest(&self, tag: &str) -> Result<Option<Vec<u8>>, AttachError> {
        match self.store.lookup(&format!("{}:{tag}", self.name)) {
            Ok((_, d)) => {
                let digest = kiln_store::parse_digest(&d.digest).map_err(|e| self.err(e))?;
                self.store
                    .read_blob(&digest)
                    .map(Some)
                    .map_err(|e| self.err(e))
            }
            Err(kiln_store::Error::NoSuchImage(_)) => Ok(None),
            Err(e) => Err(self.err(e)),
        }
    }

    fn blob(&self, digest: &str) -> Result<Vec<u8>, AttachError> {
        let d = kiln_store::parse_digest(digest).map_err(|e| self.err(e))?;
        self.store.read_blob(&d).map_err(|e| self.err(e))
    }

    fn put(&self, tag: &str, m: &Manifest, layers: &[Layer]) -> Result<(), AttachError> {
        for l in layers {
            self.store.put_blob(&l.blob).map_err(|e| self.err(e))?;
        }
        self.store.put_blob(&m.config).map_err(|e| self.err(e))?;
        let digest = self.store.put_blob(&m.json).map_err(|e| self.err(e))?;
        let desc = Descriptor {
            media_type: MANIFEST.into(),
            digest: digest.to_string(),
            size: m.json.len() as u64,
            annotations: Default::default(),
            platform: None,
        };
        self.store
            .tag(&format!("{}:{tag}", self.name), &desc)
            .map(drop)
            .map_err(|e| self.err(e))
    }

    fn describe(&self) -> String {
        format!("the store's {}", self.name)
    }
}

/// A registry repository.
pub struct RegistryPlace<'a> {
    pub client: &'a Client,
    /// The repository (any tag or digest it carries is ignored).
    pub repo: Reference,
}

impl Place for RegistryPlace<'_> {
    fn manifest(&self, tag: &str) -> Result<Option<Vec<u8>>, AttachError> {
        match self.client.get_manifest_at(&self.repo, tag) {
            Ok((bytes, _)) => Ok(Some(bytes)),
            Err(kiln_registry::Error::NotFound(_)) => Ok(None),
            Err(e) => Err(self.err(e)),
        }
    }

    fn blob(&self, digest: &str) -> Result<Vec<u8>, AttachError> {
        let mut out = Vec::new();
        self.client
            .get_blob(&self.repo, digest)
            .map_err(|e| self.err(e))?
            .take(64 << 20)
            .read_to_end(&mut out)
            .map_err(|e| self.err(e))?;
        Ok(out)
    }

    fn put(&self, tag: &str, m: &Manifest, layers: &[Layer]) -> Result<(), AttachError> {
        self.push_blobs(m, layers)?;
        self.client
            .put_manifest(&self.repo, tag, &m.json, MANIFEST)
            .map_err(|e| self.err(e))
    }

    fn describe(&self) -> String {
        self.repo.name()
    }

    fn refer(&self, kind: Kind, subject: &str, layers: &[Layer]) -> Result<bool, AttachError> {
        let has_api = self
            .client
            .referrers(&self.repo, subject, None)
            .map_err(|e| self.err(e))?
            .is_some();
        if !has_api {
            return Ok(false);
        }
        let (image, media_type) = self
            .client
            .get_manifest_at(&self.repo, subject)
            .map_err(|e| self.err(e))?;
        let m = referrer_manifest(kind, layers, &media_type, subject, image.len() as u64);
        self.push_blobs(&m, layers)?;
        self.client
            .put_manifest(&self.repo, &m.digest(), &m.json, MANIFEST)
            .map_err(|e| self.err(e))?;
        Ok(true)
    }

    fn referrers(&self, kind: Kind, subject: &str) -> Result<Vec<Vec<u8>>, AttachError> {
        let wanted = kind.artifact_type();
        let Some(index) = self
            .client
            .referrers(&self.repo, subject, Some(wanted))
            .map_err(|e| self.err(e))?
        else {
            return Ok(Vec::new());
        };
        let index: serde_json::Value = serde_json::from_slice(&index).map_err(|_| {
            AttachError::Malformed(format!("{}: referrers of {subject}", self.describe()))
        })?;
        let mut out = Vec::new();
        for d in index["manifests"].as_array().into_iter().flatten() {
            // the registry may not have applied the filter
            let (Some(digest), Some(wanted_too)) =
                (d["digest"].as_str(), d["artifactType"].as_str())
            else {
                continue;
            };
            if wanted_too != wanted {
                continue;
            }
            let (bytes, _) = self
                .client
                .get_manifest_at(&self.repo, digest)
                .map_err(|e| self.err(e))?;
            if crate::cosign::digest_of(&bytes) != digest {
                return Err(AttachError::Mismatch {
                    what: format!("{}: a referrer of {subject}", self.describe()),
                    digest: digest.to_string(),
                });
            }
            out.push(bytes);
        }
        Ok(out)
    }
}

impl RegistryPlace<'_> {
    fn err(&self, e: impl std::fmt::Display) -> AttachError {
        AttachError::Place {
            place: self.repo.name(),
            message: e.to_string(),
        }
    }

    /// Uploads the blobs of `m` and its layers the repository lacks.
    fn push_blobs(&self, m: &Manifest, layers: &[Layer]) -> Result<(), AttachError> {
        let blobs = layers
            .iter()
            .map(|l| l.blob.clone())
            .chain(std::iter::once(m.config.clone()));
        for b in blobs {
            let digest = crate::cosign::digest_of(&b);
            if self
                .client
                .has_blob(&self.repo, &digest)
                .map_err(|e| self.err(e))?
            {
                continue;
            }
            let len = b.len() as u64;
            let open = move || -> std::io::Result<Box<dyn Read + Send>> {
                Ok(Box::new(std::io::Cursor::new(b.clone())))
            };
            self.client
                .upload_blob(&self.repo, &digest, len, &open, None)
                .map_err(|e| self.err(e))?;
        }
        Ok(())
    }
}
