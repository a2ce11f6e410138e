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
//! This crate reads files and the environment (for `${VAR}` in publish
//! targets) and nothing else; Dockerfiles are read by the factory.

mod error;
pub mod model;
mod schedule;

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

pub use error::Error;
pub use kiln_dockerfile::Platform;
pub use model::{MmdebstrapDef, TestDef, FORMAT};

mod vm;
pub use schedule::Schedule;

/// Every image of the factory files baked together.
#[derive(Debug)]
pub struct Factory {
    pub files: Vec<SourceFile>,
    pub images: BTreeMap<String, Image>,
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
}

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
    pub bootloader: kiln_vm::Bootloader,
    pub cmdline: String,
    pub hostname: String,
    pub user: Option<kiln_vm::User>,
    /// What is published (the raw disk is always kept in the store).
    pub formats: Vec<kiln_vm::Format>,
    pub data_disks: Vec<kiln_vm::DataDisk>,
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
    let mut factory = Factory {
        files: Vec::new(),
        images: BTreeMap::new(),
    };
    for path in files {
        let path = std::path::absolute(&path).unwrap_or(path);
        if factory.files.iter().any(|f| f.path == path) {
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Error::file(&path, format!("cannot read: {e}")))?;
        factory.files.push(SourceFile { path, text });
        let index = factory.files.len() - 1;
        read_file(&mut factory, index)?;
    }
    check_references(&factory)?;
    Ok(factory)
}

