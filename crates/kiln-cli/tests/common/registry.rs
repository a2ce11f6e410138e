//! A real `docker-registry` on a loopback port, and skopeo to read it.

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use super::wait_for_port;

/// A docker-registry on 127.0.0.1, plain HTTP, storage in a temp dir.
pub struct Registry {
    child: Child,
    pub addr: String,
}

impl Registry {
    pub fn start(dir: &Path) -> Registry {
        super::need(&["docker-registry", "skopeo"]);
        Self::start_with(dir, "plain", "", "")
    }

    /// A registry with `http_extra` (indented under `http:`) and `auth`
    /// (a top-level YAML block) added to its config.
    pub fn start_with(dir: &Path, name: &str, http_extra: &str, auth: &str) -> Registry {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let config = dir.join(format!("{name}.yml"));
        let data = dir.join(format!("{name}-data"));
        fs::write(&config, format!("version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n{http_extra}{auth}", data.display())).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry must be installed (.ci/run installs it)");
        wait_for_port(&addr);
        Registry { child, addr }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn skopeo(args: &[&str]) -> String {
    let out = Command::new("skopeo").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The manifest digest skopeo reads at `transport_ref` (`docker://…` on a
/// plain-HTTP registry, `oci-archive:…`).
pub fn skopeo_digest(transport_ref: &str) -> String {
    let mut args = vec!["inspect"];
    if transport_ref.starts_with("docker://") {
        args.push("--tls-verify=false");
    }
    args.push(transport_ref);
    let v: serde_json::Value = serde_json::from_str(&skopeo(&args)).unwrap();
    v["Digest"].as_str().unwrap().to_string()
}
