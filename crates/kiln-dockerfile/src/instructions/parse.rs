//! Each instruction's checks: flags, argument count and form.

use super::flags::{locate, FlagType, Flags};
use super::*;
use crate::error::{suggest, Diagnostic, ErrorKind};
use crate::parser::{chomp_heredoc, parse_heredoc, Args, Heredoc, Node};

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
