//! `kiln key generate`, `kiln sbom`, `kiln verify`: kiln-attest from the
//! command line.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use chrono::{DateTime, Utc};
use kiln_attest::attach::Place;
use kiln_attest::keys::{PrivateKey, PublicKey};
use kiln_attest::places::{split_name, RegistryPlace, StorePlace};
use kiln_attest::sbom::{self, Disk, Inventory, Made, Subject};
use kiln_attest::verify::{Finding, Need};
use kiln_registry::{Client, Reference};
use kiln_store::Store;
use kiln_vm::kept::Kept;

use crate::args::{KeyGenerateArgs, SbomArgs, VerifyArgs};
use crate::exit::{Exit, Failure};
use crate::printer::Printer;

/// Writes `text` to a new file `path` with `mode`; an existing one stays.
fn create(path: &Path, text: &str, mode: u32) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| {
            Failure::failed(format!(
                "{}: {e}{}",
                path.display(),
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    " (kiln does not replace a key; remove it or choose another --output)"
                } else {
                    ""
                }
            ))
        })?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    Ok(())
}

pub fn key_generate(args: KeyGenerateArgs, printer: &Printer) -> anyhow::Result<Exit> {
    let private = args.prefix.with_extension("key");
    let public = args.prefix.with_extension("pub");
    for p in [&private, &public] {
        if p.exists() {
            return Err(Failure::failed(format!(
                "{} exists (kiln does not replace a key; remove it or choose another --output)",
                p.display()
            )));
        }
    }
    let key = PrivateKey::generate()?;
    create(&private, &key.to_pem(), 0o600)?;
    create(&public, &key.public().to_pem(), 0o644)?;
    printer.error(&format!(
        "wrote {} (keep it secret) and {} (ECDSA P-256, key id {})",
        private.display(),
        public.display(),
        key.public().id()
    ));
    Ok(Exit::Success)
}

pub fn sbom(args: SbomArgs, store: &Store, printer: &Printer) -> anyhow::Result<Exit> {
    if !matches!(args.format.as_str(), "spdx" | "cyclonedx") {
        return Err(Failure::usage(format!(
            "--format {:?}: use spdx or cyclonedx",
            args.format
        )));
    }
    let (inventory, subject, disk, at) = match kept_vm(store, &args.image) {
        Some(kept) => vm_sbom(store, &kept)?,
        None => image_sbom(store, &args)?,
    };
    let made = Made {
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        at,
    };
    let doc = match args.format.as_str() {
        "spdx" => sbom::spdx(&inventory, &subject, disk.as_ref(), &made),
        _ => sbom::cyclonedx(&inventory, &subject, disk.as_ref(), &made),
    };
    printer.data(&serde_json::to_string_pretty(&doc)?);
    Ok(Exit::Success)
}

type Described = (Inventory, Subject, Option<Disk>, DateTime<Utc>);

/// A container image's SBOM parts (made when the image was).
fn image_sbom(store: &Store, args: &SbomArgs) -> anyhow::Result<Described> {
    let img = super::image_for(store, &args.image, args.platform.as_deref())?;
    let inventory = sbom::of_image(store, &img)?;
    let full = store.lookup(&args.image)?.0;
    let (name, tag) = split_name(&full);
    let subject = Subject {
        name: name.to_string(),
        version: tag.to_string(),
        digest: img.manifest_digest.to_string(),
        platform: Some(img.config.platform().to_string()),
    };
    let at = img
        .config
        .created
        .as_deref()
        .and_then(|c| DateTime::parse_from_rfc3339(c).ok())
        .map_or_else(Utc::now, |t| t.with_timezone(&Utc));
    Ok((inventory, subject, None, at))
}

/// The kept VM image `reference` names, when it names no store image.
fn kept_vm(store: &Store, reference: &str) -> Option<Kept> {
    if reference.starts_with("docker://") || store.lookup(reference).is_ok() {
        return None;
    }
    kiln_vm::kept::find(store.root(), reference).ok()
}

/// The artifact manifest of a kept VM image.
fn vm_manifest(kept: &Kept) -> anyhow::Result<(Vec<u8>, std::fs::Metadata)> {
    let path = kept.dir.join(kiln_vm::kept::ARTIFACT_MANIFEST);
    let bytes = std::fs::read(&path).map_err(|e| {
        Failure::failed(format!(
            "{}:{}: {}: {e} (kept by an older kiln: bake it again)",
            kept.name,
            kept.version,
            path.display()
        ))
    })?;
    let meta = std::fs::metadata(&path)?;
    Ok((bytes, meta))
}

