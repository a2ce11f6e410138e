//! The package-update check of a plan: an image's locked image read from
//! the store (its files, not run) and checked by `kiln-packages` against
//! the sources it is configured with. A result is kept in the store
//! (`probes/DIGEST.json`) and reused for the image's `probe_interval`;
//! after that the sources' state (their `Release` files) is fetched, and
//! when it is as it was the kept result stands, so only a changed source
//! costs a full check. A check that could not read some source is kept
//! too (the state records how each source failed), but it always has the
//! state fetched, and once `probe_interval` is over the check runs again,
//! so an unreachable source is tried again at that pace rather than
//! costing a full check on every plan.

use chrono::{DateTime, Utc};
use kiln_attest::sbom::Snapshots;
use kiln_definition::Image;
use kiln_dockerfile::Platform;
use kiln_packages::{Fetcher, Report};
use kiln_store::Store;
use serde::{Deserialize, Serialize};

use crate::lock::Locked;
use crate::plan::{ProbeError, RegistryResolver, ResolveError, Resolver};

/// A registry resolver that also checks packages.
pub struct Probing<'a> {
    pub registry: RegistryResolver<'a>,
    pub store: &'a Store,
    pub fetcher: Fetcher,
    pub now: DateTime<Utc>,
}

/// A kept check.
#[derive(Serialize, Deserialize)]
struct Kept {
    checked_at: DateTime<Utc>,
    /// The digest of the sources' state then.
    state: String,
    report: Report,
}

impl<'a> Probing<'a> {
    /// Registries through `client`, packages from images in `store`, now.
    pub fn new(store: &'a Store, client: &'a kiln_registry::Client) -> Self {
        Probing {
            registry: RegistryResolver { client },
            store,
            fetcher: Fetcher::default(),
            now: Utc::now(),
        }
    }
}

impl Resolver for Probing<'_> {
    fn digest(&self, reference: &str) -> Result<String, ResolveError> {
        self.registry.digest(reference)
    }

    fn packages(
        &self,
        name: &str,
        image: &Image,
        locked: &Locked,
    ) -> Option<Result<Report, ProbeError>> {
        Some(self.probe(name, image, locked))
    }
}

impl Probing<'_> {
    fn probe(&self, name: &str, image: &Image, locked: &Locked) -> Result<Report, ProbeError> {
        let (digest, files) = self.files(name, locked)?;
        let path = self
            .store
            .root()
            .join("probes")
            .join(format!("{}.json", digest.trim_start_matches("sha256:")));
        let kept: Option<Kept> = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let fresh =
            |k: &Kept| (self.now - k.checked_at).num_seconds() < image.probe_interval as i64;
        let whole = |k: &Kept| k.report.unreachable.is_empty();
        if let Some(k) = kept.as_ref().filter(|k| whole(k) && fresh(k)) {
            return Ok(k.report.clone());
        }
        let state = kiln_packages::source_state(&files, &self.fetcher)?;
        let state = kiln_oci::digest::sha256(&state).to_string();
        let (report, checked_at) = match kept {
            // a whole check stands from now on; one that missed a source
            // keeps its time, so it is made again once the interval is over
            Some(k) if k.state == state && whole(&k) => (k.report, self.now),
            Some(k) if k.state == state && fresh(&k) => (k.report, k.checked_at),
            _ => (kiln_packages::check(&files, &self.fetcher)?, self.now),
        };
        keep(
            &path,
            &Kept {
                checked_at,
                state,
                report: report.clone(),
            },
        );
        Ok(report)
    }

    /// The files of `name`'s locked image (this machine's platform's, or
    /// its first), and that image's digest.
    fn files(&self, name: &str, locked: &Locked) -> Result<(String, Snapshots), ProbeError> {
        let reference = format!("{name}:{}", locked.version);
        let store_err = |e: kiln_store::Error| ProbeError::Store(e.to_string());
        match self.store.lookup(&reference) {
            Ok((_, d)) if d.digest == locked.digest => {}
            _ => return Err(ProbeError::NotInStore(reference)),
        }
        let images = self.store.images_of(&reference).map_err(store_err)?;
        let host = Platform::host().to_string();
        let Some(img) = images
            .iter()
            .find(|i| i.config.platform().to_string() == host)
            .or(images.first())
        else {
            return Err(ProbeError::NotInStore(reference));
        };
        let diffs = self.store.snapshots(img).map_err(store_err)?;
        Ok((img.manifest_digest.to_string(), Snapshots(diffs)))
    }
}

/// Keeps a check (best effort: it only saves time).
fn keep(path: &std::path::Path, kept: &Kept) {
    let Some(dir) = path.parent() else { return };
    if std::fs::create_dir_all(dir).is_err() {
        return;
    }
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    if let Ok(json) = serde_json::to_vec(kept) {
        if std::fs::write(&tmp, json).is_ok() {
            let _ = std::fs::rename(&tmp, path);
        }
    }
}
