//! The registry cache in a bake: read before the first wave (every
//! repository the stale images name, and `--cache-from`), written after
//! each image's build (its `[factory] cache`, and `--cache-to`). A cache
//! that cannot be reached is a warning: the bake builds what it must.

use std::collections::BTreeSet;
use std::ops::ControlFlow::{Break, Continue};
use std::sync::Arc;

use kiln_definition::Factory;
use kiln_registry::Client;
use kiln_store::Store;

use super::{Flow, Job};
use crate::bake::Log;
use crate::baked::{BakeOptions, Outcome};
use crate::plan::Plan;
use crate::transfer::RegistryRemote;

/// Reads the caches the bake's stale images use into the store's step
/// cache; from then on the store fetches a cached layer when something
/// first opens it.
pub(crate) fn open(
    factory: &Factory,
    plan: &Plan,
    store: &Store,
    client: &Client,
    opts: &BakeOptions,
    log: Log<'_>,
) {
    let stale = plan.waves.iter().flatten();
    let repos: BTreeSet<&String> = opts
        .cache_from
        .iter()
        .chain(stale.filter_map(|n| factory.images[n].cache.as_ref()))
        .collect();
    if repos.is_empty() {
        return;
    }
    match client.sibling() {
        Ok(c) => store.set_remote(Arc::new(RegistryRemote { client: c })),
        Err(e) => {
            log.line("", &format!("warning: no registry cache: {e}"));
            return;
        }
    }
    for repo in repos {
        match crate::cache::import(client, store, repo) {
            Ok(found) => log.line(
                "",
                &format!(
                    "cache {repo}: {} step(s) from {} artifact(s)",
                    found.entries, found.artifacts
                ),
            ),
            Err(e) => log.line("", &format!("warning: cache {repo} not read: {e}")),
        }
    }
}

/// Writes the steps the build ran or reused to the image's cache
/// repositories, tagged with its name (and platform, for a runner's one
/// platform of several).
pub(super) fn write(job: &mut Job<'_>) -> Flow {
    let repos: BTreeSet<&String> = job
        .image
        .cache
        .iter()
        .chain(&job.bake.opts.cache_to)
        .collect();
    if let Err(e) = keep_whole(job) {
        return Break(Outcome::Failed {
            error: e.to_string(),
        });
    }
    let made = job.made();
    if repos.is_empty() || made.keys.is_empty() {
        return Continue(());
    }
    let tag = match job.bake.opts.platform() {
        Some(p) if job.image.platforms.len() > 1 => {
            format!("{}-{}", job.name, p.to_string().replace('/', "-"))
        }
        _ => job.name.to_string(),
    };
    for repo in repos {
        let log = |l: &str| job.say(l);
        if let Err(e) = crate::cache::export(
            job.bake.client,
            job.bake.store,
            repo,
            &tag,
            &made.keys,
            &log,
        ) {
            job.say(&format!("warning: cache {repo} not written: {e}"));
        }
    }
    Continue(())
}

/// Outside a runner job, the image and the bases it was built on have
/// their layers here: a layer taken from a registry cache, or of a base
/// pulled while the cache was in use, is fetched now, so `kiln run`, `kiln
/// save` and `kiln fsck` never meet a blob that is elsewhere. (A runner's
/// store ends with its job: it fetches only what it opens.)
fn keep_whole(job: &Job<'_>) -> Result<(), kiln_store::Error> {
    let store = job.bake.store;
    if job.bake.opts.runner.is_some() || !store.has_remote() {
        return Ok(());
    }
    let bases = job.result.inputs.bases.values().cloned();
    for name in std::iter::once(job.store_name()).chain(bases) {
        // a VM image is kept apart, not named in the store
        let Ok(images) = store.images_of(&name) else {
            continue;
        };
        for img in images {
            for layer in &img.manifest.layers {
                let digest = kiln_store::parse_digest(&layer.digest)?;
                if !store.has_blob(&digest) && store.can_read_blob(&digest) {
                    store.fetch_blob(&digest)?;
                }
            }
        }
    }
    Ok(())
}
