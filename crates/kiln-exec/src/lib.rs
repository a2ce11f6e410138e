//! Running one step in an isolated root filesystem. The only crate that
//! unshares namespaces or changes mount state.
//!
//! Isolation happens in freshly exec'd helper processes, never by forking a
//! (possibly multi-threaded) caller: [`run`] starts `kiln __exec SPEC`, which
//! unshares the mount, PID, UTS and IPC namespaces (and the network one for
//! `--network=none`) and starts `kiln __exec-init SPEC`; that process is PID 1
//! of the new namespace, mounts the overlay root, /proc, a minimal /dev,
//! /sys read-only, resolv.conf, hosts and the step's mounts, pivots into the
//! root and execs the command. Everything dies with the step.
#![cfg_attr(not(test), deny(clippy::print_stdout, clippy::print_stderr))]

pub mod binfmt;
mod confine;
mod init;
mod setup_error;
mod spec;

pub use init::{exec_init_main, exec_main};
pub use spec::{Mount, MountKind, Network, RunSpec};

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

/// What went wrong setting up or running a step.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("writing the step spec: {0}")]
    Spec(#[from] serde_json::Error),
}

/// How a step ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The command's exit code (128 + signal when killed).
    pub code: i32,
    /// The last lines it printed (stdout and stderr interleaved).
    pub tail: Vec<String>,
}

/// Runs `spec` through `kiln_exe` (the kiln binary itself), sending each
/// output line to `on_line` as it comes.
pub fn run(
    kiln_exe: &Path,
    spec: &RunSpec,
    spec_file: &Path,
    on_line: &mut dyn FnMut(&str),
) -> Result<Outcome, Error> {
    std::fs::write(spec_file, serde_json::to_vec(spec)?).map_err(|e| Error::Io {
        what: format!("writing {}", spec_file.display()),
        source: e,
    })?;
    let (reader, writer) = std::io::pipe().map_err(|e| Error::Io {
        what: "creating a pipe".into(),
        source: e,
    })?;
    let writer2 = writer.try_clone().map_err(|e| Error::Io {
        what: "creating a pipe".into(),
        source: e,
    })?;
    let mut child = Command::new(kiln_exe)
        .arg("__exec")
        .arg(spec_file)
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(writer2)
        .spawn()
        .map_err(|e| Error::Io {
            what: format!("starting {}", kiln_exe.display()),
            source: e,
        })?;
    let mut tail: std::collections::VecDeque<String> = Default::default();
    for line in BufReader::new(reader).split(b'\n') {
        let line = line.map_err(|e| Error::Io {
            what: "reading step output".into(),
            source: e,
        })?;
        let line = String::from_utf8_lossy(&line).into_owned();
        on_line(&line);
        tail.push_back(line);
        if tail.len() > 20 {
            tail.pop_front();
        }
    }
    let status = child.wait().map_err(|e| Error::Io {
        what: "waiting for the step".into(),
        source: e,
    })?;
    let _ = std::fs::remove_file(spec_file);
    Ok(Outcome {
        code: exit_code(status),
        tail: tail.into(),
    })
}

/// Runs `spec` with the command's stdout and stderr going straight to ours
/// (for `kiln run`); returns its exit code.
pub fn run_attached(kiln_exe: &Path, spec: &RunSpec, spec_file: &Path) -> Result<i32, Error> {
    std::fs::write(spec_file, serde_json::to_vec(spec)?).map_err(|e| Error::Io {
        what: format!("writing {}", spec_file.display()),
        source: e,
    })?;
    let status = Command::new(kiln_exe)
        .arg("__exec")
        .arg(spec_file)
        .status()
        .map_err(|e| Error::Io {
            what: format!("starting {}", kiln_exe.display()),
            source: e,
        })?;
    let _ = std::fs::remove_file(spec_file);
    Ok(exit_code(status))
}

/// The exit code of a status, 128 + the signal for a killed process.
pub fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}
