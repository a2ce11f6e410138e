//! kiln's OCI distribution client: manifests and blobs over HTTP(S), with
//! Docker-compatible credentials, Bearer tokens, retries and streaming
//! bodies. It knows nothing of the store: it takes and gives streams; the
//! factory moves images between it and the store.
#![cfg_attr(not(test), deny(clippy::print_stdout, clippy::print_stderr))]

pub mod auth;
mod client;
mod reference;

pub use auth::{Credentials, Secret};
pub use client::{Body, Client, ClientOptions, Mount, MANIFEST_ACCEPT};
pub use reference::Reference;

/// What went wrong talking to a registry. Credentials never appear here.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid reference {reference:?}: {reason}")]
    Reference { reference: String, reason: String },
    #[error("{0}: not found")]
    NotFound(String),
    #[error("{method} {url}: HTTP {code}: {body}")]
    Status {
        method: String,
        url: String,
        code: u16,
        body: String,
    },
    #[error("{method} {url}: {message}")]
    Transport {
        method: String,
        url: String,
        message: String,
    },
    #[error("authentication: {0}")]
    Auth(String),
    #[error("unexpected registry answer: {0}")]
    Protocol(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}
