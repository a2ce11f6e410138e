//! kiln.toml: a factory's definition.
//!
//! [`load`] reads one or more factory files (or directories of them),
//! parses each strictly (unknown keys are errors), checks what serde cannot
//! (format version, cron expressions, time zones, version schemes, publish
//! targets, references between images) and returns a [`Factory`]: every
//! image by name, with paths made absolute. Every error names the file,
//! line and column. [`schema`] is the JSON Schema of the file format,
//! generated from the same types.
//!
//! [`parse`] is the pure part: file texts and an environment in, a
//! [`Factory`] out. [`load`] is the only reader: it finds and reads the
//! files, takes `${VAR}` in registries and publish targets from the
//! process environment, and reads the SSH public keys VM users name.
//! Dockerfiles are read by the factory.

mod error;
pub mod model;
mod read;
mod schedule;
mod service;
mod values;

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

pub use error::Error;
pub use kiln_dockerfile::Platform;
pub use model::{MmdebstrapDef, TestDef, FORMAT};

mod vm;
pub use schedule::Schedule;
pub use service::{Check, Driver, Front, Handover, Health, Network, Service};
pub use values::{
    check_key, check_label, check_mount, parse_size, Bootloader, DataDisk, DiskFormat, KeyFile,
    VmUser,
};

/// Where `${VAR}` in a factory file is looked up.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Every image of the factory files baked together.
#[derive(Debug)]
pub struct Factory {
    pub files: Vec<SourceFile>,
    pub images: BTreeMap<String, Image>,
    /// The services `kiln rollout` runs, by name.
    pub services: BTreeMap<String, Service>,
}

/// A factory file as read.
#[derive(Debug)]
pub struct SourceFile {
    pub path: PathBuf,
    pub text: String,
}

/// One image, resolved.
#[derive(Debug, Clone)]
pub struct Image {
    pub name: String,
    /// Index into [`Factory::files`] of the file declaring it.
    pub file: usize,
    /// Span of its name in that file.
    pub span: Range<usize>,
    pub recipe: Recipe,
    pub version: VersionScheme,
    pub tags: Vec<String>,
    pub publish: Vec<Publish>,
    /// Test commands as argv vectors.
    pub tests: Vec<Vec<String>>,
    pub schedule: Option<Schedule>,
    /// Platforms to build for; empty: the machine's (one image, no index).
    pub platforms: Vec<Platform>,
    /// Which RUN steps a rebuild for freshness runs again.
    pub refresh: RefreshPolicy,
    /// Paths ignored when a rebuild is compared with the locked image.
    pub volatile: Vec<String>,
    /// Seconds a check of its packages for updates is reused.
    pub probe_interval: u64,
    /// The private key its bake signs with (`[factory] sign`).
    pub sign: Option<KeyRef>,
    /// The public key its bases must be signed with (`[factory] verify_bases`).
    pub verify_bases: Option<KeyRef>,
    /// The registry repository of its step cache (`[factory] cache`).
    pub cache: Option<String>,
}

/// Where a key is, as `[factory]` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRef {
    pub source: KeySource,
    /// The factory file naming it, and where.
    pub file: usize,
    pub span: Range<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    File(PathBuf),
    Env(String),
}

impl KeySource {
    /// The key's PEM text, or what is wrong.
    pub fn read(&self) -> Result<String, String> {
        match self {
            KeySource::File(p) => {
                std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))
            }
            KeySource::Env(v) => {
                std::env::var(v).map_err(|_| format!("the environment variable {v} is not set"))
            }
        }
    }

    /// How messages name it.
    pub fn describe(&self) -> String {
        match self {
            KeySource::File(p) => p.display().to_string(),
            KeySource::Env(v) => format!("${v}"),
        }
    }
}

/// The default `probe_interval`: an hour.
pub const DEFAULT_PROBE_INTERVAL: u64 = 3600;

/// Parses a duration: a number with `s`, `m`, `h` or `d` (`0` alone).
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let t = s.trim();
    if t == "0" {
        return Ok(0);
    }
    let (n, unit) = t.split_at(t.len().saturating_sub(1));
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "duration {s:?}: end it in s, m, h or d (e.g. \"6h\")"
            ))
        }
    };
    n.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("duration {s:?} is not a number with s, m, h or d"))
}

/// Which RUN steps a rebuild for freshness runs again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RefreshPolicy {
    /// Steps that run a package manager.
    #[default]
    Packages,
    /// Every RUN step.
    Runs,
    /// None: the cache as usual.
    None,
}

impl RefreshPolicy {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "packages" => Ok(RefreshPolicy::Packages),
            "runs" => Ok(RefreshPolicy::Runs),
            "none" => Ok(RefreshPolicy::None),
            other => Err(format!("refresh {other:?} is not known")),
        }
    }
}

