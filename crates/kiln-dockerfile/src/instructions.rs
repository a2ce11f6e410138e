//! Nodes to typed instructions: per-instruction flags, argument counts and
//! forms, as BuildKit's `instructions` package checks them. Values are still
//! unexpanded here; [`crate::eval`] expands them.

use serde::Serialize;

use crate::error::{suggest, Diagnostic, ErrorKind, Span};
use crate::parser::{chomp_heredoc, parse_heredoc, Args, Heredoc, Node};

/// Every instruction of the Dockerfile reference.
pub const INSTRUCTIONS: &[&str] = &[
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

/// A command line of RUN, CMD, ENTRYPOINT or HEALTHCHECK.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommandLine {
    /// One string in shell form, the argv in exec form.
    pub args: Vec<String>,
    /// True in shell form: the stage's SHELL is prepended when it runs.
    pub shell_form: bool,
    /// Heredocs written with the command (RUN only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub heredocs: Vec<InlineFile>,
}

/// Content written inline with a heredoc.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InlineFile {
    /// The heredoc's delimiter; for COPY and ADD the file name.
    pub name: String,
    pub content: String,
    /// Whether variables in the content are still to be expanded (unquoted
    /// delimiter). COPY and ADD contents are expanded during evaluation, after
    /// which this is false.
    pub expand: bool,
    #[serde(skip_serializing_if = "is_zero")]
    pub fd: u32,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
}

/// One name of an ARG instruction, with its default if it has one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArgDecl {
    pub name: String,
    pub default: Option<String>,
}

/// RUN `--network`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    #[default]
    Default,
    None,
    Host,
}

/// RUN `--security`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    #[default]
    Sandbox,
    Insecure,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Run {
    pub command: CommandLine,
    /// `--mount` values as written; parsed when the stage is evaluated.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<crate::mount::Mount>,
    #[serde(skip)]
    pub mount_specs: Vec<String>,
    pub network: Network,
    pub security: Security,
}

/// What COPY and ADD share: sources (paths, or heredocs written inline),
/// the destination and the ownership and filtering flags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Files {
    pub sources: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub inline: Vec<InlineFile>,
    pub dest: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chown: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chmod: Option<String>,
    pub link: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Copy {
    /// A stage (name or index) or an image to copy from instead of the context.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(flatten)]
    pub files: Files,
    pub parents: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Add {
    #[serde(flatten)]
    pub files: Files,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
    pub keep_git_dir: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unpack: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Healthcheck {
    /// `None` for `HEALTHCHECK NONE`.
    pub test: Option<CommandLine>,
    /// Durations in nanoseconds, as the image config stores them; 0 = default.
    pub interval: u64,
    pub timeout: u64,
    pub start_period: u64,
    pub start_interval: u64,
    pub retries: u32,
}

/// A port of EXPOSE.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Port {
    pub port: u16,
    pub protocol: String,
}

/// One instruction, typed. Strings are expanded once the stage is evaluated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "instruction", rename_all = "UPPERCASE")]
pub enum Instruction {
    Run(Run),
    Cmd(CommandLine),
    Entrypoint(CommandLine),
    Shell {
        shell: Vec<String>,
    },
    Env {
        pairs: Vec<KeyValue>,
    },
    Label {
        pairs: Vec<KeyValue>,
    },
    Maintainer {
        name: String,
    },
    Expose {
        #[serde(skip_serializing_if = "Vec::is_empty")]
        ports: Vec<Port>,
        #[serde(skip)]
        specs: Vec<String>,
    },
    Add(Add),
    Copy(Copy),
    Volume {
        paths: Vec<String>,
    },
    /// `USER user[:group]`; names are resolved against the image's
    /// /etc/passwd and /etc/group when the build runs.
    User {
        user: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        group: Option<String>,
    },
    Workdir {
        path: String,
    },
    Arg {
        args: Vec<ArgDecl>,
    },
    Onbuild {
        trigger: String,
    },
    Stopsignal {
        signal: String,
    },
    Healthcheck(Healthcheck),
}

/// A FROM line: the start of a stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct From {
    pub base: String,
    pub name: Option<String>,
    pub platform: Option<String>,
    pub span: Span,
    /// The `AS` keyword and the name as written, for casing checks.
    pub as_keyword: Option<String>,
    pub name_as_written: Option<String>,
}

