//! External tools (mke2fs, qemu-img, mmdebstrap, git, credential helpers)
//! run one way: a failure is a [`ToolError`] naming the command and
//! carrying what it printed on stderr, so the caller can tell a tool that
//! is missing from one that refused, and add its own hint.
#![cfg_attr(not(test), deny(clippy::print_stdout, clippy::print_stderr))]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, ExitStatus, Stdio};

/// How many of a streamed tool's last stderr lines its error keeps.
const TAIL: usize = 15;

/// Why a tool did not do its job.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// It could not be started (not installed, not executable).
    #[error("running {command}: {source}")]
    Start {
        command: String,
        #[source]
        source: std::io::Error,
    },
    /// It ran and failed; `stderr` is what it printed (its last lines when
    /// streamed).
    #[error("{command} failed ({status}): {stderr}")]
    Failed {
        command: String,
        status: ExitStatus,
        stderr: String,
    },
    /// Its input could not be written, or its output read.
    #[error("talking to {command}: {source}")]
    Io {
        command: String,
        #[source]
        source: std::io::Error,
    },
}

impl ToolError {
    /// The tool was not there to run.
    pub fn is_missing(&self) -> bool {
        matches!(self, ToolError::Start { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

/// Runs `cmd` to the end; returns its stdout.
pub fn run(cmd: &mut Command) -> Result<String, ToolError> {
    run_with_input(cmd, b"")
}

/// [`run`] with `input` on the tool's stdin (written on its own thread: a
/// tool may fill its output pipes before it reads).
pub fn run_with_input(cmd: &mut Command, input: &[u8]) -> Result<String, ToolError> {
    let (command, mut child) = spawn(cmd.stdin(Stdio::piped()).stdout(Stdio::piped()))?;
    let mut stdin = child.stdin.take().expect("piped");
    let (written, out) = std::thread::scope(|s| {
        let w = s.spawn(move || stdin.write_all(input));
        let out = child.wait_with_output();
        (w.join(), out)
    });
    let io = |source| ToolError::Io {
        command: command.clone(),
        source,
    };
    let out = out.map_err(io)?;
    if !out.status.success() {
        return Err(ToolError::Failed {
            command,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    if let Ok(Err(e)) = written {
        return Err(io(e));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `cmd` with its stdout discarded, passing each stderr line to
/// `line` as it comes; a failure keeps the last lines.
pub fn run_streaming(cmd: &mut Command, line: &mut dyn FnMut(&str)) -> Result<(), ToolError> {
    let (command, mut child) = spawn(cmd.stdin(Stdio::null()).stdout(Stdio::null()))?;
    let mut tail = VecDeque::new();
    if let Some(err) = child.stderr.take() {
        for l in BufReader::new(err).lines().map_while(Result::ok) {
            line(&l);
            tail.push_back(l);
            if tail.len() > TAIL {
                tail.pop_front();
            }
        }
    }
    let status = child.wait().map_err(|source| ToolError::Io {
        command: command.clone(),
        source,
    })?;
    if !status.success() {
        return Err(ToolError::Failed {
            command,
            status,
            stderr: Vec::from(tail).join("\n"),
        });
    }
    Ok(())
}

/// Starts `cmd` with its stderr piped; returns how errors name it.
fn spawn(cmd: &mut Command) -> Result<(String, Child), ToolError> {
    let command = format!("{cmd:?}");
    match cmd.stderr(Stdio::piped()).spawn() {
        Ok(child) => Ok((command, child)),
        Err(source) => Err(ToolError::Start { command, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_input_and_failures() {
        let out = run_with_input(Command::new("cat").arg("-"), b"hello").unwrap();
        assert_eq!(out, "hello");
        let e = run(Command::new("sh").args(["-c", "echo nope >&2; exit 3"])).unwrap_err();
        let ToolError::Failed { stderr, status, .. } = &e else {
            panic!("{e}")
        };
        assert_eq!((stderr.as_str(), status.code()), ("nope", Some(3)));
        assert!(e.to_string().contains("\"sh\""), "{e}");
        let e = run(&mut Command::new("kiln-surely-not-a-tool")).unwrap_err();
        assert!(e.is_missing(), "{e}");
    }

    #[test]
    fn streamed_lines_and_the_tail_of_a_failure() {
        let mut seen = Vec::new();
        let script = "for i in $(seq 1 20); do echo line$i >&2; done; exit 1";
        let e = run_streaming(Command::new("sh").args(["-c", script]), &mut |l| {
            seen.push(l.to_string())
        })
        .unwrap_err();
        assert_eq!(seen.len(), 20);
        let ToolError::Failed { stderr, .. } = e else {
            panic!("a failure")
        };
        assert!(
            stderr.starts_with("line6\n") && stderr.ends_with("line20"),
            "{stderr}"
        );
    }
}
