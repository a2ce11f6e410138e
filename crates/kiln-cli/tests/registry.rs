//! Pull and push against the real `docker-registry` from Debian, started by
//! the test on a loopback port, with skopeo and the Docker engine as the
//! real clients on the other side.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

mod common;
use common::registry::{skopeo, Registry};
use common::*;

/// A store with the APP image built as app:1 (its digest) and a registry.
fn app_and_registry() -> (tempfile::TempDir, PathBuf, Registry, String) {
    let (dir, store) = setup();
    let reg = Registry::start(dir.path());
    let ctx = app_context(dir.path(), APP);
    let built = ok(kiln(
        &store,
        &["build", "-t", "app:1", ctx.to_str().unwrap()],
    ))
    .stdout;
    (dir, store, reg, built)
}

#[test]
fn round_trips_with_skopeo_and_docker() {
    let (dir, store, reg, built) = app_and_registry();

    // kiln pushes; skopeo reads and copies what it pushed
    let target = format!("{}/team/app:1", reg.addr);
    let digest_file = dir.path().join("digest");
    let pushed = ok(kiln(
        &store,
        &[
            "push",
            "app:1",
            &target,
            "--digest-file",
            digest_file.to_str().unwrap(),
        ],
    ));
    assert_eq!(pushed.stdout, built, "the pushed digest is the built one");
    assert_eq!(fs::read_to_string(&digest_file).unwrap(), built);
    let inspect: serde_json::Value = serde_json::from_str(&skopeo(&[
        "inspect",
        "--tls-verify=false",
        &format!("docker://{target}"),
    ]))
    .unwrap();
    assert_eq!(inspect["Digest"], built.trim());
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        &format!("docker://{target}"),
        &format!("docker://{}/copied/app:1", reg.addr),
    ]);

    // pushing again sends nothing; to another repository, blobs are mounted
    let again = ok(kiln(&store, &["push", "app:1", &target]));
    assert!(
        again
            .stderr
            .contains("0 uploaded, 0 mounted, 9 already there"),
        "{}",
        again.stderr
    );
    let other = ok(kiln(
        &store,
        &["push", "app:1", &format!("{}/other/app:2", reg.addr)],
    ));
    assert!(
        other.stderr.contains("0 uploaded, 9 mounted"),
        "{}",
        other.stderr
    );

    // skopeo pushes a base; kiln pulls it on demand for FROM, builds, pushes
    // the result, and Docker pulls and runs it
    let base_archive = dir.path().join("base.tar");
    ok(kiln(
        &store,
        &[
            "save",
            "busybox:test",
            "--format",
            "oci",
            "-o",
            base_archive.to_str().unwrap(),
        ],
    ));
    let base_ref = format!("{}/skopeo/busybox:1", reg.addr);
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &format!("oci-archive:{}", base_archive.display()),
        &format!("docker://{base_ref}"),
    ]);
    let fresh = dir.path().join("fresh-store");
    let app2 = dir.path().join("app2");
    fs::create_dir_all(&app2).unwrap();
    fs::write(
        app2.join("Dockerfile"),
        format!(
            // random bytes beside text: the layer mixes stored and
            // compressed deflate blocks, which Docker's Go reader must accept
            "FROM {base_ref}\nRUN echo built on a pulled base > /msg && head -c 300000 /dev/urandom > /rand && sha256sum /rand > /rand.sum\nCMD [\"sh\", \"-c\", \"cat /msg && sha256sum -c /rand.sum >/dev/null && echo intact\"]\n"
        ),
    )
    .unwrap();
    let final_ref = format!("{}/kiln/app2:1", reg.addr);
    let b = ok(kiln(
        &fresh,
        &["build", "--push", "-t", &final_ref, app2.to_str().unwrap()],
    ));
    assert!(
        b.stderr.contains(&format!("{base_ref}: fetching")),
        "the base was pulled:\n{}",
        b.stderr
    );
    assert!(
        b.stderr.contains("1 mounted"),
        "the base layer is mounted, not uploaded:\n{}",
        b.stderr
    );
    assert_eq!(
        docker_pull_and_run(&final_ref),
        "built on a pulled base\nintact\n"
    );

    // kiln pull of what skopeo copied, by tag and by digest
    let pulled = ok(kiln(
        &fresh,
        &["pull", &format!("{}/copied/app:1", reg.addr)],
    ));
    assert_eq!(pulled.stdout, built);
    let by_digest = ok(kiln(
        &fresh,
        &["pull", &format!("{}/copied/app@{}", reg.addr, built.trim())],
    ));
    assert_eq!(by_digest.stdout, built);
    assert_eq!(kiln(&fresh, &["fsck"]).code, 0);
}

