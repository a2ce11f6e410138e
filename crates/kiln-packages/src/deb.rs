//! Debian and Ubuntu: the dpkg database (`/var/lib/dpkg/status`), the
//! sources apt is configured with (`/etc/apt/sources.list`, `.list` and
//! deb822 `.sources` files in `sources.list.d`) and the `Packages` indexes
//! they publish.

use std::collections::BTreeMap;

/// One deb822 paragraph: field → value (continuation lines joined by
/// newlines). Field names are matched case-insensitively, as apt does.
pub type Paragraph = BTreeMap<String, String>;

/// The paragraphs of a deb822 text (`status`, `Packages`, `.sources`).
pub fn paragraphs(text: &str) -> Vec<Paragraph> {
    let mut out = Vec::new();
    let mut cur = Paragraph::new();
    let mut last: Option<String> = None;
    for line in text.lines() {
        if line.trim().is_empty() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            last = None;
        } else if line.starts_with('#') {
            continue;
        } else if line.starts_with([' ', '\t']) {
            if let Some(v) = last.as_ref().and_then(|k| cur.get_mut(k)) {
                v.push('\n');
                v.push_str(line.trim());
            }
        } else if let Some((k, v)) = line.split_once(':') {
            let k = k.trim().to_ascii_lowercase();
            cur.insert(k.clone(), v.trim().to_string());
            last = Some(k);
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// An installed package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    pub name: String,
    pub version: String,
    pub arch: String,
}

/// The installed packages of a dpkg status file.
pub fn installed(status: &str) -> Vec<Installed> {
    paragraphs(status)
        .into_iter()
        .filter(|p| p.get("status").is_some_and(|s| s.ends_with(" installed")))
        .filter_map(|p| {
            Some(Installed {
                name: p.get("package")?.clone(),
                version: p.get("version")?.clone(),
                arch: p.get("architecture").cloned().unwrap_or_default(),
            })
        })
        .collect()
}

/// The machine's architecture in a dpkg database: dpkg's own.
pub fn native_arch(installed: &[Installed]) -> Option<String> {
    installed
        .iter()
        .find(|p| p.name == "dpkg")
        .map(|p| p.arch.clone())
}

/// A package source apt reads: `deb URI SUITE [COMPONENT…]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub uri: String,
    pub suite: String,
    pub components: Vec<String>,
    /// `arch=` / `Architectures:`, when the source names them.
    pub archs: Option<Vec<String>>,
}

impl Source {
    /// A security suite (`bookworm-security`, `jammy-security`, the old
    /// `buster/updates`): what it publishes are security updates.
    pub fn security(&self) -> bool {
        let suite = self.suite.trim_end_matches('/');
        suite.ends_with("-security") || suite.ends_with("/updates")
    }

    fn base(&self) -> String {
        self.uri.trim_end_matches('/').to_string()
    }

    /// A flat repository's directory (`deb URI DIR/`).
    fn flat_dir(&self) -> String {
        match self.suite.trim_end_matches('/') {
            "" | "." => self.base(),
            d => format!("{}/{d}", self.base()),
        }
    }

    /// Where its `Release` file is (whose change means the source changed).
    pub fn release_urls(&self) -> Vec<String> {
        let dir = if self.components.is_empty() {
            self.flat_dir()
        } else {
            format!("{}/dists/{}", self.base(), self.suite)
        };
        vec![format!("{dir}/InRelease"), format!("{dir}/Release")]
    }

    /// Each index it publishes for `arch`, each as the URLs to try
    /// (compressed first).
    pub fn packages_urls(&self, arch: &str) -> Vec<Vec<String>> {
        if self
            .archs
            .as_ref()
            .is_some_and(|a| !a.iter().any(|x| x == arch))
        {
            return Vec::new();
        }
        let dirs: Vec<String> = if self.components.is_empty() {
            // a flat repository: `deb URI DIR/`
            vec![self.flat_dir()]
        } else {
            self.components
                .iter()
                .map(|c| format!("{}/dists/{}/{c}/binary-{arch}", self.base(), self.suite))
                .collect()
        };
        dirs.into_iter()
            .map(|d| vec![format!("{d}/Packages.gz"), format!("{d}/Packages")])
            .collect()
    }
}

