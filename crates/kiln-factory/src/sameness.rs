//! Whether a rebuilt image is the same as the one its lock holds: the same
//! digest, or — for a rebuild whose package steps ran again — the same
//! content per platform (files, their bytes, modes, owners, links and
//! xattrs, and the run config), with the image's volatile paths ignored:
//! files whose content carries the time a package step ran (logs, caches,
//! package lists). Times are never compared: they are not content.

use std::collections::BTreeMap;

use kiln_dockerfile::glob;
use kiln_store::{Image, Store};

/// How a rebuild compares with the locked image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sameness {
    /// The same digest.
    SameDigest,
    /// Another digest, the same content; the volatile paths that differed.
    SameContent { volatile: Vec<String> },
    /// Different: what differs (at most ten lines).
    Different { differences: Vec<String> },
}

/// Compares the images `new` and `old` (store names) for every platform
/// they hold, ignoring `volatile` paths (wildcards, `**` for any depth).
pub fn compare(
    store: &Store,
    new: &str,
    old: &str,
    volatile: &[String],
) -> Result<Sameness, kiln_store::Error> {
    let (_, new_desc) = store.lookup(new)?;
    let (_, old_desc) = store.lookup(old)?;
    if new_desc.digest == old_desc.digest {
        return Ok(Sameness::SameDigest);
    }
    let by_platform = |name: &str| -> Result<BTreeMap<String, Image>, kiln_store::Error> {
        Ok(store
            .images_of(name)?
            .into_iter()
            .map(|i| (i.config.platform().to_string(), i))
            .collect())
    };
    let (new, old) = (by_platform(new)?, by_platform(old)?);
    if new.keys().ne(old.keys()) {
        let platforms = |m: &BTreeMap<String, Image>| m.keys().cloned().collect::<Vec<_>>();
        return Ok(Sameness::Different {
            differences: vec![format!(
                "platforms {:?} instead of {:?}",
                platforms(&new),
                platforms(&old)
            )],
        });
    }
    let mut volatile_seen = Vec::new();
    let mut differences = Vec::new();
    for (platform, n) in &new {
        let o = &old[platform];
        let on = if new.len() > 1 {
            format!(" ({platform})")
        } else {
            String::new()
        };
        if serde_json::to_value(&n.config.config).ok()
            != serde_json::to_value(&o.config.config).ok()
        {
            differences.push(format!("the image config{on}"));
        }
        let nc = kiln_oci::tree::content(&store.snapshots(n)?)?;
        let oc = kiln_oci::tree::content(&store.snapshots(o)?)?;
        for (path, change) in diff(&nc, &oc) {
            let ignored = volatile.iter().any(|p| glob::matches(p, &path));
            let line = format!("{change} {path}{on}");
            if ignored {
                volatile_seen.push(line);
            } else {
                differences.push(line);
            }
        }
    }
    if differences.is_empty() {
        return Ok(Sameness::SameContent {
            volatile: volatile_seen,
        });
    }
    if differences.len() > 10 {
        let more = differences.len() - 9;
        differences.truncate(9);
        differences.push(format!("and {more} more"));
    }
    Ok(Sameness::Different { differences })
}

/// Each path that differs: `added`, `removed` or `changed`.
fn diff(
    new: &BTreeMap<String, String>,
    old: &BTreeMap<String, String>,
) -> Vec<(String, &'static str)> {
    let mut out: Vec<(String, &'static str)> = new
        .iter()
        .filter_map(|(p, l)| match old.get(p) {
            None => Some((p.clone(), "added")),
            Some(o) if o != l => Some((p.clone(), "changed")),
            Some(_) => None,
        })
        .collect();
    out.extend(
        old.keys()
            .filter(|p| !new.contains_key(*p))
            .map(|p| (p.clone(), "removed")),
    );
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_are_named() {
        let m = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let old = m(&[("/a", "1"), ("/b", "2"), ("/c", "3")]);
        let new = m(&[("/a", "1"), ("/b", "9"), ("/d", "4")]);
        assert_eq!(
            diff(&new, &old),
            [
                ("/b".to_string(), "changed"),
                ("/c".to_string(), "removed"),
                ("/d".to_string(), "added")
            ]
        );
    }
}
