//! Software bills of materials: the operating-system packages of an image
//! (its dpkg database or apk database, read without running it) as SPDX
//! 2.3 JSON or CycloneDX 1.5 JSON. A VM disk's SBOM is its image's, bound to
//! the digests of the disk's files.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use kiln_packages::ImageFiles;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use crate::licence::{self, Declared};
use crate::purl;

/// The distribution an image is, from its os-release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Distro {
    /// `ID` (debian, ubuntu, alpine).
    pub id: String,
    /// `VERSION_ID` (12, 24.04, 3.20.3), when it has one.
    pub version: Option<String>,
}

impl Distro {
    /// The purl `distro` qualifier: `debian-12`.
    pub fn qualifier(&self) -> String {
        match &self.version {
            Some(v) => format!("{}-{v}", self.id),
            None => self.id.clone(),
        }
    }
}

/// One installed package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    /// `deb` or `apk`.
    pub kind: &'static str,
    pub name: String,
    pub version: String,
    pub arch: String,
    /// The source package it was built from, and its version when it
    /// differs from the package's.
    pub source: Option<(String, Option<String>)>,
    pub licences: Declared,
    pub purl: String,
}

/// What an image holds: its distribution and packages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inventory {
    pub distro: Option<Distro>,
    pub packages: Vec<Package>,
}

/// What an SBOM describes.
#[derive(Debug, Clone)]
pub struct Subject {
    /// The image's name (`app`, `registry.example/team/app`).
    pub name: String,
    pub version: String,
    /// The manifest digest (`sha256:…`) of the image (one platform's).
    pub digest: String,
    /// `linux/amd64`.
    pub platform: Option<String>,
}

/// One file of a VM disk image.
#[derive(Debug, Clone)]
pub struct DiskFile {
    pub name: String,
    /// `sha256:…`
    pub digest: String,
    pub size: u64,
}

/// A VM image made from the subject image.
#[derive(Debug, Clone)]
pub struct Disk {
    pub name: String,
    pub version: String,
    /// The VM artifact's digest (`sha256:…`).
    pub digest: String,
    pub files: Vec<DiskFile>,
}

/// Who made the document and when.
#[derive(Debug, Clone)]
pub struct Made {
    pub tool_version: String,
    pub at: DateTime<Utc>,
}

/// An image's files, read from its layers' snapshots (lowest first).
pub struct Snapshots(pub Vec<std::path::PathBuf>);

impl ImageFiles for Snapshots {
    fn read(&self, path: &str) -> Option<Vec<u8>> {
        kiln_oci::tree::read_merged(&self.0, path).ok().flatten()
    }

    fn list(&self, dir: &str) -> Vec<String> {
        kiln_oci::tree::list_merged(&self.0, dir).unwrap_or_default()
    }
}

/// The inventory of an image of the store (its snapshots unpacked when
/// they are not).
pub fn of_image(
    store: &kiln_store::Store,
    img: &kiln_store::Image,
) -> Result<Inventory, kiln_store::Error> {
    Ok(inventory(&Snapshots(store.snapshots(img)?)))
}

fn os_release(files: &dyn ImageFiles) -> Option<Distro> {
    let bytes = files
        .read("etc/os-release")
        .or_else(|| files.read("usr/lib/os-release"))?;
    let text = String::from_utf8_lossy(&bytes);
    let mut id = None;
    let mut version = None;
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim().trim_matches('"').trim_matches('\'').to_string();
        match k.trim() {
            "ID" => id = Some(v),
            "VERSION_ID" => version = Some(v),
            _ => {}
        }
    }
    Some(Distro { id: id?, version })
}

