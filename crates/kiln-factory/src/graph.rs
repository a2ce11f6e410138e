//! The image graph of a factory: which images each image is built on (from
//! its Dockerfile's FROM and COPY --from, and its `bases`), which bases come
//! from outside the factory, the order to build in, and cycles.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use kiln_definition::{Factory, Recipe};
use kiln_dockerfile::{evaluate, Base, Options, UnknownBases};

use crate::FactoryError;

/// The bases of every image.
#[derive(Debug, Default)]
pub struct Graph {
    /// Image → the factory images it is built on.
    pub deps: BTreeMap<String, BTreeSet<String>>,
    /// Image → reference as written in its Dockerfile → factory image.
    pub factory_bases: BTreeMap<String, BTreeMap<String, String>>,
    /// Image → images from outside the factory (registries), as written.
    pub external: BTreeMap<String, BTreeSet<String>>,
    /// Image → base reference as written (a factory image or a registry
    /// image) → the Dockerfile and line that name it (the stage's FROM
    /// line), so an error about it points there.
    pub bases_at: BTreeMap<String, BTreeMap<String, (PathBuf, usize)>>,
    /// Every image in dependency order (bases first, then by name).
    pub order: Vec<String>,
}

/// The factory image a FROM reference names, if any: the image's name,
/// with any tag, or an explicit `bases` entry.
fn factory_image<'a>(
    factory: &'a Factory,
    bases: &'a BTreeMap<String, String>,
    reference: &str,
) -> Option<&'a str> {
    if let Some(name) = bases.get(reference) {
        return Some(name);
    }
    let name = reference.split_once(':').map_or(reference, |(n, _)| n);
    factory
        .images
        .get_key_value(name)
        .filter(|(_, i)| !matches!(i.recipe, Recipe::Vm(_)))
        .map(|(k, _)| k.as_str())
}

/// Reads each image's Dockerfile and builds the graph. A cycle is an error
/// naming the images on it.
pub fn graph(factory: &Factory) -> Result<Graph, FactoryError> {
    let mut g = Graph::default();
    for (name, image) in &factory.images {
        let mut deps = BTreeSet::new();
        let mut mapped = BTreeMap::new();
        let mut external = BTreeSet::new();
        let mut bases_at = BTreeMap::new();
        if let Recipe::Vm(vm) = &image.recipe {
            deps.insert(vm.image.clone());
        }
        if let Recipe::Dockerfile {
            dockerfile,
            args,
            target,
            bases,
            ..
        } = &image.recipe
        {
            let text = std::fs::read_to_string(dockerfile).map_err(|e| {
                factory
                    .error_at_image(
                        name,
                        format!("image {name:?}: cannot read {}: {e}", dockerfile.display()),
                    )
                    .with_hint("set `dockerfile` (relative to `context`) or create the file")
            })?;
            let opts = Options {
                build_args: args.clone(),
                target: target.clone(),
                ..Default::default()
            };
            let built =
                evaluate(&text, &opts, &UnknownBases).map_err(|d| FactoryError::Dockerfile {
                    image: name.clone(),
                    rendered: d.render(&dockerfile.display().to_string(), &text),
                })?;
            for stage in built.stages.iter().filter(|s| s.needed) {
                let mut refs: Vec<&str> = stage.images.iter().map(String::as_str).collect();
                if let Base::Image { reference } = &stage.base {
                    refs.push(reference);
                }
                for reference in refs {
                    if is_local_transport(reference) {
                        continue;
                    }
                    bases_at
                        .entry(reference.to_string())
                        .or_insert_with(|| (dockerfile.clone(), stage.line));
                    match factory_image(factory, bases, reference) {
                        Some(dep) if dep == name => {
                            return Err(factory
                                .error_at_image(name, format!("image {name:?} is built FROM itself ({reference:?})"))
                                .with_hint("an image cannot be its own base; name another image or a registry reference")
                                .into())
                        }
                        Some(dep) => {
                            deps.insert(dep.to_string());
                            mapped.insert(reference.to_string(), dep.to_string());
                        }
                        None => {
                            external.insert(reference.to_string());
                        }
                    }
                }
            }
        }
        g.deps.insert(name.clone(), deps);
        g.factory_bases.insert(name.clone(), mapped);
        g.external.insert(name.clone(), external);
        g.bases_at.insert(name.clone(), bases_at);
    }
    g.order = topological(factory, &g.deps)?;
    Ok(g)
}

