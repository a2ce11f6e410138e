//! Staleness: for every image, whether it is up to date and why not, and
//! the waves in which a bake would rebuild what is stale.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use kiln_definition::{Factory, Recipe};
use serde::Serialize;

use crate::graph::{self, Graph};
pub use crate::lock::Locks;
use crate::lock::{Inputs, Locked};
use crate::FactoryError;

/// What a plan asks the world outside the factory: the digest a registry
/// tag points at now, and which packages of an image have updates.
pub trait Resolver: Sync {
    fn digest(&self, reference: &str) -> Result<String, ResolveError>;

    /// The package updates of `name`'s locked image; `None` when this
    /// resolver does not check packages.
    fn packages(
        &self,
        _name: &str,
        _image: &kiln_definition::Image,
        _locked: &Locked,
    ) -> Option<Result<kiln_packages::Report, ProbeError>> {
        None
    }
}

/// Why an image's packages could not be checked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    #[error("{0}")]
    Check(#[from] kiln_packages::CheckError),
    /// Its locked image is not in the store to be read.
    #[error("{0} is not in the store")]
    NotInStore(String),
    /// The store could not read it.
    #[error("{0}")]
    Store(String),
}

/// Why a registry base could not be resolved: a caller tells a base that
/// does not exist (fix the name) from a registry it could not ask (try
/// again, log in).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// Not a valid image reference.
    #[error("{0}")]
    BadReference(String),
    /// The registry has no such image or tag.
    #[error("not found in its registry")]
    NotFound,
    /// The registry could not be asked or refused (network, TLS,
    /// credentials, a server error).
    #[error("{0}")]
    Unreachable(String),
    /// `--offline`, and the lock holds no digest for it.
    #[error("not in kiln.lock, and --offline asks no registry")]
    NotLocked,
}

impl ResolveError {
    /// What a person can do about it.
    pub fn hint(&self) -> &'static str {
        match self {
            ResolveError::BadReference(_) | ResolveError::NotFound => {
                "check the name and tag of the base"
            }
            ResolveError::Unreachable(_) => {
                "check that this machine reaches the registry (`kiln login` for a private one)"
            }
            ResolveError::NotLocked => "plan once without --offline to pin it",
        }
    }
}

/// A registry, asked over the distribution API.
pub struct RegistryResolver<'a> {
    pub client: &'a kiln_registry::Client,
}

impl Resolver for RegistryResolver<'_> {
    fn digest(&self, reference: &str) -> Result<String, ResolveError> {
        let r = kiln_registry::Reference::parse(reference)
            .map_err(|e| ResolveError::BadReference(e.to_string()))?;
        if let Some(d) = &r.digest {
            return Ok(d.clone());
        }
        let (bytes, _) = self.client.get_manifest(&r).map_err(|e| match e {
            kiln_registry::Error::NotFound(_) => ResolveError::NotFound,
            kiln_registry::Error::Reference { .. } => ResolveError::BadReference(e.to_string()),
            e => ResolveError::Unreachable(e.to_string()),
        })?;
        Ok(kiln_oci::digest::sha256(&bytes).to_string())
    }
}

/// Why an image is stale.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "kebab-case")]
pub enum Reason {
    NeverBuilt,
    Forced,
    /// `--refresh`: rebuilt to pick up new packages.
    Refresh,
    DefinitionChanged,
    ContextChanged {
        /// What changed, when kiln kept the previous listing: `changed
        /// PATH`, `added PATH`, `removed PATH` (at most 10).
        #[serde(skip_serializing_if = "Vec::is_empty")]
        files: Vec<String>,
    },
    BaseMoved {
        base: String,
        from: Option<String>,
        to: String,
    },
    UpstreamRebuilt {
        image: String,
    },
    UpstreamWillRebuild {
        image: String,
    },
    ScheduleDue {
        schedule: String,
        since: String,
    },
    /// Packages in the image have updates in its sources.
    PackageUpdates {
        count: usize,
        security: usize,
        updates: Vec<kiln_packages::Update>,
    },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::NeverBuilt => write!(f, "never built"),
            Reason::Forced => write!(f, "--force"),
            Reason::Refresh => write!(f, "--refresh"),
            Reason::DefinitionChanged => write!(f, "its definition in kiln.toml changed"),
            Reason::ContextChanged { files } if files.is_empty() => {
                write!(f, "a file in its build context (or its Dockerfile) changed")
            }
            Reason::ContextChanged { files } => {
                write!(f, "its build context changed: {}", files.join(", "))
            }
            Reason::BaseMoved {
                base,
                from: Some(from),
                to,
            } => write!(f, "base {base} moved: {} → {}", short(from), short(to)),
            Reason::BaseMoved {
                base,
                from: None,
                to,
            } => write!(f, "base {base} is new ({})", short(to)),
            Reason::UpstreamRebuilt { image } => write!(f, "upstream image {image} was rebuilt"),
            Reason::UpstreamWillRebuild { image } => {
                write!(f, "upstream image {image} will be rebuilt")
            }
            Reason::ScheduleDue { schedule, since } => {
                write!(f, "schedule {schedule:?} was due at {since}")
            }
            Reason::PackageUpdates {
                count,
                security,
                updates,
            } => {
                let s = if *count == 1 { "" } else { "s" };
                write!(f, "{count} package update{s} ({security} security): ")?;
                let shown: Vec<String> = updates.iter().take(5).map(ToString::to_string).collect();
                write!(f, "{}", shown.join(", "))?;
                if updates.len() > 5 {
                    write!(f, " and {} more", updates.len() - 5)?;
                }
                Ok(())
            }
        }
    }
}

