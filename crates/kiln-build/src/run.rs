//! RUN steps and `kiln run`: a command on an overlay of an image's
//! snapshots, through kiln-exec.

use std::fs;
use std::path::{Path, PathBuf};

use kiln_dockerfile::instructions::{CommandLine, Network as StepNetwork, Run};
use kiln_dockerfile::mount::MountType;
use kiln_dockerfile::{Platform, Stage, Step};
use kiln_exec::{Mount, MountKind, Network, RunSpec};
use kiln_store::Store;

use crate::engine::{default_shell, key_of, Builder};
use crate::state::State;
use crate::view::View;
use crate::{users, BuildError, Progress};

/// The directories of one step: its upper dir becomes the layer.
struct StepDirs {
    base: PathBuf,
}

impl StepDirs {
    fn new(store: &Store) -> Result<Self, BuildError> {
        let base = store.temp_path("step");
        for d in ["upper", "work", "root", "empty"] {
            fs::create_dir_all(base.join(d))
                .map_err(|e| BuildError::io(format!("creating {}", base.join(d).display()), e))?;
        }
        Ok(StepDirs { base })
    }

    fn upper(&self) -> PathBuf {
        self.base.join("upper")
    }
}

impl Drop for StepDirs {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.base);
    }
}

/// The argv of a RUN: shell form through the stage's SHELL; a lone heredoc
/// is the script itself (run directly when it starts with `#!`).
fn argv(cmd: &CommandLine, shell: &[String], dirs: &StepDirs) -> Result<Vec<String>, BuildError> {
    if !cmd.shell_form {
        return Ok(cmd.args.clone());
    }
    let line = cmd.args.join(" ");
    if let [doc] = cmd.heredocs.as_slice() {
        let word = line.trim();
        let lone = word
            .trim_start_matches(|c: char| c.is_ascii_digit())
            .strip_prefix("<<")
            .is_some_and(|rest| {
                rest.trim_start_matches('-')
                    .trim_matches(|c| c == '"' || c == '\'')
                    == doc.name
            });
        if lone {
            if doc.content.starts_with("#!") {
                let script = dirs.base.join("script");
                fs::write(&script, &doc.content)
                    .map_err(|e| BuildError::io("writing the heredoc script", e))?;
                use std::os::unix::fs::PermissionsExt;
                let _ = fs::set_permissions(&script, fs::Permissions::from_mode(0o755));
                return Ok(vec!["/dev/.kiln-script".into()]);
            }
            return Ok(shell
                .iter()
                .cloned()
                .chain(std::iter::once(doc.content.clone()))
                .collect());
        }
    }
    // heredocs with a command line: the shell reads them as heredocs
    let mut script = line;
    for doc in &cmd.heredocs {
        script.push('\n');
        script.push_str(&doc.content);
        script.push_str(&doc.name);
    }
    Ok(shell
        .iter()
        .cloned()
        .chain(std::iter::once(script))
        .collect())
}

/// Removes the mount points the helper created, deepest first, when they
/// are still empty (the step's own files are never removed).
fn remove_stubs(upper: &Path, stubs_file: &Path) {
    let Ok(text) = fs::read_to_string(stubs_file) else {
        return;
    };
    for rel in text.lines().rev().filter(|l| !l.is_empty()) {
        let p = upper.join(rel);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => {
                let _ = fs::remove_dir(&p);
            }
            Ok(m) if m.is_file() && m.len() == 0 => {
                let _ = fs::remove_file(&p);
            }
            _ => {}
        }
    }
}

fn hosts(hostname: &str) -> String {
    format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n"
    )
}

/// What a command in a step or container needs besides its layers.
pub(crate) struct Exec<'a> {
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: String,
    pub user: &'a str,
    pub network: Network,
    pub mounts: Vec<Mount>,
}

