//! Dockerfile text to a list of instruction nodes: parser directives, comments,
//! line continuations, flags, JSON or shell forms, and heredocs.
//!
//! The rules are BuildKit's (`frontend/dockerfile/parser`): a directive counts
//! only before anything else; comment and empty lines inside a continuation are
//! dropped; an escape at the end of a line continues it unless it is itself
//! escaped; broken JSON falls back to shell form.

use std::sync::OnceLock;

use regex::Regex;
use serde::Serialize;

use crate::error::{Diagnostic, ErrorKind, Span};
use crate::lint::{Rule, Warning};
use crate::shell::{Lex, NoEnv};
use crate::words::{extract_flags, parse_json_array, parse_words, split_first, split_whitespace};

/// A parser directive found at the top of the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Directive {
    pub name: String,
    pub value: String,
    pub line: usize,
}

/// A heredoc attached to RUN, COPY or ADD.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Heredoc {
    pub name: String,
    /// File descriptor written before `<<` (`3<<EOF`), 0 when absent.
    pub fd: u32,
    /// False when the delimiter was quoted: the content is taken literally.
    pub expand: bool,
    /// `<<-`: leading tabs are stripped from the content and the delimiter.
    pub chomp: bool,
    pub content: String,
}

/// The arguments of an instruction as its line parser split them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Args {
    /// Words; `json` tells whether they came from the exec (JSON) form.
    Words { words: Vec<String>, json: bool },
    /// `key=value` pairs of ENV and LABEL; `legacy` for the `KEY value` form.
    KeyValues(Vec<(String, String)>, bool),
    /// ONBUILD's trigger instruction.
    Sub(Box<Node>),
    /// HEALTHCHECK's type (`CMD`, `NONE`) and its command.
    Health {
        kind: String,
        cmd: Vec<String>,
        json: bool,
    },
}

/// One instruction, before its arguments are checked or expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The instruction name as written.
    pub keyword: String,
    pub flags: Vec<String>,
    pub args: Args,
    /// The instruction's logical line: continuations joined, comments removed.
    pub original: String,
    pub start_line: usize,
    pub end_line: usize,
    /// Column of the instruction name on its first line.
    pub column: usize,
    pub heredocs: Vec<Heredoc>,
}

impl Node {
    pub fn name(&self) -> String {
        self.keyword.to_ascii_lowercase()
    }

    pub fn span(&self) -> Span {
        Span::new(self.start_line, self.column, self.keyword.chars().count())
    }

    /// Words of a word-list node (empty for other shapes).
    pub fn words(&self) -> &[String] {
        match &self.args {
            Args::Words { words, .. } => words,
            _ => &[],
        }
    }

    pub fn is_json(&self) -> bool {
        matches!(
            &self.args,
            Args::Words { json: true, .. } | Args::Health { json: true, .. }
        )
    }

    fn can_contain_heredoc(&self) -> bool {
        let node = match (&self.args, self.name().as_str()) {
            (Args::Sub(sub), "onbuild") => sub.as_ref(),
            _ => self,
        };
        matches!(node.name().as_str(), "run" | "copy" | "add") && !node.is_json()
    }
}

/// A parsed Dockerfile.
#[derive(Debug, Clone)]
pub struct Ast {
    pub directives: Vec<Directive>,
    pub escape: char,
    pub nodes: Vec<Node>,
    pub warnings: Vec<Warning>,
}

impl Ast {
    pub fn directive(&self, name: &str) -> Option<&Directive> {
        self.directives.iter().find(|d| d.name == name)
    }
}

fn directive_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$").expect("valid"))
}

fn heredoc_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"^(\d*)<<(-?)([^<]*)$").expect("valid"))
}

struct DirectiveState {
    escape: char,
    done: bool,
    found: Vec<Directive>,
}

