//! The distribution API over HTTP: manifests and blobs, with Basic and
//! Bearer auth, retries with backoff (5xx, 429 with Retry-After, dropped
//! connections, timeouts) and streaming bodies.

use std::collections::HashMap;
use std::io::Read;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use base64::Engine;

use crate::auth::{self, Credentials};
use crate::{Error, Reference};

/// Accept header for manifests: OCI and Docker, images and indexes.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    /// Registries reached over plain HTTP besides loopback ones.
    pub insecure_registries: Vec<String>,
    /// Extra attempts after a failure that may pass (5xx, 429, dropped connection).
    pub retries: u32,
    /// The first backoff; each retry doubles it.
    pub backoff: Duration,
    /// CA certificates (PEM files) trusted besides the system's.
    pub ca_certs: Vec<std::path::PathBuf>,
}

impl ClientOptions {
    pub fn new() -> Self {
        ClientOptions {
            insecure_registries: vec![],
            retries: 5,
            backoff: Duration::from_millis(200),
            ca_certs: vec![],
        }
    }
}

/// Something to send: nothing, bytes, or a stream that can be reopened for a retry.
pub enum Body<'a> {
    Empty,
    Bytes(&'a [u8]),
    Stream {
        len: u64,
        open: &'a dyn Fn() -> std::io::Result<Box<dyn Read + Send>>,
    },
}

/// Where a cross-repository mount left things.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mount {
    /// The registry linked the blob: nothing to upload.
    Mounted,
    /// The registry declined (202) and opened an upload session instead.
    Upload(String),
}

pub struct Client {
    /// Made when the first request is sent: a command that never reaches
    /// a registry (a build from bases in the store) never reads the
    /// system's CA certificates.
    agent: OnceLock<ureq::Agent>,
    opts: ClientOptions,
    /// Bearer tokens by registry and scope.
    tokens: Mutex<HashMap<String, String>>,
    creds: Mutex<HashMap<String, Option<Credentials>>>,
    /// For registries allowed plain HTTP: whether they answered over HTTPS.
    schemes: Mutex<HashMap<String, &'static str>>,
    /// Bytes of blobs read so far (shared with its siblings).
    downloaded: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// A blob body that counts what is read of it.
struct Counted<R> {
    inner: R,
    total: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.total
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
}

fn status_err(method: &str, url: &str, code: u16, resp: ureq::Response) -> Error {
    let body = resp.into_string().unwrap_or_default();
    let body: String = body.chars().take(300).collect();
    Error::Status {
        method: method.to_string(),
        url: shown(url),
        code,
        body,
    }
}

impl Client {
    pub fn new(opts: ClientOptions) -> Result<Self, Error> {
        let agent = OnceLock::new();
        // CA files named by the user are read now, so a bad one is said
        // before anything else is done
        if !opts.ca_certs.is_empty() {
            let _ = agent.set(make_agent(&opts)?);
        }
        Ok(Client {
            agent,
            opts,
            tokens: Mutex::new(HashMap::new()),
            creds: Mutex::new(HashMap::new()),
            schemes: Mutex::new(HashMap::new()),
            downloaded: Default::default(),
        })
    }

    /// The HTTP agent, made on first use.
    fn agent(&self) -> Result<&ureq::Agent, Error> {
        if let Some(a) = self.agent.get() {
            return Ok(a);
        }
        let made = make_agent(&self.opts)?;
        Ok(self.agent.get_or_init(|| made))
    }

