//! Image names in the OCI layout's index.json.
//!
//! Each name is a manifest descriptor carrying the annotation
//! `org.opencontainers.image.ref.name` set to the full name (`app:1.0`), so
//! `skopeo inspect oci:STORE/oci:app:1.0` finds it.

use std::collections::HashMap;

use oci_spec::image::{Descriptor, ImageIndex};

use crate::Error;

pub const REF_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// `app` → `app:latest`; a name with a tag or digest stays as it is.
pub fn normalize_name(name: &str) -> Result<String, Error> {
    let bad = |why: &str| Error::Spec(format!("invalid image name {name:?}: {why}"));
    if name.is_empty() {
        return Err(bad("it is empty"));
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("it contains whitespace"));
    }
    if name.contains('@') {
        return Ok(name.to_string());
    }
    let last = name.rsplit('/').next().unwrap_or(name);
    match last.split_once(':') {
        Some((_, "")) => Err(bad("the tag is empty")),
        Some(_) => Ok(name.to_string()),
        None => Ok(format!("{name}:latest")),
    }
}

fn name_of(d: &Descriptor) -> Option<&String> {
    d.annotations().as_ref().and_then(|a| a.get(REF_ANNOTATION))
}

pub fn set(index: &mut ImageIndex, name: &str, desc: &Descriptor) {
    remove(index, name);
    let mut d = desc.clone();
    let mut ann: HashMap<String, String> = d.annotations().clone().unwrap_or_default();
    ann.insert(REF_ANNOTATION.to_string(), name.to_string());
    d.set_annotations(Some(ann));
    let mut list = index.manifests().clone();
    list.push(d);
    index.set_manifests(list);
}

pub fn remove(index: &mut ImageIndex, name: &str) -> bool {
    let before = index.manifests().len();
    let mut list = index.manifests().clone();
    list.retain(|d| name_of(d).map(String::as_str) != Some(name));
    index.set_manifests(list);
    before != index.manifests().len()
}

pub fn all(index: &ImageIndex) -> Vec<(String, Descriptor)> {
    let mut out: Vec<_> = index
        .manifests()
        .iter()
        .filter_map(|d| name_of(d).map(|n| (n.clone(), d.clone())))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(normalize_name("app").unwrap(), "app:latest");
        assert_eq!(
            normalize_name("localhost:5000/app").unwrap(),
            "localhost:5000/app:latest"
        );
        assert_eq!(normalize_name("app:1.0").unwrap(), "app:1.0");
        assert!(normalize_name("app:").is_err());
        assert!(normalize_name("").is_err());
    }
}
