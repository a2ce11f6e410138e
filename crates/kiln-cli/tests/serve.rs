//! `kiln serve` as a real process on a small busybox factory published to
//! a real registry: it bakes what was never built by itself, bakes a
//! changed context file after the next poll, acts on a per-minute schedule,
//! and shows it all in its API, pages (headless Chromium), metrics
//! (prometheus_client's parsers) and webhooks (a receiver started here);
//! writes need the token; killed with SIGKILL in the middle of a bake and
//! started again, it runs the interrupted job once more, and SIGTERM stops
//! it cleanly — the store and lock valid each time.

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::registry::{skopeo_digest, Registry};
use common::web::{self, get, request};
use common::*;

/// A running `kiln serve`, its stderr in a file; killed when dropped.
struct Service {
    child: Child,
    /// Where its API listens: `http://127.0.0.1:PORT`.
    url: String,
}

const TOKEN: &str = "kiln-test-token-3f9c2a";

impl Service {
    fn start(
        store: &Path,
        factory: &Path,
        registry: &str,
        log: &Path,
        extra: &[String],
    ) -> Service {
        let before = fs::read_to_string(log).unwrap_or_default().len();
        let err = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .arg("--store")
            .arg(store)
            .args(["serve", "--poll", "1", "--listen", "127.0.0.1:0", "-f"])
            .arg(factory)
            .args(extra)
            .env("KILN_TEST_REGISTRY", registry)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap();
        let mut url = String::new();
        wait(30, "the API to listen", log, || {
            let text = fs::read_to_string(log).unwrap_or_default();
            let Some(at) = text[before..].find("dashboard and API on ") else {
                return false;
            };
            let rest = &text[before + at + "dashboard and API on ".len()..];
            url = rest
                .split_whitespace()
                .next()
                .unwrap()
                .trim_end_matches('/')
                .to_string();
            true
        });
        Service { child, url }
    }

    fn api(&self, path: &str) -> serde_json::Value {
        let r = get(&format!("{}{path}", self.url));
        assert_eq!(r.status, 200, "GET {path}: {}", r.body);
        r.json()
    }

    fn kill(mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }

