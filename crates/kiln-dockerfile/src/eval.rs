//! Typed instructions to an evaluated build graph: stages and their
//! dependencies, ARG scoping, variable expansion, `--target` pruning.
//!
//! The order of events is BuildKit's (`dockerfile2llb`): global ARGs are
//! evaluated first with the platform args; every FROM is expanded with them;
//! stage references are resolved over all stages and cycles rejected; then only
//! the stages the target needs are evaluated, in file order, so an error inside
//! an unneeded stage is never reported.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::error::{suggest, Diagnostic, ErrorKind, Span};
use crate::instructions::{
    locate, parse_node, ArgDecl, Files, From, InlineFile, Instruction, KeyValue, Parsed, Port, Run,
};
use crate::lint::{CheckConfig, Rule, Warning};
use crate::parser::{parse, Ast, Node};
use crate::platform::Platform;
use crate::shell::{Env, EnvList, Lex};

/// Proxy variables usable as build args without an ARG declaration.
pub const PROXY_ARGS: &[&str] = &[
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// What the evaluation needs besides the text.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    /// Defaults to the build platform.
    pub platform: Option<Platform>,
    /// Defaults to the host.
    pub build_platform: Option<Platform>,
}

/// The parts of a base image's config that change how a Dockerfile evaluates.
#[derive(Debug, Clone, Default)]
pub struct BaseConfig {
    pub env: Vec<(String, String)>,
    pub workdir: String,
    pub user: String,
    pub shell: Vec<String>,
    pub onbuild: Vec<String>,
}

/// Looks up base images' configs; the frontend does no I/O itself.
pub trait BaseImages {
    fn config(&self, reference: &str, platform: &Platform) -> Option<BaseConfig>;
}

/// Base images are unknown: their config is taken as empty.
pub struct UnknownBases;

impl BaseImages for UnknownBases {
    fn config(&self, _: &str, _: &Platform) -> Option<BaseConfig> {
        None
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Base {
    Scratch,
    Image { reference: String },
    Stage { index: usize },
}

/// One evaluated instruction and where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    pub line: usize,
    pub end_line: usize,
    #[serde(flatten)]
    pub instruction: Instruction,
    /// For RUN: the environment the command sees (ENV and ARG values).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build_env: Option<EnvList>,
    /// True for a trigger the base registered with ONBUILD, run at the start
    /// of this stage (`line` is then the stage's FROM).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub triggered: bool,
}

/// The image config a stage ends with, as far as the Dockerfile defines it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct StageConfig {
    pub env: EnvList,
    pub workdir: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub user: String,
    pub shell: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(skip_serializing_if = "EnvList::is_empty")]
    pub labels: EnvList,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub exposed_ports: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub stop_signal: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub onbuild: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stage {
    pub index: usize,
    pub name: Option<String>,
    pub base: Base,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    pub line: usize,
    /// False when `--target` does not need this stage: it is not evaluated.
    pub needed: bool,
    /// Stages this one copies or mounts from (its base is in `base`).
    pub depends_on: Vec<usize>,
    /// External images this stage copies or mounts from.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<Step>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<StageConfig>,
    #[serde(skip)]
    args: EnvList,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GlobalArg {
    pub name: String,
    pub value: Option<String>,
}

/// The result of reading a Dockerfile: everything a build needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BuildGraph {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub syntax: Option<String>,
    pub escape: char,
    pub check: CheckConfig,
    pub platform: Platform,
    pub build_platform: Platform,
    pub global_args: Vec<GlobalArg>,
    pub stages: Vec<Stage>,
    pub target: usize,
    /// Stage indices in the order a build runs them (dependencies first).
    pub order: Vec<usize>,
    pub warnings: Vec<Warning>,
    /// Build arguments no ARG of the needed stages declares (Docker warns
    /// that they "were not consumed").
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unused_build_args: Vec<String>,
}

/// Parses and evaluates a Dockerfile.
pub fn evaluate(
    text: &str,
    opts: &Options,
    bases: &dyn BaseImages,
) -> Result<BuildGraph, Diagnostic> {
    let ast = parse(text)?;
    let lines: Vec<&str> = text
        .strip_prefix('\u{feff}')
        .unwrap_or(text)
        .split('\n')
        .map(|l| l.trim_end_matches('\r'))
        .collect();
    let check = match ast.directive("check") {
        Some(d) => CheckConfig::parse(&d.value, d.line)?,
        None => CheckConfig::default(),
    };
    let mut ev = Evaluator::new(&ast, &lines, opts, bases);
    ev.warnings.extend(ast.warnings.iter().cloned());
    let graph = ev.run()?;
    let warnings = check.apply(graph.warnings)?;
    Ok(BuildGraph {
        syntax: ast.directive("syntax").map(|d| d.value.clone()),
        check,
        warnings,
        ..graph
    })
}

