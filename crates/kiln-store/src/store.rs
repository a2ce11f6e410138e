//! The store itself: blobs, images, snapshots, the step cache and the lock.

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};

use kiln_oci::digest::{from_hex, HashReader};
use kiln_oci::image::{
    is_index_media, Descriptor, ImageConfig, Index, Manifest, Platform, MEDIA_INDEX,
};
use kiln_oci::unpack::{unpack, Target};
use kiln_oci::Digest;

use crate::refs::{self, normalize_name};
use crate::{atomic, Error};

/// An open store.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    waiting: Notice,
    /// Where blobs it does not hold are fetched from when first needed
    /// (set by a bake with a registry cache).
    remote: RemoteSlot,
}

#[derive(Clone, Default)]
struct RemoteSlot(std::sync::OnceLock<std::sync::Arc<dyn Remote>>);

impl std::fmt::Debug for RemoteSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "Remote(set)"
        } else {
            "Remote(none)"
        })
    }
}

/// Where a blob the store does not hold can be read: the places it was
/// noted at ([`Store::note_source`]), each `registry/repository`. A store
/// with a remote fetches a missing blob when something first reads it, so
/// a build that takes every step from a registry cache downloads no layer
/// it does not open.
pub trait Remote: Send + Sync {
    /// The blob `digest` as `location` holds it.
    fn open(&self, location: &str, digest: &Digest) -> Result<Box<dyn Read + Send>, String>;
}

/// What the store says when a lock keeps it waiting more than a moment.
#[derive(Clone, Default)]
struct Notice(Option<std::sync::Arc<NoticeFn>>);

type NoticeFn = dyn Fn(&str) + Send + Sync;

impl std::fmt::Debug for Notice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Notice(set)"
        } else {
            "Notice(none)"
        })
    }
}

/// Holds the store's lock until dropped.
pub struct StoreLock {
    _file: File,
}

/// An image in the store, with its manifest and config read.
#[derive(Debug, Clone)]
pub struct Image {
    pub name: String,
    pub manifest_digest: Digest,
    pub manifest_size: u64,
    pub manifest: Manifest,
    pub config: ImageConfig,
}

impl Store {
    /// Opens the store at `root`, creating its layout when missing.
    /// A relative `root` is made absolute: steps run in other mount
    /// namespaces and directories, where a relative path means nothing.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, Error> {
        let root: PathBuf = root.into();
        let root = std::path::absolute(&root)
            .map_err(|e| Error::io("resolving the store path", &root, e))?;
        let store = Store {
            root,
            waiting: Notice::default(),
            remote: Default::default(),
        };
        store.make_private()?;
        for dir in [
            store.blobs_dir(),
            store.root.join("snapshots"),
            store.root.join("cache"),
            store.tmp_dir(),
        ] {
            fs::create_dir_all(&dir).map_err(|e| Error::io("creating store directory", &dir, e))?;
        }
        let layout = store.oci_dir().join("oci-layout");
        if !layout.exists() {
            atomic::write(
                &store.tmp_dir(),
                &layout,
                br#"{"imageLayoutVersion":"1.0.0"}"#,
            )?;
        }
        let index = store.oci_dir().join("index.json");
        if !index.exists() {
            atomic::write(
                &store.tmp_dir(),
                &index,
                br#"{"schemaVersion":2,"manifests":[]}"#,
            )?;
        }
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The OCI image layout directory (usable as `oci:DIR:NAME` by skopeo).
    pub fn oci_dir(&self) -> PathBuf {
        self.root.join("oci")
    }

    fn blobs_dir(&self) -> PathBuf {
        self.oci_dir().join("blobs/sha256")
    }

    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// A fresh path in the store's tmp dir, on the same filesystem as the store.
    pub fn temp_path(&self, hint: &str) -> PathBuf {
        atomic::temp_path(&self.tmp_dir(), hint)
    }

    /// Says through `notice` what a lock waits for when it cannot be
    /// taken at once (the CLI prints it).
    pub fn with_wait_notice(mut self, notice: impl Fn(&str) + Send + Sync + 'static) -> Self {
        self.waiting = Notice(Some(std::sync::Arc::new(notice)));
        self
    }

