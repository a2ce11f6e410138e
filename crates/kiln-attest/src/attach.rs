//! Where an image's signature and attestations are kept, and how they are
//! added: a [`Place`] is the store (names `NAME:sha256-<hex>.sig|.att`) or
//! a registry repository (the same tags, cosign's scheme, and OCI 1.1
//! referrers too where the registry has that API). Adding keeps
//! what others attached: a signature with another payload or signature
//! stays, an attestation of another predicate type stays.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::cosign::{self, Kind, Layer, Manifest};

/// Why attachments could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("{place}: {message}")]
    Place { place: String, message: String },
    #[error("{0}: the attachment manifest is not valid JSON of an image manifest")]
    Malformed(String),
    #[error("{what}: its blob {digest} does not match its digest (tampered or damaged)")]
    Mismatch { what: String, digest: String },
}

/// A store or registry repository holding an image's attachments.
pub trait Place {
    /// The manifest tagged `tag` in the image's repository, if there is one.
    fn manifest(&self, tag: &str) -> Result<Option<Vec<u8>>, AttachError>;
    /// A blob of the repository.
    fn blob(&self, digest: &str) -> Result<Vec<u8>, AttachError>;
    /// Stores `m` (after its config and `layers`) under `tag`.
    fn put(&self, tag: &str, m: &Manifest, layers: &[Layer]) -> Result<(), AttachError>;
    /// The repository, in messages.
    fn describe(&self) -> String;
    /// Where the place has the OCI 1.1 referrers API, also keeps `layers`
    /// as a manifest whose `subject` is `subject`; whether it did.
    fn refer(&self, _kind: Kind, _subject: &str, _layers: &[Layer]) -> Result<bool, AttachError> {
        Ok(false)
    }
    /// The manifests the referrers API lists for `subject` with `kind`'s
    /// artifact type (none where the place has no such API).
    fn referrers(&self, _kind: Kind, _subject: &str) -> Result<Vec<Vec<u8>>, AttachError> {
        Ok(Vec::new())
    }
}

/// The layers of the `kind` attachments of `digest` at `place` (none when
/// there are none), each blob checked against its digest.
/// The tag is read first (kiln always writes it); the referrers API is
/// asked when there is no tag (attached by a tool that only uses that).
pub fn layers(place: &dyn Place, kind: Kind, digest: &str) -> Result<Vec<Layer>, AttachError> {
    let tag = kind.tag(digest);
    if let Some(bytes) = place.manifest(&tag)? {
        return manifest_layers(place, format!("{}:{tag}", place.describe()), &bytes);
    }
    let mut out: Vec<Layer> = Vec::new();
    for bytes in place.referrers(kind, digest)? {
        let what = format!("{}: a referrer of {digest}", place.describe());
        for l in manifest_layers(place, what, &bytes)? {
            if !out.contains(&l) {
                out.push(l);
            }
        }
    }
    Ok(out)
}

