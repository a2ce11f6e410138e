//! Signatures and attestations stored next to an image the way cosign
//! stores them, so cosign-compatible verifiers find them:
//!
//! - the signature: cosign's "simple signing" payload (the image's
//!   repository and manifest digest) as a layer of media type
//!   `application/vnd.dev.cosign.simplesigning.v1+json`, its base64 DER
//!   signature in the layer's `dev.cosignproject.cosign/signature`
//!   annotation;
//! - attestations: DSSE envelopes of in-toto statements as layers of media
//!   type `application/vnd.dsse.envelope.v1+json`, each annotated with its
//!   `predicateType`.
//!
//! Each kind is one image manifest: under the tag `sha256-<hex>.sig` or
//! `.att` of the image's repository, or, where a registry has the OCI 1.1
//! referrers API, as a manifest whose `subject` is the image (with the
//! `artifactType` below).

use std::collections::BTreeMap;

use serde_json::{json, Value};

pub const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
pub const DSSE: &str = "application/vnd.dsse.envelope.v1+json";
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
pub const PREDICATE_ANNOTATION: &str = "predicateType";
/// The `artifactType` of a signature manifest in the referrers form.
pub const SIG_ARTIFACT: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";
pub const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const EMPTY: &str = "application/vnd.oci.empty.v1+json";

/// Which of an image's attachments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Signature,
    Attestations,
}

impl Kind {
    /// The tag suffix cosign uses.
    pub fn suffix(self) -> &'static str {
        match self {
            Kind::Signature => "sig",
            Kind::Attestations => "att",
        }
    }

    /// `sha256-<hex>.sig`: the tag of `digest`'s attachments of this kind.
    pub fn tag(self, digest: &str) -> String {
        format!("{}.{}", digest.replacen(':', "-", 1), self.suffix())
    }

    pub fn artifact_type(self) -> &'static str {
        match self {
            Kind::Signature => SIG_ARTIFACT,
            Kind::Attestations => DSSE,
        }
    }
}

/// Whether a store name's tag is an attachment's (`sha256-<hex>.sig`
/// or `.att`).
pub fn is_attachment(name: &str) -> bool {
    let tag = crate::places::split_name(name).1;
    let Some(rest) = tag.strip_prefix("sha256-") else {
        return false;
    };
    let hex = rest
        .strip_suffix(".sig")
        .or_else(|| rest.strip_suffix(".att"))
        .unwrap_or("");
    hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

/// cosign's simple signing payload for `repository` (no tag) at `digest`.
pub fn payload(repository: &str, digest: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "critical": {
            "identity": {"docker-reference": repository},
            "image": {"docker-manifest-digest": digest},
            "type": "cosign container image signature",
        },
        "optional": null,
    }))
    .expect("JSON")
}

/// The signature layer of `digest` as `repository`, signed by `key`.
pub fn signature_layer(key: &crate::keys::PrivateKey, repository: &str, digest: &str) -> Layer {
    use base64::Engine as _;
    let blob = payload(repository, digest);
    Layer {
        media_type: SIMPLE_SIGNING.into(),
        annotations: BTreeMap::from([(
            SIGNATURE_ANNOTATION.to_string(),
            base64::engine::general_purpose::STANDARD.encode(key.sign(&blob)),
        )]),
        blob,
    }
}

/// An attestation layer: `statement` (an in-toto statement of
/// `predicate_type`) in a DSSE envelope signed by `key`.
pub fn attestation_layer(
    key: &crate::keys::PrivateKey,
    predicate_type: &str,
    statement: &Value,
) -> Layer {
    let body = serde_json::to_vec(statement).expect("JSON");
    let env = crate::dsse::Envelope::sign(crate::dsse::IN_TOTO, &body, key);
    Layer {
        media_type: DSSE.into(),
        blob: serde_json::to_vec(&env).expect("JSON"),
        annotations: BTreeMap::from([(
            PREDICATE_ANNOTATION.to_string(),
            predicate_type.to_string(),
        )]),
    }
}

/// What a simple signing payload says: (repository, digest).
pub fn read_payload(bytes: &[u8]) -> Option<(String, String)> {
    let v: Value = serde_json::from_slice(bytes).ok()?;
    let c = &v["critical"];
    if c["type"] != "cosign container image signature" {
        return None;
    }
    Some((
        c["identity"]["docker-reference"].as_str()?.to_string(),
        c["image"]["docker-manifest-digest"].as_str()?.to_string(),
    ))
}

