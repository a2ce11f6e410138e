//! What kiln says about the images it makes, so their consumers can check
//! it: software bills of materials ([`sbom`], SPDX 2.3 and CycloneDX 1.5
//! from the image's package database, licences per [`licence`], package
//! URLs per [`purl`]), ECDSA P-256 [`keys`], [`dsse`] envelopes.

pub mod dsse;
pub mod keys;
pub mod licence;
pub mod purl;
pub mod sbom;
