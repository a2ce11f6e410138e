//! COPY and ADD: a layer written straight from the context (or another
//! stage), following Docker's rules for where each source lands.

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use kiln_dockerfile::instructions::Files;
use kiln_dockerfile::{Stage, Step};
use rustix::fs::{AtFlags, Timespec, Timestamps, CWD};

use kiln_oci::unpack::remove_any;

use crate::context::clean;
use crate::engine::{key_of, Builder};
use crate::state::State;
use crate::users::Ids;
use crate::view::View;
use crate::BuildError;
use kiln_dockerfile::glob::{self, has_wildcard};

/// Where a COPY reads from.
enum Origin<'a> {
    Context(&'a crate::context::Context),
    View(View),
}

impl Origin<'_> {
    /// The real file behind `rel` in this origin.
    fn backing(&self, rel: &Path) -> Option<PathBuf> {
        match self {
            Origin::Context(c) => {
                Some(c.root.join(rel)).filter(|p| fs::symlink_metadata(p).is_ok())
            }
            Origin::View(v) => v.resolve(rel, false).map(|(_, b)| b),
        }
    }

    /// What a source named in the instruction stands for: a symlink is
    /// followed (inside the context, or inside the source stage's root), as
    /// BuildKit and buildah copy what a named symlink points to; symlinks
    /// inside a copied directory are copied as they are.
    fn follow(&self, rel: &Path) -> Result<PathBuf, String> {
        match self {
            Origin::Context(c) => c.follow(rel),
            Origin::View(v) => v
                .resolve(rel, true)
                .map(|(p, _)| p)
                .ok_or_else(|| format!("{} points to nothing in the source stage", rel.display())),
        }
    }

    /// Every source the instruction names, each as named (its name is what
    /// lands) and as what it stands for (see [`Origin::follow`]).
    fn sources(&self, patterns: &[&String]) -> Result<Vec<(PathBuf, PathBuf)>, String> {
        let mut out = Vec::new();
        for p in patterns {
            for named in self.expand(p)? {
                let real = self.follow(&named)?;
                out.push((named, real));
            }
        }
        Ok(out)
    }

    fn list(&self, rel: &Path) -> Vec<std::ffi::OsString> {
        match self {
            Origin::Context(c) => kiln_oci::layer::sorted_names(&c.root.join(rel))
                .unwrap_or_default()
                .into_iter()
                .filter(|n| !c.excluded(&rel.join(n)))
                .collect(),
            Origin::View(v) => v.list(rel),
        }
    }

    fn expand(&self, source: &str) -> Result<Vec<PathBuf>, String> {
        match self {
            Origin::Context(c) => c.expand(source),
            Origin::View(v) => {
                let rel =
                    clean(source).ok_or_else(|| format!("{source:?} climbs out of the root"))?;
                if !has_wildcard(source) {
                    return v
                        .resolve(&rel, false)
                        .map(|(p, _)| vec![p])
                        .ok_or_else(|| format!("{source:?} not found in the source stage"));
                }
                let (dir, pat) = (
                    rel.parent().unwrap_or(Path::new("")),
                    rel.file_name()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .into_owned(),
                );
                let found: Vec<PathBuf> = v
                    .list(dir)
                    .into_iter()
                    .filter(|n| glob::matches(&pat, &n.to_string_lossy()))
                    .map(|n| dir.join(n))
                    .collect();
                Ok(found)
            }
        }
    }
}

/// Creates the parent directories of `rel` in `tree`, with the metadata they
/// have in `view`; directories that are new get mode 0755 and `owner`.
/// Owner, mode and mtime a directory of the layer gets.
#[derive(Clone, Copy)]
pub(crate) struct DirMeta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: u64,
}

impl DirMeta {
    fn of(m: &fs::Metadata) -> DirMeta {
        DirMeta {
            mode: m.mode() & 0o7777,
            uid: m.uid(),
            gid: m.gid(),
            mtime: m.mtime().max(0) as u64,
        }
    }

    /// The metadata of directory `rel` in the parent layers, if it is one.
    fn in_view(view: &View, rel: &Path) -> Option<DirMeta> {
        view.resolve(rel, true)
            .and_then(|(_, b)| fs::metadata(b).ok())
            .filter(|m| m.is_dir())
            .map(|m| DirMeta::of(&m))
    }

    /// A directory COPY makes: 0755, owned by `owner` (--chown's, or root).
    fn new_dir(owner: (u32, u32), mtime: u64) -> DirMeta {
        DirMeta {
            mode: 0o755,
            uid: owner.0,
            gid: owner.1,
            mtime,
        }
    }

