//! The build: evaluate the Dockerfile, build the needed stages in order,
//! write the image and name it.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use kiln_dockerfile::instructions::{CommandLine, Healthcheck as HcStep};
use kiln_dockerfile::{Base, BuildGraph, Instruction, Platform, Stage, Step};
use kiln_oci::image::{Descriptor, Empty, Healthcheck, Manifest, MEDIA_CONFIG, MEDIA_MANIFEST};
use kiln_oci::layer::LayerOptions;
use kiln_oci::Digest;
use kiln_store::{chain_id, CacheEntry, CachedLayer, Pending, Store};

use crate::compress::Compressor;
use crate::state::Blob;

use crate::context::Context;
use crate::job::{Inflight, KeyGuard};
use crate::source::ImageSource;
use crate::state::State;
use crate::{BuildError, BuildOptions, Progress};

pub(crate) struct Builder<'a, 'p> {
    pub store: &'a Store,
    pub source: &'a (dyn ImageSource + Sync),
    pub opts: &'a BuildOptions,
    pub progress: &'a Mutex<&'p mut (dyn Progress + Send)>,
    pub inflight: &'a Inflight,
    pub graph: &'a BuildGraph,
    pub ctx: Context,
    pub file: String,
    /// Put before stage names in progress: the platform, when several are built.
    pub prefix: String,
    /// The platform was asked for: a base of another platform is an error.
    pub strict: bool,
    pub created: String,
    pub steps_run: AtomicUsize,
    pub steps_cached: AtomicUsize,
    pub bases: Mutex<Vec<(String, String)>>,
    /// The cache keys of every step this build ran or reused, in order
    /// (what a registry cache of the build holds).
    pub keys: Mutex<Vec<String>>,
    /// Writes the blobs of the image's layers in the background.
    pub compressor: &'a Compressor,
    /// By stage index: whether the image contains the stage's layers (the
    /// target and the stages it is built on).
    pub in_image: Vec<bool>,
    /// The image's last layer-making step: its blob is written at once.
    pub last_layer_step: Option<&'a Step>,
}

/// When a layer's blob is written (see [`Builder::commit_layer`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WhenBlob {
    Now,
    Soon,
    IfNeeded,
}

/// Which stages' layers the image of `graph` contains (its target and the
/// stages it is built on, by index), and the last step among them that can
/// make a layer.
pub(crate) fn image_stages(graph: &BuildGraph) -> (Vec<bool>, Option<&Step>) {
    let mut in_image = vec![false; graph.stages.len()];
    let mut last = None;
    let mut at = Some(graph.target);
    while let Some(i) = at {
        let stage = &graph.stages[i];
        in_image[i] = true;
        if last.is_none() {
            last = stage.steps.iter().rev().find(|s| {
                matches!(
                    s.instruction,
                    Instruction::Run(_)
                        | Instruction::Copy(_)
                        | Instruction::Add(_)
                        | Instruction::Workdir { .. }
                )
            });
        }
        at = match stage.base {
            Base::Stage { index } => Some(index),
            _ => None,
        };
    }
    (in_image, last)
}

/// The stages a stage needs built first: its base stage and what it copies
/// or mounts from.
fn needs(stage: &Stage) -> Vec<usize> {
    let mut deps = stage.depends_on.clone();
    if let Base::Stage { index } = stage.base {
        deps.push(index);
    }
    deps
}