/// Paths whose content carries the time a package step ran, not what is
/// installed: dpkg's and apt's logs and caches, apt's package lists,
/// ld.so's auxiliary cache, debconf's and dpkg's backups, apk's cache.
pub const DEFAULT_VOLATILE: &[&str] = &[
    "/var/log/dpkg.log",
    "/var/log/alternatives.log",
    "/var/log/apt/**",
    "/var/cache/apt/**",
    "/var/lib/apt/lists/**",
    "/var/cache/ldconfig/aux-cache",
    "/var/cache/debconf/*-old",
    "/var/lib/dpkg/*-old",
    "/var/cache/apk/**",
];

/// How an image is made.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Recipe {
    Dockerfile {
        context: PathBuf,
        dockerfile: PathBuf,
        args: BTreeMap<String, String>,
        target: Option<String>,
        secrets: BTreeMap<String, PathBuf>,
        /// FROM reference as written → factory image name.
        bases: BTreeMap<String, String>,
    },
    Mmdebstrap(MmdebstrapDef),
    /// A VM disk image made from a factory image (`[vm.NAME]`).
    Vm(VmRecipe),
}

/// A VM image's disk and first-boot settings, checked.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VmRecipe {
    /// The factory image it is made from.
    pub image: String,
    /// Where `image` is written in the file.
    #[serde(skip)]
    pub image_span: Range<usize>,
    /// Disk size in bytes.
    pub size: u64,
    /// Size of a separate /var partition, in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub var: Option<u64>,
    pub bootloader: Bootloader,
    pub cmdline: String,
    pub hostname: String,
    pub user: Option<VmUser>,
    /// What is published (the raw disk is always kept in the store).
    pub formats: Vec<DiskFormat>,
    pub data_disks: Vec<DataDisk>,
    /// Seconds the boot test waits for the marker (not part of what the
    /// disk is made from).
    #[serde(skip)]
    pub boot_timeout: u64,
}

/// How an image's version tag is chosen.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VersionScheme {
    /// `YYYYMMDD.N`, N counting that image's bakes of the day from 1.
    Date,
    /// The short commit of the git repository holding the definition.
    Git,
    /// The first line of this file.
    File(PathBuf),
}

/// Where a tested image goes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Publish {
    /// A registry repository (`docker://HOST/REPO`), without tag.
    Registry(String),
    /// An OCI archive file.
    OciArchive(PathBuf),
    /// kiln's local store (names `NAME:VERSION` and the moving tags).
    Store,
    /// A directory the files of a VM image are copied to.
    Dir(PathBuf),
}

impl Factory {
    /// An error pointing at `span` of file `file`.
    pub fn error_at(&self, file: usize, span: Range<usize>, message: impl Into<String>) -> Error {
        let f = &self.files[file];
        Error::at(&f.path, &f.text, span, message)
    }

    /// The VM images, by name.
    pub fn vms(&self) -> impl Iterator<Item = (&String, &VmRecipe)> {
        self.images.iter().filter_map(|(n, i)| match &i.recipe {
            Recipe::Vm(v) => Some((n, v)),
            _ => None,
        })
    }

    /// An error pointing at image `name`'s declaration.
    pub fn error_at_image(&self, name: &str, message: impl Into<String>) -> Error {
        let img = &self.images[name];
        self.error_at(img.file, img.span.clone(), message)
    }
}

impl Image {
    /// A canonical text of everything in the definition that shapes the
    /// image (not where it is published or how it is versioned), so that a
    /// change to it makes the image stale.
    ///
    /// Paths are written relative to `dir` (the directory of the factory
    /// file), so the same factory checked out anywhere (another directory,
    /// another machine, a CI runner) has the same definition.
    pub fn definition_text(&self, dir: &Path) -> String {
        let mut v = self.definition_json();
        relativize(&mut v, dir);
        v.to_string()
    }

    /// The definition text as kiln wrote it before it made paths relative
    /// (absolute paths): a lock entry that recorded its digest is still
    /// up to date where the factory has not moved.
    pub fn legacy_definition_text(&self) -> String {
        self.definition_json().to_string()
    }

    fn definition_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "recipe": self.recipe,
            "tests": self.tests,
        });
        // only when set, so images without platforms keep their digests
        if !self.platforms.is_empty() {
            let platforms: Vec<String> = self.platforms.iter().map(|p| p.to_string()).collect();
            v["platforms"] = serde_json::json!(platforms);
        }
        v
    }
}