#[test]
fn missing_images_and_bad_references_fail_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let reg = Registry::start(dir.path());
    let r = kiln(&store, &["pull", &format!("{}/nothing/here:1", reg.addr)]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("not found"), "{}", r.stderr);
    let r = kiln(&store, &["pull", "Not/A/Valid:ref"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    let zero = "0".repeat(64);
    let r = kiln(
        &store,
        &["pull", &format!("{}/nothing/here@sha256:{zero}", reg.addr)],
    );
    assert_ne!(r.code, 0);
    assert!(
        fs::read_dir(store.join("oci/blobs/sha256"))
            .map(|d| d.count())
            .unwrap_or(0)
            == 0,
        "nothing stored"
    );
}

fn sh(cmd: &str, dir: &Path) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and a server certificate for 127.0.0.1, made with openssl.
fn certificates(dir: &Path) {
    sh("openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj /CN=kiln-test-ca 2>/dev/null", dir);
    sh("openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=localhost 2>/dev/null", dir);
    fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
    sh("openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 2 -extfile ext.cnf 2>/dev/null", dir);
}

#[test]
fn basic_auth_over_tls_with_a_private_ca() {
    let (dir, store) = setup();
    let d = dir.path();
    certificates(d);
    sh("htpasswd -Bbn kilnuser 'pa55-w0rd-secret' > htpasswd", d);
    let registry = Registry::start_with(
        d,
        "tls",
        &format!(
            "  tls:\n    certificate: {d}/server.crt\n    key: {d}/server.key\n",
            d = d.display()
        ),
        &format!(
            "auth:\n  htpasswd:\n    realm: kiln-test\n    path: {}/htpasswd\n",
            d.display()
        ),
    );
    let addr = registry.addr.clone();
    let docker_config = d.join("docker-config");
    let env = [("DOCKER_CONFIG", docker_config.to_str().unwrap())];
    let ca = d.join("ca.crt");
    let target = format!("{addr}/secure/app:1");

    // the CA is not trusted without --ca-cert
    let r = kiln_env(&store, &["push", "busybox:test", &target], &env);
    assert_eq!(r.code, 1, "{}", r.stderr);
    // trusted, but no credentials yet
    let r = kiln_env(
        &store,
        &[
            "--ca-cert",
            ca.to_str().unwrap(),
            "push",
            "busybox:test",
            &target,
        ],
        &env,
    );
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("kiln login"), "{}", r.stderr);

    let login = |password: &str| {
        let mut login = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(["--store"])
            .arg(&store)
            .args([
                "--ca-cert",
                ca.to_str().unwrap(),
                "login",
                &addr,
                "-u",
                "kilnuser",
                "--password-stdin",
            ])
            .env("DOCKER_CONFIG", &docker_config)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        login
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{password}\n").as_bytes())
            .unwrap();
        login.wait_with_output().unwrap()
    };
    let out = login("pa55-w0rd-secret");
    assert!(
        out.status.success(),
        "login: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // a password the registry rejects saves nothing: the working
    // credentials stay
    let config = docker_config.join("config.json");
    let saved = fs::read(&config).unwrap();
    let out = login("wrong-password");
    assert_eq!(out.status.code(), Some(1));
    assert_mentions(
        &String::from_utf8_lossy(&out.stderr),
        &["did not accept these credentials", "nothing was saved"],
    );
    assert_eq!(fs::read(&config).unwrap(), saved, "config.json was changed");
    // a config.json kiln cannot read is an error that leaves it alone
    let broken = b"{\"auths\": {\"other.example\": {\"auth\": \"eDp5\"}}, \"credsStore\": \"pass\"";
    fs::write(&config, broken).unwrap();
    let out = login("pa55-w0rd-secret");
    assert_eq!(out.status.code(), Some(1));
    assert_mentions(
        &String::from_utf8_lossy(&out.stderr),
        &["config.json", "not valid JSON"],
    );
    assert_eq!(fs::read(&config).unwrap(), broken);
    fs::write(&config, &saved).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(docker_config.join("config.json"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );

    let pushed = ok(kiln_env(
        &store,
        &[
            "--ca-cert",
            ca.to_str().unwrap(),
            "push",
            "busybox:test",
            &target,
        ],
        &env,
    ));
    // skopeo's --cert-dir takes *.crt as CAs and *.key as client keys
    let certs = d.join("skopeo-certs");
    fs::create_dir_all(&certs).unwrap();
    fs::copy(&ca, certs.join("ca.crt")).unwrap();
    let inspect = Command::new("skopeo")
        .args(["inspect", "--cert-dir"])
        .arg(&certs)
        .args([
            "--creds",
            "kilnuser:pa55-w0rd-secret",
            &format!("docker://{target}"),
        ])
        .output()
        .unwrap();
    assert!(
        inspect.status.success(),
        "skopeo: {}",
        String::from_utf8_lossy(&inspect.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(v["Digest"], pushed.stdout.trim());
    let pulled = ok(kiln_env(
        &d.join("other-store"),
        &["--ca-cert", ca.to_str().unwrap(), "pull", &target],
        &env,
    ));
    assert_eq!(pulled.stdout, pushed.stdout);
    // the password is in no output and nowhere in either store
    for text in [
        &pushed.stderr,
        &pulled.stderr,
        &String::from_utf8_lossy(&out.stderr).into_owned(),
    ] {
        assert!(!text.contains("pa55-w0rd-secret"));
    }
    let grep = Command::new("grep")
        .args(["-r", "-l", "pa55-w0rd-secret"])
        .arg(&store)
        .arg(d.join("other-store"))
        .output()
        .unwrap();
    assert!(
        grep.stdout.is_empty(),
        "found in {}",
        String::from_utf8_lossy(&grep.stdout)
    );
    drop(registry);
}

use common::proxy::{Fault, Proxy, Rule};

#[test]
fn faults_are_retried_and_the_registry_keeps_only_whole_blobs() {
    let (dir, store, reg, built) = app_and_registry();
    let proxy = Proxy::start(
        &reg.addr,
        vec![
            Rule {
                method: "PUT",
                path_part: "/blobs/uploads/",
                fault: Fault::Status(500),
                times: 2,
            },
            Rule {
                method: "HEAD",
                path_part: "/blobs/",
                fault: Fault::Status(429),
                times: 1,
            },
            Rule {
                method: "PUT",
                path_part: "/manifests/",
                fault: Fault::Status(503),
                times: 1,
            },
        ],
    );
    let via = format!("{}/faults/app:1", proxy.addr);
    let pushed = ok(kiln(&store, &["push", "app:1", &via]));
    assert_eq!(pushed.stdout, built);

    proxy.set_rules(vec![
        Rule {
            method: "GET",
            path_part: "/manifests/",
            fault: Fault::Status(429),
            times: 1,
        },
        Rule {
            method: "GET",
            path_part: "/blobs/",
            fault: Fault::CutBody,
            times: 2,
        },
        Rule {
            method: "GET",
            path_part: "/blobs/",
            fault: Fault::Slow,
            times: 1,
        },
        Rule {
            method: "GET",
            path_part: "/blobs/",
            fault: Fault::Status(502),
            times: 1,
        },
    ]);
    let fresh = dir.path().join("fresh");
    let pulled = ok(kiln(&fresh, &["pull", &via]));
    assert_eq!(pulled.stdout, built);
    assert!(
        pulled.stderr.contains("broke off"),
        "a cut body was fetched again:\n{}",
        pulled.stderr
    );
    assert_eq!(kiln(&fresh, &["fsck"]).code, 0);
    // the registry itself holds complete, verified blobs
    let check = dir.path().join("direct");
    assert_eq!(
        ok(kiln(
            &check,
            &["pull", &format!("{}/faults/app:1", reg.addr)]
        ))
        .stdout,
        built
    );
    let copy = Command::new("skopeo")
        .args([
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{}/faults/app:1", reg.addr),
            &format!("dir:{}", dir.path().join("skopeo-dir").display()),
        ])
        .output()
        .unwrap();
    assert!(
        copy.status.success(),
        "skopeo verifies every blob: {}",
        String::from_utf8_lossy(&copy.stderr)
    );
}

#[test]
fn an_interrupted_push_sends_only_what_is_missing() {
    let (_dir, store, reg, _) = app_and_registry();
    let proxy = Proxy::start(
        &reg.addr,
        vec![Rule {
            method: "PUT",
            path_part: "/blobs/uploads/",
            fault: Fault::Delay(400),
            times: 100,
        }],
    );
    let via = format!("{}/resume/app:1", proxy.addr);
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("--store")
        .arg(&store)
        .args(["push", "app:1", &via])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..200 {
        if proxy.count("PUT", "/blobs/uploads/") >= 3 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    child.kill().unwrap(); // SIGKILL mid-push
    child.wait().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(600)); // the proxy finishes forwarding
    let first = proxy.count("PUT", "/blobs/uploads/");
    assert!(
        (1..9).contains(&first),
        "the push was interrupted part way ({first} of 9 uploads)"
    );
    proxy.set_rules(vec![]);
    ok(kiln(&store, &["push", "app:1", &via]));
    assert_eq!(
        proxy.count("PUT", "/blobs/uploads/"),
        9,
        "each of the 9 blobs was uploaded exactly once"
    );
    let inspect = Command::new("skopeo")
        .args([
            "inspect",
            "--tls-verify=false",
            &format!("docker://{}/resume/app:1", reg.addr),
        ])
        .output()
        .unwrap();
    assert!(inspect.status.success());
}

fn peak_kib(stderr: &str) -> u64 {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("kiln: peak memory"))
        .expect("KILN_STATS report");
    line.split_whitespace().nth(3).unwrap().parse().unwrap()
}

#[test]
fn a_one_gib_image_moves_in_bounded_memory() {
    let (dir, store) = setup();
    let reg = Registry::start(dir.path());
    // 1 GiB of incompressible data in one layer
    let ctx = app_context(
        dir.path(),
        "FROM busybox:test\nRUN head -c 1073741824 /dev/urandom > /big\n",
    );
    ok(kiln(
        &store,
        &["build", "-t", "big:1", ctx.to_str().unwrap()],
    ));
    let target = format!("{}/big/image:1", reg.addr);
    let stats = [("KILN_STATS", "1")];
    let push = ok(kiln_env(&store, &["push", "big:1", &target], &stats));
    let fresh = dir.path().join("fresh");
    let pull = ok(kiln_env(&fresh, &["pull", &target], &stats));
    assert_eq!(push.stdout, pull.stdout);
    for (what, out) in [("push", &push), ("pull", &pull)] {
        let kib = peak_kib(&out.stderr);
        assert!(kib < 200 * 1024, "{what} peaked at {kib} KiB");
    }
}

/// A token issuer for the registry's token auth, in the test harness: it
/// checks Basic credentials and answers `GET /token?service=…&scope=…` with
/// a JWT (RS256, signed by openssl, the certificate in its `x5c` header)
/// granting what the scope asks. It counts the tokens it issues.
struct TokenIssuer {
    addr: String,
    issued: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

/// Standard base64 with padding (openssl).
fn b64std(bytes: &[u8]) -> String {
    let out = Command::new("openssl")
        .args(["base64", "-A"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(bytes)?;
            c.wait_with_output()
        });
    String::from_utf8(out.unwrap().stdout)
        .unwrap()
        .trim()
        .to_string()
}

/// base64url without padding, as JWTs use.
fn b64url(bytes: &[u8]) -> String {
    b64std(bytes)
        .trim_end_matches('=')
        .replace('+', "-")
        .replace('/', "_")
}

fn sign(key: &Path, data: &[u8]) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(data)?;
            c.wait_with_output()
        });
    out.unwrap().stdout
}

impl TokenIssuer {
    fn start(dir: &Path, user: &'static str, password: &'static str) -> TokenIssuer {
        use std::io::{BufRead, BufReader, Write};
        sh("openssl req -x509 -newkey rsa:2048 -nodes -keyout token.key -out token.crt -days 2 -subj /CN=kiln-token-issuer 2>/dev/null", dir);
        sh(
            "openssl x509 -in token.crt -outform der -out token.der",
            dir,
        );
        let x5c = {
            let der = fs::read(dir.join("token.der")).unwrap();
            b64std(&der)
        };
        let key = dir.join("token.key");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let issued = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = issued.clone();
        let expected = format!("Basic {}", b64std(format!("{user}:{password}").as_bytes()));
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut request = String::new();
                reader.read_line(&mut request).unwrap_or(0);
                let mut authorized = false;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line
                        .strip_prefix("Authorization: ")
                        .or_else(|| line.strip_prefix("authorization: "))
                    {
                        authorized = v.trim() == expected;
                    }
                }
                let mut conn = conn;
                if !authorized {
                    let _ = conn.write_all(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                    continue;
                }
                let query = request
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or("")
                    .split('?')
                    .nth(1)
                    .unwrap_or("")
                    .to_string();
                let param = |k: &str| {
                    query
                        .split('&')
                        .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
                        .map(|v| {
                            v.replace("%3A", ":")
                                .replace("%2F", "/")
                                .replace("%2C", ",")
                        })
                        .unwrap_or_default()
                };
                let (service, scope) = (param("service"), param("scope"));
                let access: Vec<serde_json::Value> = scope
                    .split(' ')
                    .filter_map(|s| {
                        let mut p = s.splitn(3, ':');
                        let (kind, name, actions) = (p.next()?, p.next()?, p.next()?);
                        Some(serde_json::json!({"type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}))
                    })
                    .collect();
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs();
                let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "x5c": [x5c]});
                let claims = serde_json::json!({"iss": "kiln-test-issuer", "sub": user, "aud": service, "exp": now + 600, "nbf": now - 10, "iat": now, "jti": format!("t{now}"), "access": access});
                let signing_input = format!(
                    "{}.{}",
                    b64url(header.to_string().as_bytes()),
                    b64url(claims.to_string().as_bytes())
                );
                let jwt = format!(
                    "{signing_input}.{}",
                    b64url(&sign(&key, signing_input.as_bytes()))
                );
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let body = serde_json::json!({"token": jwt}).to_string();
                let _ = conn.write_all(format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).as_bytes());
            }
        });
        TokenIssuer { addr, issued }
    }
}

