//! No change, no release: a tested rebuild that comes out the same as the
//! image its lock holds ends here, as `Outcome::Unchanged` — no new
//! version, nothing published. A rebuild for freshness (a due schedule,
//! `--refresh`, `--force`) leaves the lock entry byte for byte as it was
//! (the history records the check); one whose inputs changed (its
//! definition, context or bases) records them, so it is not stale again
//! (not with `--no-publish`, which leaves the lock alone).
//! A rebuild for freshness is judged on its content with the image's
//! volatile paths ignored (see [`crate::sameness`]); any other rebuild on
//! its digest.

use std::ops::ControlFlow::{Break, Continue};

use super::{Flow, Job};
use crate::baked::Outcome;
use crate::lock::Locked;
use crate::plan::Reason;
use crate::sameness::{self, Sameness};

pub(super) fn unchanged(job: &mut Job<'_>) -> Flow {
    if job.made().vm.is_some() {
        return Continue(());
    }
    let locked = job.bake.locks.lock().expect("locks").get(job.name).cloned();
    let Some(locked) = locked else {
        return Continue(());
    };
    let store = job.bake.store;
    let (new, old) = (job.store_name(), format!("{}:{}", job.name, locked.version));
    let same_digest = job.locked_digest(&locked) == Some(&job.made().digest);
    let fresh = job.result.reasons.iter().any(|r| r.wants_fresh_packages());
    let old_here = store
        .lookup(&old)
        .is_ok_and(|(_, d)| d.digest == locked.digest);
    let by_content = fresh && old_here && job.bake.opts.platform().is_none();
    let sameness = match (same_digest, by_content) {
        (true, _) => Sameness::SameDigest,
        (false, false) => return Continue(()),
        (false, true) => match sameness::compare(store, &new, &old, &job.image.volatile) {
            Ok(s) => s,
            Err(e) => {
                job.say(&format!("cannot compare with {old}: {e}"));
                return Continue(());
            }
        },
    };
    let how = match sameness {
        Sameness::SameDigest => "the same digest".to_string(),
        Sameness::SameContent { volatile } if volatile.is_empty() => "the same content".into(),
        Sameness::SameContent { volatile } => format!(
            "the same content but for volatile files ({})",
            volatile.join(", ")
        ),
        Sameness::Different { differences } => {
            job.say(&format!("differs from {old}: {}", differences.join(", ")));
            return Continue(());
        }
    };
    // the locked image stays under its version; the rebuild's name goes
    if !old_here {
        if let Err(e) = store.tag_as(&new, &old) {
            job.say(&format!("warning: naming {old}: {e}"));
        }
    }
    if new != old {
        let _ = store.untag(&new);
    }
    job.say(&format!("unchanged: {how} as {old}; nothing is published"));
    job.result.version = Some(locked.version.clone());
    job.result.digest = Some(locked.digest.clone());
    let publishing = !job.bake.opts.no_publish;
    if publishing && locked.inputs != job.result.inputs && !for_freshness_only(job) {
        // what it is made from changed, the image did not: the lock says so
        let entry = Locked {
            inputs: job.result.inputs.clone(),
            ..locked
        };
        if let Err(e) = job.record(entry) {
            return Break(Outcome::PublishFailed {
                error: e.to_string(),
            });
        }
    }
    Break(Outcome::Unchanged)
}

/// Whether it was rebuilt only for freshness (and because what it stands
/// on was going to be rebuilt, which then kept its locked digest): its
/// inputs are those of its lock entry.
fn for_freshness_only(job: &Job<'_>) -> bool {
    job.result.reasons.iter().all(|r| {
        r.wants_fresh_packages() || matches!(r, Reason::Forced | Reason::UpstreamWillRebuild { .. })
    })
}
