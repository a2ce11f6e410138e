//! An evaluated graph back to text: each step as an equivalent Dockerfile
//! instruction whose variables are already expanded (and escaped so that
//! reading it again yields the same values), and a readable summary.

use std::fmt::Write;

use crate::eval::{Base, BuildGraph, Stage};
use crate::instructions::{CommandLine, Files, InlineFile, Instruction, KeyValue};
use crate::mount::{Mount, MountType, Sharing};

/// Escapes `s` so that expanding it with `escape` gives `s` back.
fn escaped(s: &str, escape: char) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c == escape || matches!(c, '$' | '\'' | '"') {
            out.push(escape);
        }
        out.push(c);
    }
    out
}

/// Escapes `s` for the inside of double quotes, where only `"`, `$` and the
/// escape character can be escaped.
fn dquoted(s: &str, escape: char) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        if c == escape || matches!(c, '$' | '"') {
            out.push(escape);
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// The whole-line argument of USER, WORKDIR, STOPSIGNAL (an empty value
/// must still be written).
fn single(s: &str, escape: char) -> String {
    // leading `--` would be read as a flag
    if s.trim().is_empty() || s.trim() != s || s.starts_with('-') {
        dquoted(s, escape)
    } else {
        escaped(s, escape)
    }
}

/// A word for key=value forms: quoted when it has anything but plain characters.
fn word(s: &str, escape: char) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./:,@+%".contains(c));
    if plain {
        s.to_string()
    } else {
        dquoted(s, escape)
    }
}

/// A flag value: read once by the flag splitter (quotes, backslashes), then expanded.
fn flag(name: &str, value: &str, escape: char) -> String {
    let plain = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./:,=@+%".contains(c));
    if plain {
        return format!("--{name}={value}");
    }
    let inner: String = escaped(value, escape)
        .chars()
        .flat_map(|c| {
            if c == '\\' || c == '"' {
                vec!['\\', c]
            } else {
                vec![c]
            }
        })
        .collect();
    format!("--{name}=\"{inner}\"")
}

/// Nanoseconds as a Go duration string that reads back to the same value.
fn duration(ns: u64) -> String {
    match ns {
        n if n % 1_000_000_000 == 0 => format!("{}s", n / 1_000_000_000),
        n if n % 1_000_000 == 0 => format!("{}ms", n / 1_000_000),
        n => format!("{n}ns"),
    }
}

fn json(words: &[String]) -> String {
    serde_json::to_string(words).unwrap_or_else(|_| "[]".into())
}

/// A JSON array whose strings expand to `words`.
fn json_expanded(words: &[String], escape: char) -> String {
    json(&words.iter().map(|w| escaped(w, escape)).collect::<Vec<_>>())
}

fn command(c: &CommandLine) -> String {
    if c.shell_form {
        c.args.join(" ")
    } else {
        json(&c.args)
    }
}

/// A command right after the instruction name, where a leading `--` would
/// be read as a flag: `--` ends the flags first.
fn command_after_keyword(c: &CommandLine) -> String {
    let text = command(c);
    if text.starts_with("--") {
        format!("-- {text}")
    } else {
        text
    }
}

fn heredoc_bodies(files: &[InlineFile]) -> String {
    files
        .iter()
        .map(|f| format!("\n{}{}", f.content, f.name))
        .collect()
}

fn csv_field(f: String) -> String {
    if f.contains([',', '"']) {
        format!("\"{}\"", f.replace('"', "\"\""))
    } else {
        f
    }
}

