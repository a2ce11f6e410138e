//! `.dockerignore`: reading the file and matching paths exactly as Docker
//! does (moby/patternmatcher): Go `filepath.Match` syntax plus `**`, `!`
//! exceptions, the last matching pattern wins, and a pattern that matches a
//! directory excludes everything under it.

use crate::glob;

/// The ignore files that apply to `dockerfile`, most specific first:
/// `<dockerfile>.dockerignore` beside it, then `.dockerignore` at the
/// context root. Paths are returned as strings for the caller to try.
pub fn candidate_files(dockerfile: &str) -> Vec<String> {
    vec![
        format!("{dockerfile}.dockerignore"),
        ".dockerignore".to_string(),
    ]
}

/// An invalid pattern, with the line it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct PatternError {
    pub line: usize,
    pub message: String,
}

/// Reads `.dockerignore` text into cleaned patterns (comments and blank lines
/// dropped, paths cleaned, a leading `/` removed). Returns each pattern with
/// its line number.
pub fn read_patterns(text: &str) -> Vec<(usize, String)> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        if raw.starts_with('#') {
            continue;
        }
        let mut p = raw.trim();
        if p.is_empty() {
            continue;
        }
        let invert = p.starts_with('!');
        if invert {
            p = p[1..].trim();
        }
        let mut cleaned = if p.is_empty() {
            String::new()
        } else {
            clean(p)
        };
        if cleaned.len() > 1 && cleaned.starts_with('/') {
            cleaned.remove(0);
        }
        out.push((
            i + 1,
            if invert {
                format!("!{cleaned}")
            } else {
                cleaned
            },
        ));
    }
    out
}

