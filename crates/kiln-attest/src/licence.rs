//! Licences as packages declare them, as SPDX licence identifiers.
//!
//! Debian packages name their licences in `/usr/share/doc/PKG/copyright`;
//! in the machine-readable format (DEP-5) every `Files` paragraph has a
//! `License` line of short names (`GPL-2+`, `Expat`, `BSD-3-clause`) joined
//! by `or`, `and` and `,`. Alpine's apk database has an `L:` field that is
//! mostly SPDX already. A name with an SPDX identifier becomes it; any
//! other becomes a `LicenseRef-` of its own, with the text the package
//! gives for it (or a line saying where it was named).

use std::collections::BTreeMap;

use kiln_packages::deb::paragraphs;

/// Debian short names and common spellings → SPDX identifiers (all in the
/// SPDX licence list, so CycloneDX's schema accepts them as `id`).
const NAMES: &[(&str, &str)] = &[
    ("gpl-1", "GPL-1.0-only"),
    ("gpl-1+", "GPL-1.0-or-later"),
    ("gpl-2", "GPL-2.0-only"),
    ("gpl-2+", "GPL-2.0-or-later"),
    ("gpl-2.0", "GPL-2.0-only"),
    ("gpl-2.0+", "GPL-2.0-or-later"),
    ("gpl-2.0-only", "GPL-2.0-only"),
    ("gpl-2.0-or-later", "GPL-2.0-or-later"),
    ("gpl-3", "GPL-3.0-only"),
    ("gpl-3+", "GPL-3.0-or-later"),
    ("gpl-3.0", "GPL-3.0-only"),
    ("gpl-3.0+", "GPL-3.0-or-later"),
    ("gpl-3.0-only", "GPL-3.0-only"),
    ("gpl-3.0-or-later", "GPL-3.0-or-later"),
    ("lgpl-2", "LGPL-2.0-only"),
    ("lgpl-2+", "LGPL-2.0-or-later"),
    ("lgpl-2.0", "LGPL-2.0-only"),
    ("lgpl-2.0+", "LGPL-2.0-or-later"),
    ("lgpl-2.1", "LGPL-2.1-only"),
    ("lgpl-2.1+", "LGPL-2.1-or-later"),
    ("lgpl-2.1-only", "LGPL-2.1-only"),
    ("lgpl-2.1-or-later", "LGPL-2.1-or-later"),
    ("lgpl-3", "LGPL-3.0-only"),
    ("lgpl-3+", "LGPL-3.0-or-later"),
    ("lgpl-3.0", "LGPL-3.0-only"),
    ("lgpl-3.0+", "LGPL-3.0-or-later"),
    ("lgpl-3.0-only", "LGPL-3.0-only"),
    ("lgpl-3.0-or-later", "LGPL-3.0-or-later"),
    ("agpl-3", "AGPL-3.0-only"),
    ("agpl-3+", "AGPL-3.0-or-later"),
    ("agpl-3.0-only", "AGPL-3.0-only"),
    ("agpl-3.0-or-later", "AGPL-3.0-or-later"),
    ("gfdl-1.2", "GFDL-1.2-only"),
    ("gfdl-1.2+", "GFDL-1.2-or-later"),
    ("gfdl-1.3", "GFDL-1.3-only"),
    ("gfdl-1.3+", "GFDL-1.3-or-later"),
    ("gfdl-nis", "GFDL-1.3-no-invariants-or-later"),
    ("apache-2", "Apache-2.0"),
    ("apache-2.0", "Apache-2.0"),
    ("artistic", "Artistic-1.0-Perl"),
    ("artistic-1.0-perl", "Artistic-1.0-Perl"),
    ("artistic-2", "Artistic-2.0"),
    ("artistic-2.0", "Artistic-2.0"),
    ("bsd-2-clause", "BSD-2-Clause"),
    ("bsd-3-clause", "BSD-3-Clause"),
    ("bsd-4-clause", "BSD-4-Clause"),
    ("0bsd", "0BSD"),
    ("expat", "MIT"),
    ("mit", "MIT"),
    ("mit-0", "MIT-0"),
    ("x11", "X11"),
    ("isc", "ISC"),
    ("zlib", "Zlib"),
    ("bzip2-1.0.6", "bzip2-1.0.6"),
    ("curl", "curl"),
    ("openssl", "OpenSSL"),
    ("mpl-1.1", "MPL-1.1"),
    ("mpl-2.0", "MPL-2.0"),
    ("cc0", "CC0-1.0"),
    ("cc0-1.0", "CC0-1.0"),
    ("cc-by-4.0", "CC-BY-4.0"),
    ("cc-by-sa-4.0", "CC-BY-SA-4.0"),
    ("bsl-1.0", "BSL-1.0"),
    ("psf-2", "PSF-2.0"),
    ("psf-2.0", "PSF-2.0"),
    ("python-2.0", "Python-2.0"),
    ("unlicense", "Unlicense"),
    ("wtfpl", "WTFPL"),
    ("fsfap", "FSFAP"),
    ("fsful", "FSFUL"),
    ("fsfullr", "FSFULLR"),
    ("unicode-dfs-2016", "Unicode-DFS-2016"),
    ("sleepycat", "Sleepycat"),
    ("ofl-1.1", "OFL-1.1"),
    ("ijg", "IJG"),
    ("libpng", "Libpng"),
    ("libtiff", "libtiff"),
    ("hpnd", "HPND"),
    ("ntp", "NTP"),
    ("postgresql", "PostgreSQL"),
    ("epl-2.0", "EPL-2.0"),
    ("cddl-1.0", "CDDL-1.0"),
    ("ruby", "Ruby"),
    ("vim", "Vim"),
];

