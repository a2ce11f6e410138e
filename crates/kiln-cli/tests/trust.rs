//! Trust as a consumer checks it: a factory baked with `[factory] sign`
//! on a real Debian image, its SBOM validated by the SPDX project's own
//! validator and the CycloneDX 1.5 schema and compared with what dpkg says
//! inside the image, its signature and attestations checked from a real
//! registry by `kiln verify` and independently (Python's `cryptography`
//! over DSSE's encoding and cosign's payload), each kind of tampering
//! named, secrets absent, and `verify_bases` stopping a bake on an
//! unsigned base.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::registry::{skopeo, Registry};
use common::*;

const SECRET: &str = "s3cr3t-value-that-must-not-leak";

/// A Debian bookworm minbase root filesystem (mmdebstrap, once per machine).
fn debian_rootfs() -> PathBuf {
    mmdebstrap_fixture("bookworm-minbase.tar", &["--variant=minbase"])
}

fn python(args: &[&str]) -> std::process::Output {
    Command::new(common::web::test_python())
        .args(args)
        .output()
        .expect("the test venv's python")
}

fn lock(f: &Path) -> serde_json::Value {
    let text = fs::read_to_string(f.join("kiln.lock")).unwrap();
    serde_json::to_value(toml::from_str::<toml::Value>(&text).unwrap()).unwrap()
}

/// `NAME  VERSION  ARCH` lines, sorted.
fn package_set(lines: impl Iterator<Item = String>) -> BTreeSet<String> {
    lines.filter(|l| !l.trim().is_empty()).collect()
}

