//! Alpine: the apk database (`/lib/apk/db/installed`), the repositories
//! apk is configured with (`/etc/apk/repositories`) and the `APKINDEX`
//! each publishes (in `ARCH/APKINDEX.tar.gz`).

use crate::deb::Installed;

/// The installed packages of an apk database (`P:`, `V:`, `A:` records
/// separated by blank lines).
pub fn installed(db: &str) -> Vec<Installed> {
    records(db)
        .into_iter()
        .filter_map(|r| {
            let get = |k: &str| r.iter().find(|(f, _)| f == k).map(|(_, v)| v.clone());
            Some(Installed {
                name: get("P")?,
                version: get("V")?,
                arch: get("A").unwrap_or_default(),
            })
        })
        .collect()
}

/// The records of an apk database: (field letter, value) in order.
pub fn records(text: &str) -> Vec<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    for line in text.lines() {
        match line.split_once(':') {
            Some((k, v)) if k.len() == 1 => cur.push((k.to_string(), v.to_string())),
            _ if line.trim().is_empty() && !cur.is_empty() => out.push(std::mem::take(&mut cur)),
            _ => {}
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The repository URLs of `/etc/apk/repositories` (tagged ones, `@tag
/// URL`, included; local paths left out).
pub fn repositories(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.rsplit(' ')
                .next()
                .unwrap_or(l)
                .trim_end_matches('/')
                .to_string()
        })
        .filter(|l| l.starts_with("http://") || l.starts_with("https://"))
        .collect()
}

/// Where a repository's index for `arch` is.
pub fn index_url(repo: &str, arch: &str) -> String {
    format!("{repo}/{arch}/APKINDEX.tar.gz")
}

/// The packages an `APKINDEX` offers: (name, version, architecture).
pub fn offered(index: &str) -> Vec<(String, String, String)> {
    installed(index)
        .into_iter()
        .map(|p| (p.name, p.version, p.arch))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_and_repositories() {
        let db =
            "C:Q1abc=\nP:musl\nV:1.2.4-r2\nA:x86_64\nS:1\n\nP:busybox\nV:1.36.1-r15\nA:x86_64\n";
        let i = installed(db);
        assert_eq!(i.len(), 2);
        assert_eq!(i[1].version, "1.36.1-r15");
        let r = repositories("https://dl-cdn.alpinelinux.org/alpine/v3.19/main\n#x\n@edge https://dl-cdn.alpinelinux.org/alpine/edge/community/\n/media/cdrom/apks\n");
        assert_eq!(r.len(), 2);
        assert_eq!(
            index_url(&r[1], "x86_64"),
            "https://dl-cdn.alpinelinux.org/alpine/edge/community/x86_64/APKINDEX.tar.gz"
        );
    }
}
