//! `kiln plan`'s staleness rules on real factory files, Dockerfiles and
//! build contexts on disk. Registry bases are answered by a table here;
//! the registry round trip is tested with `kiln bake` in kiln-cli.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use chrono::{TimeZone, Utc};
use kiln_factory::graph;
use kiln_factory::lock::Locked;
use kiln_factory::plan::{plan, Locks, Plan, PlanOptions, Reason, ResolveError, Resolver};

struct Table(Mutex<BTreeMap<String, String>>);

impl Resolver for Table {
    fn digest(&self, reference: &str) -> Result<String, ResolveError> {
        self.0
            .lock()
            .unwrap()
            .get(reference)
            .cloned()
            .ok_or(ResolveError::NotFound)
    }
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// base (from a registry) → tools → a, b; plus an unrelated image.
fn chain(dir: &Path) {
    write(
        &dir.join("kiln.toml"),
        r#"kiln = 1
[image.base]
context = "base"
[image.tools]
context = "tools"
[image.a]
context = "a"
[image.b]
context = "b"
bases = { "the-tools" = "tools" }
[image.other]
context = "other"
schedule = "0 4 * * *"
"#,
    );
    write(
        &dir.join("base/Dockerfile"),
        "FROM registry.example/debian:bookworm\nRUN true\n",
    );
    write(&dir.join("tools/Dockerfile"), "FROM base\nRUN echo tools\n");
    write(&dir.join("a/Dockerfile"), "FROM tools\nCOPY . /app\n");
    write(&dir.join("a/file.txt"), "one");
    write(
        &dir.join("b/Dockerfile"),
        "FROM the-tools AS build\nRUN make\nFROM scratch\nCOPY --from=build /out /out\n",
    );
    write(
        &dir.join("other/Dockerfile"),
        "FROM registry.example/alpine:3\n",
    );
}

fn run(
    dir: &Path,
    table: &Table,
    force: bool,
    now: chrono::DateTime<Utc>,
    selected: &[&str],
) -> Plan {
    try_plan(dir, table, force, false, now, selected).unwrap()
}

fn try_plan(
    dir: &Path,
    table: &Table,
    force: bool,
    offline: bool,
    now: chrono::DateTime<Utc>,
    selected: &[&str],
) -> Result<Plan, kiln_factory::FactoryError> {
    let factory = kiln_definition::load(&[dir.to_path_buf()]).unwrap();
    let g = graph::graph(&factory).unwrap();
    let locks = Locks::read(&factory).unwrap();
    let opts = PlanOptions {
        selected: selected.iter().map(|s| s.to_string()).collect(),
        force,
        refresh: false,
        offline,
        strict: false,
        checked: Default::default(),
        now,
        contexts_dir: Some(dir.join("store-contexts")),
    };
    plan(&factory, &g, &locks, table, &opts)
}

fn table() -> Table {
    Table(Mutex::new(BTreeMap::from([
        (
            "registry.example/debian:bookworm".to_string(),
            "sha256:d1".to_string(),
        ),
        (
            "registry.example/alpine:3".to_string(),
            "sha256:a1".to_string(),
        ),
    ])))
}

/// Records every stale image as baked now with its current inputs, the
/// way a bake does, giving each a fresh digest.
fn bake_all(dir: &Path, table: &Table, at: chrono::DateTime<Utc>) {
    loop {
        let p = run(dir, table, false, at, &[]);
        let Some(wave) = p.waves.first() else { return };
        let factory = kiln_definition::load(&[dir.to_path_buf()]).unwrap();
        let mut locks = Locks::read(&factory).unwrap();
        for name in wave {
            let img = p.image(name).unwrap();
            let n = locks
                .get(name)
                .map_or(0, |l| l.version.parse::<u32>().unwrap())
                + 1;
            locks.set(
                name,
                Locked {
                    version: n.to_string(),
                    digest: format!("sha256:{name}{n}"),
                    platforms: Default::default(),
                    files: Default::default(),
                    tags: vec![],
                    published: vec![],
                    attachments: Default::default(),
                    baked_at: at.to_rfc3339(),
                    inputs: img.inputs.clone(),
                },
            );
            locks.write_for(name).unwrap();
        }
    }
}

fn stale(p: &Plan) -> Vec<&str> {
    p.images
        .iter()
        .filter(|i| i.stale)
        .map(|i| i.name.as_str())
        .collect()
}

fn reasons<'a>(p: &'a Plan, name: &str) -> &'a [Reason] {
    &p.image(name).unwrap().reasons
}

