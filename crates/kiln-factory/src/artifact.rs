//! Files as OCI artifacts in a registry: VM disks are published this way.
//!
//! The manifest is an OCI image manifest with an `artifactType`, the empty
//! config (`application/vnd.oci.empty.v1+json`, `{}`) and one layer per
//! file, each with its own media type and its file name as
//! `org.opencontainers.image.title`. Blobs go first, streamed from disk
//! (skipped when the registry has them), the manifest last; pulling verifies
//! each file against its digest while it streams, and names it only when whole.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use kiln_oci::image::{Descriptor, Manifest, MEDIA_MANIFEST};
use kiln_registry::{Client, Reference};

use crate::Error;

/// The artifact type of a kiln VM image.
pub const VM_ARTIFACT_TYPE: &str = "application/vnd.kiln.vm.v1";
/// The empty config every artifact carries.
pub const EMPTY_CONFIG: &str = "application/vnd.oci.empty.v1+json";
const TITLE: &str = "org.opencontainers.image.title";

/// The media type of a VM disk file of `format` (raw, qcow2, vmdk, vhdx).
pub fn disk_media_type(format: &str) -> String {
    format!("application/vnd.kiln.vm.disk.v1.{format}")
}

/// An artifact described from files on disk: its manifest (and digest)
/// and where each layer's bytes are.
#[derive(Debug, Clone)]
pub struct Artifact {
    pub manifest: Vec<u8>,
    pub digest: String,
    /// Each file with its layer descriptor.
    pub files: Vec<(PathBuf, Descriptor)>,
}

const EMPTY: &[u8] = b"{}";

/// Hashes `files` (each with its media type) and writes the artifact's
/// manifest; nothing is sent anywhere. The digest is the one a registry
/// will have, so it pins the artifact before (or without) a push.
pub fn describe(artifact_type: &str, files: &[(PathBuf, String)]) -> Result<Artifact, Error> {
    let mut layers = Vec::new();
    for (path, media_type) in files {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| Error::Transfer(format!("{}: not a file name", path.display())))?;
        let f = std::fs::File::open(path)
            .map_err(|e| Error::Transfer(format!("opening {}: {e}", path.display())))?;
        let (digest, size) = kiln_oci::digest::HashReader::new(std::io::BufReader::new(f))
            .finish()
            .map_err(|e| Error::Transfer(format!("reading {}: {e}", path.display())))?;
        layers.push((
            path.clone(),
            Descriptor {
                media_type: media_type.clone(),
                digest: digest.to_string(),
                size,
                annotations: BTreeMap::from([(TITLE.to_string(), name)]),
                platform: None,
            },
        ));
    }
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "artifactType": artifact_type,
        "config": {
            "mediaType": EMPTY_CONFIG,
            "digest": kiln_oci::digest::sha256(EMPTY).to_string(),
            "size": EMPTY.len(),
        },
        "layers": layers.iter().map(|(_, d)| d).collect::<Vec<_>>(),
    });
    let bytes = serde_json::to_vec(&manifest).map_err(|e| Error::Transfer(e.to_string()))?;
    Ok(Artifact {
        digest: kiln_oci::digest::sha256(&bytes).to_string(),
        manifest: bytes,
        files: layers,
    })
}

/// Pushes `files` (each with its media type) as one artifact to `target`
/// (its tag); returns the manifest digest.
pub fn push_files(
    client: &Client,
    target: &Reference,
    artifact_type: &str,
    files: &[(PathBuf, String)],
    log: &(dyn Fn(&str) + Sync),
) -> Result<String, Error> {
    let artifact = describe(artifact_type, files)?;
    push(client, target, &artifact, &[], log)
}

