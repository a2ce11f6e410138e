//! `kiln rollout` with the docker driver and a real HAProxy: two versions
//! of a small HTTP service (busybox httpd) baked and published to a real
//! registry, pulled by a real Docker engine, switched blue-green under
//! load with no failed request, the volume's data carried over, rolled
//! back, a green that never gets healthy left out, kiln killed in the
//! middle and run again, and bad input refused before anything starts.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;
use common::registry::Registry;
use common::*;

/// GET `path` through `addr`: status and body.
fn get(addr: &str, path: &str) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").map_err(|e| e.to_string())?;
    let mut text = String::new();
    s.read_to_string(&mut text).map_err(|e| e.to_string())?;
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("not HTTP: {text:?}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |b| b.1)
        .trim()
        .to_string();
    Ok((status, body))
}

/// Requests sent through the front by a thread while a rollout runs.
struct Load {
    stop: Arc<AtomicBool>,
    results: Arc<Mutex<Vec<Result<String, String>>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(addr: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let results: Arc<Mutex<Vec<Result<String, String>>>> = Arc::default();
        let (s, r, a) = (stop.clone(), results.clone(), addr.to_string());
        let thread = std::thread::spawn(move || {
            let start = Instant::now();
            // bounded: at most 5 minutes and 100,000 requests
            while !s.load(Ordering::Relaxed)
                && start.elapsed() < Duration::from_secs(300)
                && r.lock().unwrap().len() < 100_000
            {
                let one = match get(&a, "/version") {
                    Ok((200, body)) => Ok(body),
                    Ok((status, body)) => Err(format!("{status}: {body}")),
                    Err(e) => Err(e),
                };
                r.lock().unwrap().push(one);
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Load {
            stop,
            results,
            thread: Some(thread),
        }
    }

    /// Stops it: every response body, and the failures.
    fn finish(mut self) -> (Vec<String>, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        let all = std::mem::take(&mut *self.results.lock().unwrap());
        let ok = all
            .iter()
            .filter_map(|r| r.as_ref().ok().cloned())
            .collect();
        let failed = all.into_iter().filter_map(Result::err).collect();
        (ok, failed)
    }
}

/// What the test leaves behind, removed when it ends.
struct Cleanup {
    volume: String,
    /// The pid files of the HAProxies started (kiln's and the operator's).
    pids: Vec<std::path::PathBuf>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for name in ["kiln-web-1", "kiln-web-2", "kiln-ops-1", "kiln-ops-2"] {
            let _ = Command::new("docker").args(["rm", "-f", name]).output();
        }
        let _ = Command::new("docker")
            .args(["volume", "rm", "-f", &self.volume])
            .output();
        for pid in &self.pids {
            if let Ok(pid) = fs::read_to_string(pid) {
                let _ = Command::new("kill").arg(pid.trim()).output();
            }
        }
    }
}

/// An HAProxy as an operator would run it: a runtime API socket at admin
/// level and a backend with kiln's two slots; where it listens.
fn operator_haproxy(dir: &std::path::Path) -> String {
    let listen = format!("127.0.0.1:{}", free_port());
    let cfg = dir.join("ops.cfg");
    fs::write(
        &cfg,
        format!(
            "global
    stats socket {} mode 600 level admin
    pidfile {}
             defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
             frontend ops
    bind {listen}
    default_backend ops
             backend ops
    server-template kiln 2 127.0.0.1:1 disabled
",
            dir.join("ops.sock").display(),
            dir.join("ops.pid").display()
        ),
    )
    .unwrap();
    let status = Command::new("haproxy")
        .arg("-D")
        .arg("-f")
        .arg(&cfg)
        .status()
        .unwrap();
    assert!(status.success());
    let start = Instant::now();
    while !dir.join("ops.sock").exists() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the operator's HAProxy did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    listen
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn container_exists(name: &str) -> bool {
    Command::new("docker")
        .args(["inspect", name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

#[test]
fn a_container_service_is_replaced_blue_green_without_a_failed_request() {
    need(&["docker", "haproxy"]);
    let (dir, store) = setup();
    let reg = Registry::start(dir.path());
    let fdir = dir.path().join("factory");
    busybox_context(&fdir);
    let volume = format!("kiln-test-web-{}", std::process::id());
    let _cleanup = Cleanup {
        volume: volume.clone(),
        pids: vec![
            store.join("services/web/haproxy.pid"),
            dir.path().join("ops.pid"),
        ],
    };
    let ops = operator_haproxy(dir.path());
    let front = format!("127.0.0.1:{}", free_port());
    let w = |p: &str, text: &str| {
        let p = fdir.join(p);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    };
    let toml = format!(
        "kiln = 1\n[factory]\nregistry = \"${{KILN_TEST_REGISTRY}}/svc\"\n\
         [image.base]\ncontext = \"busybox\"\n\
         [image.web]\ncontext = \"web\"\n\
         [service.ops]\nimage = \"web\"\nport = 8080\nnetwork = \"host\"\n\
         health = {{ http = \"/version\" }}\n\
         front = {{ socket = \"{ops_sock}\", backend = \"ops\" }}\n\
         [service.web]\nimage = \"web\"\nport = 8080\nnetwork = \"host\"\nvolume = \"{volume}\"\n\
         health = {{ http = \"/version\", timeout = \"20s\" }}\n\
         front = {{ listen = \"{front}\" }}\nsoak = \"1h\"\n",
        ops_sock = dir.path().join("ops.sock").display()
    );
    w("kiln.toml", &toml);
    w(
        "web/Dockerfile",
        "FROM base\nCOPY version /srv/version\nCOPY start /start\nRUN chmod 755 /start && ln -s /data /srv/data\nCMD [\"/start\"]\n",
    );
    // blue writes its version to the volume the first time it runs
    w(
        "web/start",
        "#!/bin/sh\nmkdir -p /data\n[ -f /data/note ] || cat /srv/version > /data/note\n\
         sleep ${DELAY:-0}\nexec httpd -f -p \"$PORT\" -h /srv\n",
    );
    // bakes a version serving `text`; its version in kiln.lock
    let bake = |text: &str| -> String {
        w("web/version", &format!("{text}\n"));
        ok(kiln_env(
            &store,
            &["bake", "-f", fdir.to_str().unwrap()],
            &[("KILN_TEST_REGISTRY", &reg.addr)],
        ));
        let lock: toml::Table =
            toml::from_str(&fs::read_to_string(fdir.join("kiln.lock")).unwrap()).unwrap();
        lock["image"]["web"]["version"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let kiln_in = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["-f", fdir.to_str().unwrap()]);
        kiln_env(&store, &all, &[("KILN_TEST_REGISTRY", &reg.addr)])
    };

    // v1: the first rollout has nothing to replace
    let v1 = bake("v1");
    let out = ok(kiln_in(&["rollout", "web"]));
    assert!(out.stdout.contains("is live"), "{}", out.stdout);
    assert_eq!(get(&front, "/version").unwrap(), (200, "v1".into()));

    // v2 under load: no request fails, then every answer is v2, and the
    // note blue wrote to the volume is served by green
    let v2 = bake("v2");
    let load = Load::start(&front);
    std::thread::sleep(Duration::from_millis(300));
    let out = ok(kiln_in(&["rollout", "web"]));
    assert!(
        out.stdout.contains(&format!("{v2} is live"))
            && out.stdout.contains(&format!("{v1} kept for rollback")),
        "{}",
        out.stdout
    );
    std::thread::sleep(Duration::from_millis(300));
    let (answers, failed) = load.finish();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}",
        failed.len(),
        answers.len() + failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(
        answers.iter().any(|a| a == "v1") && answers.last().unwrap() == "v2",
        "{answers:?}"
    );
    for _ in 0..20 {
        assert_eq!(get(&front, "/version").unwrap(), (200, "v2".into()));
    }
    assert_eq!(
        get(&front, "/data/note").unwrap(),
        (200, "v1".into()),
        "green reads what blue wrote"
    );

    // kiln services: v2 live, v1 kept
    let web_service = || -> serde_json::Value {
        let listed: serde_json::Value =
            serde_json::from_str(&ok(kiln_in(&["services", "--json"])).stdout).unwrap();
        listed
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["service"] == "web")
            .expect("web is listed")
            .clone()
    };
    let listed = web_service();
    assert_eq!(listed["live"]["version"], v2.as_str());
    assert_eq!(listed["standby"]["version"], v1.as_str());
    assert_eq!(listed["health"], "healthy");

    // rollback under load: no request fails, v1 answers again
    let load = Load::start(&front);
    std::thread::sleep(Duration::from_millis(300));
    ok(kiln_in(&["rollback", "web"]));
    std::thread::sleep(Duration::from_millis(300));
    let (answers, failed) = load.finish();
    assert!(
        failed.is_empty(),
        "{} requests failed in the rollback: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert_eq!(answers.last().unwrap(), "v1");
    assert_eq!(get(&front, "/version").unwrap(), (200, "v1".into()));

    // a green that never becomes healthy: no traffic, removed, v1 stays
    let text = fs::read_to_string(fdir.join("web/start")).unwrap();
    w("web/start", &text.replace("-h /srv", "-h /nowhere"));
    bake("v3");
    let out = kiln_in(&["rollout", "web"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("did not become healthy")
            && out.stderr.contains(&format!("{v1} stays live")),
        "{}",
        out.stderr
    );
    assert_eq!(get(&front, "/version").unwrap(), (200, "v1".into()));
    let live_slot = web_service()["live"]["slot"].as_u64().unwrap();
    let green = format!("kiln-web-{}", 3 - live_slot);
    assert!(
        !container_exists(&green),
        "the unhealthy green {green} was removed"
    );

    // kiln killed while green starts (it takes 4 s), blue still serving;
    // run again, the rollout goes on and finishes
    w("web/start", &text.replace("${DELAY:-0}", "4"));
    let v4 = bake("v4");
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("--store")
        .arg(&store)
        .args(["rollout", "web", "-f", fdir.to_str().unwrap()])
        .env("KILN_TEST_REGISTRY", &reg.addr)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !container_exists(&green) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "green never started"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert_eq!(
        get(&front, "/version").unwrap(),
        (200, "v1".into()),
        "blue serves while the rollout is cut short"
    );
    let out = ok(kiln_in(&["rollout", "web"]));
    assert!(
        out.stderr
            .contains(&format!("resuming the rollout of web {v4}")),
        "{}",
        out.stderr
    );
    assert_eq!(get(&front, "/version").unwrap(), (200, "v4".into()));

    // auto = true: the bake that publishes v5 rolls it out
    w("kiln.toml", &format!("{toml}auto = true\n"));
    w("web/start", &text);
    w("web/version", "v5\n");
    let out = ok(kiln_env(
        &store,
        &["bake", "-f", fdir.to_str().unwrap()],
        &[("KILN_TEST_REGISTRY", &reg.addr)],
    ));
    assert!(
        out.stderr.contains("rolling out the new web (auto)"),
        "{}",
        out.stderr
    );
    assert!(out.stdout.contains("is live"), "{}", out.stdout);
    assert_eq!(get(&front, "/version").unwrap(), (200, "v5".into()));

    // a front the operator runs: kiln only switches its backend's slots
    assert_eq!(get(&ops, "/version").unwrap().0, 503, "no server yet");
    ok(kiln_in(&["rollout", "ops"]));
    assert_eq!(get(&ops, "/version").unwrap(), (200, "v5".into()));
}

#[test]
fn bad_fronts_are_refused_before_anything_starts() {
    need(&["docker", "haproxy"]);
    let (dir, store) = setup();
    let fdir = dir.path().join("factory");
    busybox_context(&fdir);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let write = |front: &str| {
        fs::write(
            fdir.join("kiln.toml"),
            format!(
                "kiln = 1\n[image.bad]\ncontext = \"busybox\"\n\
                 [service.bad]\nimage = \"bad\"\nport = 80\nhealth = {{ http = \"/\" }}\nfront = {front}\n"
            ),
        )
        .unwrap();
    };
    let f = fdir.to_str().unwrap();

    write(&format!("{{ listen = \"127.0.0.1:{port}\" }}"));
    let out = kiln(&store, &["rollout", "bad", "-f", f]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_mentions(
        &out.stderr,
        &[&format!("127.0.0.1:{port} is already in use")],
    );
    assert!(!container_exists("kiln-bad-1"), "nothing was started");

    write("{ socket = \"no/such.sock\" }");
    let out = kiln(&store, &["rollout", "bad", "-f", f]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_mentions(&out.stderr, &["no/such.sock does not exist"]);
    assert!(!container_exists("kiln-bad-1"), "nothing was started");

    let out = kiln(&store, &["rollout", "nope", "-f", f]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert_mentions(&out.stderr, &["no service \"nope\""]);
    drop(taken);
}

const DEPLOYMENT: &str = r#"# the web tier: kiln pin keeps this comment
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: REG/pin/web:old   # moved by kiln pin
        ports:
        - containerPort: 8080
      - name: sidecar
        image: busybox:1.36
"#;

const CRONJOB: &str = r#"apiVersion: batch/v1
kind: CronJob
metadata:
  name: nightly
spec:
  schedule: "0 3 * * *"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: OnFailure
          containers:
          - name: job
            image: "REG/pin/web"
"#;

const KUSTOMIZATION: &str = r#"resources:
- deployment.yaml
images:
- name: REG/pin/web
  newTag: old
"#;

#[test]
fn kiln_pin_changes_only_image_lines_and_kubernetes_reads_the_result() {
    let (dir, store) = setup();
    let reg = Registry::start(dir.path());
    let fdir = dir.path().join("factory");
    busybox_context(&fdir);
    fs::write(
        fdir.join("kiln.toml"),
        "kiln = 1\n[factory]\nregistry = \"${KILN_TEST_REGISTRY}/pin\"\n[image.web]\ncontext = \"busybox\"\n",
    )
    .unwrap();
    let f = fdir.to_str().unwrap().to_string();
    ok(kiln_env(
        &store,
        &["bake", "-f", &f],
        &[("KILN_TEST_REGISTRY", &reg.addr)],
    ));
    let lock: toml::Table =
        toml::from_str(&fs::read_to_string(fdir.join("kiln.lock")).unwrap()).unwrap();
    let pinned = format!(
        "{}/pin/web:{}@{}",
        reg.addr,
        lock["image"]["web"]["version"].as_str().unwrap(),
        lock["image"]["web"]["digest"].as_str().unwrap()
    );
    let k8s = dir.path().join("k8s");
    fs::create_dir_all(&k8s).unwrap();
    let files = [
        ("deployment.yaml", DEPLOYMENT),
        ("cronjob.yaml", CRONJOB),
        ("kustomization.yaml", KUSTOMIZATION),
    ];
    for (name, text) in files {
        fs::write(k8s.join(name), text.replace("REG", &reg.addr)).unwrap();
    }
    let paths: Vec<String> = files
        .iter()
        .map(|(n, _)| k8s.join(n).display().to_string())
        .collect();
    let args = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = ["pin", "-f", &f].iter().map(|s| s.to_string()).collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a.extend(paths.iter().cloned());
        a
    };
    let run = |a: Vec<String>| {
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        kiln_env(&store, &a, &[("KILN_TEST_REGISTRY", &reg.addr)])
    };

    // behind the lock: --check fails and writes nothing
    let check = run(args(&["--check"]));
    assert_eq!(check.code, 1, "{}{}", check.stdout, check.stderr);
    assert_mentions(&check.stderr, &["behind kiln.lock"]);
    assert_eq!(
        fs::read_to_string(k8s.join("deployment.yaml")).unwrap(),
        DEPLOYMENT.replace("REG", &reg.addr)
    );

    ok(run(args(&[])));
    assert_eq!(run(args(&["--check"])).code, 0, "pinned now");

    // only the image lines changed (and the kustomization's digest line
    // was added under its name)
    let before = DEPLOYMENT.replace("REG", &reg.addr);
    let after = fs::read_to_string(k8s.join("deployment.yaml")).unwrap();
    let changed: Vec<(&str, &str)> = before
        .lines()
        .zip(after.lines())
        .filter(|(a, b)| a != b)
        .collect();
    assert_eq!(changed.len(), 1, "{changed:?}");
    assert_eq!(
        changed[0].1,
        format!("        image: {pinned}   # moved by kiln pin")
    );
    assert_eq!(before.lines().count(), after.lines().count());
    let cron = fs::read_to_string(k8s.join("cronjob.yaml")).unwrap();
    assert_eq!(
        cron,
        CRONJOB.replace("REG", &reg.addr).replace(
            &format!("\"{}/pin/web\"", reg.addr),
            &format!("\"{pinned}\"")
        )
    );
    let kust = fs::read_to_string(k8s.join("kustomization.yaml")).unwrap();
    let (version, digest) = pinned
        .split_once('@')
        .map(|(r, d)| (r.rsplit(':').next().unwrap().to_string(), d.to_string()))
        .unwrap();
    assert_eq!(
        kust,
        format!("resources:\n- deployment.yaml\nimages:\n- name: {}/pin/web\n  digest: {digest}\n  newTag: {version}\n", reg.addr)
    );

    // the Kubernetes client library reads the manifests as its models
    let script = r#"
import sys, yaml
from kubernetes import client
api = client.ApiClient()
# the client's own deserializer, from the data of a response into its models
load = api._ApiClient__deserialize
deploy = load(yaml.safe_load(open(sys.argv[1])), "V1Deployment")
cron = load(yaml.safe_load(open(sys.argv[2])), "V1CronJob")
print(deploy.spec.template.spec.containers[0].image)
print(cron.spec.job_template.spec.template.spec.containers[0].image)
print(yaml.safe_load(open(sys.argv[3]))["images"][0]["digest"])
"#;
    let out = Command::new(common::web::test_python())
        .args(["-c", script])
        .args(&paths)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(lines, [pinned.clone(), pinned.clone(), digest]);
}