/// The packages of an image's dpkg database (`var/lib/dpkg/status`) or apk
/// database (`lib/apk/db/installed`), with the licences their copyright
/// files (Debian) or `L:` fields (Alpine) declare.
pub fn inventory(files: &dyn ImageFiles) -> Inventory {
    let distro = os_release(files);
    let qualifier = distro.as_ref().map(Distro::qualifier);
    let mut packages = Vec::new();
    if let Some(status) = files.read("var/lib/dpkg/status") {
        let namespace = distro.as_ref().map_or("debian", |d| d.id.as_str());
        let status = String::from_utf8_lossy(&status);
        for p in kiln_packages::deb::paragraphs(&status) {
            if !p.get("status").is_some_and(|s| s.ends_with(" installed")) {
                continue;
            }
            let (Some(name), Some(version)) = (p.get("package"), p.get("version")) else {
                continue;
            };
            let arch = p.get("architecture").cloned().unwrap_or_default();
            let source = p.get("source").map(|s| match s.split_once(' ') {
                Some((n, v)) => (
                    n.to_string(),
                    Some(v.trim_matches(['(', ')', ' ']).to_string()),
                ),
                None => (s.clone(), None),
            });
            let path = format!("usr/share/doc/{name}/copyright");
            let licences = files
                .read(&path)
                .map(|c| licence::debian(&String::from_utf8_lossy(&c), &format!("/{path}")))
                .unwrap_or_default();
            packages.push(Package {
                kind: "deb",
                purl: purl::package("deb", namespace, name, version, &arch, qualifier.as_deref()),
                name: name.clone(),
                version: version.clone(),
                arch,
                source,
                licences,
            });
        }
    } else if let Some(db) = files.read("lib/apk/db/installed") {
        let namespace = distro.as_ref().map_or("alpine", |d| d.id.as_str());
        for r in kiln_packages::apk::records(&String::from_utf8_lossy(&db)) {
            let get = |k: &str| r.iter().find(|(f, _)| f == k).map(|(_, v)| v.clone());
            let (Some(name), Some(version)) = (get("P"), get("V")) else {
                continue;
            };
            let arch = get("A").unwrap_or_default();
            packages.push(Package {
                kind: "apk",
                purl: purl::package(
                    "apk",
                    namespace,
                    &name,
                    &version,
                    &arch,
                    qualifier.as_deref(),
                ),
                source: get("o").filter(|o| *o != name).map(|o| (o, None)),
                licences: get("L")
                    .map(|l| licence::apk(&l, &name))
                    .unwrap_or_default(),
                name,
                version,
                arch,
            });
        }
    }
    packages.sort_by(|a, b| (&a.name, &a.arch).cmp(&(&b.name, &b.arch)));
    Inventory { distro, packages }
}

fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

/// An SPDX identifier's idstring: letters, digits, `.` and `-`.
fn spdx_safe(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' => c,
            '+' => 'p',
            _ => '-',
        })
        .collect()
}

/// The image's own package URL: `pkg:oci/NAME@sha256%3A…`.
fn image_purl(s: &Subject) -> String {
    let name = s.name.rsplit('/').next().unwrap_or(&s.name);
    let mut p = format!(
        "pkg:oci/{}@sha256%3A{}",
        name.to_ascii_lowercase(),
        hex_of(&s.digest)
    );
    if s.name.contains('/') {
        let repo: String = s
            .name
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        p.push_str(&format!("?repository_url={repo}"));
    }
    p
}

