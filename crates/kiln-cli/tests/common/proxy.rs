//! A fault-injecting HTTP proxy for registry tests: it sits on a loopback
//! port in front of a real registry, forwards one request per connection,
//! counts what passes, and breaks chosen requests (an HTTP status instead of
//! the answer, a body cut off half way, a slow body).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What to do to a request that matches `method` and contains `path_part`.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer with this status (and `Retry-After: 1` for 429) instead of forwarding.
    Status(u16),
    /// Forward, then send only half of the response body and close.
    CutBody,
    /// Forward, sending the body in small pieces with pauses.
    Slow,
    /// Wait this many milliseconds, then forward.
    Delay(u64),
    /// Forward, flipping one byte of the response body.
    Corrupt,
}

#[derive(Clone, Debug)]
pub struct Rule {
    pub method: &'static str,
    pub path_part: &'static str,
    pub fault: Fault,
    /// How many matching requests get the fault before requests pass.
    pub times: usize,
}

#[derive(Default)]
struct State {
    rules: Vec<Rule>,
    /// Every request seen: (method, path).
    seen: Vec<(String, String)>,
}

pub struct Proxy {
    pub addr: String,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    pub fn start(upstream: &str, rules: Vec<Rule>) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let state = Arc::new(Mutex::new(State {
            rules,
            seen: vec![],
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, stp, up) = (state.clone(), stop.clone(), upstream.to_string());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stp.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let (st, up) = (st.clone(), up.clone());
                std::thread::spawn(move || {
                    let _ = serve(conn, &up, &st);
                });
            }
        });
        Proxy { addr, state, stop }
    }

    /// How many requests matched `method` with `path_part` in their path.
    pub fn count(&self, method: &str, path_part: &str) -> usize {
        self.state
            .lock()
            .unwrap()
            .seen
            .iter()
            .filter(|(m, p)| m == method && p.contains(path_part))
            .count()
    }

    pub fn set_rules(&self, rules: Vec<Rule>) {
        self.state.lock().unwrap().rules = rules;
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(&self.addr);
    }
}

fn serve(mut client: TcpStream, upstream: &str, state: &Mutex<State>) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut head = String::new();
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let request_line = line.clone();
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    head.push_str(&line);
    let mut len = 0usize;
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
        if lower.starts_with("connection:") {
            continue;
        }
        head.push_str(&line);
    }
    head.push_str("Connection: close\r\n\r\n");
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body)?;
    let fault = {
        let mut st = state.lock().unwrap();
        st.seen.push((method.clone(), path.clone()));
        let rule = st
            .rules
            .iter_mut()
            .find(|r| r.method == method && path.contains(r.path_part) && r.times > 0);
        rule.map(|r| {
            r.times -= 1;
            r.fault.clone()
        })
    };
    if let Some(Fault::Status(code)) = fault {
        let retry = if code == 429 {
            "Retry-After: 1\r\n"
        } else {
            ""
        };
        return client.write_all(
            format!(
                "HTTP/1.1 {code} Injected\r\nContent-Length: 0\r\n{retry}Connection: close\r\n\r\n"
            )
            .as_bytes(),
        );
    }
    if let Some(Fault::Delay(ms)) = fault {
        std::thread::sleep(Duration::from_millis(ms));
    }
    let mut up = TcpStream::connect(upstream)?;
    up.write_all(head.as_bytes())?;
    up.write_all(&body)?;
    let mut answer = Vec::new();
    up.read_to_end(&mut answer)?;
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
        .unwrap_or(answer.len());
    match fault {
        Some(Fault::CutBody) => {
            let cut = split + (answer.len() - split) / 2;
            client.write_all(&answer[..cut])?;
            client.flush()?;
            let _ = client.shutdown(std::net::Shutdown::Both);
            Ok(())
        }
        Some(Fault::Corrupt) if answer.len() > split => {
            let mut bad = answer.clone();
            bad[split] ^= 0xff;
            client.write_all(&bad)
        }
        Some(Fault::Slow) => {
            client.write_all(&answer[..split])?;
            for piece in answer[split..].chunks(4096) {
                client.write_all(piece)?;
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(())
        }
        _ => client.write_all(&answer),
    }
}