#[test]
fn a_signed_bake_carries_an_sbom_and_provenance_that_independent_tools_accept() {
    need(&["docker-registry", "skopeo", "mmdebstrap"]);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let reg = Registry::start(dir.path());
    let f = dir.path().join("factory");
    let ctx = f.join("deb");
    fs::create_dir_all(&ctx).unwrap();
    fs::hard_link(debian_rootfs(), ctx.join("rootfs.tar"))
        .or_else(|_| fs::copy(debian_rootfs(), ctx.join("rootfs.tar")).map(drop))
        .unwrap();
    let dockerfile = |marker: &str| {
        format!(
            "FROM scratch\nADD rootfs.tar /\n\
             RUN --mount=type=secret,id=token test \"$(cut -c1-6 /run/secrets/token)\" = \"{}\" \
             && echo {marker} > /built\n",
            &SECRET[..6]
        )
    };
    fs::write(ctx.join("Dockerfile"), dockerfile("one")).unwrap();
    fs::write(f.join("token.txt"), SECRET).unwrap();
    fs::write(
        f.join("kiln.toml"),
        format!(
            "kiln = 1\n[factory]\nregistry = \"{}/trust\"\nsign = {{ key = \"kiln.key\" }}\n\
             [image.deb]\ncontext = \"deb\"\nsecrets = {{ token = \"token.txt\" }}\n\
             test = [\"test -f /built\"]\n",
            reg.addr
        ),
    )
    .unwrap();
    let fs_ = f.to_str().unwrap();

    // kiln key generate: a private key only its owner reads, never replaced
    let prefix = f.join("kiln");
    ok(kiln(
        &store,
        &["key", "generate", "-o", prefix.to_str().unwrap()],
    ));
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(f.join("kiln.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let again = kiln(&store, &["key", "generate", "-o", prefix.to_str().unwrap()]);
    assert_eq!(again.code, 1, "{}", again.stderr);
    assert!(again.stderr.contains("exists"), "{}", again.stderr);
    let public = f.join("kiln.pub");
    let pub_ = public.to_str().unwrap();

    ok(kiln(&store, &["bake", "-f", fs_]));
    let l = lock(&f);
    let entry = &l["image"]["deb"];
    let (version, digest) = (
        entry["version"].as_str().unwrap().to_string(),
        entry["digest"].as_str().unwrap().to_string(),
    );
    let hex = digest.trim_start_matches("sha256:");
    let attachments = entry["attachments"].as_object().unwrap();
    assert!(
        attachments.contains_key(&format!("sha256-{hex}.sig")),
        "{l}"
    );
    assert!(
        attachments.contains_key(&format!("sha256-{hex}.att")),
        "{l}"
    );
    // the lock's digests are those the registry serves
    let sig_manifest = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{}/trust/deb:sha256-{hex}.sig", reg.addr),
    ]);
    assert_eq!(
        kiln_oci::digest::sha256(sig_manifest.as_bytes()).to_string(),
        attachments[&format!("sha256-{hex}.sig")].as_str().unwrap()
    );

    // kiln verify, from the registry and from the store
    let remote = format!("{}/trust/deb:{version}", reg.addr);
    let out = ok(kiln(
        &store,
        &[
            "verify",
            &remote,
            "--key",
            pub_,
            "--require",
            "sbom,provenance",
        ],
    ));
    assert!(!out.stdout.contains("FAILED"), "{}", out.stdout);
    assert!(
        out.stdout.contains("https://spdx.dev/Document"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("https://slsa.dev/provenance/v1"),
        "{}",
        out.stdout
    );
    ok(kiln(
        &store,
        &[
            "verify",
            &format!("deb:{version}"),
            "--key",
            pub_,
            "--require",
            "sbom,provenance",
        ],
    ));

    // kiln save carries them: the archive's index names both
    let archive = dir.path().join("deb.tar");
    ok(kiln(
        &store,
        &[
            "save",
            &format!("deb:{version}"),
            "-o",
            archive.to_str().unwrap(),
        ],
    ));
    let mut tar = tar::Archive::new(fs::File::open(&archive).unwrap());
    let index: serde_json::Value = tar
        .entries()
        .unwrap()
        .filter_map(|e| e.ok())
        .find(|e| e.path().unwrap().to_str() == Some("index.json"))
        .map(|e| serde_json::from_reader(e).unwrap())
        .unwrap();
    let names: BTreeSet<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["annotations"]["org.opencontainers.image.ref.name"].as_str())
        .collect();
    assert!(
        names.contains(format!("sha256-{hex}.sig").as_str()),
        "{index}"
    );
    assert!(
        names.contains(format!("sha256-{hex}.att").as_str()),
        "{index}"
    );
    // kiln images lists the image, not its attachments
    let images = ok(kiln(&store, &["images"])).stdout;
    assert!(images.contains(&format!("deb:{version}")), "{images}");
    assert!(!images.contains(".sig"), "{images}");

    // the SBOM: the SPDX project's validator, the CycloneDX schema, and
    // the packages dpkg lists inside the image
    let spdx = ok(kiln(&store, &["sbom", &format!("deb:{version}")])).stdout;
    let spdx_file = dir.path().join("deb.spdx.json");
    fs::write(&spdx_file, &spdx).unwrap();
    let validator = Path::new(&common::web::test_python()).with_file_name("pyspdxtools");
    let v = Command::new(&validator)
        .arg("-i")
        .arg(&spdx_file)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&v.stdout),
        String::from_utf8_lossy(&v.stderr)
    );
    assert!(v.status.success(), "pyspdxtools: {said}");
    assert!(
        !said.to_lowercase().contains("error"),
        "pyspdxtools: {said}"
    );
    let cdx = ok(kiln(
        &store,
        &["sbom", &format!("deb:{version}"), "--format", "cyclonedx"],
    ))
    .stdout;
    let cdx_file = dir.path().join("deb.cdx.json");
    fs::write(&cdx_file, &cdx).unwrap();
    let v = python(&[
        "-c",
        "import sys\n\
         from cyclonedx.schema import SchemaVersion\n\
         from cyclonedx.validation.json import JsonStrictValidator\n\
         e = JsonStrictValidator(SchemaVersion.V1_5).validate_str(open(sys.argv[1]).read())\n\
         sys.exit(str(e) if e else 0)\n",
        cdx_file.to_str().unwrap(),
    ]);
    assert!(
        v.status.success(),
        "CycloneDX 1.5 schema: {}",
        String::from_utf8_lossy(&v.stderr)
    );
    let doc: serde_json::Value = serde_json::from_str(&spdx).unwrap();
    let from_sbom = package_set(
        doc["packages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| {
                p["SPDXID"]
                    .as_str()
                    .unwrap()
                    .starts_with("SPDXRef-Package-")
            })
            .map(|p| {
                let purl = p["externalRefs"][0]["referenceLocator"].as_str().unwrap();
                let arch = purl
                    .split("arch=")
                    .nth(1)
                    .unwrap()
                    .split('&')
                    .next()
                    .unwrap();
                format!(
                    "{} {} {arch}",
                    p["name"].as_str().unwrap(),
                    p["versionInfo"].as_str().unwrap()
                )
            }),
    );
    let dpkg = ok(kiln(
        &store,
        &[
            "run",
            &format!("deb:{version}"),
            "--",
            "dpkg-query",
            "-W",
            "-f",
            "${Package} ${Version} ${Architecture}\\n",
        ],
    ))
    .stdout;
    let from_dpkg = package_set(dpkg.lines().map(str::to_string));
    assert!(from_dpkg.len() > 50, "{dpkg}");
    assert_eq!(from_sbom, from_dpkg);
    assert!(
        spdx.contains("pkg:deb/debian/dpkg@") && spdx.contains("distro=debian-12"),
        "package URLs"
    );

    // independently: cryptography over DSSE's encoding and cosign's payload
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/common/trust.py");
    let script = script.to_str().unwrap();
    let checked = python(&[script, "check", &reg.addr, "trust/deb", &digest, pub_]);
    assert!(
        checked.status.success(),
        "independent check: {}",
        String::from_utf8_lossy(&checked.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&checked.stdout).unwrap();
    assert_eq!(report["signed"], true);
    let kinds: BTreeSet<&str> = report["attestations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            assert_eq!(a["subjects"][0], hex, "each attestation names this digest");
            a["predicateType"].as_str().unwrap()
        })
        .collect();
    assert_eq!(
        kinds,
        BTreeSet::from([
            "https://slsa.dev/provenance/v1",
            "https://spdx.dev/Document"
        ])
    );
    // secrets: the id is recorded, never the value, in any attachment
    let everything = String::from_utf8_lossy(&checked.stdout).into_owned();
    assert!(!everything.contains(SECRET));
    let provenance = report["attestations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["predicateType"] == "https://slsa.dev/provenance/v1")
        .unwrap()["payload"]
        .as_str()
        .unwrap()
        .to_string();
    let prov: serde_json::Value = serde_json::from_str(&provenance).unwrap();
    let params = &prov["predicate"]["buildDefinition"]["externalParameters"];
    assert_eq!(params["secrets"], serde_json::json!(["token"]), "{prov}");
    assert!(
        prov["predicate"]["buildDefinition"]["resolvedDependencies"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["name"] == "context"),
        "{prov}"
    );
    for (path, blob) in store_blobs(&store) {
        assert!(
            !blob.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
            "the store's blob {} holds the secret",
            path.display()
        );
    }

    // tampering, each named
    // a signature from another key
    ok(kiln(
        &store,
        &["key", "generate", "-o", f.join("other").to_str().unwrap()],
    ));
    let other = f.join("other.pub");
    let out = kiln(
        &store,
        &["verify", &remote, "--key", other.to_str().unwrap()],
    );
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(
        out.stdout.contains("signed by another key"),
        "{}",
        out.stdout
    );
    // an attestation pointed at another digest: a second version's,
    // copied under this one's tag
    fs::write(ctx.join("Dockerfile"), dockerfile("two")).unwrap();
    ok(kiln(&store, &["bake", "-f", fs_]));
    let l2 = lock(&f);
    let (v2, d2) = (
        l2["image"]["deb"]["version"].as_str().unwrap().to_string(),
        l2["image"]["deb"]["digest"].as_str().unwrap().to_string(),
    );
    assert_ne!(d2, digest);
    let tag = |d: &str, kind: &str| {
        format!(
            "docker://{}/trust/deb:{}.{kind}",
            reg.addr,
            d.replacen(':', "-", 1)
        )
    };
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        &tag(&d2, "att"),
        &tag(&digest, "att"),
    ]);
    let out = kiln(&store, &["verify", &remote, "--key", pub_]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(out.stdout.contains("about another image"), "{}", out.stdout);
    // one byte of an attestation's payload
    let remote2 = format!("{}/trust/deb:{v2}", reg.addr);
    ok(kiln(&store, &["verify", &remote2, "--key", pub_]));
    let t = python(&[script, "tamper", &reg.addr, "trust/deb", &d2]);
    assert!(t.status.success(), "{}", String::from_utf8_lossy(&t.stderr));
    let out = kiln(&store, &["verify", &remote2, "--key", pub_]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(out.stdout.contains("payload was changed"), "{}", out.stdout);
    // no signature at all
    skopeo(&["delete", "--tls-verify=false", &tag(&d2, "sig")]);
    let out = kiln(&store, &["verify", &remote2, "--key", pub_]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(out.stdout.contains("unsigned"), "{}", out.stdout);

    // verify_bases: a base signed by another key stops the bake before any
    // step, at the FROM line; the right key lets it through
    let g = dir.path().join("consumer");
    fs::create_dir_all(g.join("app")).unwrap();
    fs::write(
        g.join("app/Dockerfile"),
        format!("FROM {remote}\nRUN echo built > /consumer\n"),
    )
    .unwrap();
    let consumer = |key: &str| {
        fs::write(
            g.join("kiln.toml"),
            format!(
                "kiln = 1\n[factory]\nverify_bases = {{ key = \"{key}\" }}\n\
                 [image.app]\ncontext = \"app\"\npublish = [\"store\"]\n"
            ),
        )
        .unwrap();
    };
    consumer(other.to_str().unwrap());
    let out = kiln(&store, &["bake", "-f", g.to_str().unwrap()]);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("is not signed by"), "{}", out.stdout);
    assert!(out.stdout.contains("app/Dockerfile:1:"), "{}", out.stdout);
    assert!(!out.stderr.contains("RUN echo built"), "{}", out.stderr);
    // an unsigned base (the second version, its signature deleted above)
    consumer(pub_);
    fs::write(
        g.join("app/Dockerfile"),
        format!("FROM {remote2}\nRUN echo built > /consumer\n"),
    )
    .unwrap();
    let out = kiln(&store, &["bake", "-f", g.to_str().unwrap()]);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("unsigned"), "{}", out.stdout);
    assert!(out.stdout.contains("app/Dockerfile:1:"), "{}", out.stdout);
    assert!(!out.stderr.contains("RUN echo built"), "{}", out.stderr);
    // signed by the key: built
    fs::write(
        g.join("app/Dockerfile"),
        format!("FROM {remote}\nRUN echo built > /consumer\n"),
    )
    .unwrap();
    let out = ok(kiln(&store, &["bake", "-f", g.to_str().unwrap()]));
    assert!(out.stderr.contains("is signed by"), "{}", out.stderr);
}

/// Every blob of the store.
fn store_blobs(store: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = store.join("oci/blobs/sha256");
    fs::read_dir(&dir)
        .map(|r| {
            r.filter_map(|e| e.ok())
                .filter(|e| e.metadata().is_ok_and(|m| m.len() < 64 << 20))
                .filter_map(|e| fs::read(e.path()).ok().map(|b| (e.path(), b)))
                .collect()
        })
        .unwrap_or_default()
}
