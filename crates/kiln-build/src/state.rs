//! The state of a stage while it builds: its layers and the image config.

use std::path::PathBuf;

use kiln_oci::image::{History, ImageConfig};
use kiln_oci::Digest;
use kiln_store::{chain_id, parse_digest, CachedLayer, Store};

use crate::view::View;
use crate::BuildError;

/// One layer of a stage, with the chain ID that names its snapshot.
#[derive(Debug, Clone)]
pub struct LayerRec {
    pub blob: Blob,
    pub diff_id: Digest,
    pub media_type: String,
    pub chain: Digest,
}

/// A layer's blob: written, or not yet (see `compress`).
#[derive(Debug, Clone)]
pub enum Blob {
    Written {
        digest: Digest,
        size: u64,
    },
    /// Only its snapshot so far: the cache key of the step that made it
    /// and what its cache entry says.
    Pending {
        key: String,
        layer: CachedLayer,
    },
}

#[derive(Debug, Clone)]
pub struct State {
    pub layers: Vec<LayerRec>,
    pub config: ImageConfig,
    /// The cache key of everything so far.
    pub key: String,
    /// Whether a CMD was set in this stage (an ENTRYPOINT then keeps it).
    pub cmd_set: bool,
    /// When the newest layer was made: history entries and the image take it.
    pub created: String,
}

impl State {
    pub fn scratch(os: &str, arch: &str, variant: &str) -> Self {
        let mut config = ImageConfig {
            os: os.into(),
            architecture: arch.into(),
            ..Default::default()
        };
        config.variant = (!variant.is_empty()).then(|| variant.to_string());
        State {
            layers: vec![],
            config,
            key: "scratch".into(),
            cmd_set: false,
            created: kiln_oci::image::rfc3339(0),
        }
    }

    pub fn from_base(base: &crate::BaseImage) -> Result<Self, BuildError> {
        let bad = |m: String| BuildError::Base {
            reference: base.reference.clone(),
            message: m,
        };
        if base.layers.len() != base.config.rootfs.diff_ids.len() {
            return Err(bad(
                "the manifest and the config list different numbers of layers".into(),
            ));
        }
        let mut layers = Vec::new();
        let mut parent: Option<Digest> = None;
        for (l, diff) in base.layers.iter().zip(&base.config.rootfs.diff_ids) {
            let digest = parse_digest(&l.digest).map_err(|e| bad(e.to_string()))?;
            let diff_id = parse_digest(diff).map_err(|e| bad(e.to_string()))?;
            let chain = chain_id(parent.as_ref(), &diff_id);
            parent = Some(chain.clone());
            layers.push(LayerRec {
                blob: Blob::Written {
                    digest,
                    size: l.size,
                },
                diff_id,
                media_type: l.media_type.clone(),
                chain,
            });
        }
        let mut config = base.config.clone();
        // ONBUILD triggers were run by the frontend; the child does not keep them
        config.config.on_build.clear();
        let created = config
            .created
            .clone()
            .unwrap_or_else(|| kiln_oci::image::rfc3339(0));
        Ok(State {
            layers,
            config,
            key: format!("image:{}", base.manifest_digest),
            cmd_set: false,
            created,
        })
    }

    pub fn parent_chain(&self) -> Option<&Digest> {
        self.layers.last().map(|l| &l.chain)
    }

    /// Snapshot dirs of every layer, top-most first, unpacking any that
    /// the store does not have yet.
    pub fn snapshots(&self, store: &Store) -> Result<Vec<PathBuf>, BuildError> {
        let mut out = Vec::new();
        for l in &self.layers {
            let dir = match &l.blob {
                Blob::Written { digest, .. } => {
                    store.ensure_snapshot(digest, &l.diff_id, &l.chain)?
                }
                Blob::Pending { .. } => store.snapshot(&l.chain).ok_or_else(|| {
                    BuildError::Context(format!(
                        "the snapshot of layer {} is gone and it has no blob: build again",
                        l.diff_id
                    ))
                })?,
            };
            out.push(dir);
        }
        out.reverse();
        Ok(out)
    }

    pub fn view(&self, store: &Store) -> Result<View, BuildError> {
        Ok(View::new(self.snapshots(store)?))
    }

    pub fn history(&mut self, created_by: String, empty_layer: bool) {
        self.config.history.push(History {
            created: Some(self.created.clone()),
            created_by: Some(created_by),
            author: None,
            comment: Some("kiln".into()),
            empty_layer,
        });
    }

    /// Adds a layer on top; returns its chain ID.
    pub fn push_layer(&mut self, blob: Blob, diff_id: Digest, media_type: String) -> Digest {
        let chain = chain_id(self.parent_chain(), &diff_id);
        self.config.rootfs.diff_ids.push(diff_id.to_string());
        self.layers.push(LayerRec {
            blob,
            diff_id,
            media_type,
            chain: chain.clone(),
        });
        chain
    }

    pub fn env(&self) -> Vec<(String, String)> {
        self.config
            .config
            .env
            .iter()
            .map(|e| match e.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (e.clone(), String::new()),
            })
            .collect()
    }

    pub fn set_env(&mut self, key: &str, value: &str) {
        let entry = format!("{key}={value}");
        let env = &mut self.config.config.env;
        match env
            .iter_mut()
            .find(|e| e.split_once('=').map(|(k, _)| k) == Some(key))
        {
            Some(slot) => *slot = entry,
            None => env.push(entry),
        }
    }
}
