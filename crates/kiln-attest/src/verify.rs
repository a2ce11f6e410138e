//! Checking what is attached to an image digest against a public key: its
//! signature, each attestation's signature, and that every attestation
//! names this exact digest. Each finding says what was checked and, when
//! it failed, why.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::Value;

use crate::attach::{layers, Place};
use crate::cosign::{self, Kind};
use crate::dsse::{Envelope, EnvelopeError};
use crate::keys::PublicKey;
use crate::provenance::{SLSA, STATEMENT};

/// The SPDX predicate type (cosign's and BuildKit's).
pub const SPDX: &str = "https://spdx.dev/Document";
/// The CycloneDX predicate type.
pub const CYCLONEDX: &str = "https://cyclonedx.org/bom";

/// What `--require` can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    Sbom,
    Provenance,
}

impl Need {
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "sbom" => Some(Need::Sbom),
            "provenance" => Some(Need::Provenance),
            _ => None,
        }
    }

    fn met_by(self, predicate: &str) -> bool {
        match self {
            Need::Sbom => predicate == SPDX || predicate == CYCLONEDX,
            Need::Provenance => predicate == SLSA,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Need::Sbom => "an SBOM",
            Need::Provenance => "provenance",
        }
    }
}

/// One check and its result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// What was checked (`signature`, `attestation https://spdx.dev/Document`).
    pub what: String,
    /// `None`: it passed; else why not.
    pub failure: Option<String>,
}

impl Finding {
    fn ok(what: impl Into<String>) -> Self {
        Self {
            what: what.into(),
            failure: None,
        }
    }
    fn failed(what: impl Into<String>, why: impl Into<String>) -> Self {
        Self {
            what: what.into(),
            failure: Some(why.into()),
        }
    }
}

/// Every finding for `digest` at `place` with `key`, requiring `needs`.
/// The image verifies when none failed.
pub fn verify(place: &dyn Place, digest: &str, key: &PublicKey, needs: &[Need]) -> Vec<Finding> {
    let mut out = vec![signature(place, digest, key)];
    let mut met: Vec<String> = Vec::new();
    match layers(place, Kind::Attestations, digest) {
        Err(e) => out.push(Finding::failed("attestations", e.to_string())),
        Ok(list) => {
            for l in list.iter().filter(|l| l.media_type == cosign::DSSE) {
                let annotated = l
                    .annotations
                    .get(cosign::PREDICATE_ANNOTATION)
                    .cloned()
                    .unwrap_or_default();
                let f = attestation(&l.blob, &annotated, digest, key);
                if f.failure.is_none() {
                    met.push(annotated.clone());
                }
                out.push(f);
            }
        }
    }
    for n in needs {
        if !met.iter().any(|p| n.met_by(p)) {
            out.push(Finding::failed(
                format!("required {}", n.name()),
                format!(
                    "no attestation of {} signed by {} names {digest}",
                    n.name(),
                    key.origin
                ),
            ));
        }
    }
    out
}

/// The signature check alone (what `verify_bases` asks of a base).
pub fn signature(place: &dyn Place, digest: &str, key: &PublicKey) -> Finding {
    let what = "signature";
    let list = match layers(place, Kind::Signature, digest) {
        Ok(l) => l,
        Err(e) => return Finding::failed(what, e.to_string()),
    };
    let signed: Vec<_> = list
        .iter()
        .filter(|l| l.media_type == cosign::SIMPLE_SIGNING)
        .collect();
    if signed.is_empty() {
        return Finding::failed(
            what,
            format!(
                "unsigned: {} has no signature for {digest} (tag {})",
                place.describe(),
                Kind::Signature.tag(digest)
            ),
        );
    }
    let mut why = Vec::new();
    for l in signed {
        let Some(sig) = l
            .annotations
            .get(cosign::SIGNATURE_ANNOTATION)
            .and_then(|s| B64.decode(s).ok())
        else {
            why.push("a signature layer without its signature annotation".to_string());
            continue;
        };
        match cosign::read_payload(&l.blob) {
            None => why.push("a signature payload that is not cosign's simple signing JSON (tampered)".into()),
            Some((_, d)) if d != digest => why.push(format!(
                "a signature for another digest ({d}), not {digest}"
            )),
            Some(_) if key.verifies(&l.blob, &sig) => return Finding::ok(what),
            Some(_) => why.push(format!(
                "a signature that does not verify with {} (signed by another key, or its payload was changed after signing)",
                key.origin
            )),
        }
    }
    Finding::failed(what, why.join("; "))
}

