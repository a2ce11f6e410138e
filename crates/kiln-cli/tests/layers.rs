//! Deferred compression, as a user meets it: a step's layer is written as
//! a compressed blob only for an image that contains it; saving and pushing
//! write exactly the blobs a manifest names; a kill while layers are being
//! compressed leaves a clean store and a correct next build.

use std::collections::BTreeSet;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

mod common;
use common::registry::Registry;
use common::*;

/// The digests (hex) of the blobs in the store.
fn blobs(store: &Path) -> BTreeSet<String> {
    fs::read_dir(store.join("oci/blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// The manifest, config and layer digests (hex) of image `name`.
fn named_blobs(store: &Path, name: &str) -> BTreeSet<String> {
    let b = image_blobs(store, name);
    b.layers.into_iter().chain([b.config, b.manifest]).collect()
}

/// How many cache entries have a layer with no blob yet.
fn pending_entries(store: &Path) -> usize {
    fs::read_dir(store.join("cache"))
        .unwrap()
        .filter(|e| {
            let text = fs::read_to_string(e.as_ref().unwrap().path()).unwrap_or_default();
            text.contains("\"pending\"")
        })
        .count()
}

const BUILDER: &str = "FROM busybox:test AS build\n\
RUN head -c 400000 /dev/urandom > /noise && echo tool > /tool\n\
RUN echo more > /more\n\
FROM busybox:test\n\
COPY --from=build /tool /tool\n\
CMD [\"cat\", \"/tool\"]\n";

#[test]
fn a_builder_stages_layers_get_no_blob_until_an_image_contains_them() {
    let (dir, store) = setup();
    let ctx = app_context(dir.path(), BUILDER);
    let ctx = ctx.to_str().unwrap();
    let before = blobs(&store);
    ok(kiln(&store, &["build", "-t", "small:1", ctx]));
    let new: BTreeSet<String> = blobs(&store).difference(&before).cloned().collect();
    let named = named_blobs(&store, "small:1");
    assert_eq!(
        new,
        named.difference(&before).cloned().collect(),
        "the build wrote the blobs of its image and nothing for the builder's two layers"
    );
    assert_eq!(new.len(), 3, "manifest, config and the COPY's layer");
    assert_eq!(ok(kiln(&store, &["run", "small:1"])).stdout, "tool\n");

    // nothing changed: nothing runs, nothing is written
    let cache_before = fs::read_dir(store.join("cache")).unwrap().count();
    let b = ok(kiln(&store, &["build", "-t", "small:1", ctx]));
    assert!(b.stderr.contains("(0 steps run, 3 cached)"), "{}", b.stderr);
    assert_eq!(blobs(&store).difference(&before).count(), 3);
    assert_eq!(
        fs::read_dir(store.join("cache")).unwrap().count(),
        cache_before
    );

    // the builder stage as an image of its own: its layers come from the
    // cache (no step runs) and get their blobs now, from their snapshots
    let b = ok(kiln(
        &store,
        &["build", "--target", "build", "-t", "tool:1", ctx],
    ));
    assert!(b.stderr.contains("(0 steps run, 2 cached)"), "{}", b.stderr);
    let named = named_blobs(&store, "tool:1");
    assert!(named.iter().all(|d| blobs(&store).contains(d)));
    assert_eq!(pending_entries(&store), 0, "both layers are written now");
    ok(kiln(&store, &["fsck", "--full"]));
    let r = ok(kiln(&store, &["run", "tool:1", "--", "wc", "-c", "/noise"]));
    assert!(r.stdout.starts_with("400000"), "{}", r.stdout);

    // a save holds exactly the blobs the manifest names
    let archive = dir.path().join("tool.tar");
    ok(kiln(
        &store,
        &["save", "tool:1", "-o", archive.to_str().unwrap()],
    ));
    let mut saved = BTreeSet::new();
    for e in tar::Archive::new(fs::File::open(&archive).unwrap())
        .entries()
        .unwrap()
    {
        let p = e.unwrap().path().unwrap().display().to_string();
        if let Some(d) = p.strip_prefix("blobs/sha256/") {
            saved.insert(d.to_string());
        }
    }
    assert_eq!(saved, named, "the archive's blobs");
}

#[test]
fn a_push_writes_and_uploads_only_the_blobs_its_manifest_names() {
    let (dir, store) = setup();
    let reg = Registry::start(dir.path());
    let ctx = app_context(dir.path(), BUILDER);
    let before = blobs(&store);
    ok(kiln(
        &store,
        &["build", "-t", "small:1", ctx.to_str().unwrap()],
    ));
    let reference = format!("{}/deferred/small:1", reg.addr);
    ok(kiln(&store, &["push", "small:1", &reference]));
    let in_registry: BTreeSet<String> = walk_names(
        &dir.path()
            .join("plain-data/docker/registry/v2/blobs/sha256"),
    )
    .into_iter()
    .filter(|n| n.len() == 64)
    .collect();
    let named = named_blobs(&store, "small:1");
    assert_eq!(
        in_registry, named,
        "the registry holds what the manifest names"
    );
    assert_eq!(
        blobs(&store).difference(&before).count(),
        3,
        "pushing wrote no blob for the builder's layers"
    );
}

/// Every directory name below `root`, at any depth (the registry keeps a
/// blob as `sha256/ab/abcd…/data`).
fn walk_names(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(root) else {
        return out;
    };
    for e in entries.flatten() {
        if e.file_type().unwrap().is_dir() {
            out.push(e.file_name().to_string_lossy().into_owned());
            out.extend(walk_names(&e.path()));
        }
    }
    out
}

#[test]
fn a_kill_while_layers_are_compressed_leaves_fsck_clean_and_the_next_build_right() {
    let (dir, store) = setup();
    // a layer of the image worth compressing (38 MiB of numbers as text), then
    // steps that run while it is compressed in the background
    let df = "FROM busybox:test\n\
RUN seq 1 5000000 > /numbers\n\
RUN sleep 2 && echo two > /two\n\
RUN echo three > /three\n";
    let ctx = app_context(dir.path(), df);
    let ctx = ctx.to_str().unwrap();
    let mut pending_seen = 0;
    for delay_ms in [0u64, 150, 400] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .arg("--store")
            .arg(&store)
            .args(["build", "--no-cache", "-t", "killed:1", ctx])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // kill once the step after the big one has begun: its layer is
        // being compressed beside it
        let err = BufReader::new(child.stderr.take().unwrap());
        for line in err.lines() {
            if line.unwrap().contains("RUN sleep 2") {
                break;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        pending_seen += pending_entries(&store);
        let f = kiln(&store, &["fsck", "--full"]);
        assert_eq!(
            f.code, 0,
            "after a kill {delay_ms} ms into the next step the store is clean:\n{}{}",
            f.stdout, f.stderr
        );
    }
    assert!(
        pending_seen > 0,
        "a kill found a layer not compressed yet (else this test tests nothing)"
    );
    // the next build takes the big step from the cache and writes its blob
    let b = ok(kiln(&store, &["build", "-t", "killed:1", ctx]));
    assert!(
        b.stderr.contains("RUN seq 1 5000000 > /numbers CACHED"),
        "the big step comes from the cache:\n{}",
        b.stderr
    );
    let r = ok(kiln(
        &store,
        &[
            "run",
            "killed:1",
            "--",
            "sh",
            "-c",
            "wc -l < /numbers; cat /two /three",
        ],
    ));
    assert_eq!(r.stdout, "5000000\ntwo\nthree\n");
    assert_eq!(kiln(&store, &["fsck", "--full"]).code, 0);
    assert!(named_blobs(&store, "killed:1")
        .iter()
        .all(|d| blobs(&store).contains(d)));
}

#[test]
fn fsck_full_checks_snapshots_with_no_blob_against_their_steps() {
    let (dir, store) = setup();
    let ctx = app_context(dir.path(), BUILDER);
    let ctx = ctx.to_str().unwrap();
    ok(kiln(&store, &["build", "-t", "small:1", ctx]));
    ok(kiln(&store, &["fsck", "--full"]));
    // the builder's first layer, kept only as its snapshot: damage it
    let chain = fs::read_dir(store.join("cache"))
        .unwrap()
        .filter_map(|e| {
            let v: serde_json::Value =
                serde_json::from_str(&fs::read_to_string(e.unwrap().path()).unwrap()).unwrap();
            v["layer"]["pending"]["chain"].as_str().map(str::to_string)
        })
        .find(|c| {
            store
                .join("snapshots")
                .join(&c["sha256:".len()..])
                .join("noise")
                .exists()
        })
        .expect("the builder's RUN layer is pending");
    let noise = store
        .join("snapshots")
        .join(&chain["sha256:".len()..])
        .join("noise");
    fs::write(&noise, "cut short").unwrap();
    let f = kiln(&store, &["fsck", "--full"]);
    assert_eq!(f.code, 1, "{}{}", f.stdout, f.stderr);
    let said = format!("{}{}", f.stdout, f.stderr);
    assert!(
        said.contains(&format!("snapshot {chain} (a layer with no blob yet)")),
        "{said}"
    );
    ok(kiln(&store, &["fsck", "--full", "--repair"]));
    ok(kiln(&store, &["fsck", "--full"]));
    // the step that made it runs again
    let b = ok(kiln(
        &store,
        &["build", "--target", "build", "-t", "tool:1", ctx],
    ));
    assert!(b.stderr.contains("(2 steps run, 0 cached)"), "{}", b.stderr);
    let r = ok(kiln(&store, &["run", "tool:1", "--", "wc", "-c", "/noise"]));
    assert!(r.stdout.starts_with("400000"), "{}", r.stdout);
}
