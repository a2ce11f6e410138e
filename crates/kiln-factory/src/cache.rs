//! The registry cache (`--cache-from`, `--cache-to`, `[factory] cache`):
//! the step cache a build used — the same keys kiln keeps locally — kept
//! as OCI artifacts in a registry repository, so a runner with an empty
//! store takes every unchanged step from what another runner built.
//!
//! One artifact per image job, tagged with the image's name (and, for one
//! platform of several, `NAME-OS-ARCH[-VARIANT]`): an OCI image manifest
//! with `artifactType` [`ARTIFACT_TYPE`], the empty config, and as layers
//! first the entries document ([`ENTRIES`]) and then every layer blob an
//! entry names, so the registry keeps them as long as the artifact. The
//! entries document is
//! `{"kiln_cache": 1, "entries": {"<sha256 of the key>": {"layer": {"digest", "diff_id", "size", "media_type"} | null, "created": "…"}}}`.
//!
//! Reading takes every artifact of the repository. An entry becomes a
//! local cache entry whose layer is fetched from the registry only when
//! something opens it (see [`kiln_store::Remote`]).

use std::collections::BTreeMap;

use kiln_oci::image::{Descriptor, Manifest, MEDIA_MANIFEST};
use kiln_registry::{Client, Reference};
use kiln_store::{CacheEntry, Store};
use serde::{Deserialize, Serialize};

use crate::{transfer, Error};

/// The `artifactType` of a kiln cache artifact.
pub const ARTIFACT_TYPE: &str = "application/vnd.kiln.cache.v1";
/// The media type of its entries document.
pub const ENTRIES: &str = "application/vnd.kiln.cache.entries.v1+json";
const EMPTY: &str = "application/vnd.oci.empty.v1+json";

#[derive(Debug, Default, Serialize, Deserialize)]
struct Entries {
    kiln_cache: u32,
    entries: BTreeMap<String, CacheEntry>,
}

/// What reading a registry cache found.
#[derive(Debug, Default)]
pub struct Imported {
    pub artifacts: usize,
    pub entries: usize,
}

/// `repo` (`registry/repository`, no tag) as a reference.
fn repository(repo: &str) -> Result<Reference, Error> {
    let r = Reference::parse(repo).map_err(|e| Error::Transfer(format!("cache {repo}: {e}")))?;
    if r.tag.as_deref().is_some_and(|t| t != "latest") || r.digest.is_some() {
        return Err(Error::Transfer(format!(
            "cache {repo}: name a repository, without a tag or digest"
        )));
    }
    Ok(r)
}

/// Reads every cache artifact of `repo` into the store's step cache
/// (entries this machine has are kept as they are); their layers are
/// noted as being in `repo`.
pub fn import(client: &Client, store: &Store, repo: &str) -> Result<Imported, Error> {
    let r = repository(repo)?;
    let mut out = Imported::default();
    for tag in client.tags(&r)? {
        let (bytes, _) = client.get_manifest_at(&r, &tag)?;
        let Ok(doc) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            continue;
        };
        if doc["artifactType"] != ARTIFACT_TYPE {
            continue;
        }
        let manifest: Manifest = serde_json::from_value(doc)
            .map_err(|e| Error::Transfer(format!("cache {repo}:{tag}: {e}")))?;
        let Some(first) = manifest.layers.first().filter(|l| l.media_type == ENTRIES) else {
            continue;
        };
        let body = client.get_small_blob(&r, &first.digest)?;
        let entries: Entries = serde_json::from_slice(&body)
            .map_err(|e| Error::Transfer(format!("cache {repo}:{tag}: {e}")))?;
        for (id, entry) in &entries.entries {
            match entry.layer.as_ref().map(|l| l.blob()) {
                // a layer without a blob: not one this store could use
                Some(None) => continue,
                Some(Some(digest)) => store.note_source(&digest, &r.name())?,
                None => {}
            }
            store.cache_adopt(id, entry)?;
        }
        out.artifacts += 1;
        out.entries += entries.entries.len();
    }
    Ok(out)
}

/// Writes the cache entries of `keys` (the steps one build ran or reused)
/// as the artifact `repo:tag`, with their layers; returns its digest.
pub fn export(
    client: &Client,
    store: &Store,
    repo: &str,
    tag: &str,
    keys: &[String],
    log: &(dyn Fn(&str) + Sync),
) -> Result<String, Error> {
    let r = repository(repo)?.with_tag(tag);
    let mut doc = Entries {
        kiln_cache: 1,
        ..Entries::default()
    };
    let mut layers: Vec<Descriptor> = Vec::new();
    for key in keys {
        let id = Store::cache_id(key);
        if store.cache_entry(&id).is_none() {
            continue;
        }
        // a layer kept only as a snapshot gets its blob now
        let entry = kiln_build::complete(store, key)
            .map_err(|e| Error::Transfer(format!("cache {repo}: {e}")))?;
        if let Some((l, digest)) = entry
            .layer
            .as_ref()
            .and_then(|l| l.digest.clone().map(|d| (l, d)))
        {
            if !layers.iter().any(|d| d.digest == digest) {
                layers.push(Descriptor {
                    media_type: l.media_type.clone(),
                    digest,
                    size: l.size,
                    annotations: Default::default(),
                    platform: None,
                });
            }
        }
        doc.entries.insert(id, entry);
    }
    for l in &layers {
        transfer::push_blob(client, store, &r, l, log)?;
    }
    let entries = serde_json::to_vec(&doc).expect("cache entries serialise");
    let entries_desc = small_blob(client, &r, &entries, ENTRIES)?;
    let config = small_blob(client, &r, b"{}", EMPTY)?;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "artifactType": ARTIFACT_TYPE,
        "config": config,
        "layers": std::iter::once(entries_desc).chain(layers).collect::<Vec<_>>(),
    });
    let bytes = serde_json::to_vec(&manifest).expect("a manifest serialises");
    client.put_manifest(&r, tag, &bytes, MEDIA_MANIFEST)?;
    let digest = kiln_oci::digest::sha256(&bytes).to_string();
    log(&format!(
        "{r}: cache of {} steps written ({digest})",
        doc.entries.len()
    ));
    Ok(digest)
}

/// Puts a small blob into `r`'s repository unless it is there.
fn small_blob(
    client: &Client,
    r: &Reference,
    bytes: &[u8],
    media_type: &str,
) -> Result<Descriptor, Error> {
    let digest = kiln_oci::digest::sha256(bytes).to_string();
    if !client.has_blob(r, &digest)? {
        let owned = bytes.to_vec();
        let open = move || -> std::io::Result<Box<dyn std::io::Read + Send>> {
            Ok(Box::new(std::io::Cursor::new(owned.clone())))
        };
        client.upload_blob(r, &digest, bytes.len() as u64, &open, None)?;
    }
    Ok(Descriptor {
        media_type: media_type.into(),
        digest,
        size: bytes.len() as u64,
        annotations: Default::default(),
        platform: None,
    })
}