#[test]
fn bearer_token_auth_through_a_token_issuer() {
    let (dir, store) = setup();
    let d = dir.path();
    let issuer = TokenIssuer::start(d, "tokenuser", "token-pass-word");
    let registry = Registry::start_with(d, "token", "", &format!("auth:\n  token:\n    realm: http://{}/token\n    service: kiln-test-registry\n    issuer: kiln-test-issuer\n    rootcertbundle: {}\n", issuer.addr, d.join("token.crt").display()));
    let addr = registry.addr.clone();
    let docker_config = d.join("docker-config");
    fs::create_dir_all(&docker_config).unwrap();
    let auth = b64std(b"tokenuser:token-pass-word");
    fs::write(
        docker_config.join("config.json"),
        format!(r#"{{"auths":{{"{addr}":{{"auth":"{auth}"}}}}}}"#),
    )
    .unwrap();
    let env = [("DOCKER_CONFIG", docker_config.to_str().unwrap())];
    let target = format!("{addr}/tokens/busybox:1");
    let pushed = ok(kiln_env(&store, &["push", "busybox:test", &target], &env));
    // one token for the push scope, reused for every request of the push
    assert_eq!(
        issuer.issued.load(std::sync::atomic::Ordering::Relaxed),
        1,
        "tokens are cached per scope"
    );
    let pulled = ok(kiln_env(&d.join("fresh"), &["pull", &target], &env));
    assert_eq!(pulled.stdout, pushed.stdout);
    // wrong credentials are refused by the issuer, with a clear error
    fs::write(
        docker_config.join("config.json"),
        format!(
            r#"{{"auths":{{"{addr}":{{"auth":"{}"}}}}}}"#,
            b64std(b"tokenuser:wrong")
        ),
    )
    .unwrap();
    let r = kiln_env(&d.join("other"), &["pull", &target], &env);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("token service") && r.stderr.contains("refused"),
        "{}",
        r.stderr
    );
    drop(registry);
}