/// The layers an attachment manifest names, each blob checked.
fn manifest_layers(
    place: &dyn Place,
    what: String,
    bytes: &[u8],
) -> Result<Vec<Layer>, AttachError> {
    let v: Value =
        serde_json::from_slice(bytes).map_err(|_| AttachError::Malformed(what.clone()))?;
    let Some(list) = v["layers"].as_array() else {
        return Err(AttachError::Malformed(what));
    };
    let mut out = Vec::new();
    for l in list {
        let (Some(media), Some(d)) = (l["mediaType"].as_str(), l["digest"].as_str()) else {
            return Err(AttachError::Malformed(what));
        };
        let blob = place.blob(d)?;
        if cosign::digest_of(&blob) != d {
            return Err(AttachError::Mismatch {
                what: what.clone(),
                digest: d.to_string(),
            });
        }
        let annotations: BTreeMap<String, String> = l["annotations"]
            .as_object()
            .map(|o| {
                o.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        out.push(Layer {
            media_type: media.to_string(),
            blob,
            annotations,
        });
    }
    Ok(out)
}

/// Whether `new` replaces `old` in an attachment manifest: the same blob
/// and annotations, or (attestations) the same predicate type.
fn replaces(kind: Kind, new: &Layer, old: &Layer) -> bool {
    match kind {
        Kind::Signature => new.blob == old.blob && new.annotations == old.annotations,
        Kind::Attestations => {
            new.annotations.get(cosign::PREDICATE_ANNOTATION)
                == old.annotations.get(cosign::PREDICATE_ANNOTATION)
        }
    }
}

/// Adds `new` to the `kind` attachments of `digest` at `place`; the
/// attachment manifest's digest.
pub fn add(
    place: &dyn Place,
    kind: Kind,
    digest: &str,
    new: &[Layer],
) -> Result<String, AttachError> {
    let mut all: Vec<Layer> = layers(place, kind, digest)
        .unwrap_or_default()
        .into_iter()
        .filter(|old| !new.iter().any(|n| replaces(kind, n, old)))
        .collect();
    all.extend(new.iter().cloned());
    let m = cosign::tag_manifest(&all);
    place.put(&kind.tag(digest), &m, &all)?;
    place.refer(kind, digest, &all)?;
    Ok(m.digest())
}

/// The place as given, moved to another (a store's attachments pushed to
/// a registry with the image): every attachment of `digest`; the
/// manifests' digests by kind.
pub fn copy(
    from: &dyn Place,
    to: &dyn Place,
    digest: &str,
) -> Result<BTreeMap<&'static str, String>, AttachError> {
    let mut out = BTreeMap::new();
    for kind in [Kind::Signature, Kind::Attestations] {
        let l = layers(from, kind, digest)?;
        if l.is_empty() {
            continue;
        }
        let m = cosign::tag_manifest(&l);
        to.put(&kind.tag(digest), &m, &l)?;
        to.refer(kind, digest, &l)?;
        out.insert(kind.suffix(), m.digest());
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A referrer's subject, kind and manifest.
    pub type Referrer = (String, Kind, Vec<u8>);

    /// A place in memory, for the logic's tests (the store and registry
    /// places are tested through the CLI).
    #[derive(Default)]
    pub struct Memory {
        pub tags: Mutex<BTreeMap<String, Vec<u8>>>,
        pub blobs: Mutex<BTreeMap<String, Vec<u8>>>,
        /// With the referrers API: (subject, kind, manifest) of each referrer.
        pub referrers: Option<Mutex<Vec<Referrer>>>,
    }

    impl Place for Memory {
        fn manifest(&self, tag: &str) -> Result<Option<Vec<u8>>, AttachError> {
            Ok(self.tags.lock().unwrap().get(tag).cloned())
        }
        fn blob(&self, digest: &str) -> Result<Vec<u8>, AttachError> {
            self.blobs
                .lock()
                .unwrap()
                .get(digest)
                .cloned()
                .ok_or_else(|| AttachError::Place {
                    place: "memory".into(),
                    message: format!("no blob {digest}"),
                })
        }
        fn put(&self, tag: &str, m: &Manifest, layers: &[Layer]) -> Result<(), AttachError> {
            let mut b = self.blobs.lock().unwrap();
            for l in layers {
                b.insert(l.digest(), l.blob.clone());
            }
            b.insert(cosign::digest_of(&m.config), m.config.clone());
            self.tags.lock().unwrap().insert(tag.into(), m.json.clone());
            Ok(())
        }
        fn describe(&self) -> String {
            "memory".into()
        }
        fn refer(&self, kind: Kind, subject: &str, layers: &[Layer]) -> Result<bool, AttachError> {
            let Some(r) = &self.referrers else {
                return Ok(false);
            };
            let m = cosign::referrer_manifest(kind, layers, cosign::MANIFEST, subject, 7);
            let mut b = self.blobs.lock().unwrap();
            for l in layers {
                b.insert(l.digest(), l.blob.clone());
            }
            r.lock().unwrap().push((subject.into(), kind, m.json));
            Ok(true)
        }
        fn referrers(&self, kind: Kind, subject: &str) -> Result<Vec<Vec<u8>>, AttachError> {
            let all = self.referrers.as_ref().map(|r| r.lock().unwrap().clone());
            Ok(all
                .into_iter()
                .flatten()
                .filter(|(s, k, _)| s == subject && *k == kind)
                .map(|(_, _, m)| m)
                .collect())
        }
    }

    fn att(predicate: &str, body: &str) -> Layer {
        Layer {
            media_type: cosign::DSSE.into(),
            blob: body.as_bytes().to_vec(),
            annotations: BTreeMap::from([(cosign::PREDICATE_ANNOTATION.into(), predicate.into())]),
        }
    }

    #[test]
    fn adding_an_attestation_replaces_one_of_its_predicate_type_and_keeps_others() {
        let m = Memory::default();
        let d = format!("sha256:{}", "1".repeat(64));
        add(
            &m,
            Kind::Attestations,
            &d,
            &[att("spdx", "a"), att("slsa", "b")],
        )
        .unwrap();
        add(&m, Kind::Attestations, &d, &[att("spdx", "c")]).unwrap();
        let l = layers(&m, Kind::Attestations, &d).unwrap();
        let bodies: Vec<&[u8]> = l.iter().map(|l| l.blob.as_slice()).collect();
        assert_eq!(bodies, [b"b".as_slice(), b"c".as_slice()]);
        assert!(layers(&m, Kind::Signature, &d).unwrap().is_empty());
        // copied elsewhere whole
        let to = Memory::default();
        let copied = copy(&m, &to, &d).unwrap();
        assert_eq!(copied.keys().copied().collect::<Vec<_>>(), ["att"]);
        assert_eq!(layers(&to, Kind::Attestations, &d).unwrap(), l);
    }

    #[test]
    fn where_there_is_a_referrers_api_attachments_are_referrers_too() {
        let m = Memory {
            referrers: Some(Mutex::default()),
            ..Memory::default()
        };
        let d = format!("sha256:{}", "3".repeat(64));
        add(&m, Kind::Attestations, &d, &[att("spdx", "a")]).unwrap();
        add(&m, Kind::Attestations, &d, &[att("slsa", "b")]).unwrap();
        let listed = m.referrers(Kind::Attestations, &d).unwrap();
        assert_eq!(listed.len(), 2);
        let v: Value = serde_json::from_slice(&listed[1]).unwrap();
        assert_eq!(v["subject"]["digest"], d.as_str());
        assert_eq!(v["artifactType"], cosign::DSSE);
        assert!(m.referrers(Kind::Signature, &d).unwrap().is_empty());
        // without the tag (attached by a referrers-only tool) they are
        // still found, each once
        m.tags.lock().unwrap().clear();
        let l = layers(&m, Kind::Attestations, &d).unwrap();
        let bodies: Vec<&[u8]> = l.iter().map(|l| l.blob.as_slice()).collect();
        assert_eq!(bodies, [b"a".as_slice(), b"b".as_slice()]);
    }

    #[test]
    fn a_blob_that_does_not_match_its_digest_is_refused() {
        let m = Memory::default();
        let d = format!("sha256:{}", "2".repeat(64));
        add(&m, Kind::Attestations, &d, &[att("spdx", "a")]).unwrap();
        let digest = cosign::digest_of(b"a");
        m.blobs.lock().unwrap().insert(digest, b"A".to_vec());
        assert!(matches!(
            layers(&m, Kind::Attestations, &d),
            Err(AttachError::Mismatch { .. })
        ));
    }
}
