//! Splitting an instruction's text into words the way BuildKit's line parsers do.

/// Splits `rest` on whitespace, keeping quotes and escapes in the words
/// (BuildKit's `parseWords`, used for ARG, ENV and LABEL).
pub fn parse_words(rest: &str, escape: char) -> Vec<String> {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote(char),
    }
    let chars: Vec<char> = rest.chars().collect();
    let mut words = Vec::new();
    let mut word = String::new();
    let mut blank_ok = false;
    let mut phase = Phase::Spaces;
    let mut i = 0;
    while i < chars.len() {
        let ch = chars[i];
        i += 1;
        if phase == Phase::Spaces {
            if ch.is_whitespace() {
                continue;
            }
            phase = Phase::Word;
        }
        match phase {
            Phase::Word => {
                if ch.is_whitespace() {
                    phase = Phase::Spaces;
                    if blank_ok || !word.is_empty() {
                        words.push(std::mem::take(&mut word));
                    }
                    blank_ok = false;
                    continue;
                }
                if ch == '\'' || ch == '"' {
                    phase = Phase::Quote(ch);
                    blank_ok = true;
                }
                if ch == escape {
                    if i == chars.len() {
                        continue; // an escape at the very end is dropped
                    }
                    word.push(ch);
                    word.push(chars[i]);
                    i += 1;
                    continue;
                }
                word.push(ch);
            }
            Phase::Quote(q) => {
                if ch == q {
                    phase = Phase::Word;
                }
                if ch == escape && q != '\'' {
                    if i == chars.len() {
                        phase = Phase::Word;
                        continue;
                    }
                    word.push(ch);
                    word.push(chars[i]);
                    i += 1;
                    continue;
                }
                word.push(ch);
            }
            Phase::Spaces => unreachable!("phase changed above"),
        }
    }
    if blank_ok || !word.is_empty() {
        words.push(word);
    }
    words
}

/// Splits the leading `--flag[=value]` words off an instruction's arguments
/// (BuildKit's `extractBuilderFlags`). A bare `--` ends the flags.
/// Returns the remaining text and the flags with their quotes removed.
pub fn extract_flags(line: &str) -> (String, Vec<String>) {
    let chars: Vec<char> = line.chars().collect();
    let byte_at = |i: usize| chars[..i].iter().map(|c| c.len_utf8()).sum::<usize>();
    let mut flags = Vec::new();
    let mut word = String::new();
    let mut blank_ok = false;
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut i = 0;
    loop {
        if !in_word {
            while i < chars.len() && chars[i].is_whitespace() {
                i += 1;
            }
            if i >= chars.len() {
                return (String::new(), flags);
            }
            if chars[i] != '-' || chars.get(i + 1) != Some(&'-') {
                return (line[byte_at(i)..].to_string(), flags);
            }
            in_word = true;
        }
        if i >= chars.len() {
            if word != "--" && (blank_ok || !word.is_empty()) {
                flags.push(word);
            }
            return (String::new(), flags);
        }
        let mut ch = chars[i];
        match quote {
            None if ch.is_whitespace() => {
                if word == "--" {
                    return (line[byte_at(i)..].to_string(), flags);
                }
                if blank_ok || !word.is_empty() {
                    flags.push(std::mem::take(&mut word));
                }
                blank_ok = false;
                in_word = false;
                i += 1;
                continue;
            }
            None if ch == '\'' || ch == '"' => {
                quote = Some(ch);
                blank_ok = true;
                i += 1;
                continue;
            }
            Some(q) if ch == q => {
                quote = None;
                i += 1;
                continue;
            }
            _ => {}
        }
        if ch == '\\' {
            if i + 1 == chars.len() {
                quote = None;
                i += 1;
                continue;
            }
            i += 1;
            ch = chars[i];
        }
        word.push(ch);
        i += 1;
    }
}

/// Splits on runs of `[\t\v\f\r ]` (BuildKit's `reWhitespace`).
pub fn split_whitespace(rest: &str) -> Vec<String> {
    rest.split(is_ws)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Splits off the first word, like `reWhitespace.Split(s, 2)`.
pub fn split_first(rest: &str) -> (String, Option<String>) {
    match rest.find(is_ws) {
        None => (rest.to_string(), None),
        Some(i) => {
            let tail = rest[i..].trim_start_matches(is_ws);
            (rest[..i].to_string(), Some(tail.to_string()))
        }
    }
}

fn is_ws(c: char) -> bool {
    matches!(c, '\t' | '\u{b}' | '\u{c}' | '\r' | ' ')
}

/// The JSON exec form: `Ok(Some(words))` for an array of strings,
/// `Ok(None)` when the text is not JSON (it is then shell form),
/// `Err` for valid JSON that is not an array of strings.
pub fn parse_json_array(rest: &str) -> Result<Option<Vec<String>>, &'static str> {
    let rest = rest.trim_start();
    if !rest.starts_with('[') {
        return Ok(None);
    }
    let Ok(serde_json::Value::Array(items)) = serde_json::from_str::<serde_json::Value>(rest)
    else {
        return Ok(None);
    };
    items
        .into_iter()
        .map(|v| match v {
            serde_json::Value::String(s) => Ok(s),
            _ => Err("when using JSON array syntax, arrays must be comprised of strings only"),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_keep_quotes() {
        assert_eq!(
            parse_words(r#"a="b c" d=e\ f ''"#, '\\'),
            vec![r#"a="b c""#, r"d=e\ f", "''"]
        );
    }

    #[test]
    fn flags_stop_at_first_non_flag() {
        let (rest, flags) = extract_flags(r#"--from=build --chown="a b" src dst"#);
        assert_eq!(flags, vec!["--from=build", "--chown=a b"]);
        assert_eq!(rest, "src dst");
    }

    #[test]
    fn double_dash_ends_flags() {
        let (rest, flags) = extract_flags("--link -- --notaflag dst");
        assert_eq!(flags, vec!["--link"]);
        assert_eq!(rest.trim(), "--notaflag dst");
    }

    #[test]
    fn json_forms() {
        assert_eq!(
            parse_json_array(r#"["echo", "a \"q\""]"#),
            Ok(Some(vec!["echo".into(), "a \"q\"".into()]))
        );
        assert_eq!(parse_json_array("[\"broken\""), Ok(None));
        assert_eq!(parse_json_array("echo [x]"), Ok(None));
        assert!(parse_json_array("[1, 2]").is_err());
        assert_eq!(parse_json_array("[]"), Ok(Some(vec![])));
    }
}