/// Go's `path.Clean`.
pub fn clean(p: &str) -> String {
    if p.is_empty() {
        return ".".into();
    }
    let rooted = p.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|l| *l != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            s => parts.push(s),
        }
    }
    let body = parts.join("/");
    match (rooted, body.is_empty()) {
        (true, _) => format!("/{body}"),
        (false, true) => ".".into(),
        (false, false) => body,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MatchType {
    Exact,
    Prefix,
    Suffix,
    Glob,
}

#[derive(Debug, Clone)]
struct Pattern {
    cleaned: String,
    exclusion: bool,
    kind: MatchType,
}

impl Pattern {
    fn matches(&self, path: &str) -> bool {
        match self.kind {
            MatchType::Exact => path == self.cleaned,
            MatchType::Prefix => path.starts_with(&self.cleaned[..self.cleaned.len() - 2]),
            MatchType::Suffix => {
                let suffix = &self.cleaned[2..];
                path.ends_with(suffix) || (suffix.starts_with('/') && path == &suffix[1..])
            }
            MatchType::Glob => glob::matches(&self.cleaned, path),
        }
    }
}

/// A compiled list of patterns.
#[derive(Debug, Clone)]
pub struct Matcher {
    patterns: Vec<Pattern>,
}

impl Matcher {
    /// Compiles the patterns of a `.dockerignore` file.
    pub fn from_dockerignore(text: &str) -> Result<Self, PatternError> {
        Self::new(read_patterns(text))
    }

    /// Compiles `(line, pattern)` pairs.
    pub fn new(patterns: Vec<(usize, String)>) -> Result<Self, PatternError> {
        let mut out = Vec::new();
        for (line, p) in patterns {
            let p = p.trim();
            if p.is_empty() {
                continue;
            }
            let mut p = clean(p);
            let mut exclusion = false;
            if let Some(rest) = p.strip_prefix('!') {
                if rest.is_empty() {
                    return Err(PatternError {
                        line,
                        message: "illegal exclusion pattern: \"!\"".into(),
                    });
                }
                exclusion = true;
                p = rest.to_string();
            }
            glob::check(&p).map_err(|m| PatternError {
                line,
                message: format!("{m} in pattern {p:?}"),
            })?;
            out.push(Pattern {
                kind: kind_of(&p),
                cleaned: p,
                exclusion,
            });
        }
        Ok(Matcher { patterns: out })
    }

    /// Whether `path` (relative to the context, `/`-separated) is excluded,
    /// counting a match on any of its parent directories.
    pub fn excluded(&self, path: &str) -> bool {
        let path = clean(path);
        let parent = match path.rfind('/') {
            Some(i) => path[..i].to_string(),
            None => ".".to_string(),
        };
        let parent_dirs: Vec<&str> = parent.split('/').collect();
        let mut matched = false;
        for p in &self.patterns {
            if p.exclusion != matched {
                continue;
            }
            let mut hit = p.matches(&path);
            if !hit && parent != "." {
                hit = (1..=parent_dirs.len()).any(|n| p.matches(&parent_dirs[..n].join("/")));
            }
            if hit {
                matched = !p.exclusion;
            }
        }
        matched
    }

    /// Whether any pattern is an exception (`!`), which forces a walk into
    /// excluded directories.
    pub fn has_exceptions(&self) -> bool {
        self.patterns.iter().any(|p| p.exclusion)
    }
}

/// How a pattern is matched, as Docker decides it: a pattern without an
/// unescaped wildcard is compared as written, `PREFIX**` and `**SUFFIX`
/// by their plain part, the rest by the wildcard matcher.
fn kind_of(pattern: &str) -> MatchType {
    let plain = |s: &str| {
        let mut escaped = false;
        s.chars().all(|c| {
            let wild = !escaped && "*?[]".contains(c);
            escaped = !escaped && c == '\\';
            !wild
        })
    };
    if plain(pattern) {
        return MatchType::Exact;
    }
    if pattern.strip_suffix("**").is_some_and(plain) {
        return MatchType::Prefix;
    }
    if pattern.strip_prefix("**").is_some_and(plain) {
        return MatchType::Suffix;
    }
    MatchType::Glob
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(text: &str) -> Matcher {
        Matcher::from_dockerignore(text).unwrap()
    }

    #[test]
    fn docker_semantics() {
        let table: &[(&str, &str, bool)] = &[
            ("*.md", "README.md", true),
            ("*.md", "docs/README.md", false),
            ("**/*.md", "docs/README.md", true),
            ("**/*.md", "README.md", true),
            ("docs", "docs/a/b.txt", true),
            ("docs/", "docs/a", true),
            ("/docs", "docs/a", true),
            ("./docs", "docs", true),
            ("docs/**", "docs/x/y", true),
            ("docs/**", "docs", false),
            ("**", "anything/at/all", true),
            ("a?c", "abc", true),
            ("a?c", "a/c", false),
            ("[a-c]x", "bx", true),
            ("[^a-c]x", "bx", false),
            (
                "node_modules\n!node_modules/keep",
                "node_modules/keep/x",
                false,
            ),
            ("*\n!src\n", "src/main.rs", false),
            ("*\n!src\nsrc/secret", "src/secret", true),
            ("# comment\n\n  tmp  ", "tmp", true),
            ("docs/../x", "x", true),
            // an escape keeps the pattern an exact match, which Docker compares
            // to the pattern text itself, backslash included
            ("a\\*b", "a*b", false),
            ("a\\*b*", "a*bc", true),
            ("**/.git", ".git", true),
            ("**/.git", "sub/.git/HEAD", true),
        ];
        for (pats, path, want) in table {
            assert_eq!(
                m(pats).excluded(path),
                *want,
                "patterns {pats:?} path {path}"
            );
        }
    }

    #[test]
    fn exception_inside_excluded_dir_is_literal() {
        // Docker: a parent match excludes the path unless an exception matches the path itself
        let mm = m("build\n!build/keep.txt\n");
        assert!(!mm.excluded("build/keep.txt"));
        assert!(mm.excluded("build/other.txt"));
        assert!(mm.has_exceptions());
    }

    #[test]
    fn bad_patterns() {
        assert!(Matcher::from_dockerignore("[a-\n").is_err());
        assert!(Matcher::from_dockerignore("!\n").is_err());
        assert!(Matcher::from_dockerignore("abc\\").is_err());
        let e = Matcher::from_dockerignore("ok\n[]x\n").unwrap_err();
        assert_eq!(e.line, 2);
    }

    #[test]
    fn cleaning() {
        assert_eq!(clean("a/./b/../c/"), "a/c");
        assert_eq!(clean("/../a"), "/a");
        assert_eq!(clean("../../a"), "../../a");
        assert_eq!(
            read_patterns("/abs\n! neg/\n"),
            vec![(1, "abs".into()), (2, "!neg".into())]
        );
    }

    #[test]
    fn candidates() {
        assert_eq!(
            candidate_files("build/app.Dockerfile")[0],
            "build/app.Dockerfile.dockerignore"
        );
    }
}