fn read_file(factory: &mut Factory, index: usize) -> Result<(), Error> {
    let (path, text) = (
        factory.files[index].path.clone(),
        factory.files[index].text.clone(),
    );
    let (path, text) = (path.as_path(), text.as_str());
    let err = |span: Range<usize>, msg: String| Error::at(path, text, span, msg);
    let def: model::FileDef = toml::from_str(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        let msg = e.message().trim().to_string();
        let hint = if msg.contains("unknown field") {
            Some("see `kiln schema` for every key kiln.toml accepts")
        } else if msg.contains("missing field `kiln`") {
            Some("start the file with `kiln = 1`, the format version")
        } else {
            None
        };
        let e = err(span, msg);
        match hint {
            Some(h) => e.with_hint(h),
            None => e,
        }
    })?;
    if *def.kiln.get_ref() != FORMAT {
        return Err(err(
            def.kiln.span(),
            format!("format version {} is not known", def.kiln.get_ref()),
        )
        .with_hint(format!("this kiln reads `kiln = {FORMAT}`")));
    }
    let dir = path.parent().unwrap_or(Path::new("/")).to_path_buf();
    let factory_tz = def
        .factory
        .timezone
        .as_ref()
        .map(|tz| (tz.get_ref().clone(), tz.span()));
    let factory_schedule = match &def.factory.schedule {
        Some(s) => Some(parse_schedule(path, text, s, factory_tz.clone())?),
        None => None,
    };
    if factory_schedule.is_none() {
        if let Some((tz, span)) = &factory_tz {
            schedule::parse_tz(tz).map_err(|m| err(span.clone(), m))?;
        }
    }
    let registry = match &def.factory.registry {
        Some(r) => Some(interpolate(r.get_ref()).map_err(|m| err(r.span(), m))?),
        None => None,
    };
    let mut images = Vec::new();
    for (name, img) in def.image {
        let span = name.span();
        let name = name.into_inner();
        if !valid_name(&name) {
            return Err(err(span, format!("image name {name:?} is not valid"))
                .with_hint("use lowercase letters, digits and `.`, `_`, `-`, starting with a letter or digit"));
        }
        let recipe = match img.mmdebstrap {
            Some(m) => {
                if img.context.is_some()
                    || img.dockerfile.is_some()
                    || img.target.is_some()
                    || !img.bases.is_empty()
                {
                    return Err(err(
                        span,
                        format!("image {name:?} has both `mmdebstrap` and Dockerfile settings"),
                    )
                    .with_hint(
                        "a bootstrapped image has no context, dockerfile, target or bases",
                    ));
                }
                Recipe::Mmdebstrap(m)
            }
            None => {
                let context = dir.join(img.context.unwrap_or_else(|| PathBuf::from(".")));
                let dockerfile = context.join(
                    img.dockerfile
                        .unwrap_or_else(|| PathBuf::from("Dockerfile")),
                );
                Recipe::Dockerfile {
                    context,
                    dockerfile,
                    args: img.args,
                    target: img.target,
                    secrets: img
                        .secrets
                        .into_iter()
                        .map(|(k, v)| (k, dir.join(v)))
                        .collect(),
                    bases: img
                        .bases
                        .into_iter()
                        .map(|(k, v)| (k, v.into_inner()))
                        .collect(),
                }
            }
        };
        let version = parse_version(img.version.as_ref(), &dir, &err)?;
        let publish = targets(
            Kind::Image,
            &name,
            &span,
            &img.tags,
            &img.publish,
            registry.as_deref(),
            &dir,
            &err,
        )?;
        let tests: Vec<Vec<String>> = img
            .test
            .into_iter()
            .map(|t| match t {
                TestDef::Shell(s) => vec!["/bin/sh".into(), "-c".into(), s],
                TestDef::Exec(v) => v,
            })
            .collect();
        if let Some(empty) = tests_empty(&tests) {
            return Err(err(
                span,
                format!("test {} of image {name:?} is empty", empty + 1),
            ));
        }
        let tz = img
            .timezone
            .as_ref()
            .map(|t| (t.get_ref().clone(), t.span()))
            .or(factory_tz.clone());
        let schedule = match &img.schedule {
            Some(s) => Some(parse_schedule(path, text, s, tz)?),
            None => {
                if let Some(t) = &img.timezone {
                    schedule::parse_tz(t.get_ref()).map_err(|m| err(t.span(), m))?;
                }
                factory_schedule.clone()
            }
        };
        let platforms = parse_platforms(
            img.platforms.as_ref().unwrap_or(&def.factory.platforms),
            &err,
        )?;
        if let Recipe::Mmdebstrap(m) = &recipe {
            if m.architecture.is_some() && !platforms.is_empty() {
                return Err(err(
                    span,
                    format!("image {name:?} has both `mmdebstrap.architecture` and `platforms`"),
                )
                .with_hint(
                    "with `platforms`, each platform's Debian architecture is bootstrapped",
                ));
            }
        }
        images.push(Image {
            name,
            file: index,
            span,
            recipe,
            version,
            tags: img.tags,
            publish,
            tests,
            schedule,
            platforms,
        });
    }
    for (name, vm) in def.vm {
        let span = name.span();
        let name = name.into_inner();
        if !valid_name(&name) {
            return Err(err(span, format!("VM image name {name:?} is not valid"))
                .with_hint("use lowercase letters, digits and `.`, `_`, `-`, starting with a letter or digit"));
        }
        let version = parse_version(vm.version.as_ref(), &dir, &err)?;
        let publish = targets(
            Kind::Vm,
            &name,
            &span,
            &vm.tags,
            &vm.publish,
            registry.as_deref(),
            &dir,
            &err,
        )?;
        let tests: Vec<Vec<String>> = vm
            .test
            .iter()
            .map(|t| vec!["/bin/sh".into(), "-c".into(), t.clone()])
            .collect();
        if let Some(empty) = tests_empty(&tests) {
            return Err(err(
                span,
                format!("test {} of VM image {name:?} is empty", empty + 1),
            ));
        }
        let tags = vm.tags.clone();
        let recipe = vm::read(&name, span.clone(), vm, &dir, &err)?;
        images.push(Image {
            name,
            file: index,
            span,
            recipe: Recipe::Vm(recipe),
            version,
            tags,
            publish,
            tests,
            schedule: None,
            platforms: Vec::new(),
        });
    }
    for image in images {
        if let Some(first) = factory.images.get(&image.name) {
            let other = &factory.files[first.file];
            let (line, col) = {
                let e = Error::at(&other.path, &other.text, first.span.clone(), "");
                (e.line, e.column)
            };
            return Err(factory
                .error_at(
                    index,
                    image.span.clone(),
                    format!(
                        "{:?} is declared twice (image and VM image names are one namespace)",
                        image.name
                    ),
                )
                .with_hint(format!(
                    "first declared at {}:{line}:{col}",
                    other.path.display()
                )));
        }
        factory.images.insert(image.name.clone(), image);
    }
    Ok(())
}

/// A container image or a VM image: they publish to different places.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Image,
    Vm,
}

/// Checks the moving tags and reads the publish targets (the factory's
/// registry when none are given).
#[allow(clippy::too_many_arguments)]
fn targets(
    kind: Kind,
    name: &str,
    span: &Range<usize>,
    tags: &[String],
    publish: &[toml::Spanned<String>],
    registry: Option<&str>,
    dir: &Path,
    err: &dyn Fn(Range<usize>, String) -> Error,
) -> Result<Vec<Publish>, Error> {
    let what = match kind {
        Kind::Image => "image",
        Kind::Vm => "VM image",
    };
    for tag in tags {
        if !valid_tag(tag) {
            return Err(err(
                span.clone(),
                format!("tag {tag:?} of {what} {name:?} is not a valid tag"),
            )
            .with_hint("a tag is up to 128 of [A-Za-z0-9_.-], not starting with `.` or `-`"));
        }
    }
    let accepted = match kind {
        Kind::Image => "docker://HOST/REPO, oci-archive:PATH or store",
        Kind::Vm => "docker://HOST/REPO (as an OCI artifact), dir:PATH or store",
    };
    let mut out = Vec::new();
    for target in publish {
        let text = interpolate(target.get_ref()).map_err(|m| err(target.span(), m))?;
        let parsed = parse_publish(&text, dir)
            .map_err(|m| err(target.span(), m).with_hint(format!("use {accepted}")))?;
        let misfit = matches!(
            (&parsed, kind),
            (Publish::Dir(_), Kind::Image) | (Publish::OciArchive(_), Kind::Vm)
        );
        if misfit {
            return Err(err(
                target.span(),
                format!("publish target {text:?} is not for a {what}"),
            )
            .with_hint(format!("a {what} goes to {accepted}")));
        }
        out.push(parsed);
    }
    if let (true, Some(registry)) = (publish.is_empty(), registry) {
        out.push(Publish::Registry(format!(
            "{}/{name}",
            registry.trim_end_matches('/')
        )));
    }
    Ok(out)
}