fn attestation(blob: &[u8], annotated: &str, digest: &str, key: &PublicKey) -> Finding {
    let what = format!("attestation {annotated}");
    let Ok(env) = serde_json::from_slice::<Envelope>(blob) else {
        return Finding::failed(what, "not a DSSE envelope");
    };
    let body = match env.verify(key) {
        Ok(b) => b,
        Err(EnvelopeError::BadSignature(_)) => {
            let same_key = env.signatures.iter().any(|s| s.keyid == key.id());
            return Finding::failed(
                what,
                if same_key {
                    format!(
                        "its payload was changed after it was signed (the signature by {} does not match it)",
                        key.origin
                    )
                } else {
                    format!("signed by another key, not {}", key.origin)
                },
            );
        }
        Err(e) => return Finding::failed(what, e.to_string()),
    };
    let Ok(statement) = serde_json::from_slice::<Value>(&body) else {
        return Finding::failed(what, "its payload is not JSON");
    };
    if statement["_type"] != STATEMENT {
        return Finding::failed(what, "its payload is not an in-toto Statement v1");
    }
    if statement["predicateType"] != annotated {
        return Finding::failed(
            what,
            format!(
                "its statement's predicate type {} is not the one its layer announces",
                statement["predicateType"]
            ),
        );
    }
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    let subjects: Vec<&str> = statement["subject"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s["digest"]["sha256"].as_str())
                .collect()
        })
        .unwrap_or_default();
    if !subjects.contains(&hex) {
        return Finding::failed(
            what,
            format!(
                "it is about another image: its subject is sha256:{}, not {digest}",
                subjects.first().copied().unwrap_or("(none)")
            ),
        );
    }
    Finding::ok(what)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attach::{add, tests::Memory};
    use crate::cosign::Layer;
    use crate::keys::PrivateKey;
    use crate::provenance::{statement, Named};

    fn digest(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    fn sign(m: &Memory, key: &PrivateKey, about: &str, at: &str) {
        add(
            m,
            Kind::Signature,
            at,
            &[cosign::signature_layer(key, "reg/app", about)],
        )
        .unwrap();
    }

    fn attest(m: &Memory, key: &PrivateKey, about: &str, at: &str, predicate: &str) {
        let s = statement(
            &[Named {
                name: "reg/app".into(),
                digest: about.into(),
            }],
            predicate,
            serde_json::json!({"x": 1}),
        );
        let l = cosign::attestation_layer(key, predicate, &s);
        add(m, Kind::Attestations, at, &[l]).unwrap();
    }

    fn failures(f: &[Finding]) -> Vec<String> {
        f.iter().filter_map(|f| f.failure.clone()).collect()
    }

    #[test]
    fn a_signed_and_attested_digest_verifies_and_each_fault_is_named() {
        let key = PrivateKey::generate().unwrap();
        let public = key.public();
        let (d, other) = (digest('a'), digest('b'));
        let m = Memory::default();
        let needs = [Need::Sbom, Need::Provenance];
        // unsigned
        let f = failures(&verify(&m, &d, &public, &needs));
        assert!(f[0].starts_with("unsigned"), "{f:?}");
        assert_eq!(f.len(), 3, "{f:?}");
        sign(&m, &key, &d, &d);
        attest(&m, &key, &d, &d, SPDX);
        attest(&m, &key, &d, &d, SLSA);
        assert_eq!(
            failures(&verify(&m, &d, &public, &needs)),
            Vec::<String>::new()
        );
        // another key
        let stranger = PrivateKey::generate().unwrap().public();
        let f = failures(&verify(&m, &d, &stranger, &[]));
        assert!(f[0].contains("signed by another key"), "{f:?}");
        assert!(f[1].contains("signed by another key"), "{f:?}");
        // an attestation about another digest
        attest(&m, &key, &other, &d, SLSA);
        let f = failures(&verify(&m, &d, &public, &[]));
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(f[0].contains("about another image"), "{f:?}");
        // a signature for another digest
        let n = Memory::default();
        sign(&n, &key, &other, &d);
        let f = failures(&verify(&n, &d, &public, &[]));
        assert!(f[0].contains("for another digest"), "{f:?}");
    }

    #[test]
    fn a_changed_attestation_payload_is_named_as_changed() {
        let key = PrivateKey::generate().unwrap();
        let d = digest('c');
        let m = Memory::default();
        sign(&m, &key, &d, &d);
        attest(&m, &key, &d, &d, SPDX);
        let l = layers(&m, Kind::Attestations, &d).unwrap();
        let mut env: Envelope = serde_json::from_slice(&l[0].blob).unwrap();
        let mut body = B64.decode(&env.payload).unwrap();
        let i = body.len() - 3;
        body[i] ^= 1; // one byte
        env.payload = B64.encode(body);
        let tampered = Layer {
            blob: serde_json::to_vec(&env).unwrap(),
            ..l[0].clone()
        };
        add(&m, Kind::Attestations, &d, &[tampered]).unwrap();
        let f = failures(&verify(&m, &d, &key.public(), &[]));
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(f[0].contains("payload was changed"), "{f:?}");
    }
}