fn mount_spec(m: &Mount) -> String {
    let kind = match m.kind {
        MountType::Bind => "bind",
        MountType::Cache => "cache",
        MountType::Tmpfs => "tmpfs",
        MountType::Secret => "secret",
        MountType::Ssh => "ssh",
    };
    let mut fields = vec![format!("type={kind}")];
    let mut add = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            fields.push(csv_field(format!("{k}={v}")));
        }
    };
    add("id", m.id.clone());
    add("from", m.from.clone());
    add("source", m.source.clone());
    add("target", Some(m.target.clone()).filter(|t| !t.is_empty()));
    add("env", m.env.clone());
    add(
        "sharing",
        m.sharing.map(|s| match s {
            Sharing::Shared => "shared".to_string(),
            Sharing::Private => "private".to_string(),
            Sharing::Locked => "locked".to_string(),
        }),
    );
    add("size", m.size.map(|s| s.to_string()));
    add("mode", m.mode.map(|s| format!("{s:o}")));
    add("uid", m.uid.map(|s| s.to_string()));
    add("gid", m.gid.map(|s| s.to_string()));
    add("readonly", Some(m.readonly.to_string()));
    if m.required {
        add("required", Some("true".into()));
    }
    fields.join(",")
}

fn pairs(kw: &str, p: &[KeyValue], e: char) -> String {
    let body: Vec<String> = p
        .iter()
        .map(|kv| format!("{}={}", word(&kv.key, e), word(&kv.value, e)))
        .collect();
    format!("{kw} {}", body.join(" "))
}

/// One evaluated instruction as Dockerfile text (heredoc bodies included).
pub fn instruction(i: &Instruction, e: char) -> String {
    match i {
        Instruction::Run(r) => {
            let mut s = String::from("RUN");
            for m in &r.mounts {
                s.push_str(&format!(" {}", flag("mount", &mount_spec(m), e)));
            }
            if r.network != Default::default() {
                s.push_str(&format!(
                    " --network={}",
                    format!("{:?}", r.network).to_ascii_lowercase()
                ));
            }
            if r.security != Default::default() {
                s.push_str(&format!(
                    " --security={}",
                    format!("{:?}", r.security).to_ascii_lowercase()
                ));
            }
            format!(
                "{s} {}{}",
                command_after_keyword(&r.command),
                heredoc_bodies(&r.command.heredocs)
            )
        }
        Instruction::Cmd(c) => format!("CMD {}", command_after_keyword(c)),
        Instruction::Entrypoint(c) => format!("ENTRYPOINT {}", command_after_keyword(c)),
        Instruction::Shell { shell } => format!("SHELL {}", json(shell)),
        Instruction::Env { pairs: p } => pairs("ENV", p, e),
        Instruction::Label { pairs: p } => pairs("LABEL", p, e),
        Instruction::Maintainer { name } => format!("MAINTAINER {name}"),
        Instruction::Expose { ports, .. } => {
            let p: Vec<String> = ports
                .iter()
                .map(|p| format!("{}/{}", p.port, p.protocol))
                .collect();
            format!("EXPOSE {}", p.join(" "))
        }
        Instruction::Copy(c) => {
            let mut s = String::from("COPY");
            if let Some(from) = &c.from {
                s.push_str(&format!(" {}", flag("from", from, e)));
            }
            if c.parents {
                s.push_str(" --parents");
            }
            files(s, &c.files, e)
        }
        Instruction::Add(a) => {
            let mut s = String::from("ADD");
            if let Some(sum) = &a.checksum {
                s.push_str(&format!(" {}", flag("checksum", sum, e)));
            }
            if a.keep_git_dir {
                s.push_str(" --keep-git-dir");
            }
            if let Some(u) = a.unpack {
                s.push_str(&format!(" --unpack={u}"));
            }
            files(s, &a.files, e)
        }
        Instruction::Volume { paths } => format!("VOLUME {}", json_expanded(paths, e)),
        Instruction::User { user, group } => match group {
            Some(g) => format!("USER {}", single(&format!("{user}:{g}"), e)),
            None => format!("USER {}", single(user, e)),
        },
        Instruction::Workdir { path } => format!("WORKDIR {}", single(path, e)),
        Instruction::Arg { args } => {
            let a: Vec<String> = args
                .iter()
                .map(|a| match &a.default {
                    Some(v) => format!("{}={}", a.name, word(v, e)),
                    None => a.name.clone(),
                })
                .collect();
            format!("ARG {}", a.join(" "))
        }
        Instruction::Onbuild { trigger } => format!("ONBUILD {trigger}"),
        Instruction::Stopsignal { signal } => format!("STOPSIGNAL {}", single(signal, e)),
        Instruction::Healthcheck(h) => match &h.test {
            None => "HEALTHCHECK NONE".into(),
            Some(test) => {
                let mut s = String::from("HEALTHCHECK");
                for (k, v) in [
                    ("interval", h.interval),
                    ("timeout", h.timeout),
                    ("start-period", h.start_period),
                    ("start-interval", h.start_interval),
                ] {
                    if v > 0 {
                        s.push_str(&format!(" --{k}={}", duration(v)));
                    }
                }
                if h.retries > 0 {
                    s.push_str(&format!(" --retries={}", h.retries));
                }
                format!("{s} CMD {}", command(test))
            }
        },
    }
}

