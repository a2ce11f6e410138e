//! The state of a stage while it builds: its layers and the image config.

use std::path::PathBuf;

use kiln_oci::image::{History, ImageConfig};
use kiln_oci::Digest;
use kiln_store::{chain_id, parse_digest, Store};

use crate::view::View;
use crate::BuildError;

/// One layer of a stage, with the chain ID that names its snapshot.
#[derive(Debug, Clone)]
pub struct LayerRec {
    pub digest: Digest,
    pub diff_id: Digest,
    pub media_type: String,
    pub size: u64,
    pub chain: Digest,
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
                digest,
                diff_id,
                media_type: l.media_type.clone(),
                size: l.size,
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
            let dir = store.ensure_snapshot(&l.digest, &l.diff_id, &l.chain)?;
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

    pub fn push_layer(&mut self, digest: Digest, diff_id: Digest, media_type: String, size: u64) {
        let chain = chain_id(self.parent_chain(), &diff_id);
        self.config.rootfs.diff_ids.push(diff_id.to_string());
        self.layers.push(LayerRec {
            digest,
            diff_id,
            media_type,
            size,
            chain,
        });
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