impl Reason {
    /// Whether a rebuild for this reason is one for freshness: its package
    /// steps run again rather than come from the cache.
    pub fn wants_fresh_packages(&self) -> bool {
        matches!(
            self,
            Reason::Refresh | Reason::ScheduleDue { .. } | Reason::PackageUpdates { .. }
        )
    }
}

/// Reasons as one line, `; ` between them.
pub fn describe(reasons: &[Reason]) -> String {
    reasons
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

fn short(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    &hex[..hex.len().min(12)]
}

/// One image's state.
#[derive(Debug, Clone, Serialize)]
pub struct ImagePlan {
    pub name: String,
    pub stale: bool,
    pub reasons: Vec<Reason>,
    /// The digest the lock holds for it (its index's, when it has several
    /// platforms).
    pub digest: Option<String>,
    /// Each platform's image digest the lock holds, when it has several.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub platforms: BTreeMap<String, String>,
    pub version: Option<String>,
    /// The images it is built on.
    pub depends_on: Vec<String>,
    /// Its inputs as they are now (factory bases that will be rebuilt are
    /// missing until they are).
    #[serde(skip)]
    pub inputs: Inputs,
}

/// What a bake would do.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// Every planned image, in dependency order.
    pub images: Vec<ImagePlan>,
    /// The stale images, in waves a bake builds one after another; the
    /// images of a wave build concurrently.
    pub waves: Vec<Vec<String>>,
    /// What could not be checked and should have been (a package source
    /// that could not be read): `--strict` makes these errors.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// What a person may want to know (an image without a package
    /// database, whose packages are not checked).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl Plan {
    pub fn image(&self, name: &str) -> Option<&ImagePlan> {
        self.images.iter().find(|i| i.name == name)
    }
}

#[derive(Debug, Clone)]
pub struct PlanOptions {
    /// Images asked for (with what they are built on); empty: all.
    pub selected: Vec<String>,
    pub force: bool,
    /// `--refresh`: every selected image is rebuilt for freshness.
    pub refresh: bool,
    /// `--offline`: registry bases are taken at the digests their images'
    /// lock entries hold; no registry is asked.
    pub offline: bool,
    /// `--strict`: what could not be checked is an error, not a warning.
    pub strict: bool,
    /// When images were last rebuilt and found unchanged (from the
    /// history): a schedule counts from then when it is later than the
    /// lock's `baked_at`.
    pub checked: BTreeMap<String, DateTime<Utc>>,
    pub now: DateTime<Utc>,
    /// Where context listings are kept, by digest, so a later plan can say
    /// which files changed (the store's `contexts/`); none: not kept.
    pub contexts_dir: Option<PathBuf>,
}

impl PlanOptions {
    /// A plan of `selected` images (all when empty) as of now, with no
    /// flags: schedules count from the history's last unchanged checks,
    /// context listings are kept in the store at `store_root`.
    pub fn now(
        selected: &[String],
        factory: &Factory,
        locks: &Locks,
        history: &crate::history::History,
        store_root: &Path,
    ) -> Result<PlanOptions, crate::history::HistoryError> {
        Ok(PlanOptions {
            selected: selected.to_vec(),
            force: false,
            refresh: false,
            offline: false,
            strict: false,
            checked: history.last_checked(factory, locks)?,
            now: Utc::now(),
            contexts_dir: Some(store_root.join("contexts")),
        })
    }
}

