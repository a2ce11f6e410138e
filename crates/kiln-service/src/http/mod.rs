//! The HTTP side of `kiln serve`: a JSON API, the dashboard pages, badges
//! and `/metrics`, served by axum on a small tokio runtime of its own. The
//! engine stays synchronous on the worker threads; handlers only read the
//! board and the databases, and queue requests.
//!
//! Who may do what: writes (queueing a bake) need the bearer token of
//! `--token-file`, and without one nothing is writable. Reads are open when
//! the server listens on a loopback address; on any other address they
//! need the token too (as a bearer token, or as the password of HTTP basic
//! authentication, which a browser asks for), except health, readiness and
//! badges.

mod api;
mod pages;
mod svg;

use std::net::TcpListener;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::Engine as _;

use crate::serve::Service;

/// Serves until the service stops; open connections (live logs) get two
/// seconds to end.
pub fn run(svc: Arc<Service>, listener: TcpListener) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let loopback = listener.local_addr()?.ip().is_loopback();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("kiln-http")
        .enable_all()
        .build()?;
    let stop = svc.stop.clone();
    let app = router(App { svc, loopback });
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let stopped = move || {
            let stop = stop.clone();
            async move {
                while !stop.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        let server = axum::serve(listener, app).with_graceful_shutdown(stopped());
        tokio::select! {
            r = server => r,
            () = async { stopped().await; tokio::time::sleep(Duration::from_secs(2)).await } => Ok(()),
        }
    })?;
    rt.shutdown_timeout(Duration::from_millis(500));
    Ok(())
}

/// The handlers' state.
#[derive(Clone)]
struct App {
    svc: Arc<Service>,
    loopback: bool,
}

fn router(app: App) -> Router {
    Router::new()
        .route("/healthz", get(api::health))
        .route("/readyz", get(api::ready))
        .route("/metrics", get(api::metrics))
        .route("/api/factories", get(api::factories))
        .route("/api/factories/{factory}", get(api::factory))
        .route("/api/factories/{factory}/bake", post(api::bake_factory))
        .route("/api/factories/{factory}/images/{image}", get(api::image))
        .route(
            "/api/factories/{factory}/images/{image}/bake",
            post(api::bake_image),
        )
        .route("/api/jobs", get(api::jobs))
        .route("/api/jobs/{job}", get(api::job))
        .route("/api/jobs/{job}/events", get(api::events))
        .route("/api/deliveries", get(api::deliveries))
        .route("/", get(pages::overview))
        .route("/factories/{factory}/lineage.svg", get(pages::lineage))
        .route("/factories/{factory}/images/{image}", get(pages::image))
        .route("/jobs/{job}", get(pages::job))
        .route("/badge/{factory}/{image}", get(pages::badge))
        .with_state(app)
}

/// An error as a response: its status and a JSON body saying what is
/// wrong.
#[derive(Debug)]
struct Problem {
    status: StatusCode,
    message: String,
    challenge: Option<&'static str>,
}

impl Problem {
    fn new(status: StatusCode, message: impl Into<String>) -> Problem {
        Problem {
            status,
            message: message.into(),
            challenge: None,
        }
    }

    fn not_found(what: impl Into<String>) -> Problem {
        Problem::new(StatusCode::NOT_FOUND, what)
    }

    fn internal(e: impl std::fmt::Display) -> Problem {
        Problem::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = axum::Json(serde_json::json!({ "error": self.message }));
        match self.challenge {
            Some(c) => (self.status, [(header::WWW_AUTHENTICATE, c)], body).into_response(),
            None => (self.status, body).into_response(),
        }
    }
}

/// Compares without stopping at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The token a request presents: a bearer token, or the password of basic
/// authentication.
fn presented(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    if let Some(t) = value.strip_prefix("Bearer ") {
        return Some(t.trim().to_string());
    }
    let basic = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(basic.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    Some(text.split_once(':')?.1.to_string())
}

impl App {
    /// A write needs the token.
    fn may_write(&self, headers: &HeaderMap) -> Result<(), Problem> {
        let Some(token) = &self.svc.cfg.token else {
            return Err(Problem {
                challenge: Some("Bearer realm=\"kiln\""),
                ..Problem::new(
                    StatusCode::UNAUTHORIZED,
                    "kiln serve runs without --token-file: nothing is writable",
                )
            });
        };
        match presented(headers) {
            Some(t) if same(t.as_bytes(), token.as_bytes()) => Ok(()),
            Some(_) => Err(Problem {
                challenge: Some("Bearer realm=\"kiln\", error=\"invalid_token\""),
                ..Problem::new(StatusCode::UNAUTHORIZED, "the token is not valid")
            }),
            None => Err(Problem {
                challenge: Some("Bearer realm=\"kiln\""),
                ..Problem::new(
                    StatusCode::UNAUTHORIZED,
                    "a bearer token is required (Authorization: Bearer TOKEN)",
                )
            }),
        }
    }

    /// A read is open on loopback, and needs the token elsewhere.
    fn may_read(&self, headers: &HeaderMap) -> Result<(), Problem> {
        if self.loopback {
            return Ok(());
        }
        self.may_write(headers).map_err(|p| Problem {
            challenge: Some("Basic realm=\"kiln\""),
            ..p
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(dir: &std::path::Path, token: Option<&str>, loopback: bool) -> App {
        let store = kiln_store::Store::open(dir.join("store")).unwrap();
        let cfg = crate::serve::Config {
            factories: vec![dir.join("f")],
            poll: Duration::from_secs(60),
            kiln_exe: "kiln".into(),
            compression: kiln_build::Compression::Gzip,
            listen: None,
            token: token.map(str::to_string),
            hooks: vec![],
            git: false,
        };
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        App {
            svc: Arc::new(Service::open(cfg, &store, stop).unwrap()),
            loopback,
        }
    }

    fn bearer(t: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            format!("Bearer {t}").parse().unwrap(),
        );
        h
    }

    #[test]
    fn reads_are_open_on_loopback_only_and_writes_need_the_token() {
        let dir = tempfile::tempdir().unwrap();
        let local = app(dir.path(), Some("s3cret"), true);
        assert!(local.may_read(&HeaderMap::new()).is_ok());
        assert_eq!(local.may_write(&HeaderMap::new()).unwrap_err().status, 401);
        assert_eq!(local.may_write(&bearer("nope")).unwrap_err().status, 401);
        assert!(local.may_write(&bearer("s3cret")).is_ok());

        let public = app(dir.path(), Some("s3cret"), false);
        let refused = public.may_read(&HeaderMap::new()).unwrap_err();
        assert_eq!(refused.status, 401);
        assert_eq!(refused.challenge, Some("Basic realm=\"kiln\""));
        assert!(public.may_read(&bearer("s3cret")).is_ok());

        let tokenless = app(dir.path(), None, true);
        assert_eq!(
            tokenless.may_write(&bearer("anything")).unwrap_err().status,
            401
        );
    }

    #[test]
    fn tokens_come_as_bearer_or_basic_password() {
        let mut h = HeaderMap::new();
        assert_eq!(presented(&h), None);
        h.insert(header::AUTHORIZATION, "Bearer s3cret".parse().unwrap());
        assert_eq!(presented(&h).as_deref(), Some("s3cret"));
        let basic = base64::engine::general_purpose::STANDARD.encode("me:s3cret");
        h.insert(
            header::AUTHORIZATION,
            format!("Basic {basic}").parse().unwrap(),
        );
        assert_eq!(presented(&h).as_deref(), Some("s3cret"));
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"ab"));
    }
}