    fn apply(&self, p: &Path) -> Result<(), BuildError> {
        set_meta(p, self.mode, self.uid, self.gid, self.mtime)
    }
}

/// Creates the missing parents of `rel` in `tree`: as they are in the
/// parent layers, or new (0755, `owner`, the epoch). Returns the directories
/// it made, so that their metadata can be set again once entries have been
/// added to them (which moves a directory's mtime to now).
pub(crate) fn make_parents(
    view: &View,
    tree: &Path,
    rel: &Path,
    epoch: Option<u64>,
    owner: (u32, u32),
) -> Result<Vec<(PathBuf, DirMeta)>, BuildError> {
    let mut cur = PathBuf::new();
    let mut made = Vec::new();
    let parents: Vec<_> = rel
        .parent()
        .map(|p| p.components().collect())
        .unwrap_or_default();
    fs::create_dir_all(tree)
        .map_err(|e| BuildError::io(format!("creating {}", tree.display()), e))?;
    for c in parents {
        cur.push(c);
        let at = tree.join(&cur);
        if at.is_dir() {
            continue;
        }
        fs::create_dir(&at).map_err(|e| BuildError::io(format!("creating {}", at.display()), e))?;
        let meta = DirMeta::in_view(view, &cur)
            .unwrap_or_else(|| DirMeta::new_dir(owner, epoch.unwrap_or(0)));
        made.push((at, meta));
    }
    // after all are made: making a child moved its parent's mtime
    for (at, meta) in &made {
        meta.apply(at)?;
    }
    Ok(made)
}

fn set_meta(p: &Path, mode: u32, uid: u32, gid: u32, mtime: u64) -> Result<(), BuildError> {
    rustix::fs::chownat(
        CWD,
        p,
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(|e| BuildError::io(format!("setting owner of {}", p.display()), e.into()))?;
    let is_link = fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink());
    if !is_link {
        fs::set_permissions(p, fs::Permissions::from_mode(mode))
            .map_err(|e| BuildError::io(format!("setting mode of {}", p.display()), e))?;
    }
    let t = Timespec {
        tv_sec: mtime as i64,
        tv_nsec: 0,
    };
    rustix::fs::utimensat(
        CWD,
        p,
        &Timestamps {
            last_access: t,
            last_modification: t,
        },
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(|e| BuildError::io(format!("setting times of {}", p.display()), e.into()))
}

struct Copier<'a> {
    origin: &'a Origin<'a>,
    owner: Option<Ids>,
    chmod: Option<u32>,
    epoch: Option<u64>,
}

impl Copier<'_> {
    /// The owner of what the step makes rather than copies (directories,
    /// downloads, heredoc files): --chown's user, or root (Docker's
    /// documented rule).
    fn new_owner(&self) -> (u32, u32) {
        self.owner.as_ref().map_or((0, 0), |i| (i.uid, i.gid))
    }

    /// The owner and mtime a copy of an entry with this metadata gets.
    fn owner_and_time(&self, meta: &fs::Metadata) -> (u32, u32, u64) {
        let (uid, gid) = match &self.owner {
            Some(ids) => (ids.uid, ids.gid),
            None if matches!(self.origin, Origin::Context(_)) => (0, 0),
            None => (meta.uid(), meta.gid()),
        };
        let mtime = meta.mtime().max(0) as u64;
        (uid, gid, self.epoch.map_or(mtime, |e| mtime.min(e)))
    }

    /// The metadata a copy of a directory with `meta` gets.
    fn dir_meta(&self, meta: &fs::Metadata) -> DirMeta {
        let (uid, gid, mtime) = self.owner_and_time(meta);
        let mode = self.chmod.unwrap_or(meta.mode() & 0o7777);
        DirMeta {
            mode,
            uid,
            gid,
            mtime,
        }
    }

    /// Copies `src` (a path in the origin) to `dst` (a path in the tree).
    fn copy(&self, src_rel: &Path, dst: &Path) -> Result<(), BuildError> {
        let Some(src) = self.origin.backing(src_rel) else {
            return Ok(());
        };
        let meta = fs::symlink_metadata(&src)
            .map_err(|e| BuildError::io(format!("reading {}", src.display()), e))?;
        let (uid, gid, mtime) = self.owner_and_time(&meta);
        if meta.file_type().is_symlink() {
            let target = fs::read_link(&src)
                .map_err(|e| BuildError::io(format!("reading link {}", src.display()), e))?;
            remove_any(dst)?;
            symlink(&target, dst)
                .map_err(|e| BuildError::io(format!("creating {}", dst.display()), e))?;
            return set_meta(dst, 0o777, uid, gid, mtime);
        }
        if meta.is_dir() {
            if !fs::symlink_metadata(dst).is_ok_and(|m| m.is_dir()) {
                remove_any(dst)?;
                fs::create_dir(dst)
                    .map_err(|e| BuildError::io(format!("creating {}", dst.display()), e))?;
            }
            for name in self.origin.list(src_rel) {
                self.copy(&src_rel.join(&name), &dst.join(&name))?;
            }
            return self.dir_meta(&meta).apply(dst);
        }
        if meta.is_file() {
            remove_any(dst)?;
            fs::copy(&src, dst).map_err(|e| {
                BuildError::io(format!("copying {} to {}", src.display(), dst.display()), e)
            })?;
            let mode = self.chmod.unwrap_or(meta.mode() & 0o7777);
            return set_meta(dst, mode, uid, gid, mtime);
        }
        Ok(()) // devices, fifos and sockets are not copied
    }
}