    /// Bytes of blobs this client (and its siblings) has read.
    pub fn downloaded(&self) -> u64 {
        self.downloaded.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A client of its own with the same options (registries allowed
    /// plain HTTP, CA certificates); credentials are looked up again.
    pub fn sibling(&self) -> Result<Client, Error> {
        let mut c = Client::new(self.opts.clone())?;
        c.downloaded = self.downloaded.clone();
        Ok(c)
    }

    /// `https://host/v2/repo`. A registry allowed plain HTTP (loopback, or
    /// named with --insecure-registry) is tried over HTTPS first, as Docker
    /// does, and reached over HTTP when it does not speak TLS.
    pub fn base(&self, r: &Reference) -> String {
        let host = if r.registry == "docker.io" {
            "registry-1.docker.io"
        } else {
            r.registry.as_str()
        };
        let plain_ok = r.is_loopback() || self.opts.insecure_registries.contains(&r.registry);
        let scheme = if plain_ok { self.scheme(host) } else { "https" };
        format!("{scheme}://{host}/v2/{}", r.repository)
    }

    fn scheme(&self, host: &str) -> &'static str {
        if let Some(s) = self
            .schemes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(host)
        {
            return s;
        }
        let tls = match self.agent() {
            Ok(a) => match a
                .get(&format!("https://{host}/v2/"))
                .timeout(Duration::from_secs(5))
                .call()
            {
                Ok(_) | Err(ureq::Error::Status(..)) => "https",
                Err(_) => "http",
            },
            // no agent: the request that follows says why
            Err(_) => "https",
        };
        self.schemes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(host.to_string(), tls);
        tls
    }

    /// Uses `creds` for `registry` from now on instead of what the config
    /// file says (`kiln login` checks them before saving them).
    pub fn use_credentials(&self, registry: &str, creds: Credentials) {
        self.creds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(registry.to_string(), Some(creds));
    }

    fn credentials(&self, registry: &str) -> Result<Option<Credentials>, Error> {
        let mut cache = self.creds.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = cache.get(registry) {
            return Ok(c.clone());
        }
        let c = auth::lookup(registry)?;
        cache.insert(registry.to_string(), c.clone());
        Ok(c)
    }

    fn basic(creds: &Credentials) -> String {
        let raw = format!("{}:{}", creds.username, creds.password.expose());
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }

    /// Answers a 401 challenge: a Bearer token for the scope, or Basic credentials.
    fn authorize(&self, r: &Reference, challenge: &str, scope: &str) -> Result<String, Error> {
        let (scheme, params) = auth::parse_challenge(challenge);
        let creds = self.credentials(&r.registry)?;
        if scheme == "basic" {
            return creds.map(|c| Self::basic(&c)).ok_or_else(|| {
                Error::Auth(format!(
                    "{} needs credentials: run `kiln login {}`",
                    r.registry, r.registry
                ))
            });
        }
        let realm = params.get("realm").ok_or_else(|| {
            Error::Auth(format!(
                "{} sent a Bearer challenge without a realm",
                r.registry
            ))
        })?;
        // ask for what the whole operation needs (pull,push for a push), not
        // just what this request's challenge names, so one token serves it
        let scope = if scope.is_empty() {
            params.get("scope").cloned().unwrap_or_default()
        } else {
            scope.to_string()
        };
        let key = format!("{}|{scope}", r.registry);
        // one token fetch at a time: parallel blob requests share its result
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = tokens.get(&key) {
            return Ok(format!("Bearer {t}"));
        }
        let mut req = self.agent()?.get(realm).query("scope", &scope);
        if let Some(service) = params.get("service") {
            req = req.query("service", service);
        }
        if let Some(c) = &creds {
            req = req.set("Authorization", &Self::basic(c));
        }
        let resp = match req.call() {
            Ok(r) => r,
            Err(ureq::Error::Status(code, _)) => {
                return Err(Error::Auth(format!(
                    "the token service of {} refused ({code}); check `kiln login {}`",
                    r.registry, r.registry
                )))
            }
            Err(e) => {
                return Err(Error::Auth(format!(
                    "reaching the token service of {}: {}",
                    r.registry,
                    transport(&e)
                )))
            }
        };
        let v: serde_json::Value = serde_json::from_reader(resp.into_reader()).map_err(|e| {
            Error::Auth(format!(
                "the token service of {} sent no JSON: {e}",
                r.registry
            ))
        })?;
        let token = v["token"]
            .as_str()
            .or(v["access_token"].as_str())
            .ok_or_else(|| {
                Error::Auth(format!("the token service of {} sent no token", r.registry))
            })?
            .to_string();
        tokens.insert(key, token.clone());
        Ok(format!("Bearer {token}"))
    }

    fn backoff(&self, attempt: u32, retry_after: Option<&str>) -> Duration {
        let base = self.opts.backoff.saturating_mul(1 << attempt.min(6));
        match retry_after.and_then(|v| v.trim().parse::<u64>().ok()) {
            Some(secs) => Duration::from_secs(secs.min(60)).max(base),
            None => base,
        }
    }

    /// Sends a request with auth and retries. `scope` is the token scope
    /// (`repository:NAME:pull` or `…:pull,push`). A 404 is returned as
    /// `Ok(None)`; other failures after the retries are errors.
    pub fn send(
        &self,
        r: &Reference,
        scope: &str,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: &Body,
    ) -> Result<Option<ureq::Response>, Error> {
        // a token this operation's scope already has is sent from the start
        let mut authz: Option<String> = self
            .tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&format!("{}|{scope}", r.registry))
            .map(|t| format!("Bearer {t}"));
        let mut attempt = 0;
        let mut challenged = false;
        loop {
            let mut req = self.agent()?.request(method, url);
            for (k, v) in headers {
                req = req.set(k, v);
            }
            if let Some(a) = &authz {
                req = req.set("Authorization", a);
            }
            let result = match body {
                Body::Empty => req.call(),
                Body::Bytes(b) => req.send_bytes(b),
                Body::Stream { len, open } => {
                    let reader = open().map_err(|e| Error::Io {
                        what: format!("reading what to send to {url}"),
                        source: e,
                    })?;
                    req.set("Content-Length", &len.to_string()).send(reader)
                }
            };
            match result {
                Ok(resp) => return Ok(Some(resp)),
                Err(ureq::Error::Status(404, _)) => return Ok(None),
                Err(ureq::Error::Status(401, resp)) if !challenged => {
                    challenged = true;
                    let challenge = resp
                        .header("WWW-Authenticate")
                        .unwrap_or("Basic")
                        .to_string();
                    authz = Some(self.authorize(r, &challenge, scope)?);
                }
                Err(ureq::Error::Status(code, resp))
                    if (code == 429 || code >= 500) && attempt < self.opts.retries =>
                {
                    let wait = self.backoff(attempt, resp.header("Retry-After"));
                    attempt += 1;
                    std::thread::sleep(wait);
                }
                Err(ureq::Error::Status(code, resp)) => {
                    return Err(status_err(method, url, code, resp))
                }
                Err(e) if attempt < self.opts.retries => {
                    let _ = e;
                    std::thread::sleep(self.backoff(attempt, None));
                    attempt += 1;
                }
                Err(e) => {
                    return Err(Error::Transport {
                        method: method.to_string(),
                        url: shown(url),
                        message: transport(&e),
                    })
                }
            }
        }
    }

