//! The factory layer: moving images between the store and registries
//! ([`transfer`]), resolving build bases from the store or, on demand, a
//! registry ([`RegistrySource`]), and the factory proper: the image graph
//! of a kiln.toml ([`graph`]), its lock files ([`lock`]) and what is stale
//! and why ([`plan`]).
#![cfg_attr(not(test), deny(clippy::print_stdout, clippy::print_stderr))]

pub mod artifact;
pub mod assemble;
pub mod bake;
pub mod baked;
mod bootstrap;
pub mod cache;
pub mod fragment;
pub mod graph;
pub mod history;
mod job;
pub mod lock;
pub mod plan;
pub mod probe;
pub mod sameness;
pub mod transfer;
mod version;
pub mod vm;

pub use job::attest::add_attachments;

use kiln_build::{BaseImage, ImageSource, SourceError, StoreSource};
use kiln_dockerfile::Platform;
use kiln_registry::{Client, Reference};
use kiln_store::Store;

/// The factory files at `paths` (directories stand for their kiln.toml
/// files), their image graph and their lock files.
pub fn open(
    paths: &[std::path::PathBuf],
) -> Result<(kiln_definition::Factory, graph::Graph, plan::Locks), FactoryError> {
    let factory = kiln_definition::load(paths)?;
    let g = graph::graph(&factory)?;
    let locks = plan::Locks::read(&factory)?;
    Ok((factory, g, locks))
}

/// What stops a plan or a bake before any image is built.
#[derive(Debug, thiserror::Error)]
pub enum FactoryError {
    #[error("{0}")]
    Definition(#[from] kiln_definition::Error),
    #[error("image {image:?}: its Dockerfile is not valid:\n{rendered}")]
    Dockerfile { image: String, rendered: String },
    #[error(transparent)]
    Lock(#[from] lock::LockError),
    #[error("no image {name:?} in the factory (known: {known})")]
    UnknownImage { name: String, known: String },
    /// `--strict`, and something could not be checked.
    #[error("--strict: not everything could be checked:\n{0}")]
    Unchecked(String),
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Registry(#[from] kiln_registry::Error),
    #[error(transparent)]
    Store(#[from] kiln_store::Error),
    #[error("{0}")]
    Transfer(String),
}

/// Bases for builds: local transports and store names first, then the
/// registry the reference names, pulled into the store on demand for the
/// platform asked for. A pulled multi-platform image is kept as its index,
/// so another platform of it is pulled when first asked for; a single
/// image in the store is used whatever its platform (the engine checks).
pub struct RegistrySource<'a> {
    pub store: &'a Store,
    pub client: &'a Client,
    pub log: &'a (dyn Fn(&str) + Sync),
}

impl ImageSource for RegistrySource<'_> {
    fn resolve(&self, reference: &str, platform: &Platform) -> Result<BaseImage, SourceError> {
        let local = StoreSource { store: self.store };
        let Ok(r) = Reference::parse(reference) else {
            return local.resolve(reference, platform);
        };
        if reference.contains(':')
            && reference
                .split(':')
                .next()
                .is_some_and(|t| ["oci-layout", "oci-archive", "docker-archive"].contains(&t))
        {
            return local.resolve(reference, platform);
        }
        if let Ok(img) = local.resolve(reference, platform) {
            return Ok(img);
        }
        if let Ok(img) = local.resolve(&r.to_string(), platform) {
            return Ok(img);
        }
        let pulled =
            transfer::pull(self.client, self.store, &r, platform, self.log).map_err(|e| {
                let message = format!("pulling {r}: {e}");
                match e {
                    Error::Registry(kiln_registry::Error::NotFound(_)) => {
                        SourceError::NotFound(message)
                    }
                    Error::Registry(_) | Error::Transfer(_) => SourceError::Unreachable(message),
                    Error::Store(_) => SourceError::Invalid(message),
                }
            })?;
        local.resolve(&pulled.name, platform)
    }
}