/// Fills the empty directory `dst` with what is under `src` in `view` (a
/// symlink `src` followed inside that root), owners and modes kept: the
/// first content of a cache mount `from` a stage, as BuildKit seeds it.
pub(crate) fn seed(view: View, src: &Path, dst: &Path) -> Result<(), BuildError> {
    let origin = Origin::View(view);
    let real = origin.follow(src).map_err(BuildError::Context)?;
    let copier = Copier {
        origin: &origin,
        owner: None,
        chmod: None,
        epoch: None,
    };
    for name in origin.list(&real) {
        copier.copy(&real.join(&name), &dst.join(&name))?;
    }
    Ok(())
}

/// The cache key of what COPY reads from the context: the content of what
/// the sources stand for, and the names they land under.
fn context_key(
    c: &crate::context::Context,
    sources: &[(PathBuf, PathBuf)],
) -> Result<String, String> {
    let reals: Vec<PathBuf> = sources.iter().map(|(_, r)| r.clone()).collect();
    let names: Vec<String> = sources
        .iter()
        .map(|(n, _)| n.display().to_string())
        .collect();
    Ok(key_of(&[&c.hash(&reals)?, &names.join("\0")]))
}

/// True when `path` holds a tar archive (plain or gzip), which ADD unpacks.
fn is_archive(path: &Path) -> bool {
    let Ok(mut f) = fs::File::open(path) else {
        return false;
    };
    let mut head = [0u8; 512];
    let n = std::io::Read::read(&mut f, &mut head).unwrap_or(0);
    if head[..n.min(2)] == [0x1f, 0x8b] {
        return true;
    }
    n >= 262 && &head[257..262] == b"ustar"
}

impl Builder<'_, '_> {
    /// What ADD's URLs add to the step's key: each one's `--checksum`,
    /// known without downloading it, or the digest of what was downloaded
    /// (which the step then copies).
    fn url_content(
        &self,
        urls: &[&String],
        checksum: Option<&str>,
    ) -> Result<(String, Vec<crate::fetch::Fetched>), String> {
        let mut fetched = Vec::new();
        let mut key = String::new();
        for url in urls {
            match checksum {
                Some(sum) => key.push_str(sum),
                None => {
                    let f = crate::fetch::fetch(self.store, url, None)?;
                    key.push_str(&f.digest);
                    fetched.push(f);
                }
            }
        }
        Ok((key, fetched))
    }

