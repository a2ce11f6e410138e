//! BuildKit's instruction flags: declared per instruction, parsed generically.

use crate::error::{suggest, Diagnostic, ErrorKind, Span};
use crate::parser::Node;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum FlagType {
    Bool,
    String,
    Strings,
}

pub(super) struct Flags<'a> {
    node: &'a Node,
    lines: &'a [&'a str],
    values: Vec<(&'static str, Vec<String>)>,
}

impl<'a> Flags<'a> {
    /// Parses the node's flags against the ones the instruction accepts
    /// (BuildKit's BFlags: unknown, duplicate and malformed flags are errors).
    pub(super) fn parse(
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

    pub(super) fn string(&self, name: &str) -> Option<String> {
        self.values
            .iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| v.last().cloned())
    }

    pub(super) fn strings(&self, name: &str) -> Vec<String> {
        self.values
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    }

    pub(super) fn bool(&self, name: &str) -> bool {
        self.string(name).as_deref() == Some("true")
    }

    pub(super) fn opt_bool(&self, name: &str) -> Option<bool> {
        self.string(name).map(|v| v == "true")
    }

    pub(super) fn span_of(&self, needle: &str) -> Span {
        locate(self.lines, self.node, needle)
    }
}

fn unknown_flag(
    node: &Node,
    name: &str,
    defs: &[(&'static str, FlagType)],
    span: Span,
) -> Diagnostic {
    let d = Diagnostic::new(ErrorKind::Flag, span, format!("unknown flag: --{name}"));
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