/// The inputs of an image that do not depend on other images.
fn own_inputs(
    factory: &Factory,
    name: &str,
    contexts_dir: Option<&Path>,
) -> Result<(Inputs, Option<kiln_build::ContextSummary>), FactoryError> {
    let image = &factory.images[name];
    let dir = factory.files[image.file]
        .path
        .parent()
        .unwrap_or(Path::new("/"));
    let definition = kiln_oci::digest::sha256(image.definition_text(dir).as_bytes()).to_string();
    let summary = match &image.recipe {
        Recipe::Dockerfile {
            context,
            dockerfile,
            ..
        } => {
            let hidden = crate::lock::hidden_paths(factory);
            // what the last plan read of this context, so unchanged files
            // are not read again
            let cache = contexts_dir.map(|d| {
                let key = kiln_oci::digest::sha256(context.to_string_lossy().as_bytes());
                d.join(format!("stat-{}.txt", &key.to_string()["sha256:".len()..]))
            });
            let summary =
                kiln_build::context_summary(context, dockerfile, &hidden, cache.as_deref())
                    .map_err(|e| {
                        factory.error_at_image(
                            name,
                            format!("image {name:?}: reading its build context: {e}"),
                        )
                    })?;
            if let Some(dir) = contexts_dir {
                keep_listing(dir, &summary);
            }
            Some(summary)
        }
        Recipe::Mmdebstrap(_) | Recipe::Vm(_) => None,
    };
    let inputs = Inputs {
        definition,
        context: summary.as_ref().map(|s| s.digest.clone()),
        bases: BTreeMap::new(),
    };
    Ok((inputs, summary))
}

/// Whether `locked` is the digest an earlier kiln wrote for `name`'s
/// definition where it is now (with absolute paths): unchanged, then.
fn written_before_relative_paths(factory: &Factory, name: &str, locked: &str) -> bool {
    let legacy = factory.images[name].legacy_definition_text();
    kiln_oci::digest::sha256(legacy.as_bytes()).to_string() == locked
}

fn listing_path(dir: &Path, digest: &str) -> PathBuf {
    dir.join(format!(
        "{}.json",
        digest.strip_prefix("sha256:").unwrap_or(digest)
    ))
}

/// Keeps a context listing under its digest (best effort: it only makes
/// "context changed" more precise).
fn keep_listing(dir: &Path, summary: &kiln_build::ContextSummary) {
    let path = listing_path(dir, &summary.digest);
    if path.exists() || std::fs::create_dir_all(dir).is_err() {
        return;
    }
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    if let Ok(json) = serde_json::to_vec(&summary.files) {
        if std::fs::write(&tmp, json).is_ok() {
            let _ = std::fs::rename(&tmp, &path);
        }
    }
}

/// What differs between the listing kept for `before` and `now`.
fn changed_files(
    dir: Option<&Path>,
    before: Option<&str>,
    now: Option<&kiln_build::ContextSummary>,
) -> Vec<String> {
    let (Some(dir), Some(before), Some(now)) = (dir, before, now) else {
        return Vec::new();
    };
    let Ok(bytes) = std::fs::read(listing_path(dir, before)) else {
        return Vec::new();
    };
    let Ok(old) = serde_json::from_slice::<BTreeMap<String, String>>(&bytes) else {
        return Vec::new();
    };
    let mut out: Vec<String> = Vec::new();
    for (path, v) in &now.files {
        match old.get(path) {
            None => out.push(format!("added {path}")),
            Some(o) if o != v => out.push(format!("changed {path}")),
            _ => {}
        }
    }
    out.extend(
        old.keys()
            .filter(|p| !now.files.contains_key(*p))
            .map(|p| format!("removed {p}")),
    );
    if out.len() > 10 {
        let more = out.len() - 9;
        out.truncate(9);
        out.push(format!("and {more} more"));
    }
    out
}

/// The images `selected` names, with everything they are built on; all
/// images when empty. Unknown names are errors.
pub fn selection(
    factory: &Factory,
    g: &Graph,
    selected: &[String],
) -> Result<BTreeSet<String>, FactoryError> {
    if selected.is_empty() {
        return Ok(factory.images.keys().cloned().collect());
    }
    for s in selected {
        if !factory.images.contains_key(s) {
            let known: Vec<&str> = factory.images.keys().map(String::as_str).collect();
            return Err(FactoryError::UnknownImage {
                name: s.clone(),
                known: known.join(", "),
            });
        }
    }
    Ok(graph::upstream(g, &selected.iter().cloned().collect()))
}

