//! Variable substitution as BuildKit's shell lexer performs it.
//!
//! This is not a shell: it expands `$var`, `${var}` and the modifier forms,
//! removes quotes, honours the escape character and optionally splits words.
//! The rules (what can be escaped inside double quotes, which modifiers exist,
//! how `$1` or `$@` expand) follow BuildKit's `frontend/dockerfile/shell`
//! package so that a Dockerfile expands to the same text under kiln.

use std::collections::BTreeSet;

use regex::Regex;

/// Where variable values come from.
pub trait Env {
    /// The value of `key`, or `None` when it is not set.
    fn get(&self, key: &str) -> Option<String>;
}

/// An ordered list of variables where a later assignment replaces an earlier one.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct EnvList(Vec<(String, String)>);

impl EnvList {
    /// Sets `key`, keeping its original position when it is already present.
    pub fn set(&mut self, key: &str, value: &str) {
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value.to_string(),
            None => self.0.push((key.to_string(), value.to_string())),
        }
    }

    /// Iterates over the variables in assignment order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Names of all variables.
    pub fn keys(&self) -> Vec<String> {
        self.0.iter().map(|(k, _)| k.clone()).collect()
    }

    /// Whether no variable is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Env for EnvList {
    fn get(&self, key: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    }
}

/// An environment in which nothing is set.
pub struct NoEnv;

impl Env for NoEnv {
    fn get(&self, _: &str) -> Option<String> {
        None
    }
}

/// The lexer's settings; each flag mirrors one of BuildKit's `shell.Lex` fields.
#[derive(Debug, Clone, Copy)]
pub struct Lex {
    pub escape: char,
    /// Keep quote characters in the result.
    pub raw_quotes: bool,
    /// Keep escape characters in the result.
    pub raw_escapes: bool,
    /// Treat quotes as ordinary characters.
    pub skip_process_quotes: bool,
    /// Leave references to unset variables as they were written.
    pub skip_unset_env: bool,
}

/// The outcome of expanding one word.
#[derive(Debug, Clone, Default)]
pub struct Expanded {
    pub result: String,
    pub words: Vec<String>,
    /// Variables that were referenced and set.
    pub matched: BTreeSet<String>,
    /// Variables that were referenced but not set.
    pub unmatched: BTreeSet<String>,
}

impl Lex {
    pub fn new(escape: char) -> Self {
        Lex {
            escape,
            raw_quotes: false,
            raw_escapes: false,
            skip_process_quotes: false,
            skip_unset_env: false,
        }
    }

    /// Expands `word` into one string (quotes removed, spaces kept).
    pub fn process_word(&self, word: &str, env: &dyn Env) -> Result<Expanded, String> {
        let mut w = ShellWord::new(self, word, env);
        let (result, words) = w
            .process_stop_on(None, self.raw_escapes)
            .map_err(|e| format!("failed to process {word:?}: {e}"))?;
        Ok(Expanded {
            result,
            words,
            matched: w.matched,
            unmatched: w.unmatched,
        })
    }

    /// Expands `word` and splits the result on unquoted whitespace.
    pub fn process_words(&self, word: &str, env: &dyn Env) -> Result<Vec<String>, String> {
        Ok(self.process_word(word, env)?.words)
    }
}

#[derive(Default)]
struct WordsBuf {
    word: String,
    words: Vec<String>,
    in_word: bool,
}

impl WordsBuf {
    fn add_char(&mut self, ch: char) {
        if ch.is_whitespace() {
            if self.in_word && !self.word.is_empty() {
                self.words.push(std::mem::take(&mut self.word));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(ch);
        }
    }
    fn add_raw_char(&mut self, ch: char) {
        self.word.push(ch);
        self.in_word = true;
    }
    fn add_string(&mut self, s: &str) {
        s.chars().for_each(|c| self.add_char(c));
    }
    fn add_raw_string(&mut self, s: &str) {
        self.word.push_str(s);
        self.in_word = true;
    }
    fn finish(mut self) -> Vec<String> {
        if !self.word.is_empty() {
            self.words.push(std::mem::take(&mut self.word));
        }
        self.words
    }
}

struct ShellWord<'a> {
    chars: Vec<char>,
    pos: usize,
    env: &'a dyn Env,
    lex: Lex,
    raw_escapes: bool,
    matched: BTreeSet<String>,
    unmatched: BTreeSet<String>,
}