    /// The manifest (or index) `r` names: its bytes and media type.
    pub fn get_manifest(&self, r: &Reference) -> Result<(Vec<u8>, String), Error> {
        self.get_manifest_at(r, r.reference())
    }

    pub fn get_manifest_at(
        &self,
        r: &Reference,
        reference: &str,
    ) -> Result<(Vec<u8>, String), Error> {
        let url = format!("{}/manifests/{reference}", self.base(r));
        let scope = format!("repository:{}:pull", r.repository);
        let resp = self
            .send(
                r,
                &scope,
                "GET",
                &url,
                &[("Accept", MANIFEST_ACCEPT)],
                &Body::Empty,
            )?
            .ok_or_else(|| Error::NotFound(format!("{}:{reference}", r.name())))?;
        let media = resp.content_type().to_string();
        Ok((small_body(resp, &url)?, media))
    }

    /// A stream of the blob `digest` of `r`'s repository.
    pub fn get_blob(&self, r: &Reference, digest: &str) -> Result<Box<dyn Read + Send>, Error> {
        let url = format!("{}/blobs/{digest}", self.base(r));
        let scope = format!("repository:{}:pull", r.repository);
        let resp = self
            .send(r, &scope, "GET", &url, &[], &Body::Empty)?
            .ok_or_else(|| Error::NotFound(format!("blob {digest} in {}", r.name())))?;
        Ok(Box::new(Counted {
            inner: resp.into_reader(),
            total: self.downloaded.clone(),
        }))
    }

