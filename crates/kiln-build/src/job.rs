//! A build job: the Dockerfile evaluated for each platform, every base
//! resolved before the store is locked, the platforms built at the same
//! time (sharing identical steps through [`Inflight`]), and the result named
//! as one image or an image index.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use kiln_dockerfile::{evaluate, Base, BaseConfig, BaseImages, BuildGraph, Options, Platform};
use kiln_oci::image::{rfc3339, Descriptor, MEDIA_MANIFEST};
use kiln_store::Store;

use crate::compress::Compressor;
use crate::context::Context;
use crate::engine::Builder;
use crate::source::ImageSource;
use crate::{BuildError, BuildOptions, BuildResult, Progress};

/// Lets the frontend see base image configs (env, workdir, ONBUILD…).
struct Bases<'a> {
    source: &'a dyn ImageSource,
}

impl BaseImages for Bases<'_> {
    fn config(&self, reference: &str, platform: &Platform) -> Option<BaseConfig> {
        let img = self.source.resolve(reference, platform).ok()?;
        let c = img.config.config;
        Some(BaseConfig {
            env: c
                .env
                .iter()
                .filter_map(|e| {
                    e.split_once('=')
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                })
                .collect(),
            workdir: c.working_dir,
            user: c.user,
            shell: c.shell,
            onbuild: c.on_build,
        })
    }
}

/// One platform's image of a build.
struct PlatformBuild {
    platform: kiln_oci::image::Platform,
    digest: String,
    size: u64,
    steps_run: usize,
    steps_cached: usize,
    bases: Vec<(String, String)>,
    keys: Vec<String>,
}

/// Steps being run right now, by cache key: a platform that reaches a step
/// another platform is running waits for it and then takes the result from
/// the cache, so work that is the same for every platform is done once.
#[derive(Default)]
pub(crate) struct Inflight {
    running: Mutex<std::collections::HashSet<String>>,
    done: std::sync::Condvar,
}

/// Holds one cache key in [`Inflight`] until dropped.
pub(crate) struct KeyGuard<'a> {
    inflight: &'a Inflight,
    key: String,
}

impl Inflight {
    pub(crate) fn hold(&self, key: &str) -> KeyGuard<'_> {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        while running.contains(key) {
            running = self.done.wait(running).unwrap_or_else(|p| p.into_inner());
        }
        running.insert(key.to_string());
        KeyGuard {
            inflight: self,
            key: key.to_string(),
        }
    }
}

impl Drop for KeyGuard<'_> {
    fn drop(&mut self) {
        let mut running = self
            .inflight
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        running.remove(&self.key);
        self.inflight.done.notify_all();
    }
}

/// Builds the image `opts` describes into `store` and names it: one image,
/// or with several `platforms` one per platform (built at the same time)
/// combined into an image index. A platform that fails fails the build, and
/// nothing is named.
pub fn build(
    store: &Store,
    source: &(dyn ImageSource + Sync),
    opts: &BuildOptions,
    progress: &mut (dyn Progress + Send),
) -> Result<BuildResult, BuildError> {
    let memo = crate::source::Memo::new(source);
    let file = opts.dockerfile.display().to_string();
    let text = std::fs::read_to_string(&opts.dockerfile)
        .map_err(|e| BuildError::io(format!("reading {file}"), e))?;
    let targets: Vec<Option<&Platform>> = if opts.platforms.is_empty() {
        vec![None]
    } else {
        opts.platforms.iter().map(Some).collect()
    };
    let multi = targets.len() > 1;
    let progress = Mutex::new(progress);
    let inflight = Inflight::default();
    let job = Job {
        store,
        source: &memo,
        opts,
        progress: &progress,
        inflight: &inflight,
        file: &file,
        text: &text,
    };
    // shared from the first base fetched to the last name written: prune
    // waits for it, other builds do not
    let _lock = store.lock(false)?;
    let mut graphs = Vec::new();
    for (i, t) in targets.iter().enumerate() {
        let graph = job.evaluate(*t, i == 0)?;
        job.prefetch(&graph);
        graphs.push((*t, graph));
    }
    let (compressor, tasks) = Compressor::new();
    let results: Vec<Result<PlatformBuild, BuildError>> = std::thread::scope(|scope| {
        let compressor = &compressor;
        scope.spawn(move || compressor.work(store, tasks));
        let handles: Vec<_> = graphs
            .iter()
            .map(|(t, graph)| {
                let job = &job;
                scope.spawn(move || job.build_for(*t, graph, multi, compressor))
            })
            .collect();
        let results = handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(BuildError::Context(
                        "a platform's build thread panicked".into(),
                    ))
                })
            })
            .collect();
        compressor.stop();
        results
    });
    let built = results.into_iter().collect::<Result<Vec<_>, _>>()?;
    let manifest = |b: &PlatformBuild| Descriptor {
        media_type: MEDIA_MANIFEST.into(),
        digest: b.digest.clone(),
        size: b.size,
        annotations: Default::default(),
        platform: multi.then(|| b.platform.clone()),
    };
    let desc = if multi {
        store.put_index(built.iter().map(manifest).collect())?
    } else {
        manifest(&built[0])
    };
    let mut names = Vec::new();
    for tag in &opts.tags {
        names.push(store.tag(tag, &desc)?);
    }
    let mut bases: Vec<(String, String)> =
        built.iter().flat_map(|b| b.bases.iter().cloned()).collect();
    bases.sort();
    bases.dedup();
    Ok(BuildResult {
        manifest_digest: desc.digest.clone(),
        manifest_size: desc.size,
        names,
        steps_run: built.iter().map(|b| b.steps_run).sum(),
        steps_cached: built.iter().map(|b| b.steps_cached).sum(),
        cache_keys: built.iter().flat_map(|b| b.keys.iter().cloned()).collect(),
        bases,
        platforms: built
            .iter()
            .map(|b| (b.platform.to_string(), b.digest.clone()))
            .collect(),
    })
}