/// Works out what is stale and why.
pub fn plan(
    factory: &Factory,
    g: &Graph,
    locks: &Locks,
    resolver: &dyn Resolver,
    opts: &PlanOptions,
) -> Result<Plan, FactoryError> {
    let chosen = selection(factory, g, &opts.selected)?;
    let mut planner = Planner {
        factory,
        g,
        locks,
        resolver,
        opts,
        resolved: BTreeMap::new(),
        stale: BTreeSet::new(),
        warnings: Vec::new(),
        notes: Vec::new(),
    };
    if !opts.offline {
        let references: BTreeSet<&String> = chosen
            .iter()
            .flat_map(|n| g.external.get(n).into_iter().flatten())
            .collect();
        planner.resolved = prefetch(resolver, &references);
    }
    let mut images = Vec::new();
    for name in g.order.iter().filter(|n| chosen.contains(*n)) {
        let image = planner.image(name)?;
        if image.stale {
            planner.stale.insert(name.clone());
        }
        images.push(image);
    }
    if opts.strict && !planner.warnings.is_empty() {
        return Err(FactoryError::Unchecked(planner.warnings.join("\n")));
    }
    let waves = graph::waves(g, &planner.stale);
    Ok(Plan {
        images,
        waves,
        warnings: planner.warnings,
        notes: planner.notes,
    })
}

/// A plan being made, image by image in dependency order: each reason to
/// rebuild is one method, so a new kind of staleness is one more.
struct Planner<'a> {
    factory: &'a Factory,
    g: &'a Graph,
    locks: &'a Locks,
    resolver: &'a dyn Resolver,
    opts: &'a PlanOptions,
    /// Registry bases resolved so far (each is asked once per plan).
    resolved: BTreeMap<String, String>,
    /// The images found stale so far.
    stale: BTreeSet<String>,
    warnings: Vec<String>,
    notes: Vec<String>,
}