/// The typed form of one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    From(From),
    Instruction(Instruction),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum FlagType {
    Bool,
    String,
    Strings,
}

struct Flags<'a> {
    node: &'a Node,
    lines: &'a [&'a str],
    values: Vec<(&'static str, Vec<String>)>,
}

impl<'a> Flags<'a> {
    /// Parses the node's flags against the ones the instruction accepts
    /// (BuildKit's BFlags: unknown, duplicate and malformed flags are errors).
    fn parse(
        node: &'a Node,
        lines: &'a [&'a str],
        defs: &[(&'static str, FlagType)],
    ) -> Result<Self, Diagnostic> {
        let mut values: Vec<(&'static str, Vec<String>)> = Vec::new();
        for raw in &node.flags {
            let span = locate(lines, node, raw);
            let err = |msg: String| Diagnostic::new(ErrorKind::Flag, span, msg);
            let Some(body) = raw.strip_prefix("--") else {
                return Err(err(format!("arg should start with -- : {raw}")));
            };
            if body.is_empty() {
                return Ok(Flags {
                    node,
                    lines,
                    values,
                });
            }
            let (name, value) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (body, None),
            };
            let Some(&(def_name, ty)) = defs.iter().find(|(n, _)| *n == name) else {
                return Err(unknown_flag(node, name, defs, span));
            };
            let seen = values.iter().position(|(n, _)| *n == def_name);
            if seen.is_some() && ty != FlagType::Strings {
                return Err(err(format!("duplicate flag specified: {name}")));
            }
            let value = match (ty, value) {
                (FlagType::Bool, None) => "true".to_string(),
                (FlagType::Bool, Some("")) => {
                    return Err(err(format!("missing a value on flag: {name}")))
                }
                (FlagType::Bool, Some(v)) => match v.to_ascii_lowercase().as_str() {
                    b @ ("true" | "false") => b.to_string(),
                    _ => {
                        return Err(err(format!(
                            "expecting boolean value for flag {name}, not: {v}"
                        )))
                    }
                },
                (_, None) => {
                    return Err(err(format!("missing a value on flag: {name}"))
                        .with_hint(format!("write it as --{name}=VALUE")))
                }
                (_, Some(v)) => v.to_string(),
            };
            match seen {
                Some(i) => values[i].1.push(value),
                None => values.push((def_name, vec![value])),
            }
        }
        Ok(Flags {
            node,
            lines,
            values,
        })
    }

    fn string(&self, name: &str) -> Option<String> {
        self.values
            .iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| v.last().cloned())
    }

    fn strings(&self, name: &str) -> Vec<String> {
        self.values
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    }

    fn bool(&self, name: &str) -> bool {
        self.string(name).as_deref() == Some("true")
    }

    fn opt_bool(&self, name: &str) -> Option<bool> {
        self.string(name).map(|v| v == "true")
    }

    fn span_of(&self, needle: &str) -> Span {
        locate(self.lines, self.node, needle)
    }
}