/// What every platform of one build shares.
struct Job<'a, 'p> {
    store: &'a Store,
    source: &'a (dyn ImageSource + Sync),
    opts: &'a BuildOptions,
    progress: &'a Mutex<&'p mut (dyn Progress + Send)>,
    inflight: &'a Inflight,
    file: &'a str,
    text: &'a str,
}

impl Job<'_, '_> {
    /// Evaluates the Dockerfile for `platform` (the host's when `None`);
    /// the first platform's warnings are shown.
    fn evaluate(&self, platform: Option<&Platform>, first: bool) -> Result<BuildGraph, BuildError> {
        let eval_opts = Options {
            build_args: self.opts.build_args.clone(),
            target: self.opts.target.clone(),
            platform: platform.cloned(),
            build_platform: None,
        };
        let source = self.source;
        let graph = evaluate(self.text, &eval_opts, &Bases { source }).map_err(|d| {
            BuildError::Dockerfile {
                rendered: d.render(self.file, self.text),
            }
        })?;
        if first {
            let mut progress = self.progress.lock().unwrap_or_else(|p| p.into_inner());
            for w in &graph.warnings {
                progress.output(
                    "",
                    &format!(
                        "warning: {}:{}: {}: {}",
                        self.file,
                        w.span.line,
                        w.rule.name(),
                        w.message
                    ),
                );
            }
        }
        Ok(graph)
    }

    /// Resolves every image the needed stages are built on or copy from,
    /// so none is pulled while the store is locked. Failures are left for
    /// the step that needs the image to report.
    fn prefetch(&self, graph: &BuildGraph) {
        for stage in graph.stages.iter().filter(|s| s.needed) {
            let platform = stage.platform.as_ref().unwrap_or(&graph.platform);
            if let Base::Image { reference } = &stage.base {
                let _ = self.source.resolve(reference, platform);
            }
            for image in &stage.images {
                let _ = self.source.resolve(image, &graph.platform);
            }
        }
    }

    /// Builds the target stage of `graph` (evaluated for `platform`) into an image.
    fn build_for(
        &self,
        platform: Option<&Platform>,
        graph: &BuildGraph,
        multi: bool,
        compressor: &Compressor,
    ) -> Result<PlatformBuild, BuildError> {
        let source = self.source;
        let ctx = Context::open(&self.opts.context, Some(&self.opts.dockerfile))
            .map_err(BuildError::Context)?
            .hide(&self.opts.hidden)
            .known_from(known_digests(self.store, &self.opts.context));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let (in_image, last_layer_step) = crate::engine::image_stages(graph);
        let b = Builder {
            store: self.store,
            source,
            opts: self.opts,
            progress: self.progress,
            inflight: self.inflight,
            graph,
            ctx,
            file: self.file.to_string(),
            prefix: if multi {
                format!("{} ", graph.platform)
            } else {
                String::new()
            },
            strict: platform.is_some(),
            created: rfc3339(self.opts.source_date_epoch.unwrap_or(now)),
            steps_run: AtomicUsize::new(0),
            steps_cached: AtomicUsize::new(0),
            bases: Mutex::new(Vec::new()),
            keys: Mutex::new(Vec::new()),
            compressor,
            in_image,
            last_layer_step,
        };
        b.check_runnable()?;
        let states = b.stages()?;
        let target = states[graph.target]
            .clone()
            .expect("the target is in the build order");
        let (digest, size) = b.write_image(&target)?;
        b.ctx.save_known();
        let bases = b.bases.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let keys = std::mem::take(&mut *b.keys.lock().unwrap_or_else(|p| p.into_inner()));
        Ok(PlatformBuild {
            platform: target.config.platform(),
            digest,
            size,
            steps_run: b.steps_run.load(Ordering::Relaxed),
            steps_cached: b.steps_cached.load(Ordering::Relaxed),
            keys,
            bases,
        })
    }
}

/// Where the digests a build took of context `root`'s files are kept for
/// the next build of it (`STORE/contexts/build-HASH.txt`, by the context's
/// absolute path).
fn known_digests(store: &Store, root: &std::path::Path) -> std::path::PathBuf {
    let abs = std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf());
    let key = kiln_oci::digest::sha256(abs.as_os_str().as_encoded_bytes());
    store
        .root()
        .join("contexts")
        .join(format!("build-{}.txt", key.digest()))
}
