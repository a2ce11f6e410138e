//! Typed instructions to an evaluated build graph: stages and their
//! dependencies, ARG scoping, variable expansion, `--target` pruning.
//!
//! The order of events is BuildKit's (`dockerfile2llb`): global ARGs are
//! evaluated first with the platform args; every FROM is expanded with them;
//! stage references are resolved over all stages and cycles rejected; then only
//! the stages the target needs are evaluated, in file order, so an error inside
//! an unneeded stage is never reported.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::{suggest, Diagnostic, ErrorKind, Span};
use crate::instructions::{
    locate, parse_node, ArgDecl, Files, From, InlineFile, Instruction, KeyValue, Parsed, Port, Run,
};
use crate::lint::{CheckConfig, Rule, Warning};
use crate::parser::{parse, Ast, Node};
use crate::platform::Platform;
use crate::shell::{Env, EnvList, Lex};

pub use crate::graph::*;

mod checks;
mod stage;
#[cfg(test)]
mod tests;

use checks::check_reference;

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
        // point at the unclosed quote, or else at the first substitution
        let quote = match msg {
            ref m if m.contains("double-quote") => word.find('"'),
            ref m if m.contains("single-quote") => word.find('\''),
            _ => None,
        };
        let start = quote.or_else(|| word.find('$')).unwrap_or(0);
        let needle = &word[start..];
        let needle = needle.split_whitespace().next().unwrap_or(needle);
        let span = locate(self.lines, node, needle);
        let d = Diagnostic::new(ErrorKind::Expansion, span, msg.clone());
        if quote.is_some() {
            d.with_hint(format!(
                "the quote opened on line {}, column {} is never closed",
                span.line, span.column
            ))
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