impl<'p> Builder<'_, 'p> {
    /// Builds the needed stages in waves: every stage whose dependencies are
    /// built runs at once, each on its own thread.
    pub(crate) fn stages(&self) -> Result<Vec<Option<State>>, BuildError> {
        let mut states: Vec<Option<State>> = vec![None; self.graph.stages.len()];
        let mut left: Vec<usize> = self.graph.order.clone();
        while !left.is_empty() {
            let (ready, rest): (Vec<usize>, Vec<usize>) = left.iter().partition(|&&i| {
                needs(&self.graph.stages[i])
                    .iter()
                    .all(|d| states[*d].is_some())
            });
            if ready.is_empty() {
                return Err(BuildError::Context("the stage graph has a cycle".into()));
            }
            let built: Vec<(usize, Result<State, BuildError>)> = std::thread::scope(|scope| {
                let handles: Vec<_> = ready
                    .iter()
                    .map(|&i| {
                        let states = &states;
                        (
                            i,
                            scope.spawn(move || self.stage(&self.graph.stages[i], states)),
                        )
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|(i, h)| {
                        (
                            i,
                            h.join().unwrap_or_else(|_| {
                                Err(BuildError::Context(
                                    "a stage's build thread panicked".into(),
                                ))
                            }),
                        )
                    })
                    .collect()
            });
            for (i, result) in built {
                states[i] = Some(result?);
            }
            left = rest;
        }
        Ok(states)
    }

    pub(crate) fn progress(&self) -> std::sync::MutexGuard<'_, &'p mut (dyn Progress + Send)> {
        self.progress.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub(crate) fn key_of(parts: &[&str]) -> String {
    kiln_oci::digest::sha256(parts.join("\n").as_bytes()).to_string()
}

fn with_shell(c: &CommandLine, shell: &[String]) -> Vec<String> {
    if c.shell_form && !c.args.is_empty() {
        shell.iter().chain(&c.args).cloned().collect()
    } else {
        c.args.clone()
    }
}

pub(crate) fn default_shell(st: &State) -> Vec<String> {
    if st.config.config.shell.is_empty() {
        vec!["/bin/sh".into(), "-c".into()]
    } else {
        st.config.config.shell.clone()
    }
}

impl Builder<'_, '_> {
    /// Turns a message into the error of the instruction `text` at `line`.
    pub fn step_error(&self, line: usize, text: &str) -> impl Fn(String) -> BuildError {
        let (file, instruction) = (self.file.clone(), text.to_string());
        move |message| BuildError::Step {
            file: file.clone(),
            line,
            instruction: instruction.clone(),
            message,
        }
    }

    /// Before any step runs: every stage with RUN steps must be of an
    /// architecture this machine can execute (natively or through a
    /// binfmt_misc handler); otherwise the error names its FROM line.
    pub(crate) fn check_runnable(&self) -> Result<(), BuildError> {
        let host = Platform::host().architecture;
        for stage in self.graph.stages.iter().filter(|s| s.needed) {
            let runs = stage
                .steps
                .iter()
                .any(|s| matches!(s.instruction, Instruction::Run(_)));
            if !runs {
                continue;
            }
            let mut base = stage;
            let arch = loop {
                match &base.base {
                    Base::Stage { index } => base = &self.graph.stages[*index],
                    Base::Scratch => {
                        break self.platform_of(base).architecture.clone();
                    }
                    Base::Image { reference } => {
                        let from_err = self.step_error(base.line, &format!("FROM {reference}"));
                        let img = self.base(base, reference).map_err(&from_err)?;
                        break img.config.architecture.to_string();
                    }
                }
            };
            let text = match &stage.base {
                Base::Image { reference } => format!("FROM {reference}"),
                _ => format!("stage {}", self.label(stage)),
            };
            kiln_exec::binfmt::check(&arch, &host)
                .map_err(|e| self.step_error(stage.line, &text)(format!("its RUN steps: {e}")))?;
        }
        Ok(())
    }

    pub fn label(&self, stage: &Stage) -> String {
        let name = stage
            .name
            .clone()
            .unwrap_or_else(|| format!("stage-{}", stage.index));
        format!("{}{name}", self.prefix)
    }

    /// The platform a stage is built for: its `FROM --platform`, else the target's.
    pub fn platform_of<'s>(&'s self, stage: &'s Stage) -> &'s Platform {
        stage.platform.as_ref().unwrap_or(&self.graph.platform)
    }

    /// The image `reference` a stage is built on, for the stage's platform.
    /// When a platform was asked for (`--platform` or `FROM --platform`),
    /// an image of another platform is an error rather than a surprise.
    fn base(&self, stage: &Stage, reference: &str) -> Result<crate::BaseImage, String> {
        let wanted = self.platform_of(stage);
        let img = self
            .source
            .resolve(reference, wanted)
            .map_err(|e| e.to_string())?;
        let have = img.config.platform();
        if (self.strict || stage.platform.is_some())
            && !have.serves(&crate::source::oci_platform(wanted))
        {
            return Err(format!(
                "the image is {have}, not {wanted}: build or pull it for {wanted} \
                 (kiln pull --platform {wanted} REF), or build it as a multi-platform image"
            ));
        }
        Ok(img)
    }

    fn stage(&self, stage: &Stage, states: &[Option<State>]) -> Result<State, BuildError> {
        let mut st = match &stage.base {
            Base::Scratch => {
                let p = self.platform_of(stage);
                State::scratch(&p.os, &p.architecture, &p.variant)
            }
            Base::Stage { index } => states[*index]
                .clone()
                .expect("dependencies are built first"),
            Base::Image { reference } => {
                // a base that cannot be read is an error of its FROM line
                let from_err = self.step_error(stage.line, &format!("FROM {reference}"));
                let base = self.base(stage, reference).map_err(&from_err)?;
                self.bases
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((reference.clone(), base.manifest_digest.clone()));
                let st = State::from_base(&base).map_err(|e| from_err(e.to_string()))?;
                // unpacked now, unless its layers are in a registry: then
                // only a step that opens them fetches them
                if !self.store.has_remote() {
                    st.snapshots(self.store)
                        .map_err(|e| from_err(e.to_string()))?;
                }
                st
            }
        };
        for step in &stage.steps {
            self.step(&mut st, stage, step, states)?;
        }
        Ok(st)
    }

    fn step(
        &self,
        st: &mut State,
        stage: &Stage,
        step: &Step,
        states: &[Option<State>],
    ) -> Result<(), BuildError> {
        let text = kiln_dockerfile::instruction_text(&step.instruction, self.graph.escape);
        match &step.instruction {
            Instruction::Run(run) => return self.run_step(st, stage, step, run, &text, states),
            Instruction::Copy(c) => {
                let from = c
                    .from
                    .as_ref()
                    .map(|f| self.copy_source(f, states))
                    .transpose()?;
                return self.copy_step(st, stage, step, &c.files, from, false, &text);
            }
            Instruction::Add(a) => {
                return self.copy_step(st, stage, step, &a.files, None, true, &text)
            }
            Instruction::Workdir { path } => {
                return self.workdir_step(st, stage, step, path, &text)
            }
            _ => {}
        }
        self.progress()
            .step(&self.label(stage), step.line, &text, false);
        apply_config(st, &step.instruction);
        st.key = key_of(&[&st.key, &text]);
        st.history(text, true);
        Ok(())
    }

    /// Where `COPY --from` reads: a built stage, or an image.
    pub(crate) fn copy_source(
        &self,
        from: &str,
        states: &[Option<State>],
    ) -> Result<State, BuildError> {
        let by_index = from.parse::<usize>().ok();
        let stage = self.graph.stages.iter().rev().find(|s| {
            Some(s.index) == by_index
                || s.name.as_deref() == Some(from.to_ascii_lowercase().as_str())
        });
        if let Some(s) = stage {
            return Ok(states[s.index]
                .clone()
                .expect("dependencies are built first"));
        }
        let base = self
            .source
            .resolve(from, &self.graph.platform)
            .map_err(|m| BuildError::Base {
                reference: from.to_string(),
                message: m.to_string(),
            })?;
        State::from_base(&base)
    }

    /// Makes `dir` (an overlay diff dir, or a tree COPY built) the
    /// snapshot of the step's layer and records it in the cache under
    /// `key`. Its blob is written as [`Builder::when_blob`] says: at once
    /// (the image's last layer: nothing else would run meanwhile), in the
    /// background while later steps run (the image's other layers), or only
    /// when an image needs it (layers of stages no image contains).
    pub fn commit_layer(
        &self,
        st: &mut State,
        stage: &Stage,
        step: &Step,
        dir: &Path,
        key: &str,
    ) -> Result<bool, BuildError> {
        let empty = std::fs::read_dir(dir)
            .map_err(|e| BuildError::io(format!("reading {}", dir.display()), e))?
            .next()
            .is_none();
        st.created = self.created.clone();
        if empty {
            let _ = std::fs::remove_dir_all(dir);
            let entry = CacheEntry {
                layer: None,
                created: Some(st.created.clone()),
            };
            self.remember(key, &entry)?;
            return Ok(false);
        }
        let when = self.when_blob(stage, step);
        let layer = self.layer_of(st, dir, when)?;
        let chain = self.take_layer(st, key, &layer)?;
        self.store.commit_snapshot(dir, &chain)?;
        let entry = CacheEntry {
            layer: Some(layer.clone()),
            created: Some(st.created.clone()),
        };
        self.remember(key, &entry)?;
        if when == WhenBlob::Soon {
            self.compressor.queue(key, &layer);
        }
        Ok(true)
    }

    /// The layer of tree `dir` on top of `st`: with its blob when it is
    /// to be written now, else only its diff ID and what writing the blob
    /// later needs.
    fn layer_of(&self, st: &State, dir: &Path, when: WhenBlob) -> Result<CachedLayer, BuildError> {
        let lopts = LayerOptions {
            compression: self.opts.compression,
            source_date_epoch: self.opts.source_date_epoch,
        };
        let media_type = self.opts.compression.media_type().to_string();
        if when != WhenBlob::Now {
            let diff_id = kiln_oci::layer::diff_id(dir, &lopts)?;
            return Ok(CachedLayer {
                digest: None,
                diff_id: diff_id.to_string(),
                size: 0,
                media_type,
                pending: Some(Pending {
                    chain: chain_id(st.parent_chain(), &diff_id).to_string(),
                    source_date_epoch: self.opts.source_date_epoch,
                }),
            });
        }
        let info = crate::compress::blob_of(self.store, dir, &lopts, |_| Ok(()))?;
        Ok(CachedLayer {
            digest: Some(info.digest.to_string()),
            diff_id: info.diff_id.to_string(),
            size: info.size,
            media_type,
            pending: None,
        })
    }

    /// When the blob of a layer `step` of `stage` makes is written.
    fn when_blob(&self, stage: &Stage, step: &Step) -> WhenBlob {
        if self
            .last_layer_step
            .is_some_and(|last| std::ptr::eq(last, step))
        {
            WhenBlob::Now
        } else if self.in_image.get(stage.index).copied().unwrap_or(false) {
            WhenBlob::Soon
        } else {
            WhenBlob::IfNeeded
        }
    }

    /// Puts the layer of step `key` on top of `st`; what follows stands on
    /// its content, not just on the step. Returns its chain ID.
    fn take_layer(
        &self,
        st: &mut State,
        key: &str,
        layer: &CachedLayer,
    ) -> Result<Digest, BuildError> {
        let diff_id = kiln_store::parse_digest(&layer.diff_id)?;
        let blob = match layer.blob() {
            Some(digest) => Blob::Written {
                digest,
                size: layer.size,
            },
            None => Blob::Pending {
                key: key.to_string(),
                layer: layer.clone(),
            },
        };
        st.key = key_of(&[key, diff_id.as_ref()]);
        Ok(st.push_layer(blob, diff_id, layer.media_type.clone()))
    }

    /// Keeps a step's result in the step cache, as one of this build's.
    fn remember(&self, key: &str, entry: &CacheEntry) -> Result<(), BuildError> {
        self.store.cache_put(key, entry)?;
        self.used(key);
        Ok(())
    }

    /// Notes a step's cache key as one of this build's.
    fn used(&self, key: &str) {
        self.keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(key.to_string());
    }

    /// Starts a layer step: reuses its cached result when there is one
    /// (returns true: the step is done), else counts and announces it.
    /// Returns `None` when the step is done; otherwise a guard to hold
    /// while running it, so another platform's identical step waits for
    /// this one and reuses its result.
    pub fn begin(
        &self,
        st: &mut State,
        stage: &Stage,
        step: &Step,
        text: &str,
        key: &str,
    ) -> Result<Option<KeyGuard<'_>>, BuildError> {
        let rerun = match &step.instruction {
            Instruction::Run(run) => self.opts.refresh.reruns(&run.command),
            _ => false,
        };
        let label = self.label(stage);
        // a RUN of another architecture runs under QEMU: the log says so
        let host = Platform::host().architecture;
        let shown = match step.instruction {
            Instruction::Run(_) if st.config.architecture != host => {
                format!("{text}  [emulated: {}]", st.config.platform())
            }
            _ => text.to_string(),
        };
        let guard = self.inflight.hold(key);
        let cached = if rerun { None } else { self.cached(st, key)? };
        if let Some(made) = cached {
            self.steps_cached.fetch_add(1, Ordering::Relaxed);
            self.progress().step(&label, step.line, &shown, true);
            st.history(format!("{text} # kiln"), !made);
            return Ok(None);
        }
        self.progress().step(&label, step.line, &shown, false);
        self.steps_run.fetch_add(1, Ordering::Relaxed);
        Ok(Some(guard))
    }

    /// Reuses a cached step result: `Some(true)` when it added a layer,
    /// `Some(false)` when it had none, `None` when there is no result (or --no-cache).
    pub fn cached(&self, st: &mut State, key: &str) -> Result<Option<bool>, BuildError> {
        if self.opts.no_cache {
            return Ok(None);
        }
        let Some(entry) = self.store.cache_get(key) else {
            return Ok(None);
        };
        self.used(key);
        if let Some(c) = &entry.created {
            st.created = c.clone();
        }
        let Some(l) = entry.layer else {
            return Ok(Some(false));
        };
        self.take_layer(st, key, &l)?;
        Ok(Some(true))
    }

    fn workdir_step(
        &self,
        st: &mut State,
        stage: &Stage,
        step: &Step,
        path: &str,
        text: &str,
    ) -> Result<(), BuildError> {
        st.config.config.working_dir = path.to_string();
        let key = key_of(&[&st.key, text]);
        st.key = key.clone();
        if let Some(made) = self.cached(st, &key)? {
            // a WORKDIR counts as a layer step only when it made a layer
            self.steps_cached
                .fetch_add(usize::from(made), Ordering::Relaxed);
            self.progress()
                .step(&self.label(stage), step.line, text, true);
            st.history(text.to_string(), !made);
            return Ok(());
        }
        let view = st.view(self.store)?;
        let exists = view
            .resolve(Path::new(path.trim_start_matches('/')), true)
            .is_some();
        self.progress()
            .step(&self.label(stage), step.line, text, exists);
        if exists {
            self.remember(
                &key,
                &CacheEntry {
                    layer: None,
                    created: Some(st.created.clone()),
                },
            )?;
            st.history(text.to_string(), true);
            return Ok(());
        }
        // BuildKit creates a missing WORKDIR in its own layer
        self.steps_run.fetch_add(1, Ordering::Relaxed);
        let tree = self.store.temp_path("workdir");
        let _cleanup = kiln_store::RemoveOnDrop(tree.clone());
        // BuildKit creates it as the current USER
        let ids = crate::users::resolve(&view, &st.config.config.user)
            .map_err(self.step_error(step.line, text))?;
        // through the image's symlinks: `WORKDIR /link` with `/link ->
        // /var/lib/x` keeps the link and makes /var/lib/x, as BuildKit does
        let target = view.resolve_dest(Path::new(path.trim_start_matches('/')));
        crate::copy::make_parents(
            &view,
            &tree,
            target.join("x").as_path(),
            self.opts.source_date_epoch,
            (ids.uid, ids.gid),
        )?;
        let made = self.commit_layer(st, stage, step, &tree, &key)?;
        st.history(text.to_string(), !made);
        Ok(())
    }

    pub(crate) fn write_image(&self, st: &State) -> Result<(String, u64), BuildError> {
        let mut image_config = st.config.clone();
        image_config.created = Some(st.created.clone());
        let config = serde_json::to_vec(&image_config)
            .map_err(|e| BuildError::Context(format!("writing the image config: {e}")))?;
        let config_digest = self.store.put_blob(&config)?;
        let layers = self.compressor.descriptors(&st.layers)?;
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(MEDIA_MANIFEST.into()),
            config: Descriptor {
                media_type: MEDIA_CONFIG.into(),
                digest: config_digest.to_string(),
                size: config.len() as u64,
                annotations: Default::default(),
                platform: None,
            },
            layers,
            annotations: Default::default(),
        };
        let bytes = serde_json::to_vec(&manifest)
            .map_err(|e| BuildError::Context(format!("writing the manifest: {e}")))?;
        let digest = self.store.put_blob(&bytes)?;
        Ok((digest.to_string(), bytes.len() as u64))
    }
}

