//! Health checks: an HTTP GET that must answer a status, or a command that
//! must exit 0, tried until it passes or the service's timeout ends.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use kiln_definition::{Check, Health};

/// One try: `Ok` when healthy, else what it saw.
pub fn probe(check: &Check, addr: SocketAddr) -> Result<(), String> {
    match check {
        Check::Http { path, status } => {
            let got = http_status(addr, path)?;
            if got == *status {
                Ok(())
            } else {
                Err(format!("GET {path} answered {got}, not {status}"))
            }
        }
        Check::Command(cmd) => {
            let out = Command::new("/bin/sh")
                .args(["-c", cmd])
                .env("KILN_HOST", addr.ip().to_string())
                .env("KILN_PORT", addr.port().to_string())
                .output()
                .map_err(|e| format!("running {cmd:?}: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "{cmd:?} exited {}: {}",
                    out.status.code().unwrap_or(-1),
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            }
        }
    }
}

/// The status of `GET path` on `addr` (HTTP/1.0, the connection closed).
pub fn http_status(addr: SocketAddr, path: &str) -> Result<u16, String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("connecting to {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: kiln-health\r\n\r\n"
    )
    .map_err(|e| format!("asking {addr}: {e}"))?;
    let mut head = [0u8; 64];
    let n = s
        .read(&mut head)
        .map_err(|e| format!("reading {addr}: {e}"))?;
    let line = String::from_utf8_lossy(&head[..n]);
    line.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("{addr} did not answer HTTP: {line:?}"))
}

/// Tries until healthy or `health.timeout` ends; the last failure if not.
pub fn wait(
    health: &Health,
    addr: SocketAddr,
    alive: &dyn Fn() -> bool,
) -> Result<Duration, String> {
    let start = Instant::now();
    let limit = Duration::from_secs(health.timeout);
    loop {
        match probe(&health.check, addr) {
            Ok(()) => return Ok(start.elapsed()),
            Err(e) if start.elapsed() >= limit => {
                return Err(format!("not healthy after {} s: {e}", health.timeout))
            }
            Err(e) if !alive() => return Err(format!("it stopped before it was healthy: {e}")),
            Err(_) => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}
