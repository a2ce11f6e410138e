//! Booting a disk in QEMU: the boot test (headless, waits for the marker
//! the first-boot unit writes) and a person's console.
//!
//! Hardware virtualization (KVM) when this machine's works, software
//! emulation (TCG) otherwise: see [`Accel::detect`]. A /dev/kvm that exists
//! but does not work makes QEMU abort or pause forever, so KVM is tried on
//! the firmware alone first. Under TCG, `-cpu max` and a virtio RNG keep
//! the kernel from waiting for entropy. The disk is attached with
//! `snapshot=on`, so booting never changes the artifact. QEMU is ended by
//! its process id when the marker appears or the timeout passes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::VmError;

/// OVMF's code and variable-store template, in order of preference: the
/// 2 MiB build reaches the boot loader ~0.7 s sooner under software
/// emulation; the 4 MiB one is the only build from Debian 13 on.
const FIRMWARE: [(&str, &str); 2] = [
    (
        "/usr/share/OVMF/OVMF_CODE.fd",
        "/usr/share/OVMF/OVMF_VARS.fd",
    ),
    (
        "/usr/share/OVMF/OVMF_CODE_4M.fd",
        "/usr/share/OVMF/OVMF_VARS_4M.fd",
    ),
];

/// The firmware installed here: (code, variable-store template).
fn firmware() -> (&'static str, &'static str) {
    FIRMWARE
        .into_iter()
        .find(|(code, vars)| Path::new(code).is_file() && Path::new(vars).is_file())
        .unwrap_or(FIRMWARE[1])
}

/// How QEMU runs the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualization, `-accel kvm -cpu host`.
    Kvm,
    /// Software emulation, `-accel tcg -cpu max`: slow, works anywhere.
    Tcg,
}

/// How long the firmware may take to print its first line under KVM (it
/// takes well under a second; under software emulation about five).
const KVM_PROBE: Duration = Duration::from_secs(10);

impl Accel {
    /// KVM when `/dev/kvm` opens and OVMF, booted under it without disks,
    /// prints to its serial console within [`KVM_PROBE`]; else TCG.
    /// `KILN_ACCEL=kvm` or `tcg` skips the probe. Decided once per process.
    pub fn detect(work: &Path) -> Accel {
        static CHOSEN: OnceLock<Accel> = OnceLock::new();
        *CHOSEN.get_or_init(|| match std::env::var("KILN_ACCEL").as_deref() {
            Ok("kvm") => Accel::Kvm,
            Ok("tcg") => Accel::Tcg,
            _ => probe_kvm(work),
        })
    }

    /// How logs name it.
    pub fn describe(self) -> &'static str {
        match self {
            Accel::Kvm => "KVM",
            Accel::Tcg => "software emulation",
        }
    }

    fn args(self) -> [&'static str; 4] {
        match self {
            Accel::Kvm => ["-accel", "kvm", "-cpu", "host"],
            Accel::Tcg => ["-accel", "tcg", "-cpu", "max"],
        }
    }

    /// The guest's CPUs: two under KVM. Under software emulation each
    /// virtual CPU is a host thread, and on a host with fewer than four
    /// cores a busy moment starves one of them: it misses its timer while
    /// the other waits for it, and the guest kernel can hang in RCU stall
    /// reports. There one CPU boots as fast once the host is busy (and
    /// about a third slower on an idle host).
    fn cpus(self) -> &'static str {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        match self {
            Accel::Kvm => "2",
            Accel::Tcg if cores >= 4 => "2",
            Accel::Tcg => "1",
        }
    }
}