#[test]
fn docker_media_types_and_a_declined_mount() {
    let (dir, store) = setup();
    let reg = Registry::start(dir.path());
    // push with Docker v2 schema 2 media types, for old registries
    let docker_ref = format!("{}/old/busybox:1", reg.addr);
    ok(kiln(
        &store,
        &["push", "--format", "docker", "busybox:test", &docker_ref],
    ));
    let raw: serde_json::Value = serde_json::from_str(&skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{docker_ref}"),
    ]))
    .unwrap();
    assert_eq!(
        raw["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(
        raw["layers"][0]["mediaType"],
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
    );
    // a Docker-format image (written by skopeo) is pulled and built on
    let v2s2 = format!("{}/skopeo/v2s2:1", reg.addr);
    skopeo(&[
        "copy",
        "--format",
        "v2s2",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        &format!("docker://{docker_ref}"),
        &format!("docker://{v2s2}"),
    ]);
    let fresh = dir.path().join("fresh");
    let app = dir.path().join("on-v2s2");
    fs::create_dir_all(&app).unwrap();
    fs::write(
        app.join("Dockerfile"),
        format!("FROM {v2s2}\nRUN echo ok > /ok\n"),
    )
    .unwrap();
    ok(kiln(
        &fresh,
        &["build", "-t", "on-v2s2:1", app.to_str().unwrap()],
    ));
    assert_eq!(
        ok(kiln(&fresh, &["run", "on-v2s2:1", "--", "cat", "/ok"])).stdout,
        "ok\n"
    );

    // the store believes every blob is in a repository that lacks them: the
    // registry answers each mount with 202 and kiln uploads instead
    let sources = store.join("sources");
    for entry in fs::read_dir(&sources).unwrap().flatten() {
        fs::write(entry.path(), format!("{}/nowhere/repo\n", reg.addr)).unwrap();
    }
    let r = ok(kiln(
        &store,
        &[
            "push",
            "busybox:test",
            &format!("{}/fallback/busybox:1", reg.addr),
        ],
    ));
    assert!(r.stderr.contains("2 uploaded, 0 mounted"), "{}", r.stderr);
}

