//! Which packages of an image have updates: its dpkg database (Debian,
//! Ubuntu) or apk database (Alpine), read from the image's files, against
//! the package indexes of the sources the image itself is configured with,
//! fetched over HTTP. Nothing runs in the image and nothing in it changes:
//! the indexes are read directly, which needs no container, no root and no
//! package manager of the image's architecture, and lets images that share
//! sources share the downloads.
//!
//! An update is a *security* update when the newest version is offered by
//! a security suite (`bookworm-security`, `jammy-security`, the old
//! `buster/updates`). Alpine has no such suite: its updates are never
//! counted as security updates. Packages of a foreign architecture
//! (multiarch) are not checked; index signatures are not verified (the
//! check only reports, it installs nothing).
#![cfg_attr(not(test), deny(clippy::print_stdout, clippy::print_stderr))]

pub mod apk;
pub mod deb;
mod fetch;
pub mod version;

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::io::Read;

use serde::{Deserialize, Serialize};

pub use fetch::{FetchError, Fetcher};

/// The files of an image, read without running it.
pub trait ImageFiles {
    /// A regular file's bytes; `None` when there is none.
    fn read(&self, path: &str) -> Option<Vec<u8>>;
    /// The names in a directory; empty when there is none.
    fn list(&self, dir: &str) -> Vec<String>;
}

/// One package with a newer version in the image's sources.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Update {
    pub name: String,
    pub from: String,
    pub to: String,
    pub security: bool,
}

impl std::fmt::Display for Update {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} → {}", self.name, self.from, self.to)?;
        if self.security {
            write!(f, " (security)")?;
        }
        Ok(())
    }
}

/// What a check found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// `dpkg` or `apk`.
    pub manager: String,
    /// How many packages are installed.
    pub installed: usize,
    /// The packages with updates, by name.
    pub updates: Vec<Update>,
    /// The sources that could not be read, each `URL: why`.
    pub unreachable: Vec<String>,
}

impl Report {
    pub fn security(&self) -> usize {
        self.updates.iter().filter(|u| u.security).count()
    }
}

/// Why an image cannot be checked at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    #[error("it has no package database (neither /var/lib/dpkg/status nor /lib/apk/db/installed)")]
    NoDatabase,
}

/// Where the image's package manager keeps what it knows.
enum Database {
    Dpkg(String),
    Apk(String),
}

fn database(files: &dyn ImageFiles) -> Result<Database, CheckError> {
    let text = |p: &str| {
        files
            .read(p)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    };
    if let Some(status) = text("/var/lib/dpkg/status") {
        return Ok(Database::Dpkg(status));
    }
    if let Some(db) = text("/lib/apk/db/installed") {
        return Ok(Database::Apk(db));
    }
    Err(CheckError::NoDatabase)
}

/// An index to read: the URLs to try, and whether it is a security
/// suite's.
struct Index {
    urls: Vec<String>,
    security: bool,
}

/// What a check reads from the image: its package manager, installed
/// packages, architecture, and the indexes of its sources.
struct Image {
    dpkg: bool,
    installed: Vec<deb::Installed>,
    arch: String,
    indexes: Vec<Index>,
}

fn image(files: &dyn ImageFiles) -> Result<Image, CheckError> {
    Ok(match database(files)? {
        Database::Dpkg(status) => {
            let installed = deb::installed(&status);
            let arch = deb::native_arch(&installed).unwrap_or_else(|| "amd64".into());
            let indexes = deb_sources(files)
                .iter()
                .flat_map(|s| {
                    s.packages_urls(&arch).into_iter().map(|urls| Index {
                        urls,
                        security: s.security(),
                    })
                })
                .collect();
            Image {
                dpkg: true,
                installed,
                arch,
                indexes,
            }
        }
        Database::Apk(db) => {
            let installed = apk::installed(&db);
            let arch = apk_arch(files, &installed);
            let indexes = apk_repositories(files)
                .iter()
                .map(|r| Index {
                    urls: vec![apk::index_url(r, &arch)],
                    security: false,
                })
                .collect();
            Image {
                dpkg: false,
                installed,
                arch,
                indexes,
            }
        }
    })
}