fn time(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// SPDX 2.3 JSON. The document describes the image (or, given `disk`,
/// the VM image: its files with their digests, generated from the image),
/// which contains every package.
pub fn spdx(inv: &Inventory, subject: &Subject, disk: Option<&Disk>, made: &Made) -> Value {
    let top_digest = disk.map_or(&subject.digest, |d| &d.digest);
    let top_name = disk.map_or(&subject.name, |d| &d.name);
    let top_version = disk.map_or(&subject.version, |d| &d.version);
    let mut packages = vec![spdx_image(subject)];
    let mut relationships = Vec::new();
    let mut refs: BTreeMap<String, (String, String)> = BTreeMap::new();
    let described = match disk {
        Some(d) => {
            spdx_disk(d, &mut packages, &mut relationships);
            "SPDXRef-VM"
        }
        None => "SPDXRef-Image",
    };
    relationships.insert(0, rel("SPDXRef-DOCUMENT", "DESCRIBES", described));
    for (i, p) in inv.packages.iter().enumerate() {
        let id = format!("SPDXRef-Package-{i}-{}-{}", p.kind, spdx_safe(&p.name));
        packages.push(spdx_package(&id, p));
        relationships.push(rel("SPDXRef-Image", "CONTAINS", &id));
        refs.extend(p.licences.refs.clone());
    }
    if let Some(d) = &inv.distro {
        let id = "SPDXRef-OperatingSystem";
        packages.push(json!({
            "SPDXID": id,
            "name": d.id,
            "versionInfo": d.version.clone().unwrap_or_default(),
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "primaryPackagePurpose": "OPERATING-SYSTEM",
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": "NOASSERTION",
            "copyrightText": "NOASSERTION",
        }));
        relationships.push(rel("SPDXRef-Image", "CONTAINS", id));
    }
    let mut doc = json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": format!("{top_name}:{top_version}"),
        "documentNamespace": format!(
            "https://kiln.invalid/spdx/{}/{}/sha256-{}",
            spdx_safe(top_name),
            spdx_safe(top_version),
            hex_of(top_digest)
        ),
        "creationInfo": {
            "created": time(&made.at),
            "creators": [format!("Tool: kiln-{}", made.tool_version)],
        },
        "packages": packages,
        "relationships": relationships,
    });
    if !refs.is_empty() {
        doc["hasExtractedLicensingInfos"] = refs
            .into_iter()
            .map(|(id, (name, text))| json!({"licenseId": id, "name": name, "extractedText": text}))
            .collect();
    }
    doc
}

/// The image itself, as an SPDX package.
fn spdx_image(subject: &Subject) -> Value {
    json!({
        "SPDXID": "SPDXRef-Image",
        "name": subject.name,
        "versionInfo": subject.version,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "primaryPackagePurpose": "CONTAINER",
        "checksums": [{"algorithm": "SHA256", "checksumValue": hex_of(&subject.digest)}],
        "externalRefs": [{
            "referenceCategory": "PACKAGE-MANAGER",
            "referenceType": "purl",
            "referenceLocator": image_purl(subject),
        }],
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
        "comment": format!(
            "The image manifest {}{}",
            subject.digest,
            subject.platform.as_ref().map(|p| format!(" ({p})")).unwrap_or_default()
        ),
    })
}

/// The VM image and its disk files, each generated from the image.
fn spdx_disk(d: &Disk, packages: &mut Vec<Value>, relationships: &mut Vec<Value>) {
    packages.push(json!({
        "SPDXID": "SPDXRef-VM",
        "name": d.name,
        "versionInfo": d.version,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "primaryPackagePurpose": "OPERATING-SYSTEM",
        "checksums": [{"algorithm": "SHA256", "checksumValue": hex_of(&d.digest)}],
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
        "comment": format!("The VM image artifact {}", d.digest),
    }));
    for (i, f) in d.files.iter().enumerate() {
        let id = format!("SPDXRef-Disk-{i}-{}", spdx_safe(&f.name));
        packages.push(json!({
            "SPDXID": id,
            "name": f.name,
            "packageFileName": f.name,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "primaryPackagePurpose": "FILE",
            "checksums": [{"algorithm": "SHA256", "checksumValue": hex_of(&f.digest)}],
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": "NOASSERTION",
            "copyrightText": "NOASSERTION",
            "comment": format!("{} bytes", f.size),
        }));
        relationships.push(rel("SPDXRef-VM", "CONTAINS", &id));
        relationships.push(rel(&id, "GENERATED_FROM", "SPDXRef-Image"));
    }
}