    /// Takes the store's collection lock: shared by every operation that
    /// stores blobs it names later (builds, pulls, `kiln run`), held until
    /// its names are written, so `prune` never collects them half-way;
    /// exclusive for `prune` and `fsck`, which wait for those to finish.
    /// Naming images does not take it (see [`Store::tag`]), so builds never
    /// wait for one another.
    pub fn lock(&self, exclusive: bool) -> Result<StoreLock, Error> {
        let what = if exclusive {
            "for the builds, pulls and runs using this store to finish"
        } else {
            "for a prune or fsck of this store to finish"
        };
        self.flock("lock", exclusive, what)
    }

    /// The index lock: held for the moment a name is read, changed and
    /// written, so concurrent namings never lose one another's names.
    fn index_lock(&self) -> Result<StoreLock, Error> {
        self.flock(
            "index.lock",
            true,
            "for another kiln naming an image in this store",
        )
    }

    fn flock(&self, name: &str, exclusive: bool, waits_for: &str) -> Result<StoreLock, Error> {
        let path = self.root.join(name);
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io("opening", &path, e))?;
        let attempt = if exclusive {
            file.try_lock()
        } else {
            file.try_lock_shared()
        };
        match attempt {
            Ok(()) => return Ok(StoreLock { _file: file }),
            Err(fs::TryLockError::WouldBlock) => {}
            Err(fs::TryLockError::Error(e)) => return Err(Error::io("locking", &path, e)),
        }
        if let Some(notice) = &self.waiting.0 {
            notice(&format!("waiting {waits_for} ({})", path.display()));
        }
        let r = if exclusive {
            file.lock()
        } else {
            file.lock_shared()
        };
        r.map_err(|e| Error::io("locking", &path, e))?;
        Ok(StoreLock { _file: file })
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blobs_dir().join(digest.digest())
    }

    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Fetches blobs it does not hold from `remote` from now on (once per
    /// store; a second remote is ignored).
    pub fn set_remote(&self, remote: std::sync::Arc<dyn Remote>) {
        let _ = self.remote.0.set(remote);
    }

    /// Whether it has a remote to fetch missing blobs from.
    pub fn has_remote(&self) -> bool {
        self.remote.0.get().is_some()
    }

    /// Whether blob `digest` is here, or can be fetched when needed.
    pub fn can_read_blob(&self, digest: &Digest) -> bool {
        self.has_blob(digest) || (self.has_remote() && !self.sources(digest).is_empty())
    }

    /// Makes sure blob `digest` is here: fetched from the first place noted
    /// for it that has it, checked against its digest.
    pub fn fetch_blob(&self, digest: &Digest) -> Result<(), Error> {
        if self.has_blob(digest) {
            return Ok(());
        }
        let Some(remote) = self.remote.0.get() else {
            return Err(Error::MissingBlob(digest.clone()));
        };
        let mut failures = Vec::new();
        for location in self.sources(digest) {
            match remote.open(&location, digest) {
                Ok(reader) => match self.put_blob_from(reader, Some(digest)) {
                    Ok(_) => return Ok(()),
                    Err(e) => failures.push(format!("{location}: {e}")),
                },
                Err(e) => failures.push(format!("{location}: {e}")),
            }
        }
        if failures.is_empty() {
            return Err(Error::MissingBlob(digest.clone()));
        }
        Err(Error::Spec(format!(
            "blob {digest} is not here and could not be fetched: {}",
            failures.join("; ")
        )))
    }

    /// Moves a finished temp file into the store as the blob `digest`.
    pub fn commit_blob(&self, temp: &Path, digest: &Digest) -> Result<(), Error> {
        let to = self.blob_path(digest);
        if to.exists() {
            let _ = fs::remove_file(temp);
            return Ok(());
        }
        atomic::commit(temp, &to)
    }

    /// Stores `bytes` as a blob and returns its digest.
    pub fn put_blob(&self, bytes: &[u8]) -> Result<Digest, Error> {
        let digest = kiln_oci::digest::sha256(bytes);
        let to = self.blob_path(&digest);
        if !to.exists() {
            atomic::write(&self.tmp_dir(), &to, bytes)?;
        }
        Ok(digest)
    }

    /// Stores what `reader` yields, checking it against `expected` when given.
    pub fn put_blob_from(
        &self,
        reader: impl Read,
        expected: Option<&Digest>,
    ) -> Result<(Digest, u64), Error> {
        self.put_checked(reader, expected, None)
    }

    /// Stores the blob a descriptor names (`digest`, `size`), read from
    /// `reader`: no more than `size` bytes are read (and one more, to tell
    /// a longer body), and a body of another length or digest stores nothing.
    pub fn put_described(
        &self,
        reader: impl Read,
        digest: &Digest,
        size: u64,
    ) -> Result<(), Error> {
        self.put_checked(
            reader.take(size.saturating_add(1)),
            Some(digest),
            Some(size),
        )
        .map(|_| ())
    }

    fn put_checked(
        &self,
        reader: impl Read,
        expected: Option<&Digest>,
        declared: Option<u64>,
    ) -> Result<(Digest, u64), Error> {
        let temp = self.temp_path("blob");
        let mut out = File::create(&temp).map_err(|e| Error::io("creating", &temp, e))?;
        let mut hashed = HashReader::new(reader);
        std::io::copy(&mut hashed, &mut out).map_err(|e| Error::io("writing", &temp, e))?;
        let (digest, size) = hashed
            .finish()
            .map_err(|e| Error::io("reading blob for", &temp, e))?;
        // a wrong digest first: a body cut short is that, and worth retrying;
        // the right content with another length is a descriptor that lies
        if let Some(want) = expected.filter(|w| **w != digest) {
            let _ = fs::remove_file(&temp);
            return Err(Error::DigestMismatch {
                expected: want.clone(),
                actual: digest,
            });
        }
        if let Some(want) = declared.filter(|d| *d != size) {
            let _ = fs::remove_file(&temp);
            return Err(Error::SizeMismatch {
                digest: expected.cloned().unwrap_or(digest),
                declared: want,
                actual: size,
            });
        }
        self.commit_blob(&temp, &digest)?;
        Ok((digest, size))
    }

    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>, Error> {
        let p = self.blob_path(digest);
        if !p.is_file() {
            self.fetch_blob(digest)?;
        }
        fs::read(&p).map_err(|e| Error::io("reading blob", &p, e))
    }

    /// Creates the store's root, readable by its owner only (0700, as
    /// containers-storage keeps its own): snapshots hold images' setuid
    /// files and device nodes as they are, which no other user may reach.
    fn make_private(&self) -> Result<(), Error> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        let root = &self.root;
        if let Some(parent) = root.parent() {
            fs::create_dir_all(parent).map_err(|e| Error::io("creating", parent, e))?;
        }
        match fs::DirBuilder::new().mode(0o700).create(root) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                return Err(Error::io("creating the store", root, e))
            }
            _ => {}
        }
        let mode = fs::metadata(root)
            .map_err(|e| Error::io("reading", root, e))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            fs::set_permissions(root, fs::Permissions::from_mode(0o700))
                .map_err(|e| Error::io("making the store private", root, e))?;
        }
        Ok(())
    }

    pub fn open_blob(&self, digest: &Digest) -> Result<File, Error> {
        let p = self.blob_path(digest);
        if !p.is_file() {
            self.fetch_blob(digest)?;
        }
        File::open(&p).map_err(|_| Error::MissingBlob(digest.clone()))
    }

    fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        digest: &Digest,
        what: &str,
    ) -> Result<T, Error> {
        let bytes = self.read_blob(digest)?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Json {
            what: format!("parsing {what} {digest}"),
            source: e,
        })
    }

    pub fn index(&self) -> Result<Index, Error> {
        let p = self.oci_dir().join("index.json");
        let bytes = fs::read(&p).map_err(|e| Error::io("reading", &p, e))?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Json {
            what: format!("parsing {}", p.display()),
            source: e,
        })
    }

    fn write_index(&self, index: &Index) -> Result<(), Error> {
        let bytes = serde_json::to_vec_pretty(index).map_err(|e| Error::Json {
            what: "writing index.json".into(),
            source: e,
        })?;
        atomic::write(&self.tmp_dir(), &self.oci_dir().join("index.json"), &bytes)
    }

    /// Points `name` at the manifest `desc` (which must already be stored).
    pub fn tag(&self, name: &str, desc: &Descriptor) -> Result<String, Error> {
        let name = normalize_name(name)?;
        let _lock = self.index_lock()?;
        let mut index = self.index()?;
        let current = refs::all(&index).into_iter().find(|(n, _)| *n == name);
        if current.is_some_and(|(_, d)| d.digest == desc.digest) {
            return Ok(name); // already so: nothing to write
        }
        refs::set(&mut index, &name, desc);
        self.write_index(&index)?;
        Ok(name)
    }

    /// Gives the image named `existing` the name `name` too.
    pub fn tag_as(&self, existing: &str, name: &str) -> Result<String, Error> {
        let (_, mut desc) = self.resolve(existing)?;
        desc.annotations.clear();
        self.tag(name, &desc)
    }

    /// Removes the name `name`; blobs stay until `prune`.
    pub fn untag(&self, name: &str) -> Result<(), Error> {
        let name = normalize_name(name)?;
        let _lock = self.index_lock()?;
        let mut index = self.index()?;
        if !refs::remove(&mut index, &name) {
            return Err(Error::NoSuchImage(name));
        }
        self.write_index(&index)
    }

    /// Every (name, manifest descriptor) in the store, sorted by name.
    pub fn list(&self) -> Result<Vec<(String, Descriptor)>, Error> {
        Ok(refs::all(&self.index()?))
    }

    /// Reads the image `name`, or one given by manifest digest (`sha256:…`).
    /// A name holding an image index gives the entry for this machine's platform.
    pub fn image(&self, name: &str) -> Result<Image, Error> {
        self.image_for(name, &Platform::host())
    }

    /// Reads the image `name` for `platform`: a name holding an index gives
    /// that platform's entry; a name holding one manifest gives it whatever
    /// its platform (the caller compares `Image::platform`).
    pub fn image_for(&self, name: &str, platform: &Platform) -> Result<Image, Error> {
        let (name, desc) = self.resolve(name)?;
        if !is_index_media(&desc.media_type) {
            return self.read_image(name, &desc);
        }
        let index: Index = self.read_json(&parse_digest(&desc.digest)?, "index")?;
        let entry = index
            .manifests
            .iter()
            .find(|d| d.platform.as_ref().is_some_and(|p| p.serves(platform)));
        let have = || platforms_of(&index).join(", ");
        let Some(entry) = entry else {
            return Err(Error::NoPlatform {
                name,
                platform: platform.to_string(),
                have: have(),
            });
        };
        // an index pulled for some platforms lacks the others' manifests
        if !self.has_blob(&parse_digest(&entry.digest)?) {
            return Err(Error::NoPlatform {
                name,
                platform: platform.to_string(),
                have: format!("{} in the index; that one was not pulled", have()),
            });
        }
        self.read_image(name, entry)
    }

    /// The image index `name` holds, with its descriptor; `None` when it
    /// holds a single manifest.
    pub fn image_index(&self, name: &str) -> Result<Option<(Descriptor, Index)>, Error> {
        let (_, desc) = self.resolve(name)?;
        if !is_index_media(&desc.media_type) {
            return Ok(None);
        }
        let index = self.read_json(&parse_digest(&desc.digest)?, "index")?;
        Ok(Some((desc, index)))
    }

    /// Every image `name` holds that is in the store: the one manifest, or
    /// each index entry whose manifest is here.
    pub fn images_of(&self, name: &str) -> Result<Vec<Image>, Error> {
        let (full, desc) = self.resolve(name)?;
        let Some((_, index)) = self.image_index(name)? else {
            return Ok(vec![self.read_image(full, &desc)?]);
        };
        let mut out = Vec::new();
        for entry in &index.manifests {
            if self.has_blob(&parse_digest(&entry.digest)?) {
                out.push(self.read_image(full.clone(), entry)?);
            }
        }
        Ok(out)
    }

    /// Stores an image index of `manifests` (each with its platform) and
    /// returns its descriptor, for [`Store::tag`].
    pub fn put_index(&self, manifests: Vec<Descriptor>) -> Result<Descriptor, Error> {
        let (bytes, desc) = Index::of_platforms(manifests);
        self.put_blob(&bytes)?;
        Ok(desc)
    }

    fn read_image(&self, name: String, desc: &Descriptor) -> Result<Image, Error> {
        let digest = parse_digest(&desc.digest)?;
        let manifest: Manifest = self.read_json(&digest, "manifest")?;
        let config: ImageConfig =
            self.read_json(&parse_digest(&manifest.config.digest)?, "config")?;
        Ok(Image {
            name,
            manifest_digest: digest,
            manifest_size: desc.size,
            manifest,
            config,
        })
    }

    /// The name `name` (or a `sha256:…` digest an image has) and what it points at.
    pub fn lookup(&self, name: &str) -> Result<(String, Descriptor), Error> {
        self.resolve(name)
    }

    fn resolve(&self, name: &str) -> Result<(String, Descriptor), Error> {
        let list = self.list()?;
        let wanted = name.strip_prefix("sha256:").map(|_| name);
        if let Some(d) = wanted {
            if let Some((n, desc)) = list.iter().find(|(_, desc)| desc.digest == d) {
                return Ok((n.clone(), desc.clone()));
            }
            // a manifest inside an index, or one no name holds (a build's result)
            if let Ok(bytes) = self.read_blob(&parse_digest(d)?) {
                return Ok((
                    d.to_string(),
                    Descriptor {
                        media_type: media_type_of(&bytes),
                        digest: d.to_string(),
                        size: bytes.len() as u64,
                        annotations: Default::default(),
                        platform: None,
                    },
                ));
            }
            return Err(Error::NoSuchImage(name.to_string()));
        }
        let norm = normalize_name(name)?;
        list.into_iter()
            .find(|(n, _)| *n == norm)
            .ok_or(Error::NoSuchImage(norm))
    }

    /// The directory of the snapshot for layer chain `chain`, if unpacked.
    pub fn snapshot(&self, chain: &Digest) -> Option<PathBuf> {
        let p = self.root.join("snapshots").join(chain.digest());
        p.is_dir().then_some(p)
    }

    /// The snapshot of a layer (`blob`, whose tar has `diff_id`, at chain
    /// `chain`), unpacked from its blob and committed first when the store
    /// does not have it yet.
    pub fn ensure_snapshot(
        &self,
        blob: &Digest,
        diff_id: &Digest,
        chain: &Digest,
    ) -> Result<PathBuf, Error> {
        if let Some(dir) = self.snapshot(chain) {
            return Ok(dir);
        }
        let tmp = self.temp_path("snapshot");
        fs::create_dir(&tmp).map_err(|e| Error::io("creating", &tmp, e))?;
        let unpacked = self.open_blob(blob).and_then(|f| {
            unpack(f, &tmp, Target::OverlayDiff).map_err(|source| Error::Layer {
                layer: blob.clone(),
                source: Box::new(source),
            })
        });
        match unpacked {
            Ok(actual) if actual == *diff_id => self.commit_snapshot(&tmp, chain),
            Ok(actual) => {
                let _ = fs::remove_dir_all(&tmp);
                Err(kiln_oci::Error::DigestMismatch {
                    expected: diff_id.clone(),
                    actual,
                }
                .into())
            }
            Err(e) => {
                let _ = fs::remove_dir_all(&tmp);
                Err(e)
            }
        }
    }

    /// The snapshot of each of `img`'s layers, bottom-most first (made when
    /// missing, see [`Store::ensure_snapshot`]).
    pub fn snapshots(&self, img: &Image) -> Result<Vec<PathBuf>, Error> {
        let diff_ids = &img.config.rootfs.diff_ids;
        if diff_ids.len() != img.manifest.layers.len() {
            return Err(Error::Spec(format!(
                "{}: the config lists {} layers, the manifest {}",
                img.name,
                diff_ids.len(),
                img.manifest.layers.len()
            )));
        }
        let mut parent: Option<Digest> = None;
        let mut out = Vec::new();
        for (layer, diff_id) in img.manifest.layers.iter().zip(diff_ids) {
            let diff_id = parse_digest(diff_id)?;
            let chain = chain_id(parent.as_ref(), &diff_id);
            out.push(self.ensure_snapshot(&parse_digest(&layer.digest)?, &diff_id, &chain)?);
            parent = Some(chain);
        }
        Ok(out)
    }

    /// Makes `dir` (a finished overlay diff dir in tmp/) the snapshot of `chain`.
    pub fn commit_snapshot(&self, dir: &Path, chain: &Digest) -> Result<PathBuf, Error> {
        let to = self.root.join("snapshots").join(chain.digest());
        if to.exists() {
            let _ = fs::remove_dir_all(dir);
            return Ok(to);
        }
        match fs::rename(dir, &to) {
            Ok(()) => Ok(to),
            // another build committed the same snapshot first
            Err(_) if to.exists() => {
                let _ = fs::remove_dir_all(dir);
                Ok(to)
            }
            Err(e) => Err(Error::io("committing snapshot", &to, e)),
        }
    }

    /// Remembers that `location` (`registry/repository`) holds blob `digest`,
    /// so a later push to the same registry can mount it instead of uploading.
    pub fn note_source(&self, digest: &Digest, location: &str) -> Result<(), Error> {
        let mut known = self.sources(digest);
        if known.iter().any(|k| k == location) {
            return Ok(());
        }
        known.push(location.to_string());
        let dir = self.root.join("sources");
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("creating", &dir, e))?;
        atomic::write(
            &self.tmp_dir(),
            &dir.join(digest.digest()),
            known.join("\n").as_bytes(),
        )
    }

    /// Where blob `digest` is known to be (`registry/repository` each).
    pub fn sources(&self, digest: &Digest) -> Vec<String> {
        let p = self.root.join("sources").join(digest.digest());
        fs::read_to_string(p)
            .map(|s| {
                s.lines()
                    .filter(|l| !l.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The platforms an index's entries name, as `os/arch[/variant]`.
pub fn platforms_of(index: &Index) -> Vec<String> {
    index
        .manifests
        .iter()
        .filter_map(|d| d.platform.as_ref().map(Platform::to_string))
        .collect()
}

/// The media type a manifest or index document declares (an index when it
/// lists manifests and no layers).
fn media_type_of(bytes: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(bytes).unwrap_or_default();
    match v.get("mediaType").and_then(|m| m.as_str()) {
        Some(m) => m.to_string(),
        None if v.get("manifests").is_some() => MEDIA_INDEX.into(),
        None => kiln_oci::image::MEDIA_MANIFEST.into(),
    }
}

/// A `sha256:…` string as a digest.
pub fn parse_digest(s: &str) -> Result<Digest, Error> {
    let hex = s.strip_prefix("sha256:").ok_or_else(|| {
        Error::Spec(format!(
            "unsupported digest {s:?}: only sha256 is supported"
        ))
    })?;
    Ok(from_hex(hex)?)
}

/// The chain ID of a layer stack: chain(1) = diff_id(1), chain(n) =
/// sha256(chain(n-1) + " " + diff_id(n)) (OCI image spec, config.md).
pub fn chain_id(parent: Option<&Digest>, diff_id: &Digest) -> Digest {
    match parent {
        None => diff_id.clone(),
        Some(p) => kiln_oci::digest::sha256(format!("{p} {diff_id}").as_bytes()),
    }
}
