//! Moving images between the store and registries.
//!
//! Pull: the manifest (or the index entry for the platform), then every
//! missing blob in parallel, each verified against its digest while it
//! streams into the store; the image is named only once all of it is there.
//! Push: blobs the registry has are skipped (HEAD), blobs known in another
//! repository of the same registry are mounted, the rest stream from disk;
//! the manifest goes last, once per tag.

use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};

use kiln_dockerfile::Platform;
use kiln_oci::image::{Descriptor, Index, Manifest, MEDIA_INDEX};
use kiln_registry::{Client, Mount, Reference};
use kiln_store::{parse_digest, Store};

use crate::Error;

/// An image pulled into the store.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// The name it has in the store (the full reference).
    pub name: String,
    /// What the name points at: the index of a multi-platform image.
    pub digest: String,
    /// The manifest of the platform pulled.
    pub manifest: String,
    pub blobs_fetched: usize,
}

/// What a push did.
#[derive(Debug, Clone, Default)]
pub struct Pushed {
    pub digest: String,
    pub uploaded: usize,
    pub mounted: usize,
    pub skipped: usize,
}

fn is_index(bytes: &[u8], media: &str) -> bool {
    if kiln_oci::image::is_index_media(media) {
        return true;
    }
    serde_json::from_slice::<serde_json::Value>(bytes)
        .is_ok_and(|v| v.get("manifests").is_some() && v.get("layers").is_none())
}

fn check(bytes: &[u8], want: &str, what: &str) -> Result<(), Error> {
    let got = kiln_oci::digest::sha256(bytes).to_string();
    if got != want {
        return Err(Error::Transfer(format!(
            "{what}: digest mismatch: expected {want}, got {got}; nothing was stored"
        )));
    }
    Ok(())
}

/// The index entry for `platform`.
fn choose(index: &Index, platform: &Platform, r: &Reference) -> Result<Descriptor, Error> {
    let found = index.manifests.iter().find(|d| {
        d.platform.as_ref().is_some_and(|p| {
            p.os == platform.os
                && p.architecture == platform.architecture
                && (platform.variant.is_empty()
                    || p.variant.as_deref().unwrap_or("") == platform.variant)
        })
    });
    found.cloned().ok_or_else(|| {
        let have: Vec<String> = index
            .manifests
            .iter()
            .filter_map(|d| d.platform.as_ref())
            .map(|p| format!("{}/{}", p.os, p.architecture))
            .collect();
        Error::Transfer(format!(
            "{r} has no image for {platform} (it has {})",
            have.join(", ")
        ))
    })
}

/// Pulls `r` for `platform` into the store and names it with the full
/// reference. A multi-platform image keeps its index under the name, with
/// the manifests of the platforms pulled so far (each pull adds one).
pub fn pull(
    client: &Client,
    store: &Store,
    r: &Reference,
    platform: &Platform,
    log: &(dyn Fn(&str) + Sync),
) -> Result<Pulled, Error> {
    // from the first blob fetched until the name is written, prune waits
    let _lock = store.lock(false)?;
    let (top, top_media) = client.get_manifest(r)?;
    let top_digest = kiln_oci::digest::sha256(&top).to_string();
    if let Some(pinned) = &r.digest {
        check(&top, pinned, &r.to_string())?;
    }
    let (bytes, media, digest, index) = if is_index(&top, &top_media) {
        let index: Index = serde_json::from_slice(&top)
            .map_err(|e| Error::Transfer(format!("{r}: the index is not valid JSON: {e}")))?;
        let entry = choose(&index, platform, r)?;
        log(&format!(
            "{r}: index, taking {} for {platform}",
            entry.digest
        ));
        let (b, m) = client.get_manifest_at(r, &entry.digest)?;
        check(&b, &entry.digest, &format!("{r} ({platform})"))?;
        (b, m, entry.digest.clone(), Some(top_media))
    } else {
        (top.clone(), top_media, top_digest.clone(), None)
    };
    let manifest: Manifest = serde_json::from_slice(&bytes)
        .map_err(|e| Error::Transfer(format!("{r}: the manifest is not valid JSON: {e}")))?;
    let blobs: Vec<Descriptor> = std::iter::once(manifest.config.clone())
        .chain(manifest.layers.iter().cloned())
        .collect();
    // a store with a remote fetches layers when first opened: a build
    // whose steps all come from a registry cache opens none
    let now: &[Descriptor] = if store.has_remote() {
        &blobs[..1]
    } else {
        &blobs
    };
    let fetched = fetch_blobs(client, store, r, now, log)?;
    // the manifest, then the index: each only once what it names is here
    store.put_blob(&bytes)?;
    let desc = match index {
        Some(index_media) => {
            store.put_blob(&top)?;
            Descriptor {
                media_type: if index_media.is_empty() {
                    MEDIA_INDEX.into()
                } else {
                    index_media
                },
                digest: top_digest,
                size: top.len() as u64,
                annotations: Default::default(),
                platform: None,
            }
        }
        None => Descriptor {
            media_type: manifest.media_type.clone().unwrap_or(if media.is_empty() {
                kiln_oci::image::MEDIA_MANIFEST.into()
            } else {
                media
            }),
            digest: digest.clone(),
            size: bytes.len() as u64,
            annotations: Default::default(),
            platform: None,
        },
    };
    let name = store.tag(&r.to_string(), &desc)?;
    for b in &blobs {
        store.note_source(&parse_digest(&b.digest)?, &r.name())?;
    }
    Ok(Pulled {
        name,
        digest: desc.digest,
        manifest: digest,
        blobs_fetched: fetched,
    })
}

