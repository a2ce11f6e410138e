//! Atomic file writes: temp file in the store's tmp/, fsync, rename, fsync dir.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::Error;

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh, unique path in `tmp`.
pub fn temp_path(tmp: &Path, hint: &str) -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    tmp.join(format!("{hint}-{}-{nanos}-{n}", std::process::id()))
}

/// Removes what process `pid` left in `tmp` ([`temp_path`] names carry
/// it), for an interrupted kiln on its way out.
pub fn remove_temps_of(tmp: &Path, pid: u32) {
    let mark = format!("-{pid}-");
    let Ok(entries) = fs::read_dir(tmp) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().contains(&mark) {
            let _ = kiln_oci::unpack::remove_any(&e.path());
        }
    }
}

/// Makes `from` durable and moves it to `to` in one step.
pub fn commit(from: &Path, to: &Path) -> Result<(), Error> {
    if from.is_file() {
        File::open(from)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io("syncing", from, e))?;
    }
    fs::rename(from, to).map_err(|e| Error::io("renaming into place", to, e))?;
    if let Some(dir) = to.parent() {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io("syncing", dir, e))?;
    }
    Ok(())
}

/// Writes `bytes` to `to` atomically, through `tmp`.
pub fn write(tmp: &Path, to: &Path, bytes: &[u8]) -> Result<(), Error> {
    let t = temp_path(tmp, "write");
    let mut f = File::create(&t).map_err(|e| Error::io("creating", &t, e))?;
    f.write_all(bytes)
        .map_err(|e| Error::io("writing", &t, e))?;
    drop(f);
    commit(&t, to)
}

/// A temporary file or directory removed when it goes out of scope (once
/// renamed into place there is nothing left to remove), so a step that
/// fails half-way leaves nothing behind in the store's tmp.
#[derive(Debug)]
pub struct RemoveOnDrop(pub PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = kiln_oci::unpack::remove_any(&self.0);
    }
}