impl DirectiveState {
    /// Looks for a directive on `line`; returns whether one was found.
    fn process(&mut self, line: &str, line_no: usize) -> Result<bool, Diagnostic> {
        if self.done {
            return Ok(false);
        }
        let Some(caps) = directive_re().captures(line) else {
            self.done = true;
            return Ok(false);
        };
        let name = caps[1].to_ascii_lowercase();
        if !matches!(name.as_str(), "syntax" | "escape" | "check") {
            self.done = true;
            return Ok(false);
        }
        let span = Span::new(line_no, 1, line.chars().count());
        if self.found.iter().any(|d| d.name == name) {
            return Err(Diagnostic::new(
                ErrorKind::Syntax,
                span,
                format!("only one {name} parser directive can be used"),
            ));
        }
        let value = caps[2].to_string();
        if name == "escape" {
            self.escape = match value.as_str() {
                "\\" => '\\',
                "`" => '`',
                _ => {
                    return Err(Diagnostic::new(
                        ErrorKind::Syntax,
                        span,
                        format!("invalid escape token '{value}' does not match ` or \\"),
                    )
                    .with_hint("use `# escape=\\` (the default) or `# escape=`` (backtick)"))
                }
            };
        }
        self.found.push(Directive {
            name,
            value,
            line: line_no,
        });
        Ok(true)
    }

    /// Removes a trailing line continuation; returns the line and whether the
    /// logical line ends here.
    fn trim_continuation<'a>(&self, line: &'a str) -> (&'a str, bool) {
        let trimmed = line.trim_end_matches([' ', '\t']);
        let Some(body) = trimmed.strip_suffix(self.escape) else {
            return (line, true);
        };
        // an escaped escape character (`\\`) does not continue the line
        if !body.is_empty() && body.ends_with(self.escape) {
            return (line, true);
        }
        (body, false)
    }
}

fn is_comment(line: &str) -> bool {
    line.trim_start().starts_with('#')
}

fn trim_newline(line: &str) -> &str {
    line.trim_end_matches(['\r', '\n'])
}

/// Parses Dockerfile text into nodes. Fails only on what BuildKit's parser
/// rejects; instruction-level checks happen in [`crate::instructions`].
pub fn parse(text: &str) -> Result<Ast, Diagnostic> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let mut d = DirectiveState {
        escape: '\\',
        done: false,
        found: Vec::new(),
    };
    let mut nodes = Vec::new();
    let mut warnings = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let raw = trim_newline(lines[i]);
        i += 1;
        let start = i;
        let first = raw.trim_start();
        d.process(first, start)?;
        let content = if is_comment(first) { "" } else { first };
        let (body, mut eol) = d.trim_continuation(content);
        if eol && body.is_empty() {
            continue;
        }
        let mut buf = body.to_string();
        let mut empty_continuation = false;
        while !eol && i < lines.len() {
            let raw = trim_newline(lines[i]);
            i += 1;
            d.process(raw, i)?;
            if is_comment(raw) {
                continue;
            }
            if raw.trim_start().is_empty() {
                empty_continuation = true;
                continue;
            }
            let (body, e) = d.trim_continuation(raw);
            eol = e;
            buf.push_str(body);
        }
        if empty_continuation {
            warnings.push(Warning::new(
                Rule::NoEmptyContinuation,
                Span::line(i),
                format!("Empty continuation line found in: {}", buf.trim()),
            ));
        }
        let column = raw.len() - raw.trim_start().len() + 1;
        let mut node = node_from_line(&buf, d.escape, start, i, column)?;
        if node.can_contain_heredoc() && buf.contains("<<") {
            let docs = heredocs_from_line(&buf).map_err(|e| {
                Diagnostic::new(ErrorKind::Syntax, node.span(), format!("heredoc: {e}"))
            })?;
            for mut doc in docs {
                i = read_heredoc(&lines, i, &mut doc, &node)?;
                node.heredocs.push(doc);
            }
            node.end_line = i;
        }
        nodes.push(node);
    }
    if nodes.is_empty() {
        return Err(Diagnostic::new(
            ErrorKind::Syntax,
            Span::line(lines.len().max(1)),
            "the Dockerfile cannot be empty",
        )
        .with_hint("a Dockerfile needs at least a FROM instruction"));
    }
    Ok(Ast {
        directives: d.found,
        escape: d.escape,
        nodes,
        warnings,
    })
}