/// Rewrites every string in `v` that names `dir` or a path below it as a
/// path relative to `dir` (`.` for `dir` itself).
fn relativize(v: &mut serde_json::Value, dir: &Path) {
    match v {
        serde_json::Value::String(s) => {
            if let Ok(rest) = Path::new(s.as_str()).strip_prefix(dir) {
                let rel = rest.display().to_string();
                *s = if rel.is_empty() { ".".into() } else { rel };
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(|i| relativize(i, dir)),
        serde_json::Value::Object(map) => map.values_mut().for_each(|i| relativize(i, dir)),
        _ => {}
    }
}

/// The JSON Schema of kiln.toml.
pub fn schema() -> String {
    let schema = schemars::schema_for!(model::FileDef);
    serde_json::to_string_pretty(&schema).expect("a schema serialises") + "\n"
}

/// Reads the factory files at `paths`. A directory stands for every
/// `kiln.toml` and `*.kiln.toml` directly in it.
pub fn load(paths: &[PathBuf]) -> Result<Factory, Error> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let entries = std::fs::read_dir(path)
                .map_err(|e| Error::file(path, format!("cannot read directory: {e}")))?;
            let mut found: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n == "kiln.toml" || n.ends_with(".kiln.toml"))
                })
                .collect();
            if found.is_empty() {
                return Err(
                    Error::file(path, "no kiln.toml or *.kiln.toml in this directory")
                        .with_hint("name a factory file, or create kiln.toml here"),
                );
            }
            found.sort();
            files.extend(found);
        } else {
            files.push(path.clone());
        }
    }
    let mut texts = Vec::new();
    for path in files {
        let path = std::path::absolute(&path).unwrap_or(path);
        if texts.iter().any(|(p, _)| *p == path) {
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Error::file(&path, format!("cannot read: {e}")))?;
        texts.push((path, text));
    }
    let mut factory = parse(texts, &|var| std::env::var(var).ok())?;
    read_keys(&mut factory)?;
    Ok(factory)
}

/// Parses factory files given as (absolute path, text), with `env` for
/// `${VAR}`: nothing is read. An SSH public key a VM user names by file is
/// left in its [`VmUser::key_file`] (the loader reads it).
pub fn parse(files: Vec<(PathBuf, String)>, env: Env<'_>) -> Result<Factory, Error> {
    let mut factory = Factory {
        files: Vec::new(),
        images: BTreeMap::new(),
        services: BTreeMap::new(),
    };
    for (path, text) in files {
        factory.files.push(SourceFile { path, text });
        let index = factory.files.len() - 1;
        read::read_file(&mut factory, index, env)?;
    }
    check_references(&factory)?;
    service::check(&factory)?;
    Ok(factory)
}

/// Reads the SSH public keys VM users name by file.
fn read_keys(factory: &mut Factory) -> Result<(), Error> {
    for image in factory.images.values_mut() {
        let Recipe::Vm(VmRecipe {
            user: Some(user), ..
        }) = &mut image.recipe
        else {
            continue;
        };
        let Some(KeyFile { path, span }) = &user.key_file else {
            continue;
        };
        let file = &factory.files[image.file];
        let err = |msg: String| Error::at(&file.path, &file.text, span.clone(), msg);
        let text = std::fs::read_to_string(path).map_err(|e| {
            err(format!("cannot read the SSH key {}: {e}", path.display()))
                .with_hint("give a public key file relative to this kiln.toml, or the key itself")
        })?;
        user.ssh_key = check_key(&text).map_err(err)?;
    }
    Ok(())
}

fn check_references(factory: &Factory) -> Result<(), Error> {
    for (name, vm) in factory.vms() {
        let file = factory.images[name].file;
        let known = || {
            let known: Vec<&str> = factory
                .images
                .iter()
                .filter(|(_, i)| !matches!(i.recipe, Recipe::Vm(_)))
                .map(|(n, _)| n.as_str())
                .collect();
            format!("known images: {}", known.join(", "))
        };
        match factory.images.get(&vm.image).map(|i| &i.recipe) {
            Some(Recipe::Vm(_)) => {
                return Err(factory
                    .error_at(
                        file,
                        vm.image_span.clone(),
                        format!(
                            "VM image {name:?} is made from {:?}, another VM image",
                            vm.image
                        ),
                    )
                    .with_hint(known()))
            }
            None => {
                return Err(factory
                    .error_at(
                        file,
                        vm.image_span.clone(),
                        format!(
                        "VM image {name:?} is made from image {:?}, which no factory file declares",
                        vm.image
                    ),
                    )
                    .with_hint(known()))
            }
            Some(_) => {}
        }
    }
    for image in factory.images.values() {
        if let Recipe::Dockerfile { bases, .. } = &image.recipe {
            for (from, target) in bases {
                if !factory.images.contains_key(target) {
                    let known: Vec<&str> = factory.images.keys().map(String::as_str).collect();
                    return Err(factory
                        .error_at_image(
                            &image.name,
                            format!("image {:?}: base {from:?} names image {target:?}, which no factory file declares", image.name),
                        )
                        .with_hint(format!("known images: {}", known.join(", "))));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