/// Whether a firmware runs under KVM here (see [`Accel::detect`]).
fn probe_kvm(work: &Path) -> Accel {
    let usable = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    // a directory of its own: the boot's variable store is not touched
    let dir = work.join("kvm-probe");
    if !usable || std::fs::create_dir_all(&dir).is_err() {
        return Accel::Tcg;
    }
    let _cleanup = crate::RemoveOnDrop(dir.clone());
    let Ok(vars) = vars_copy(&dir) else {
        return Accel::Tcg;
    };
    let serial = dir.join("serial.log");
    let child = machine(Accel::Kvm, "256", &vars)
        .args(["-nodefaults", "-monitor", "none", "-serial"])
        .arg(format!("file:{}", serial.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let Ok(child) = child else {
        return Accel::Tcg;
    };
    let mut qemu = Running(child);
    let started = Instant::now();
    while started.elapsed() < KVM_PROBE {
        if std::fs::metadata(&serial).is_ok_and(|m| m.len() > 0) {
            return Accel::Kvm;
        }
        // aborted (an MSR it cannot set) or gone
        if !matches!(qemu.0.try_wait(), Ok(None)) {
            return Accel::Tcg;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // paused on an internal error, or too slow to be worth it
    Accel::Tcg
}

/// What a successful boot test saw.
#[derive(Debug, Clone)]
pub struct Booted {
    /// The marker line (`KILN-READY HOSTNAME root=… /mount=…`).
    pub marker: String,
    /// Each boot test's output lines, in order.
    pub outputs: Vec<Vec<String>>,
    pub seconds: f64,
}

/// The QEMU command for `disk`, with the marker port written to `marker`
/// (none: no port, so the boot tests baked into the disk do not run)
/// and the serial console to `console` (`None`: the terminal).
fn qemu(
    accel: Accel,
    disk: &Path,
    data: &[PathBuf],
    vars: &Path,
    marker: Option<&Path>,
    console: Option<&Path>,
    forwards: &[(u16, u16)],
) -> Command {
    let mut cmd = machine(accel, "1024", vars);
    cmd.args(["-smp", accel.cpus()])
        .arg("-drive")
        .arg(format!(
            "file={},format=raw,if=none,id=os,snapshot=on",
            disk.display()
        ))
        // the firmware boots the OS disk first, without trying the CD-ROM
        // and network boot
        .args(["-device", "virtio-blk-pci,drive=os,bootindex=0"]);
    // data disks are written for real: they outlive OS disks
    for (i, d) in data.iter().enumerate() {
        cmd.arg("-drive")
            .arg(format!(
                "file={},format=raw,if=none,id=data{i}",
                d.display()
            ))
            .arg("-device")
            .arg(format!("virtio-blk-pci,drive=data{i}"));
    }
    // user-mode networking: the guest's DHCP gets 10.0.2.15; its ports
    // in `forwards` are reached on ports of this machine's loopback
    let forward: String = forwards
        .iter()
        .map(|(host, guest)| format!(",hostfwd=tcp:127.0.0.1:{host}-:{guest}"))
        .collect();
    cmd.arg("-netdev")
        .arg(format!("user,id=net{forward}"))
        .args(["-device", "virtio-net-pci,netdev=net,romfile="]);
    cmd.args(["-device", "virtio-rng-pci"]);
    if let Some(marker) = marker {
        cmd.args(["-device", "virtio-serial-pci"])
            .arg("-chardev")
            .arg(format!("file,id=kilnmarker,path={}", marker.display()))
            .args([
                "-device",
                "virtserialport,chardev=kilnmarker,name=kiln.marker",
            ]);
    }
    match console {
        Some(c) => {
            cmd.args(["-monitor", "none", "-serial"])
                .arg(format!("file:{}", c.display()));
        }
        None => {
            cmd.args(["-nographic"]);
        }
    }
    cmd
}

/// QEMU with `memory` MiB, no display, OVMF with the variable store
/// `vars`, under `accel`.
fn machine(accel: Accel, memory: &str, vars: &Path) -> Command {
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(accel.args())
        .args(["-m", memory, "-display", "none", "-no-reboot"])
        .arg("-drive")
        .arg(format!(
            "if=pflash,format=raw,readonly=on,file={}",
            firmware().0
        ))
        .arg("-drive")
        .arg(format!("if=pflash,format=raw,file={}", vars.display()));
    cmd
}

/// A copy of OVMF's variable store (firmware writes to it).
fn vars_copy(work: &Path) -> Result<PathBuf, VmError> {
    let template = firmware().1;
    let vars = work.join("OVMF_VARS.fd");
    std::fs::copy(template, &vars).map_err(|e| {
        VmError::Boot(format!(
            "copying {template}: {e} (apt-get install ovmf qemu-system-x86)"
        ))
    })?;
    Ok(vars)
}

/// Kills QEMU when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The data disks `disks` in `dir` (`LABEL.raw`), each made unless it
/// exists (a data disk is created once, then only attached).
pub fn data_disks(
    disks: &[crate::DataDisk],
    dir: &Path,
    log: &dyn Fn(&str),
) -> Result<Vec<PathBuf>, VmError> {
    let mut paths = Vec::new();
    for d in disks {
        let path = dir.join(format!("{}.raw", d.label));
        let made = if d.ensure(&path)? { "created" } else { "kept" };
        log(&format!("{made} data disk {}", path.display()));
        paths.push(path);
    }
    Ok(paths)
}

/// The boot test as `kiln vm build`, `kiln vm boot --check` and a bake run
/// it: [`boot_test`] with a line before it, and after it what each of the
/// disk's `tests` (their text, when known) printed in the VM.
pub fn check(
    disk: &Path,
    data: &[PathBuf],
    tests: &[String],
    work: &Path,
    timeout: Duration,
    log: &dyn Fn(&str),
) -> Result<Booted, VmError> {
    log(&format!(
        "boot test: {} in QEMU ({}), up to {} s",
        disk.display(),
        Accel::detect(work).describe(),
        timeout.as_secs()
    ));
    let booted = boot_test(disk, data, work, timeout)?;
    for (i, out) in booted.outputs.iter().enumerate() {
        for l in out {
            log(&format!("  test {}: {l}", i + 1));
        }
        let text = tests.get(i).map(|t| format!(": {t}")).unwrap_or_default();
        log(&format!("test {} passed in the VM{text}", i + 1));
    }
    log(&format!(
        "boot test passed: booted in {:.1} s: {}",
        booted.seconds, booted.marker
    ));
    Ok(booted)
}

/// Boots `disk` headless until the first-boot unit reports a full boot,
/// or fails after `timeout` with the end of the serial console.
pub fn boot_test(
    disk: &Path,
    data: &[PathBuf],
    work: &Path,
    timeout: Duration,
) -> Result<Booted, VmError> {
    std::fs::create_dir_all(work).map_err(|e| VmError::io("creating", work, e))?;
    let vars = vars_copy(work)?;
    let marker = work.join("marker.log");
    let console = work.join("console.log");
    let _ = std::fs::remove_file(&marker);
    let accel = Accel::detect(work);
    let started = Instant::now();
    let child = qemu(accel, disk, data, &vars, Some(&marker), Some(&console), &[])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            VmError::Boot(format!(
                "starting qemu-system-x86_64: {e} (apt-get install qemu-system-x86 ovmf)"
            ))
        })?;
    let mut qemu = Running(child);
    loop {
        let text = std::fs::read_to_string(&marker).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.starts_with("KILN-READY")) {
            return report(&text, line, started.elapsed().as_secs_f64());
        }
        if let Ok(Some(status)) = qemu.0.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = qemu.0.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            return Err(VmError::Boot(format!(
                "QEMU exited ({status}) before the boot finished: {}\n{}{}",
                err.trim(),
                tail(&console),
                kvm_hint(accel)
            )));
        }
        if started.elapsed() > timeout {
            return Err(VmError::Boot(format!(
                "no finished boot within {} s; the serial console ended with:\n{}{}",
                timeout.as_secs(),
                tail(&console),
                kvm_hint(accel)
            )));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Boots `disk` with the serial console on this terminal, for a person;
/// with `ssh_port`, the VM's port 22 is that port of 127.0.0.1.
pub fn boot_console(
    disk: &Path,
    data: &[PathBuf],
    work: &Path,
    ssh_port: Option<u16>,
) -> Result<std::process::ExitStatus, VmError> {
    std::fs::create_dir_all(work).map_err(|e| VmError::io("creating", work, e))?;
    let vars = vars_copy(work)?;
    // a person's boot: the boot tests stay quiet
    let forwards: Vec<(u16, u16)> = ssh_port.map(|p| (p, 22)).into_iter().collect();
    qemu(
        Accel::detect(work),
        disk,
        data,
        &vars,
        None,
        None,
        &forwards,
    )
    .status()
    .map_err(|e| VmError::Boot(format!("starting qemu-system-x86_64: {e}")))
}

/// The boot tests' results from the marker port: a test that failed fails
/// the boot test, with its output.
fn report(text: &str, marker: &str, seconds: f64) -> Result<Booted, VmError> {
    let mut outputs: Vec<Vec<String>> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("KILN-OUT ") {
            let (n, out) = rest.split_once(": ").unwrap_or((rest, ""));
            let n: usize = n.trim_end_matches(':').parse().unwrap_or(0);
            if n >= 1 {
                outputs.resize(outputs.len().max(n), Vec::new());
                outputs[n - 1].push(out.to_string());
            }
        } else if let Some(rest) = line.strip_prefix("KILN-TEST ") {
            let (n, code) = rest.split_once(" exit=").unwrap_or((rest, "?"));
            if code != "0" {
                let n: usize = n.parse().unwrap_or(0);
                let out = outputs.get(n.wrapping_sub(1)).cloned().unwrap_or_default();
                return Err(VmError::Boot(format!(
                    "boot test {n} exited with {code} in the booted VM:{}",
                    out.iter().map(|l| format!("\n  | {l}")).collect::<String>()
                )));
            }
        }
    }
    Ok(Booted {
        marker: marker.to_string(),
        outputs,
        seconds,
    })
}

/// Under KVM, how to rule it out.
fn kvm_hint(accel: Accel) -> &'static str {
    match accel {
        Accel::Kvm => {
            "\nhint: this boot ran under KVM; KILN_ACCEL=tcg boots under software emulation instead"
        }
        Accel::Tcg => "",
    }
}

/// The last lines of the serial console, for errors.
fn tail(console: &Path) -> String {
    let text = std::fs::read_to_string(console).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(25)..]
        .iter()
        .map(|l| format!("  | {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Starts `disk` as a long-running VM in the background (QEMU daemonized:
/// it outlives kiln), its OS disk a snapshot, `data` attached for real,
/// guest port `guest` forwarded to `host` on loopback, its console in
/// `WORK/console.log` and its QMP socket `WORK/qmp.sock`; its pid.
pub fn start_service(
    disk: &Path,
    data: &[PathBuf],
    work: &Path,
    host: u16,
    guest: u16,
) -> Result<u32, VmError> {
    std::fs::create_dir_all(work).map_err(|e| VmError::io("creating", work, e))?;
    let vars = vars_copy(work)?;
    let console = work.join("console.log");
    let pidfile = work.join("qemu.pid");
    let _ = std::fs::remove_file(&pidfile);
    let out = qemu(
        Accel::detect(work),
        disk,
        data,
        &vars,
        None,
        Some(&console),
        &[(host, guest)],
    )
    .arg("-qmp")
    .arg(format!(
        "unix:{},server=on,wait=off",
        work.join("qmp.sock").display()
    ))
    // kiln's power-off request to the guest (see rootfs.rs)
    .args(["-device", "virtio-serial-pci,id=kilnctlbus"])
    .arg("-chardev")
    .arg(format!(
        "socket,id=kilnctl,path={},server=on,wait=off",
        work.join("control.sock").display()
    ))
    .args([
        "-device",
        "virtserialport,bus=kilnctlbus.0,chardev=kilnctl,name=kiln.control",
    ])
    .arg("-daemonize")
    .arg("-pidfile")
    .arg(&pidfile)
    .stdin(Stdio::null())
    .output()
    .map_err(|e| VmError::Boot(format!("starting qemu-system-x86_64: {e}")))?;
    if !out.status.success() {
        return Err(VmError::Boot(format!(
            "QEMU did not start: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    service_pid(work).ok_or_else(|| VmError::Boot("QEMU started but wrote no pid file".into()))
}

/// The pid of the VM started in `work`, while it runs.
pub fn service_pid(work: &Path) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(work.join("qemu.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
}

/// Shuts the VM started in `work` down cleanly (ACPI power button through
/// QMP, so the guest unmounts its filesystems) and waits up to `timeout`
/// for QEMU to exit; whether it did.
pub fn power_down(work: &Path, timeout: Duration) -> Result<bool, VmError> {
    use std::io::{BufRead, BufReader, Write};
    if service_pid(work).is_none() {
        return Ok(true);
    }
    let sock = work.join("qmp.sock");
    let qmp_err = |e: std::io::Error| VmError::Boot(format!("QMP at {}: {e}", sock.display()));
    let stream = std::os::unix::net::UnixStream::connect(&sock).map_err(qmp_err)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(qmp_err)?;
    let mut reader = BufReader::new(stream.try_clone().map_err(qmp_err)?);
    let mut line = String::new();
    reader.read_line(&mut line).map_err(qmp_err)?; // the greeting
    let mut w = stream;
    for cmd in ["qmp_capabilities", "system_powerdown"] {
        writeln!(w, "{{\"execute\": \"{cmd}\"}}").map_err(qmp_err)?;
        loop {
            line.clear();
            if reader.read_line(&mut line).map_err(qmp_err)? == 0 {
                break;
            }
            // events may come before the answer
            if line.contains("\"return\"") || line.contains("\"error\"") {
                break;
            }
        }
    }
    // the ACPI button works for images with logind; the guest's
    // kiln-control unit powers off on request. The request is written on
    // one connection held open while waiting: the guest's reads of the port
    // block only while the host side is connected (otherwise they see the
    // end of the file), and QEMU keeps the line until the guest reads
    let start = Instant::now();
    let mut control: Option<std::os::unix::net::UnixStream> = None;
    let mut asked = Instant::now();
    while service_pid(work).is_some() {
        if start.elapsed() > timeout {
            return Ok(false);
        }
        if control.is_none() || asked.elapsed() > Duration::from_secs(10) {
            control = std::os::unix::net::UnixStream::connect(work.join("control.sock"))
                .and_then(|mut c| c.write_all(b"poweroff\n").map(|()| c))
                .ok();
            asked = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_boot_test_fails_with_its_output() {
        let ok = "KILN-OUT 1: hello\nKILN-TEST 1 exit=0\nKILN-READY vm root=/dev/vda2\n";
        let b = report(ok, "KILN-READY vm root=/dev/vda2", 1.0).unwrap();
        assert_eq!(b.outputs, vec![vec!["hello".to_string()]]);
        let bad =
            "KILN-TEST 1 exit=0\nKILN-OUT 2: no such file\nKILN-TEST 2 exit=1\nKILN-READY vm\n";
        let e = report(bad, "KILN-READY vm", 1.0).unwrap_err().to_string();
        assert!(
            e.contains("boot test 2 exited with 1") && e.contains("| no such file"),
            "{e}"
        );
    }
}