/// Reads the body of `doc` from `lines[i..]`; returns the index after its terminator.
fn read_heredoc(
    lines: &[&str],
    mut i: usize,
    doc: &mut Heredoc,
    node: &Node,
) -> Result<usize, Diagnostic> {
    while i < lines.len() {
        let raw = lines[i];
        i += 1;
        let mut candidate = trim_newline(raw);
        if doc.chomp {
            candidate = candidate.trim_start_matches('\t');
        }
        if candidate == doc.name {
            return Ok(i);
        }
        doc.content.push_str(raw);
    }
    let col = node
        .original
        .find(&format!("<<{}", if doc.chomp { "-" } else { "" }))
        .map(|_| node.column)
        .unwrap_or(node.column);
    Err(Diagnostic::new(
        ErrorKind::Syntax,
        Span::new(node.start_line, col, node.keyword.len()),
        format!(
            "unterminated heredoc {:?} started on line {}",
            doc.name, node.start_line
        ),
    )
    .with_hint(format!(
        "end the heredoc with a line containing only {}",
        doc.name
    )))
}

fn node_from_line(
    line: &str,
    escape: char,
    start: usize,
    end: usize,
    column: usize,
) -> Result<Node, Diagnostic> {
    let (keyword, rest) = split_first(line.trim());
    let (args_text, flags) = match rest {
        Some(r) => extract_flags(&r),
        None => (String::new(), Vec::new()),
    };
    let args_text = args_text.trim().to_string();
    let mut node = Node {
        keyword: keyword.clone(),
        flags,
        args: Args::Words {
            words: vec![],
            json: false,
        },
        original: line.to_string(),
        start_line: start,
        end_line: end,
        column,
        heredocs: vec![],
    };
    let err = |msg: String| {
        Diagnostic::new(
            ErrorKind::Arguments,
            node_span(start, column, &keyword),
            msg,
        )
    };
    node.args = match keyword.to_ascii_lowercase().as_str() {
        "add" | "copy" | "volume" => match parse_json_array(&args_text) {
            Ok(Some(words)) => Args::Words { words, json: true },
            Ok(None) => words_args(split_whitespace(&args_text)),
            Err(e) => return Err(err(e.into()).with_hint(json_hint())),
        },
        "cmd" | "entrypoint" | "run" | "shell" => {
            maybe_json(&args_text).map_err(|e| err(e.into()).with_hint(json_hint()))?
        }
        "arg" => words_args(parse_words(&args_text, escape)),
        "env" | "label" => key_values(&args_text, &keyword, escape).map_err(|m| {
            let hint = if m.contains("can't find =") {
                format!(
                    "write {} NAME=VALUE; quote a value that has spaces: NAME=\"a b\"",
                    keyword.to_ascii_uppercase()
                )
            } else {
                format!("write {} NAME=VALUE", keyword.to_ascii_uppercase())
            };
            err(m).with_hint(hint)
        })?,
        "expose" | "from" => words_args(split_whitespace(&args_text)),
        "healthcheck" => health(&args_text).map_err(|e| err(e.into()).with_hint(json_hint()))?,
        "maintainer" | "stopsignal" | "user" | "workdir" => words_args(if args_text.is_empty() {
            vec![]
        } else {
            vec![args_text.clone()]
        }),
        "onbuild" if !args_text.is_empty() => {
            let sub = node_from_line(&args_text, escape, start, end, column)?;
            Args::Sub(Box::new(sub))
        }
        _ => words_args(vec![]),
    };
    Ok(node)
}

