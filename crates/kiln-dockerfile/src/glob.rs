//! The one wildcard matcher: Go's `filepath.Match` syntax (`*`, `?`,
//! `[class]`, `\` escapes), as COPY and ADD sources use it one path
//! component at a time, plus Docker's `**` (any number of directories) for
//! `.dockerignore` paths. `*`, `?` never match `/`.

/// Whether `s` has a wildcard.
pub fn has_wildcard(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Whether `name` (a path component, or a `/`-separated path) matches
/// `pattern`. A malformed class matches nothing, as in Go.
pub fn matches(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    at(&p, &n)
}

fn at(p: &[char], n: &[char]) -> bool {
    match p.first() {
        None => n.is_empty(),
        Some('*') if p.get(1) == Some(&'*') => {
            let rest = match &p[2..] {
                ['/', rest @ ..] => rest,
                rest => rest,
            };
            // `**` at the end matches everything; elsewhere `(.*/)?`
            rest.is_empty()
                || at(rest, n)
                || (0..n.len()).any(|i| n[i] == '/' && at(rest, &n[i + 1..]))
        }
        Some('*') => (0..=n.len())
            .take_while(|&i| i == 0 || n[i - 1] != '/')
            .any(|i| at(&p[1..], &n[i..])),
        Some('?') => n.first().is_some_and(|c| *c != '/') && at(&p[1..], &n[1..]),
        Some('[') => {
            let Some(c) = n.first() else { return false };
            match class(&p[1..], *c) {
                Some((hit, len)) => hit && at(&p[1 + len..], &n[1..]),
                None => false,
            }
        }
        Some('\\') if p.len() > 1 => n.first() == Some(&p[1]) && at(&p[2..], &n[1..]),
        Some(c) => n.first() == Some(c) && at(&p[1..], &n[1..]),
    }
}

/// A class's body after `[`: whether `c` is in it, and its length up to
/// and including `]`; `None` when it is not closed.
fn class(p: &[char], c: char) -> Option<(bool, usize)> {
    let negate = p.first() == Some(&'^');
    let mut i = usize::from(negate);
    let mut hit = false;
    let mut first = true;
    let literal = |i: &mut usize| {
        if p[*i] == '\\' {
            *i += 1;
        }
        let ch = p.get(*i).copied();
        *i += 1;
        ch
    };
    while i < p.len() && (first || p[i] != ']') {
        first = false;
        let lo = literal(&mut i)?;
        let hi = if p.get(i) == Some(&'-') && p.get(i + 1).is_some_and(|x| *x != ']') {
            i += 1;
            literal(&mut i)?
        } else {
            lo
        };
        hit |= lo <= c && c <= hi;
    }
    (i < p.len()).then_some((hit != negate, i + 1))
}

/// Rejects what Go's `filepath.Match` calls `ErrBadPattern`: unclosed or
/// empty character classes, bad ranges, a trailing backslash.
pub fn check(p: &str) -> Result<(), String> {
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

    #[test]
    fn go_patterns() {
        for (p, n, want) in [
            ("*.txt", "a.txt", true),
            ("*.txt", "a.rs", false),
            ("a?c", "abc", true),
            ("[a-c]x", "bx", true),
            ("[^a-c]x", "bx", false),
            ("[\\]]", "]", true),
            ("\\*", "*", true),
            ("*", ".hidden", true),
            ("[a-", "a", false),
            ("*.md", "docs/a.md", false),
            ("a?b", "a/b", false),
        ] {
            assert_eq!(matches(p, n), want, "{p} {n}");
        }
    }

    #[test]
    fn double_star_spans_directories() {
        for (p, n, want) in [
            ("**/*.md", "a.md", true),
            ("**/*.md", "x/y/a.md", true),
            ("**/*.md", "x/y/a.rs", false),
            ("a/**", "a/b/c", true),
            ("a/**/b", "a/b", true),
            ("a/**/b", "a/x/y/b", true),
            ("a/**/b", "a/x/y/c", false),
        ] {
            assert_eq!(matches(p, n), want, "{p} {n}");
        }
    }

    #[test]
    fn bad_patterns() {
        assert!(check("[a").is_err());
        assert!(check("a\\").is_err());
        assert!(check("[]a]").is_err());
        assert!(check("[a-c]*").is_ok());
    }
}