/// The shared flags, sources and destination of COPY and ADD after `head`.
fn files(mut s: String, f: &Files, e: char) -> String {
    for (k, v) in [("chown", &f.chown), ("chmod", &f.chmod)] {
        if let Some(v) = v {
            s.push_str(&format!(" {}", flag(k, v, e)));
        }
    }
    if f.link {
        s.push_str(" --link");
    }
    for x in &f.exclude {
        s.push_str(&format!(" {}", flag("exclude", x, e)));
    }
    if f.inline.is_empty() {
        let mut all = f.sources.clone();
        all.push(f.dest.clone());
        return format!("{s} {}", json_expanded(&all, e));
    }
    // heredoc sources cannot be written in JSON form; delimiters are quoted
    // because the content is already expanded
    for src in &f.sources {
        s.push_str(&format!(" {}", escaped(src, e)));
    }
    for i in &f.inline {
        s.push_str(&format!(" <<\"{}\"", i.name));
    }
    format!("{s} {}{}", escaped(&f.dest, e), heredoc_bodies(&f.inline))
}

fn from_line(g: &BuildGraph, st: &Stage) -> String {
    let mut s = String::from("FROM");
    if let Some(p) = &st.platform {
        s.push_str(&format!(" --platform={p}"));
    }
    let base = match &st.base {
        Base::Scratch => "scratch".to_string(),
        Base::Image { reference } => reference.clone(),
        Base::Stage { index } => g.stages[*index]
            .name
            .clone()
            .unwrap_or_else(|| index.to_string()),
    };
    s.push(' ');
    s.push_str(&base);
    if let Some(n) = &st.name {
        s.push_str(&format!(" AS {n}"));
    }
    s
}

impl BuildGraph {
    /// The graph as a Dockerfile with every value already expanded. Stages the
    /// target does not need are written as their FROM line only.
    pub fn to_dockerfile(&self) -> String {
        let e = self.escape;
        let mut out = String::new();
        if let Some(s) = &self.syntax {
            let _ = writeln!(out, "# syntax={s}");
        }
        if e != '\\' {
            let _ = writeln!(out, "# escape={e}");
        }
        if let Some(c) = self.check.directive() {
            let _ = writeln!(out, "# check={c}");
        }
        for a in &self.global_args {
            let _ = match &a.value {
                Some(v) => writeln!(out, "ARG {}={}", a.name, word(v, e)),
                None => writeln!(out, "ARG {}", a.name),
            };
        }
        for st in &self.stages {
            let _ = writeln!(out, "{}", from_line(self, st));
            // ONBUILD triggers run again when the printed file is read
            for step in st.steps.iter().filter(|s| !s.triggered) {
                let _ = writeln!(out, "{}", instruction(&step.instruction, e));
            }
        }
        out
    }