fn node_span(line: usize, column: usize, keyword: &str) -> Span {
    Span::new(line, column, keyword.chars().count().max(1))
}

fn json_hint() -> &'static str {
    "the exec form is a JSON array of strings, e.g. [\"executable\", \"arg\"]"
}

fn words_args(words: Vec<String>) -> Args {
    Args::Words { words, json: false }
}

fn maybe_json(rest: &str) -> Result<Args, &'static str> {
    if rest.is_empty() {
        return Ok(words_args(vec![]));
    }
    Ok(match parse_json_array(rest)? {
        Some(words) => Args::Words { words, json: true },
        None => words_args(vec![rest.to_string()]),
    })
}

fn health(rest: &str) -> Result<Args, &'static str> {
    let (kind, cmd) = match rest.find(char::is_whitespace) {
        None => (rest.to_string(), String::new()),
        Some(i) => (rest[..i].to_string(), rest[i..].trim_start().to_string()),
    };
    if kind.is_empty() {
        return Ok(words_args(vec![]));
    }
    let (cmd, json) = match maybe_json(&cmd)? {
        Args::Words { words, json } => (words, json),
        _ => (vec![], false),
    };
    Ok(Args::Health { kind, cmd, json })
}

fn key_values(rest: &str, keyword: &str, escape: char) -> Result<Args, String> {
    let words = parse_words(rest, escape);
    let Some(first) = words.first() else {
        return Ok(Args::KeyValues(vec![], false));
    };
    if !first.contains('=') {
        // legacy `KEY name value`: the whole rest of the line is the value
        let (name, value) = split_first(rest);
        let Some(value) = value.filter(|v| !v.is_empty()) else {
            return Err(format!(
                "{} must have two arguments",
                keyword.to_ascii_uppercase()
            ));
        };
        return Ok(Args::KeyValues(vec![(name, value)], true));
    }
    let mut pairs = Vec::new();
    for word in &words {
        let Some((k, v)) = word.split_once('=') else {
            return Err(format!(
                "Syntax error - can't find = in {word:?}. Must be of the form: name=value"
            ));
        };
        pairs.push((k.to_string(), v.to_string()));
    }
    Ok(Args::KeyValues(pairs, false))
}

/// Recognises `<<EOF`, `<<-EOF`, `<<"EOF"`, `3<<EOF` as a heredoc word.
pub fn parse_heredoc(word: &str) -> Result<Option<Heredoc>, String> {
    let Some(caps) = heredoc_re().captures(word) else {
        return Ok(None);
    };
    let rest = &caps[3];
    if rest.is_empty() {
        return Ok(None);
    }
    let mut lex = Lex::new('\\');
    lex.skip_unset_env = true;
    let words = lex.process_words(rest, &NoEnv)?;
    if words.len() != 1 {
        return Ok(None);
    }
    lex.raw_quotes = true;
    let raw = lex.process_words(rest, &NoEnv)?;
    if raw.len() != 1 {
        return Err(format!(
            "internal lexing of heredoc produced inconsistent results: {rest}"
        ));
    }
    let quotes = |s: &str| s.matches(['\'', '"']).count();
    Ok(Some(Heredoc {
        name: words[0].clone(),
        fd: caps[1].parse().unwrap_or(0),
        expand: quotes(&words[0]) == quotes(&raw[0]),
        chomp: &caps[2] == "-",
        content: String::new(),
    }))
}

fn heredocs_from_line(line: &str) -> Result<Vec<Heredoc>, String> {
    let mut lex = Lex::new('\\');
    lex.raw_quotes = true;
    lex.raw_escapes = true;
    lex.skip_unset_env = true;
    let words = lex.process_words(line, &NoEnv).unwrap_or_default();
    let mut docs = Vec::new();
    for word in words {
        if let Some(doc) = parse_heredoc(&word)? {
            docs.push(doc);
        }
    }
    Ok(docs)
}