/// Downloads the blobs the store lacks, a few at a time.
fn fetch_blobs(
    client: &Client,
    store: &Store,
    r: &Reference,
    blobs: &[Descriptor],
    log: &(dyn Fn(&str) + Sync),
) -> Result<usize, Error> {
    let missing: Vec<&Descriptor> = blobs
        .iter()
        .filter(|b| {
            parse_digest(&b.digest)
                .map(|d| !store.has_blob(&d))
                .unwrap_or(true)
        })
        .collect();
    let next = AtomicUsize::new(0);
    let worker = || -> Result<(), Error> {
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(b) = missing.get(i) else {
                return Ok(());
            };
            let digest = parse_digest(&b.digest)?;
            log(&format!("{r}: fetching {} ({} bytes)", b.digest, b.size));
            fetch_one(client, store, r, b, &digest, log)?;
        }
    };
    in_parallel(3, worker)?;
    Ok(missing.len())
}

/// Runs `worker` on `n` threads until each returns; the first error wins.
fn in_parallel(
    n: usize,
    worker: impl Fn() -> Result<(), Error> + Send + Sync + Copy,
) -> Result<(), Error> {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n).map(|_| s.spawn(worker)).collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::Transfer("a transfer thread panicked".into())))
            })
            .collect::<Result<Vec<()>, Error>>()
    })?;
    Ok(())
}

/// Downloads one blob; a body that breaks off (a dropped connection, a
/// timeout) is fetched again from the start, a few times.
fn fetch_one(
    client: &Client,
    store: &Store,
    r: &Reference,
    b: &Descriptor,
    digest: &kiln_oci::Digest,
    log: &(dyn Fn(&str) + Sync),
) -> Result<(), Error> {
    let mut attempt = 0;
    loop {
        let reader = client.get_blob(r, &b.digest)?;
        // verified while it streams: a short or wrong body stores nothing
        match store.put_described(reader, digest, b.size) {
            Ok(_) => return Ok(()),
            // a size the manifest lies about is no transfer fault: no retry
            Err(e @ kiln_store::Error::SizeMismatch { .. }) => {
                return Err(Error::Transfer(format!("{r}: {e}; nothing was stored")))
            }
            Err(kiln_store::Error::DigestMismatch { expected, actual }) if attempt >= 4 => {
                return Err(Error::Transfer(format!("{r}: blob {expected}: the registry sent content with digest {actual}; nothing was stored")));
            }
            Err(e) if attempt >= 4 => {
                return Err(Error::Transfer(format!("{r}: blob {}: {e}", b.digest)))
            }
            Err(e) => {
                log(&format!(
                    "{r}: blob {} broke off ({e}); fetching it again",
                    b.digest
                ));
                attempt += 1;
                std::thread::sleep(std::time::Duration::from_millis(200 << attempt));
            }
        }
    }
}

/// Blobs a store does not hold, read from the registry repositories it
/// noted as their sources (see [`kiln_store::Remote`]).
pub struct RegistryRemote {
    pub client: Client,
}