/// Pushes an artifact: the blobs the registry lacks, streamed from disk,
/// then the manifest under `target`'s tag and each of `more_tags`.
pub fn push(
    client: &Client,
    target: &Reference,
    artifact: &Artifact,
    more_tags: &[String],
    log: &(dyn Fn(&str) + Sync),
) -> Result<String, Error> {
    let config_digest = kiln_oci::digest::sha256(EMPTY).to_string();
    if !client.has_blob(target, &config_digest)? {
        let open = || -> std::io::Result<Box<dyn Read + Send>> {
            Ok(Box::new(std::io::Cursor::new(EMPTY.to_vec())))
        };
        client.upload_blob(target, &config_digest, EMPTY.len() as u64, &open, None)?;
    }
    for (path, d) in &artifact.files {
        let name = d.annotations.get(TITLE).cloned().unwrap_or_default();
        if client.has_blob(target, &d.digest)? {
            log(&format!("{target}: {name} is there already"));
            continue;
        }
        log(&format!("{target}: uploading {name} ({} bytes)", d.size));
        let open = || -> std::io::Result<Box<dyn Read + Send>> {
            Ok(Box::new(std::io::BufReader::new(std::fs::File::open(
                path,
            )?)))
        };
        client.upload_blob(target, &d.digest, d.size, &open, None)?;
    }
    let tag = target.tag.clone().unwrap_or_else(|| "latest".into());
    for t in std::iter::once(&tag).chain(more_tags) {
        client.put_manifest(target, t, &artifact.manifest, MEDIA_MANIFEST)?;
    }
    log(&format!("{target}: pushed {}", artifact.digest));
    Ok(artifact.digest.clone())
}

/// Pulls the files of the artifact `r` into `dir`, each verified against
/// its digest; returns their paths.
pub fn pull_files(
    client: &Client,
    r: &Reference,
    dir: &Path,
    log: &(dyn Fn(&str) + Sync),
) -> Result<Vec<PathBuf>, Error> {
    let (bytes, _) = client.get_manifest(r)?;
    if let Some(pinned) = &r.digest {
        let got = kiln_oci::digest::sha256(&bytes).to_string();
        if &got != pinned {
            return Err(Error::Transfer(format!(
                "{r}: the manifest has digest {got}, not {pinned}"
            )));
        }
    }
    let manifest: Manifest = serde_json::from_slice(&bytes)
        .map_err(|e| Error::Transfer(format!("{r}: the manifest is not valid JSON: {e}")))?;
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::Transfer(format!("creating {}: {e}", dir.display())))?;
    let mut out = Vec::new();
    for l in &manifest.layers {
        let title = l.annotations.get(TITLE).ok_or_else(|| {
            Error::Transfer(format!(
                "{r}: layer {} has no file name ({TITLE})",
                l.digest
            ))
        })?;
        // a name from the registry: one plain file name, nothing else
        let safe = Path::new(title)
            .file_name()
            .filter(|n| n.to_string_lossy() == title.as_str() && title != "..")
            .ok_or_else(|| {
                Error::Transfer(format!("{r}: file name {title:?} is not a plain name"))
            })?;
        let path = dir.join(safe);
        let partial = dir.join(format!(".{title}.partial"));
        log(&format!("{r}: fetching {title} ({} bytes)", l.size));
        let body = client.get_blob(r, &l.digest)?;
        let mut reader = kiln_oci::digest::HashReader::new(body.take(l.size.saturating_add(1)));
        let mut f = std::fs::File::create(&partial)
            .map_err(|e| Error::Transfer(format!("creating {}: {e}", partial.display())))?;
        let copied = std::io::copy(&mut reader, &mut f)
            .and_then(|_| f.sync_all())
            .map_err(|e| Error::Transfer(format!("writing {}: {e}", partial.display())));
        let (digest, size) = reader
            .finish()
            .map_err(|e| Error::Transfer(format!("reading {title}: {e}")))?;
        if copied.is_err() || digest.to_string() != l.digest || size != l.size {
            let _ = std::fs::remove_file(&partial);
            copied?;
            return Err(Error::Transfer(format!(
                "{r}: {title}: the registry sent {size} bytes with digest {digest}, not {} bytes with {}; nothing was kept",
                l.size, l.digest
            )));
        }
        std::fs::rename(&partial, &path)
            .map_err(|e| Error::Transfer(format!("renaming {}: {e}", path.display())))?;
        out.push(path);
    }
    Ok(out)
}