impl Planner<'_> {
    /// Plans one image: its inputs now, and why it is stale, if it is.
    fn image(&mut self, name: &str) -> Result<ImagePlan, FactoryError> {
        let (mut inputs, summary) =
            own_inputs(self.factory, name, self.opts.contexts_dir.as_deref())?;
        let mut reasons = Vec::new();
        if self.opts.force {
            reasons.push(Reason::Forced);
        }
        if self.opts.refresh {
            reasons.push(Reason::Refresh);
        }
        let locked = self.locks.get(name);
        match locked {
            None => reasons.push(Reason::NeverBuilt),
            Some(locked) => self.own_changes(name, locked, &inputs, summary.as_ref(), &mut reasons),
        }
        self.bases(name, locked, &mut inputs, &mut reasons)?;
        self.upstream(name, locked, &mut inputs, &mut reasons);
        if let Some(locked) = locked {
            self.schedule(name, locked, &mut reasons);
            self.packages(name, locked, &mut reasons);
        }
        Ok(ImagePlan {
            name: name.to_string(),
            stale: !reasons.is_empty(),
            reasons,
            digest: locked.map(|l| l.digest.clone()),
            platforms: locked.map(|l| l.platforms.clone()).unwrap_or_default(),
            version: locked.map(|l| l.version.clone()),
            depends_on: self.g.deps[name].iter().cloned().collect(),
            inputs,
        })
    }

    /// Its definition or its context changed since it was locked.
    fn own_changes(
        &self,
        name: &str,
        locked: &Locked,
        inputs: &Inputs,
        summary: Option<&kiln_build::ContextSummary>,
        reasons: &mut Vec<Reason>,
    ) {
        if inputs.definition != locked.inputs.definition
            && !written_before_relative_paths(self.factory, name, &locked.inputs.definition)
        {
            reasons.push(Reason::DefinitionChanged);
        }
        if inputs.context != locked.inputs.context {
            let files = changed_files(
                self.opts.contexts_dir.as_deref(),
                locked.inputs.context.as_deref(),
                summary,
            );
            reasons.push(Reason::ContextChanged { files });
        }
    }

    /// Its registry bases, resolved now; a base whose digest moved since
    /// it was locked is a reason.
    fn bases(
        &mut self,
        name: &str,
        locked: Option<&Locked>,
        inputs: &mut Inputs,
        reasons: &mut Vec<Reason>,
    ) -> Result<(), FactoryError> {
        let (factory, g) = (self.factory, self.g);
        for reference in &g.external[name] {
            let pinned = locked.and_then(|l| l.inputs.bases.get(reference));
            let now = match (self.opts.offline, pinned) {
                (true, Some(digest)) => Ok(digest.clone()),
                (true, None) => Err(ResolveError::NotLocked),
                (false, _) => resolve(self.resolver, &mut self.resolved, reference),
            }
            .map_err(|e| g.base_error(factory, name, reference, e))?;
            if let Some(locked) = locked {
                let before = locked.inputs.bases.get(reference);
                if before != Some(&now) {
                    reasons.push(Reason::BaseMoved {
                        base: reference.clone(),
                        from: before.cloned(),
                        to: now.clone(),
                    });
                }
            }
            inputs.bases.insert(reference.clone(), now);
        }
        Ok(())
    }

    /// The factory images it is built on: one that will be rebuilt, or was
    /// rebuilt since it was locked, is a reason; the others' digests are
    /// its inputs.
    fn upstream(
        &self,
        name: &str,
        locked: Option<&Locked>,
        inputs: &mut Inputs,
        reasons: &mut Vec<Reason>,
    ) {
        for dep in &self.g.deps[name] {
            if self.stale.contains(dep) {
                if locked.is_some() {
                    reasons.push(Reason::UpstreamWillRebuild { image: dep.clone() });
                }
                continue;
            }
            let digest = self.locks.get(dep).map(|l| l.digest.clone());
            let digest = match (locked, digest) {
                (None, None) => continue,
                (None, Some(d)) => d,
                (Some(locked), d) => {
                    let d = d.unwrap_or_default();
                    if locked.inputs.bases.get(dep) != Some(&d) {
                        reasons.push(Reason::UpstreamRebuilt { image: dep.clone() });
                    }
                    d
                }
            };
            inputs.bases.insert(dep.clone(), digest);
        }
    }

    /// Its packages have updates in the sources it is configured with.
    fn packages(&mut self, name: &str, locked: &Locked, reasons: &mut Vec<Reason>) {
        let image = &self.factory.images[name];
        if matches!(image.recipe, Recipe::Vm(_)) {
            return;
        }
        let Some(checked) = self.resolver.packages(name, image, locked) else {
            return;
        };
        let report = match checked {
            Ok(r) => r,
            Err(ProbeError::Check(e)) => {
                self.notes
                    .push(format!("image {name}: packages not checked: {e}"));
                return;
            }
            Err(e) => {
                self.warnings
                    .push(format!("image {name}: packages not checked: {e}"));
                return;
            }
        };
        for source in &report.unreachable {
            self.warnings.push(format!(
                "image {name}: package source {source} (its updates are not known)"
            ));
        }
        if !report.updates.is_empty() {
            reasons.push(Reason::PackageUpdates {
                count: report.updates.len(),
                security: report.security(),
                updates: report.updates,
            });
        }
    }

    /// Its schedule came due since it was baked.
    fn schedule(&self, name: &str, locked: &Locked, reasons: &mut Vec<Reason>) {
        let image = &self.factory.images[name];
        let (Some(schedule), Ok(last)) = (
            &image.schedule,
            DateTime::parse_from_rfc3339(&locked.baked_at),
        ) else {
            return;
        };
        let mut last = last.with_timezone(&Utc);
        if let Some(checked) = self.opts.checked.get(name) {
            last = last.max(*checked);
        }
        if schedule.due(last, self.opts.now) {
            let since = schedule
                .next_after(last)
                .map(|t| t.to_rfc3339())
                .unwrap_or_default();
            reasons.push(Reason::ScheduleDue {
                schedule: schedule.expr.clone(),
                since,
            });
        }
    }
}

/// How many registry bases a plan asks for at once.
const CONCURRENT_LOOKUPS: usize = 8;

/// Resolves `references` a few at a time; the ones that resolved (a
/// failure is asked again, and reported, where its image is planned).
fn prefetch(resolver: &dyn Resolver, references: &BTreeSet<&String>) -> BTreeMap<String, String> {
    let todo: Vec<&String> = references.iter().copied().collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let found = std::sync::Mutex::new(BTreeMap::new());
    std::thread::scope(|s| {
        for _ in 0..CONCURRENT_LOOKUPS.min(todo.len()) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(reference) = todo.get(i) else {
                    break;
                };
                if let Ok(d) = resolver.digest(reference) {
                    found
                        .lock()
                        .expect("found")
                        .insert(reference.to_string(), d);
                }
            });
        }
    });
    found.into_inner().expect("found")
}

fn resolve(
    resolver: &dyn Resolver,
    cache: &mut BTreeMap<String, String>,
    reference: &str,
) -> Result<String, ResolveError> {
    if let Some(d) = cache.get(reference) {
        return Ok(d.clone());
    }
    let d = resolver.digest(reference)?;
    cache.insert(reference.to_string(), d.clone());
    Ok(d)
}