    /// A small blob of `r`'s repository (a config, a document; at most
    /// 64 MiB) read whole and checked against its digest.
    pub fn get_small_blob(&self, r: &Reference, digest: &str) -> Result<Vec<u8>, Error> {
        let mut bytes = Vec::new();
        self.get_blob(r, digest)?
            .take(64 << 20)
            .read_to_end(&mut bytes)
            .map_err(|e| Error::Io {
                what: format!("reading blob {digest} of {}", r.name()),
                source: e,
            })?;
        let actual = kiln_oci::digest::sha256(&bytes).to_string();
        if actual != digest {
            return Err(Error::Protocol(format!(
                "{}: blob {digest} came with digest {actual}",
                r.name()
            )));
        }
        Ok(bytes)
    }

    pub fn has_blob(&self, r: &Reference, digest: &str) -> Result<bool, Error> {
        let url = format!("{}/blobs/{digest}", self.base(r));
        let scope = format!("repository:{}:pull,push", r.repository);
        Ok(self
            .send(r, &scope, "HEAD", &url, &[], &Body::Empty)?
            .is_some())
    }

    /// Asks the registry to link `digest` from repository `from` into `r`'s.
    pub fn mount_blob(&self, r: &Reference, digest: &str, from: &str) -> Result<Mount, Error> {
        let url = format!("{}/blobs/uploads/?mount={digest}&from={from}", self.base(r));
        let scope = format!("repository:{}:pull,push", r.repository);
        let resp = self
            .send(r, &scope, "POST", &url, &[], &Body::Empty)?
            .ok_or_else(|| Error::NotFound(format!("upload endpoint of {}", r.name())))?;
        if resp.status() == 201 {
            return Ok(Mount::Mounted);
        }
        let location = resp.header("Location").ok_or_else(|| {
            Error::Protocol(format!(
                "{} answered a mount without a Location",
                r.registry
            ))
        })?;
        Ok(Mount::Upload(self.absolute(r, location)))
    }

    fn absolute(&self, r: &Reference, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            return location.to_string();
        }
        let base = self.base(r);
        let origin = base.split("/v2/").next().unwrap_or(&base);
        format!("{origin}{location}")
    }

    /// Uploads a blob in one PUT, streamed from `open()` with bounded memory.
    /// `session` is an upload location a declined mount already opened.
    pub fn upload_blob(
        &self,
        r: &Reference,
        digest: &str,
        len: u64,
        open: &dyn Fn() -> std::io::Result<Box<dyn Read + Send>>,
        session: Option<String>,
    ) -> Result<(), Error> {
        let scope = format!("repository:{}:pull,push", r.repository);
        let location = match session {
            Some(l) => l,
            None => self.open_upload(r, &scope)?,
        };
        let sep = if location.contains('?') { '&' } else { '?' };
        let url = format!("{location}{sep}digest={digest}");
        let headers = [("Content-Type", "application/octet-stream")];
        match self.send(
            r,
            &scope,
            "PUT",
            &url,
            &headers,
            &Body::Stream { len, open },
        ) {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(Error::NotFound(format!("upload session of {}", r.name()))),
            // the registry takes no body this large in one request: send it in chunks
            Err(Error::Status { code: 413, .. }) => self.upload_chunked(r, &scope, digest, open),
            Err(e) => Err(e),
        }
    }

    fn open_upload(&self, r: &Reference, scope: &str) -> Result<String, Error> {
        let url = format!("{}/blobs/uploads/", self.base(r));
        let resp = self
            .send(r, scope, "POST", &url, &[], &Body::Empty)?
            .ok_or_else(|| Error::NotFound(format!("upload endpoint of {}", r.name())))?;
        let loc = resp.header("Location").ok_or_else(|| {
            Error::Protocol(format!(
                "{} opened an upload without a Location",
                r.registry
            ))
        })?;
        Ok(self.absolute(r, loc))
    }