/// `version = "date" | "git" | "file:PATH"`.
fn parse_version(
    v: Option<&toml::Spanned<String>>,
    dir: &Path,
    err: &dyn Fn(Range<usize>, String) -> Error,
) -> Result<VersionScheme, Error> {
    let Some(v) = v else {
        return Ok(VersionScheme::Date);
    };
    match v.get_ref().as_str() {
        "date" => Ok(VersionScheme::Date),
        "git" => Ok(VersionScheme::Git),
        s => match s.strip_prefix("file:") {
            Some(f) if !f.is_empty() => Ok(VersionScheme::File(dir.join(f))),
            _ => Err(err(v.span(), format!("version scheme {s:?} is not known"))
                .with_hint("use \"date\", \"git\" or \"file:PATH\"")),
        },
    }
}

/// `platforms = [...]`: each parsed and normalised, none twice.
fn parse_platforms(
    list: &[toml::Spanned<String>],
    err: &dyn Fn(Range<usize>, String) -> Error,
) -> Result<Vec<Platform>, Error> {
    let mut out: Vec<Platform> = Vec::new();
    for p in list {
        let parsed = Platform::parse(p.get_ref())
            .map_err(|m| err(p.span(), m).with_hint("write os/arch[/variant], e.g. linux/arm64"))?;
        if out.contains(&parsed) {
            return Err(err(p.span(), format!("platform {parsed} is listed twice")));
        }
        out.push(parsed);
    }
    Ok(out)
}

fn tests_empty(tests: &[Vec<String>]) -> Option<usize> {
    tests
        .iter()
        .position(|t| t.is_empty() || t.last().is_some_and(|s| s.trim().is_empty()))
}

fn parse_schedule(
    path: &Path,
    text: &str,
    expr: &toml::Spanned<String>,
    tz: Option<(String, Range<usize>)>,
) -> Result<Schedule, Error> {
    let tz = match tz {
        Some((name, span)) => {
            Some(schedule::parse_tz(&name).map_err(|m| Error::at(path, text, span, m))?)
        }
        None => None,
    };
    Schedule::parse(expr.get_ref(), tz).map_err(|m| {
        Error::at(path, text, expr.span(), m)
            .with_hint("5 fields: minute hour day-of-month month day-of-week, e.g. \"0 4 * * 1\" (Mondays 04:00)")
    })
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

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
        && name.len() <= 128
}

fn valid_tag(tag: &str) -> bool {
    !tag.is_empty()
        && tag.len() <= 128
        && !tag.starts_with(['.', '-'])
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

fn parse_publish(text: &str, dir: &Path) -> Result<Publish, String> {
    if text == "store" {
        return Ok(Publish::Store);
    }
    if let Some(repo) = text.strip_prefix("docker://") {
        if repo.is_empty()
            || repo.contains('@')
            || repo
                .rsplit('/')
                .next()
                .is_some_and(|last| last.contains(':'))
        {
            return Err(format!(
                "publish target {text:?}: give a repository without tag or digest"
            ));
        }
        return Ok(Publish::Registry(repo.to_string()));
    }
    if let Some(d) = text.strip_prefix("dir:") {
        if d.is_empty() {
            return Err("publish target \"dir:\" needs a path".into());
        }
        return Ok(Publish::Dir(dir.join(d)));
    }
    if let Some(file) = text.strip_prefix("oci-archive:") {
        if file.is_empty() {
            return Err("publish target \"oci-archive:\" needs a path".into());
        }
        return Ok(Publish::OciArchive(dir.join(file)));
    }
    Err(format!("publish target {text:?} is not known"))
}

/// Expands `${VAR}` and `${VAR:-default}` from the environment.
fn interpolate(text: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let Some(end) = rest[i..].find('}') else {
            return Err(format!("unclosed `${{` in {text:?}"));
        };
        let inner = &rest[i + 2..i + end];
        let (var, default) = match inner.split_once(":-") {
            Some((v, d)) => (v, Some(d)),
            None => (inner, None),
        };
        match (std::env::var(var), default) {
            (Ok(v), _) if !v.is_empty() => out.push_str(&v),
            (_, Some(d)) => out.push_str(d),
            _ => {
                return Err(format!(
                    "environment variable {var} is not set (used in {text:?})"
                ))
            }
        }
        rest = &rest[i + end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests;