/// A package's declared licences: SPDX identifiers, and `LicenseRef-`s
/// with their texts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Declared {
    /// Distinct identifiers (SPDX or `LicenseRef-`), in order of appearance.
    pub ids: Vec<String>,
    /// `LicenseRef-` identifier → the licence's name as the package gives it
    /// and its text (or where it was named).
    pub refs: BTreeMap<String, (String, String)>,
}

impl Declared {
    /// One SPDX licence expression for all of them (they all apply).
    pub fn expression(&self) -> Option<String> {
        match self.ids.len() {
            0 => None,
            1 => Some(self.ids[0].clone()),
            _ => Some(
                self.ids
                    .iter()
                    .map(|id| id.to_string())
                    .collect::<Vec<_>>()
                    .join(" AND "),
            ),
        }
    }

    fn add(&mut self, name: &str, text: &dyn Fn(&str) -> String) {
        let name = name.trim();
        if name.is_empty() {
            return;
        }
        let id = match spdx_id(name) {
            Some(id) => id.to_string(),
            None => {
                let id = licence_ref(name);
                self.refs
                    .entry(id.clone())
                    .or_insert_with(|| (name.to_string(), text(name)));
                id
            }
        };
        if !self.ids.contains(&id) {
            self.ids.push(id);
        }
    }
}

/// The SPDX identifier of a licence name, when it has one.
pub fn spdx_id(name: &str) -> Option<&'static str> {
    let key = name.trim().to_ascii_lowercase();
    NAMES.iter().find(|(n, _)| *n == key).map(|(_, id)| *id)
}

/// `LicenseRef-` + the name with every character SPDX does not allow in
/// an identifier (letters, digits, `.` and `-`) spelt out or replaced.
pub fn licence_ref(name: &str) -> String {
    let mut id = String::from("LicenseRef-");
    for c in name.trim().chars() {
        match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' => id.push(c),
            '+' => id.push_str("-or-later"),
            _ => id.push('-'),
        }
    }
    id
}

/// Splits a licence line (`GPL-2+ or Artistic`, `LGPL-2.1+ and GPL-2+`,
/// `MIT AND (Apache-2.0 OR BSD-3-Clause)`) into licence names. Every name
/// is declared: which of several alternatives applies is the user's choice.
pub fn names(line: &str) -> Vec<String> {
    let line = line.replace(['(', ')'], " ");
    let mut out = Vec::new();
    for part in line.split(',') {
        let mut cur: Vec<&str> = Vec::new();
        for w in part.split_whitespace() {
            let lower = w.to_ascii_lowercase();
            if lower == "or" || lower == "and" {
                if !cur.is_empty() {
                    out.push(cur.join(" "));
                    cur.clear();
                }
            } else {
                cur.push(w);
            }
        }
        if !cur.is_empty() {
            out.push(cur.join(" "));
        }
    }
    out.retain(|n| !n.is_empty());
    out
}

