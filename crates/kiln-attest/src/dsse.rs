//! DSSE envelopes (Dead Simple Signing Envelope): a payload, its type, and
//! signatures over the pre-authentication encoding
//! `DSSEv1 SP LEN(type) SP type SP LEN(body) SP body`.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::keys::{PrivateKey, PublicKey};

/// The payload type of in-toto statements.
pub const IN_TOTO: &str = "application/vnd.in-toto+json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    #[serde(rename = "payloadType")]
    pub payload_type: String,
    /// Base64 of the payload.
    pub payload: String,
    pub signatures: Vec<Sig>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sig {
    #[serde(default)]
    pub keyid: String,
    /// Base64 of the DER signature.
    pub sig: String,
}

/// The pre-authentication encoding.
pub fn pae(payload_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {payload_type} {} ",
        payload_type.len(),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// Why an envelope does not verify.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    #[error("the envelope is not signed")]
    Unsigned,
    #[error("its payload is not base64")]
    Payload,
    #[error("no signature in it verifies with {0} (signed by another key, or its payload was changed after signing)")]
    BadSignature(String),
}

impl Envelope {
    /// Signs `body` as `payload_type` with `key`.
    pub fn sign(payload_type: &str, body: &[u8], key: &PrivateKey) -> Self {
        Self {
            payload_type: payload_type.to_string(),
            payload: B64.encode(body),
            signatures: vec![Sig {
                keyid: key.public().id(),
                sig: B64.encode(key.sign(&pae(payload_type, body))),
            }],
        }
    }

    /// The payload, once a signature by `key` verifies over it.
    pub fn verify(&self, key: &PublicKey) -> Result<Vec<u8>, EnvelopeError> {
        if self.signatures.is_empty() {
            return Err(EnvelopeError::Unsigned);
        }
        let body = B64
            .decode(&self.payload)
            .map_err(|_| EnvelopeError::Payload)?;
        let message = pae(&self.payload_type, &body);
        let ok = self.signatures.iter().any(|s| {
            B64.decode(&s.sig)
                .is_ok_and(|der| key.verifies(&message, &der))
        });
        if ok {
            Ok(body)
        } else {
            Err(EnvelopeError::BadSignature(key.origin.clone()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pae_is_the_spec_encoding() {
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
        );
    }

    #[test]
    fn a_changed_payload_or_another_key_fails() {
        let k = PrivateKey::generate().unwrap();
        let e = Envelope::sign(IN_TOTO, b"{\"a\":1}", &k);
        assert_eq!(e.verify(&k.public()).unwrap(), b"{\"a\":1}");
        let mut t = e.clone();
        t.payload = B64.encode(b"{\"a\":2}");
        assert!(matches!(
            t.verify(&k.public()),
            Err(EnvelopeError::BadSignature(_))
        ));
        let other = PrivateKey::generate().unwrap().public();
        assert!(e.verify(&other).is_err());
        let mut u = e;
        u.signatures.clear();
        assert_eq!(u.verify(&k.public()), Err(EnvelopeError::Unsigned));
    }
}
