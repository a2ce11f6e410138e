//! The traffic front: an HAProxy switched through its runtime API (a Unix
//! socket, one command per connection), so a switch needs no reload. Each
//! service's backend holds two server slots, `kiln1` and `kiln2`; an
//! instance takes a slot (its address set, then `ready`), and leaves it by
//! `drain` (no new requests, the running ones finish) then `maint`. For a
//! `front.listen`, kiln writes the configuration and starts the HAProxy
//! itself (`STORE/services/NAME/`), and it keeps running after kiln exits.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Why HAProxy could not be driven.
#[derive(Debug, thiserror::Error)]
pub enum FrontError {
    #[error("HAProxy's runtime API socket {0} does not exist: is HAProxy running with `stats socket {0} level admin`?")]
    NoSocket(PathBuf),
    #[error("HAProxy's runtime API at {socket}: {source}")]
    Io {
        socket: PathBuf,
        source: std::io::Error,
    },
    #[error("HAProxy refused `{command}`: {answer}")]
    Refused { command: String, answer: String },
    #[error("HAProxy's backend {backend:?} has no server {server:?}: give the backend `server-template kiln 2 127.0.0.1:1 disabled`")]
    NoSlot { backend: String, server: String },
    #[error("{listen} is already in use: the service's front cannot listen there")]
    PortInUse { listen: SocketAddr },
    #[error("starting HAProxy: {0}")]
    Start(String),
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A slot's state, as the runtime API sets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotState {
    Ready,
    Drain,
    Maint,
}

/// One HAProxy backend, through its runtime API.
#[derive(Debug, Clone)]
pub struct Front {
    pub socket: PathBuf,
    pub backend: String,
}

/// The name of slot `n` (1 or 2).
pub fn slot(n: u8) -> String {
    format!("kiln{n}")
}

/// What `show stat` says of a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerStat {
    pub name: String,
    /// UP, DOWN, MAINT, DRAIN, no check...
    pub status: String,
    /// Sessions open now.
    pub current: u64,
    pub addr: String,
}

impl Front {
    /// Sends one command; its answer.
    pub fn command(&self, command: &str) -> Result<String, FrontError> {
        if !self.socket.exists() {
            return Err(FrontError::NoSocket(self.socket.clone()));
        }
        let io = |source| FrontError::Io {
            socket: self.socket.clone(),
            source,
        };
        let mut s = UnixStream::connect(&self.socket).map_err(io)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(io)?;
        s.write_all(format!("{command}\n").as_bytes()).map_err(io)?;
        let mut answer = String::new();
        s.read_to_string(&mut answer).map_err(io)?;
        let answer = answer.trim().to_string();
        let bad = [
            "Unknown",
            "No such",
            "Require",
            "invalid",
            "not found",
            "cannot",
            "Permission denied",
        ];
        if bad.iter().any(|b| answer.contains(b)) {
            if answer.contains("No such server") {
                let server = command
                    .split('/')
                    .nth(1)
                    .and_then(|s| s.split_whitespace().next())
                    .unwrap_or("");
                return Err(FrontError::NoSlot {
                    backend: self.backend.clone(),
                    server: server.to_string(),
                });
            }
            return Err(FrontError::Refused {
                command: command.to_string(),
                answer,
            });
        }
        Ok(answer)
    }

    /// Points slot `n` at `addr`.
    pub fn set_addr(&self, n: u8, addr: SocketAddr) -> Result<(), FrontError> {
        self.command(&format!(
            "set server {}/{} addr {} port {}",
            self.backend,
            slot(n),
            addr.ip(),
            addr.port()
        ))
        .map(drop)
    }

    pub fn set_state(&self, n: u8, state: SlotState) -> Result<(), FrontError> {
        let word = match state {
            SlotState::Ready => "ready",
            SlotState::Drain => "drain",
            SlotState::Maint => "maint",
        };
        self.command(&format!(
            "set server {}/{} state {word}",
            self.backend,
            slot(n)
        ))
        .map(drop)
    }

