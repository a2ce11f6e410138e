//! Reading one kiln.toml: its text parsed strictly, then every image and
//! VM image in it checked field by field. Pure: the text, its path and the
//! environment come in, and nothing else is read.

use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::Spanned;

use crate::model::{self, ImageDef, TestDef, VmDef};
use crate::{
    schedule, vm, Env, Error, Factory, Image, Platform, Publish, Recipe, RefreshPolicy, Schedule,
    VersionScheme, FORMAT,
};

/// One kiln.toml being read: where it is, its text, and what its
/// `[factory]` table gives every image in it.
struct FileReader<'a> {
    index: usize,
    path: &'a Path,
    text: &'a str,
    dir: PathBuf,
    env: Env<'a>,
    registry: Option<String>,
    tz: Option<(String, Range<usize>)>,
    schedule: Option<Schedule>,
    platforms: Vec<Spanned<String>>,
    volatile: Vec<String>,
    probe_interval: u64,
    sign: Option<crate::KeyRef>,
    verify_bases: Option<crate::KeyRef>,
    cache: Option<String>,
}

/// Reads file `index` of `factory` into its images.
pub(crate) fn read_file(factory: &mut Factory, index: usize, env: Env<'_>) -> Result<(), Error> {
    let (path, text) = (
        factory.files[index].path.clone(),
        factory.files[index].text.clone(),
    );
    let def = parse_text(&path, &text)?;
    let reader = FileReader::new(index, &path, &text, env, &def.factory)?;
    let mut images = Vec::new();
    for (name, img) in def.image {
        images.push(reader.image(name, img)?);
    }
    for (name, vm) in def.vm {
        images.push(reader.vm(name, vm)?);
    }
    for image in images {
        add(factory, index, image)?;
    }
    for (name, def) in def.service {
        let err = |span: Range<usize>, msg: String| Error::at(&path, &text, span, msg);
        let s = crate::service::read(name, def, index, &reader.dir, &err)?;
        if factory.services.contains_key(&s.name) {
            return Err(err(
                s.span.clone(),
                format!("service {:?} is declared twice", s.name),
            ));
        }
        factory.services.insert(s.name.clone(), s);
    }
    Ok(())
}

/// The file's text as its model, with the format version checked.
fn parse_text(path: &Path, text: &str) -> Result<model::FileDef, Error> {
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
    Ok(def)
}

/// Adds an image read from file `index`, unless its name is taken.
fn add(factory: &mut Factory, index: usize, image: Image) -> Result<(), Error> {
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
    Ok(())
}

impl<'a> FileReader<'a> {
    fn new(
        index: usize,
        path: &'a Path,
        text: &'a str,
        env: Env<'a>,
        def: &model::FactoryDef,
    ) -> Result<Self, Error> {
        let err = |span: Range<usize>, msg: String| Error::at(path, text, span, msg);
        let tz = def
            .timezone
            .as_ref()
            .map(|tz| (tz.get_ref().clone(), tz.span()));
        let schedule = match &def.schedule {
            Some(s) => Some(parse_schedule(path, text, s, tz.clone())?),
            None => None,
        };
        if schedule.is_none() {
            if let Some((tz, span)) = &tz {
                schedule::parse_tz(tz).map_err(|m| err(span.clone(), m))?;
            }
        }
        let probe_interval = match &def.probe_interval {
            Some(p) => crate::parse_duration(p.get_ref()).map_err(|m| err(p.span(), m))?,
            None => crate::DEFAULT_PROBE_INTERVAL,
        };
        let registry = match &def.registry {
            Some(r) => Some(interpolate(r.get_ref(), env).map_err(|m| err(r.span(), m))?),
            None => None,
        };
        let cache = match &def.cache {
            Some(c) => {
                let repo = interpolate(c.get_ref(), env).map_err(|m| err(c.span(), m))?;
                let last = repo.rsplit('/').next().unwrap_or("");
                if !repo.contains('/') || repo.contains('@') || last.contains(':') {
                    return Err(err(
                        c.span(),
                        format!("cache {repo:?}: name a registry repository (REGISTRY/REPOSITORY), without a tag or digest"),
                    ));
                }
                Some(repo)
            }
            None => None,
        };
        let dir = path.parent().unwrap_or(Path::new("/")).to_path_buf();
        let key = |k: &Option<crate::model::KeyDef>| -> Result<Option<crate::KeyRef>, Error> {
            let Some(k) = k else { return Ok(None) };
            let (text, span) = (k.key.get_ref().trim(), k.key.span());
            if text.contains("PRIVATE KEY") || text.contains("PUBLIC KEY") {
                return Err(err(
                    span,
                    "a key is never written in kiln.toml: name its file or `env:VAR`".into(),
                ));
            }
            let source = match text.strip_prefix("env:") {
                Some(var) if !var.is_empty() => crate::KeySource::Env(var.to_string()),
                Some(_) => return Err(err(span, "`env:` needs a variable name".into())),
                None if text.is_empty() => {
                    return Err(err(span, "empty key: name a PEM file or `env:VAR`".into()))
                }
                None => crate::KeySource::File(dir.join(text)),
            };
            Ok(Some(crate::KeyRef {
                source,
                file: index,
                span,
            }))
        };
        let (sign, verify_bases) = (key(&def.sign)?, key(&def.verify_bases)?);
        Ok(FileReader {
            index,
            path,
            text,
            dir,
            env,
            sign,
            verify_bases,
            cache,
            registry,
            tz,
            schedule,
            platforms: def.platforms.clone(),
            probe_interval,
            volatile: def.volatile.clone().unwrap_or_else(|| {
                crate::DEFAULT_VOLATILE
                    .iter()
                    .map(|p| p.to_string())
                    .collect()
            }),
        })
    }