    /// The chunked upload of the distribution spec: PATCHes of at most
    /// `CHUNK` bytes with Content-Range, then a PUT with the digest. Memory
    /// holds one chunk at a time.
    fn upload_chunked(
        &self,
        r: &Reference,
        scope: &str,
        digest: &str,
        open: &dyn Fn() -> std::io::Result<Box<dyn Read + Send>>,
    ) -> Result<(), Error> {
        const CHUNK: usize = 16 << 20;
        let mut location = self.open_upload(r, scope)?;
        let mut reader = open().map_err(|e| Error::Io {
            what: "reading the blob to upload".into(),
            source: e,
        })?;
        let mut offset: u64 = 0;
        let mut buf = vec![0u8; CHUNK];
        loop {
            let mut filled = 0;
            while filled < CHUNK {
                let n = reader.read(&mut buf[filled..]).map_err(|e| Error::Io {
                    what: "reading the blob to upload".into(),
                    source: e,
                })?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            if filled == 0 {
                break;
            }
            let range = format!("{offset}-{}", offset + filled as u64 - 1);
            let headers = [
                ("Content-Type", "application/octet-stream"),
                ("Content-Range", range.as_str()),
            ];
            let resp = self
                .send(
                    r,
                    scope,
                    "PATCH",
                    &location,
                    &headers,
                    &Body::Bytes(&buf[..filled]),
                )?
                .ok_or_else(|| Error::NotFound(format!("upload session of {}", r.name())))?;
            if let Some(next) = resp.header("Location") {
                location = self.absolute(r, next);
            }
            offset += filled as u64;
        }
        let sep = if location.contains('?') { '&' } else { '?' };
        let url = format!("{location}{sep}digest={digest}");
        self.send(r, scope, "PUT", &url, &[], &Body::Empty)?
            .ok_or_else(|| Error::NotFound(format!("upload session of {}", r.name())))?;
        Ok(())
    }

    /// Puts a manifest under `reference` (a tag or its digest).
    pub fn put_manifest(
        &self,
        r: &Reference,
        reference: &str,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<(), Error> {
        let url = format!("{}/manifests/{reference}", self.base(r));
        let scope = format!("repository:{}:pull,push", r.repository);
        self.send(
            r,
            &scope,
            "PUT",
            &url,
            &[("Content-Type", media_type)],
            &Body::Bytes(bytes),
        )?
        .ok_or_else(|| Error::NotFound(format!("manifest endpoint of {}", r.name())))?;
        Ok(())
    }

    /// The OCI 1.1 referrers of `digest` in `r`'s repository, as the image
    /// index the registry answers (filtered to `artifact_type` when given);
    /// `None` when the registry has no referrers API.
    pub fn referrers(
        &self,
        r: &Reference,
        digest: &str,
        artifact_type: Option<&str>,
    ) -> Result<Option<Vec<u8>>, Error> {
        let mut url = format!("{}/referrers/{digest}", self.base(r));
        if let Some(t) = artifact_type {
            url.push_str("?artifactType=");
            url.push_str(&t.replace('+', "%2B"));
        }
        let scope = format!("repository:{}:pull", r.repository);
        let index = "application/vnd.oci.image.index.v1+json";
        let Some(resp) = self.send(r, &scope, "GET", &url, &[("Accept", index)], &Body::Empty)?
        else {
            return Ok(None);
        };
        // a registry without the API may answer some other page
        if !resp.content_type().starts_with(index) {
            return Ok(None);
        }
        small_body(resp, &url).map(Some)
    }

    /// The tags of `r`'s repository (none when it does not exist yet).
    pub fn tags(&self, r: &Reference) -> Result<Vec<String>, Error> {
        #[derive(serde::Deserialize)]
        struct List {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        let url = format!("{}/tags/list", self.base(r));
        let scope = format!("repository:{}:pull", r.repository);
        let Some(resp) = self.send(r, &scope, "GET", &url, &[], &Body::Empty)? else {
            return Ok(vec![]);
        };
        let body = small_body(resp, &url)?;
        let list: List = serde_json::from_slice(&body).map_err(|e| Error::Io {
            what: format!("reading {url}"),
            source: std::io::Error::other(e),
        })?;
        Ok(list.tags.unwrap_or_default())
    }

    /// Checks the registry answers the API with the credentials it has (for `kiln login`).
    pub fn ping(&self, r: &Reference) -> Result<(), Error> {
        let base = self.base(r);
        let url = format!(
            "{}/",
            base.split("/v2/").next().unwrap_or(&base).to_string() + "/v2"
        );
        self.send(r, "registry:catalog:*", "GET", &url, &[], &Body::Empty)?;
        Ok(())
    }
}

/// The body of a manifest or index response (at most 16 MiB).
fn small_body(resp: ureq::Response, url: &str) -> Result<Vec<u8>, Error> {
    let mut bytes = Vec::new();
    resp.into_reader()
        .take(16 << 20)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::Io {
            what: format!("reading {url}"),
            source: e,
        })?;
    Ok(bytes)
}

/// A URL as errors show it: without its query, which for an upload is the
/// registry's long opaque `_state` (and says nothing to a person).
fn shown(url: &str) -> String {
    match url.split_once('?') {
        Some((path, _)) => format!("{path}?…"),
        None => url.to_string(),
    }
}

/// A transport error without the URL ureq puts in it (the error names the
/// request already).
fn transport(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Transport(t) => match (t.message(), std::error::Error::source(t)) {
            (Some(m), Some(src)) => format!("{}: {m}: {src}", t.kind()),
            (Some(m), None) => format!("{}: {m}", t.kind()),
            (None, Some(src)) => format!("{}: {src}", t.kind()),
            (None, None) => t.kind().to_string(),
        },
        ureq::Error::Status(code, _) => format!("HTTP {code}"),
    }
}

/// An HTTP agent with `opts`' TLS roots and timeouts.
fn make_agent(opts: &ClientOptions) -> Result<ureq::Agent, Error> {
    Ok(ureq::AgentBuilder::new()
        .tls_config(std::sync::Arc::new(tls_config(&opts.ca_certs)?))
        .timeout_connect(Duration::from_secs(15))
        .timeout_read(Duration::from_secs(60))
        .redirects(5)
        .build())
}

/// The system's CA certificates, read once per process (siblings share
/// them).
fn system_roots() -> &'static rustls::RootCertStore {
    static ROOTS: OnceLock<rustls::RootCertStore> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let mut roots = rustls::RootCertStore::empty();
        if let Ok(native) = rustls_native_certs::load_native_certs() {
            for cert in native {
                let _ = roots.add(cert);
            }
        }
        roots
    })
}