/// Strips leading tabs from every line, as `<<-` asks.
pub fn chomp_heredoc(content: &str) -> String {
    content
        .split_inclusive('\n')
        .map(|l| l.trim_start_matches('\t'))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Node {
        let ast = parse(text).unwrap();
        ast.nodes.into_iter().last().unwrap()
    }

    #[test]
    fn continuation_with_comments_and_blank_lines() {
        let n = one("RUN apt-get update \\\n  # a comment\n\n  && apt-get install -y curl\n");
        assert_eq!(n.words(), ["apt-get update   && apt-get install -y curl"]);
        assert_eq!((n.start_line, n.end_line), (1, 4));
    }

    #[test]
    fn escaped_escape_does_not_continue() {
        let ast = parse("RUN echo \\\\\nRUN true\n").unwrap();
        assert_eq!(ast.nodes.len(), 2);
        assert_eq!(ast.nodes[0].words(), ["echo \\\\"]);
    }

    #[test]
    fn escape_at_end_of_file_continues_into_nothing() {
        let n = one("FROM a\nRUN echo hi \\");
        assert_eq!(n.words(), ["echo hi"]);
    }

    #[test]
    fn backtick_escape_directive() {
        let ast = parse("# escape=`\nFROM a\nRUN dir c:\\ `\n  && echo x\n").unwrap();
        assert_eq!(ast.escape, '`');
        assert_eq!(ast.nodes[1].words(), ["dir c:\\   && echo x"]);
    }

    #[test]
    fn directive_after_comment_is_a_comment() {
        let ast = parse("# hello\n# escape=`\nFROM a\n").unwrap();
        assert_eq!(ast.escape, '\\');
        assert!(ast.directives.is_empty());
    }

    #[test]
    fn crlf_lines() {
        let ast = parse("FROM a\r\nRUN echo \\\r\n  hi\r\n").unwrap();
        assert_eq!(ast.nodes[1].words(), ["echo   hi"]);
    }

    #[test]
    fn broken_json_becomes_shell_form() {
        let n = one("CMD [\"echo\", \"hi\"");
        assert_eq!(n.words(), ["[\"echo\", \"hi\""]);
        assert!(!n.is_json());
    }

    #[test]
    fn json_with_escaped_quotes() {
        let n = one(r#"CMD ["sh", "-c", "echo \"hi\""]"#);
        assert_eq!(n.words(), ["sh", "-c", "echo \"hi\""]);
        assert!(n.is_json());
    }

    #[test]
    fn heredocs_several_and_chomped() {
        let n = one("RUN <<A cat - <<-\"B\"\nline a\nA\n\tline b\n\tB\n");
        assert_eq!(n.heredocs.len(), 2);
        assert_eq!(n.heredocs[0].content, "line a\n");
        assert!(n.heredocs[0].expand);
        assert_eq!(n.heredocs[1].content, "\tline b\n");
        assert!(!n.heredocs[1].expand && n.heredocs[1].chomp);
        assert_eq!(n.end_line, 5);
    }

    #[test]
    fn heredoc_inside_continuation() {
        let n = one("RUN <<EOF \\\n  python3\nprint(1)\nEOF\n");
        assert_eq!(n.words(), ["<<EOF   python3"]);
        assert_eq!(n.heredocs[0].content, "print(1)\n");
    }

    #[test]
    fn unterminated_heredoc() {
        let e = parse("FROM a\nRUN <<EOF\necho\n").unwrap_err();
        assert!(e
            .message
            .contains("unterminated heredoc \"EOF\" started on line 2"));
        assert_eq!(e.span.line, 2);
    }

    #[test]
    fn legacy_env_takes_rest_of_line() {
        let n = one("ENV PATH /usr/local/bin:$PATH  more words");
        assert_eq!(
            n.args,
            Args::KeyValues(
                vec![("PATH".into(), "/usr/local/bin:$PATH  more words".into())],
                true
            )
        );
    }
}