fn unknown_flag(
    node: &Node,
    name: &str,
    defs: &[(&'static str, FlagType)],
    span: Span,
) -> Diagnostic {
    let d = Diagnostic::new(ErrorKind::Flag, span, format!("unknown flag: {name}"));
    let instr = node.keyword.to_ascii_uppercase();
    if let Some(s) = suggest(name, defs.iter().map(|(n, _)| *n)) {
        return d.with_hint(format!("did you mean --{s}?"));
    }
    if defs.is_empty() {
        return d.with_hint(format!("{instr} takes no flags"));
    }
    let all: Vec<String> = defs.iter().map(|(n, _)| format!("--{n}")).collect();
    d.with_hint(format!("{instr} accepts {}", all.join(", ")))
}

/// Finds `needle` in the node's source lines, for a caret under it.
pub fn locate(lines: &[&str], node: &Node, needle: &str) -> Span {
    for line_no in node.start_line..=node.end_line.max(node.start_line) {
        let Some(text) = lines.get(line_no - 1) else {
            break;
        };
        let from = if line_no == node.start_line {
            node.column - 1
        } else {
            0
        };
        if let Some(pos) = text.get(from..).and_then(|t| t.find(needle)) {
            let col = text[..from + pos].chars().count() + 1;
            return Span::new(line_no, col, needle.chars().count().max(1));
        }
    }
    node.span()
}

fn args_err(node: &Node, msg: impl Into<String>) -> Diagnostic {
    Diagnostic::new(ErrorKind::Arguments, node.span(), msg)
}

/// Checks one node and returns its typed form.
pub fn parse_node(node: &Node, lines: &[&str]) -> Result<Parsed, Diagnostic> {
    let name = node.name();
    let i = match name.as_str() {
        "from" => return parse_from(node, lines).map(Parsed::From),
        "run" => parse_run(node, lines)?,
        "cmd" | "entrypoint" => {
            Flags::parse(node, lines, &[])?;
            let cmd = command_line(node);
            if name == "cmd" {
                Instruction::Cmd(cmd)
            } else {
                Instruction::Entrypoint(cmd)
            }
        }
        "shell" => {
            Flags::parse(node, lines, &[])?;
            if !node.is_json() {
                return Err(
                    args_err(node, "SHELL requires the arguments to be in JSON form")
                        .with_hint("write it as SHELL [\"/bin/bash\", \"-c\"]"),
                );
            }
            if node.words().is_empty() {
                return Err(args_err(node, "SHELL requires at least one argument"));
            }
            Instruction::Shell {
                shell: node.words().to_vec(),
            }
        }
        "env" | "label" => {
            Flags::parse(node, lines, &[])?;
            let pairs = key_values(node)?;
            if name == "env" {
                Instruction::Env { pairs }
            } else {
                Instruction::Label { pairs }
            }
        }
        "maintainer" => {
            Flags::parse(node, lines, &[])?;
            Instruction::Maintainer {
                name: exactly_one(node)?,
            }
        }
        "expose" => {
            Flags::parse(node, lines, &[])?;
            at_least_one(node)?;
            Instruction::Expose {
                ports: vec![],
                specs: node.words().to_vec(),
            }
        }
        "add" => parse_add(node, lines)?,
        "copy" => parse_copy(node, lines)?,
        "volume" => {
            Flags::parse(node, lines, &[])?;
            at_least_one(node)?;
            Instruction::Volume {
                paths: node.words().to_vec(),
            }
        }
        "user" => {
            Flags::parse(node, lines, &[])?;
            Instruction::User {
                user: exactly_one(node)?,
                group: None,
            }
        }
        "workdir" => {
            Flags::parse(node, lines, &[])?;
            Instruction::Workdir {
                path: exactly_one(node)?,
            }
        }
        "arg" => parse_arg(node, lines)?,
        "onbuild" => parse_onbuild(node, lines)?,
        "stopsignal" => {
            Flags::parse(node, lines, &[])?;
            Instruction::Stopsignal {
                signal: exactly_one(node)?,
            }
        }
        "healthcheck" => parse_healthcheck(node, lines)?,
        _ => return Err(unknown_instruction(node)),
    };
    Ok(Parsed::Instruction(i))
}

fn unknown_instruction(node: &Node) -> Diagnostic {
    let d = Diagnostic::new(
        ErrorKind::UnknownInstruction,
        node.span(),
        format!("unknown instruction: {}", node.keyword),
    );
    match suggest(&node.keyword, INSTRUCTIONS.iter().copied()) {
        Some(s) => d.with_hint(format!("did you mean {s}?")),
        None => d.with_hint("instructions are ".to_string() + &INSTRUCTIONS.join(", ")),
    }
}

fn at_least_one(node: &Node) -> Result<(), Diagnostic> {
    if node.words().is_empty() {
        return Err(args_err(
            node,
            format!(
                "{} requires at least one argument",
                node.keyword.to_ascii_uppercase()
            ),
        ));
    }
    Ok(())
}

fn exactly_one(node: &Node) -> Result<String, Diagnostic> {
    match node.words() {
        [one] => Ok(one.clone()),
        _ => Err(args_err(
            node,
            format!(
                "{} requires exactly one argument",
                node.keyword.to_ascii_uppercase()
            ),
        )),
    }
}

fn key_values(node: &Node) -> Result<Vec<KeyValue>, Diagnostic> {
    let instr = node.keyword.to_ascii_uppercase();
    let Args::KeyValues(pairs, _) = &node.args else {
        return Err(args_err(
            node,
            format!("{instr} requires at least one argument"),
        ));
    };
    if pairs.is_empty() {
        return Err(args_err(
            node,
            format!("{instr} requires at least one argument"),
        ));
    }
    if pairs.iter().any(|(k, _)| k.is_empty()) {
        return Err(args_err(node, format!("{instr} names can not be blank")));
    }
    Ok(pairs
        .iter()
        .map(|(k, v)| KeyValue {
            key: k.clone(),
            value: v.clone(),
        })
        .collect())
}

fn inline_files(heredocs: &[Heredoc]) -> Vec<InlineFile> {
    heredocs
        .iter()
        .map(|h| InlineFile {
            name: h.name.clone(),
            content: if h.chomp {
                chomp_heredoc(&h.content)
            } else {
                h.content.clone()
            },
            expand: h.expand,
            fd: h.fd,
        })
        .collect()
}

fn command_line(node: &Node) -> CommandLine {
    let words = match &node.args {
        Args::Health { cmd, .. } => cmd.as_slice(),
        _ => node.words(),
    };
    let json = node.is_json();
    let args = if json || words.is_empty() {
        words.to_vec()
    } else {
        vec![words.join(" ")]
    };
    CommandLine {
        args,
        shell_form: !json,
        heredocs: vec![],
    }
}

fn parse_from(node: &Node, lines: &[&str]) -> Result<From, Diagnostic> {
    let words = node.words();
    let (name, as_kw, name_written) = match words {
        [_, kw, name] if kw.eq_ignore_ascii_case("as") => {
            let lower = name.to_ascii_lowercase();
            if !valid_stage_name(&lower) {
                return Err(Diagnostic::new(
                    ErrorKind::Stage,
                    locate(lines, node, name),
                    format!(
                        "invalid name for build stage: {name:?}, name can't start with a number or contain symbols"
                    ),
                )
                .with_hint("stage names match [a-z][a-z0-9-_.]* and are never expanded"));
            }
            (Some(lower), Some(kw.clone()), Some(name.clone()))
        }
        [_] => (None, None, None),
        _ => {
            return Err(
                args_err(node, "FROM requires either one or three arguments")
                    .with_hint("write FROM IMAGE or FROM IMAGE AS NAME"),
            )
        }
    };
    let flags = Flags::parse(node, lines, &[("platform", FlagType::String)])?;
    Ok(From {
        base: words[0].clone(),
        name,
        platform: flags.string("platform"),
        span: node.span(),
        as_keyword: as_kw,
        name_as_written: name_written,
    })
}

/// BuildKit's stage name rule: `^[a-z][a-z0-9-_.]*$`.
pub fn valid_stage_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some('a'..='z'))
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '-' | '_' | '.'))
}