    /// What the step's local sources add to its key, and the context's
    /// sources when it reads the context (their content is the key). A
    /// stage is named by its key: its files are opened (and its layers
    /// fetched, when they are in a registry) only if the step runs.
    fn local_content(
        &self,
        from: Option<&State>,
        locals: &[&String],
    ) -> Result<(String, Vec<(PathBuf, PathBuf)>), String> {
        match from {
            Some(s) => Ok((s.key.clone(), Vec::new())),
            None => {
                let sources = Origin::Context(&self.ctx).sources(locals)?;
                Ok((context_key(&self.ctx, &sources)?, sources))
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn copy_step(
        &self,
        st: &mut State,
        stage: &Stage,
        step: &Step,
        files: &Files,
        from: Option<State>,
        add: bool,
        text: &str,
    ) -> Result<(), BuildError> {
        let fail = self.step_error(step.line, text);
        if let Some(git) = files
            .sources
            .iter()
            .find(|s| s.starts_with("git@") || s.starts_with("git://") || s.ends_with(".git"))
        {
            return Err(fail(format!(
                "ADD from the git repository {git}: git sources are not supported yet"
            )));
        }
        let (urls, locals): (Vec<&String>, Vec<&String>) = files
            .sources
            .iter()
            .partition(|s| add && crate::fetch::is_url(s));
        let checksum = match &step.instruction {
            kiln_dockerfile::Instruction::Add(a) => a.checksum.clone(),
            _ => None,
        };
        let (url_key, mut fetched) = self
            .url_content(&urls, checksum.as_deref())
            .map_err(&fail)?;
        let (content, from_context) = self.local_content(from.as_ref(), &locals).map_err(&fail)?;
        let json = serde_json::to_string(&step.instruction).unwrap_or_default();
        let key = key_of(&[
            &st.key,
            &json,
            &content,
            &url_key,
            &st.config.config.working_dir,
        ]);
        st.key = key.clone();
        let Some(_running) = self.begin(st, stage, step, text, &key)? else {
            return Ok(());
        };
        let (origin, sources) = match (&from, from_context) {
            (Some(s), _) => {
                let origin = Origin::View(s.view(self.store)?);
                let sources = origin.sources(&locals).map_err(&fail)?;
                (origin, sources)
            }
            (None, sources) => (Origin::Context(&self.ctx), sources),
        };
        let view = st.view(self.store)?;
        let tree = self.store.temp_path("copy");
        // a failed COPY or ADD leaves nothing in the store's tmp
        let _cleanup = kiln_store::RemoveOnDrop(tree.clone());
        fs::create_dir(&tree)
            .map_err(|e| BuildError::io(format!("creating {}", tree.display()), e))?;
        // sources as written, not what their wildcards matched: `COPY *.txt
        // /testdir` with two matches writes the file /testdir (the last one
        // wins), as BuildKit and buildah do
        let many = locals.len() + urls.len() + files.inline.len() > 1;
        let place = Placement::of(st, &view, files, many);
        let writer = Writer {
            copier: Copier {
                origin: &origin,
                owner: owner_of(&view, files).map_err(&fail)?,
                chmod: mode_of(files).map_err(&fail)?,
                epoch: self.opts.source_date_epoch,
            },
            place: &place,
            view: &view,
            tree: &tree,
        };
        // directories made here, set again once everything is in them
        let mut made = Vec::new();
        writer.sources(&sources, add, &fail, &mut made)?;
        if fetched.is_empty() {
            for url in &urls {
                fetched.push(
                    crate::fetch::fetch(self.store, url, checksum.as_deref()).map_err(&fail)?,
                );
            }
        }
        writer.extras(&fetched, &files.inline, &mut made)?;
        // in order, so a later decision for a directory wins; setting a
        // directory's metadata does not touch its parent's
        for (dir, meta) in &made {
            meta.apply(dir)?;
        }
        let committed = self.commit_layer(st, stage, step, &tree, &key)?;
        st.history(format!("{text} # kiln"), !committed);
        Ok(())
    }
}

/// --chown's user, resolved in the image.
fn owner_of(view: &View, files: &Files) -> Result<Option<Ids>, String> {
    files
        .chown
        .as_deref()
        .map(|c| crate::users::resolve(view, c))
        .transpose()
}

/// --chmod's mode.
fn mode_of(files: &Files) -> Result<Option<u32>, String> {
    files
        .chmod
        .as_deref()
        .map(|m| {
            u32::from_str_radix(m, 8)
                .map_err(|_| format!("invalid --chmod={m}: kiln supports octal modes"))
        })
        .transpose()
}

/// Where a COPY or ADD writes, as the image sees it.
struct Placement {
    /// the destination, resolved through the image's symlinks
    dest: PathBuf,
    /// whether sources go into `dest` (rather than becoming it)
    dest_is_dir: bool,
}

impl Placement {
    fn of(st: &State, view: &View, files: &Files, many: bool) -> Placement {
        let dest_raw = if files.dest.starts_with('/') {
            files.dest.clone()
        } else {
            format!(
                "{}/{}",
                st.config.config.working_dir.trim_end_matches('/'),
                files.dest
            )
        };
        // the destination as the image sees it: through its symlinks
        let dest = view.resolve_dest(&clean(&dest_raw).unwrap_or_default());
        let dest_is_dir = files.dest.ends_with('/')
            || files.dest == "."
            || many
            || view.resolve(&dest, true).is_some_and(|(_, b)| b.is_dir());
        Placement { dest, dest_is_dir }
    }

    /// Where an entry called `name` lands.
    fn target(&self, name: &Path) -> PathBuf {
        if self.dest_is_dir {
            self.dest.join(name)
        } else {
            self.dest.clone()
        }
    }
}

/// Writes a COPY or ADD's entries into the step's tree.
struct Writer<'a> {
    copier: Copier<'a>,
    place: &'a Placement,
    view: &'a View,
    tree: &'a Path,
}

impl Writer<'_> {
    /// The missing parents of `rel`, made in the tree.
    fn parents(&self, rel: &Path) -> Result<Vec<(PathBuf, DirMeta)>, BuildError> {
        let epoch = self.copier.epoch;
        make_parents(self.view, self.tree, rel, epoch, self.copier.new_owner())
    }

    /// The local sources (context or stage): archives unpacked (ADD),
    /// directories copied by their contents, files as themselves.
    fn sources(
        &self,
        sources: &[(PathBuf, PathBuf)],
        add: bool,
        fail: &dyn Fn(String) -> BuildError,
        made: &mut Vec<(PathBuf, DirMeta)>,
    ) -> Result<(), BuildError> {
        let (origin, dest) = (self.copier.origin, &self.place.dest);
        for (named, src) in sources {
            let backing = origin
                .backing(src)
                .ok_or_else(|| fail(format!("{} disappeared while copying", src.display())))?;
            let is_dir = fs::symlink_metadata(&backing).is_ok_and(|m| m.is_dir());
            if add && !is_dir && is_archive(&backing) {
                made.extend(self.parents(&dest.join("x"))?);
                let f = fs::File::open(&backing)
                    .map_err(|e| BuildError::io(format!("opening {}", backing.display()), e))?;
                kiln_oci::unpack::unpack(f, &self.tree.join(dest), kiln_oci::unpack::Target::Flat)
                    .map_err(|e| fail(format!("unpacking {}: {e}", src.display())))?;
                continue;
            }
            if !is_dir {
                let target = self
                    .place
                    .target(Path::new(named.file_name().unwrap_or_default()));
                made.extend(self.parents(&target)?);
                self.copier.copy(src, &self.tree.join(&target))?;
                continue;
            }
            made.extend(self.parents(&dest.join("x"))?);
            let into = self.tree.join(dest);
            fs::create_dir_all(&into).map_err(|e| BuildError::io("creating the destination", e))?;
            for name in origin.list(src) {
                self.copier.copy(&src.join(&name), &into.join(&name))?;
            }
            // a directory that was there keeps its own metadata; a new
            // one is 0755, owned by --chown's user (or root), whatever
            // the source directory's mode or --chmod (which apply to
            // what is copied into it): BuildKit and buildah agree
            let meta = match DirMeta::in_view(self.view, dest) {
                Some(m) => m,
                None => {
                    let source = self.copier.dir_meta(&fs::metadata(&backing).map_err(|e| {
                        BuildError::io(format!("reading {}", backing.display()), e)
                    })?);
                    DirMeta::new_dir(self.copier.new_owner(), source.mtime)
                }
            };
            made.push((into, meta));
        }
        Ok(())
    }

    /// ADD's downloaded files (like Docker: not unpacked, mode 0600 and
    /// owned by root unless --chmod says otherwise) and heredoc files.
    fn extras(
        &self,
        fetched: &[crate::fetch::Fetched],
        inline: &[kiln_dockerfile::instructions::InlineFile],
        made: &mut Vec<(PathBuf, DirMeta)>,
    ) -> Result<(), BuildError> {
        let epoch = self.copier.epoch.unwrap_or(0);
        let chmod = self.copier.chmod;
        let (uid, gid) = self.copier.new_owner();
        let downloads = fetched
            .iter()
            .map(|f| (&f.name, Content::File(&f.path), chmod.unwrap_or(0o600)));
        let heredocs = inline.iter().map(|f| {
            (
                &f.name,
                Content::Bytes(f.content.as_bytes()),
                chmod.unwrap_or(0o644),
            )
        });
        for (name, content, mode) in downloads.chain(heredocs) {
            let target = self.place.target(Path::new(name));
            made.extend(self.parents(&target)?);
            let path = self.tree.join(&target);
            let written = match content {
                Content::File(from) => fs::copy(from, &path).map(|_| ()),
                Content::Bytes(bytes) => fs::write(&path, bytes),
            };
            written.map_err(|e| BuildError::io(format!("writing {}", path.display()), e))?;
            set_meta(&path, mode, uid, gid, epoch)?;
        }
        Ok(())
    }
}

/// What an extra entry of ADD or COPY holds.
enum Content<'a> {
    File(&'a Path),
    Bytes(&'a [u8]),
}
