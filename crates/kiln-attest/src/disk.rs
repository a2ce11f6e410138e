//! A VM disk's SBOM: that of the image it was made from (the x86-64 one,
//! which a VM boots), bound to the disk files of its artifact.

use serde_json::Value;

use crate::sbom::{self, Disk, DiskFile, Inventory, Subject};

/// Why a VM disk's SBOM could not be made.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("the VM artifact's manifest is not an OCI manifest with file layers")]
    Manifest,
    #[error("the image {0} the VM was made from is not in the store (removed since?)")]
    NoImage(String),
    #[error(transparent)]
    Store(#[from] kiln_store::Error),
}

/// The disk files an artifact manifest names (each layer's
/// `org.opencontainers.image.title`, digest and size).
pub fn disk(name: &str, version: &str, manifest: &[u8]) -> Result<Disk, DiskError> {
    let v: Value = serde_json::from_slice(manifest).map_err(|_| DiskError::Manifest)?;
    let files = v["layers"]
        .as_array()
        .ok_or(DiskError::Manifest)?
        .iter()
        .map(|l| {
            Some(DiskFile {
                name: l["annotations"]["org.opencontainers.image.title"]
                    .as_str()?
                    .to_string(),
                digest: l["digest"].as_str()?.to_string(),
                size: l["size"].as_u64()?,
            })
        })
        .collect::<Option<Vec<_>>>()
        .ok_or(DiskError::Manifest)?;
    Ok(Disk {
        name: name.to_string(),
        version: version.to_string(),
        digest: crate::cosign::digest_of(manifest),
        files,
    })
}

/// The inventory and subject of the image `image` (a store name) a VM is
/// made from: the platform image with manifest digest `prefer` when there
/// is one, else its linux/amd64 image, else its only one.
pub fn source(
    store: &kiln_store::Store,
    image: &str,
    display_name: &str,
    prefer: Option<&str>,
) -> Result<(Inventory, Subject), DiskError> {
    let images = store.images_of(image)?;
    let img = images
        .iter()
        .find(|i| Some(i.manifest_digest.to_string().as_str()) == prefer)
        .or_else(|| {
            images
                .iter()
                .find(|i| i.config.platform().to_string() == "linux/amd64")
        })
        .or(images.first())
        .ok_or_else(|| DiskError::NoImage(image.to_string()))?;
    let inventory = sbom::of_image(store, img)?;
    let subject = Subject {
        name: display_name.to_string(),
        version: image.rsplit(':').next().unwrap_or_default().to_string(),
        digest: img.manifest_digest.to_string(),
        platform: Some(img.config.platform().to_string()),
    };
    Ok((inventory, subject))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_artifact_manifest_names_the_disk_files() {
        let m = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
            "artifactType":"application/vnd.kiln.vm.v1",
            "config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},
            "layers":[{"mediaType":"application/vnd.kiln.vm.disk.v1.qcow2","digest":"sha256:aa","size":12,
              "annotations":{"org.opencontainers.image.title":"node.qcow2"}}]}"#;
        let d = disk("node", "7", m).unwrap();
        assert_eq!(d.files.len(), 1);
        assert_eq!(d.files[0].name, "node.qcow2");
        assert_eq!(d.files[0].size, 12);
        assert_eq!(d.digest, crate::cosign::digest_of(m));
        assert!(disk("node", "7", br#"{"layers":[{"digest":"sha256:aa"}]}"#).is_err());
    }
}