impl kiln_store::Remote for RegistryRemote {
    fn open(
        &self,
        location: &str,
        digest: &kiln_oci::Digest,
    ) -> Result<Box<dyn Read + Send>, String> {
        let r = Reference::parse(location).map_err(|e| e.to_string())?;
        self.client
            .get_blob(&r, digest.as_ref())
            .map_err(|e| e.to_string())
    }
}

/// Pushes the store's image `name` to `target` (its tag), then to each of
/// `more_tags`; returns the manifest digest. A multi-platform image goes as
/// its index: every platform's blobs and manifest first (by digest), the
/// index last, so a tag never names an image that is there only in part.
pub fn push(
    client: &Client,
    store: &Store,
    name: &str,
    target: &Reference,
    more_tags: &[String],
    docker_media_types: bool,
    log: &(dyn Fn(&str) + Sync),
) -> Result<Pushed, Error> {
    let mut tags = vec![target.tag.clone().unwrap_or_else(|| "latest".into())];
    tags.extend(more_tags.iter().cloned());
    push_as(
        client,
        store,
        name,
        target,
        Some(&tags),
        docker_media_types,
        log,
    )
}

/// Pushes the store's image `name` into `target`'s repository by digest
/// only: no tag is put or moved (a runner's part of a multi-platform
/// image, whose index a later job assembles).
pub fn push_by_digest(
    client: &Client,
    store: &Store,
    name: &str,
    target: &Reference,
    log: &(dyn Fn(&str) + Sync),
) -> Result<Pushed, Error> {
    push_as(client, store, name, target, None, false, log)
}

/// Pushes under `tags`, or by digest alone when there are none.
fn push_as(
    client: &Client,
    store: &Store,
    name: &str,
    target: &Reference,
    tags: Option<&[String]>,
    docker_media_types: bool,
    log: &(dyn Fn(&str) + Sync),
) -> Result<Pushed, Error> {
    let Some((index_desc, index)) = store.image_index(name)? else {
        let img = store.image(name)?;
        let mut pushed = Pushed::default();
        let (bytes, media) = push_image(
            client,
            store,
            &img,
            target,
            docker_media_types,
            &mut pushed,
            log,
        )?;
        pushed.digest = kiln_oci::digest::sha256(&bytes).to_string();
        put_tags(client, target, tags, &bytes, &media, &pushed.digest, log)?;
        return Ok(pushed);
    };
    if docker_media_types {
        return Err(Error::Transfer(format!(
            "{name} is a multi-platform image: push it with OCI media types"
        )));
    }
    let mut pushed = Pushed::default();
    for entry in &index.manifests {
        let platform = entry
            .platform
            .as_ref()
            .map(|p| p.to_string())
            .unwrap_or_else(|| entry.digest.clone());
        let img = store
            .image_for(
                name,
                entry.platform.as_ref().ok_or_else(|| {
                    Error::Transfer(format!(
                        "{name}: index entry {} names no platform",
                        entry.digest
                    ))
                })?,
            )
            .map_err(|e| Error::Transfer(format!("{e}: an index is pushed whole")))?;
        let (bytes, media) = push_image(client, store, &img, target, false, &mut pushed, log)?;
        client.put_manifest(target, &entry.digest, &bytes, &media)?;
        log(&format!("{target}: pushed {platform} {}", entry.digest));
    }
    let bytes = store.read_blob(&parse_digest(&index_desc.digest)?)?;
    pushed.digest = index_desc.digest.clone();
    put_tags(
        client,
        target,
        tags,
        &bytes,
        &index_desc.media_type,
        &pushed.digest,
        log,
    )?;
    Ok(pushed)
}

/// Puts a manifest (or index) under each of `tags`, or under its digest
/// alone when there are none.
fn put_tags(
    client: &Client,
    target: &Reference,
    tags: Option<&[String]>,
    bytes: &[u8],
    media: &str,
    digest: &str,
    log: &(dyn Fn(&str) + Sync),
) -> Result<(), Error> {
    let Some(tags) = tags else {
        client.put_manifest(target, digest, bytes, media)?;
        log(&format!("{}@{digest}: pushed by digest", target.name()));
        return Ok(());
    };
    for t in tags {
        client.put_manifest(target, t, bytes, media)?;
        log(&format!("{}: pushed {digest}", target.with_tag(t)));
    }
    Ok(())
}

