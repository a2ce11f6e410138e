//! Package version order: Debian's (dpkg's `verrevcmp` with epochs and
//! revisions, `~` before everything) and Alpine's (apk's numbers, letters,
//! `_suffix`es and `-rN`).

use std::cmp::Ordering;

/// Compares two Debian versions (`[EPOCH:]UPSTREAM[-REVISION]`).
pub fn deb_cmp(a: &str, b: &str) -> Ordering {
    let (ea, ua, ra) = deb_split(a);
    let (eb, ub, rb) = deb_split(b);
    ea.cmp(&eb)
        .then_with(|| verrevcmp(ua, ub))
        .then_with(|| verrevcmp(ra, rb))
}

fn deb_split(v: &str) -> (u64, &str, &str) {
    let (epoch, rest) = match v.split_once(':') {
        Some((e, r)) if e.chars().all(|c| c.is_ascii_digit()) => (e.parse().unwrap_or(0), r),
        _ => (0, v),
    };
    match rest.rsplit_once('-') {
        Some((u, r)) => (epoch, u, r),
        None => (epoch, rest, ""),
    }
}

/// The weight of a non-digit character: `~` sorts before the end of the
/// string, letters before other characters.
fn order(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(b'~') => -1,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => i32::from(c),
        Some(c) => i32::from(c) + 256,
    }
}

fn verrevcmp(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        // the non-digit parts, character by character
        while (i < a.len() && !a[i].is_ascii_digit()) || (j < b.len() && !b[j].is_ascii_digit()) {
            let ac = order(a.get(i).copied().filter(|c| !c.is_ascii_digit()));
            let bc = order(b.get(j).copied().filter(|c| !c.is_ascii_digit()));
            if ac != bc {
                return ac.cmp(&bc);
            }
            if i < a.len() && !a[i].is_ascii_digit() {
                i += 1;
            }
            if j < b.len() && !b[j].is_ascii_digit() {
                j += 1;
            }
        }
        // the digit parts, as numbers
        let (si, sj) = (i, j);
        while i < a.len() && a[i].is_ascii_digit() {
            i += 1;
        }
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        let na = trim_zeros(&a[si..i]);
        let nb = trim_zeros(&b[sj..j]);
        let by_number = na.len().cmp(&nb.len()).then_with(|| na.cmp(nb));
        if by_number != Ordering::Equal {
            return by_number;
        }
    }
    Ordering::Equal
}

fn trim_zeros(d: &[u8]) -> &[u8] {
    let start = d.iter().position(|c| *c != b'0').unwrap_or(d.len());
    &d[start..]
}

/// Compares two Alpine versions (`1.2.3a_rc1-r4`).
pub fn apk_cmp(a: &str, b: &str) -> Ordering {
    let (va, ra) = apk_split(a);
    let (vb, rb) = apk_split(b);
    let (ta, tb) = (apk_tokens(va), apk_tokens(vb));
    for pair in ta.iter().zip(tb.iter()) {
        let o = pair.0.cmp(pair.1);
        if o != Ordering::Equal {
            return o;
        }
    }
    // a version that goes on is newer, unless what follows is a pre-release
    let rest = |t: &[Token]| match t.first() {
        Some(Token::Suffix(rank, _)) if *rank < 0 => Ordering::Less,
        Some(_) => Ordering::Greater,
        None => Ordering::Equal,
    };
    let by_length = match ta.len().cmp(&tb.len()) {
        Ordering::Greater => rest(&ta[tb.len()..]),
        Ordering::Less => rest(&tb[ta.len()..]).reverse(),
        Ordering::Equal => Ordering::Equal,
    };
    by_length.then_with(|| ra.cmp(&rb))
}

fn apk_split(v: &str) -> (&str, u64) {
    match v.rsplit_once("-r") {
        Some((v, r)) if !r.is_empty() && r.chars().all(|c| c.is_ascii_digit()) => {
            (v, r.parse().unwrap_or(0))
        }
        _ => (v, 0),
    }
}

/// One part of an Alpine version, in the order apk ranks them.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Token {
    /// `_alpha`, `_beta`, `_pre`, `_rc` (negative: before the release),
    /// `_cvs`, `_svn`, `_git`, `_hg`, `_p` (after it), with its number.
    Suffix(i32, u64),
    Number(u64),
    Letter(u8),
}

fn apk_tokens(v: &str) -> Vec<Token> {
    let mut out = Vec::new();
    for (i, part) in v.split('_').enumerate() {
        if i > 0 {
            let name: String = part
                .chars()
                .take_while(|c| c.is_ascii_alphabetic())
                .collect();
            let n = part[name.len()..].parse().unwrap_or(0);
            let rank = match name.as_str() {
                "alpha" => -4,
                "beta" => -3,
                "pre" => -2,
                "rc" => -1,
                "cvs" => 1,
                "svn" => 2,
                "git" => 3,
                "hg" => 4,
                "p" => 5,
                _ => 0,
            };
            out.push(Token::Suffix(rank, n));
            continue;
        }
        for piece in part.split('.') {
            let digits: String = piece.chars().take_while(|c| c.is_ascii_digit()).collect();
            if !digits.is_empty() {
                out.push(Token::Number(digits.parse().unwrap_or(0)));
            }
            for c in piece[digits.len()..].bytes() {
                out.push(Token::Letter(c));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::*;

    #[test]
    fn debian_versions() {
        for (a, b, want) in [
            ("3.0.11-1~deb12u1", "3.0.13-1~deb12u1", Less),
            ("1.0", "1.0-1", Less),
            ("1.0~rc1", "1.0", Less),
            ("1:0.9", "2.0", Greater),
            ("2.36-9+deb12u4", "2.36-9+deb12u10", Less),
            ("1.2.10", "1.2.9", Greater),
            ("1.0a", "1.0+", Less),
            ("7.88.1-10+deb12u5", "7.88.1-10+deb12u5", Equal),
            ("0001.0", "1.0", Equal),
        ] {
            assert_eq!(deb_cmp(a, b), want, "{a} {b}");
            assert_eq!(deb_cmp(b, a), want.reverse(), "{b} {a}");
        }
    }

    #[test]
    fn alpine_versions() {
        for (a, b, want) in [
            ("3.1.4-r0", "3.1.4-r1", Less),
            ("1.36.1-r15", "1.36.1-r20", Less),
            ("1.2.3", "1.2.10", Less),
            ("1.0_rc1", "1.0", Less),
            ("1.0", "1.0_p1", Less),
            ("1.0a", "1.0b", Less),
            ("2.0", "1.9.9", Greater),
            ("1.2.3-r2", "1.2.3-r2", Equal),
        ] {
            assert_eq!(apk_cmp(a, b), want, "{a} {b}");
            assert_eq!(apk_cmp(b, a), want.reverse(), "{b} {a}");
        }
    }
}
