//! `.dockerignore`: reading the file and matching paths exactly as Docker
//! does (moby/patternmatcher): Go `filepath.Match` syntax plus `**`, `!`
//! exceptions, the last matching pattern wins, and a pattern that matches a
//! directory excludes everything under it.

use regex::Regex;

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
    Regexp,
}

#[derive(Debug, Clone)]
struct Pattern {
    cleaned: String,
    exclusion: bool,
    kind: MatchType,
    re: Regex,
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
            MatchType::Regexp => self.re.is_match(path),
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
            check_go_pattern(&p).map_err(|m| PatternError {
                line,
                message: format!("{m} in pattern {p:?}"),
            })?;
            let (kind, re) = compile(&p).map_err(|m| PatternError { line, message: m })?;
            out.push(Pattern {
                cleaned: p,
                exclusion,
                kind,
                re,
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

fn compile(pattern: &str) -> Result<(MatchType, Regex), String> {
    let mut re = String::from("^");
    let mut kind = MatchType::Exact;
    let chars: Vec<char> = pattern.chars().collect();
    let mut i = 0;
    let mut first = true;
    while i < chars.len() {
        let ch = chars[i];
        i += 1;
        if ch == '*' {
            if chars.get(i) == Some(&'*') {
                i += 1;
                if chars.get(i) == Some(&'/') {
                    i += 1;
                }
                if i >= chars.len() {
                    if kind == MatchType::Exact {
                        kind = MatchType::Prefix;
                    } else {
                        re.push_str(".*");
                        kind = MatchType::Regexp;
                    }
                } else {
                    re.push_str("(.*/)?");
                    kind = MatchType::Regexp;
                }
                if first {
                    kind = MatchType::Suffix;
                }
            } else {
                re.push_str("[^/]*");
                kind = MatchType::Regexp;
            }
        } else if ch == '?' {
            re.push_str("[^/]");
            kind = MatchType::Regexp;
        } else if ".+()|{}$".contains(ch) {
            re.push('\\');
            re.push(ch);
        } else if ch == '\\' {
            if i < chars.len() {
                re.push_str(&regex::escape(&chars[i].to_string()));
                i += 1;
            } else {
                re.push_str("\\\\");
            }
        } else if ch == '[' || ch == ']' {
            re.push(ch);
            kind = MatchType::Regexp;
        } else if ch == '^' {
            // only meaningful inside a class, where Go also negates with it
            re.push('^');
        } else {
            re.push(ch);
        }
        first = false;
    }
    re.push('$');
    if kind == MatchType::Prefix && !pattern.ends_with("**") {
        kind = MatchType::Regexp;
    }
    if kind == MatchType::Suffix && !pattern.starts_with("**") {
        kind = MatchType::Regexp;
    }
    let regex = Regex::new(&re).map_err(|e| format!("invalid pattern {pattern:?}: {e}"))?;
    Ok((kind, regex))
}

/// Rejects what Go's `filepath.Match` calls `ErrBadPattern`: unclosed or
/// empty character classes, bad ranges, a trailing backslash.
fn check_go_pattern(p: &str) -> Result<(), String> {
    let chars: Vec<char> = p.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '\\' => {
                if i + 1 >= chars.len() {
                    return Err("syntax error: trailing backslash".into());
                }
                i += 2;
            }
            '[' => {
                i += 1;
                if chars.get(i) == Some(&'^') {
                    i += 1;
                }
                let mut n = 0;
                loop {
                    match chars.get(i) {
                        None => return Err("syntax error: unclosed character class".into()),
                        Some(']') if n > 0 => {
                            i += 1;
                            break;
                        }
                        Some('-') | Some(']') => {
                            return Err("syntax error: bad character range".into())
                        }
                        Some('\\') => i += 2,
                        Some(_) => i += 1,
                    }
                    if chars.get(i) == Some(&'-') && chars.get(i + 1).is_some_and(|c| *c != ']') {
                        i += 2;
                    }
                    n += 1;
                }
            }
            _ => i += 1,
        }
    }
    Ok(())
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