impl Image {
    fn cmp(&self, a: &str, b: &str) -> Ordering {
        if self.dpkg {
            version::deb_cmp(a, b)
        } else {
            version::apk_cmp(a, b)
        }
    }

    fn ours(&self, arch: &str) -> bool {
        arch == self.arch || arch == "all" || arch == "noarch" || arch.is_empty()
    }

    /// What one index offers (for this architecture), or why it could not
    /// be read.
    fn offered(&self, index: &Index, fetcher: &Fetcher) -> Result<Vec<(String, String)>, String> {
        let offered = match fetcher.first(&index.urls) {
            Ok((_, bytes)) if self.dpkg => deb::offered(&String::from_utf8_lossy(&bytes)),
            Ok((_, bytes)) => match apkindex(&bytes) {
                Some(text) => apk::offered(&text),
                None => return Err(format!("{}: not an APKINDEX", index.urls[0])),
            },
            Err(FetchError::NotFound { .. }) => {
                return Err(format!("{}: not found", index.urls[0]))
            }
            Err(e) => return Err(e.to_string()),
        };
        Ok(offered
            .into_iter()
            .filter(|(_, _, a)| self.ours(a))
            .map(|(n, v, _)| (n, v))
            .collect())
    }
}

/// Checks the image's installed packages against its sources.
pub fn check(files: &dyn ImageFiles, fetcher: &Fetcher) -> Result<Report, CheckError> {
    let image = image(files)?;
    // the newest version each package has anywhere, and whether a
    // security suite offers it
    let mut newest: BTreeMap<String, (String, bool)> = BTreeMap::new();
    let mut unreachable = Vec::new();
    for index in &image.indexes {
        let offered = match image.offered(index, fetcher) {
            Ok(o) => o,
            Err(e) => {
                unreachable.push(e);
                continue;
            }
        };
        for (name, version) in offered {
            let entry = newest
                .entry(name)
                .or_insert((version.clone(), index.security));
            match image.cmp(&version, &entry.0) {
                Ordering::Greater => *entry = (version, index.security),
                Ordering::Equal => entry.1 |= index.security,
                Ordering::Less => {}
            }
        }
    }
    let mut updates: Vec<Update> = image
        .installed
        .iter()
        .filter(|p| image.ours(&p.arch))
        .filter_map(|p| {
            let (to, security) = newest.get(&p.name)?;
            (image.cmp(to, &p.version) == Ordering::Greater).then(|| Update {
                name: p.name.clone(),
                from: p.version.clone(),
                to: to.clone(),
                security: *security,
            })
        })
        .collect();
    updates.sort_by(|a, b| a.name.cmp(&b.name));
    updates.dedup_by(|a, b| a.name == b.name);
    Ok(Report {
        manager: if image.dpkg { "dpkg" } else { "apk" }.to_string(),
        installed: image.installed.len(),
        updates,
        unreachable,
    })
}

/// What the image's sources say about themselves now (each suite's
/// `Release` file, or an Alpine repository's index): when this is as it
/// was, a check would find what it found then.
pub fn source_state(files: &dyn ImageFiles, fetcher: &Fetcher) -> Result<Vec<u8>, CheckError> {
    let urls: Vec<Vec<String>> = match database(files)? {
        Database::Dpkg(status) => {
            let arch = deb::native_arch(&deb::installed(&status)).unwrap_or_default();
            deb_sources(files)
                .iter()
                .map(|s| {
                    // the Release file names every index's hash; a flat
                    // repository may have none, then its index stands in
                    let mut urls = s.release_urls();
                    urls.extend(s.packages_urls(&arch).into_iter().flatten().take(1));
                    urls
                })
                .collect()
        }
        Database::Apk(db) => {
            let arch = apk_arch(files, &apk::installed(&db));
            apk_repositories(files)
                .iter()
                .map(|r| vec![apk::index_url(r, &arch)])
                .collect()
        }
    };
    let mut state = Vec::new();
    for urls in urls {
        match fetcher.first(&urls) {
            Ok((url, bytes)) => {
                state.extend_from_slice(url.as_bytes());
                state.push(0);
                state.extend_from_slice(&bytes);
            }
            Err(e) => state.extend_from_slice(e.to_string().as_bytes()),
        }
        state.push(0);
    }
    Ok(state)
}