impl Graph {
    /// An error about `image`'s registry base `reference`, pointing at the
    /// Dockerfile line that names it (at the image's table in kiln.toml when
    /// that line is not known).
    pub fn base_error(
        &self,
        factory: &Factory,
        image: &str,
        reference: &str,
        error: crate::plan::ResolveError,
    ) -> FactoryError {
        let message = format!("image {image:?}: base {reference}: {error}");
        self.error_at_base(factory, image, reference, message)
            .with_hint(error.hint())
            .into()
    }

    /// `message` at the Dockerfile line naming `image`'s base `reference`
    /// (at the image's table in kiln.toml when that line is not known).
    pub fn error_at_base(
        &self,
        factory: &Factory,
        image: &str,
        reference: &str,
        message: String,
    ) -> kiln_definition::Error {
        let Some((path, line)) = self.bases_at.get(image).and_then(|m| m.get(reference)) else {
            return factory.error_at_image(image, message);
        };
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let start: usize = text
            .split_inclusive('\n')
            .take(line.saturating_sub(1))
            .map(str::len)
            .sum();
        let at = text[start..].find(reference).map_or(start, |i| start + i);
        kiln_definition::Error::at(path, &text, at..at + reference.len(), message)
    }
}

fn is_local_transport(reference: &str) -> bool {
    ["oci-layout:", "oci-archive:", "docker-archive:"]
        .iter()
        .any(|p| reference.starts_with(p))
}

fn topological(
    factory: &Factory,
    deps: &BTreeMap<String, BTreeSet<String>>,
) -> Result<Vec<String>, FactoryError> {
    let mut done: BTreeSet<&str> = BTreeSet::new();
    let mut order = Vec::new();
    while order.len() < deps.len() {
        let ready: Vec<&String> = deps
            .iter()
            .filter(|(n, d)| {
                !done.contains(n.as_str()) && d.iter().all(|x| done.contains(x.as_str()))
            })
            .map(|(n, _)| n)
            .collect();
        if ready.is_empty() {
            let cycle = find_cycle(deps, &done);
            return Err(factory
                .error_at_image(&cycle[0], format!("the images form a cycle: {}", cycle.join(" → ")))
                .with_hint("each image must be built on images that are not built on it; check FROM lines and `bases`")
                .into());
        }
        for n in ready {
            done.insert(n);
            order.push(n.clone());
        }
    }
    Ok(order)
}

fn find_cycle(deps: &BTreeMap<String, BTreeSet<String>>, done: &BTreeSet<&str>) -> Vec<String> {
    // Walk from the first unfinished image along unfinished deps until a
    // node repeats; every unfinished image has an unfinished dep.
    let start = deps
        .keys()
        .find(|n| !done.contains(n.as_str()))
        .expect("an unfinished image");
    let mut path = vec![start.clone()];
    loop {
        let last = path.last().expect("non-empty");
        let next = deps[last]
            .iter()
            .find(|d| !done.contains(d.as_str()))
            .expect("an unfinished dep")
            .clone();
        if let Some(i) = path.iter().position(|p| *p == next) {
            let mut cycle = path[i..].to_vec();
            cycle.push(next);
            return cycle;
        }
        path.push(next);
    }
}

/// Images downstream of `roots` (built on them, directly or not), roots
/// included.
pub fn downstream(g: &Graph, roots: &BTreeSet<String>) -> BTreeSet<String> {
    let mut out = roots.clone();
    for name in &g.order {
        if g.deps[name].iter().any(|d| out.contains(d)) {
            out.insert(name.clone());
        }
    }
    out
}

/// Images `names` are built on, directly or not, `names` included.
pub fn upstream(g: &Graph, names: &BTreeSet<String>) -> BTreeSet<String> {
    let mut out = names.clone();
    for name in g.order.iter().rev() {
        if out.contains(name) {
            out.extend(g.deps[name].iter().cloned());
        }
    }
    out
}

/// The waves in which `set` builds: each wave's images depend only on
/// images of earlier waves (or outside `set`).
pub fn waves(g: &Graph, set: &BTreeSet<String>) -> Vec<Vec<String>> {
    let mut level: BTreeMap<&str, usize> = BTreeMap::new();
    let mut waves: Vec<Vec<String>> = Vec::new();
    for name in g.order.iter().filter(|n| set.contains(*n)) {
        let l = g.deps[name]
            .iter()
            .filter_map(|d| level.get(d.as_str()))
            .map(|l| l + 1)
            .max()
            .unwrap_or(0);
        level.insert(name, l);
        if waves.len() <= l {
            waves.resize(l + 1, Vec::new());
        }
        waves[l].push(name.clone());
    }
    waves
}
