//! External tools (sfdisk, mkfs.vfat, mtools, mke2fs, qemu-img) run through
//! one helper that puts the argv and the tool's stderr into the error.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::VmError;

/// Runs `cmd`; a failure (or a missing tool) is an error naming the command
/// and what it printed.
pub fn run(cmd: &mut Command) -> Result<String, VmError> {
    run_with_input(cmd, b"")
}

/// [`run`] with `input` on the command's standard input.
pub fn run_with_input(cmd: &mut Command, input: &[u8]) -> Result<String, VmError> {
    let shown = format!("{cmd:?}");
    let missing = |e: std::io::Error| {
        VmError::Tool(format!(
            "running {shown}: {e} (kiln needs fdisk, dosfstools, mtools, e2fsprogs >= 1.47.2 and qemu-utils)"
        ))
    };
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(missing)?;
    let mut stdin = child.stdin.take().expect("piped");
    // written on its own thread: a tool may fill its output pipes first
    let writer = std::thread::scope(|s| {
        let w = s.spawn(move || stdin.write_all(input));
        let out = child.wait_with_output();
        (w.join(), out)
    });
    let (written, out) = writer;
    let out = out.map_err(missing)?;
    if let Ok(Err(e)) = written {
        if out.status.success() {
            return Err(VmError::Tool(format!("writing to {shown}: {e}")));
        }
    }
    if !out.status.success() {
        return Err(VmError::Tool(format!(
            "{shown} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