fn deb_sources(files: &dyn ImageFiles) -> Vec<deb::Source> {
    let text = |p: &str| {
        files
            .read(p)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    };
    let mut out = text("/etc/apt/sources.list")
        .map(|t| deb::sources_list(&t))
        .unwrap_or_default();
    for name in files.list("/etc/apt/sources.list.d") {
        let path = format!("/etc/apt/sources.list.d/{name}");
        if name.ends_with(".list") {
            out.extend(
                text(&path)
                    .map(|t| deb::sources_list(&t))
                    .unwrap_or_default(),
            );
        } else if name.ends_with(".sources") {
            out.extend(
                text(&path)
                    .map(|t| deb::sources_deb822(&t))
                    .unwrap_or_default(),
            );
        }
    }
    out
}

fn apk_repositories(files: &dyn ImageFiles) -> Vec<String> {
    files
        .read("/etc/apk/repositories")
        .map(|b| apk::repositories(&String::from_utf8_lossy(&b)))
        .unwrap_or_default()
}

fn apk_arch(files: &dyn ImageFiles, installed: &[deb::Installed]) -> String {
    files
        .read("/etc/apk/arch")
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .filter(|a| !a.is_empty())
        .or_else(|| {
            installed
                .iter()
                .map(|p| p.arch.clone())
                .find(|a| a != "noarch")
        })
        .unwrap_or_else(|| "x86_64".into())
}

