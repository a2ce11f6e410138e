use super::*;
use chrono::Utc;
use std::io::Write;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::File::create(&p)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    p
}

fn load_text(text: &str) -> Result<Factory, Error> {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "kiln.toml", text);
    load(&[p])
}

fn error(text: &str) -> Error {
    load_text(text).expect_err("the definition must be rejected")
}

const CHAIN: &str = r#"
kiln = 1

[factory]
schedule = "0 4 * * 1"
timezone = "Europe/Berlin"
registry = "${KILN_TEST_UNSET_REGISTRY:-localhost:5000}/kiln"

[image.base]
mmdebstrap = { suite = "bookworm", packages = ["ca-certificates"] }
tags = ["latest"]

[image.tools]
context = "tools"
bases = { "debian:bookworm" = "base" }
test = ["busybox true", ["/bin/true"]]
version = "file:VERSION"

[image.app]
context = "app"
publish = ["docker://registry.example/team/app", "oci-archive:out/app.tar", "store"]
schedule = "30 2 * * *"
"#;

#[test]
fn a_chain_is_read_with_defaults_and_paths_resolved() {
    let f = load_text(CHAIN).unwrap();
    let dir = f.files[0].path.parent().unwrap().to_path_buf();
    assert_eq!(
        f.images.keys().collect::<Vec<_>>(),
        ["app", "base", "tools"]
    );
    let base = &f.images["base"];
    let Recipe::Mmdebstrap(m) = &base.recipe else {
        panic!("base is bootstrapped")
    };
    assert_eq!(
        (m.variant.as_str(), m.components.as_slice()),
        ("minbase", &["main".to_string()][..])
    );
    assert_eq!(base.version, VersionScheme::Date);
    assert_eq!(
        base.publish,
        [Publish::Registry("localhost:5000/kiln/base".into())]
    );
    assert_eq!(base.schedule.as_ref().unwrap().expr, "0 4 * * 1");
    let tools = &f.images["tools"];
    let Recipe::Dockerfile {
        context,
        dockerfile,
        bases,
        ..
    } = &tools.recipe
    else {
        panic!()
    };
    assert_eq!(context, &dir.join("tools"));
    assert_eq!(dockerfile, &dir.join("tools/Dockerfile"));
    assert_eq!(bases["debian:bookworm"], "base");
    assert_eq!(tools.tests[0], ["/bin/sh", "-c", "busybox true"]);
    assert_eq!(tools.tests[1], ["/bin/true"]);
    assert_eq!(tools.version, VersionScheme::File(dir.join("VERSION")));
    let app = &f.images["app"];
    assert_eq!(
        app.publish,
        [
            Publish::Registry("registry.example/team/app".into()),
            Publish::OciArchive(dir.join("out/app.tar")),
            Publish::Store
        ]
    );
    assert_eq!(app.schedule.as_ref().unwrap().expr, "30 2 * * *");
    assert_eq!(
        app.schedule.as_ref().unwrap().timezone,
        chrono_tz::Tz::Europe__Berlin
    );
}

#[test]
fn unknown_keys_are_errors_with_position() {
    let e = error("kiln = 1\n[image.a]\ndockerfil = \"x\"\n");
    assert_eq!((e.line, e.column), (3, 1), "{e}");
    assert!(e.message.contains("unknown field `dockerfil`"), "{e}");
    assert!(e.to_string().contains("kiln.toml:3:1"), "{e}");
    assert!(e.hint.as_deref().unwrap().contains("kiln schema"));
    let e = error("kiln = 1\n[image.a.mmdebstrap]\nsuite = \"bookworm\"\nflavour = \"x\"\n");
    assert_eq!(e.line, 4, "{e}");
    let e = error("kiln = 1\n[factory]\nregistr = \"x\"\n");
    assert_eq!(e.line, 3, "{e}");
}

#[test]
fn the_format_version_is_required_and_checked() {
    let e = error("[image.a]\n");
    assert!(e.message.contains("missing field `kiln`"), "{e}");
    assert!(e.hint.as_deref().unwrap().contains("kiln = 1"));
    let e = error("kiln = 2\n");
    assert_eq!((e.line, e.column), (1, 8), "{e}");
    assert!(e.message.contains("format version 2"), "{e}");
}

#[test]
fn toml_syntax_errors_have_position() {
    let e = error("kiln = 1\n[image.a]\ncontext = \"x\n");
    assert_eq!(e.line, 3, "{e}");
}

