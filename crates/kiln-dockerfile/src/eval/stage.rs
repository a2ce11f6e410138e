//! Evaluating one stage: its starting state, each instruction's expansion
//! and effect on the config, and the checks that belong to a needed stage.

use super::checks::{check_signal, is_git, is_url, join_workdir};
use super::*;

impl Evaluator<'_> {
    pub(super) fn evaluate_stage(
        &mut self,
        i: usize,
        raw: &[RawStage],
        stages: &mut [Stage],
        global_args: &[GlobalArg],
        global_env: &EnvList,
    ) -> Result<(), Diagnostic> {
        let mut st = self.initial_state(i, stages);
        let from_node = self.node_at(raw[i].from.span.line);
        let ctx = StageCtx {
            index: i,
            stages,
            global_args,
            global_env,
        };
        for trigger in std::mem::take(&mut st.config.onbuild) {
            let (node, instr) = self.parse_trigger(&trigger, &from_node)?;
            self.step(&mut st, &node, instr, &ctx)?;
            if let Some(last) = st.steps.last_mut() {
                last.triggered = true;
            }
        }
        for (node, instr) in &raw[i].steps {
            self.step(&mut st, node, instr.clone(), &ctx)?;
        }
        self.lint_stage(&raw[i]);
        stages[i].steps = st.steps;
        stages[i].config = Some(st.config);
        stages[i].args = st.build;
        Ok(())
    }

    fn initial_state(&self, i: usize, stages: &[Stage]) -> StageState {
        let mut st = StageState::default();
        match &stages[i].base {
            Base::Stage { index } => {
                let parent = &stages[*index];
                st.config = parent.config.clone().unwrap_or_default();
                st.build = parent.args.clone();
            }
            Base::Image { reference } => {
                let platform = stages[i]
                    .platform
                    .clone()
                    .unwrap_or_else(|| self.platform.clone());
                if let Some(cfg) = self.bases.config(reference, &platform) {
                    for (k, v) in &cfg.env {
                        st.config.env.set(k, v);
                        st.build.set(k, v);
                    }
                    st.config.workdir = cfg.workdir;
                    st.config.user = cfg.user;
                    st.config.shell = cfg.shell;
                    st.config.onbuild = cfg.onbuild;
                }
            }
            Base::Scratch => {}
        }
        if st.config.workdir.is_empty() {
            st.config.workdir = "/".into();
        }
        if st.config.shell.is_empty() {
            st.config.shell = vec!["/bin/sh".into(), "-c".into()];
        }
        if matches!(stages[i].base, Base::Image { .. } | Base::Scratch)
            && st.config.env.get("PATH").is_none()
        {
            // BuildKit gives every image a default PATH when its base has none
            let path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
            st.config.env.set("PATH", path);
            st.build.set("PATH", path);
        }
        st
    }

    fn parse_trigger(
        &self,
        trigger: &str,
        from_node: &Node,
    ) -> Result<(Node, Instruction), Diagnostic> {
        let relocate = |mut d: Diagnostic| {
            d.message = format!(
                "ONBUILD trigger {trigger:?} of the base image: {}",
                d.message
            );
            d.span = from_node.span();
            d
        };
        let ast = parse(trigger).map_err(relocate)?;
        let tl: Vec<&str> = trigger.lines().collect();
        let mut node = ast.nodes[0].clone();
        let parsed = parse_node(&node, &tl).map_err(relocate)?;
        node.start_line = from_node.start_line;
        node.end_line = from_node.end_line;
        match parsed {
            Parsed::Instruction(i) => Ok((node, i)),
            Parsed::From(_) => Err(relocate(Diagnostic::new(
                ErrorKind::Arguments,
                from_node.span(),
                "FROM isn't allowed as an ONBUILD trigger",
            ))),
        }
    }

    /// Evaluates one instruction against the stage state and records the step.
    fn step(
        &mut self,
        st: &mut StageState,
        node: &Node,
        instr: Instruction,
        ctx: &StageCtx,
    ) -> Result<(), Diagnostic> {
        let env = st.build.clone();
        let x = |w: &str| self.expand(node, w, &env);
        let mut build_env = None;
        let instr = match instr {
            Instruction::Env { pairs } => {
                let pairs = self.expand_pairs(node, &pairs, &env)?;
                for p in &pairs {
                    st.config.env.set(&p.key, &p.value);
                    st.build.set(&p.key, &p.value);
                }
                Instruction::Env { pairs }
            }
            Instruction::Label { pairs } => {
                let pairs = self.expand_pairs(node, &pairs, &env)?;
                for p in &pairs {
                    st.config.labels.set(&p.key, &p.value);
                }
                Instruction::Label { pairs }
            }
            Instruction::Arg { args } => Instruction::Arg {
                args: self.stage_args(st, node, &args, ctx)?,
            },
            Instruction::Run(run) => {
                let run = self.eval_run(node, run, &env, ctx)?;
                build_env = Some(self.run_env(st));
                Instruction::Run(run)
            }
            Instruction::Copy(mut c) => {
                c.files = self.expand_files(node, c.files, &env)?;
                self.check_sources(node, ctx, c.from.clone(), "COPY --from")?;
                self.check_copy_sources(node, &c.files)?;
                Instruction::Copy(c)
            }
            Instruction::Add(mut a) => {
                a.files = self.expand_files(node, a.files, &env)?;
                a.checksum = a.checksum.map(|v| x(&v)).transpose()?;
                if let Some(sum) = &a.checksum {
                    self.check_checksum(node, sum, &a.files.sources)?;
                }
                Instruction::Add(a)
            }
            Instruction::Expose { specs, .. } => self.eval_expose(st, node, specs, &env)?,
            Instruction::Volume { paths } => self.eval_volume(st, node, &paths, &env)?,
            Instruction::User { user, .. } => {
                let full = x(&user)?;
                st.config.user = full.clone();
                let (user, group) = match full.split_once(':') {
                    Some((u, g)) => (u.to_string(), Some(g.to_string())),
                    None => (full, None),
                };
                Instruction::User { user, group }
            }
            Instruction::Workdir { path } => self.eval_workdir(st, node, x(&path)?, ctx),
            Instruction::Stopsignal { signal } => {
                let signal = x(&signal)?;
                check_signal(&signal).map_err(|m| {
                    Diagnostic::new(ErrorKind::Arguments, locate(self.lines, node, &signal), m)
                })?;
                st.config.stop_signal = signal.clone();
                Instruction::Stopsignal { signal }
            }
            other => apply_unexpanded(st, other),
        };
        st.steps.push(Step {
            line: node.start_line,
            end_line: node.end_line,
            instruction: instr,
            build_env,
            triggered: false,
        });
        Ok(())
    }

    /// Parses RUN's mounts with their values expanded and checks their sources.
    fn eval_run(
        &self,
        node: &Node,
        mut run: Run,
        env: &EnvList,
        ctx: &StageCtx,
    ) -> Result<Run, Diagnostic> {
        for spec in std::mem::take(&mut run.mount_specs) {
            let mut expand = |w: &str| self.lex.process_word(w, env).map(|e| e.result);
            let m = crate::mount::parse(&spec, &mut expand).map_err(|msg| {
                Diagnostic::new(
                    ErrorKind::Flag,
                    locate(self.lines, node, &spec),
                    format!("--mount={spec}: {msg}"),
                )
            })?;
            run.mounts.push(m);
        }
        let froms = run.mounts.iter().filter_map(|m| m.from.clone());
        self.check_sources(node, ctx, froms, "mount from")?;
        Ok(run)
    }

    /// What a RUN sees: ENV and ARG values, plus proxy build args.
    fn run_env(&self, st: &StageState) -> EnvList {
        let mut env = st.build.clone();
        for p in PROXY_ARGS {
            if let Some(v) = self.opts.build_args.get(*p) {
                env.set(p, v);
            }
        }
        env
    }

    fn eval_expose(
        &mut self,
        st: &mut StageState,
        node: &Node,
        specs: Vec<String>,
        env: &EnvList,
    ) -> Result<Instruction, Diagnostic> {
        let mut ports = Vec::new();
        for spec in &specs {
            let words = self
                .lex
                .process_words(spec, env)
                .map_err(|m| self.expand_err(node, spec, m))?;
            for w in words {
                ports.extend(self.parse_port(node, &w)?);
            }
        }
        for p in &ports {
            push_unique(
                &mut st.config.exposed_ports,
                format!("{}/{}", p.port, p.protocol),
            );
        }
        Ok(Instruction::Expose { ports, specs })
    }

    fn eval_volume(
        &self,
        st: &mut StageState,
        node: &Node,
        paths: &[String],
        env: &EnvList,
    ) -> Result<Instruction, Diagnostic> {
        let paths: Vec<String> = paths
            .iter()
            .map(|p| self.expand(node, p, env))
            .collect::<Result<_, _>>()?;
        if paths.iter().any(|p| p.trim().is_empty()) {
            return Err(Diagnostic::new(
                ErrorKind::Arguments,
                node.span(),
                "VOLUME specified can not be an empty string",
            ));
        }
        for p in &paths {
            push_unique(&mut st.config.volumes, p.clone());
        }
        Ok(Instruction::Volume { paths })
    }

    fn eval_workdir(
        &mut self,
        st: &mut StageState,
        node: &Node,
        expanded: String,
        ctx: &StageCtx,
    ) -> Instruction {
        let from_image = matches!(ctx.stages[ctx.index].base, Base::Image { .. });
        if !expanded.starts_with('/') && !st.workdir_set && from_image {
            self.warn(Rule::WorkdirRelativePath, node.span(), format!("Relative workdir {expanded:?} can have unexpected results if the base image changes"));
        }
        let path = join_workdir(&st.config.workdir, &expanded);
        st.config.workdir = path.clone();
        st.workdir_set = true;
        Instruction::Workdir { path }
    }

    /// Expands what COPY and ADD share; heredoc contents with the raw lexer.
    fn expand_files(&self, node: &Node, mut f: Files, env: &EnvList) -> Result<Files, Diagnostic> {
        let x = |w: &str| self.expand(node, w, env);
        f.chown = f.chown.map(|v| x(&v)).transpose()?;
        f.chmod = f.chmod.map(|v| x(&v)).transpose()?;
        f.sources = f.sources.iter().map(|s| x(s)).collect::<Result<_, _>>()?;
        f.exclude = f.exclude.iter().map(|s| x(s)).collect::<Result<_, _>>()?;
        f.dest = x(&f.dest)?;
        f.inline = self.expand_inline(node, f.inline, env)?;
        Ok(f)
    }

    fn check_copy_sources(&self, node: &Node, f: &Files) -> Result<(), Diagnostic> {
        let Some(src) = f.sources.iter().find(|s| is_url(s) || is_git(s)) else {
            return Ok(());
        };
        let what = if is_git(src) {
            "a git repository"
        } else {
            "a URL"
        };
        Err(Diagnostic::new(
            ErrorKind::Arguments,
            locate(self.lines, node, src),
            format!("source can't be {what} for COPY"),
        )
        .with_hint("use ADD to fetch remote sources"))
    }

    /// BuildKit's rules for `ADD --checksum`: one remote source, a valid digest.
    fn check_checksum(&self, node: &Node, sum: &str, sources: &[String]) -> Result<(), Diagnostic> {
        let span = locate(self.lines, node, "--checksum");
        let bad = |m: String| Err(Diagnostic::new(ErrorKind::Flag, span, m));
        let [src] = sources else {
            return bad("checksum can't be specified for multiple sources".into());
        };
        if !is_url(src) && !is_git(src) {
            return bad("checksum can't be specified for non-HTTP(S) sources".into());
        }
        let hex = |h: &str| !h.is_empty() && h.chars().all(|c| c.is_ascii_hexdigit());
        let digest = sum
            .split_once(':')
            .is_some_and(|(algo, h)| matches!(algo, "sha256" | "sha384" | "sha512") && hex(h));
        if digest || (is_git(src) && hex(sum)) {
            return Ok(());
        }
        Err(
            Diagnostic::new(ErrorKind::Flag, span, format!("invalid checksum {sum:?}"))
                .with_hint("write it as --checksum=sha256:<hex digest>"),
        )
    }

    fn expand_pairs(
        &self,
        node: &Node,
        pairs: &[KeyValue],
        env: &EnvList,
    ) -> Result<Vec<KeyValue>, Diagnostic> {
        pairs
            .iter()
            .map(|p| {
                Ok(KeyValue {
                    key: self.expand(node, &p.key, env)?,
                    value: self.expand(node, &p.value, env)?,
                })
            })
            .collect()
    }

    /// Heredoc contents are expanded without quote processing (BuildKit's raw lexer).
    fn expand_inline(
        &self,
        node: &Node,
        files: Vec<InlineFile>,
        env: &EnvList,
    ) -> Result<Vec<InlineFile>, Diagnostic> {
        let mut lex = Lex::new('\\');
        lex.skip_process_quotes = true;
        files
            .into_iter()
            .map(|mut f| {
                if f.expand {
                    f.content = lex
                        .process_word(&f.content, env)
                        .map(|e| e.result)
                        .map_err(|m| self.expand_err(node, &f.content, m))?;
                    // the content is final now: nothing is left to expand
                    f.expand = false;
                }
                Ok(f)
            })
            .collect()
    }

    fn stage_args(
        &self,
        st: &mut StageState,
        node: &Node,
        args: &[ArgDecl],
        ctx: &StageCtx,
    ) -> Result<Vec<ArgDecl>, Diagnostic> {
        let mut out = Vec::new();
        for a in args {
            let from_build = self.opts.build_args.get(&a.name);
            let value = match (from_build, &a.default) {
                (Some(v), _) => Some(v.clone()),
                (None, Some(d)) => Some(self.expand(node, d, &st.build)?),
                (None, None) => match ctx.global_args.iter().rev().find(|g| g.name == a.name) {
                    Some(g) => g.value.clone(),
                    None => ctx.global_env.get(&a.name),
                },
            };
            if let Some(v) = &value {
                st.build.set(&a.name, v);
            }
            out.push(ArgDecl {
                name: a.name.clone(),
                default: value,
            });
        }
        Ok(out)
    }

    fn check_sources(
        &self,
        node: &Node,
        ctx: &StageCtx,
        froms: impl IntoIterator<Item = String>,
        what: &str,
    ) -> Result<(), Diagnostic> {
        let (i, stages) = (ctx.index, ctx.stages);
        for from in froms {
            let idx = match from.parse::<usize>() {
                Ok(n) => Some(n),
                Err(_) => stages
                    .iter()
                    .rev()
                    .find(|s| s.name.as_deref() == Some(from.to_ascii_lowercase().as_str()))
                    .map(|s| s.index),
            };
            let Some(t) = idx else { continue };
            if t >= i {
                let me = stages[i].name.clone().unwrap_or_else(|| i.to_string());
                return Err(Diagnostic::new(ErrorKind::Stage, locate(self.lines, node, &from), format!("{what}={from}: cannot copy from stage {from:?}, it needs to be defined before current stage {me:?}"))
                    .with_hint(format!("move the stage defined on line {} above line {}", stages[t].line, stages[i].line)));
            }
        }
        Ok(())
    }

    fn parse_port(&mut self, node: &Node, spec: &str) -> Result<Vec<Port>, Diagnostic> {
        let span = locate(self.lines, node, spec);
        let bad = |m: String| {
            Diagnostic::new(ErrorKind::Arguments, span, m)
                .with_hint("EXPOSE takes PORT[/PROTOCOL] or a range START-END[/PROTOCOL]")
        };
        let (ports, proto) = match spec.split_once('/') {
            Some((p, proto)) => (p, proto.to_ascii_lowercase()),
            None => (spec, "tcp".to_string()),
        };
        if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
            return Err(bad(format!("invalid proto: {proto}")));
        }
        let ports = match ports.rsplit_once(':') {
            Some((_, container)) => {
                self.warn(Rule::ExposeInvalidFormat, span, format!("EXPOSE instruction should not define an IP address or host-port mapping, found '{spec}'"));
                container
            }
            None => ports,
        };
        let num = |s: &str| {
            s.parse::<u16>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| bad(format!("invalid containerPort: {s}")))
        };
        let (lo, hi) = match ports.split_once('-') {
            Some((a, b)) => (num(a)?, num(b)?),
            None => (num(ports)?, num(ports)?),
        };
        if hi < lo {
            return Err(bad(format!("invalid range specified for port: {ports}")));
        }
        Ok((lo..=hi)
            .map(|port| Port {
                port,
                protocol: proto.clone(),
            })
            .collect())
    }

    fn lint_stage(&mut self, rs: &RawStage) {
        for kind in ["CMD", "ENTRYPOINT", "HEALTHCHECK"] {
            let nodes: Vec<&Node> = rs
                .steps
                .iter()
                .filter(|(n, _)| n.keyword.eq_ignore_ascii_case(kind))
                .map(|(n, _)| n)
                .collect();
            if nodes.len() > 1 {
                for n in &nodes[..nodes.len() - 1] {
                    self.warn(Rule::MultipleInstructionsDisallowed, n.span(), format!("Multiple {kind} instructions should not be used in the same stage because only the last one will be used"));
                }
            }
        }
    }
}

