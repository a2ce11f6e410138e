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

/// A factory file at /factory/kiln.toml, parsed without reading anything,
/// in an environment where only `REGISTRY` is set.
fn load_text(text: &str) -> Result<Factory, Error> {
    let env = |var: &str| (var == "REGISTRY").then(|| "registry.example:5000".to_string());
    parse(
        vec![(PathBuf::from("/factory/kiln.toml"), text.into())],
        &env,
    )
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
    // the environment given to the parse is the one read
    let f = load_text("kiln = 1\n[factory]\nregistry = \"${REGISTRY}/team\"\n[image.a]\n").unwrap();
    assert_eq!(
        f.images["a"].publish,
        [Publish::Registry("registry.example:5000/team/a".into())]
    );
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
        a.images["base"].definition_text(Path::new("/")),
        b.images["base"].definition_text(Path::new("/"))
    );
    assert_eq!(
        a.images["base"].definition_text(Path::new("/")),
        c.images["base"].definition_text(Path::new("/"))
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

const VM: &str = r#"
kiln = 1
[factory]
registry = "localhost:5000/f"
[image.node]
mmdebstrap = { suite = "bookworm" }
[vm.node-vm]
image = "node"
size = "3G"
var = "512M"
formats = ["qcow2", "vmdk"]
cmdline = "quiet"
user = { name = "admin", ssh_key = "ssh-ed25519 AAAAC3Nza admin@example" }
boot_timeout = 120
test = ["systemctl is-active ssh"]
data_disks = [{ label = "data", size = "1G", mount = "/srv/data" }]
tags = ["stable"]
"#;

#[test]
fn a_vm_image_is_read_with_its_disk_and_first_boot_settings() {
    let f = load_text(VM).unwrap();
    let vm = &f.images["node-vm"];
    let Recipe::Vm(r) = &vm.recipe else {
        panic!("a VM recipe")
    };
    assert_eq!(r.image, "node");
    assert_eq!((r.size, r.var), (3 << 30, Some(512 << 20)));
    assert_eq!(r.formats, [DiskFormat::Qcow2, DiskFormat::Vmdk]);
    assert_eq!(r.hostname, "node-vm");
    assert_eq!(r.user.as_ref().unwrap().name, "admin");
    assert_eq!(r.boot_timeout, 120);
    assert_eq!(r.data_disks[0].mount, "/srv/data");
    assert_eq!(vm.tests[0][2], "systemctl is-active ssh");
    assert_eq!(
        vm.publish,
        [Publish::Registry("localhost:5000/f/node-vm".into())]
    );
    assert_eq!(f.vms().count(), 1);
    // the boot timeout does not shape the disk; the size does
    let slower = load_text(&VM.replace("boot_timeout = 120", "boot_timeout = 600")).unwrap();
    assert_eq!(
        slower.images["node-vm"].definition_text(Path::new("/")),
        vm.definition_text(Path::new("/"))
    );
    assert_eq!(r.bootloader, Bootloader::SystemdBoot);
    let grub = load_text(&VM.replace("cmdline", "bootloader = \"grub\"\ncmdline")).unwrap();
    let Recipe::Vm(g) = &grub.images["node-vm"].recipe else {
        panic!("a VM recipe")
    };
    assert_eq!(g.bootloader, Bootloader::Grub);
    assert_ne!(
        grub.images["node-vm"].definition_text(Path::new("/")),
        vm.definition_text(Path::new("/"))
    );
    let bigger = load_text(&VM.replace("\"3G\"", "\"4G\"")).unwrap();
    assert_ne!(
        bigger.images["node-vm"].definition_text(Path::new("/")),
        vm.definition_text(Path::new("/"))
    );
}

#[test]
fn bad_vm_definitions_point_at_the_value() {
    let at = |from: &str, to: &str| error(&VM.replace(from, to));
    let e = at(
        "formats = [\"qcow2\", \"vmdk\"]",
        "formats = [\"qcow2\", \"vdi\"]",
    );
    assert_eq!(e.line, 11, "{e}");
    assert!(e.message.contains("\"vdi\""), "{e}");
    let e = at("\"3G\"", "\"3X\"");
    assert_eq!(e.line, 9, "{e}");
    let e = at("var = \"512M\"", "var = \"4G\"");
    assert!(e.message.contains("does not fit"), "{e}");
    let e = at("image = \"node\"", "image = \"nope\"");
    assert!(e.message.contains("\"nope\""), "{e}");
    assert_eq!(e.line, 8, "{e}");
    let e = at("size = \"3G\"", "size = \"3G\"\nbootloader = \"lilo\"");
    assert!(e.message.contains("\"lilo\""), "{e}");
    assert_eq!(e.line, 10, "{e}");
    let e = at("label = \"data\"", "label = \"a label that is too long\"");
    assert!(e.message.contains("label"), "{e}");
    assert_eq!(e.line, 16, "{e}");
    let e = at("ssh-ed25519 AAAAC3Nza", "ssh-ed25519\\nAAAAC3Nza");
    assert!(e.message.contains("must be one line"), "{e}");
    // a key file is named by parsing and read by the loader
    let mut named =
        load_text(&VM.replace("ssh-ed25519 AAAAC3Nza admin@example", "keys/missing.pub")).unwrap();
    let Recipe::Vm(r) = &named.images["node-vm"].recipe else {
        panic!("a VM recipe")
    };
    let key_file = r.user.as_ref().unwrap().key_file.as_ref().unwrap();
    assert_eq!(key_file.path, Path::new("/factory/keys/missing.pub"));
    let e = read_keys(&mut named).unwrap_err();
    assert!(e.message.contains("cannot read the SSH key"), "{e}");
    assert_eq!(e.line, 13, "{e}");
    let e = at("[vm.node-vm]", "[vm.node]");
    assert!(e.message.contains("declared twice"), "{e}");
    let e = at("tags = [\"stable\"]", "publish = [\"oci-archive:x.tar\"]");
    assert!(e.message.contains("is not for a VM image"), "{e}");
    let e = at("boot_timeout = 120", "boot_timeout = 0");
    assert!(e.message.contains("boot_timeout"), "{e}");
}

const SERVICE: &str = r#"
kiln = 1
[image.app]
context = "app"
[vm.node]
image = "app"
[service.web]
image = "app"
port = 8080
network = "host"
volume = "web-data"
health = { http = "/healthz", timeout = "30s" }
front = { listen = "127.0.0.1:9080" }
soak = "10m"
[service.db]
vm = "node"
port = 5432
data = "copy"
health = { command = "nc -z $KILN_HOST $KILN_PORT" }
front = { socket = "/run/haproxy/admin.sock", backend = "pg" }
"#;

#[test]
fn services_are_read_with_their_defaults() {
    let f = load_text(SERVICE).unwrap();
    let web = &f.services["web"];
    assert_eq!(
        (web.runs.as_str(), web.driver, web.network, web.port),
        ("app", Driver::Docker, Network::Host, 8080)
    );
    assert_eq!(web.volume, Some(("web-data".into(), "/data".into())));
    assert_eq!(
        web.health,
        Health {
            check: Check::Http {
                path: "/healthz".into(),
                status: 200
            },
            timeout: 30
        }
    );
    assert_eq!(
        web.front,
        Front::Local {
            listen: "127.0.0.1:9080".parse().unwrap()
        }
    );
    assert_eq!((web.soak, web.auto), (600, false));
    let db = &f.services["db"];
    assert_eq!((db.driver, db.data), (Driver::Qemu, Handover::Copy));
    assert_eq!(
        db.front,
        Front::External {
            socket: "/run/haproxy/admin.sock".into(),
            backend: "pg".into()
        }
    );
}

#[test]
fn bad_services_are_errors_at_the_value() {
    let with = |from: &str, to: &str| {
        assert!(SERVICE.contains(from), "{from}");
        error(&SERVICE.replacen(from, to, 1))
    };
    let e = with(
        "image = \"app\"\nport = 8080",
        "image = \"nope\"\nport = 8080",
    );
    assert!(
        e.message
            .contains("runs image \"nope\", which no factory file declares"),
        "{e}"
    );
    assert_eq!(e.line, 8);
    let e = with(
        "image = \"app\"\nport = 8080",
        "image = \"node\"\nport = 8080",
    );
    assert!(e.message.contains("is a VM image"), "{e}");
    let e = with("http = \"/healthz\"", "http = \"healthz\"");
    assert!(e.message.contains("is not an HTTP path"), "{e}");
    let e = with(
        "http = \"/healthz\",",
        "command = \"true\", http = \"/healthz\",",
    );
    assert!(e.message.contains("not both"), "{e}");
    let e = with("timeout = \"30s\"", "timeout = \"soon\"");
    assert!(e.message.contains("health timeout"), "{e}");
    let e = with("listen = \"127.0.0.1:9080\"", "listen = \"localhost\"");
    assert!(e.message.contains("is not an address and port"), "{e}");
    let e = with("network = \"host\"", "network = \"overlay\"");
    assert!(
        e.message.contains("network \"overlay\" is not known"),
        "{e}"
    );
    let e = with("data = \"copy\"", "data = \"copy\"\nnetwork = \"host\"");
    assert!(
        e.message.contains("`network` is for the docker driver"),
        "{e}"
    );
    let e = with("front = { listen = \"127.0.0.1:9080\" }", "front = {}");
    assert!(e.message.contains("needs `listen`"), "{e}");
    let e = with("port = 5432", "port = 5432\ndriver = \"docker\"");
    assert!(e.message.contains("does not run VM images"), "{e}");
}

#[test]
fn signing_and_base_keys_name_a_file_or_a_variable_never_a_key() {
    let f = load_text(
        "kiln = 1\n[factory]\nsign = { key = \"keys/kiln.key\" }\n\
         verify_bases = { key = \"env:BASE_KEY\" }\n[image.a]\n",
    )
    .unwrap();
    let a = &f.images["a"];
    assert_eq!(
        a.sign.as_ref().unwrap().source,
        KeySource::File(PathBuf::from("/factory/keys/kiln.key"))
    );
    assert_eq!(
        a.verify_bases.as_ref().unwrap().source,
        KeySource::Env("BASE_KEY".into())
    );
    assert!(load_text("kiln = 1\n[image.a]\n").unwrap().images["a"]
        .sign
        .is_none());
    let e =
        error("kiln = 1\n[factory]\nsign = { key = \"-----BEGIN PRIVATE KEY-----\" }\n[image.a]\n");
    assert_eq!(e.line, 3, "{e}");
    assert!(e.message.contains("never written in kiln.toml"), "{e}");
    let e = error("kiln = 1\n[factory]\nverify_bases = { key = \"env:\" }\n");
    assert!(e.message.contains("variable name"), "{e}");
}