fn parse_run(node: &Node, lines: &[&str]) -> Result<Instruction, Diagnostic> {
    let flags = Flags::parse(
        node,
        lines,
        &[
            ("mount", FlagType::Strings),
            ("network", FlagType::String),
            ("security", FlagType::String),
        ],
    )?;
    let network = match flags.string("network").as_deref() {
        None | Some("default") => Network::Default,
        Some("none") => Network::None,
        Some("host") => Network::Host,
        Some(other) => {
            return Err(Diagnostic::new(
                ErrorKind::Flag,
                flags.span_of(other),
                format!("unsupported network mode {other:?}"),
            )
            .with_hint("--network takes default, none or host"))
        }
    };
    let security = match flags.string("security").as_deref() {
        None | Some("sandbox") => Security::Sandbox,
        Some("insecure") => Security::Insecure,
        Some(other) => {
            return Err(Diagnostic::new(
                ErrorKind::Flag,
                flags.span_of(other),
                format!("unsupported security mode {other:?}"),
            )
            .with_hint("--security takes sandbox or insecure"))
        }
    };
    let mount_specs = flags.strings("mount");
    for spec in &mount_specs {
        crate::mount::check_unexpanded(spec)
            .map_err(|m| Diagnostic::new(ErrorKind::Flag, flags.span_of(spec), m))?;
    }
    let mut command = command_line(node);
    if command.args.is_empty() && !command.shell_form {
        // `RUN []` runs nothing; BuildKit accepts it too
    } else if command.args.iter().all(|a| a.trim().is_empty()) && command.shell_form {
        return Err(args_err(node, "RUN requires at least one argument")
            .with_hint("give the command to run, e.g. RUN apt-get update"));
    }
    command.heredocs = inline_files(&node.heredocs);
    Ok(Instruction::Run(Run {
        command,
        mounts: vec![],
        mount_specs,
        network,
        security,
    }))
}

