//! `kiln serve` as a real process on a small busybox factory published to
//! a real registry: it bakes what was never built by itself, bakes a
//! changed context file after the next poll, acts on a per-minute schedule,
//! and, killed with SIGKILL in the middle of a bake and started again, runs
//! the interrupted job once more, leaving the store and lock valid.

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::registry::{skopeo_digest, Registry};
use common::*;

/// A running `kiln serve`, its stderr in a file; killed when dropped.
struct Service(Child);

impl Service {
    fn start(store: &Path, factory: &Path, registry: &str, log: &Path) -> Service {
        let err = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .arg("--store")
            .arg(store)
            .args(["serve", "--poll", "1", "-f"])
            .arg(factory)
            .env("KILN_TEST_REGISTRY", registry)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap();
        Service(child)
    }

    fn kill(mut self) {
        let _ = self.0.kill(); // SIGKILL
        let _ = self.0.wait();
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits (up to `secs`) until `done` holds, saying what it waited for.
fn wait(secs: u64, what: &str, log: &Path, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "waited {secs} s for {what}; the service said:\n{}",
            fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn locked(dir: &Path, name: &str, key: &str) -> Option<String> {
    let text = fs::read_to_string(dir.join("kiln.lock")).ok()?;
    let lock: toml::Table = toml::from_str(&text).ok()?;
    Some(
        lock.get("image")?
            .get(name)?
            .get(key)?
            .as_str()?
            .to_string(),
    )
}

fn history(store: &Path, image: &str) -> Vec<String> {
    let out = ok(kiln(store, &["history", image, "--json"]));
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| e["outcome"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn the_service_bakes_by_itself_and_survives_a_kill() {
    let (dir, store) = setup();
    let reg = Registry::start(dir.path());
    let fdir = dir.path().join("factory");
    busybox_context(&fdir);
    let w = |p: &str, text: &str| {
        let p = fdir.join(p);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    };
    w(
        "kiln.toml",
        "kiln = 1\n[factory]\nregistry = \"${KILN_TEST_REGISTRY}/served\"\n\
         [image.base]\ncontext = \"busybox\"\n\
         [image.app]\ncontext = \"app\"\nschedule = \"* * * * *\"\n",
    );
    w(
        "app/Dockerfile",
        "FROM base\nCOPY note /note\nRUN sleep 3\n",
    );
    w("app/note", "one\n");
    let log = dir.path().join("serve.log");

    // never built: baked by itself
    let service = Service::start(&store, &fdir, &reg.addr, &log);
    wait(120, "the first bake", &log, || {
        locked(&fdir, "app", "version").is_some()
    });
    let v1 = locked(&fdir, "app", "version").unwrap();
    // (the per-minute schedule may already have checked it again)
    assert_eq!(history(&store, "app")[0], "built");

    // a changed context file: baked after the next poll
    w("app/note", "two\n");
    wait(60, "the changed file's bake", &log, || {
        locked(&fdir, "app", "version").is_some_and(|v| v != v1)
    });
    let v2 = locked(&fdir, "app", "version").unwrap();

    // the per-minute schedule: a rebuild by itself, the same image, so
    // unchanged and nothing published
    wait(90, "the scheduled bake", &log, || {
        history(&store, "app")
            .last()
            .is_some_and(|o| o == "unchanged")
    });
    assert_eq!(locked(&fdir, "app", "version").unwrap(), v2);

    // killed in the middle of a bake, started again: the job runs again
    let before = fs::read_to_string(&log).unwrap().len();
    w("app/note", "three\n");
    wait(60, "the bake to start", &log, || {
        fs::read_to_string(&log).unwrap()[before..].contains("[app] stage-0 #3 RUN sleep 3")
    });
    service.kill();
    let _service = Service::start(&store, &fdir, &reg.addr, &log);
    wait(120, "the interrupted job's bake", &log, || {
        locked(&fdir, "app", "version").is_some_and(|v| v != v2)
    });
    let text = fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("was interrupted when the service stopped: it runs again"),
        "{text}"
    );
    let v3 = locked(&fdir, "app", "version").unwrap();
    assert_eq!(
        skopeo_digest(&format!("docker://{}/served/app:{v3}", reg.addr)),
        locked(&fdir, "app", "digest").unwrap(),
        "kiln.lock matches the registry"
    );
    let inside = ok(kiln(
        &store,
        &["run", &format!("app:{v3}"), "--", "cat", "/note"],
    ));
    assert_eq!(inside.stdout, "three\n");
    assert_eq!(kiln(&store, &["fsck"]).code, 0, "the store is clean");
}