    /// SIGTERM; the exit status.
    fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "kiln serve did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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

/// The image `name` of the API's only factory.
fn api_image(svc: &Service, name: &str) -> serde_json::Value {
    let factories = svc.api("/api/factories");
    factories[0]["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == name)
        .unwrap_or_else(|| panic!("no image {name} in {factories}"))
        .clone()
}

/// The webhook documents received at `path` so far.
fn received(got: &web::Received, path: &str) -> Vec<serde_json::Value> {
    got.lock()
        .unwrap()
        .iter()
        .filter(|(p, _)| p == path)
        .map(|(_, body)| serde_json::from_str(body).expect("a webhook body is JSON"))
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
    let token_file = dir.path().join("token");
    fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let (hooks, got) = web::webhook_receiver();
    let flags = vec![
        "--token-file".to_string(),
        token_file.display().to_string(),
        "--webhook".into(),
        format!("http://{hooks}/json"),
        "--slack-webhook".into(),
        format!("http://{hooks}/slack"),
    ];

    // never built: baked by itself
    let service = Service::start(&store, &fdir, &reg.addr, &log, &flags);
    assert_eq!(get(&format!("{}/healthz", service.url)).status, 200);
    wait(120, "the first bake", &log, || {
        locked(&fdir, "app", "version").is_some()
    });
    let v1 = locked(&fdir, "app", "version").unwrap();
    // (the per-minute schedule may already have checked it again)
    assert_eq!(history(&store, "app")[0], "built");
    assert_eq!(get(&format!("{}/readyz", service.url)).status, 200);

    // the API shows it, with the version and digest of the lock
    wait(30, "the API to show the bake", &log, || {
        api_image(&service, "app")["version"] == v1.as_str()
    });
    let app = api_image(&service, "app");
    assert_eq!(
        app["digest"],
        locked(&fdir, "app", "digest").unwrap().as_str()
    );
    assert_eq!(app["depends_on"], serde_json::json!(["base"]));
    assert!(
        app["next_run"].is_string(),
        "a scheduled image has a next run: {app}"
    );
    assert!(app["base_age_seconds"].as_i64().is_some(), "{app}");

    // webhooks: both images published, as JSON and as Slack messages; the
    // receiver refused the first delivery, which was retried
    // (a later bake's deliveries may arrive before the refused one's retry)
    let retried = |d: &serde_json::Value| d["attempts"] == 2 && d["state"] == "delivered";
    wait(60, "the webhooks of the first bake", &log, || {
        received(&got, "/json").len() >= 2
            && received(&got, "/slack").len() >= 2
            && service
                .api("/api/deliveries")
                .as_array()
                .is_some_and(|a| a.iter().any(retried))
    });
    let docs = received(&got, "/json");
    let app_doc = docs
        .iter()
        .find(|d| d["image"] == "app")
        .expect("app's webhook");
    assert_eq!(app_doc["event"], "published");
    assert_eq!(app_doc["version"], v1.as_str());
    assert_eq!(app_doc["factory"], "factory");
    assert!(app_doc["digest"].as_str().unwrap().starts_with("sha256:"));
    assert!(app_doc["published"][0]
        .as_str()
        .unwrap()
        .contains("/served/app:"));
    for m in received(&got, "/slack") {
        assert!(
            m["text"].as_str().is_some_and(|t| t.contains("published")),
            "{m}"
        );
    }
    let deliveries = service.api("/api/deliveries");
    let deliveries = deliveries.as_array().unwrap();
    assert!(
        deliveries
            .iter()
            .all(|d| !d["target"].as_str().unwrap().contains("/json")),
        "paths hidden"
    );
    assert!(
        deliveries.iter().any(retried),
        "the refused delivery was retried: {deliveries:?}"
    );

    // writes: no token, a wrong token, malformed JSON: 401, 401, 400, and
    // nothing queued
    let jobs_before = service.api("/api/jobs").as_array().unwrap().len();
    let bake_url = format!("{}/api/factories/factory/images/app/bake", service.url);
    let none = request("POST", &bake_url, &[], Some("{}"));
    assert_eq!(none.status, 401, "{}", none.body);
    let wrong = request(
        "POST",
        &bake_url,
        &["Authorization: Bearer nope"],
        Some("{}"),
    );
    assert_eq!(wrong.status, 401, "{}", wrong.body);
    let auth = format!("Authorization: Bearer {TOKEN}");
    let bad = request("POST", &bake_url, &[&auth], Some("{\"force\": tru"));
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert_eq!(
        service.api("/api/jobs").as_array().unwrap().len(),
        jobs_before
    );

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
    wait(30, "the unchanged webhook", &log, || {
        received(&got, "/json")
            .iter()
            .any(|d| d["event"] == "unchanged" && d["image"] == "app")
    });
    // the API's history of app holds both bakes and the unchanged check
    let history_api = service.api("/api/factories/factory/images/app")["history"].clone();
    let outcomes: Vec<&str> = history_api
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    assert!(
        outcomes.contains(&"unchanged") && outcomes.iter().filter(|o| **o == "built").count() >= 2,
        "{outcomes:?}"
    );

    // metrics, read by prometheus_client, say what the API says
    let metrics = get(&format!("{}/metrics", service.url));
    assert_eq!(metrics.status, 200);
    let samples = web::parse_metrics(&metrics.body);
    let sample = |name: &str, label: (&str, &str)| {
        samples
            .iter()
            .find(|(n, l, _)| n == name && l[label.0] == label.1)
            .map(|s| s.2)
    };
    let factories = service.api("/api/factories");
    let stale = factories[0]["images"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["stale"] == true)
        .count();
    assert_eq!(
        sample("kiln_stale_images", ("factory", "factory")),
        Some(stale as f64)
    );
    let age = api_image(&service, "base")["age_seconds"].as_f64().unwrap();
    let m_age = sample("kiln_image_age_seconds", ("image", "base")).expect("base's age");
    assert!(
        (m_age - age).abs() < 5.0,
        "metrics say {m_age} s, the API {age} s"
    );
    assert!(sample("kiln_bake_outcomes_total", ("outcome", "built")).unwrap() >= 2.0);
    assert!(sample("kiln_bake_outcomes_total", ("outcome", "unchanged")).unwrap() >= 1.0);
    assert!(samples
        .iter()
        .any(|(n, _, _)| n == "kiln_bake_duration_seconds_bucket"));
    assert!(
        sample(
            "kiln_image_last_success_timestamp_seconds",
            ("image", "app")
        )
        .unwrap()
            > 1.7e9
    );
    assert!(samples
        .iter()
        .any(|(n, _, v)| n == "kiln_queue_length" && *v >= 0.0));

    // the dashboard in headless Chromium: every image, one edge per link
    let overview = web::dom(&format!("{}/", service.url), 2000);
    for name in ["base", "app"] {
        assert!(
            overview.contains(&format!("data-image=\"{name}\"")),
            "{overview}"
        );
    }
    assert_eq!(
        overview.matches("class=\"edge\"").count(),
        1,
        "one chain link, base → app: {overview}"
    );
    assert!(
        overview.contains("data-from=\"base\" data-to=\"app\""),
        "{overview}"
    );
    web::screenshot(&format!("{}/", service.url), "serve-overview");
    let graph = get(&format!("{}/factories/factory/lineage.svg", service.url));
    assert!(
        graph.body.starts_with("<svg") && graph.body.contains("data-to=\"app\""),
        "{}",
        graph.body
    );
    web::screenshot(
        &format!("{}/factories/factory/lineage.svg", service.url),
        "serve-lineage",
    );
    let page = web::dom(
        &format!("{}/factories/factory/images/app", service.url),
        2000,
    );
    assert!(
        page.contains(&v2) && page.contains(&v1),
        "the image page lists its versions: {page}"
    );
    web::screenshot(
        &format!("{}/factories/factory/images/app", service.url),
        "serve-image",
    );
    let badge = get(&format!("{}/badge/factory/app.svg", service.url));
    assert!(
        badge.body.starts_with("<svg") && badge.body.contains("fresh"),
        "{}",
        badge.body
    );
    for text in [&overview, &page, &fs::read_to_string(&log).unwrap()] {
        assert!(!text.contains(TOKEN), "the token shows");
    }

    // the live log: a bake requested while another runs waits in the queue;
    // its page, opened then, shows nothing from the server and receives
    // every line of the bake as it runs, and its end
    let before = fs::read_to_string(&log).unwrap().len();
    w("app/note", "live\n");
    wait(60, "the bake to start", &log, || {
        fs::read_to_string(&log).unwrap()[before..].contains("[app] stage-0 #3 RUN sleep 3")
    });
    let queued = request("POST", &bake_url, &[&auth], Some("{\"force\": true}"));
    assert_eq!(queued.status, 202, "{}", queued.body);
    let job = queued.json()["job"].as_i64().unwrap();
    assert_eq!(service.api(&format!("/api/jobs/{job}"))["state"], "queued");
    let live = web::dom(&format!("{}/jobs/{job}", service.url), 60000);
    assert!(
        live.contains(&format!("job {job} (")) && live.contains("): done"),
        "the live log got the bake's lines to its end: {live}"
    );
    assert!(live.contains("<span id=\"state\">ended</span>"), "{live}");
    web::screenshot(&format!("{}/jobs/{job}", service.url), "serve-job-log");
    wait(60, "the requested bake", &log, || {
        service.api(&format!("/api/jobs/{job}"))["state"] == "succeeded"
    });
    let v2 = locked(&fdir, "app", "version").unwrap();

    // killed in the middle of a bake, started again: the job runs again
    let before = fs::read_to_string(&log).unwrap().len();
    w("app/note", "three\n");
    wait(60, "the bake to start", &log, || {
        fs::read_to_string(&log).unwrap()[before..].contains("[app] stage-0 #3 RUN sleep 3")
    });
    service.kill();
    let service = Service::start(&store, &fdir, &reg.addr, &log, &flags);
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

    // SIGTERM in the middle of a bake: it stops cleanly, the job goes back
    // to the queue and runs when the service starts again
    let before = fs::read_to_string(&log).unwrap().len();
    w("app/note", "four\n");
    wait(60, "the bake to start", &log, || {
        fs::read_to_string(&log).unwrap()[before..].contains("[app] stage-0 #3 RUN sleep 3")
    });
    let status = service.terminate();
    assert!(status.success(), "kiln serve exits 0 on SIGTERM: {status}");
    let text = fs::read_to_string(&log).unwrap()[before..].to_string();
    assert!(text.contains("cancelled cleanly"), "{text}");
    assert_eq!(
        locked(&fdir, "app", "version").unwrap(),
        v3,
        "nothing half-published"
    );
    assert_eq!(kiln(&store, &["fsck"]).code, 0, "the store is clean");
    let _service = Service::start(&store, &fdir, &reg.addr, &log, &flags);
    wait(120, "the cancelled job's bake", &log, || {
        locked(&fdir, "app", "version").is_some_and(|v| v != v3)
    });
}

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=kiln test",
            "-c",
            "user.email=test@kiln.invalid",
        ])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn with_git_the_service_bakes_what_was_pushed() {
    need(&["git"]);
    let (dir, store) = setup();
    let reg = Registry::start(dir.path());
    let origin = dir.path().join("origin.git");
    let author = dir.path().join("author");
    let checkout = dir.path().join("checkout");
    fs::create_dir_all(&author).unwrap();
    git(
        dir.path(),
        &[
            "init",
            "-q",
            "--bare",
            "-b",
            "main",
            origin.to_str().unwrap(),
        ],
    );
    git(&author, &["init", "-q", "-b", "main"]);
    busybox_context(&author);
    fs::write(
        author.join("kiln.toml"),
        "kiln = 1\n[factory]\nregistry = \"${KILN_TEST_REGISTRY}/git\"\n\
         [image.app]\ncontext = \"busybox\"\n",
    )
    .unwrap();
    fs::write(author.join("busybox/note"), "one\n").unwrap();
    let dockerfile = author.join("busybox/Dockerfile");
    let text = fs::read_to_string(&dockerfile).unwrap();
    fs::write(&dockerfile, format!("{text}COPY note /note\n")).unwrap();
    git(&author, &["add", "-A"]);
    git(&author, &["commit", "-q", "-m", "a factory"]);
    git(
        &author,
        &["remote", "add", "origin", origin.to_str().unwrap()],
    );
    git(&author, &["push", "-q", "-u", "origin", "main"]);
    git(
        dir.path(),
        &[
            "clone",
            "-q",
            origin.to_str().unwrap(),
            checkout.to_str().unwrap(),
        ],
    );

    // a second factory, not a git checkout: served side by side (its git
    // update fails and is said, its planning goes on)
    let other = dir.path().join("other");
    busybox_context(&other);
    fs::write(
        other.join("kiln.toml"),
        "kiln = 1\n[factory]\nregistry = \"${KILN_TEST_REGISTRY}/other\"\n\
         [image.tool]\ncontext = \"busybox\"\n",
    )
    .unwrap();

    let log = dir.path().join("serve.log");
    let service = Service::start(
        &store,
        &checkout,
        &reg.addr,
        &log,
        &["--git".into(), "-f".into(), other.display().to_string()],
    );
    wait(120, "the first bakes", &log, || {
        locked(&checkout, "app", "version").is_some() && locked(&other, "tool", "version").is_some()
    });
    let ids: Vec<String> = service
        .api("/api/factories")
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, ["checkout", "other"]);
    let v1 = locked(&checkout, "app", "version").unwrap();

    // a commit pushed upstream: fetched, fast-forwarded, baked
    fs::write(author.join("busybox/note"), "two\n").unwrap();
    git(&author, &["commit", "-q", "-am", "a new note"]);
    git(&author, &["push", "-q"]);
    wait(120, "the pushed change's bake", &log, || {
        locked(&checkout, "app", "version").is_some_and(|v| v != v1)
    });
    assert_eq!(
        fs::read_to_string(checkout.join("busybox/note")).unwrap(),
        "two\n"
    );
    let text = fs::read_to_string(&log).unwrap();
    assert!(text.contains("fast-forwarded to "), "{text}");
    assert!(text.contains("other: git: "), "{text}");
    assert!(
        text.contains("its build context changed: changed note"),
        "{text}"
    );
}