#[test]
fn a_registry_that_refuses_large_bodies_gets_chunks() {
    let (dir, store) = setup();
    let reg = Registry::start(dir.path());
    // every monolithic upload is refused as too large
    let proxy = Proxy::start(
        &reg.addr,
        vec![Rule {
            method: "PUT",
            path_part: "digest=",
            fault: Fault::Status(413),
            times: 2,
        }],
    );
    let via = format!("{}/chunked/busybox:1", proxy.addr);
    let pushed = ok(kiln(&store, &["push", "busybox:test", &via]));
    assert!(
        proxy.count("PATCH", "/blobs/uploads/") >= 2,
        "the blobs went up in PATCHes"
    );
    let pulled = ok(kiln(
        &dir.path().join("fresh"),
        &["pull", &format!("{}/chunked/busybox:1", reg.addr)],
    ));
    assert_eq!(pulled.stdout, pushed.stdout);
}

#[test]
fn corrupt_blobs_are_refused_and_nothing_is_stored() {
    let (dir, store) = setup();
    let reg = Registry::start(dir.path());
    ok(kiln(
        &store,
        &[
            "push",
            "busybox:test",
            &format!("{}/corrupt/busybox:1", reg.addr),
        ],
    ));
    let proxy = Proxy::start(
        &reg.addr,
        vec![Rule {
            method: "GET",
            path_part: "/blobs/",
            fault: Fault::Corrupt,
            times: 1000,
        }],
    );
    let fresh = dir.path().join("fresh");
    let r = kiln(
        &fresh,
        &["pull", &format!("{}/corrupt/busybox:1", proxy.addr)],
    );
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("nothing was stored"), "{}", r.stderr);
    let blobs = fs::read_dir(fresh.join("oci/blobs/sha256"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(blobs, 0, "no blob of a corrupt pull is kept");
    assert!(!ok(kiln(&fresh, &["images"])).stdout.contains("corrupt"));
}

#[test]
fn credentials_from_a_docker_credential_helper() {
    let (dir, store) = setup();
    let d = dir.path();
    sh("htpasswd -Bbn helperuser helper-secret > htpasswd", d);
    let registry = Registry::start_with(
        d,
        "helper",
        "",
        &format!(
            "auth:\n  htpasswd:\n    realm: kiln-test\n    path: {}/htpasswd\n",
            d.display()
        ),
    );
    let addr = registry.addr.clone();
    // a credential helper, as docker-credential-pass or -ecr-login are
    let bin = d.join("bin");
    fs::create_dir_all(&bin).unwrap();
    let helper = bin.join("docker-credential-kilntest");
    fs::write(&helper, "#!/bin/sh\nread server\necho \"$server\" >> \"$(dirname \"$0\")/asked\"\necho '{\"ServerURL\":\"'$server'\",\"Username\":\"helperuser\",\"Secret\":\"helper-secret\"}'\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&helper, fs::Permissions::from_mode(0o755)).unwrap();
    let docker_config = d.join("docker-config");
    fs::create_dir_all(&docker_config).unwrap();
    fs::write(
        docker_config.join("config.json"),
        format!(r#"{{"credHelpers":{{"{addr}":"kilntest"}}}}"#),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let env = [
        ("DOCKER_CONFIG", docker_config.to_str().unwrap()),
        ("PATH", path.as_str()),
    ];
    ok(kiln_env(
        &store,
        &["push", "busybox:test", &format!("{addr}/helped/busybox:1")],
        &env,
    ));
    assert_eq!(
        fs::read_to_string(bin.join("asked")).unwrap().trim(),
        addr,
        "the helper was asked for this registry"
    );
    // and credsStore, the default helper
    fs::write(
        docker_config.join("config.json"),
        r#"{"credsStore":"kilntest"}"#,
    )
    .unwrap();
    ok(kiln_env(
        &d.join("fresh"),
        &["pull", &format!("{addr}/helped/busybox:1")],
        &env,
    ));
    drop(registry);
}

#[test]
fn an_index_yields_the_image_for_the_platform() {
    let (dir, store) = setup();
    let reg = Registry::start(dir.path());
    let repo = format!("{}/multi/busybox", reg.addr);
    let digest = ok(kiln(
        &store,
        &["push", "busybox:test", &format!("{repo}:amd64")],
    ))
    .stdout
    .trim()
    .to_string();
    let size = fs::metadata(
        store
            .join("oci/blobs/sha256")
            .join(digest.trim_start_matches("sha256:")),
    )
    .unwrap()
    .len();
    // an index naming the image for amd64 and, falsely, for arm64 too
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": size, "platform": {"architecture": "arm64", "os": "linux"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": size, "platform": {"architecture": "amd64", "os": "linux"}}
        ]
    });
    let put = Command::new("curl")
        .args([
            "-sf",
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/vnd.oci.image.index.v1+json",
            "--data-binary",
        ])
        .arg(index.to_string())
        .arg(format!(
            "http://{repo_url}/manifests/multi",
            repo_url = repo.replacen('/', "/v2/", 1)
        ))
        .output()
        .unwrap();
    assert!(
        put.status.success(),
        "putting the index: {}",
        String::from_utf8_lossy(&put.stderr)
    );
    let fresh = dir.path().join("fresh");
    let r = ok(kiln(
        &fresh,
        &[
            "pull",
            "--platform",
            "linux/amd64",
            &format!("{repo}:multi"),
        ],
    ));
    // the name holds the index (its digest, as `docker pull` prints it),
    // with the amd64 entry's image pulled
    let index_digest = kiln_oci::digest::sha256(index.to_string().as_bytes()).to_string();
    assert_eq!(r.stdout.trim(), index_digest);
    assert_mentions(&r.stderr, &[&format!("index, taking {digest}")]);
    let inspect: serde_json::Value = serde_json::from_str(
        &ok(kiln(
            &fresh,
            &[
                "inspect",
                "--platform",
                "linux/amd64",
                &format!("{repo}:multi"),
            ],
        ))
        .stdout,
    )
    .unwrap();
    assert_eq!(
        inspect["digest"],
        digest.as_str(),
        "the amd64 entry's manifest"
    );
    let r = kiln(
        &fresh,
        &[
            "pull",
            "--platform",
            "linux/s390x",
            &format!("{repo}:multi"),
        ],
    );
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("has no image for linux/s390x"),
        "{}",
        r.stderr
    );
}

