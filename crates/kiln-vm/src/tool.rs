//! External tools (sfdisk, mkfs.vfat, mtools, mke2fs, qemu-img) run through
//! one helper that puts the argv and the tool's stderr into the error.

use std::process::Command;

use crate::VmError;

/// Runs `cmd`; a failure (or a missing tool) is an error naming the command
/// and what it printed.
pub fn run(cmd: &mut Command) -> Result<String, VmError> {
    let shown = format!("{cmd:?}");
    let out = cmd.output().map_err(|e| {
        VmError::Tool(format!(
            "running {shown}: {e} (kiln needs fdisk, dosfstools, mtools, e2fsprogs >= 1.47.1 and qemu-utils)"
        ))
    })?;
    if !out.status.success() {
        return Err(VmError::Tool(format!(
            "{shown} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