    /// A readable report: stages, dependencies, build order, each evaluated
    /// step with its line, the resulting config, and the warnings.
    pub fn describe(&self, file: &str) -> String {
        let mut out = String::new();
        let target = &self.stages[self.target];
        let _ = writeln!(
            out,
            "{file}: {} stage(s), target {} (line {}), platform {}",
            self.stages.len(),
            stage_label(target),
            target.line,
            self.platform
        );
        let order: Vec<String> = self
            .order
            .iter()
            .map(|&i| stage_label(&self.stages[i]))
            .collect();
        let _ = writeln!(out, "build order: {}", order.join(" -> "));
        if let Some(s) = &self.syntax {
            let builtin = if crate::is_builtin_syntax(s) {
                "built-in frontend"
            } else {
                "not built in: kiln uses its own frontend"
            };
            let _ = writeln!(out, "syntax: {s} ({builtin})");
        }
        for a in &self.global_args {
            let _ = writeln!(
                out,
                "global ARG {}={}",
                a.name,
                a.value.as_deref().unwrap_or("<unset>")
            );
        }
        for st in &self.stages {
            self.describe_stage(&mut out, st);
        }
        if !self.unused_build_args.is_empty() {
            let _ = writeln!(
                out,
                "warning: build arguments not consumed by any ARG: {}",
                self.unused_build_args.join(", ")
            );
        }
        for w in &self.warnings {
            let _ = writeln!(
                out,
                "warning: {file}:{}:{}: {}: {}",
                w.span.line,
                w.span.column,
                w.rule.name(),
                w.message
            );
        }
        out
    }

    fn describe_stage(&self, out: &mut String, st: &Stage) {
        let _ = writeln!(
            out,
            "\nstage {} (line {}): {}",
            stage_label(st),
            st.line,
            from_line(self, st)
        );
        if !st.needed {
            let _ = writeln!(out, "  skipped: the target does not need it");
            return;
        }
        let deps: Vec<String> = st
            .depends_on
            .iter()
            .map(|&d| stage_label(&self.stages[d]))
            .chain(st.images.iter().map(|i| format!("image {i}")))
            .collect();
        if !deps.is_empty() {
            let _ = writeln!(out, "  uses: {}", deps.join(", "));
        }
        for step in &st.steps {
            let text = instruction(&step.instruction, self.escape);
            let mut lines = text.lines();
            let mark = if step.triggered {
                "  (ONBUILD trigger)"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "  {:>4}  {}{mark}",
                step.line,
                lines.next().unwrap_or("")
            );
            for l in lines {
                let _ = writeln!(out, "        {l}");
            }
        }
        if let Some(c) = &st.config {
            let env: Vec<String> = c.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let _ = writeln!(
                out,
                "  config: workdir={} user={} env=[{}]",
                c.workdir,
                if c.user.is_empty() { "<base>" } else { &c.user },
                env.join(", ")
            );
            if let Some(ep) = &c.entrypoint {
                let _ = writeln!(out, "  entrypoint: {}", json(ep));
            }
            if let Some(cmd) = &c.cmd {
                let _ = writeln!(out, "  cmd: {}", json(cmd));
            }
        }
    }
}

fn stage_label(st: &Stage) -> String {
    match &st.name {
        Some(n) => format!("{} {n:?}", st.index),
        None => st.index.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use crate::{evaluate, Options, UnknownBases};

    /// Prints the evaluated file and checks that it evaluates to the same steps.
    fn reprints(text: &str) -> String {
        let g = evaluate(text, &Options::default(), &UnknownBases).unwrap();
        let printed = g.to_dockerfile();
        let again = evaluate(&printed, &Options::default(), &UnknownBases).unwrap();
        let steps = |g: &crate::BuildGraph| {
            g.stages
                .iter()
                .map(|s| {
                    s.steps
                        .iter()
                        .map(|st| st.instruction.clone())
                        .collect::<Vec<_>>()
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(steps(&g), steps(&again), "printed:\n{printed}");
        printed
    }

    #[test]
    fn user_that_looks_like_a_flag_end() {
        assert!(reprints("FROM a\nUSER \"--\"\n").contains("USER \"--\""));
    }

    #[test]
    fn command_that_starts_with_dashes() {
        assert!(reprints("FROM a\nRUN -- --x\n").contains("RUN -- --x"));
    }

    #[test]
    fn values_with_quotes_dollars_and_spaces() {
        let p = reprints("FROM a\nENV A=\"it's \\$HOME and \\\"q\\\"\"\nLABEL \"a b\"=c\n");
        assert!(p.contains(r#"ENV A="it's \$HOME and \"q\"""#), "{p}");
    }
}
