//! The build step: the image made by its recipe (a Dockerfile build, an
//! mmdebstrap bootstrap, or a VM image baked and boot-tested).

use std::collections::BTreeMap;
use std::ops::ControlFlow::{Break, Continue};

use kiln_build::{BuildOptions, BuildResult, ImageSource, Refresh};
use kiln_definition::{Recipe, RefreshPolicy, VmRecipe};
use kiln_dockerfile::Platform;
use kiln_registry::Reference;

use super::{Flow, Job, Made};
use crate::baked::Outcome;
use crate::plan::Reason;
use crate::RegistrySource;

/// Builds the image (moving tags are set only once its tests pass).
pub(super) fn build(job: &mut Job<'_>) -> Flow {
    let built = match &job.image.recipe {
        Recipe::Vm(vm) => return vm_image(job, vm),
        Recipe::Dockerfile { .. } => dockerfile(job),
        Recipe::Mmdebstrap(m) => {
            let opts = job.bake.opts;
            let tags = [job.store_name()];
            let mut progress = job.progress();
            crate::bootstrap::bootstrap(
                job.bake.store,
                m,
                &job.platforms(),
                &tags,
                opts,
                &mut progress,
            )
        }
    };
    let built = match built {
        Ok(b) => b,
        Err(error) => {
            job.say(&format!("build failed: {error}"));
            return Break(Outcome::Failed { error });
        }
    };
    job.result.digest = Some(built.manifest_digest.clone());
    job.say(&format!(
        "built {} {} ({} steps run, {} cached)",
        job.store_name(),
        built.manifest_digest,
        built.steps_run,
        built.steps_cached
    ));
    // one platform of a multi-platform image (a runner job) says which
    let part = job.bake.opts.platform().is_some() && job.image.platforms.len() > 1;
    job.made = Some(Made {
        digest: built.manifest_digest,
        platforms: if built.platforms.len() > 1 || part {
            built.platforms.into_iter().collect()
        } else {
            BTreeMap::new()
        },
        vm: None,
        keys: built.cache_keys,
    });
    Continue(())
}

/// A Dockerfile build, its factory bases (and registry bases the plan
/// pinned) given by digest.
fn dockerfile(job: &Job<'_>) -> Result<BuildResult, String> {
    let Recipe::Dockerfile {
        context,
        dockerfile,
        args,
        target,
        secrets,
        ..
    } = &job.image.recipe
    else {
        unreachable!("a Dockerfile recipe")
    };
    let (bake, name) = (job.bake, job.name);
    let mut map = BTreeMap::new();
    for (reference, dep) in &bake.g.factory_bases[name] {
        map.insert(reference.clone(), job.deps[dep].clone());
    }
    for reference in &bake.g.external[name] {
        if let (Some(d), Ok(parsed)) = (
            job.result.inputs.bases.get(reference),
            Reference::parse(reference),
        ) {
            if parsed.digest.is_none() {
                let mut pinned = parsed.clone();
                pinned.tag = None;
                pinned.digest = Some(d.clone());
                map.insert(reference.clone(), pinned.to_string());
            }
        }
    }
    let source = FactorySource {
        map,
        inner: RegistrySource {
            store: bake.store,
            client: bake.client,
            log: &|l: &str| job.say(l),
        },
    };
    let opts = BuildOptions {
        dockerfile: dockerfile.clone(),
        context: context.clone(),
        build_args: args.clone(),
        target: target.clone(),
        tags: vec![job.store_name()],
        no_cache: false,
        refresh: refresh(job),
        secrets: secrets.clone(),
        source_date_epoch: bake.opts.source_date_epoch,
        compression: bake.opts.compression,
        kiln_exe: bake.opts.kiln_exe.clone(),
        hidden: crate::lock::hidden_paths(bake.factory),
        platforms: job.platforms(),
    };
    kiln_build::build(bake.store, &source, &opts, &mut job.progress()).map_err(|e| e.to_string())
}

/// A rebuild for freshness (a due schedule, `--refresh`) runs the image's
/// package steps again, as its `refresh` setting says; any other rebuild
/// takes what it can from the cache.
fn refresh(job: &Job<'_>) -> Refresh {
    let fresh = job.result.reasons.iter().any(Reason::wants_fresh_packages);
    match job.image.refresh {
        _ if !fresh => Refresh::Off,
        RefreshPolicy::Packages => Refresh::Packages,
        RefreshPolicy::Runs => Refresh::Runs,
        RefreshPolicy::None => Refresh::Off,
    }
}

/// A VM image: its disk written from its factory image, boot-tested (its
/// tests run in the VM) and kept.
fn vm_image(job: &mut Job<'_>, recipe: &VmRecipe) -> Flow {
    let log = |l: &str| job.say(l);
    let vm_job = crate::vm::VmJob {
        store: job.bake.store,
        name: job.name,
        version: &job.version,
        recipe,
        image: &job.deps[&recipe.image],
        tests: &job.image.tests,
        tags: &job.image.tags,
        source_date_epoch: job.bake.opts.source_date_epoch,
        log: &log,
    };
    let built = match crate::vm::bake(&vm_job) {
        Ok(b) => b,
        Err(outcome) => return Break(outcome),
    };
    job.result.digest = Some(built.digest.clone());
    job.result.tests_passed = built.tests_passed;
    job.made = Some(Made {
        digest: built.digest.clone(),
        platforms: BTreeMap::new(),
        vm: Some(built),
        keys: vec![],
    });
    Continue(())
}

/// Bases for a factory build: references that name factory images (or
/// pinned registry bases) map to store names; the rest as usual.
struct FactorySource<'a> {
    map: BTreeMap<String, String>,
    inner: RegistrySource<'a>,
}

impl ImageSource for FactorySource<'_> {
    fn resolve(
        &self,
        reference: &str,
        platform: &Platform,
    ) -> Result<kiln_build::BaseImage, kiln_build::SourceError> {
        match self.map.get(reference) {
            Some(mapped) => {
                let mut img = self.inner.resolve(mapped, platform)?;
                img.reference = reference.to_string();
                Ok(img)
            }
            None => self.inner.resolve(reference, platform),
        }
    }
}