impl<'a> ShellWord<'a> {
    fn new(lex: &Lex, word: &str, env: &'a dyn Env) -> Self {
        ShellWord {
            chars: word.chars().collect(),
            pos: 0,
            env,
            lex: *lex,
            raw_escapes: lex.raw_escapes,
            matched: BTreeSet::new(),
            unmatched: BTreeSet::new(),
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    fn get_env(&mut self, name: &str) -> Option<String> {
        let v = self.env.get(name);
        if v.is_some() {
            self.matched.insert(name.to_string());
        } else {
            self.unmatched.insert(name.to_string());
        }
        v
    }

    fn process_stop_on(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
    ) -> Result<(String, Vec<String>), String> {
        let saved = std::mem::replace(&mut self.raw_escapes, raw_escapes);
        let out = self.stop_on_inner(stop);
        self.raw_escapes = saved;
        out
    }

    fn stop_on_inner(&mut self, stop: Option<char>) -> Result<(String, Vec<String>), String> {
        let mut result = String::new();
        let mut words = WordsBuf::default();
        let quotes = !self.lex.skip_process_quotes;
        while let Some(ch) = self.peek() {
            if Some(ch) == stop {
                self.next();
                return Ok((result, words.finish()));
            }
            match ch {
                '$' => {
                    let tmp = self.process_dollar()?;
                    result.push_str(&tmp);
                    words.add_string(&tmp);
                }
                '\'' if quotes => {
                    let tmp = self.single_quote()?;
                    result.push_str(&tmp);
                    words.add_raw_string(&tmp);
                }
                '"' if quotes => {
                    let tmp = self.double_quote()?;
                    result.push_str(&tmp);
                    words.add_raw_string(&tmp);
                }
                _ => {
                    let mut ch = self.next().unwrap_or_default();
                    if ch == self.lex.escape {
                        if self.raw_escapes {
                            words.add_raw_char(ch);
                            result.push(ch);
                        }
                        match self.next() {
                            None => break,
                            Some(c) => ch = c,
                        }
                        words.add_raw_char(ch);
                    } else {
                        words.add_char(ch);
                    }
                    result.push(ch);
                }
            }
        }
        match stop {
            Some(s) => Err(format!(
                "unexpected end of statement while looking for matching {s}"
            )),
            None => Ok((result, words.finish())),
        }
    }

    fn single_quote(&mut self) -> Result<String, String> {
        let mut out = String::new();
        let open = self.next().unwrap_or('\'');
        if self.lex.raw_quotes {
            out.push(open);
        }
        loop {
            match self.next() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching single-quote"
                            .into(),
                    )
                }
                Some('\'') => {
                    if self.lex.raw_quotes {
                        out.push('\'');
                    }
                    return Ok(out);
                }
                Some(c) => out.push(c),
            }
        }
    }

    fn double_quote(&mut self) -> Result<String, String> {
        let mut out = String::new();
        let open = self.next().unwrap_or('"');
        if self.lex.raw_quotes {
            out.push(open);
        }
        loop {
            match self.peek() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching double-quote"
                            .into(),
                    )
                }
                Some('"') => {
                    self.next();
                    if self.lex.raw_quotes {
                        out.push('"');
                    }
                    return Ok(out);
                }
                Some('$') => out.push_str(&self.process_dollar()?),
                Some(_) => {
                    let mut ch = self.next().unwrap_or_default();
                    if ch == self.lex.escape {
                        match self.peek() {
                            // an escape at the end of the word is dropped
                            None => continue,
                            Some(n) if n == '"' || n == '$' || n == self.lex.escape => {
                                if self.raw_escapes {
                                    out.push(ch);
                                }
                                ch = n;
                                self.next();
                            }
                            // not an escapable character: the escape stays literal
                            Some(_) => {}
                        }
                    }
                    out.push(ch);
                }
            }
        }
    }

    fn process_name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && ch.is_ascii_digit() {
                while let Some(d) = self.peek().filter(char::is_ascii_digit) {
                    name.push(d);
                    self.next();
                }
                return name;
            }
            if name.is_empty() && is_special_param(ch) {
                self.next();
                return ch.to_string();
            }
            if !(ch.is_alphanumeric() || ch == '_') {
                break;
            }
            name.push(ch);
            self.next();
        }
        name
    }

    fn process_dollar(&mut self) -> Result<String, String> {
        self.next();
        if self.peek() != Some('{') {
            let name = self.process_name();
            if name.is_empty() {
                return Ok("$".into());
            }
            return Ok(match self.get_env(&name) {
                Some(v) => v,
                None if self.lex.skip_unset_env => format!("${name}"),
                None => String::new(),
            });
        }
        self.next();
        match self.peek() {
            None => return Err("syntax error: missing '}'".into()),
            Some('{' | '}' | ':') => return Err("syntax error: bad substitution".into()),
            _ => {}
        }
        let name = self.process_name();
        let Some(ch) = self.next() else {
            return Err("syntax error: missing '}'".into());
        };
        match ch {
            '}' => Ok(match self.get_env(&name) {
                Some(v) => v,
                None if self.lex.skip_unset_env => format!("${{{name}}}"),
                None => String::new(),
            }),
            ':' => {
                let Some(op) = self.next() else {
                    return Err("syntax error: missing '}'".into());
                };
                self.modifier(&name, op, true)
            }
            '+' | '-' | '?' | '#' | '%' => self.modifier(&name, ch, false),
            '/' => self.substitute(&name),
            other => Err(format!("unsupported modifier ({other}) in substitution")),
        }
    }

    fn modifier(&mut self, name: &str, op: char, null_is_unset: bool) -> Result<String, String> {
        let shown = if null_is_unset {
            format!(":{op}")
        } else {
            op.to_string()
        };
        let raw = op == '#' || op == '%';
        if null_is_unset && raw {
            return Err(format!("unsupported modifier ({shown}) in substitution"));
        }
        if !matches!(op, '+' | '-' | '?' | '#' | '%') {
            return Err(format!("unsupported modifier ({shown}) in substitution"));
        }
        let word = match self.process_stop_on(Some('}'), raw) {
            Ok((w, _)) => w,
            Err(_) if self.peek().is_none() => return Err("syntax error: missing '}'".into()),
            Err(e) => return Err(e),
        };
        let value = self.get_env(name);
        if self.lex.skip_unset_env && value.is_none() {
            return Ok(format!("${{{name}{shown}{word}}}"));
        }
        let unset = value.is_none() || (null_is_unset && value.as_deref() == Some(""));
        match op {
            '-' => Ok(if unset {
                word
            } else {
                value.unwrap_or_default()
            }),
            '+' => Ok(if unset { String::new() } else { word }),
            '?' => {
                if value.is_none() || unset {
                    let default = if value.is_none() {
                        "is not allowed to be unset"
                    } else {
                        "is not allowed to be empty"
                    };
                    let msg = if word.is_empty() { default } else { &word };
                    return Err(format!("{name}: {msg}"));
                }
                Ok(value.unwrap_or_default())
            }
            _ => {
                let value = value.unwrap_or_default();
                let (greedy, pattern) = match word.strip_prefix(op) {
                    Some(rest) => (true, rest.to_string()),
                    None => (false, word),
                };
                if op == '%' {
                    trim_suffix(&pattern, &value, greedy)
                } else {
                    trim_prefix(&pattern, &value, greedy)
                }
            }
        }
    }

    fn substitute(&mut self, name: &str) -> Result<String, String> {
        let all = self.peek() == Some('/');
        if all {
            self.next();
        }
        let pattern = match self.process_stop_on(Some('/'), true) {
            Ok((p, _)) => p,
            Err(_) if self.peek().is_none() => {
                return Err("syntax error: missing '/' in ${}".into())
            }
            Err(e) => return Err(e),
        };
        let replacement = match self.process_stop_on(Some('}'), true) {
            Ok((r, _)) => r,
            Err(_) if self.peek().is_none() => return Err("syntax error: missing '}'".into()),
            Err(e) => return Err(e),
        };
        let value = self.get_env(name);
        let Some(value) = value else {
            if self.lex.skip_unset_env {
                return Ok(format!("${{{name}/{pattern}/{replacement}}}"));
            }
            return Ok(String::new());
        };
        let re = shell_pattern_regex(&pattern, true, false)
            .map_err(|e| format!("invalid pattern ({pattern}) in substitution: {e}"))?;
        if all {
            return Ok(re
                .replace_all(&value, regex::NoExpand(&replacement))
                .into_owned());
        }
        Ok(match re.find(&value) {
            Some(m) => format!(
                "{}{}{}",
                &value[..m.start()],
                replacement,
                &value[m.end()..]
            ),
            None => value,
        })
    }
}

