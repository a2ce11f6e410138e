//! Registry credentials: `~/.docker/config.json` (`auths`, `credHelpers`,
//! `credsStore`) as Docker reads and writes it. Secrets never print.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;

use base64::Engine;
use serde_json::{json, Value};

use crate::Error;

/// A password or token: `Debug` and `Display` show `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// The secret itself, for an Authorization header only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: Secret,
}

/// The Docker config file: `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`.
pub fn config_path() -> PathBuf {
    match std::env::var_os("DOCKER_CONFIG") {
        Some(d) => PathBuf::from(d).join("config.json"),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
            .join(".docker/config.json"),
    }
}

/// The keys a registry may be filed under (Docker Hub has its legacy URL).
fn keys(registry: &str) -> Vec<String> {
    let mut k = vec![
        registry.to_string(),
        format!("https://{registry}"),
        format!("http://{registry}"),
    ];
    if registry == "docker.io" {
        k.push("https://index.docker.io/v1/".into());
        k.push("index.docker.io".into());
    }
    k
}

/// The config file's JSON: `{}` when there is none. A file that is not a
/// JSON object is an error (never silently replaced: it may hold other
/// registries' credentials and a `credsStore`).
fn read_config() -> Result<Value, Error> {
    let path = config_path();
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(json!({})),
        Err(e) => return Err(Error::Auth(format!("reading {}: {e}", path.display()))),
    };
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(v) if v.is_object() => Ok(v),
        Ok(_) => Err(Error::Auth(format!(
            "{} is not a JSON object; fix or remove it",
            path.display()
        ))),
        Err(e) => Err(Error::Auth(format!(
            "{}:{}:{}: not valid JSON ({e}); fix or remove it",
            path.display(),
            e.line(),
            e.column()
        ))),
    }
}

/// Credentials for `registry`, or `None` for anonymous access.
pub fn lookup(registry: &str) -> Result<Option<Credentials>, Error> {
    let cfg = read_config()?;
    let keys = keys(registry);
    if let Some(helper) = keys.iter().find_map(|k| cfg["credHelpers"][k].as_str()) {
        return helper_get(helper, registry);
    }
    for k in &keys {
        if let Some(auth) = cfg["auths"][k]["auth"].as_str() {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth)
                .map_err(|_| {
                    Error::Auth(format!(
                        "the auth entry for {registry} in {} is not base64",
                        config_path().display()
                    ))
                })?;
            let text = String::from_utf8_lossy(&decoded);
            let (u, p) = text.split_once(':').ok_or_else(|| {
                Error::Auth(format!(
                    "the auth entry for {registry} is not user:password"
                ))
            })?;
            return Ok(Some(Credentials {
                username: u.to_string(),
                password: Secret::new(p),
            }));
        }
    }
    if let Some(store) = cfg["credsStore"].as_str() {
        return helper_get(store, registry);
    }
    Ok(None)
}

/// Asks `docker-credential-<helper> get`, as Docker does.
fn helper_get(helper: &str, registry: &str) -> Result<Option<Credentials>, Error> {
    let program = format!("docker-credential-{helper}");
    let out =
        match kiln_tool::run_with_input(Command::new(&program).arg("get"), registry.as_bytes()) {
            Ok(out) => out,
            // helpers answer "credentials not found" with a failure
            Err(kiln_tool::ToolError::Failed { .. }) => return Ok(None),
            Err(e) => return Err(Error::Auth(e.to_string())),
        };
    let v: Value = serde_json::from_str(&out)
        .map_err(|_| Error::Auth(format!("{program} printed something that is not JSON")))?;
    let (Some(u), Some(s)) = (v["Username"].as_str(), v["Secret"].as_str()) else {
        return Ok(None);
    };
    Ok(Some(Credentials {
        username: u.to_string(),
        password: Secret::new(s),
    }))
}

/// Stores credentials for `registry` in the config file (`auths`), as
/// `docker login` does; the file is readable by its owner only.
pub fn store(registry: &str, creds: &Credentials) -> Result<PathBuf, Error> {
    let path = config_path();
    let mut cfg = read_config()?;
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        creds.username,
        creds.password.expose()
    ));
    if !cfg["auths"].is_object() {
        cfg["auths"] = json!({});
    }
    cfg["auths"][registry] = json!({ "auth": encoded });
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::Auth(format!("creating {}: {e}", dir.display())))?;
    }
    let tmp = path.with_extension("json.kiln-tmp");
    let bytes = serde_json::to_vec_pretty(&cfg).map_err(|e| Error::Auth(e.to_string()))?;
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| Error::Auth(format!("writing {}: {e}", tmp.display())))?;
        f.write_all(&bytes)
            .map_err(|e| Error::Auth(format!("writing {}: {e}", tmp.display())))?;
    }
    std::fs::rename(&tmp, &path)
        .map_err(|e| Error::Auth(format!("writing {}: {e}", path.display())))?;
    Ok(path)
}

/// The parameters of a `WWW-Authenticate` header: scheme and key="value" pairs.
pub fn parse_challenge(header: &str) -> (String, BTreeMap<String, String>) {
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    let mut params = BTreeMap::new();
    let mut rest = rest.trim();
    while let Some((k, after)) = rest.split_once('=') {
        let k = k.trim().trim_start_matches(',').trim().to_string();
        let after = after.trim_start();
        let (v, tail) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"').unwrap_or(q.len());
            (q[..end].to_string(), q.get(end + 1..).unwrap_or(""))
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].to_string(), &after[end..])
        };
        params.insert(k.to_ascii_lowercase(), v);
        rest = tail.trim_start_matches(',').trim();
    }
    (scheme.to_ascii_lowercase(), params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        let (s, p) = parse_challenge(
            r#"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(s, "bearer");
        assert_eq!(p["realm"], "https://auth.example.com/token");
        assert_eq!(p["scope"], "repository:a/b:pull,push");
        let (s, p) = parse_challenge(r#"Basic realm="basic-realm""#);
        assert_eq!((s.as_str(), p["realm"].as_str()), ("basic", "basic-realm"));
    }

    #[test]
    fn secrets_do_not_print() {
        let c = Credentials {
            username: "u".into(),
            password: Secret::new("hunter2"),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
