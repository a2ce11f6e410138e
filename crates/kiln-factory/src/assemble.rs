//! A multi-platform image whose platforms were baked by separate runner
//! jobs, each pushing its manifest by digest: its image index assembled
//! from their fragments (byte for byte the index a one-machine bake
//! writes), pushed under its version and moving tags, and the whole
//! image's lock entry (`kiln ci index`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kiln_definition::{Factory, Publish};
use kiln_oci::image::{Descriptor, ImageConfig, Index, Manifest, MEDIA_MANIFEST};
use kiln_registry::{Client, Reference};

use crate::lock::{Lock, Locked};

#[derive(Debug, thiserror::Error)]
pub enum AssembleError {
    #[error("no image {0:?} in the factory")]
    Unknown(String),
    #[error("{0} is built for one platform: its job publishes it whole, and there is no index to assemble")]
    OnePlatform(String),
    #[error("{image}: no fragment for {} (fragments read: {read})", missing.join(", "))]
    Missing {
        image: String,
        missing: Vec<String>,
        read: String,
    },
    #[error("{image}: the platforms' fragments disagree on {what}: {}", files.join(" and "))]
    Disagree {
        image: String,
        what: &'static str,
        files: Vec<String>,
    },
    #[error("{image}: it has no registry to publish to; an index is assembled in a registry")]
    NoRegistry { image: String },
    #[error("{reference}: {source}")]
    Registry {
        reference: String,
        source: kiln_registry::Error,
    },
    #[error("{reference}: {message}")]
    Bad { reference: String, message: String },
}

/// What assembling did.
#[derive(Debug)]
pub struct Assembled {
    /// The whole image's lock entry.
    pub entry: Locked,
    /// The index is the one the lock already holds: nothing was pushed.
    pub unchanged: bool,
}

/// Each platform's fragment entry of `name`: the latest of each.
fn parts<'a>(
    name: &str,
    fragments: &'a [(PathBuf, Lock)],
) -> BTreeMap<String, (&'a Path, &'a Locked)> {
    let mut out: BTreeMap<String, (&Path, &Locked)> = BTreeMap::new();
    for (path, lock) in fragments {
        let Some(entry) = lock.image.get(name) else {
            continue;
        };
        let [(platform, _)] = entry.platforms.iter().collect::<Vec<_>>()[..] else {
            continue;
        };
        let newer = out
            .get(platform)
            .is_none_or(|(_, old)| old.baked_at <= entry.baked_at);
        if newer {
            out.insert(platform.clone(), (path.as_path(), entry));
        }
    }
    out
}