#[test]
fn bad_cron_timezone_and_version_are_reported_where_written() {
    let e = error("kiln = 1\n[image.a]\nschedule = \"0 4 * *\"\n");
    assert_eq!((e.line, e.column), (3, 12), "{e}");
    assert!(e.message.contains("4 fields"), "{e}");
    assert!(e.hint.as_deref().unwrap().contains("minute hour"), "{e}");
    let e = error("kiln = 1\n[image.a]\nschedule = \"61 * * * *\"\n");
    assert!(e.message.contains("not valid"), "{e}");
    let e = error("kiln = 1\n[image.a]\nschedule = \"* * * * * *\"\n");
    assert!(e.message.contains("6 fields"), "{e}");
    let e = error("kiln = 1\n[factory]\ntimezone = \"Mars/Olympus\"\n");
    assert_eq!(e.line, 3, "{e}");
    assert!(e.message.contains("Mars/Olympus"), "{e}");
    let e = error("kiln = 1\n[image.a]\nversion = \"semver\"\n");
    assert_eq!((e.line, e.column), (3, 11), "{e}");
    assert!(e.hint.as_deref().unwrap().contains("file:PATH"), "{e}");
}

#[test]
fn references_and_names_are_checked() {
    let e = error("kiln = 1\n[image.a]\nbases = { \"debian\" = \"nope\" }\n[image.b]\n");
    assert_eq!(e.line, 2, "{e}");
    assert!(e.message.contains("\"nope\""), "{e}");
    assert!(e.hint.as_deref().unwrap().contains("a, b"), "{e}");
    let e = error("kiln = 1\n[image.Bad]\n");
    assert!(e.message.contains("not valid"), "{e}");
    let e = error("kiln = 1\n[image.a]\ntags = [\"-x\"]\n");
    assert!(e.message.contains("tag"), "{e}");
    let e = error("kiln = 1\n[image.a]\npublish = [\"ftp://x\"]\n");
    assert_eq!((e.line, e.column), (3, 12), "{e}");
    let e = error("kiln = 1\n[image.a]\npublish = [\"docker://${KILN_TEST_SURELY_UNSET}/a\"]\n");
    assert!(e.message.contains("KILN_TEST_SURELY_UNSET"), "{e}");
    let e = error("kiln = 1\n[image.a]\ncontext = \"x\"\nmmdebstrap = { suite = \"bookworm\" }\n");
    assert!(e.message.contains("both"), "{e}");
}

#[test]
fn combined_factories_share_names_and_reject_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "kiln.toml",
        "kiln = 1\n[image.base]\nmmdebstrap = { suite = \"bookworm\" }\n",
    );
    write(
        dir.path(),
        "apps.kiln.toml",
        "kiln = 1\n[image.app]\nbases = { \"debian\" = \"base\" }\n",
    );
    write(dir.path(), "notes.toml", "this is not a factory file");
    let f = load(&[dir.path().to_path_buf()]).unwrap();
    assert_eq!(f.images.keys().collect::<Vec<_>>(), ["app", "base"]);
    assert_eq!(f.files.len(), 2);
    let other = write(dir.path(), "other.toml", "kiln = 1\n\n[image.base]\n");
    let e = load(&[dir.path().to_path_buf(), other]).unwrap_err();
    assert_eq!(e.line, 3, "{e}");
    assert!(e.file.ends_with("other.toml"));
    assert!(e.hint.as_deref().unwrap().contains("kiln.toml:2:"), "{e}");
    let empty = tempfile::tempdir().unwrap();
    let e = load(&[empty.path().to_path_buf()]).unwrap_err();
    assert!(e.message.contains("no kiln.toml"), "{e}");
}

#[test]
fn schedules_are_due_after_an_occurrence() {
    use chrono::TimeZone;
    let s = Schedule::parse("0 4 * * 1", Some(chrono_tz::Tz::Europe__Berlin)).unwrap();
    // 2026-11-30 is a Monday; 04:00 in Berlin is 03:00 UTC.
    let last = Utc.with_ymd_and_hms(2026, 11, 28, 12, 0, 0).unwrap();
    assert!(!s.due(last, Utc.with_ymd_and_hms(2026, 11, 30, 2, 59, 0).unwrap()));
    assert!(s.due(last, Utc.with_ymd_and_hms(2026, 11, 30, 3, 0, 0).unwrap()));
    assert_eq!(
        s.next_after(last),
        Some(Utc.with_ymd_and_hms(2026, 11, 30, 3, 0, 0).unwrap())
    );
}

#[test]
fn the_definition_text_changes_with_what_shapes_the_image() {
    let a = load_text(CHAIN).unwrap();
    let b = load_text(&CHAIN.replace("ca-certificates", "curl")).unwrap();
    let c = load_text(&CHAIN.replace("tags = [\"latest\"]", "tags = [\"stable\"]")).unwrap();
    assert_ne!(
        a.images["base"].definition_text(),
        b.images["base"].definition_text()
    );
    assert_eq!(
        a.images["base"].definition_text(),
        c.images["base"].definition_text()
    );
}

#[test]
fn the_committed_schema_is_the_generated_one() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/kiln.schema.json");
    let generated = schema();
    if std::env::var_os("KILN_UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/kiln.schema.json is stale: run with KILN_UPDATE_SCHEMA=1"
    );
    assert!(generated.contains("\"mmdebstrap\""));
}