/// Runs a command on `view`'s layers; returns its outcome and leaves the
/// changes in `dirs.upper()`.
fn exec(
    kiln: &Path,
    view: &View,
    dirs: &StepDirs,
    e: Exec,
    on_line: Option<&mut dyn FnMut(&str)>,
) -> Result<Result<kiln_exec::Outcome, String>, BuildError> {
    let ids = match users::resolve(view, e.user) {
        Ok(ids) => ids,
        Err(m) => return Ok(Err(m)),
    };
    let hostname = "kiln".to_string();
    let hosts_file = dirs.base.join("hosts");
    fs::write(&hosts_file, hosts(&hostname))
        .map_err(|err| BuildError::io("writing the hosts file", err))?;
    let mut mounts = e.mounts;
    if dirs.base.join("script").exists() {
        mounts.push(Mount {
            target: "/dev/.kiln-script".into(),
            kind: MountKind::Bind {
                source: dirs.base.join("script"),
                readonly: true,
            },
        });
    }
    let spec = RunSpec {
        lowers: view.layers.clone(),
        upper: dirs.upper(),
        work: dirs.base.join("work"),
        rootfs: dirs.base.join("root"),
        empty: dirs.base.join("empty"),
        args: e.args,
        env: e.env,
        cwd: if e.cwd.is_empty() { "/".into() } else { e.cwd },
        uid: ids.uid,
        gid: ids.gid,
        groups: ids.groups,
        hostname,
        network: e.network,
        hosts_file,
        resolv_conf: (e.network == Network::Host && Path::new("/etc/resolv.conf").exists())
            .then(|| PathBuf::from("/etc/resolv.conf")),
        mounts,
        stubs_file: dirs.base.join("stubs"),
    };
    let spec_file = dirs.base.join("spec.json");
    let outcome = match on_line {
        Some(f) => kiln_exec::run(kiln, &spec, &spec_file, f)?,
        // attached: the command's stdout and stderr are ours
        None => kiln_exec::Outcome {
            code: kiln_exec::run_attached(kiln, &spec, &spec_file)?,
            tail: vec![],
        },
    };
    remove_stubs(&dirs.upper(), &dirs.base.join("stubs"));
    Ok(Ok(outcome))
}

impl Builder<'_, '_> {
    pub(crate) fn run_step(
        &self,
        st: &mut State,
        stage: &Stage,
        step: &Step,
        run: &Run,
        text: &str,
        states: &[Option<State>],
    ) -> Result<(), BuildError> {
        let env: Vec<(String, String)> = step
            .build_env
            .as_ref()
            .map(|e| {
                e.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            })
            .unwrap_or_else(|| st.env());
        let shell = default_shell(st);
        let env_text = env
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("\0");
        let json = serde_json::to_string(&step.instruction).unwrap_or_default();
        // a bind mount from another stage or image reads its content
        let mut from_keys = String::new();
        for m in run
            .mounts
            .iter()
            .filter(|m| matches!(m.kind, MountType::Bind | MountType::Cache))
        {
            if let Some(from) = &m.from {
                from_keys.push_str(&self.copy_source(from, states)?.key);
            }
        }
        let key = key_of(&[
            &st.key,
            &json,
            &env_text,
            &st.config.config.working_dir,
            &st.config.config.user,
            &shell.join("\0"),
            &from_keys,
        ]);
        st.key = key.clone();
        let Some(_running) = self.begin(st, stage, step, text, &key)? else {
            return Ok(());
        };
        let view = st.view(self.store)?;
        let dirs = StepDirs::new(self.store)?;
        // held until the step ends: cache mounts with sharing=locked|private
        let (mounts, _locks) = self.step_mounts(run, step, text, states, &dirs.base)?;
        let e = Exec {
            args: argv(&run.command, &shell, &dirs)?,
            env,
            cwd: st.config.config.working_dir.clone(),
            user: &st.config.config.user.clone(),
            network: if run.network == StepNetwork::None {
                Network::None
            } else {
                Network::Host
            },
            mounts,
        };
        let label = self.label(stage);
        let mut on_line = |l: &str| self.progress().output(&label, l);
        let outcome = exec(&self.opts.kiln_exe, &view, &dirs, e, Some(&mut on_line))?;
        let fail = self.step_error(step.line, text);
        let outcome = outcome.map_err(&fail)?;
        if outcome.code != 0 {
            let tail = outcome
                .tail
                .iter()
                .map(|l| format!("\n  | {l}"))
                .collect::<String>();
            return Err(fail(format!(
                "the command exited with code {}{tail}",
                outcome.code
            )));
        }
        let made = self.commit_layer(st, stage, step, &dirs.upper(), &key)?;
        st.history(format!("{text} # kiln"), !made);
        Ok(())
    }

