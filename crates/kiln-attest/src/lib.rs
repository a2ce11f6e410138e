//! What kiln says about the images it makes, so their consumers can check
//! it: software bills of materials ([`sbom`], SPDX 2.3 and CycloneDX 1.5
//! from the image's package database, licences per [`licence`], package
//! URLs per [`purl`]), SLSA [`provenance`] as in-toto statements, ECDSA
//! P-256 [`keys`], [`dsse`] envelopes, the [`cosign`] layout of signatures
//! and attestations next to an image, where they are kept ([`attach`], at the [`places`]: the store, a registry) and
//! how they are checked ([`verify`]).

pub mod attach;
pub mod cosign;
pub mod disk;
pub mod dsse;
pub mod keys;
pub mod licence;
pub mod places;
pub mod provenance;
pub mod purl;
pub mod sbom;
pub mod verify;