    /// An error at `span` of this file.
    fn err(&self, span: Range<usize>, message: String) -> Error {
        Error::at(self.path, self.text, span, message)
    }

    /// `[image.NAME]`.
    fn image(&self, name: Spanned<String>, mut img: ImageDef) -> Result<Image, Error> {
        let err = |span, message| self.err(span, message);
        let (name, span) = self.name(name, Kind::Image)?;
        let recipe = self.recipe(&name, &span, &mut img)?;
        let version = parse_version(img.version.as_ref(), &self.dir, &err)?;
        let publish = self.targets(Kind::Image, &name, &span, &img.tags, &img.publish)?;
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
            .or(self.tz.clone());
        let schedule = match &img.schedule {
            Some(s) => Some(parse_schedule(self.path, self.text, s, tz)?),
            None => {
                if let Some(t) = &img.timezone {
                    schedule::parse_tz(t.get_ref()).map_err(|m| err(t.span(), m))?;
                }
                self.schedule.clone()
            }
        };
        let platforms = parse_platforms(img.platforms.as_ref().unwrap_or(&self.platforms), &err)?;
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
        let refresh = match &img.refresh {
            Some(r) => RefreshPolicy::parse(r.get_ref()).map_err(|m| {
                err(r.span(), m).with_hint("use \"packages\" (the default), \"runs\" or \"none\"")
            })?,
            None => RefreshPolicy::default(),
        };
        Ok(Image {
            name,
            file: self.index,
            span,
            recipe,
            version,
            tags: img.tags,
            publish,
            tests,
            schedule,
            platforms,
            refresh,
            volatile: img.volatile.unwrap_or_else(|| self.volatile.clone()),
            probe_interval: self.probe_interval,
            sign: self.sign.clone(),
            verify_bases: self.verify_bases.clone(),
            cache: self.cache.clone(),
        })
    }

    /// A checked name of kind `kind`, and where it is.
    fn name(&self, name: Spanned<String>, kind: Kind) -> Result<(String, Range<usize>), Error> {
        let span = name.span();
        let name = name.into_inner();
        if !valid_name(&name) {
            return Err(self.err(span, format!("{} name {name:?} is not valid", kind.what()))
                .with_hint("use lowercase letters, digits and `.`, `_`, `-`, starting with a letter or digit"));
        }
        Ok((name, span))
    }

    /// How an image is made: bootstrapped, or built from its Dockerfile
    /// (paths made absolute).
    fn recipe(&self, name: &str, span: &Range<usize>, img: &mut ImageDef) -> Result<Recipe, Error> {
        let err = |span, message| self.err(span, message);
        let span = span.clone();
        let recipe = match img.mmdebstrap.take() {
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
                let context = self
                    .dir
                    .join(img.context.take().unwrap_or_else(|| PathBuf::from(".")));
                let dockerfile = context.join(
                    img.dockerfile
                        .take()
                        .unwrap_or_else(|| PathBuf::from("Dockerfile")),
                );
                Recipe::Dockerfile {
                    context,
                    dockerfile,
                    args: std::mem::take(&mut img.args),
                    target: img.target.take(),
                    secrets: std::mem::take(&mut img.secrets)
                        .into_iter()
                        .map(|(k, v)| (k, self.dir.join(v)))
                        .collect(),
                    bases: std::mem::take(&mut img.bases)
                        .into_iter()
                        .map(|(k, v)| (k, v.into_inner()))
                        .collect(),
                }
            }
        };
        Ok(recipe)
    }

    /// `[vm.NAME]`.
    fn vm(&self, name: Spanned<String>, vm: VmDef) -> Result<Image, Error> {
        let err = |span, message| self.err(span, message);
        let (name, span) = self.name(name, Kind::Vm)?;
        let version = parse_version(vm.version.as_ref(), &self.dir, &err)?;
        let publish = self.targets(Kind::Vm, &name, &span, &vm.tags, &vm.publish)?;
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
        let recipe = vm::read(&name, span.clone(), vm, &self.dir, &err)?;
        Ok(Image {
            name,
            file: self.index,
            span,
            recipe: Recipe::Vm(recipe),
            version,
            tags,
            publish,
            tests,
            schedule: None,
            platforms: Vec::new(),
            refresh: RefreshPolicy::default(),
            volatile: self.volatile.clone(),
            probe_interval: self.probe_interval,
            sign: self.sign.clone(),
            verify_bases: self.verify_bases.clone(),
            cache: self.cache.clone(),
        })
    }

    /// Checks the moving tags and reads the publish targets (the factory's
    /// registry when none are given).
    fn targets(
        &self,
        kind: Kind,
        name: &str,
        span: &Range<usize>,
        tags: &[String],
        publish: &[Spanned<String>],
    ) -> Result<Vec<Publish>, Error> {
        let err = |span, message| self.err(span, message);
        let what = kind.what();
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
            let text =
                interpolate(target.get_ref(), self.env).map_err(|m| err(target.span(), m))?;
            let parsed = parse_publish(&text, &self.dir)
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
        if let (true, Some(registry)) = (publish.is_empty(), &self.registry) {
            out.push(Publish::Registry(format!(
                "{}/{name}",
                registry.trim_end_matches('/')
            )));
        }
        Ok(out)
    }
}

/// A container image or a VM image: they publish to different places.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Image,
    Vm,
}

impl Kind {
    fn what(self) -> &'static str {
        match self {
            Kind::Image => "image",
            Kind::Vm => "VM image",
        }
    }
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

/// Expands `${VAR}` and `${VAR:-default}` from `env`.
fn interpolate(text: &str, env: Env<'_>) -> Result<String, String> {
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
        match (env(var), default) {
            (Some(v), _) if !v.is_empty() => out.push_str(&v),
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