fn is_special_param(c: char) -> bool {
    matches!(c, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0')
}

/// Turns a shell glob (`*`, `?`, `\` escapes) into a regular expression.
fn shell_pattern_regex(pattern: &str, greedy: bool, anchored: bool) -> Result<Regex, String> {
    let mut out = String::from(if anchored { "^" } else { "" });
    let star = if greedy { ".*" } else { ".*?" };
    let mut chars = pattern.chars().peekable();
    while let Some(tok) = chars.next() {
        match tok {
            '*' => out.push_str(star),
            '?' => out.push('.'),
            '\\' => {
                // `\}` and `\/` inside `${}` only protect the brace or
                // the separator: the character itself is the pattern's
                if matches!(chars.peek(), Some('}' | '/')) {
                    continue;
                }
                match chars.next() {
                    Some(c @ ('*' | '?' | '\\')) => {
                        out.push('\\');
                        out.push(c);
                    }
                    Some(c) => return Err(format!("invalid escape '\\{c}'")),
                    None => return Err("invalid escape at end of pattern".into()),
                }
            }
            c => out.push_str(&regex::escape(&c.to_string())),
        }
    }
    Regex::new(&out).map_err(|e| e.to_string())
}

fn trim_prefix(pattern: &str, value: &str, greedy: bool) -> Result<String, String> {
    let re = shell_pattern_regex(pattern, greedy, true)
        .map_err(|e| format!("invalid pattern ({pattern}) in substitution: {e}"))?;
    Ok(match re.find(value) {
        Some(m) => value[m.end()..].to_string(),
        None => value.to_string(),
    })
}

/// Reverses a pattern while keeping each `\x` escape pair in order.
fn reverse_pattern(pattern: &str) -> String {
    let chars: Vec<char> = pattern.chars().collect();
    let mut pieces: Vec<String> = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '\\' && i + 1 < chars.len() {
            pieces.push(format!("\\{}", chars[i + 1]));
            i += 2;
        } else {
            pieces.push(chars[i].to_string());
            i += 1;
        }
    }
    pieces.reverse();
    pieces.concat()
}