#[derive(Default)]
struct StageState {
    config: StageConfig,
    /// What expansion and RUN see: ENV and ARG values.
    build: EnvList,
    steps: Vec<Step>,
    cmd_set: bool,
    workdir_set: bool,
}

/// Where a stage's evaluation is: which stage, and what it can refer to.
struct StageCtx<'s> {
    index: usize,
    stages: &'s [Stage],
    global_args: &'s [GlobalArg],
    global_env: &'s EnvList,
}

/// Instructions whose arguments are left to the shell or taken literally:
/// they only change the stage's config.
fn apply_unexpanded(st: &mut StageState, instr: Instruction) -> Instruction {
    match &instr {
        Instruction::Shell { shell } => st.config.shell = shell.clone(),
        Instruction::Cmd(c) => {
            st.config.cmd = Some(with_shell(&c.args, c.shell_form, &st.config.shell));
            st.cmd_set = true;
        }
        Instruction::Entrypoint(c) => {
            st.config.entrypoint = Some(with_shell(&c.args, c.shell_form, &st.config.shell));
            // an ENTRYPOINT resets a CMD inherited from the base, not one set in this stage
            if !st.cmd_set {
                st.config.cmd = None;
            }
        }
        Instruction::Onbuild { trigger } => st.config.onbuild.push(trigger.clone()),
        _ => {}
    }
    instr
}

/// The argv a shell-form command runs as.
fn with_shell(args: &[String], shell_form: bool, shell: &[String]) -> Vec<String> {
    if shell_form && !args.is_empty() {
        shell.iter().chain(args).cloned().collect()
    } else {
        args.to_vec()
    }
}

fn push_unique(list: &mut Vec<String>, item: String) {
    if !list.contains(&item) {
        list.push(item);
    }
}