/// One layer of an attachment manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    pub media_type: String,
    pub blob: Vec<u8>,
    pub annotations: BTreeMap<String, String>,
}

impl Layer {
    pub fn digest(&self) -> String {
        digest_of(&self.blob)
    }
}

/// `sha256:HEX` of `b`, as manifests name blobs.
pub fn digest_of(b: &[u8]) -> String {
    kiln_oci::digest::sha256(b).to_string()
}

/// An attachment manifest and the blobs it names besides its layers'.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub json: Vec<u8>,
    pub config: Vec<u8>,
    pub config_media_type: String,
}

impl Manifest {
    pub fn digest(&self) -> String {
        digest_of(&self.json)
    }
}

fn descriptors(layers: &[Layer]) -> Vec<Value> {
    layers
        .iter()
        .map(|l| {
            let mut d = json!({
                "mediaType": l.media_type,
                "digest": l.digest(),
                "size": l.blob.len(),
            });
            if !l.annotations.is_empty() {
                d["annotations"] = json!(l.annotations);
            }
            d
        })
        .collect()
}

/// The manifest under the `sha256-<hex>.sig|.att` tag: cosign's form (a
/// config naming each layer as a diff id).
pub fn tag_manifest(layers: &[Layer]) -> Manifest {
    let config = serde_json::to_vec(&json!({
        "architecture": "",
        "config": {},
        "created": "0001-01-01T00:00:00Z",
        "history": [{"created": "0001-01-01T00:00:00Z"}],
        "os": "",
        "rootfs": {
            "type": "layers",
            "diff_ids": layers.iter().map(Layer::digest).collect::<Vec<_>>(),
        },
    }))
    .expect("JSON");
    let json = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": digest_of(&config),
            "size": config.len(),
        },
        "layers": descriptors(layers),
    }))
    .expect("JSON");
    Manifest {
        json,
        config,
        config_media_type: "application/vnd.oci.image.config.v1+json".into(),
    }
}

/// The OCI 1.1 form: an artifact manifest whose `subject` is the image
/// (`subject_media_type`, `subject_digest`, `subject_size`).
pub fn referrer_manifest(
    kind: Kind,
    layers: &[Layer],
    subject_media_type: &str,
    subject_digest: &str,
    subject_size: u64,
) -> Manifest {
    let config = b"{}".to_vec();
    let json = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "artifactType": kind.artifact_type(),
        "config": {"mediaType": EMPTY, "digest": digest_of(&config), "size": 2},
        "layers": descriptors(layers),
        "subject": {"mediaType": subject_media_type, "digest": subject_digest, "size": subject_size},
    }))
    .expect("JSON");
    Manifest {
        json,
        config,
        config_media_type: EMPTY.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_and_payloads_are_cosigns() {
        let d = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(
            Kind::Signature.tag(&d),
            format!("sha256-{}.sig", "ab".repeat(32))
        );
        assert_eq!(
            Kind::Attestations.tag(&d),
            format!("sha256-{}.att", "ab".repeat(32))
        );
        let p = payload("reg:5000/app", &d);
        assert_eq!(read_payload(&p), Some(("reg:5000/app".into(), d.clone())));
        let v: Value = serde_json::from_slice(&p).unwrap();
        assert_eq!(v["optional"], Value::Null);
    }

    #[test]
    fn a_tag_manifest_names_each_layer_and_its_config_lists_them() {
        let l = Layer {
            media_type: SIMPLE_SIGNING.into(),
            blob: b"x".to_vec(),
            annotations: BTreeMap::from([(SIGNATURE_ANNOTATION.into(), "c2ln".into())]),
        };
        let m = tag_manifest(std::slice::from_ref(&l));
        let v: Value = serde_json::from_slice(&m.json).unwrap();
        assert_eq!(v["layers"][0]["digest"], l.digest());
        assert_eq!(v["layers"][0]["annotations"][SIGNATURE_ANNOTATION], "c2ln");
        let c: Value = serde_json::from_slice(&m.config).unwrap();
        assert_eq!(c["rootfs"]["diff_ids"][0], l.digest());
        let r = referrer_manifest(Kind::Signature, &[l], MANIFEST, "sha256:00", 7);
        let v: Value = serde_json::from_slice(&r.json).unwrap();
        assert_eq!(v["subject"]["size"], 7);
        assert_eq!(v["artifactType"], SIG_ARTIFACT);
    }
}
