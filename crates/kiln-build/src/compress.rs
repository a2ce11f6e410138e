//! Deferred compression. A step's layer is first only its snapshot and
//! its diff ID, so the next step can start at once; its compressed blob is
//! written only for an image that contains it — by a background worker
//! while later steps run, or when the image is written — and never for a
//! builder stage no image contains.
//!
//! Crash safety: a blob is committed before the cache entry names it, and a
//! manifest is written only after its blobs, so a kill at any point leaves
//! at worst a snapshot whose entry still says it has no blob; the next
//! image that needs it writes it.

use std::collections::{HashMap, HashSet};
use std::sync::{mpsc, Condvar, Mutex};

use kiln_oci::image::Descriptor;
use kiln_oci::layer::{write_layer, Compression, LayerInfo, LayerOptions};
use kiln_store::{parse_digest, CacheEntry, CachedLayer, Store};

use crate::state::{Blob, LayerRec};
use crate::BuildError;

/// Writes the blob of the layer step `key` made when it has none yet: its
/// snapshot compressed as its media type says, checked against its diff
/// ID, committed, and named in its cache entry. Returns the entry with the
/// blob. What a registry cache export calls for the steps it carries.
pub fn complete(store: &Store, key: &str) -> Result<CacheEntry, BuildError> {
    let Some(mut entry) = store.cache_entry(&Store::cache_id(key)) else {
        return Err(BuildError::Context(format!(
            "the step cache has no entry for key {key}"
        )));
    };
    if let Some(layer) = &entry.layer {
        if layer.digest.is_none() {
            entry.layer = Some(write_blob(store, key, layer)?);
        }
    }
    Ok(entry)
}

/// Compresses a pending layer's snapshot into its blob and records it in
/// the cache entry of `key`.
fn write_blob(store: &Store, key: &str, layer: &CachedLayer) -> Result<CachedLayer, BuildError> {
    let Some(pending) = &layer.pending else {
        return Err(BuildError::Context(format!(
            "layer {} has neither a blob nor a snapshot to write one from",
            layer.diff_id
        )));
    };
    let chain = parse_digest(&pending.chain)?;
    let dir = store.snapshot(&chain).ok_or_else(|| {
        BuildError::Context(format!(
            "the snapshot of layer {} is gone before its blob was written: \
             build again (the step runs again)",
            layer.diff_id
        ))
    })?;
    let compression = Compression::of_media_type(&layer.media_type).ok_or_else(|| {
        BuildError::Context(format!(
            "layer {}: kiln does not write media type {}",
            layer.diff_id, layer.media_type
        ))
    })?;
    let opts = LayerOptions {
        compression,
        source_date_epoch: pending.source_date_epoch,
    };
    let info = blob_of(store, &dir, &opts, |info| {
        if info.diff_id.to_string() == layer.diff_id {
            return Ok(());
        }
        Err(BuildError::Context(format!(
            "snapshot {} changed since its step: its layer is {} now, {} then \
             (`kiln fsck --full --repair`, then build again)",
            pending.chain, info.diff_id, layer.diff_id
        )))
    })?;
    let done = CachedLayer {
        digest: Some(info.digest.to_string()),
        diff_id: layer.diff_id.clone(),
        size: info.size,
        media_type: layer.media_type.clone(),
        pending: None,
    };
    if let Some(mut entry) = store.cache_entry(&Store::cache_id(key)) {
        entry.layer = Some(done.clone());
        store.cache_put(key, &entry)?;
    }
    Ok(done)
}

/// Writes the tree `dir` as a layer blob into the store, through a temp
/// file committed only when whole and when `check` accepts what it is.
pub(crate) fn blob_of(
    store: &Store,
    dir: &std::path::Path,
    opts: &LayerOptions,
    check: impl FnOnce(&LayerInfo) -> Result<(), BuildError>,
) -> Result<LayerInfo, BuildError> {
    let temp = store.temp_path("layer");
    let _cleanup = kiln_store::RemoveOnDrop(temp.clone());
    let file = std::fs::File::create(&temp)
        .map_err(|e| BuildError::io(format!("creating {}", temp.display()), e))?;
    let info = write_layer(dir, std::io::BufWriter::new(file), opts)?;
    check(&info)?;
    store.commit_blob(&temp, &info.digest)?;
    Ok(info)
}