/// Global ARG instructions: the node (for error positions) and its names.
type MetaArgs = Vec<(Node, Vec<ArgDecl>)>;

struct RawStage {
    from: From,
    steps: Vec<(Node, Instruction)>,
}

struct Evaluator<'a> {
    ast: &'a Ast,
    lines: &'a [&'a str],
    opts: &'a Options,
    bases: &'a dyn BaseImages,
    lex: Lex,
    platform: Platform,
    build_platform: Platform,
    warnings: Vec<Warning>,
}

fn platform_args(target: &Platform, build: &Platform) -> EnvList {
    let mut e = EnvList::default();
    for (prefix, p) in [("BUILD", build), ("TARGET", target)] {
        e.set(&format!("{prefix}PLATFORM"), &p.to_string());
        e.set(&format!("{prefix}OS"), &p.os);
        e.set(&format!("{prefix}ARCH"), &p.architecture);
        e.set(&format!("{prefix}VARIANT"), &p.variant);
    }
    e
}

impl<'a> Evaluator<'a> {
    fn new(
        ast: &'a Ast,
        lines: &'a [&'a str],
        opts: &'a Options,
        bases: &'a dyn BaseImages,
    ) -> Self {
        let build_platform = opts.build_platform.clone().unwrap_or_else(Platform::host);
        let platform = opts
            .platform
            .clone()
            .unwrap_or_else(|| build_platform.clone());
        Evaluator {
            ast,
            lines,
            opts,
            bases,
            lex: Lex::new(ast.escape),
            platform,
            build_platform,
            warnings: Vec::new(),
        }
    }

    fn warn(&mut self, rule: Rule, span: Span, msg: impl Into<String>) {
        self.warnings.push(Warning::new(rule, span, msg));
    }

    fn expand(&self, node: &Node, word: &str, env: &dyn Env) -> Result<String, Diagnostic> {
        self.lex
            .process_word(word, env)
            .map(|e| e.result)
            .map_err(|m| self.expand_err(node, word, m))
    }

    fn expand_err(&self, node: &Node, word: &str, msg: String) -> Diagnostic {
        let needle = word.find('$').map(|i| &word[i..]).unwrap_or(word);
        let needle = needle.split_whitespace().next().unwrap_or(needle);
        let d = Diagnostic::new(
            ErrorKind::Expansion,
            locate(self.lines, node, needle),
            msg.clone(),
        );
        if msg.contains("looking for matching") {
            d.with_hint("a quote is opened here and never closed")
        } else if msg.contains("bad substitution") || msg.contains("unsupported modifier") {
            d.with_hint("substitutions are ${VAR}, ${VAR:-default}, ${VAR:+alt}, ${VAR:?msg}, ${VAR#pat}, ${VAR%pat}, ${VAR/from/to}")
        } else {
            d
        }
    }

    fn run(mut self) -> Result<BuildGraph, Diagnostic> {
        let (meta, raw) = self.split_stages()?;
        let platform_env = platform_args(&self.platform, &self.build_platform);
        let (global_args, global_env) = self.global_args(&meta, platform_env)?;
        let mut stages = self.declare_stages(&raw, &global_env)?;
        self.resolve_references(&raw, &mut stages)?;
        check_cycles(&raw, &stages)?;
        let target = self.find_target(&stages)?;
        mark_needed(&mut stages, target);
        let order = build_order(&stages, target);
        for i in 0..stages.len() {
            if stages[i].needed {
                self.evaluate_stage(i, &raw, &mut stages, &global_args, &global_env)?;
            }
        }
        let unused_build_args = self.unused_build_args(&global_args, &stages);
        Ok(BuildGraph {
            syntax: None,
            escape: self.ast.escape,
            check: CheckConfig::default(),
            platform: self.platform.clone(),
            build_platform: self.build_platform.clone(),
            global_args,
            stages,
            target,
            order,
            warnings: std::mem::take(&mut self.warnings),
            unused_build_args,
        })
    }

    fn unused_build_args(&self, global_args: &[GlobalArg], stages: &[Stage]) -> Vec<String> {
        let platform_env = platform_args(&self.platform, &self.build_platform);
        let declared = |name: &str| {
            global_args.iter().any(|g| g.name == name)
                || stages.iter().flat_map(|s| &s.steps).any(|step| {
                    matches!(&step.instruction, Instruction::Arg { args } if args.iter().any(|a| a.name == name))
                })
        };
        self.opts
            .build_args
            .keys()
            .filter(|k| {
                !declared(k) && !PROXY_ARGS.contains(&k.as_str()) && platform_env.get(k).is_none()
            })
            .cloned()
            .collect()
    }

    /// Parses every node; ARGs before the first FROM are global.
    fn split_stages(&mut self) -> Result<(MetaArgs, Vec<RawStage>), Diagnostic> {
        let mut meta = Vec::new();
        let mut stages: Vec<RawStage> = Vec::new();
        for node in &self.ast.nodes {
            let parsed = parse_node(node, self.lines)?;
            self.lint_node(node, &parsed);
            match parsed {
                Parsed::From(from) => stages.push(RawStage {
                    from,
                    steps: Vec::new(),
                }),
                Parsed::Instruction(Instruction::Arg { args }) if stages.is_empty() => {
                    meta.push((node.clone(), args))
                }
                Parsed::Instruction(i) => match stages.last_mut() {
                    Some(s) => s.steps.push((node.clone(), i)),
                    None => {
                        return Err(Diagnostic::new(
                            ErrorKind::Stage,
                            node.span(),
                            format!(
                                "{} before the first FROM: no build stage in current context",
                                node.keyword.to_ascii_uppercase()
                            ),
                        )
                        .with_hint("only ARG may come before the first FROM"))
                    }
                },
            }
        }
        if stages.is_empty() {
            let line = self.ast.nodes.last().map(|n| n.start_line).unwrap_or(1);
            return Err(Diagnostic::new(
                ErrorKind::Stage,
                Span::line(line),
                "dockerfile contains no stages to build",
            )
            .with_hint("add a FROM instruction"));
        }
        Ok((meta, stages))
    }

    fn lint_node(&mut self, node: &Node, parsed: &Parsed) {
        let kw = node.keyword.as_str();
        match parsed {
            Parsed::From(f) => {
                if let (Some(as_kw), Some(name)) = (&f.as_keyword, &f.name_as_written) {
                    let upper = |s: &str| s.chars().any(char::is_alphabetic) && s == s.to_ascii_uppercase();
                    if upper(kw) != upper(as_kw) {
                        self.warn(Rule::FromAsCasing, locate(self.lines, node, as_kw), format!("'{as_kw}' and '{kw}' keywords' casing do not match"));
                    }
                    if name != &name.to_ascii_lowercase() {
                        self.warn(Rule::StageNameCasing, locate(self.lines, node, name), format!("Stage name '{name}' should be lowercase"));
                    }
                    if matches!(name.to_ascii_lowercase().as_str(), "scratch" | "context") {
                        self.warn(Rule::ReservedStageName, locate(self.lines, node, name), format!("'{name}' is reserved and should not be used as a stage name"));
                    }
                }
            }
            Parsed::Instruction(Instruction::Maintainer { .. }) => {
                self.warn(Rule::MaintainerDeprecated, node.span(), "Maintainer instruction is deprecated in favor of using label")
            }
            Parsed::Instruction(Instruction::Cmd(c) | Instruction::Entrypoint(c)) if c.shell_form && !c.args.is_empty() => {
                self.warn(Rule::JSONArgsRecommended, node.span(), format!("JSON arguments recommended for {} to prevent unintended behavior related to OS signals", kw.to_ascii_uppercase()))
            }
            Parsed::Instruction(Instruction::Env { .. } | Instruction::Label { .. }) => {
                if let crate::parser::Args::KeyValues(_, true) = node.args {
                    self.warn(Rule::LegacyKeyValueFormat, node.span(), format!("\"{} key=value\" should be used instead of legacy \"{} key value\" format", kw.to_ascii_uppercase(), kw.to_ascii_uppercase()))
                }
            }
            _ => {}
        }
    }

    fn global_args(
        &mut self,
        meta: &[(Node, Vec<ArgDecl>)],
        mut env: EnvList,
    ) -> Result<(Vec<GlobalArg>, EnvList), Diagnostic> {
        let mut out = Vec::new();
        for (node, args) in meta {
            for a in args {
                let value = match (self.opts.build_args.get(&a.name), &a.default) {
                    (Some(v), _) => Some(v.clone()),
                    (None, Some(d)) => Some(self.expand(node, d, &env)?),
                    (None, None) => None,
                };
                if let Some(v) = &value {
                    env.set(&a.name, v);
                }
                out.push(GlobalArg {
                    name: a.name.clone(),
                    value,
                });
            }
        }
        Ok((out, env))
    }

    fn declare_stages(
        &mut self,
        raw: &[RawStage],
        global_env: &EnvList,
    ) -> Result<Vec<Stage>, Diagnostic> {
        let mut stages: Vec<Stage> = Vec::new();
        let mut by_name: BTreeMap<String, usize> = BTreeMap::new();
        for (index, rs) in raw.iter().enumerate() {
            let f = &rs.from;
            let node = self.node_at(f.span.line);
            let ex = self
                .lex
                .process_word(&f.base, global_env)
                .map_err(|m| self.expand_err(&node, &f.base, m))?;
            for var in &ex.unmatched {
                self.warn(
                    Rule::UndefinedArgInFrom,
                    locate(self.lines, &node, var),
                    format!("FROM argument '{var}' is not declared"),
                );
            }
            let base_name = ex.result;
            if base_name.is_empty() {
                return Err(Diagnostic::new(ErrorKind::Stage, f.span, format!("base name ({}) should not be blank", f.base))
                    .with_hint("declare the variable with a default in an ARG before the first FROM, or pass --build-arg"));
            }
            let platform = match &f.platform {
                None => None,
                Some(p) => Some(self.stage_platform(&node, p, global_env)?),
            };
            let base = if let Some(&i) = by_name.get(&base_name) {
                Base::Stage { index: i }
            } else if base_name == "scratch" {
                Base::Scratch
            } else {
                check_reference(&base_name).map_err(|m| {
                    Diagnostic::new(
                        ErrorKind::Stage,
                        locate(self.lines, &node, &f.base),
                        format!("invalid base image reference {base_name:?}: {m}"),
                    )
                })?;
                Base::Image {
                    reference: base_name,
                }
            };
            if let Some(name) = &f.name {
                if by_name.contains_key(name) {
                    self.warn(
                        Rule::DuplicateStageName,
                        locate(
                            self.lines,
                            &node,
                            f.name_as_written.as_deref().unwrap_or(name),
                        ),
                        format!("Duplicate stage name {name:?}, stage names should be unique"),
                    );
                }
                by_name.insert(name.clone(), index);
            }
            stages.push(Stage {
                index,
                name: f.name.clone(),
                base,
                platform,
                line: f.span.line,
                needed: false,
                depends_on: vec![],
                images: vec![],
                steps: vec![],
                config: None,
                args: EnvList::default(),
            });
        }
        Ok(stages)
    }

    fn stage_platform(
        &self,
        node: &Node,
        p: &str,
        global_env: &EnvList,
    ) -> Result<Platform, Diagnostic> {
        let value = self.expand(node, p, global_env)?;
        let span = locate(self.lines, node, p);
        if value.is_empty() {
            return Err(Diagnostic::new(ErrorKind::Flag, span, format!("empty platform value from expression {p}"))
                .with_hint("the variables in --platform come from global ARGs and BUILDPLATFORM/TARGETPLATFORM"));
        }
        Platform::parse(&value).map_err(|m| {
            Diagnostic::new(
                ErrorKind::Flag,
                span,
                format!("failed to parse platform {p}: {m}"),
            )
        })
    }

    fn node_at(&self, line: usize) -> Node {
        self.ast
            .nodes
            .iter()
            .find(|n| n.start_line == line)
            .cloned()
            .unwrap_or_else(|| self.ast.nodes[0].clone())
    }

    fn resolve_references(&self, raw: &[RawStage], stages: &mut [Stage]) -> Result<(), Diagnostic> {
        let names: BTreeMap<String, usize> = stages
            .iter()
            .filter_map(|s| s.name.clone().map(|n| (n, s.index)))
            .collect();
        for (i, rs) in raw.iter().enumerate() {
            for (node, instr) in &rs.steps {
                for (from, needle) in references(instr) {
                    let target = if let Ok(n) = from.parse::<i64>() {
                        if n < 0 || n as usize >= stages.len() {
                            return Err(Diagnostic::new(
                                ErrorKind::Stage,
                                locate(self.lines, node, &needle),
                                format!("invalid stage index {n}"),
                            )
                            .with_hint(format!(
                                "this Dockerfile has stages 0 to {}",
                                stages.len() - 1
                            )));
                        }
                        Some(n as usize)
                    } else {
                        names.get(&from.to_ascii_lowercase()).copied()
                    };
                    match target {
                        Some(t) if !stages[i].depends_on.contains(&t) => {
                            stages[i].depends_on.push(t)
                        }
                        Some(_) => {}
                        None if !stages[i].images.contains(&from) => stages[i].images.push(from),
                        None => {}
                    }
                }
            }
        }
        Ok(())
    }

    fn find_target(&self, stages: &[Stage]) -> Result<usize, Diagnostic> {
        let Some(t) = &self.opts.target else {
            return Ok(stages.len() - 1);
        };
        let lower = t.to_ascii_lowercase();
        if let Some(s) = stages
            .iter()
            .rev()
            .find(|s| s.name.as_deref() == Some(lower.as_str()))
        {
            return Ok(s.index);
        }
        let names: Vec<&str> = stages.iter().filter_map(|s| s.name.as_deref()).collect();
        let d = Diagnostic::new(
            ErrorKind::Stage,
            Span::line(stages[stages.len() - 1].line),
            format!("target stage {t:?} could not be found"),
        );
        Err(match suggest(t, names.iter().copied()) {
            Some(s) => d.with_hint(format!("did you mean {s:?}?")),
            None if names.is_empty() => {
                d.with_hint("no stage is named; name one with FROM IMAGE AS NAME")
            }
            None => d.with_hint(format!("stages are named: {}", names.join(", "))),
        })
    }

    fn evaluate_stage(
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

/// `COPY --from` and `RUN --mount from=` values of an instruction, with the
/// text to point at.
fn references(instr: &Instruction) -> Vec<(String, String)> {
    match instr {
        Instruction::Copy(c) => c
            .from
            .iter()
            .map(|f| (f.clone(), format!("--from={f}")))
            .collect(),
        Instruction::Run(r) => r
            .mount_specs
            .iter()
            .flat_map(|spec| {
                spec.split(',')
                    .filter_map(|f| f.split_once('='))
                    .filter(|(k, _)| k.eq_ignore_ascii_case("from"))
                    .map(|(_, v)| (v.to_string(), format!("from={v}")))
                    .collect::<Vec<_>>()
            })
            .collect(),
        _ => vec![],
    }
}

fn check_cycles(raw: &[RawStage], stages: &[Stage]) -> Result<(), Diagnostic> {
    fn visit(
        i: usize,
        stages: &[Stage],
        path: &mut Vec<usize>,
        done: &mut BTreeSet<usize>,
    ) -> Option<Vec<usize>> {
        if done.contains(&i) {
            return None;
        }
        if let Some(pos) = path.iter().position(|&p| p == i) {
            return Some(path[pos..].to_vec());
        }
        path.push(i);
        for &d in &stages[i].depends_on {
            if let Some(c) = visit(d, stages, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(i);
        None
    }
    let mut done = BTreeSet::new();
    for i in 0..stages.len() {
        if let Some(cycle) = visit(i, stages, &mut Vec::new(), &mut done) {
            let name = |s: usize| {
                stages[s]
                    .name
                    .clone()
                    .unwrap_or_else(|| format!("stage-{s}"))
            };
            let first = cycle[0];
            let chain: Vec<String> = cycle
                .iter()
                .chain(std::iter::once(&first))
                .map(|&s| name(s))
                .collect();
            return Err(Diagnostic::new(
                ErrorKind::Stage,
                raw[first].from.span,
                format!("circular dependency detected on stage: {}", name(first)),
            )
            .with_hint(format!(
                "the stages depend on each other: {}",
                chain.join(" -> ")
            )));
        }
    }
    Ok(())
}

fn mark_needed(stages: &mut [Stage], target: usize) {
    let mut todo = vec![target];
    while let Some(i) = todo.pop() {
        if stages[i].needed {
            continue;
        }
        stages[i].needed = true;
        if let Base::Stage { index } = stages[i].base {
            todo.push(index);
        }
        todo.extend(stages[i].depends_on.iter().copied());
    }
}

/// Needed stages, dependencies first, ties in file order.
fn build_order(stages: &[Stage], target: usize) -> Vec<usize> {
    fn visit(i: usize, stages: &[Stage], out: &mut Vec<usize>) {
        if out.contains(&i) {
            return;
        }
        let mut deps: Vec<usize> = stages[i].depends_on.clone();
        if let Base::Stage { index } = stages[i].base {
            deps.push(index);
        }
        deps.sort_unstable();
        for d in deps {
            visit(d, stages, out);
        }
        out.push(i);
    }
    let mut out = Vec::new();
    visit(target, stages, &mut out);
    out
}

fn is_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

/// Git sources as ADD accepts them: `git@host:repo`, `git://`, `ssh://`, or
/// an http(s) URL of a `.git` repository with an optional `#ref`.
fn is_git(s: &str) -> bool {
    let base = s.split('#').next().unwrap_or(s);
    s.starts_with("git@")
        || s.starts_with("git://")
        || s.starts_with("ssh://")
        || (is_url(s) && base.ends_with(".git"))
}

fn join_workdir(current: &str, requested: &str) -> String {
    let joined = if requested.starts_with('/') {
        requested.to_string()
    } else {
        format!("{current}/{requested}")
    };
    let mut parts: Vec<&str> = Vec::new();
    for p in joined.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

const SIGNALS: &[&str] = &[
    "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT", "KILL",
    "PIPE", "POLL", "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM", "TRAP", "TSTP",
    "TTIN", "TTOU", "URG", "USR1", "USR2", "VTALRM", "WINCH", "XCPU", "XFSZ",
];

fn check_signal(s: &str) -> Result<(), String> {
    if let Ok(n) = s.parse::<u32>() {
        return if n > 0 && n <= 64 {
            Ok(())
        } else {
            Err(format!("Invalid signal: {s}"))
        };
    }
    let name = s.strip_prefix("SIG").unwrap_or(s);
    if SIGNALS.contains(&name) || name.starts_with("RTMIN") || name.starts_with("RTMAX") {
        return Ok(());
    }
    let d = Err(format!("Invalid signal: {s}"));
    match suggest(name, SIGNALS.iter().copied()) {
        Some(sug) => Err(format!("Invalid signal: {s} (did you mean SIG{sug}?)")),
        None => d,
    }
}

/// The checks Docker's reference grammar makes on an image name.
fn check_reference(r: &str) -> Result<(), String> {
    let (name, digest) = match r.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (r, None),
    };
    if let Some(d) = digest {
        let Some((algo, hex)) = d.split_once(':') else {
            return Err("a digest reads like sha256:<64 hex digits>".into());
        };
        if algo.is_empty() || hex.len() < 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err("a digest reads like sha256:<64 hex digits>".into());
        }
    }
    let last_slash = name.rfind('/').map(|i| i + 1).unwrap_or(0);
    let (repo, tag) = match name[last_slash..].rfind(':') {
        Some(i) => (&name[..last_slash + i], Some(&name[last_slash + i + 1..])),
        None => (name, None),
    };
    if let Some(t) = tag {
        let ok = !t.is_empty()
            && t.len() <= 128
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
            && !t.starts_with(['.', '-']);
        if !ok {
            return Err(format!("invalid tag {t:?}"));
        }
    }
    if repo.is_empty() {
        return Err("repository name must not be empty".into());
    }
    let path = match repo.split_once('/') {
        Some((host, rest)) if host.contains(['.', ':']) || host == "localhost" => rest,
        _ => repo,
    };
    if path.chars().any(|c| c.is_ascii_uppercase()) {
        return Err("repository name must be lowercase".into());
    }
    let valid = path.split('/').all(|c| {
        !c.is_empty()
            && c.chars()
                .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || "._-".contains(ch))
            && c.starts_with(|ch: char| ch.is_ascii_alphanumeric())
            && c.ends_with(|ch: char| ch.is_ascii_alphanumeric())
    });
    if !valid {
        return Err("invalid reference format".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(text: &str) -> Result<BuildGraph, Diagnostic> {
        eval_with(text, &[], None)
    }

    fn eval_with(
        text: &str,
        args: &[(&str, &str)],
        target: Option<&str>,
    ) -> Result<BuildGraph, Diagnostic> {
        let opts = Options {
            build_args: args
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            target: target.map(str::to_string),
            platform: Some(Platform::parse("linux/arm64").unwrap()),
            build_platform: Some(Platform::parse("linux/amd64").unwrap()),
        };
        evaluate(text, &opts, &UnknownBases)
    }

    fn env_of(g: &BuildGraph, stage: usize) -> EnvList {
        g.stages[stage].config.clone().unwrap().env
    }

    fn run_env(g: &BuildGraph, stage: usize, step: usize) -> EnvList {
        g.stages[stage].steps[step].build_env.clone().unwrap()
    }

    #[test]
    fn env_sees_old_value_in_same_instruction() {
        let g = eval("FROM a\nENV a=1\nENV a=b c=$a\n").unwrap();
        let e = env_of(&g, 0);
        assert_eq!(e.get("a").as_deref(), Some("b"));
        assert_eq!(e.get("c").as_deref(), Some("1"));
    }

    #[test]
    fn arg_default_refers_to_earlier_arg() {
        let g = eval("FROM a\nARG V=1\nARG W=${V}.0\nRUN echo $W\n").unwrap();
        assert_eq!(run_env(&g, 0, 2).get("W").as_deref(), Some("1.0"));
    }

    #[test]
    fn global_arg_must_be_redeclared() {
        let g = eval("ARG V=1\nFROM a\nENV x=$V\nARG V\nENV y=$V\n").unwrap();
        let e = env_of(&g, 0);
        assert_eq!(e.get("x").as_deref(), Some(""));
        assert_eq!(e.get("y").as_deref(), Some("1"));
    }

    #[test]
    fn global_arg_in_from_and_build_arg_override() {
        let g = eval_with("ARG TAG=1\nFROM alpine:$TAG\n", &[("TAG", "2")], None).unwrap();
        assert_eq!(
            g.stages[0].base,
            Base::Image {
                reference: "alpine:2".into()
            }
        );
    }

    #[test]
    fn arg_after_env_wins_for_expansion_only() {
        let g = eval_with(
            "FROM a\nENV X=env\nARG X\nLABEL l=$X\n",
            &[("X", "arg")],
            None,
        )
        .unwrap();
        let cfg = g.stages[0].config.clone().unwrap();
        assert_eq!(cfg.labels.get("l").as_deref(), Some("arg"));
        assert_eq!(cfg.env.get("X").as_deref(), Some("env"));
    }

    #[test]
    fn from_stage_inherits_args() {
        let g = eval("FROM a AS base\nARG V=7\nFROM base\nRUN echo $V\n").unwrap();
        assert_eq!(run_env(&g, 1, 0).get("V").as_deref(), Some("7"));
    }

    #[test]
    fn platform_args() {
        let g = eval("FROM --platform=$BUILDPLATFORM a AS b\nARG TARGETARCH\nARG BUILDOS\nRUN x\n")
            .unwrap();
        assert_eq!(
            g.stages[0].platform.as_ref().unwrap().to_string(),
            "linux/amd64"
        );
        let e = run_env(&g, 0, 2);
        assert_eq!(e.get("TARGETARCH").as_deref(), Some("arm64"));
        assert_eq!(e.get("BUILDOS").as_deref(), Some("linux"));
    }

    #[test]
    fn undeclared_arg_is_empty() {
        let g = eval("FROM a\nWORKDIR /x$NOPE\n").unwrap();
        assert_eq!(g.stages[0].config.as_ref().unwrap().workdir, "/x");
    }

    #[test]
    fn workdir_relative() {
        let g = eval("FROM a\nWORKDIR /app\nWORKDIR src\nWORKDIR ../lib\n").unwrap();
        assert_eq!(g.stages[0].config.as_ref().unwrap().workdir, "/app/lib");
    }

    #[test]
    fn required_var_message() {
        let e = eval("FROM a\nRUN true\nENV x=\"${NEED:?set NEED please}\"\n").unwrap_err();
        assert_eq!(e.span.line, 3);
        assert!(e.message.contains("NEED: set NEED please"), "{}", e.message);
    }

    #[test]
    fn target_prunes_and_errors_only_when_needed() {
        let text = "FROM a AS one\nRUN true\nFROM b AS two\nENV x=${NEED:?boom}\nCOPY --from=three / /\nFROM c AS three\n";
        let g = eval_with(text, &[], Some("one")).unwrap();
        assert!(g.stages[0].needed && !g.stages[1].needed && !g.stages[2].needed);
        assert_eq!(g.order, vec![0]);
        assert!(eval_with(text, &[], Some("two")).is_err());
    }

    #[test]
    fn forward_copy_from_is_an_error_when_needed() {
        let e = eval("FROM a AS one\nCOPY --from=two /x /x\nFROM b AS two\n").err();
        assert!(e.is_none(), "stage one is not needed by the default target");
        let e = eval_with(
            "FROM a AS one\nCOPY --from=two /x /x\nFROM b AS two\n",
            &[],
            Some("one"),
        )
        .unwrap_err();
        assert!(
            e.message
                .contains("needs to be defined before current stage"),
            "{}",
            e.message
        );
    }

    #[test]
    fn index_out_of_range_everywhere() {
        let e = eval_with(
            "FROM a AS one\nFROM b AS two\nCOPY --from=5 / /\n",
            &[],
            Some("one"),
        )
        .unwrap_err();
        assert!(e.message.contains("invalid stage index 5"));
    }

    #[test]
    fn cycle() {
        let e = eval("FROM a AS s0\nCOPY --from=s0 a b\n").unwrap_err();
        assert!(e
            .message
            .contains("circular dependency detected on stage: s0"));
    }

    #[test]
    fn duplicate_stage_name_is_a_warning() {
        let g = eval("FROM a AS x\nFROM b AS x\nFROM x\n").unwrap();
        assert!(g
            .warnings
            .iter()
            .any(|w| w.rule == Rule::DuplicateStageName));
        assert_eq!(g.stages[2].base, Base::Stage { index: 1 });
    }

    #[test]
    fn instruction_before_from() {
        let e = eval("RUN x\nFROM a\n").unwrap_err();
        assert!(e.message.contains("no build stage"));
    }

    #[test]
    fn heredoc_copy_expands_unless_quoted() {
        let g = eval("FROM a\nENV N=kiln\nCOPY <<A <<\"B\" /d/\n$N\nA\n$N\nB\n").unwrap();
        let Instruction::Copy(crate::instructions::Copy { files: c, .. }) =
            &g.stages[0].steps[1].instruction
        else {
            panic!()
        };
        assert_eq!(c.inline[0].content, "kiln\n");
        assert_eq!(c.inline[1].content, "$N\n");
    }

    #[test]
    fn unused_build_args_are_reported() {
        let g = eval_with(
            "ARG G\nFROM a\nARG S\n",
            &[("G", "1"), ("S", "2"), ("NOPE", "3"), ("HTTP_PROXY", "p")],
            None,
        )
        .unwrap();
        assert_eq!(g.unused_build_args, vec!["NOPE"]);
    }

    #[test]
    fn proxy_args_reach_run_without_declaration() {
        let g = eval_with("FROM a\nRUN x\n", &[("HTTP_PROXY", "http://p:3128")], None).unwrap();
        assert_eq!(
            run_env(&g, 0, 0).get("HTTP_PROXY").as_deref(),
            Some("http://p:3128")
        );
        assert!(env_of(&g, 0).get("HTTP_PROXY").is_none());
    }

    #[test]
    fn expose_ports() {
        let g = eval("FROM a\nARG P=8080\nEXPOSE 80 $P/udp 9000-9001\n").unwrap();
        let cfg = g.stages[0].config.as_ref().unwrap();
        assert_eq!(
            cfg.exposed_ports,
            vec!["80/tcp", "8080/udp", "9000/tcp", "9001/tcp"]
        );
        assert!(eval("FROM a\nEXPOSE 80/xyz\n").is_err());
    }

    #[test]
    fn entrypoint_resets_cmd_from_base() {
        let g = eval("FROM a AS b\nCMD [\"x\"]\nFROM b\nENTRYPOINT [\"y\"]\n").unwrap();
        let cfg = g.stages[1].config.as_ref().unwrap();
        assert_eq!(cfg.cmd, None);
        assert_eq!(cfg.entrypoint, Some(vec!["y".into()]));
    }

    #[test]
    fn check_error_directive() {
        let e = eval("# check=error=true\nFROM a\nMAINTAINER me\n").unwrap_err();
        assert_eq!(e.kind, ErrorKind::Lint);
        let g =
            eval("# check=skip=MaintainerDeprecated;error=true\nFROM a\nMAINTAINER me\n").unwrap();
        assert!(g.warnings.is_empty());
    }

    #[test]
    fn references() {
        assert!(check_reference("docker.io/library/debian:bookworm").is_ok());
        assert!(check_reference("localhost:5000/a/b@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef").is_ok());
        assert!(check_reference("Debian").is_err());
        assert!(check_reference("debian:").is_err());
    }
}