#[test]
fn a_prune_during_a_pull_waits_and_collects_nothing_it_fetched() {
    let (dir, store, reg, _) = app_and_registry();
    ok(kiln(
        &store,
        &["push", "app:1", &format!("{}/held/app:1", reg.addr)],
    ));
    // every blob of the pull comes slowly, so a prune starts while the
    // first ones are already in the store and the name is not yet written
    let proxy = Proxy::start(
        &reg.addr,
        vec![Rule {
            method: "GET",
            path_part: "/blobs/sha256:",
            fault: Fault::Delay(300),
            times: 100,
        }],
    );
    let fresh = dir.path().join("fresh-store");
    let reference = format!("{}/held/app:1", proxy.addr);
    let pull = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("--store")
        .arg(&fresh)
        .args(["pull", &reference])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    for _ in 0..400 {
        if proxy.count("GET", "/blobs/sha256:") >= 4 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let prune = kiln(&fresh, &["prune"]);
    let pulled = pull.wait_with_output().unwrap();
    assert!(
        pulled.status.success(),
        "{}",
        String::from_utf8_lossy(&pulled.stderr)
    );
    assert_eq!(prune.code, 0, "{}", prune.stderr);
    assert_mentions(&prune.stderr, &["waiting for the builds, pulls and runs"]);
    let fsck = kiln(&fresh, &["fsck"]);
    assert_eq!(
        (fsck.code, fsck.stdout.as_str()),
        (0, ""),
        "{}",
        fsck.stderr
    );
    ok(kiln(&fresh, &["run", &reference, "--", "true"]));
}
