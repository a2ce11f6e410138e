//! The trust steps. `trusted_bases`: with `[factory] verify_bases`,
//! nothing is built on a base that is not signed by its key. `attest`:
//! with `[factory] sign`, after the tests pass and before anything is
//! published, each platform's SBOM, the image's provenance and the
//! signatures are made and attached in the store (the publish step copies
//! them next to the image; the lock records them).

use std::collections::BTreeMap;
use std::ops::ControlFlow::{Break, Continue};

use chrono::Utc;
use kiln_attest::attach::add;
use kiln_attest::attach::Place;
use kiln_attest::cosign::{self, Kind, Layer};
use kiln_attest::keys::{PrivateKey, PublicKey};
use kiln_attest::places::{RegistryPlace, StorePlace};
use kiln_attest::provenance::{self, Build, Dependency, Named};
use kiln_attest::sbom::{self, Made as SbomMade, Subject};
use kiln_attest::verify::SPDX;
use kiln_definition::{Publish, Recipe};
use kiln_registry::Reference;
use serde_json::{json, Value};

use super::{Flow, Job};
use crate::baked::Outcome;

/// Signs and attaches; a key that cannot be read fails the image.
pub(super) fn attest(job: &mut Job<'_>) -> Flow {
    let Some(key_ref) = &job.image.sign else {
        return Continue(());
    };
    let key = match key_ref.source.read().and_then(|pem| {
        PrivateKey::from_pem(&pem, &key_ref.source.describe()).map_err(|e| e.to_string())
    }) {
        Ok(k) => k,
        Err(e) => {
            let at = job
                .bake
                .factory
                .error_at(key_ref.file, key_ref.span.clone(), e);
            return Break(Outcome::Failed {
                error: format!("signing key: {at}"),
            });
        }
    };
    let started = std::time::Instant::now();
    match attach_all(job, &key) {
        Ok(attached) => {
            job.say(&format!(
                "signed with {} and attached the SBOM and provenance ({} attachment manifests) in {:.2}s",
                key.origin,
                attached.len(),
                started.elapsed().as_secs_f64()
            ));
            job.attached = attached;
            Continue(())
        }
        Err(e) => Break(Outcome::Failed {
            error: format!("attaching the SBOM, provenance and signature: {e}"),
        }),
    }
}

/// The repository consumers know the image by: its first registry, else
/// its name.
pub(super) fn repository(job: &Job<'_>) -> String {
    job.image
        .publish
        .iter()
        .find_map(|p| match p {
            Publish::Registry(r) => Some(r.clone()),
            _ => None,
        })
        .unwrap_or_else(|| job.name.to_string())
}

/// Every digest with attachments: the image (or index) and, for an index,
/// each platform's manifest.
pub(super) fn subjects(job: &Job<'_>) -> Vec<String> {
    let made = job.made();
    std::iter::once(made.digest.clone())
        .chain(made.platforms.values().cloned())
        .collect()
}

fn attach_all(job: &Job<'_>, key: &PrivateKey) -> Result<BTreeMap<String, String>, String> {
    let store = job.bake.store;
    let store_name = job.store_name();
    let place = StorePlace::of(store, &store_name);
    let repo = repository(job);
    let made = job.made();
    let at = SbomMade {
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        at: job.started,
    };
    let mut attached = BTreeMap::new();
    let mut put = |kind: Kind, digest: &str, layers: &[Layer]| -> Result<(), String> {
        let m = add(&place, kind, digest, layers).map_err(|e| e.to_string())?;
        attached.insert(kind.tag(digest), m);
        Ok(())
    };
    // each platform's SBOM, on that platform's manifest (a VM image's, its
    // image's bound to its files, on the artifact)
    for (digest, doc) in sboms(job, &repo, &at)? {
        let layer = attestation(key, &repo, &digest, SPDX, doc);
        put(Kind::Attestations, &digest, &[layer])?;
    }
    let prov = provenance::provenance(&build(job, &repo));
    let layer = cosign::attestation_layer(key, provenance::SLSA, &prov);
    put(Kind::Attestations, &made.digest, &[layer])?;
    for digest in subjects(job) {
        put(
            Kind::Signature,
            &digest,
            &[cosign::signature_layer(key, &repo, &digest)],
        )?;
    }
    Ok(attached)
}

