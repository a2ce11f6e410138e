//! Package updates as a reason to rebuild, end to end: a Debian-format
//! repository made here (packages built with `dpkg-deb`, indexed by
//! `dpkg-scanpackages`, a `-security` suite beside the main one) served
//! over loopback HTTP, and a chain whose image installs from it with the
//! real apt of a real Debian base (mmdebstrap). A newer package and a
//! security update make `kiln plan` name the image, the packages, the
//! versions and the security count; `kiln bake` rebuilds it (its apt step
//! runs again) and what stands on it, and the new image holds the new
//! versions; an unchanged repository releases nothing, and neither does a
//! due schedule or a second bootstrap of the base (it stands at the
//! archives' Release dates, so it is the same); a repository that cannot
//! be reached is a warning naming it (`--strict`: an error).

use std::fs;
use std::path::Path;
use std::process::Command;

mod common;
use common::registry::{skopeo, Registry};
use common::*;

/// Builds `NAME_VERSION_all.deb` in `pool`: one file,
/// `/usr/share/NAME/version`, holding the version.
fn deb(pool: &Path, name: &str, version: &str) {
    let tree = pool.join(format!("{name}-{version}"));
    fs::create_dir_all(tree.join("DEBIAN")).unwrap();
    fs::create_dir_all(tree.join(format!("usr/share/{name}"))).unwrap();
    fs::write(
        tree.join(format!("usr/share/{name}/version")),
        format!("{version}\n"),
    )
    .unwrap();
    fs::write(
        tree.join("DEBIAN/control"),
        format!("Package: {name}\nVersion: {version}\nArchitecture: all\nMaintainer: kiln tests <kiln@example.invalid>\nDescription: a package of kiln's tests\n"),
    )
    .unwrap();
    let out = Command::new("dpkg-deb")
        .args(["--root-owner-group", "--build"])
        .arg(&tree)
        .arg(pool.join(format!("{name}_{version}_all.deb")))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    fs::remove_dir_all(&tree).unwrap();
}

/// Indexes `repo/pool/SUITE` as `dists/SUITE/main/binary-amd64` with a
/// Release file that names its hashes, as apt wants it.
fn index(repo: &Path, suite: &str) {
    let bin = repo.join(format!("dists/{suite}/main/binary-amd64"));
    fs::create_dir_all(&bin).unwrap();
    fs::create_dir_all(repo.join(format!("pool/{suite}"))).unwrap();
    let out = Command::new("dpkg-scanpackages")
        .args(["--multiversion", &format!("pool/{suite}"), "/dev/null"])
        .current_dir(repo)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    fs::write(bin.join("Packages"), &out.stdout).unwrap();
    let hashes = format!(
        " {} {} main/binary-amd64/Packages\n",
        sha256_hex(&out.stdout),
        out.stdout.len()
    );
    fs::write(
        repo.join(format!("dists/{suite}/Release")),
        format!("Suite: {suite}\nCodename: {suite}\nArchitectures: amd64 all\nComponents: main\nDate: {}\nSHA256:\n{hashes}", chrono::Utc::now().to_rfc2822()),
    )
    .unwrap();
}