fn t0() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 28, 12, 0, 0).unwrap()
}

#[test]
fn a_new_factory_is_all_stale_in_dependency_waves() {
    let dir = tempfile::tempdir().unwrap();
    chain(dir.path());
    let p = run(dir.path(), &table(), false, t0(), &[]);
    assert_eq!(stale(&p).len(), 5);
    assert!(p.images.iter().all(|i| i.reasons == [Reason::NeverBuilt]));
    assert_eq!(
        p.waves,
        [vec!["base", "other"], vec!["tools"], vec!["a", "b"]]
    );
    assert_eq!(p.image("b").unwrap().depends_on, ["tools"]);
}

#[test]
fn after_a_bake_nothing_is_stale_and_the_lock_pins_bases() {
    let dir = tempfile::tempdir().unwrap();
    chain(dir.path());
    let table = table();
    bake_all(dir.path(), &table, t0());
    let p = run(dir.path(), &table, false, t0(), &[]);
    assert!(stale(&p).is_empty(), "{p:?}");
    assert!(p.waves.is_empty());
    let lock = std::fs::read_to_string(dir.path().join("kiln.lock")).unwrap();
    assert!(
        lock.contains("\"registry.example/debian:bookworm\" = \"sha256:d1\""),
        "{lock}"
    );
    assert!(lock.contains("tools = \"sha256:tools1\""), "{lock}");
}

#[test]
fn a_changed_context_file_makes_only_that_image_stale() {
    let dir = tempfile::tempdir().unwrap();
    chain(dir.path());
    let table = table();
    bake_all(dir.path(), &table, t0());
    write(&dir.path().join("a/file.txt"), "two");
    let p = run(dir.path(), &table, false, t0(), &[]);
    assert_eq!(stale(&p), ["a"]);
    assert_eq!(
        reasons(&p, "a"),
        [Reason::ContextChanged {
            files: vec!["changed file.txt".into()]
        }]
    );
    assert_eq!(
        reasons(&p, "a")[0].to_string(),
        "its build context changed: changed file.txt"
    );
    write(&dir.path().join("a/new.txt"), "new");
    std::fs::remove_file(dir.path().join("a/file.txt")).unwrap();
    write(
        &dir.path().join("a/Dockerfile"),
        "FROM tools\nCOPY . /srv\n",
    );
    let p = run(dir.path(), &table, false, t0(), &[]);
    assert_eq!(
        reasons(&p, "a"),
        [Reason::ContextChanged {
            files: vec![
                "changed <Dockerfile>".into(),
                "changed Dockerfile".into(),
                "added new.txt".into(),
                "removed file.txt".into()
            ]
        }]
    );
    assert_eq!(p.waves, [vec!["a"]]);
}

#[test]
fn a_changed_definition_rebuilds_everything_above_it_in_order() {
    let dir = tempfile::tempdir().unwrap();
    chain(dir.path());
    let table = table();
    bake_all(dir.path(), &table, t0());
    let toml = std::fs::read_to_string(dir.path().join("kiln.toml")).unwrap();
    write(
        &dir.path().join("kiln.toml"),
        &toml.replace(
            "[image.tools]\ncontext = \"tools\"",
            "[image.tools]\ncontext = \"tools\"\nargs = { X = \"1\" }",
        ),
    );
    let p = run(dir.path(), &table, false, t0(), &[]);
    assert_eq!(stale(&p), ["tools", "a", "b"]);
    assert_eq!(reasons(&p, "tools"), [Reason::DefinitionChanged]);
    assert_eq!(
        reasons(&p, "a"),
        [Reason::UpstreamWillRebuild {
            image: "tools".into()
        }]
    );
    assert_eq!(p.waves, [vec!["tools"], vec!["a", "b"]]);
    // Once tools is rebuilt, its dependants still say why they are stale.
    bake_all(dir.path(), &table, t0());
    let p = run(dir.path(), &table, false, t0(), &[]);
    assert!(stale(&p).is_empty());
}

