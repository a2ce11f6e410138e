//! `ADD <url>`: downloading a remote file into the store's tmp dir,
//! checking it against `--checksum` while it streams.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use kiln_oci::digest::HashWriter;
use kiln_store::Store;

/// A downloaded file, removed when dropped.
pub struct Fetched {
    pub path: PathBuf,
    pub digest: String,
    /// The file name the URL gives (its last path segment).
    pub name: String,
}

impl Drop for Fetched {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

pub fn is_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

/// The file name of a URL: its last non-empty path segment.
pub fn url_name(url: &str) -> String {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let after_host = path.splitn(4, '/').nth(3).unwrap_or("");
    after_host
        .rsplit('/')
        .find(|s| !s.is_empty())
        .unwrap_or("index.html")
        .to_string()
}

/// Downloads `url`; with `expected` (`sha256:…`) a different content is an error.
pub fn fetch(store: &Store, url: &str, expected: Option<&str>) -> Result<Fetched, String> {
    let response = ureq::get(url)
        .timeout(std::time::Duration::from_secs(300))
        .call()
        .map_err(|e| format!("fetching {url}: {e}"))?;
    let path = store.temp_path("fetch");
    let mut fetched = Fetched {
        path: path.clone(),
        digest: String::new(),
        name: url_name(url),
    };
    let file = File::create(&path).map_err(|e| format!("creating {}: {e}", path.display()))?;
    let mut out = HashWriter::new(BufWriter::new(file));
    std::io::copy(&mut response.into_reader(), &mut out)
        .map_err(|e| format!("downloading {url}: {e}"))?;
    let (mut w, digest, _) = out.finish();
    w.flush()
        .map_err(|e| format!("writing {}: {e}", path.display()))?;
    fetched.digest = digest.to_string();
    if let Some(want) = expected.filter(|w| *w != fetched.digest) {
        return Err(format!(
            "checksum mismatch for {url}: expected {want}, got {}",
            fetched.digest
        ));
    }
    Ok(fetched)
}

#[cfg(test)]
mod tests {
    #[test]
    fn names() {
        assert_eq!(
            super::url_name("https://example.com/a/b/tool.tar.gz?x=1"),
            "tool.tar.gz"
        );
        assert_eq!(super::url_name("https://example.com/"), "index.html");
        assert_eq!(super::url_name("http://h:8080/dir/"), "dir");
    }
}
