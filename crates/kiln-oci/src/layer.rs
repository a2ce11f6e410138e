//! Writing a layer: a directory tree to a reproducible, compressed tar.
//!
//! The directory is either an overlay upper dir (whiteouts are character
//! devices 0:0, opaque directories carry `trusted.overlay.opaque=y`) or a
//! plain tree built for COPY/ADD. Entries are sorted by path, timestamps are
//! clamped to `SOURCE_DATE_EPOCH` when one is given, and both the
//! uncompressed (diff_id) and compressed (digest) sha256 are computed in the
//! same pass that writes the data.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use oci_spec::image::Digest;

use crate::digest::HashWriter;
use crate::xattr;
use crate::Error;

/// Overlay's marker of an opaque directory.
pub const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
/// The OCI whiteout prefix.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// The OCI opaque-directory marker file.
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// How layer blobs are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    #[default]
    Gzip,
    /// zstd level 3, on both cores.
    Zstd,
    None,
}

impl Compression {
    /// The compression a layer media type names, if it is one kiln writes.
    pub fn of_media_type(media_type: &str) -> Option<Compression> {
        [Compression::Gzip, Compression::Zstd, Compression::None]
            .into_iter()
            .find(|c| c.media_type().to_string() == media_type)
    }

    pub fn media_type(self) -> oci_spec::image::MediaType {
        match self {
            Compression::Gzip => oci_spec::image::MediaType::ImageLayerGzip,
            Compression::Zstd => oci_spec::image::MediaType::ImageLayerZstd,
            Compression::None => oci_spec::image::MediaType::ImageLayer,
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct LayerOptions {
    pub compression: Compression,
    /// Clamp every timestamp to at most this many seconds since the epoch.
    pub source_date_epoch: Option<u64>,
}

/// What a written layer is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerInfo {
    /// sha256 of the blob as stored (compressed).
    pub digest: Digest,
    pub size: u64,
    /// sha256 of the uncompressed tar.
    pub diff_id: Digest,
}

/// The gzip level of kiln's layers, on every core (see pgzip). Level 3 of
/// libdeflate: measured on an apt cache, a compiler's /usr and the bench's
/// 1 GiB context, it writes smaller blobs than zlib-rs at level 5 (kiln's
/// level before) in 30–40% less time.
pub const GZIP_LEVEL: u32 = 3;

/// Writes the tree under `root` as a layer tar to `out`.
pub fn write_layer<W: Write>(root: &Path, out: W, opts: &LayerOptions) -> Result<LayerInfo, Error> {
    let blob = HashWriter::new(out);
    match opts.compression {
        Compression::Gzip => {
            let gz = crate::pgzip::ParallelGz::new(blob, GZIP_LEVEL);
            let (gz, diff_id) = write_tar(root, gz, opts)?;
            let blob = gz
                .finish()
                .map_err(|e| Error::io("compressing the layer", e))?;
            let (_, digest, size) = blob.finish();
            Ok(LayerInfo {
                digest,
                size,
                diff_id,
            })
        }
        Compression::Zstd => {
            let mut enc = zstd::stream::write::Encoder::new(blob, 3)
                .map_err(|e| Error::io("starting zstd", e))?;
            let threads = std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(1);
            enc.multithread(threads)
                .map_err(|e| Error::io("starting zstd workers", e))?;
            let (enc, diff_id) = write_tar(root, enc, opts)?;
            let blob = enc
                .finish()
                .map_err(|e| Error::io("compressing the layer", e))?;
            let (_, digest, size) = blob.finish();
            Ok(LayerInfo {
                digest,
                size,
                diff_id,
            })
        }
        Compression::None => {
            let (blob, diff_id) = write_tar(root, blob, opts)?;
            let (_, digest, size) = blob.finish();
            Ok(LayerInfo {
                digest,
                size,
                diff_id,
            })
        }
    }
}

/// The diff ID the tree under `root` would have as a layer: its tar's
/// sha256, with nothing compressed or written. A step's layer is named by
/// it at once; its blob is written by [`write_layer`] only when an image
/// needs it, and comes out with the same diff ID.
pub fn diff_id(root: &Path, opts: &LayerOptions) -> Result<Digest, Error> {
    // the tar is made on this thread and hashed on another, in 1 MiB
    // chunks: reading the files and hashing take about as long each
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(4);
    let hasher = std::thread::spawn(move || {
        let mut h = HashWriter::new(io::sink());
        for chunk in rx {
            let _ = h.write_all(&chunk);
        }
        h.finish().1
    });
    let chunks = Chunks {
        buf: Vec::with_capacity(CHUNK),
        tx,
    };
    let written = tar_to(root, chunks, opts)
        .and_then(|mut c| c.flush().map_err(|e| Error::io("writing the layer tar", e)));
    // the sender is dropped either way, so the hasher ends
    let digest = hasher.join().map_err(|_| {
        Error::io(
            "hashing the layer tar",
            io::Error::other("the hasher panicked"),
        )
    })?;
    written.map(|_| digest)
}

const CHUNK: usize = 1 << 20;

/// Hands what is written on in chunks of [`CHUNK`] bytes.
struct Chunks {
    buf: Vec<u8>,
    tx: std::sync::mpsc::SyncSender<Vec<u8>>,
}

impl Write for Chunks {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let full = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .send(full)
            .map_err(|_| io::Error::other("the hasher stopped"))
    }
}

fn write_tar<W: Write>(root: &Path, out: W, opts: &LayerOptions) -> Result<(W, Digest), Error> {
    let (inner, diff_id, _) = tar_to(root, HashWriter::new(out), opts)?.finish();
    Ok((inner, diff_id))
}

/// Writes the tree under `root` as a tar to `out`; returns `out`.
fn tar_to<W: Write>(root: &Path, out: W, opts: &LayerOptions) -> Result<W, Error> {
    let mut builder = tar::Builder::new(out);
    builder.follow_symlinks(false);
    let mut w = TarWriter {
        builder: &mut builder,
        epoch: opts.source_date_epoch,
        links: HashMap::new(),
    };
    w.walk(root, Path::new(""))?;
    builder
        .finish()
        .map_err(|e| Error::io("writing the layer tar", e))?;
    builder
        .into_inner()
        .map_err(|e| Error::io("writing the layer tar", e))
}

struct TarWriter<'a, W: Write> {
    builder: &'a mut tar::Builder<W>,
    epoch: Option<u64>,
    /// (dev, inode) of files with several links → the first path written.
    links: HashMap<(u64, u64), PathBuf>,
}