/// The `deb` lines of a one-line-style sources file.
pub fn sources_list(text: &str) -> Vec<Source> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let Some(rest) = line
            .strip_prefix("deb ")
            .or_else(|| line.strip_prefix("deb\t"))
        else {
            continue;
        };
        let mut rest = rest.trim();
        let mut archs = None;
        if let Some(opts) = rest.strip_prefix('[') {
            let Some((opts, after)) = opts.split_once(']') else {
                continue;
            };
            for opt in opts.split_whitespace() {
                if let Some(a) = opt.strip_prefix("arch=") {
                    archs = Some(a.split(',').map(str::to_string).collect());
                }
            }
            rest = after.trim();
        }
        let mut words = rest.split_whitespace();
        let (Some(uri), Some(suite)) = (words.next(), words.next()) else {
            continue;
        };
        out.push(Source {
            uri: uri.to_string(),
            suite: suite.to_string(),
            components: words.map(str::to_string).collect(),
            archs,
        });
    }
    out
}

/// The `deb` sources of a deb822 `.sources` file (each URI and suite).
pub fn sources_deb822(text: &str) -> Vec<Source> {
    let mut out = Vec::new();
    for p in paragraphs(text) {
        let words = |k: &str| -> Vec<String> {
            p.get(k)
                .map(|v| v.split_whitespace().map(str::to_string).collect())
                .unwrap_or_default()
        };
        if !words("types").iter().any(|t| t == "deb")
            || p.get("enabled")
                .is_some_and(|e| e.eq_ignore_ascii_case("no"))
        {
            continue;
        }
        let archs = p.get("architectures").map(|_| words("architectures"));
        for uri in words("uris") {
            for suite in words("suites") {
                out.push(Source {
                    uri: uri.clone(),
                    suite,
                    components: words("components"),
                    archs: archs.clone(),
                });
            }
        }
    }
    out
}

/// The packages an index offers: (name, version, architecture).
pub fn offered(packages: &str) -> Vec<(String, String, String)> {
    paragraphs(packages)
        .into_iter()
        .filter_map(|p| {
            Some((
                p.get("package")?.clone(),
                p.get("version")?.clone(),
                p.get("architecture").cloned().unwrap_or_default(),
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_and_sources() {
        let status = "Package: dpkg\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1.21.22\nDescription: x\n more\n\nPackage: gone\nStatus: deinstall ok config-files\nVersion: 1\n\nPackage: openssl\nStatus: install ok installed\nArchitecture: amd64\nVersion: 3.0.11-1~deb12u1\n";
        let i = installed(status);
        assert_eq!(i.len(), 2);
        assert_eq!(native_arch(&i).as_deref(), Some("amd64"));
        let s = sources_list(
            "# comment\ndeb http://deb.debian.org/debian bookworm main contrib\ndeb [arch=amd64 trusted=yes] http://127.0.0.1:8000/debian bookworm-security main # sec\ndeb-src http://x y z\ndeb http://flat.example/repo ./\n",
        );
        assert_eq!(s.len(), 3);
        assert!(!s[0].security() && s[1].security());
        assert_eq!(
            s[0].packages_urls("amd64")[1][0],
            "http://deb.debian.org/debian/dists/bookworm/contrib/binary-amd64/Packages.gz"
        );
        assert!(s[1].packages_urls("arm64").is_empty());
        assert_eq!(
            s[2].packages_urls("amd64")[0][1],
            "http://flat.example/repo/Packages"
        );
        let d = sources_deb822(
            "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\nTypes: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\nComponents: main\n\nTypes: deb-src\nURIs: http://x\nSuites: y\nComponents: main\n",
        );
        assert_eq!(d.len(), 3);
        assert!(d[2].security());
        assert_eq!(d[1].suite, "bookworm-updates");
    }
}
