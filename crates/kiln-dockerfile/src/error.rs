//! Errors about a Dockerfile: where they are and how to show them.

use serde::Serialize;

/// A position in the Dockerfile: 1-based line and column, and how many
/// characters the problem covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
pub struct Span {
    pub line: usize,
    pub column: usize,
    pub len: usize,
}

impl Span {
    pub fn new(line: usize, column: usize, len: usize) -> Self {
        Span { line, column, len }
    }

    /// The start of `line`, with a caret under its first character.
    pub fn line(line: usize) -> Self {
        Span::new(line, 1, 1)
    }
}

/// What kind of problem a [`Diagnostic`] reports; stable names for `--json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// The text cannot be split into instructions (directives, heredocs, quotes).
    Syntax,
    /// An instruction name that is not in the Dockerfile reference.
    UnknownInstruction,
    /// A `--flag` that the instruction does not take, or a bad flag value.
    Flag,
    /// Wrong number or form of arguments for an instruction.
    Arguments,
    /// A variable substitution failed, including `${var:?message}`.
    Expansion,
    /// A problem with stages: names, references, cycles, the target.
    Stage,
    /// A lint rule that `# check=error=true` turned into an error.
    Lint,
}

/// A rejected Dockerfile: what is wrong, where, and how it might be fixed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{message}")]
pub struct Diagnostic {
    pub kind: ErrorKind,
    pub message: String,
    pub span: Span,
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn new(kind: ErrorKind, span: Span, message: impl Into<String>) -> Self {
        Diagnostic {
            kind,
            message: message.into(),
            span,
            hint: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Renders `FILE:LINE:COL: message`, the offending line, a caret under the
    /// problem and the hint, in the style of compilers users already read.
    pub fn render(&self, file: &str, source: &str) -> String {
        let Span { line, column, len } = self.span;
        let mut out = format!("{file}:{line}:{column}: {}\n", self.message);
        if let Some(text) = source_line(source, line) {
            let gutter = line.to_string();
            let pad = " ".repeat(gutter.len());
            let caret_pad: String = text
                .chars()
                .take(column.saturating_sub(1))
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            out.push_str(&format!("{pad} |\n{gutter} | {text}\n{pad} | "));
            out.push_str(&caret_pad);
            out.push_str(&"^".repeat(len.max(1)));
            out.push('\n');
        }
        if let Some(hint) = &self.hint {
            out.push_str(&format!("hint: {hint}\n"));
        }
        out
    }
}

/// Line `n` (1-based) of `source`, without its line ending or a byte order mark.
pub fn source_line(source: &str, n: usize) -> Option<&str> {
    let source = source.strip_prefix('\u{feff}').unwrap_or(source);
    source
        .split('\n')
        .nth(n.checked_sub(1)?)
        .map(|l| l.trim_end_matches('\r'))
}

/// The known word closest to `word`, if it is close enough to be a likely typo.
pub fn suggest<'a>(word: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let lower = word.to_ascii_lowercase();
    known
        .into_iter()
        .map(|k| (levenshtein(&lower, &k.to_ascii_lowercase()), k))
        .filter(|(d, k)| *d > 0 && *d <= (k.chars().count() / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Edit distance where swapping two neighbours counts as one edit
/// (optimal string alignment), so `FORM` is one edit from `FROM`.
fn levenshtein(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_points_at_the_column() {
        let d = Diagnostic::new(ErrorKind::Flag, Span::new(2, 6, 5), "unknown flag: --fro")
            .with_hint("did you mean --from?");
        let text = d.render("Dockerfile", "FROM a\nCOPY --fro=x a b\n");
        assert_eq!(
            text,
            "Dockerfile:2:6: unknown flag: --fro\n  |\n2 | COPY --fro=x a b\n  |      ^^^^^\nhint: did you mean --from?\n"
        );
    }

    #[test]
    fn suggestions() {
        let known = ["FROM", "RUN", "COPY", "WORKDIR", "ENTRYPOINT"];
        assert_eq!(suggest("FORM", known), Some("FROM"));
        assert_eq!(suggest("WORKDIRR", known), Some("WORKDIR"));
        assert_eq!(suggest("ENTRYPOIN", known), Some("ENTRYPOINT"));
        assert_eq!(suggest("XYZZY", known), None);
    }
}