/// Names in `dir`, sorted byte-wise so the tar is the same on every machine.
pub fn sorted_names(dir: &Path) -> Result<Vec<std::ffi::OsString>, Error> {
    let mut names: Vec<_> = fs::read_dir(dir)
        .map_err(|e| Error::path("reading directory", dir, e))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .map_err(|e| Error::path("reading directory", dir, e))?;
    names.sort_by(|a, b| a.as_encoded_bytes().cmp(b.as_encoded_bytes()));
    Ok(names)
}

impl<W: Write> TarWriter<'_, W> {
    fn walk(&mut self, dir: &Path, rel: &Path) -> Result<(), Error> {
        for name in sorted_names(dir)? {
            let full = dir.join(&name);
            let rel = rel.join(&name);
            let meta = fs::symlink_metadata(&full).map_err(|e| Error::path("reading", &full, e))?;
            let ft = meta.file_type();
            if ft.is_char_device() && meta.rdev() == 0 {
                // an overlay whiteout: the file was deleted in this layer
                let wh = rel.with_file_name(format!("{WHITEOUT_PREFIX}{}", name.to_string_lossy()));
                self.empty_file(&wh, &meta)?;
                continue;
            }
            self.entry(&full, &rel, &meta)?;
            if ft.is_dir() {
                if xattr::get(&full, OPAQUE_XATTR)?.as_deref() == Some(b"y") {
                    self.empty_file(&rel.join(OPAQUE_MARKER), &meta)?;
                }
                self.walk(&full, &rel)?;
            }
        }
        Ok(())
    }

    fn header(&self, meta: &fs::Metadata) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        h.set_mode(meta.mode() & 0o7777);
        h.set_uid(meta.uid() as u64);
        h.set_gid(meta.gid() as u64);
        let mtime = meta.mtime().max(0) as u64;
        h.set_mtime(self.epoch.map_or(mtime, |e| mtime.min(e)));
        h.set_size(0);
        h
    }

    fn empty_file(&mut self, rel: &Path, meta: &fs::Metadata) -> Result<(), Error> {
        let mut h = self.header(meta);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        self.builder
            .append_data(&mut h, rel, io::empty())
            .map_err(|e| Error::path("writing", rel, e))
    }

    fn entry(&mut self, full: &Path, rel: &Path, meta: &fs::Metadata) -> Result<(), Error> {
        let xattrs: Vec<(String, Vec<u8>)> = xattr::list(full)?
            .into_iter()
            .filter(|(k, _)| !k.starts_with("trusted.overlay."))
            .collect();
        if !xattrs.is_empty() {
            let pax: Vec<(String, Vec<u8>)> = xattrs
                .into_iter()
                .map(|(k, v)| (format!("SCHILY.xattr.{k}"), v))
                .collect();
            self.builder
                .append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
                .map_err(|e| Error::path("writing xattrs of", rel, e))?;
        }
        let mut h = self.header(meta);
        let ft = meta.file_type();
        let err = |e| Error::path("writing", rel, e);
        if ft.is_dir() {
            h.set_entry_type(tar::EntryType::Directory);
            self.builder
                .append_data(&mut h, rel, io::empty())
                .map_err(err)
        } else if ft.is_symlink() {
            let target = fs::read_link(full).map_err(|e| Error::path("reading link", full, e))?;
            h.set_entry_type(tar::EntryType::Symlink);
            self.builder.append_link(&mut h, rel, &target).map_err(err)
        } else if ft.is_file() {
            if meta.nlink() > 1 {
                let key = (meta.dev(), meta.ino());
                if let Some(first) = self.links.get(&key) {
                    h.set_entry_type(tar::EntryType::Link);
                    let first = first.clone();
                    return self.builder.append_link(&mut h, rel, &first).map_err(err);
                }
                self.links.insert(key, rel.to_path_buf());
            }
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(meta.len());
            let f = fs::File::open(full).map_err(|e| Error::path("opening", full, e))?;
            self.builder.append_data(&mut h, rel, f).map_err(err)
        } else if ft.is_char_device() || ft.is_block_device() {
            h.set_entry_type(if ft.is_char_device() {
                tar::EntryType::Char
            } else {
                tar::EntryType::Block
            });
            let rdev = meta.rdev();
            h.set_device_major(rustix::fs::major(rdev)).map_err(err)?;
            h.set_device_minor(rustix::fs::minor(rdev)).map_err(err)?;
            self.builder
                .append_data(&mut h, rel, io::empty())
                .map_err(err)
        } else if ft.is_fifo() {
            h.set_entry_type(tar::EntryType::Fifo);
            self.builder
                .append_data(&mut h, rel, io::empty())
                .map_err(err)
        } else {
            // sockets cannot be stored in a layer
            Ok(())
        }
    }
}