    /// The directory a cache mount uses, by its sharing mode: `shared` uses
    /// it as is, `locked` waits for other users, `private` takes a fresh
    /// directory when another step holds it.
    fn cache_sharing(
        &self,
        m: &kiln_dockerfile::mount::Mount,
        dir: PathBuf,
        staging: &Path,
        locks: &mut Vec<fs::File>,
    ) -> Result<PathBuf, BuildError> {
        use kiln_dockerfile::mount::Sharing;
        let sharing = m.sharing.unwrap_or(Sharing::Shared);
        if sharing == Sharing::Shared {
            return Ok(dir);
        }
        let lock_path = dir.with_extension("lock");
        let file = fs::File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| BuildError::io(format!("opening {}", lock_path.display()), e))?;
        if sharing == Sharing::Locked {
            file.lock()
                .map_err(|e| BuildError::io(format!("locking {}", lock_path.display()), e))?;
            locks.push(file);
            return Ok(dir);
        }
        match file.try_lock() {
            Ok(()) => {
                locks.push(file);
                Ok(dir)
            }
            Err(_) => {
                let private = staging.join(format!("private-cache-{}", locks.len()));
                fs::create_dir_all(&private)
                    .map_err(|e| BuildError::io(format!("creating {}", private.display()), e))?;
                Ok(private)
            }
        }
    }

    /// The `--mount`s of a RUN as bind and tmpfs mounts of the helper.
    fn step_mounts(
        &self,
        run: &Run,
        step: &Step,
        text: &str,
        states: &[Option<State>],
        staging: &Path,
    ) -> Result<(Vec<Mount>, Vec<fs::File>), BuildError> {
        let mut locks = Vec::new();
        let fail = self.step_error(step.line, text);
        let mut out = Vec::new();
        for m in &run.mounts {
            let kind = match m.kind {
                MountType::Tmpfs => MountKind::Tmpfs { size: m.size },
                MountType::Cache => {
                    let id = m.id.clone().unwrap_or_else(|| m.target.clone());
                    let dir = self
                        .store
                        .root()
                        .join("cache-mounts")
                        .join(kiln_oci::digest::sha256(id.as_bytes()).digest());
                    fs::create_dir_all(&dir).map_err(|e| {
                        BuildError::io(format!("creating cache mount {}", dir.display()), e)
                    })?;
                    // a new cache `from` a stage starts with that stage's files
                    if let Some(from) = &m.from {
                        let empty = fs::read_dir(&dir).map_or(true, |mut d| d.next().is_none());
                        if empty {
                            let view = self.copy_source(from, states)?.view(self.store)?;
                            let source = crate::context::clean(m.source.as_deref().unwrap_or("/"))
                                .unwrap_or_default();
                            crate::copy::seed(view, &source, &dir).map_err(|e| {
                                fail(format!(
                                    "seeding the cache at {} from {from}: {e}",
                                    m.target
                                ))
                            })?;
                        }
                    }
                    let source = self.cache_sharing(m, dir, staging, &mut locks)?;
                    MountKind::Bind {
                        source,
                        readonly: m.readonly,
                    }
                }
                MountType::Secret => {
                    let id = m.id.clone().unwrap_or_default();
                    match self.opts.secrets.get(&id) {
                        // BuildKit's defaults: root's, 0400
                        Some(src) => MountKind::Secret {
                            source: src.clone(),
                            mode: m.mode.unwrap_or(0o400),
                            uid: m.uid.unwrap_or(0),
                            gid: m.gid.unwrap_or(0),
                            env: m.env.clone(),
                            staging: staging.join(format!("secret-{}", out.len())),
                        },
                        None if m.required => {
                            return Err(fail(format!(
                                "secret {id:?} is required: pass --secret id={id},src=FILE"
                            )))
                        }
                        None => continue,
                    }
                }
                MountType::Bind if m.from.is_some() => {
                    let from = m.from.as_deref().unwrap_or_default();
                    let source_state = self.copy_source(from, states)?;
                    MountKind::Layers {
                        lowers: source_state.snapshots(self.store)?,
                        source: m.source.clone().unwrap_or_else(|| "/".into()),
                        readonly: m.readonly,
                        staging: staging.join(format!("mount-{}", out.len())),
                    }
                }
                MountType::Bind => {
                    let src = crate::context::clean(m.source.as_deref().unwrap_or("")).ok_or_else(
                        || fail("the bind source is outside the build context".into()),
                    )?;
                    // a symlink in the context is followed inside the context
                    let real = self
                        .ctx
                        .follow(&src)
                        .map_err(|e| fail(format!("the bind source: {e}")))?;
                    MountKind::Bind {
                        source: self.ctx.root.join(real),
                        readonly: m.readonly,
                    }
                }
                MountType::Ssh => {
                    return Err(fail("RUN --mount=type=ssh is not supported yet".into()))
                }
            };
            out.push(Mount {
                target: m.target.clone(),
                kind,
            });
        }
        Ok((out, locks))
    }
}