    /// The backend's servers.
    pub fn servers(&self) -> Result<Vec<ServerStat>, FrontError> {
        let csv = self.command("show stat")?;
        let mut lines = csv.lines();
        let header: Vec<&str> = lines
            .next()
            .unwrap_or("")
            .trim_start_matches("# ")
            .split(',')
            .collect();
        let col = |name: &str| header.iter().position(|h| *h == name);
        let (px, sv, st, scur, addr) = (
            col("pxname"),
            col("svname"),
            col("status"),
            col("scur"),
            col("addr"),
        );
        let mut out = Vec::new();
        for line in lines {
            let f: Vec<&str> = line.split(',').collect();
            let get = |c: Option<usize>| c.and_then(|i| f.get(i)).copied().unwrap_or("");
            if get(px) != self.backend || matches!(get(sv), "BACKEND" | "FRONTEND") {
                continue;
            }
            out.push(ServerStat {
                name: get(sv).to_string(),
                status: get(st).to_string(),
                current: get(scur).parse().unwrap_or(0),
                addr: get(addr).to_string(),
            });
        }
        if out.is_empty() {
            return Err(FrontError::NoSlot {
                backend: self.backend.clone(),
                server: slot(1),
            });
        }
        Ok(out)
    }

    /// Waits (up to `limit`) until slot `n` has no open sessions.
    pub fn wait_drained(&self, n: u8, limit: Duration) -> Result<bool, FrontError> {
        let start = Instant::now();
        loop {
            let busy = self
                .servers()?
                .iter()
                .any(|s| s.name == slot(n) && s.current > 0);
            if !busy {
                return Ok(true);
            }
            if start.elapsed() > limit {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The configuration of a local HAProxy for service `name`.
pub fn config(name: &str, listen: SocketAddr, dir: &Path) -> String {
    format!(
        "# written by kiln for service {name}; switched through the runtime API\n\
global\n\
    stats socket {sock} mode 600 level admin\n\
    pidfile {pid}\n\
defaults\n\
    mode http\n\
    timeout connect 5s\n\
    timeout client 60s\n\
    timeout server 60s\n\
    retries 3\n\
    option redispatch\n\
frontend {name}\n\
    bind {listen}\n\
    default_backend {name}\n\
backend {name}\n\
    balance roundrobin\n\
    server-template kiln 2 127.0.0.1:1 disabled\n",
        sock = dir.join("haproxy.sock").display(),
        pid = dir.join("haproxy.pid").display(),
    )
}

/// Whether the HAProxy whose pid file is `pidfile` runs.
fn running(pidfile: &Path) -> bool {
    std::fs::read_to_string(pidfile)
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok())
        .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists())
}

/// Makes sure service `name`'s local HAProxy runs, listening on `listen`
/// (started when it does not; a port taken by anything else is an error).
pub fn ensure_local(name: &str, listen: SocketAddr, dir: &Path) -> Result<Front, FrontError> {
    let front = Front {
        socket: dir.join("haproxy.sock"),
        backend: name.to_string(),
    };
    let cfg = dir.join("haproxy.cfg");
    let text = config(name, listen, dir);
    let same_config = std::fs::read_to_string(&cfg).is_ok_and(|t| t == text);
    if running(&dir.join("haproxy.pid")) && same_config && front.socket.exists() {
        return Ok(front);
    }
    if std::net::TcpListener::bind(listen).is_err() {
        return Err(FrontError::PortInUse { listen });
    }
    std::fs::create_dir_all(dir).map_err(|source| FrontError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    std::fs::write(&cfg, text).map_err(|source| FrontError::Write {
        path: cfg.clone(),
        source,
    })?;
    kiln_tool::run(Command::new("haproxy").arg("-D").arg("-f").arg(&cfg))
        .map_err(|e| FrontError::Start(e.to_string()))?;
    let start = Instant::now();
    while !front.socket.exists() {
        if start.elapsed() > Duration::from_secs(10) {
            return Err(FrontError::Start(format!(
                "no runtime API socket at {} after 10 s",
                front.socket.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(front)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_local_config_has_two_slots_and_an_admin_socket() {
        let c = config(
            "web",
            "127.0.0.1:9080".parse().unwrap(),
            Path::new("/s/web"),
        );
        assert!(c.contains("stats socket /s/web/haproxy.sock mode 600 level admin"));
        assert!(c.contains("bind 127.0.0.1:9080"));
        assert!(c.contains("server-template kiln 2 127.0.0.1:1 disabled"));
    }
}