/// One operating-system package.
fn spdx_package(id: &str, p: &Package) -> Value {
    let mut pkg = json!({
        "SPDXID": id,
        "name": p.name,
        "versionInfo": p.version,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "primaryPackagePurpose": "LIBRARY",
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": p.licences.expression().unwrap_or_else(|| "NOASSERTION".into()),
        "copyrightText": "NOASSERTION",
        "externalRefs": [{
            "referenceCategory": "PACKAGE-MANAGER",
            "referenceType": "purl",
            "referenceLocator": p.purl,
        }],
    });
    if let Some((s, v)) = &p.source {
        pkg["sourceInfo"] = json!(format!(
            "built package from: {s} {}",
            v.as_deref().unwrap_or(&p.version)
        ));
    }
    if !p.arch.is_empty() {
        pkg["comment"] = json!(format!("architecture {}", p.arch));
    }
    pkg
}

fn rel(from: &str, kind: &str, to: &str) -> Value {
    json!({"spdxElementId": from, "relationshipType": kind, "relatedSpdxElement": to})
}

/// A UUID made from `seed` (so the same subject gets the same serial).
fn uuid_of(seed: &str) -> String {
    let h = Sha256::digest(seed.as_bytes());
    let mut b: [u8; 16] = h[..16].try_into().expect("16 bytes");
    b[6] = (b[6] & 0x0f) | 0x80; // version 8: a name-based UUID of our own
    b[8] = (b[8] & 0x3f) | 0x80;
    let x = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &x[..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..]
    )
}