/// `kiln run`: what to run in a throwaway container of an image.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Replaces the image's CMD (the ENTRYPOINT stays, as with docker run).
    pub command: Vec<String>,
    pub kiln_exe: PathBuf,
    pub network_none: bool,
    /// Send the command's output, line by line, to `progress.output`
    /// instead of the terminal (factory tests).
    pub capture: bool,
    /// Which image of a multi-platform image (default: this machine's).
    pub platform: Option<kiln_dockerfile::Platform>,
}

/// Runs a command in a throwaway container of the image `name`; returns its
/// exit code. Output goes to the terminal, or with `capture` to
/// `progress.output`.
pub fn run_image(
    store: &Store,
    name: &str,
    opts: &RunOptions,
    progress: &mut dyn Progress,
) -> Result<i32, BuildError> {
    let _lock = store.lock(false)?;
    let platform = opts.platform.clone().unwrap_or_else(Platform::host);
    let img = store.image_for(name, &crate::source::oci_platform(&platform))?;
    let base = crate::BaseImage {
        reference: img.name.clone(),
        manifest_digest: img.manifest_digest.to_string(),
        config: img.config,
        layers: img.manifest.layers,
    };
    kiln_exec::binfmt::check(
        &base.config.architecture.to_string(),
        &Platform::host().architecture,
    )
    .map_err(|e| BuildError::Context(format!("cannot run {name}: {e}")))?;
    let st = State::from_base(&base)?;
    let view = st.view(store)?;
    let c = &st.config.config;
    let mut args = c.entrypoint.clone().unwrap_or_default();
    if opts.command.is_empty() {
        args.extend(c.cmd.clone().unwrap_or_default());
    } else {
        args.extend(opts.command.iter().cloned());
    }
    if args.is_empty() {
        return Err(BuildError::Context(format!(
            "{name} has no CMD or ENTRYPOINT: give a command after --"
        )));
    }
    let dirs = StepDirs::new(store)?;
    let e = Exec {
        args,
        env: st.env(),
        cwd: c.working_dir.clone(),
        user: &c.user,
        network: if opts.network_none {
            Network::None
        } else {
            Network::Host
        },
        mounts: vec![],
    };
    let mut forward = |line: &str| progress.output("", line);
    let on_line: Option<&mut dyn FnMut(&str)> = if opts.capture {
        Some(&mut forward)
    } else {
        None
    };
    match exec(&opts.kiln_exe, &view, &dirs, e, on_line)? {
        Ok(o) => Ok(o.code),
        Err(m) => Err(BuildError::Context(m)),
    }
}