#[test]
fn an_upstream_rebuilt_elsewhere_makes_dependants_stale() {
    let dir = tempfile::tempdir().unwrap();
    chain(dir.path());
    let table = table();
    bake_all(dir.path(), &table, t0());
    let factory = kiln_definition::load(&[dir.path().to_path_buf()]).unwrap();
    let mut locks = Locks::read(&factory).unwrap();
    let mut tools = locks.get("tools").unwrap().clone();
    tools.digest = "sha256:tools-other".into();
    locks.set("tools", tools);
    locks.write_for("tools").unwrap();
    let p = run(dir.path(), &table, false, t0(), &[]);
    assert_eq!(stale(&p), ["a", "b"]);
    assert_eq!(
        reasons(&p, "b"),
        [Reason::UpstreamRebuilt {
            image: "tools".into()
        }]
    );
}

#[test]
fn a_moved_registry_tag_makes_its_image_and_dependants_stale() {
    let dir = tempfile::tempdir().unwrap();
    chain(dir.path());
    let table = table();
    bake_all(dir.path(), &table, t0());
    table.0.lock().unwrap().insert(
        "registry.example/debian:bookworm".into(),
        "sha256:d2".into(),
    );
    let p = run(dir.path(), &table, false, t0(), &[]);
    assert_eq!(stale(&p), ["base", "tools", "a", "b"]);
    assert_eq!(
        reasons(&p, "base"),
        [Reason::BaseMoved {
            base: "registry.example/debian:bookworm".into(),
            from: Some("sha256:d1".into()),
            to: "sha256:d2".into()
        }]
    );
    assert!(p.image("base").unwrap().reasons[0]
        .to_string()
        .contains("moved: d1 → d2"));
}

#[test]
fn an_offline_plan_asks_no_registry() {
    let dir = tempfile::tempdir().unwrap();
    chain(dir.path());
    let empty = Table(Mutex::new(BTreeMap::new()));
    // never built: nothing is pinned, and offline nothing can be asked
    let e = try_plan(dir.path(), &empty, false, true, t0(), &[]).unwrap_err();
    assert!(e.to_string().contains("--offline"), "{e}");
    let table = table();
    bake_all(dir.path(), &table, t0());
    // the tag moved, but offline the locked digests stand, and a registry
    // that knows nothing is never asked
    table.0.lock().unwrap().insert(
        "registry.example/debian:bookworm".into(),
        "sha256:d2".into(),
    );
    let p = try_plan(dir.path(), &empty, false, true, t0(), &[]).unwrap();
    assert!(stale(&p).is_empty(), "{:?}", stale(&p));
    assert_eq!(
        stale(&run(dir.path(), &table, false, t0(), &[])),
        ["base", "tools", "a", "b"]
    );
}

#[test]
fn a_due_schedule_and_force_make_images_stale() {
    let dir = tempfile::tempdir().unwrap();
    chain(dir.path());
    let table = table();
    bake_all(dir.path(), &table, t0());
    let next_day = Utc.with_ymd_and_hms(2026, 11, 29, 5, 0, 0).unwrap();
    let p = run(dir.path(), &table, false, next_day, &[]);
    assert_eq!(stale(&p), ["other"]);
    assert!(
        matches!(&reasons(&p, "other")[0], Reason::ScheduleDue { since, .. } if since.starts_with("2026-11-29T04:00"))
    );
    let p = run(dir.path(), &table, true, t0(), &["a"]);
    assert_eq!(
        p.images.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(),
        ["base", "tools", "a"]
    );
    assert_eq!(stale(&p), ["base", "tools", "a"]);
}