/// One layer to write: its step's cache key and what the entry says.
pub(crate) struct Task {
    key: String,
    layer: CachedLayer,
}

#[derive(Default)]
struct Board {
    /// Keys handed to the worker (done or not).
    queued: HashSet<String>,
    /// Written layers (or why not), by key.
    done: HashMap<String, Result<CachedLayer, String>>,
    stopped: bool,
}

/// The background worker's queue: one layer compressed at a time (each on
/// every core), so compression never takes more than the machine while
/// steps run beside it.
pub(crate) struct Compressor {
    sender: Mutex<Option<mpsc::Sender<Task>>>,
    board: Mutex<Board>,
    ready: Condvar,
}

impl Compressor {
    /// A compressor and the receiving end its worker ([`Compressor::work`]) reads.
    pub(crate) fn new() -> (Self, mpsc::Receiver<Task>) {
        let (tx, rx) = mpsc::channel();
        let c = Compressor {
            sender: Mutex::new(Some(tx)),
            board: Mutex::default(),
            ready: Condvar::new(),
        };
        (c, rx)
    }

    fn board(&self) -> std::sync::MutexGuard<'_, Board> {
        self.board.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The worker: writes each queued layer until [`Compressor::stop`].
    pub(crate) fn work(&self, store: &Store, tasks: mpsc::Receiver<Task>) {
        for task in tasks {
            if self.board().stopped {
                break;
            }
            let result = write_blob(store, &task.key, &task.layer).map_err(|e| e.to_string());
            self.board().done.insert(task.key, result);
            self.ready.notify_all();
        }
    }

    /// Ends the worker after the layer it is writing; what was queued and
    /// not begun stays a snapshot, written when an image needs it.
    pub(crate) fn stop(&self) {
        self.board().stopped = true;
        self.sender.lock().unwrap_or_else(|p| p.into_inner()).take();
        self.ready.notify_all();
    }

    /// Hands the layer of step `key` to the worker, once.
    pub(crate) fn queue(&self, key: &str, layer: &CachedLayer) {
        if !self.board().queued.insert(key.to_string()) {
            return;
        }
        let sender = self.sender.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = sender.as_ref() {
            let _ = tx.send(Task {
                key: key.to_string(),
                layer: layer.clone(),
            });
        }
    }

    /// The descriptors of `layers` (an image's), writing the blobs they
    /// lack through the worker and waiting for them.
    pub(crate) fn descriptors(&self, layers: &[LayerRec]) -> Result<Vec<Descriptor>, BuildError> {
        for l in layers {
            if let Blob::Pending { key, layer } = &l.blob {
                self.queue(key, layer);
            }
        }
        layers.iter().map(|l| self.descriptor(l)).collect()
    }

    fn descriptor(&self, l: &LayerRec) -> Result<Descriptor, BuildError> {
        let (digest, size) = match &l.blob {
            Blob::Written { digest, size } => (digest.to_string(), *size),
            Blob::Pending { key, .. } => {
                let layer = self.wait(key)?;
                (layer.digest.unwrap_or_default(), layer.size)
            }
        };
        Ok(Descriptor {
            media_type: l.media_type.clone(),
            digest,
            size,
            annotations: Default::default(),
            platform: None,
        })
    }

    /// Waits for the worker to write the layer of `key`.
    fn wait(&self, key: &str) -> Result<CachedLayer, BuildError> {
        let mut board = self.board();
        loop {
            if let Some(r) = board.done.get(key) {
                return r.clone().map_err(BuildError::Context);
            }
            if board.stopped {
                return Err(BuildError::Context(
                    "the build stopped before its layers were written".into(),
                ));
            }
            board = self.ready.wait(board).unwrap_or_else(|p| p.into_inner());
        }
    }
}