/// TLS that verifies servers against the system roots plus `extra` CA files.
fn tls_config(extra: &[std::path::PathBuf]) -> Result<rustls::ClientConfig, Error> {
    let mut roots = system_roots().clone();
    for path in extra {
        use rustls_pki_types::pem::PemObject;
        let certs =
            rustls_pki_types::CertificateDer::pem_file_iter(path).map_err(|e| Error::Io {
                what: format!("reading CA certificate {}", path.display()),
                source: std::io::Error::other(e.to_string()),
            })?;
        let mut n = 0;
        for cert in certs {
            let cert = cert.map_err(|e| Error::Io {
                what: format!("reading CA certificate {}", path.display()),
                source: std::io::Error::other(e.to_string()),
            })?;
            roots.add(cert).map_err(|e| Error::Io {
                what: format!("adding CA certificate {}", path.display()),
                source: std::io::Error::other(e.to_string()),
            })?;
            n += 1;
        }
        if n == 0 {
            return Err(Error::Io {
                what: format!("reading CA certificate {}", path.display()),
                source: std::io::Error::other("no PEM certificate in it"),
            });
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Protocol(format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_show_an_upload_url_without_its_state() {
        let url = "http://127.0.0.1:5000/v2/app/blobs/uploads/1f2e?_state=c2VjcmV0LWxvbmc&digest=sha256%3Aab";
        assert_eq!(
            shown(url),
            "http://127.0.0.1:5000/v2/app/blobs/uploads/1f2e?…"
        );
        assert_eq!(shown("http://h/v2/"), "http://h/v2/");
    }
}
