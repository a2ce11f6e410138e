//! The steps after the tests: moving tags in the store, each publish
//! target, and the lock entry that records it all.

use std::ops::ControlFlow::{Break, Continue};
use std::path::Path;

use kiln_attest::attach;
use kiln_attest::places::{RegistryPlace, StorePlace};
use kiln_definition::Publish;
use kiln_registry::Reference;
use kiln_store::Store;

use super::{Flow, Job};
use crate::baked::Outcome;
use crate::lock::Locked;
use crate::transfer;

/// Points `NAME:TAG` at the new image for each of its moving tags (a VM
/// image's tags were set when it was kept).
pub(super) fn tag(job: &mut Job<'_>) -> Flow {
    if job.made().vm.is_some() {
        return Continue(());
    }
    let store_name = job.store_name();
    for t in &job.image.tags {
        if let Err(e) = job
            .bake
            .store
            .tag_as(&store_name, &format!("{}:{t}", job.name))
        {
            return Break(Outcome::PublishFailed {
                error: e.to_string(),
            });
        }
    }
    Continue(())
}

/// Publishes to each target in turn; the first failure is the outcome.
/// With `--no-publish` the job ends here, built.
pub(super) fn publish(job: &mut Job<'_>) -> Flow {
    if job.bake.opts.no_publish {
        return Break(Outcome::Built);
    }
    for target in &job.image.publish {
        match one(job, target) {
            Ok(p) => {
                job.say(&format!("published {p}"));
                job.result.published.push(p);
            }
            Err(error) => {
                job.say(&format!("publishing failed: {error}"));
                return Break(Outcome::PublishFailed { error });
            }
        }
    }
    Continue(())
}

/// Publishes to one target; returns how the lock names the result.
fn one(job: &Job<'_>, target: &Publish) -> Result<String, String> {
    let (store, client) = (job.bake.store, job.bake.client);
    let (name, version, tags) = (job.name, &job.version, &job.image.tags);
    let log = |l: &str| job.say(l);
    if let Some(vm) = &job.made().vm {
        let published = crate::vm::publish(client, target, name, version, tags, vm, &log)?;
        if let Publish::Registry(repo) = target {
            let dest = Reference::parse(&format!("{repo}:{version}"))
                .map_err(|e| format!("{repo}: {e}"))?;
            attachments(job, &dest)?;
        }
        return Ok(published);
    }
    let store_name = job.store_name();
    match target {
        Publish::Registry(repo) => {
            let dest = Reference::parse(&format!("{repo}:{version}"))
                .map_err(|e| format!("{repo}: {e}"))?;
            let by_digest = job
                .bake
                .opts
                .runner
                .as_ref()
                .is_some_and(|r| r.push_by_digest);
            let pushed = if by_digest {
                transfer::push_by_digest(client, store, &store_name, &dest, &log)
            } else {
                transfer::push(client, store, &store_name, &dest, tags, false, &log)
            }
            .map_err(|e| format!("pushing to {repo}: {e}"))?;
            attachments(job, &dest)?;
            Ok(if by_digest {
                format!("docker://{repo}@{}", pushed.digest)
            } else {
                format!("docker://{repo}:{version}@{}", pushed.digest)
            })
        }
        Publish::OciArchive(path) => write_archive(store, &store_name, path)
            .map(|()| format!("oci-archive:{}", path.display())),
        Publish::Store => Ok(format!("store:{store_name}")),
        Publish::Dir(d) => Err(format!(
            "{}: an image is not published to a directory",
            d.display()
        )),
    }
}

/// The signatures and attestations the `attest` step made, copied from
/// the store next to the image in `dest`'s repository.
fn attachments(job: &Job<'_>, dest: &Reference) -> Result<(), String> {
    if job.attached.is_empty() {
        return Ok(());
    }
    let from = StorePlace::of(job.bake.store, &job.store_name());
    let to = RegistryPlace {
        client: job.bake.client,
        repo: dest.clone(),
    };
    let started = std::time::Instant::now();
    for digest in super::attest::subjects(job) {
        attach::copy(&from, &to, &digest)
            .map_err(|e| format!("attaching to {}: {e}", dest.name()))?;
    }
    job.say(&format!(
        "copied the signatures and attestations to {} in {:.2}s",
        dest.name(),
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

fn write_archive(store: &Store, name: &str, path: &Path) -> Result<(), String> {
    let mut export = kiln_build::export::Export::of(store, name).map_err(|e| e.to_string())?;
    super::attest::add_attachments(store, &mut export).map_err(|e| e.to_string())?;
    kiln_build::export::save_archive_file(store, &export, &[], false, path)
        .map_err(|e| e.to_string())
}

/// Writes its new lock entry (its lock file, atomically).
pub(super) fn lock(job: &mut Job<'_>) -> Flow {
    let made = job.made();
    let locked = Locked {
        version: job.version.clone(),
        digest: made.digest.clone(),
        platforms: made.platforms.clone(),
        files: made
            .vm
            .as_ref()
            .map(|v| v.files.clone())
            .unwrap_or_default(),
        tags: std::iter::once(job.version.clone())
            .chain(job.image.tags.iter().cloned())
            .collect(),
        published: job.result.published.clone(),
        baked_at: job
            .started
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        inputs: job.result.inputs.clone(),
        attachments: job.attached.clone(),
    };
    match job.record(locked) {
        Ok(()) => Continue(()),
        Err(e) => Break(Outcome::PublishFailed {
            error: e.to_string(),
        }),
    }
}