/// The effect of a config-only instruction on the image config.
fn apply_config(st: &mut State, i: &Instruction) {
    let shell = default_shell(st);
    if let Instruction::Env { pairs } = i {
        for p in pairs {
            st.set_env(&p.key, &p.value);
        }
        return;
    }
    let c = &mut st.config.config;
    match i {
        Instruction::Label { pairs } => {
            for p in pairs {
                c.labels.insert(p.key.clone(), p.value.clone());
            }
        }
        Instruction::User { user, group } => {
            c.user = match group {
                Some(g) => format!("{user}:{g}"),
                None => user.clone(),
            }
        }
        Instruction::Expose { ports, .. } => {
            for p in ports {
                c.exposed_ports
                    .insert(format!("{}/{}", p.port, p.protocol), Empty {});
            }
        }
        Instruction::Volume { paths } => {
            for p in paths {
                c.volumes.insert(p.clone(), Empty {});
            }
        }
        Instruction::Cmd(cmd) => {
            c.cmd = Some(with_shell(cmd, &shell));
            st.cmd_set = true;
        }
        Instruction::Entrypoint(ep) => {
            c.entrypoint = Some(with_shell(ep, &shell));
            if !st.cmd_set {
                c.cmd = None;
            }
        }
        Instruction::Shell { shell } => c.shell = shell.clone(),
        Instruction::Stopsignal { signal } => c.stop_signal = signal.clone(),
        Instruction::Healthcheck(h) => c.healthcheck = Some(healthcheck(h, &shell)),
        Instruction::Onbuild { trigger } => c.on_build.push(trigger.clone()),
        Instruction::Maintainer { name } => st.config.author = Some(name.clone()),
        _ => {}
    }
}

fn healthcheck(h: &HcStep, _shell: &[String]) -> Healthcheck {
    let test = match &h.test {
        None => vec!["NONE".to_string()],
        Some(t) if t.shell_form => vec!["CMD-SHELL".to_string(), t.args.join(" ")],
        Some(t) => std::iter::once("CMD".to_string())
            .chain(t.args.iter().cloned())
            .collect(),
    };
    Healthcheck {
        test,
        interval: h.interval,
        timeout: h.timeout,
        start_period: h.start_period,
        start_interval: h.start_interval,
        retries: h.retries,
    }
}