#[test]
fn package_updates_are_a_reason_and_a_bake_installs_them() {
    need(&[
        "mmdebstrap",
        "dpkg-deb",
        "dpkg-scanpackages",
        "python3",
        "skopeo",
    ]);
    let (dir, store) = setup();
    let repo = dir.path().join("repo");
    let pool = |suite: &str| {
        let p = repo.join(format!("pool/{suite}"));
        fs::create_dir_all(&p).unwrap();
        p
    };
    deb(&pool("bookworm"), "kiln-hello", "1.0");
    deb(&pool("bookworm"), "kiln-lib", "1.0-1");
    index(&repo, "bookworm");
    index(&repo, "bookworm-security");
    let files = HttpFiles::serve(&repo);
    let reg = Registry::start(dir.path());

    // a Debian base bootstrapped by mmdebstrap from Debian's archive and
    // this repository (its sources.list keeps both), an image installing
    // from the repository, one on top of it, and a busybox image with no
    // packages
    let fdir = dir.path().join("factory");
    let w = |p: &str, text: &str| {
        let p = fdir.join(p);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    };
    let a = &files.addr.clone();
    w(
        "app/Dockerfile",
        "FROM base\nRUN apt-get update && apt-get install -y kiln-hello kiln-lib && rm -rf /var/lib/apt/lists/*\n",
    );
    w("top/Dockerfile", "FROM app\nCOPY note /note\n");
    w("top/note", "on top\n");
    busybox_context(&fdir);
    w(
        "kiln.toml",
        &format!(
            "kiln = 1\n[factory]\nregistry = \"${{KILN_TEST_REGISTRY}}/pkgs\"\nprobe_interval = \"0\"\n\
             [image.base]\nmmdebstrap = {{ suite = \"bookworm\", sources = [\"deb [trusted=yes] http://{a}/ bookworm main\", \"deb [trusted=yes] http://{a}/ bookworm-security main\"] }}\n\
             [image.app]\ncontext = \"app\"\nschedule = \"0 3 * * *\"\n\
             [image.top]\ncontext = \"top\"\n[image.tiny]\ncontext = \"busybox\"\n"
        ),
    );
    let env = [("KILN_TEST_REGISTRY", reg.addr.as_str())];
    let f = fdir.to_str().unwrap();
    let json = |o: &Out| -> serde_json::Value {
        serde_json::from_str(&o.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}\n{}", o.stdout, o.stderr))
    };
    let image = |v: &serde_json::Value, name: &str| -> serde_json::Value {
        v["images"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == name)
            .unwrap()
            .clone()
    };
    let tags = |name: &str| {
        skopeo(&[
            "list-tags",
            "--tls-verify=false",
            &format!("docker://{}/pkgs/{name}", reg.addr),
        ])
    };

    let all_are = |v: &serde_json::Value, outcome: &str| {
        let images = v["images"].as_array().unwrap();
        assert!(images.iter().all(|i| i["outcome"] == outcome), "{v}");
    };
    all_are(
        &json(&ok(kiln_env(&store, &["bake", "-f", f, "--json"], &env))),
        "built",
    );
    let plan = ok(kiln_env(&store, &["plan", "-f", f, "--json"], &env));
    let p = json(&plan);
    assert_eq!(p["waves"], serde_json::json!([]), "{p}");
    assert!(
        plan.stderr
            .contains("note: image tiny: packages not checked: it has no package database"),
        "{}",
        plan.stderr
    );

    // the repository publishes kiln-hello 2.0 and a security update of
    // kiln-lib: the plan names them
    deb(&pool("bookworm"), "kiln-hello", "2.0");
    deb(&pool("bookworm-security"), "kiln-lib", "1.0-1+deb12u1");
    index(&repo, "bookworm");
    index(&repo, "bookworm-security");
    let plan = ok(kiln_env(&store, &["plan", "-f", f], &env));
    assert!(
        plan.stdout.contains("2 package updates (1 security): kiln-hello 1.0 → 2.0, kiln-lib 1.0-1 → 1.0-1+deb12u1 (security)"),
        "{}",
        plan.stdout
    );
    let p = json(&ok(kiln_env(&store, &["plan", "-f", f, "--json"], &env)));
    let reason = &image(&p, "app")["reasons"][0];
    assert_eq!(reason["reason"], "package-updates", "{p}");
    assert_eq!(
        (reason["count"].as_u64(), reason["security"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(reason["updates"][1]["to"], "1.0-1+deb12u1");
    assert_eq!(p["waves"], serde_json::json!([["app"], ["top"]]), "{p}");

    // the bake rebuilds app (its apt step runs again) and top; the new app
    // holds the new versions
    let out = kiln_env(&store, &["bake", "-f", f, "--json"], &env);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v = json(&out);
    assert_eq!(image(&v, "app")["outcome"], "built", "{v}");
    assert_eq!(image(&v, "top")["outcome"], "built", "{v}");
    assert!(out.stderr.contains("[app] built app:"), "{}", out.stderr);
    assert!(
        !out.stderr.contains(
            "apt-get install -y kiln-hello kiln-lib && rm -rf /var/lib/apt/lists/* (cached)"
        ),
        "{}",
        out.stderr
    );
    let version = image(&v, "app")["version"].as_str().unwrap().to_string();
    let inside = ok(kiln(
        &store,
        &[
            "run",
            &format!("app:{version}"),
            "--",
            "cat",
            "/usr/share/kiln-hello/version",
            "/usr/share/kiln-lib/version",
        ],
    ));
    assert_eq!(inside.stdout, "2.0\n1.0-1+deb12u1\n");

    // nothing changed in the repository: nothing to bake, nothing published
    let lock_text = fs::read(fdir.join("kiln.lock")).unwrap();
    let (app_tags, top_tags) = (tags("app"), tags("top"));
    all_are(
        &json(&ok(kiln_env(&store, &["bake", "-f", f, "--json"], &env))),
        "reused",
    );
    assert_eq!(fs::read(fdir.join("kiln.lock")).unwrap(), lock_text);
    assert_eq!(
        (tags("app"), tags("top")),
        (app_tags.clone(), top_tags.clone())
    );

    // app's schedule comes due (baked two days ago) with nothing new in the
    // repository: its apt step runs again, and what apt and dpkg rewrite
    // with the time (logs, caches) is all the rebuild differs in, so it is
    // unchanged; top is not rebuilt; nothing is published
    let l: toml::Table = toml::from_str(&String::from_utf8(lock_text.clone()).unwrap()).unwrap();
    let baked_at = l["image"]["app"]["baked_at"].as_str().unwrap();
    let stale_text = String::from_utf8(lock_text.clone()).unwrap().replace(
        baked_at,
        &(chrono::Utc::now() - chrono::Duration::days(2))
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    );
    fs::write(fdir.join("kiln.lock"), &stale_text).unwrap();
    let out = kiln_env(&store, &["bake", "-f", f, "--json"], &env);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v = json(&out);
    assert_eq!(image(&v, "app")["outcome"], "unchanged", "{}", out.stderr);
    assert_eq!(image(&v, "top")["outcome"], "reused", "{v}");
    assert!(out.stderr.contains("[app] built app:"), "{}", out.stderr);
    assert!(
        !out.stderr.contains("rm -rf /var/lib/apt/lists/* (cached)"),
        "the apt step ran again:\n{}",
        out.stderr
    );
    assert_eq!(
        fs::read_to_string(fdir.join("kiln.lock")).unwrap(),
        stale_text
    );
    assert_eq!((tags("app"), tags("top")), (app_tags, top_tags));

    // the base bootstrapped again: the repository published since its
    // first bootstrap, so it stands at a newer date and is new; once more
    // from the unchanged archive and repository, it is the same digest,
    // unchanged, and the lock stays as it is
    let force_base = || {
        let out = kiln_env(
            &store,
            &["bake", "-f", f, "--force", "base", "--json"],
            &env,
        );
        assert_eq!(out.code, 0, "{}", out.stderr);
        assert!(
            out.stderr
                .contains("the date of the archive's Release file"),
            "{}",
            out.stderr
        );
        out
    };
    assert_eq!(image(&json(&force_base()), "base")["outcome"], "built");
    let lock_text = fs::read(fdir.join("kiln.lock")).unwrap();
    let out = force_base();
    assert_eq!(
        image(&json(&out), "base")["outcome"],
        "unchanged",
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("the same digest"), "{}", out.stderr);
    assert_eq!(fs::read(fdir.join("kiln.lock")).unwrap(), lock_text);
    // what stands on the new base is rebuilt on it
    let v = json(&ok(kiln_env(&store, &["bake", "-f", f, "--json"], &env)));
    assert_eq!(image(&v, "top")["outcome"], "built", "{v}");
    let lock_text = fs::read(fdir.join("kiln.lock")).unwrap();

    // the repository cannot be reached: a warning naming it, the plan
    // still works; --strict makes it an error; the lock is untouched
    drop(files);
    let plan = ok(kiln_env(&store, &["plan", "-f", f], &env));
    assert!(
        plan.stderr.contains(&format!("warning: image app: package source http://{a}/dists/bookworm/main/binary-amd64/Packages.gz")),
        "{}",
        plan.stderr
    );
    assert!(plan.stdout.contains("nothing to bake"), "{}", plan.stdout);
    let strict = kiln_env(&store, &["plan", "-f", f, "--strict"], &env);
    assert_eq!(strict.code, 1, "{}", strict.stderr);
    assert!(strict.stderr.contains("--strict"), "{}", strict.stderr);
    assert_eq!(fs::read(fdir.join("kiln.lock")).unwrap(), lock_text);

    // checks kept for an hour; the repository back, but its security suite
    // gone: the warning names that source, and the check is kept anyway
    let toml = fs::read_to_string(fdir.join("kiln.toml")).unwrap();
    w(
        "kiln.toml",
        &toml.replace("probe_interval = \"0\"", "probe_interval = \"1h\""),
    );
    fs::remove_dir_all(repo.join("dists/bookworm-security")).unwrap();
    let port: u16 = a.rsplit(':').next().unwrap().parse().unwrap();
    let _files = HttpFiles::serve_on(&repo, port);
    let gone = format!("warning: image app: package source http://{a}/dists/bookworm-security/");
    let plan = ok(kiln_env(&store, &["plan", "-f", f], &env));
    assert!(plan.stderr.contains(&gone), "{}", plan.stderr);
    assert!(plan.stdout.contains("nothing to bake"), "{}", plan.stdout);
    // a new Packages index under the same Release file is not read: the
    // kept check stands while the sources' Release files are as they were
    // (and the missing source fails as it did), as it does for a check
    // that read every source
    let release = repo.join("dists/bookworm/Release");
    let same = fs::read(&release).unwrap();
    deb(&pool("bookworm"), "kiln-hello", "3.0");
    index(&repo, "bookworm");
    let newer = fs::read(&release).unwrap();
    fs::write(&release, &same).unwrap();
    let plan = ok(kiln_env(&store, &["plan", "-f", f], &env));
    assert!(plan.stderr.contains(&gone), "{}", plan.stderr);
    assert!(plan.stdout.contains("nothing to bake"), "{}", plan.stdout);
    // a new Release file: checked again
    fs::write(&release, &newer).unwrap();
    let plan = ok(kiln_env(&store, &["plan", "-f", f], &env));
    assert!(plan.stderr.contains(&gone), "{}", plan.stderr);
    assert!(
        plan.stdout.contains("kiln-hello 2.0 → 3.0"),
        "{}",
        plan.stdout
    );
}
