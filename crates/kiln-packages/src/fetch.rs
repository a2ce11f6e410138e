//! Package indexes over HTTP, each URL fetched once per process (images
//! of one factory share their sources), `.gz` files unpacked.

use std::collections::HashMap;
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Why an index could not be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// The server has no such file.
    #[error("{url}: not found")]
    NotFound { url: String },
    /// The server could not be reached or failed.
    #[error("{url}: {message}")]
    Unreachable { url: String, message: String },
}

/// A fetched file, or why there is none.
type Fetched = Result<Arc<Vec<u8>>, FetchError>;

/// Fetches and keeps index files.
pub struct Fetcher {
    agent: ureq::Agent,
    cache: Mutex<HashMap<String, Fetched>>,
}

impl Default for Fetcher {
    fn default() -> Self {
        Fetcher::new(Duration::from_secs(30))
    }
}

impl Fetcher {
    pub fn new(timeout: Duration) -> Self {
        Fetcher {
            agent: ureq::AgentBuilder::new()
                .timeout_connect(Duration::from_secs(10))
                .timeout(timeout)
                .build(),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The bytes at `url` (unpacked when it ends in `.gz`).
    pub fn get(&self, url: &str) -> Fetched {
        if let Some(hit) = self.cache.lock().expect("fetch cache").get(url) {
            return hit.clone();
        }
        let got = self.download(url).map(Arc::new);
        self.cache
            .lock()
            .expect("fetch cache")
            .insert(url.to_string(), got.clone());
        got
    }

    /// The first of `urls` the server has.
    pub fn first(&self, urls: &[String]) -> Result<(String, Arc<Vec<u8>>), FetchError> {
        let mut last = None;
        for url in urls {
            match self.get(url) {
                Ok(bytes) => return Ok((url.clone(), bytes)),
                Err(e @ FetchError::NotFound { .. }) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(FetchError::NotFound { url: String::new() }))
    }

    fn download(&self, url: &str) -> Result<Vec<u8>, FetchError> {
        let unreachable = |message: String| FetchError::Unreachable {
            url: url.to_string(),
            message,
        };
        let response = match self.agent.get(url).call() {
            Ok(r) => r,
            Err(ureq::Error::Status(404 | 410, _)) => {
                return Err(FetchError::NotFound {
                    url: url.to_string(),
                })
            }
            Err(ureq::Error::Status(code, _)) => return Err(unreachable(format!("HTTP {code}"))),
            Err(e) => return Err(unreachable(e.to_string())),
        };
        let mut body = Vec::new();
        response
            .into_reader()
            .read_to_end(&mut body)
            .map_err(|e| unreachable(e.to_string()))?;
        if !url.ends_with(".gz") || url.ends_with(".tar.gz") {
            return Ok(body);
        }
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&body[..])
            .read_to_end(&mut out)
            .map_err(|e| unreachable(format!("unpacking: {e}")))?;
        Ok(out)
    }
}