/// Each subject digest's SBOM (SPDX).
fn sboms(job: &Job<'_>, repo: &str, at: &SbomMade) -> Result<Vec<(String, Value)>, String> {
    let store = job.bake.store;
    let made = job.made();
    let (Some(vm), Recipe::Vm(recipe)) = (&made.vm, &job.image.recipe) else {
        let mut out = Vec::new();
        for img in store
            .images_of(&job.store_name())
            .map_err(|e| e.to_string())?
        {
            let digest = img.manifest_digest.to_string();
            let inventory = sbom::of_image(store, &img).map_err(|e| e.to_string())?;
            let subject = Subject {
                name: repo.to_string(),
                version: job.version.clone(),
                digest: digest.clone(),
                platform: Some(img.config.platform().to_string()),
            };
            out.push((digest, sbom::spdx(&inventory, &subject, None, at)));
        }
        return Ok(out);
    };
    // the image the disk was made from, bound to the disk's files
    let image = job
        .deps
        .get(&recipe.image)
        .cloned()
        .unwrap_or_else(|| recipe.image.clone());
    let (inventory, subject) =
        kiln_attest::disk::source(store, &image, &recipe.image, None).map_err(|e| e.to_string())?;
    let disk = kiln_attest::disk::disk(repo, &job.version, &vm.artifact.manifest)
        .map_err(|e| e.to_string())?;
    Ok(vec![(
        made.digest.clone(),
        sbom::spdx(&inventory, &subject, Some(&disk), at),
    )])
}

/// An attestation layer of an in-toto statement about `digest`.
fn attestation(
    key: &PrivateKey,
    repo: &str,
    digest: &str,
    predicate_type: &str,
    predicate: Value,
) -> Layer {
    let statement = provenance::statement(
        &[Named {
            name: repo.to_string(),
            digest: digest.to_string(),
        }],
        predicate_type,
        predicate,
    );
    cosign::attestation_layer(key, predicate_type, &statement)
}

/// The provenance of this bake of the image: its definition as given
/// (never a secret's value: secrets by id only), what it resolved to,
/// and who built it when.
fn build(job: &Job<'_>, repo: &str) -> Build {
    let made = job.made();
    let factory = job.bake.factory;
    let file = &factory.files[job.image.file].path;
    let dir = file.parent().unwrap_or(std::path::Path::new("/"));
    let rel = |p: &std::path::Path| {
        p.strip_prefix(dir)
            .unwrap_or(p)
            .to_string_lossy()
            .into_owned()
    };
    let mut external = json!({
        "factory": file.file_name().map(|n| n.to_string_lossy().into_owned()),
        "image": job.name,
        "version": job.version,
        "platforms": job.platforms().iter().map(|p| p.to_string()).collect::<Vec<_>>(),
    });
    match &job.image.recipe {
        Recipe::Dockerfile {
            context,
            dockerfile,
            args,
            target,
            secrets,
            ..
        } => {
            external["context"] = json!(rel(context));
            external["dockerfile"] = json!(rel(dockerfile));
            external["target"] = json!(target);
            external["args"] = json!(args);
            external["secrets"] = json!(secrets.keys().collect::<Vec<_>>());
        }
        Recipe::Mmdebstrap(_) => external["recipe"] = json!("mmdebstrap"),
        Recipe::Vm(v) => external["vm_of"] = json!(v.image),
    }
    let inputs = &job.result.inputs;
    let sha = |d: &str| {
        BTreeMap::from([(
            "sha256".to_string(),
            d.trim_start_matches("sha256:").to_string(),
        )])
    };
    let mut deps: Vec<Dependency> = inputs
        .bases
        .iter()
        .map(|(name, digest)| Dependency {
            name: "base".into(),
            uri: Some(name.clone()),
            digest: sha(digest),
        })
        .collect();
    if let Some(c) = &inputs.context {
        deps.push(Dependency {
            name: "context".into(),
            uri: None,
            digest: sha(c),
        });
    }
    deps.push(Dependency {
        name: "definition".into(),
        uri: None,
        digest: sha(&inputs.definition),
    });
    if let Some(commit) = git_commit(dir) {
        deps.push(Dependency {
            name: "source".into(),
            uri: Some(format!("git+file://{}", dir.display())),
            digest: BTreeMap::from([("gitCommit".to_string(), commit)]),
        });
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    Build {
        subjects: vec![Named {
            name: repo.to_string(),
            digest: made.digest.clone(),
        }],
        external,
        dependencies: deps,
        builder: format!("kiln://{host}"),
        version: env!("CARGO_PKG_VERSION").to_string(),
        invocation: format!("{}:{}@{}", job.name, job.version, job.started.timestamp()),
        started: job.started,
        finished: Utc::now(),
    }
}

/// The commit the factory's directory is at, when it is a git checkout.
fn git_commit(dir: &std::path::Path) -> Option<String> {
    kiln_tool::run(
        std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["rev-parse", "HEAD"]),
    )
    .ok()
    .map(|s| s.trim().to_string())
    .filter(|s| s.len() == 40)
}