/// Flags COPY and ADD both take.
const FILE_FLAGS: &[(&str, FlagType)] = &[
    ("chown", FlagType::String),
    ("chmod", FlagType::String),
    ("link", FlagType::Bool),
    ("exclude", FlagType::Strings),
];

/// Parses the flags (the shared ones plus `extra`) and the sources and
/// destination of COPY or ADD.
fn parse_files<'a>(
    node: &'a Node,
    lines: &'a [&'a str],
    instr: &str,
    extra: &[(&'static str, FlagType)],
) -> Result<(Flags<'a>, Files), Diagnostic> {
    let defs: Vec<(&'static str, FlagType)> = FILE_FLAGS.iter().chain(extra).copied().collect();
    let flags = Flags::parse(node, lines, &defs)?;
    let words = node.words();
    if words.len() < 2 {
        return Err(args_err(node, format!("{instr} requires at least two arguments, but only one was provided. Destination could not be determined"))
            .with_hint(format!("write {instr} SOURCE... DEST")));
    }
    let (srcs, dest) = words.split_at(words.len() - 1);
    let dest = dest[0].clone();
    if matches!(parse_heredoc(&dest), Ok(Some(_))) {
        return Err(args_err(
            node,
            format!("{instr} cannot accept a heredoc as a destination"),
        ));
    }
    let all_inline = inline_files(&node.heredocs);
    let mut sources = Vec::new();
    let mut inline = Vec::new();
    for src in srcs {
        match parse_heredoc(src) {
            Ok(Some(h)) => {
                let content = all_inline
                    .iter()
                    .find(|f| f.name == h.name)
                    .map(|f| f.content.clone());
                inline.push(InlineFile {
                    name: h.name,
                    content: content.unwrap_or_default(),
                    expand: h.expand,
                    fd: 0,
                });
            }
            _ => sources.push(src.clone()),
        }
    }
    let files = Files {
        sources,
        inline,
        dest,
        chown: flags.string("chown"),
        chmod: flags.string("chmod"),
        link: flags.bool("link"),
        exclude: flags.strings("exclude"),
    };
    Ok((flags, files))
}

fn parse_copy(node: &Node, lines: &[&str]) -> Result<Instruction, Diagnostic> {
    let extra = [("from", FlagType::String), ("parents", FlagType::Bool)];
    let (flags, files) = parse_files(node, lines, "COPY", &extra)?;
    let from = flags.string("from");
    if let Some(f) = from.as_ref().filter(|f| f.contains('$')) {
        return Err(Diagnostic::new(
            ErrorKind::Flag,
            flags.span_of(f),
            format!("COPY --from={f}: --from doesn't support variable expansion"),
        )
        .with_hint("define the stage with `FROM ${VAR} AS alias` and use --from=alias"));
    }
    let parents = flags.bool("parents");
    Ok(Instruction::Copy(Copy {
        from,
        files,
        parents,
    }))
}

fn parse_add(node: &Node, lines: &[&str]) -> Result<Instruction, Diagnostic> {
    let extra = [
        ("checksum", FlagType::String),
        ("keep-git-dir", FlagType::Bool),
        ("unpack", FlagType::Bool),
    ];
    let (flags, files) = parse_files(node, lines, "ADD", &extra)?;
    Ok(Instruction::Add(Add {
        files,
        checksum: flags.string("checksum"),
        keep_git_dir: flags.bool("keep-git-dir"),
        unpack: flags.opt_bool("unpack"),
    }))
}

fn parse_arg(node: &Node, lines: &[&str]) -> Result<Instruction, Diagnostic> {
    Flags::parse(node, lines, &[])?;
    at_least_one(node)?;
    let args = node
        .words()
        .iter()
        .map(|w| match w.split_once('=') {
            Some((k, v)) => ArgDecl {
                name: k.to_string(),
                default: Some(v.to_string()),
            },
            None => ArgDecl {
                name: w.clone(),
                default: None,
            },
        })
        .collect::<Vec<_>>();
    if args.iter().any(|a| a.name.is_empty()) {
        return Err(args_err(node, "ARG names can not be blank"));
    }
    Ok(Instruction::Arg { args })
}

fn parse_onbuild(node: &Node, lines: &[&str]) -> Result<Instruction, Diagnostic> {
    let Args::Sub(sub) = &node.args else {
        return Err(args_err(node, "ONBUILD requires at least one argument"));
    };
    Flags::parse(node, lines, &[])?;
    let trigger = sub.keyword.to_ascii_uppercase();
    match trigger.as_str() {
        "ONBUILD" => {
            return Err(args_err(
                node,
                "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed",
            ))
        }
        "MAINTAINER" | "FROM" => {
            return Err(args_err(
                node,
                format!("{trigger} isn't allowed as an ONBUILD trigger"),
            ))
        }
        _ => {}
    }
    let mut expr = strip_keyword(&node.original);
    for h in &node.heredocs {
        expr.push('\n');
        expr.push_str(&h.content);
        expr.push_str(&h.name);
    }
    Ok(Instruction::Onbuild { trigger: expr })
}

fn strip_keyword(original: &str) -> String {
    let t = original.trim_start();
    let rest = t.get(7..).unwrap_or("");
    rest.trim_start().to_string()
}

fn parse_healthcheck(node: &Node, lines: &[&str]) -> Result<Instruction, Diagnostic> {
    let flags = Flags::parse(
        node,
        lines,
        &[
            ("interval", FlagType::String),
            ("timeout", FlagType::String),
            ("start-period", FlagType::String),
            ("start-interval", FlagType::String),
            ("retries", FlagType::String),
        ],
    )?;
    let Args::Health { kind, cmd, .. } = &node.args else {
        return Err(args_err(node, "HEALTHCHECK requires at least one argument")
            .with_hint("write HEALTHCHECK NONE or HEALTHCHECK [OPTIONS] CMD command"));
    };
    let mut hc = Healthcheck {
        test: None,
        interval: 0,
        timeout: 0,
        start_period: 0,
        start_interval: 0,
        retries: 0,
    };
    match kind.to_ascii_uppercase().as_str() {
        "NONE" => {
            if !cmd.is_empty() {
                return Err(args_err(node, "HEALTHCHECK NONE takes no arguments"));
            }
            return Ok(Instruction::Healthcheck(hc));
        }
        "CMD" => {}
        other => {
            return Err(Diagnostic::new(
                ErrorKind::Arguments,
                locate(lines, node, kind),
                format!("Unknown type {other:?} in HEALTHCHECK (try CMD)"),
            ))
        }
    }
    if cmd.is_empty() {
        return Err(args_err(node, "Missing command after HEALTHCHECK CMD"));
    }
    for (name, slot) in [
        ("interval", &mut hc.interval),
        ("timeout", &mut hc.timeout),
        ("start-period", &mut hc.start_period),
        ("start-interval", &mut hc.start_interval),
    ] {
        if let Some(v) = flags.string(name) {
            *slot = health_duration(&v).map_err(|m| {
                Diagnostic::new(ErrorKind::Flag, flags.span_of(&v), format!("--{name}: {m}"))
                    .with_hint("durations read like 30s, 1m30s or 500ms")
            })?;
        }
    }
    if let Some(r) = flags.string("retries") {
        hc.retries = r.parse::<u32>().map_err(|_| {
            Diagnostic::new(
                ErrorKind::Flag,
                flags.span_of(&r),
                format!("--retries: invalid number {r:?}"),
            )
        })?;
    }
    hc.test = Some(command_line(node));
    Ok(Instruction::Healthcheck(hc))
}

fn health_duration(v: &str) -> Result<u64, String> {
    let ns = parse_go_duration(v)?;
    if ns == 0 {
        return Ok(0);
    }
    if ns < 1_000_000 {
        return Err(format!("interval {v:?} cannot be less than 1ms"));
    }
    Ok(ns)
}

/// Parses a Go `time.Duration` string (`1h30m`, `1.5s`, `300ms`) to nanoseconds.
pub fn parse_go_duration(s: &str) -> Result<u64, String> {
    if s == "0" {
        return Ok(0);
    }
    if s.is_empty() || s.starts_with('-') {
        return Err(format!("invalid duration {s:?}"));
    }
    let s = s.strip_prefix('+').unwrap_or(s);
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let num: f64 = rest[..num_len]
            .parse()
            .map_err(|_| format!("invalid duration {s:?}"))?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mult = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => return Err(format!("missing unit in duration {s:?}")),
            u => return Err(format!("unknown unit {u:?} in duration {s:?}")),
        };
        total += num * mult;
        rest = &rest[unit_len..];
    }
    Ok(total as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parser::parse;

    fn parsed(text: &str) -> Result<Parsed, Diagnostic> {
        let ast = parse(text).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        parse_node(ast.nodes.last().unwrap(), &lines)
    }

    fn instr(text: &str) -> Instruction {
        match parsed(text).unwrap() {
            Parsed::Instruction(i) => i,
            Parsed::From(_) => panic!("FROM"),
        }
    }

    #[test]
    fn unknown_flag_on_cmd() {
        let e = parsed("CMD --x [\"a\"]").unwrap_err();
        assert_eq!(e.message, "unknown flag: x");
        assert_eq!(e.span.column, 5);
        assert_eq!(e.hint.as_deref(), Some("CMD takes no flags"));
    }

    #[test]
    fn copy_flag_typo_suggests() {
        let e = parsed("COPY --chmodd=755 a b").unwrap_err();
        assert_eq!(e.hint.as_deref(), Some("did you mean --chmod?"));
    }

    #[test]
    fn unknown_instruction_suggests() {
        let e = parsed("FORM alpine").unwrap_err();
        assert_eq!(e.kind, ErrorKind::UnknownInstruction);
        assert_eq!(e.hint.as_deref(), Some("did you mean FROM?"));
    }

    #[test]
    fn from_stage_names() {
        let Parsed::From(f) = parsed("FROM alpine AS Builder").unwrap() else {
            panic!()
        };
        assert_eq!(f.name.as_deref(), Some("builder"));
        assert!(parsed("FROM alpine AS base-${X}").is_err());
        assert!(parsed("FROM alpine AS 1st").is_err());
        assert!(parsed("FROM alpine AS").is_err());
    }

    #[test]
    fn copy_heredoc_and_flags() {
        let Instruction::Copy(c) =
            instr("COPY --link --chmod=644 <<EOF /etc/motd\nhi $USER\nEOF\n")
        else {
            panic!()
        };
        assert!(c.files.link);
        assert_eq!(c.files.chmod.as_deref(), Some("644"));
        assert_eq!(c.files.inline[0].content, "hi $USER\n");
        assert_eq!(c.files.dest, "/etc/motd");
    }

    #[test]
    fn copy_from_variable_is_rejected() {
        let e = parsed("COPY --from=$STAGE /a /b").unwrap_err();
        assert!(e.message.contains("doesn't support variable expansion"));
    }

    #[test]
    fn healthcheck_options() {
        let Instruction::Healthcheck(h) =
            instr("HEALTHCHECK --interval=30s --retries=3 CMD curl -f http://localhost/")
        else {
            panic!()
        };
        assert_eq!(h.interval, 30_000_000_000);
        assert_eq!(h.retries, 3);
        assert_eq!(h.test.unwrap().args, vec!["curl -f http://localhost/"]);
        assert!(parsed("HEALTHCHECK NONE x").is_err());
        assert!(parsed("HEALTHCHECK --interval=1x CMD true").is_err());
    }

    #[test]
    fn shell_must_be_json() {
        assert!(parsed("SHELL /bin/bash -c").is_err());
        let Instruction::Shell { shell } = instr(r#"SHELL ["powershell", "-command"]"#) else {
            panic!()
        };
        assert_eq!(shell.len(), 2);
    }

    #[test]
    fn json_not_strings_is_an_error() {
        let text = "CMD [1, 2]";
        let e = parse(text).unwrap_err();
        assert!(e
            .message
            .contains("arrays must be comprised of strings only"));
    }

    #[test]
    fn cmd_empty_json_is_accepted() {
        let Instruction::Cmd(c) = instr("CMD []") else {
            panic!()
        };
        assert!(c.args.is_empty() && !c.shell_form);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_go_duration("1m30s"), Ok(90_000_000_000));
        assert_eq!(parse_go_duration("1.5s"), Ok(1_500_000_000));
        assert!(parse_go_duration("5").is_err());
    }
}