/// The `APKINDEX` text inside an `APKINDEX.tar.gz`.
fn apkindex(bytes: &[u8]) -> Option<String> {
    let mut tar = Vec::new();
    flate2::read::MultiGzDecoder::new(bytes)
        .read_to_end(&mut tar)
        .ok()?;
    let mut archive = tar::Archive::new(&tar[..]);
    for entry in archive.entries().ok()? {
        let mut entry = entry.ok()?;
        if entry.path().ok()?.as_os_str() == "APKINDEX" {
            let mut text = String::new();
            entry.read_to_string(&mut text).ok()?;
            return Some(text);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::TcpListener;

    /// An image's files, in memory.
    struct Files(BTreeMap<&'static str, String>);

    impl ImageFiles for Files {
        fn read(&self, path: &str) -> Option<Vec<u8>> {
            self.0.get(path).map(|t| t.clone().into_bytes())
        }
        fn list(&self, dir: &str) -> Vec<String> {
            let prefix = format!("{dir}/");
            self.0
                .keys()
                .filter_map(|k| k.strip_prefix(prefix.as_str()))
                .map(str::to_string)
                .collect()
        }
    }

    /// Serves `files` (path → body) on loopback until the test ends.
    fn serve(files: BTreeMap<String, Vec<u8>>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let mut stream = stream.unwrap();
                let mut buf = [0u8; 4096];
                let n = std::io::Read::read(&mut stream, &mut buf).unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]);
                let path = req.split_whitespace().nth(1).unwrap_or("/").to_string();
                let reply = match files.get(&path) {
                    Some(body) => {
                        let mut r = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        )
                        .into_bytes();
                        r.extend_from_slice(body);
                        r
                    }
                    None => {
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            .to_vec()
                    }
                };
                let _ = stream.write_all(&reply);
            }
        });
        addr
    }

    fn gz(text: &str) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(text.as_bytes()).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn debian_updates_and_security_updates_are_found() {
        let main = "Package: openssl\nVersion: 3.0.11-1~deb12u1\nArchitecture: amd64\n\nPackage: tzdata\nVersion: 2024a-0+deb12u1\nArchitecture: all\n\nPackage: curl\nVersion: 7.88.1-10+deb12u5\nArchitecture: amd64\n";
        let security = "Package: openssl\nVersion: 3.0.13-1~deb12u1\nArchitecture: amd64\n\nPackage: dpkg\nVersion: 1.21.22\nArchitecture: arm64\n";
        let addr = serve(BTreeMap::from([
            (
                "/debian/dists/bookworm/main/binary-amd64/Packages.gz".to_string(),
                gz(main),
            ),
            (
                "/security/dists/bookworm-security/main/binary-amd64/Packages".to_string(),
                security.as_bytes().to_vec(),
            ),
        ]));
        let files = Files(BTreeMap::from([
            ("/var/lib/dpkg/status", "Package: dpkg\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1.21.22\n\nPackage: openssl\nStatus: install ok installed\nArchitecture: amd64\nVersion: 3.0.11-1~deb12u1\n\nPackage: tzdata\nStatus: install ok installed\nArchitecture: all\nVersion: 2023c-5\n\nPackage: curl\nStatus: install ok installed\nArchitecture: amd64\nVersion: 7.88.1-10+deb12u5\n".to_string()),
            ("/etc/apt/sources.list", format!("deb http://{addr}/debian bookworm main\n")),
            ("/etc/apt/sources.list.d/security.sources", format!("Types: deb\nURIs: http://{addr}/security\nSuites: bookworm-security\nComponents: main\n\nTypes: deb\nURIs: http://{addr}/gone\nSuites: bookworm\nComponents: main\n")),
        ]));
        let r = check(&files, &Fetcher::default()).unwrap();
        assert_eq!(r.manager, "dpkg");
        assert_eq!(r.installed, 4);
        let shown: Vec<String> = r.updates.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "openssl 3.0.11-1~deb12u1 → 3.0.13-1~deb12u1 (security)",
                "tzdata 2023c-5 → 2024a-0+deb12u1"
            ]
        );
        assert_eq!(r.security(), 1);
        assert_eq!(r.unreachable.len(), 1, "{:?}", r.unreachable);
        assert!(r.unreachable[0].contains("/gone/"), "{:?}", r.unreachable);
        // no database: said so
        let none = Files(BTreeMap::new());
        assert_eq!(
            check(&none, &Fetcher::default()),
            Err(CheckError::NoDatabase)
        );
        // a server that is not there: a warning naming it, no updates
        let files = Files(BTreeMap::from([
            (
                "/var/lib/dpkg/status",
                "Package: dpkg\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1\n"
                    .to_string(),
            ),
            (
                "/etc/apt/sources.list",
                "deb http://127.0.0.1:9/debian bookworm main\n".to_string(),
            ),
        ]));
        let r = check(&files, &Fetcher::default()).unwrap();
        assert!(r.updates.is_empty());
        assert!(
            r.unreachable[0].starts_with(
                "http://127.0.0.1:9/debian/dists/bookworm/main/binary-amd64/Packages.gz"
            ),
            "{:?}",
            r.unreachable
        );
    }

    /// An APKINDEX.tar.gz as Alpine publishes it: a gzip'd tar holding
    /// `APKINDEX` (the signature stream before it left out).
    fn apkindex_tar(text: &str) -> Vec<u8> {
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(text.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, "APKINDEX", text.as_bytes())
            .unwrap();
        let bytes = tar.into_inner().unwrap();
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&bytes).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn alpine_updates_are_found() {
        let index = "P:busybox\nV:1.36.1-r20\nA:x86_64\n\nP:musl\nV:1.2.4-r2\nA:x86_64\n\nP:zlib\nV:1.3.1-r0\nA:x86_64\n";
        let addr = serve(BTreeMap::from([(
            "/alpine/v3.19/main/x86_64/APKINDEX.tar.gz".to_string(),
            apkindex_tar(index),
        )]));
        let files = Files(BTreeMap::from([
            (
                "/lib/apk/db/installed",
                "P:busybox\nV:1.36.1-r15\nA:x86_64\n\nP:musl\nV:1.2.4-r2\nA:x86_64\n".to_string(),
            ),
            (
                "/etc/apk/repositories",
                format!("http://{addr}/alpine/v3.19/main\nhttp://{addr}/alpine/v3.19/community\n"),
            ),
            ("/etc/apk/arch", "x86_64\n".to_string()),
        ]));
        let r = check(&files, &Fetcher::default()).unwrap();
        assert_eq!(r.manager, "apk");
        let shown: Vec<String> = r.updates.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["busybox 1.36.1-r15 → 1.36.1-r20"]);
        assert_eq!(r.security(), 0);
        assert_eq!(r.unreachable.len(), 1, "{:?}", r.unreachable);
        assert!(
            r.unreachable[0].contains("/community/"),
            "{:?}",
            r.unreachable
        );
    }
}