/// The licences a Debian copyright file declares, when it is in the
/// machine-readable format (others declare none that can be read). `path`
/// names the file in the texts of licences without an identifier.
pub fn debian(copyright: &str, path: &str) -> Declared {
    let mut d = Declared::default();
    let paras = paragraphs(copyright);
    let machine_readable = paras
        .first()
        .and_then(|p| p.get("format"))
        .is_some_and(|f| f.contains("copyright-format"));
    if !machine_readable {
        return d;
    }
    // standalone License paragraphs give the texts of the names used
    let texts: BTreeMap<String, String> = paras
        .iter()
        .filter(|p| !p.contains_key("files"))
        .filter_map(|p| {
            let l = p.get("license")?;
            let (name, text) = l.split_once('\n').unwrap_or((l, ""));
            Some((name.trim().to_string(), text.trim().to_string()))
        })
        .filter(|(_, t)| !t.is_empty())
        .collect();
    let text = |name: &str| {
        texts
            .get(name)
            .map(|t| {
                t.lines()
                    .map(|l| if l.trim() == "." { "" } else { l })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_else(|| format!("The licence named \"{name}\" in {path}."))
    };
    for p in paras.iter().filter(|p| p.contains_key("files")) {
        if let Some(l) = p.get("license") {
            let first = l.lines().next().unwrap_or_default();
            for name in names(first) {
                d.add(&name, &text);
            }
        }
    }
    d
}

/// The licences of an apk database's `L:` field.
pub fn apk(field: &str, package: &str) -> Declared {
    let mut d = Declared::default();
    let text = |name: &str| {
        format!("The licence named \"{name}\" by the apk database entry of {package}.")
    };
    for name in names(field) {
        d.add(&name, &text);
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    const COPYRIGHT: &str = "\
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: example

Files: *
Copyright: 2000 Someone
License: GPL-2+ or Artistic

Files: lib/*
Copyright: 2001 Someone Else
License: Expat

Files: odd/*
Copyright: 2002 A Third
License: Custom-Thing+
 This paragraph explains it, inline.

License: Custom-Thing+
 You may do what you like.
 .
 Really.
";

    #[test]
    fn dep5_names_map_to_spdx_and_unknown_ones_to_licence_refs_with_their_text() {
        let d = debian(COPYRIGHT, "/usr/share/doc/example/copyright");
        assert_eq!(
            d.ids,
            [
                "GPL-2.0-or-later",
                "Artistic-1.0-Perl",
                "MIT",
                "LicenseRef-Custom-Thing-or-later"
            ]
        );
        let (name, text) = &d.refs["LicenseRef-Custom-Thing-or-later"];
        assert_eq!(name, "Custom-Thing+");
        assert_eq!(text, "You may do what you like.\n\nReally.");
        assert_eq!(
            d.expression().unwrap(),
            "GPL-2.0-or-later AND Artistic-1.0-Perl AND MIT AND LicenseRef-Custom-Thing-or-later"
        );
    }

    #[test]
    fn a_copyright_file_in_free_form_declares_nothing() {
        let d = debian("This package was debianized by someone.\n\nGPL.\n", "x");
        assert!(d.ids.is_empty() && d.expression().is_none());
    }

    #[test]
    fn apk_fields_are_mostly_spdx_already() {
        let d = apk("MIT AND (Apache-2.0 OR BSD-3-Clause)", "p");
        assert_eq!(d.ids, ["MIT", "Apache-2.0", "BSD-3-Clause"]);
        let d = apk("GPL2 with exception", "p");
        assert_eq!(d.ids, ["LicenseRef-GPL2-with-exception"]);
        assert!(d.refs["LicenseRef-GPL2-with-exception"]
            .1
            .contains("apk database entry of p"));
    }
}