fn trim_suffix(pattern: &str, value: &str, greedy: bool) -> Result<String, String> {
    // a regex finds the leftmost match, so search the reversed value with the
    // reversed pattern to find the rightmost one
    let reversed: String = value.chars().rev().collect();
    let trimmed = trim_prefix(&reverse_pattern(pattern), &reversed, greedy)?;
    Ok(trimmed.chars().rev().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> EnvList {
        let mut e = EnvList::default();
        e.set("a", "hello");
        e.set("empty", "");
        e.set("path", "/usr/local/bin/app.tar.gz");
        e.set("sp", "a b");
        e
    }

    fn word(input: &str) -> Result<String, String> {
        Lex::new('\\').process_word(input, &env()).map(|e| e.result)
    }

    #[test]
    fn expansion_rules() {
        let table: &[(&str, &str)] = &[
            ("$a", "hello"),
            ("${a}", "hello"),
            ("$a-x", "hello-x"),
            ("${unset:-def}", "def"),
            ("${empty:-def}", "def"),
            ("${empty-def}", ""),
            ("${unset-def}", "def"),
            ("${a:+alt}", "alt"),
            ("${empty:+alt}", ""),
            ("${empty+alt}", "alt"),
            ("${unset+alt}", ""),
            ("${a:?boom}", "hello"),
            ("${path#*/}", "usr/local/bin/app.tar.gz"),
            ("${path##*/}", "app.tar.gz"),
            ("${path%.*}", "/usr/local/bin/app.tar"),
            ("${path%%.*}", "/usr/local/bin/app"),
            ("${path/local/opt}", "/usr/opt/bin/app.tar.gz"),
            ("${path//a/A}", "/usr/locAl/bin/App.tAr.gz"),
            ("\\$a", "$a"),
            ("'$a'", "$a"),
            ("\"$a\"", "hello"),
            ("\"\\$a\"", "$a"),
            ("\"a\\nb\"", "a\\nb"),
            ("$1$@$*$#$?$$$!$0", ""),
            ("$", "$"),
            ("a$", "a$"),
            ("$undeclared", ""),
            ("${a}${a}", "hellohello"),
            // an escaped separator or brace in a pattern is that character;
            // the replacement keeps its text (BuildKit's rules)
            ("${path//\\//\\/}", "\\/usr\\/local\\/bin\\/app.tar.gz"),
            ("${path/\\//_}", "_usr/local/bin/app.tar.gz"),
            ("${path#\\/}", "usr/local/bin/app.tar.gz"),
            ("${path##*\\/}", "app.tar.gz"),
            ("${path%\\/*}", "/usr/local/bin"),
            ("${path%%\\/b*}", "/usr/local"),
        ];
        for (input, want) in table {
            assert_eq!(word(input).as_deref(), Ok(*want), "input {input}");
        }
    }

    #[test]
    fn expansion_errors() {
        let table: &[(&str, &str)] = &[
            ("${unset:?must be set}", "unset: must be set"),
            ("${unset?}", "unset: is not allowed to be unset"),
            ("${empty:?}", "empty: is not allowed to be empty"),
            ("${v=x}", "unsupported modifier (=) in substitution"),
            ("${v:=x}", "unsupported modifier (:=) in substitution"),
            ("${}", "bad substitution"),
            ("${a", "missing '}'"),
            ("'abc", "matching single-quote"),
            ("\"abc", "matching double-quote"),
        ];
        for (input, want) in table {
            let err = word(input).unwrap_err();
            assert!(err.contains(want), "input {input}: {err}");
        }
    }

    #[test]
    fn words_split_on_unquoted_space() {
        let lex = Lex::new('\\');
        let w = lex.process_words("$sp \"x y\" ''", &env()).unwrap();
        assert_eq!(w, vec!["a", "b", "x y"]);
    }

    #[test]
    fn backtick_escape() {
        let lex = Lex::new('`');
        assert_eq!(
            lex.process_word("`$a c:\\dir", &env()).unwrap().result,
            "$a c:\\dir"
        );
    }

    #[test]
    fn unset_kept_when_asked() {
        let mut lex = Lex::new('\\');
        lex.skip_unset_env = true;
        assert_eq!(
            lex.process_word("$x ${y}", &NoEnv).unwrap().result,
            "$x ${y}"
        );
    }
}