#[test]
fn cycles_and_bad_dockerfiles_are_reported_with_positions() {
    let dir = tempfile::tempdir().unwrap();
    write(
        &dir.path().join("kiln.toml"),
        "kiln = 1\n[image.x]\ncontext = \"x\"\n\n[image.y]\ncontext = \"y\"\n",
    );
    write(&dir.path().join("x/Dockerfile"), "FROM y\n");
    write(&dir.path().join("y/Dockerfile"), "FROM x\n");
    let factory = kiln_definition::load(&[dir.path().to_path_buf()]).unwrap();
    let e = graph::graph(&factory).unwrap_err().to_string();
    assert!(
        e.contains("kiln.toml:2:8") && e.contains("x → y → x"),
        "{e}"
    );
    write(&dir.path().join("y/Dockerfile"), "FROM x\nFROBNICATE\n");
    let e = graph::graph(&factory).unwrap_err().to_string();
    assert!(
        e.contains("image \"y\"") && e.contains("y/Dockerfile:2:1"),
        "{e}"
    );
    std::fs::remove_file(dir.path().join("y/Dockerfile")).unwrap();
    let e = graph::graph(&factory).unwrap_err().to_string();
    assert!(
        e.contains("kiln.toml:5:8") && e.contains("cannot read"),
        "{e}"
    );
}

#[test]
fn combined_factories_chain_across_files_and_keep_their_own_locks() {
    let dir = tempfile::tempdir().unwrap();
    write(
        &dir.path().join("kiln.toml"),
        "kiln = 1\n[image.base]\ncontext = \"base\"\n",
    );
    write(
        &dir.path().join("apps.kiln.toml"),
        "kiln = 1\n[image.app]\ncontext = \"app\"\n",
    );
    write(
        &dir.path().join("base/Dockerfile"),
        "FROM scratch\nCOPY . /\n",
    );
    write(
        &dir.path().join("app/Dockerfile"),
        "FROM base\nCOPY . /app\n",
    );
    let table = table();
    let p = run(dir.path(), &table, false, t0(), &[]);
    assert_eq!(p.waves, [vec!["base"], vec!["app"]]);
    bake_all(dir.path(), &table, t0());
    let base_lock = std::fs::read_to_string(dir.path().join("kiln.lock")).unwrap();
    let apps_lock = std::fs::read_to_string(dir.path().join("apps.kiln.lock")).unwrap();
    assert!(base_lock.contains("[image.base]") && !base_lock.contains("[image.app]"));
    assert!(apps_lock.contains("[image.app]") && apps_lock.contains("base = \"sha256:base1\""));
    write(&dir.path().join("base/new"), "x");
    let p = run(dir.path(), &table, false, t0(), &[]);
    assert_eq!(p.waves, [vec!["base"], vec!["app"]]);
    assert_eq!(
        reasons(&p, "app"),
        [Reason::UpstreamWillRebuild {
            image: "base".into()
        }]
    );
}

#[test]
fn a_factory_moved_or_checked_out_elsewhere_plans_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let here = dir.path().join("here");
    chain(&here);
    let table = table();
    bake_all(&here, &table, t0());
    // the same files, lock included, in another directory
    let there = dir.path().join("elsewhere/checkout");
    std::fs::create_dir_all(there.parent().unwrap()).unwrap();
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(&here)
        .arg(&there)
        .status()
        .unwrap();
    assert!(status.success());
    let p = run(&there, &table, false, t0(), &[]);
    assert!(stale(&p).is_empty(), "{p:?}");
    // a real change is still one
    write(&there.join("a/file.txt"), "two");
    assert_eq!(stale(&run(&there, &table, false, t0(), &[])), ["a"]);
}

#[test]
fn a_missing_registry_base_is_reported_at_its_from_line() {
    let dir = tempfile::tempdir().unwrap();
    chain(dir.path());
    let table = table();
    table
        .0
        .lock()
        .unwrap()
        .remove("registry.example/debian:bookworm");
    let factory = kiln_definition::load(&[dir.path().to_path_buf()]).unwrap();
    let g = graph::graph(&factory).unwrap();
    let locks = Locks::read(&factory).unwrap();
    let opts = PlanOptions {
        selected: vec![],
        force: false,
        refresh: false,
        offline: false,
        strict: false,
        checked: Default::default(),
        now: t0(),
        contexts_dir: None,
    };
    let err = plan(&factory, &g, &locks, &table, &opts)
        .unwrap_err()
        .to_string();
    let at = format!("{}:1:6", dir.path().join("base/Dockerfile").display());
    assert!(err.contains(&at), "{err}");
    assert!(
        err.contains("base registry.example/debian:bookworm"),
        "{err}"
    );
}