/// Each platform's fragment entry, in the image's platform order: one for
/// every platform, all of one version and made from the same inputs.
fn ordered<'a>(
    name: &str,
    wanted: &[String],
    fragments: &'a [(PathBuf, Lock)],
) -> Result<Vec<(&'a Path, &'a Locked)>, AssembleError> {
    let parts = parts(name, fragments);
    let missing: Vec<String> = wanted
        .iter()
        .filter(|p| !parts.contains_key(*p))
        .cloned()
        .collect();
    if !missing.is_empty() {
        let read: Vec<String> = fragments
            .iter()
            .map(|(p, _)| p.display().to_string())
            .collect();
        return Err(AssembleError::Missing {
            image: name.into(),
            missing,
            read: if read.is_empty() {
                "none".into()
            } else {
                read.join(", ")
            },
        });
    }
    let ordered: Vec<(&Path, &Locked)> = wanted.iter().map(|p| parts[p]).collect();
    let (first_path, first) = ordered[0];
    type Differs = fn(&Locked, &Locked) -> bool;
    let checks: [(&'static str, Differs); 2] = [
        ("the version", |a, b| a.version != b.version),
        ("the inputs", |a, b| a.inputs != b.inputs),
    ];
    for (what, differs) in checks {
        if let Some((path, _)) = ordered.iter().find(|(_, e)| differs(first, e)) {
            return Err(AssembleError::Disagree {
                image: name.into(),
                what,
                files: vec![first_path.display().to_string(), path.display().to_string()],
            });
        }
    }
    Ok(ordered)
}

/// Assembles `name`'s index from the fragments of its platforms, pushes it
/// to each registry it publishes to (unless the lock already holds it),
/// and returns its lock entry. `locked` is its entry in the lock.
pub fn index(
    factory: &Factory,
    locked: Option<&Locked>,
    fragments: &[(PathBuf, Lock)],
    name: &str,
    client: &Client,
    log: &dyn Fn(&str),
) -> Result<Assembled, AssembleError> {
    let image = factory
        .images
        .get(name)
        .ok_or_else(|| AssembleError::Unknown(name.into()))?;
    if image.platforms.len() < 2 {
        return Err(AssembleError::OnePlatform(name.into()));
    }
    let wanted: Vec<String> = image.platforms.iter().map(|p| p.to_string()).collect();
    let ordered = ordered(name, &wanted, fragments)?;
    let first = ordered[0].1;
    let repos: Vec<&String> = image
        .publish
        .iter()
        .filter_map(|p| match p {
            Publish::Registry(repo) => Some(repo),
            _ => None,
        })
        .collect();
    let Some(first_repo) = repos.first() else {
        return Err(AssembleError::NoRegistry { image: name.into() });
    };
    let manifests = ordered
        .iter()
        .map(|(_, e)| describe(client, first_repo, &e.digest))
        .collect::<Result<Vec<_>, _>>()?;
    let (bytes, desc) = Index::of_platforms(manifests);
    let unchanged = locked.is_some_and(|l| l.digest == desc.digest);
    let version = &first.version;
    let mut published = Vec::new();
    for repo in &repos {
        if !unchanged {
            for tag in std::iter::once(version).chain(&image.tags) {
                let r = reference(repo, tag)?;
                client
                    .put_manifest(&r, tag, &bytes, &desc.media_type)
                    .map_err(|source| AssembleError::Registry {
                        reference: r.to_string(),
                        source,
                    })?;
                log(&format!("{r}: pushed the index {}", desc.digest));
            }
        }
        published.push(format!("docker://{repo}:{version}@{}", desc.digest));
    }
    let entry = match locked.filter(|_| unchanged) {
        // the lock holds this index: its entry stays, with what it is made
        // from now
        Some(l) => Locked {
            inputs: first.inputs.clone(),
            ..l.clone()
        },
        None => whole(image, &ordered, desc.digest, published),
    };
    Ok(Assembled { entry, unchanged })
}

/// The whole image's lock entry from its platforms' entries.
fn whole(
    image: &kiln_definition::Image,
    ordered: &[(&Path, &Locked)],
    digest: String,
    published: Vec<String>,
) -> Locked {
    let first = ordered[0].1;
    Locked {
        version: first.version.clone(),
        digest,
        platforms: ordered
            .iter()
            .flat_map(|(_, e)| e.platforms.clone())
            .collect(),
        files: BTreeMap::new(),
        tags: std::iter::once(first.version.clone())
            .chain(image.tags.iter().cloned())
            .collect(),
        published,
        baked_at: ordered
            .iter()
            .map(|(_, e)| e.baked_at.clone())
            .max()
            .unwrap_or_default(),
        inputs: first.inputs.clone(),
        attachments: ordered
            .iter()
            .flat_map(|(_, e)| e.attachments.clone())
            .collect(),
    }
}

fn reference(repo: &str, tag: &str) -> Result<Reference, AssembleError> {
    Reference::parse(&format!("{repo}:{tag}")).map_err(|e| AssembleError::Bad {
        reference: repo.into(),
        message: e.to_string(),
    })
}

/// The index entry of the manifest `digest` in `repo`: its size, media
/// type and (from its config) platform.
fn describe(client: &Client, repo: &str, digest: &str) -> Result<Descriptor, AssembleError> {
    let r = Reference::parse(&format!("{repo}@{digest}")).map_err(|e| AssembleError::Bad {
        reference: repo.into(),
        message: e.to_string(),
    })?;
    let failed = |source| AssembleError::Registry {
        reference: r.to_string(),
        source,
    };
    let bad = |message: String| AssembleError::Bad {
        reference: r.to_string(),
        message,
    };
    let (bytes, _) = client.get_manifest_at(&r, digest).map_err(failed)?;
    if kiln_oci::digest::sha256(&bytes).to_string() != digest {
        return Err(bad(
            "the registry's manifest does not have that digest".into()
        ));
    }
    let manifest: Manifest =
        serde_json::from_slice(&bytes).map_err(|e| bad(format!("not an image manifest: {e}")))?;
    let config = client
        .get_small_blob(&r, &manifest.config.digest)
        .map_err(failed)?;
    let config: ImageConfig =
        serde_json::from_slice(&config).map_err(|e| bad(format!("its config: {e}")))?;
    Ok(Descriptor {
        media_type: MEDIA_MANIFEST.into(),
        digest: digest.into(),
        size: bytes.len() as u64,
        annotations: Default::default(),
        platform: Some(config.platform()),
    })
}