/// A VM disk's SBOM parts: its image's, bound to its disk files.
fn vm_sbom(store: &Store, kept: &Kept) -> anyhow::Result<Described> {
    let (manifest, meta) = vm_manifest(kept)?;
    let image_name = split_name(&kept.image).0;
    let (inventory, subject) =
        kiln_attest::disk::source(store, &kept.image, image_name, Some(&kept.image_digest))?;
    let disk = kiln_attest::disk::disk(&kept.name, &kept.version, &manifest)?;
    let at = meta.modified().map(DateTime::<Utc>::from)?;
    Ok((inventory, subject, Some(disk), at))
}

/// The digests to check for `bytes` (a manifest, or an index and each of
/// its manifests) with what each must carry.
fn subjects(top: &str, bytes: &[u8], needs: &[Need]) -> Vec<(String, Vec<Need>)> {
    let mut out = vec![(top.to_string(), needs.to_vec())];
    if let Ok(index) = serde_json::from_slice::<kiln_oci::image::Index>(bytes) {
        if !index.manifests.is_empty() {
            // an index: its provenance at the top, each platform's SBOM with it
            out[0].1.retain(|n| *n != Need::Sbom);
            let platform_needs: Vec<Need> =
                needs.iter().copied().filter(|n| *n == Need::Sbom).collect();
            for m in index.manifests {
                out.push((m.digest, platform_needs.clone()));
            }
        }
    }
    out
}

pub fn verify(
    args: VerifyArgs,
    store: &Store,
    client: &Client,
    printer: &Printer,
) -> anyhow::Result<Exit> {
    let needs = args
        .require
        .iter()
        .filter(|r| !r.trim().is_empty())
        .map(|r| {
            Need::parse(r).ok_or_else(|| {
                Failure::usage(format!("--require {r:?}: use sbom and/or provenance"))
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let pem = std::fs::read_to_string(&args.key)
        .map_err(|e| Failure::usage(format!("--key {}: {e}", args.key.display())))?;
    let key = PublicKey::from_pem(&pem, &args.key.display().to_string())?;
    let in_store = (!args.image.starts_with("docker://"))
        .then(|| store.lookup(&args.image).ok())
        .flatten();
    // a kept VM image is looked for only when no store image has the name
    let kept = match in_store {
        Some(_) => None,
        None => kept_vm(store, &args.image),
    };
    let (place, top, bytes): (Box<dyn Place + '_>, String, Vec<u8>) = match (in_store, kept) {
        (Some((name, desc)), _) => {
            let bytes = store.read_blob(&kiln_store::parse_digest(&desc.digest)?)?;
            (Box::new(StorePlace::of(store, &name)), desc.digest, bytes)
        }
        // a VM artifact is one manifest (no index): its digest is kept
        (None, Some(kept)) => {
            let name = format!("{}:{}", kept.name, kept.version);
            (
                Box::new(StorePlace::of(store, &name)),
                kept.digest,
                Vec::new(),
            )
        }
        (None, None) => {
            let text = args.image.trim_start_matches("docker://");
            let r = Reference::parse(text).map_err(|e| Failure::usage(e.to_string()))?;
            let (bytes, _) = client
                .get_manifest(&r)
                .map_err(|e| Failure::failed(format!("{text}: {e}")))?;
            let digest = kiln_oci::digest::sha256(&bytes).to_string();
            (Box::new(RegistryPlace { client, repo: r }), digest, bytes)
        }
    };
    let mut failed = false;
    for (digest, needs) in subjects(&top, &bytes, &needs) {
        let findings = kiln_attest::verify::verify(place.as_ref(), &digest, &key, &needs);
        for Finding { what, failure } in &findings {
            match failure {
                None => printer.data(&format!("ok      {digest} {what}")),
                Some(why) => {
                    failed = true;
                    printer.data(&format!("FAILED  {digest} {what}: {why}"));
                }
            }
        }
    }
    if failed {
        printer.error(&format!(
            "{}: not verified with {}",
            args.image,
            args.key.display()
        ));
        return Ok(Exit::Failure);
    }
    printer.error(&format!(
        "{}: verified with {} ({})",
        args.image,
        args.key.display(),
        place.describe()
    ));
    Ok(Exit::Success)
}