/// Pushes one image's blobs (not its manifest); returns the manifest bytes
/// and media type to put.
fn push_image(
    client: &Client,
    store: &Store,
    img: &kiln_store::Image,
    target: &Reference,
    docker_media_types: bool,
    pushed: &mut Pushed,
    log: &(dyn Fn(&str) + Sync),
) -> Result<(Vec<u8>, String), Error> {
    let (bytes, media) = if docker_media_types {
        as_docker_manifest(&img.manifest)?
    } else {
        let media = img
            .manifest
            .media_type
            .clone()
            .unwrap_or_else(|| kiln_oci::image::MEDIA_MANIFEST.into());
        (store.read_blob(&img.manifest_digest)?, media)
    };
    let blobs: Vec<Descriptor> = img
        .manifest
        .layers
        .iter()
        .cloned()
        .chain(std::iter::once(img.manifest.config.clone()))
        .collect();
    let (uploaded, mounted, skipped) = (
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
    );
    let next = AtomicUsize::new(0);
    let worker = || -> Result<(), Error> {
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(b) = blobs.get(i) else { return Ok(()) };
            match push_blob(client, store, target, b, log)? {
                BlobOutcome::Present => skipped.fetch_add(1, Ordering::Relaxed),
                BlobOutcome::Mounted => mounted.fetch_add(1, Ordering::Relaxed),
                BlobOutcome::Uploaded => uploaded.fetch_add(1, Ordering::Relaxed),
            };
        }
    };
    in_parallel(3, worker)?;
    pushed.uploaded += uploaded.into_inner();
    pushed.mounted += mounted.into_inner();
    pushed.skipped += skipped.into_inner();
    Ok((bytes, media))
}

/// The manifest with Docker v2 schema 2 media types, for registries that
/// predate OCI. The blobs stay as they are; only gzip layers can be named so.
fn as_docker_manifest(m: &Manifest) -> Result<(Vec<u8>, String), Error> {
    let mut d = m.clone();
    d.media_type = Some(kiln_oci::image::DOCKER_MANIFEST.into());
    d.config.media_type = "application/vnd.docker.container.image.v1+json".into();
    for l in &mut d.layers {
        l.media_type = match l.media_type.as_str() {
            kiln_oci::image::MEDIA_LAYER_GZIP | kiln_oci::image::DOCKER_LAYER_GZIP => {
                kiln_oci::image::DOCKER_LAYER_GZIP.into()
            }
            other => {
                return Err(Error::Transfer(format!(
                    "a {other} layer has no Docker media type; build with gzip layers"
                )))
            }
        };
    }
    let bytes = serde_json::to_vec(&d).map_err(|e| Error::Transfer(e.to_string()))?;
    Ok((bytes, kiln_oci::image::DOCKER_MANIFEST.into()))
}

pub(crate) enum BlobOutcome {
    Present,
    Mounted,
    Uploaded,
}

pub(crate) fn push_blob(
    client: &Client,
    store: &Store,
    target: &Reference,
    b: &Descriptor,
    log: &(dyn Fn(&str) + Sync),
) -> Result<BlobOutcome, Error> {
    let digest = parse_digest(&b.digest)?;
    if client.has_blob(target, &b.digest)? {
        return Ok(BlobOutcome::Present);
    }
    let mut session = None;
    let prefix = format!("{}/", target.registry);
    for source in store.sources(&digest) {
        let Some(repo) = source.strip_prefix(&prefix) else {
            continue;
        };
        if repo == target.repository {
            continue;
        }
        match client.mount_blob(target, &b.digest, repo)? {
            Mount::Mounted => {
                log(&format!("{target}: mounted {} from {repo}", b.digest));
                store.note_source(&digest, &target.name())?;
                return Ok(BlobOutcome::Mounted);
            }
            // declined: upload into the session the registry opened
            Mount::Upload(location) => {
                session = Some(location);
                break;
            }
        }
    }
    let open = || -> std::io::Result<Box<dyn Read + Send>> {
        // fetched first when it is only in a registry cache
        let file = store.open_blob(&digest).map_err(std::io::Error::other)?;
        Ok(Box::new(std::io::BufReader::new(file)))
    };
    log(&format!(
        "{target}: uploading {} ({} bytes)",
        b.digest, b.size
    ));
    client.upload_blob(target, &b.digest, b.size, &open, session)?;
    store.note_source(&digest, &target.name())?;
    Ok(BlobOutcome::Uploaded)
}