/// The places a base's signature may be found in.
type Places<'a> = Vec<Box<dyn Place + 'a>>;

/// With `[factory] verify_bases`, every base the image is built on must be
/// signed by that key, or nothing is built: a factory base in the store
/// (or in a registry it was published to), a registry base in its registry.
pub(super) fn trusted_bases(job: &mut Job<'_>) -> Flow {
    let Some(key_ref) = &job.image.verify_bases else {
        return Continue(());
    };
    let (factory, g, store) = (job.bake.factory, job.bake.g, job.bake.store);
    let key = match key_ref.source.read().and_then(|pem| {
        PublicKey::from_pem(&pem, &key_ref.source.describe()).map_err(|e| e.to_string())
    }) {
        Ok(k) => k,
        Err(e) => {
            let at = factory.error_at(key_ref.file, key_ref.span.clone(), e);
            return Break(Outcome::Failed {
                error: format!("verify_bases: {at}"),
            });
        }
    };
    let mut bases: Vec<(String, String, Places<'_>)> = Vec::new();
    // a VM image's base is the image its disk is made from
    let vm_base = match &job.image.recipe {
        Recipe::Vm(v) => Some((v.image.clone(), v.image.clone())),
        _ => None,
    };
    let factory_bases = g
        .factory_bases
        .get(job.name)
        .into_iter()
        .flatten()
        .map(|(r, d)| (r.clone(), d.clone()))
        .chain(vm_base);
    for (reference, dep) in factory_bases {
        let store_ref = job.deps.get(&dep).cloned().unwrap_or_else(|| dep.clone());
        let Ok((_, d)) = store.lookup(&store_ref) else {
            continue; // the bases step said why
        };
        let mut places: Places<'_> = vec![Box::new(StorePlace::of(store, &store_ref))];
        let published = job.bake.locks.lock().expect("locks").get(&dep).cloned();
        for p in published.iter().flat_map(|l| l.published.iter()) {
            let Some(rest) = p.strip_prefix("docker://") else {
                continue;
            };
            if let Ok(repo) = Reference::parse(rest.split('@').next().unwrap_or(rest)) {
                places.push(Box::new(RegistryPlace {
                    client: job.bake.client,
                    repo,
                }));
            }
        }
        bases.push((reference.clone(), d.digest, places));
    }
    for reference in g.external.get(job.name).into_iter().flatten() {
        let (Some(digest), Ok(repo)) = (
            job.result.inputs.bases.get(reference),
            Reference::parse(reference),
        ) else {
            continue;
        };
        let place = RegistryPlace {
            client: job.bake.client,
            repo,
        };
        bases.push((reference.clone(), digest.clone(), vec![Box::new(place)]));
    }
    for (reference, digest, places) in bases {
        let mut why = Vec::new();
        let signed = places.iter().any(|p| {
            let f = kiln_attest::verify::signature(p.as_ref(), &digest, &key);
            why.extend(f.failure.clone());
            f.failure.is_none()
        });
        if signed {
            job.say(&format!("base {reference} is signed by {}", key.origin));
            continue;
        }
        let message = format!(
            "image {:?}: base {reference} ({digest}) is not signed by {}: {}",
            job.name,
            key.origin,
            why.join("; ")
        );
        let at = match &job.image.recipe {
            Recipe::Vm(v) => factory.error_at(job.image.file, v.image_span.clone(), message),
            _ => g.error_at_base(factory, job.name, &reference, message),
        };
        let at = at.with_hint(
            "verify_bases accepts only bases signed by its key: bake the base with `[factory] sign`, or check which key signed it with `kiln verify`",
        );
        return Break(Outcome::Failed {
            error: at.to_string(),
        });
    }
    Continue(())
}

/// Adds to an archive's export the signatures and attestations the store
/// holds for the image and each of its platforms' manifests (`kiln save`
/// and `oci-archive:` targets carry them).
pub fn add_attachments(
    store: &kiln_store::Store,
    export: &mut kiln_build::export::Export,
) -> Result<(), kiln_build::BuildError> {
    let digests: Vec<String> = std::iter::once(export.top.digest.clone())
        .chain(export.images.iter().map(|i| i.manifest_digest.to_string()))
        .collect();
    let name = export.name.clone();
    for (n, tag) in kiln_attest::places::stored_attachments(store, &name, &digests) {
        export.add_manifest(store, &n, &tag)?;
    }
    Ok(())
}