/// CycloneDX 1.5 JSON: the image (or the VM image, with its files) as the
/// metadata's component, every package a component.
pub fn cyclonedx(inv: &Inventory, subject: &Subject, disk: Option<&Disk>, made: &Made) -> Value {
    let image = json!({
        "type": "container",
        "bom-ref": image_purl(subject),
        "name": subject.name,
        "version": subject.version,
        "purl": image_purl(subject),
        "hashes": [{"alg": "SHA-256", "content": hex_of(&subject.digest)}],
    });
    let mut components = Vec::new();
    let top = match disk {
        Some(d) => {
            components.push(image);
            for f in &d.files {
                components.push(json!({
                    "type": "file",
                    "bom-ref": format!("file:{}", f.name),
                    "name": f.name,
                    "hashes": [{"alg": "SHA-256", "content": hex_of(&f.digest)}],
                    "properties": [{"name": "kiln:size", "value": f.size.to_string()}],
                }));
            }
            json!({
                "type": "platform",
                "bom-ref": format!("vm:{}@{}", d.name, d.digest),
                "name": d.name,
                "version": d.version,
                "hashes": [{"alg": "SHA-256", "content": hex_of(&d.digest)}],
                "description": "a VM disk image made from the container image listed first",
            })
        }
        None => image,
    };
    if let Some(d) = &inv.distro {
        components.push(json!({
            "type": "operating-system",
            "bom-ref": format!("os:{}", d.qualifier()),
            "name": d.id,
            "version": d.version.clone().unwrap_or_default(),
        }));
    }
    for p in &inv.packages {
        let mut c = json!({
            "type": "library",
            "bom-ref": p.purl,
            "name": p.name,
            "version": p.version,
            "purl": p.purl,
        });
        let licences: Vec<Value> = p
            .licences
            .ids
            .iter()
            .map(|id| match p.licences.refs.get(id) {
                Some((name, _)) => json!({"license": {"name": name}}),
                None => json!({"license": {"id": id}}),
            })
            .collect();
        if !licences.is_empty() {
            c["licenses"] = Value::Array(licences);
        }
        let mut props = vec![json!({"name": "kiln:arch", "value": p.arch})];
        if let Some((s, v)) = &p.source {
            props.push(json!({"name": "kiln:source", "value": s}));
            if let Some(v) = v {
                props.push(json!({"name": "kiln:source-version", "value": v}));
            }
        }
        c["properties"] = Value::Array(props);
        components.push(c);
    }
    let digest = disk.map_or(&subject.digest, |d| &d.digest);
    json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": format!("urn:uuid:{}", uuid_of(digest)),
        "version": 1,
        "metadata": {
            "timestamp": time(&made.at),
            "tools": {"components": [{"type": "application", "name": "kiln", "version": made.tool_version}]},
            "component": top,
        },
        "components": components,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Files(BTreeMap<&'static str, &'static str>);

    impl ImageFiles for Files {
        fn read(&self, path: &str) -> Option<Vec<u8>> {
            self.0.get(path).map(|s| s.as_bytes().to_vec())
        }
        fn list(&self, _: &str) -> Vec<String> {
            vec![]
        }
    }

    fn debian() -> Files {
        Files(BTreeMap::from([
            ("etc/os-release", "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\n"),
            (
                "var/lib/dpkg/status",
                "Package: libssl3\nStatus: install ok installed\nArchitecture: amd64\nSource: openssl\nVersion: 3.0.13-1~deb12u1\n\n\
                 Package: libc6\nStatus: install ok installed\nArchitecture: amd64\nSource: glibc (2.36-9)\nVersion: 2.36-9+deb12u4\n\n\
                 Package: gone\nStatus: deinstall ok config-files\nArchitecture: amd64\nVersion: 1\n",
            ),
            (
                "usr/share/doc/libssl3/copyright",
                "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\nFiles: *\nCopyright: x\nLicense: Apache-2.0\n",
            ),
        ]))
    }

    fn subject() -> Subject {
        Subject {
            name: "app".into(),
            version: "1.0".into(),
            digest: format!("sha256:{}", "ab".repeat(32)),
            platform: Some("linux/amd64".into()),
        }
    }

    fn made() -> Made {
        Made {
            tool_version: "0.1.0".into(),
            at: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
        }
    }

    #[test]
    fn a_debian_image_lists_its_installed_packages_with_source_licence_and_purl() {
        let inv = inventory(&debian());
        assert_eq!(
            inv.distro,
            Some(Distro {
                id: "debian".into(),
                version: Some("12".into())
            })
        );
        let names: Vec<&str> = inv.packages.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["libc6", "libssl3"]);
        let ssl = &inv.packages[1];
        assert_eq!(
            ssl.purl,
            "pkg:deb/debian/libssl3@3.0.13-1~deb12u1?arch=amd64&distro=debian-12"
        );
        assert_eq!(ssl.source, Some(("openssl".into(), None)));
        assert_eq!(ssl.licences.ids, ["Apache-2.0"]);
        assert_eq!(
            inv.packages[0].source,
            Some(("glibc".into(), Some("2.36-9".into())))
        );
    }

    #[test]
    fn spdx_describes_the_image_which_contains_each_package() {
        let doc = spdx(&inventory(&debian()), &subject(), None, &made());
        assert_eq!(doc["spdxVersion"], "SPDX-2.3");
        assert_eq!(
            doc["relationships"][0]["relatedSpdxElement"],
            "SPDXRef-Image"
        );
        let ssl = doc["packages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "libssl3")
            .unwrap();
        assert_eq!(ssl["licenseDeclared"], "Apache-2.0");
        assert_eq!(
            ssl["sourceInfo"],
            "built package from: openssl 3.0.13-1~deb12u1"
        );
        assert_eq!(doc["creationInfo"]["created"], "2023-11-14T22:13:20Z");
    }

    #[test]
    fn a_vm_disk_sbom_binds_the_image_packages_to_the_disk_files() {
        let disk = Disk {
            name: "node".into(),
            version: "2".into(),
            digest: format!("sha256:{}", "cd".repeat(32)),
            files: vec![DiskFile {
                name: "disk.qcow2".into(),
                digest: format!("sha256:{}", "ef".repeat(32)),
                size: 10,
            }],
        };
        let doc = spdx(&inventory(&debian()), &subject(), Some(&disk), &made());
        assert_eq!(doc["relationships"][0]["relatedSpdxElement"], "SPDXRef-VM");
        let text = doc.to_string();
        assert!(text.contains(&"ef".repeat(32)));
        assert!(text.contains("GENERATED_FROM"));
        let cdx = cyclonedx(&inventory(&debian()), &subject(), Some(&disk), &made());
        assert_eq!(cdx["metadata"]["component"]["type"], "platform");
        assert!(cdx["serialNumber"]
            .as_str()
            .unwrap()
            .starts_with("urn:uuid:"));
    }
}