#[cfg(test)]
mod every_instruction {
    use super::*;
    use crate::parser::parse;

    /// One line per instruction of the reference, and the variant it becomes.
    #[test]
    fn each_instruction_has_its_typed_form() {
        let table: &[(&str, &str)] = &[
            ("ADD --link src /dst", "ADD"),
            ("ARG A B=1", "ARG"),
            ("CMD [\"a\"]", "CMD"),
            ("COPY --from=x a /b", "COPY"),
            ("ENTRYPOINT exec app", "ENTRYPOINT"),
            ("ENV A=1", "ENV"),
            ("EXPOSE 80/udp", "EXPOSE"),
            ("FROM a AS b", "FROM"),
            ("HEALTHCHECK NONE", "HEALTHCHECK"),
            ("LABEL a=b", "LABEL"),
            ("MAINTAINER me", "MAINTAINER"),
            ("ONBUILD RUN x", "ONBUILD"),
            ("RUN --network=none x", "RUN"),
            ("SHELL [\"sh\", \"-c\"]", "SHELL"),
            ("STOPSIGNAL 9", "STOPSIGNAL"),
            ("USER app:app", "USER"),
            ("VOLUME /v", "VOLUME"),
            ("WORKDIR /w", "WORKDIR"),
        ];
        assert_eq!(table.len(), INSTRUCTIONS.len());
        for (line, want) in table {
            let ast = parse(line).unwrap();
            let lines = [*line];
            let got = match parse_node(&ast.nodes[0], &lines).unwrap() {
                Parsed::From(_) => "FROM".to_string(),
                Parsed::Instruction(i) => serde_json::to_value(&i).unwrap()["instruction"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            };
            assert_eq!(&got, want, "{line}");
            // lowercase spelling is the same instruction
            let lower = line.replacen(want, &want.to_ascii_lowercase(), 1);
            assert!(
                parse_node(&parse(&lower).unwrap().nodes[0], &[lower.as_str()]).is_ok(),
                "{lower}"
            );
        }
    }
}
