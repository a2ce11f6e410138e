//! ECDSA P-256 keys, what cosign's key-based mode and most verifiers
//! accept: private keys as PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`; an
//! OpenSSL SEC1 `EC PRIVATE KEY` is read too), public keys as SPKI PEM
//! (`-----BEGIN PUBLIC KEY-----`, what `cosign verify --key` reads).
//! Signatures are ASN.1 DER over SHA-256.

use p256::ecdsa::signature::{Signer as _, Verifier as _};
use p256::ecdsa::{DerSignature, Signature, SigningKey, VerifyingKey};
use p256::elliptic_curve::Generate as _;
use p256::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding,
};
use sha2::{Digest as _, Sha256};

/// What is wrong with a key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{0}: not an ECDSA P-256 private key in PEM (PKCS#8 `PRIVATE KEY` or SEC1 `EC PRIVATE KEY`; an encrypted cosign key must be exported first)")]
    Private(String),
    #[error("{0}: not an ECDSA P-256 public key in PEM (`PUBLIC KEY`)")]
    Public(String),
    #[error("making a key: {0}")]
    Generate(String),
}

/// A private key, and where it came from (for messages).
pub struct PrivateKey {
    key: SigningKey,
    pub origin: String,
}

/// A public key, and where it came from.
#[derive(Clone)]
pub struct PublicKey {
    key: VerifyingKey,
    pub origin: String,
}

impl PrivateKey {
    /// A new random key.
    pub fn generate() -> Result<Self, KeyError> {
        let key = SigningKey::try_generate().map_err(|e| KeyError::Generate(e.to_string()))?;
        Ok(Self {
            key,
            origin: "new key".into(),
        })
    }

    /// Reads a PEM text; `origin` names it in errors.
    pub fn from_pem(pem: &str, origin: &str) -> Result<Self, KeyError> {
        let key = SigningKey::from_pkcs8_pem(pem.trim())
            .ok()
            .or_else(|| {
                p256::SecretKey::from_sec1_pem(pem.trim())
                    .ok()
                    .map(SigningKey::from)
            })
            .ok_or_else(|| KeyError::Private(origin.to_string()))?;
        Ok(Self {
            key,
            origin: origin.to_string(),
        })
    }

    /// PKCS#8 PEM.
    pub fn to_pem(&self) -> String {
        self.key
            .to_pkcs8_pem(LineEnding::LF)
            .map(|p| p.to_string())
            .expect("a P-256 key encodes")
    }

    pub fn public(&self) -> PublicKey {
        PublicKey {
            key: *self.key.verifying_key(),
            origin: self.origin.clone(),
        }
    }

    /// The DER signature of `message` (ECDSA P-256 over its SHA-256).
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        let sig: Signature = self.key.sign(message);
        sig.to_der().as_bytes().to_vec()
    }
}

impl PublicKey {
    pub fn from_pem(pem: &str, origin: &str) -> Result<Self, KeyError> {
        let key = VerifyingKey::from_public_key_pem(pem.trim())
            .map_err(|_| KeyError::Public(origin.to_string()))?;
        Ok(Self {
            key,
            origin: origin.to_string(),
        })
    }

    /// SPKI PEM.
    pub fn to_pem(&self) -> String {
        self.key
            .to_public_key_pem(LineEnding::LF)
            .expect("a P-256 key encodes")
    }

    /// The hex SHA-256 of its SPKI DER: the `keyid` of kiln's DSSE
    /// signatures.
    pub fn id(&self) -> String {
        let der = self.key.to_public_key_der().expect("a P-256 key encodes");
        hex::encode(Sha256::digest(der.as_bytes()))
    }

    /// Whether `der` is this key's signature of `message`.
    pub fn verifies(&self, message: &[u8], der: &[u8]) -> bool {
        DerSignature::try_from(der)
            .ok()
            .and_then(|d| Signature::try_from(d).ok())
            .is_some_and(|sig| self.key.verify(message, &sig).is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_signs_and_its_public_half_from_pem_verifies() {
        let k = PrivateKey::generate().unwrap();
        let again = PrivateKey::from_pem(&k.to_pem(), "k.pem").unwrap();
        let public = PublicKey::from_pem(&k.public().to_pem(), "k.pub").unwrap();
        let sig = again.sign(b"hello");
        assert!(public.verifies(b"hello", &sig));
        assert!(!public.verifies(b"hellO", &sig));
        let other = PrivateKey::generate().unwrap().public();
        assert!(!other.verifies(b"hello", &sig));
        assert_eq!(public.id(), k.public().id());
        assert_eq!(public.id().len(), 64);
    }

    #[test]
    fn bad_pem_names_its_origin() {
        let e = PrivateKey::from_pem("nope", "keys/k.pem").err().unwrap();
        assert!(e
            .to_string()
            .starts_with("keys/k.pem: not an ECDSA P-256 private key"));
        let e = PublicKey::from_pem("nope", "k.pub").err().unwrap();
        assert!(e.to_string().contains("k.pub"));
    }
}
