//! Image names in the OCI layout's index.json.
//!
//! Each name is a manifest descriptor carrying the annotation
//! `org.opencontainers.image.ref.name` set to the full name (`app:1.0`), so
//! `skopeo inspect oci:STORE/oci:app:1.0` finds it.

use kiln_oci::image::{Descriptor, Index};

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
    d.annotations.get(REF_ANNOTATION)
}

pub fn set(index: &mut Index, name: &str, desc: &Descriptor) {
    remove(index, name);
    let mut d = desc.clone();
    d.annotations
        .insert(REF_ANNOTATION.to_string(), name.to_string());
    index.manifests.push(d);
}

pub fn remove(index: &mut Index, name: &str) -> bool {
    let before = index.manifests.len();
    index
        .manifests
        .retain(|d| name_of(d).map(String::as_str) != Some(name));
    before != index.manifests.len()
}

pub fn all(index: &Index) -> Vec<(String, Descriptor)> {
    let mut out: Vec<_> = index
        .manifests
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
