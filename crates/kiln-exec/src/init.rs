//! The two helper processes. Both start as fresh, single-threaded processes
//! (re-execs of kiln), so unsharing and mounting here is sound.

use std::fs;
use std::io::Write;
use std::os::unix::fs::symlink;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use rustix::mount::{
    mount, mount_bind, mount_change, mount_remount, unmount, MountFlags, MountPropagationFlags,
    UnmountFlags,
};
use rustix::process::Signal;
use rustix::thread::UnshareFlags;

use kiln_root::{Missing, Root, Symlinks};

use crate::spec::{MountKind, Network, RunSpec};

use crate::setup_error::{Context, R};

#[allow(unsafe_code)]
fn unshare(flags: UnshareFlags) -> rustix::io::Result<()> {
    debug_assert!(!flags.contains(UnshareFlags::FILES));
    // SAFETY: the only hazard of unshare(2) that rustix marks unsafe is
    // CLONE_FILES (threads seeing file descriptors from another table); the
    // flags here never include it, and this helper is single-threaded.
    unsafe { rustix::thread::unshare_unsafe(flags) }
}

fn read_spec(path: &Path) -> R<RunSpec> {
    let bytes = fs::read(path).context(format!("reading step spec {}", path.display()))?;
    serde_json::from_slice(&bytes).context(format!("parsing step spec {}", path.display()))
}

fn fail(msg: &dyn std::fmt::Display) -> ! {
    let _ = writeln!(std::io::stderr(), "kiln: step setup failed: {msg}");
    std::process::exit(125)
}

/// `kiln __exec SPEC`: unshares the namespaces and runs the init helper as
/// PID 1 of the new PID namespace; exits with the step's exit code.
pub fn exec_main(spec_path: &Path) -> ! {
    let spec = read_spec(spec_path).unwrap_or_else(|e| fail(&e));
    // the step must not outlive the build that started it
    let _ = rustix::process::set_parent_process_death_signal(Some(Signal::KILL));
    let mut flags =
        UnshareFlags::NEWNS | UnshareFlags::NEWPID | UnshareFlags::NEWUTS | UnshareFlags::NEWIPC;
    if spec.network == Network::None {
        flags |= UnshareFlags::NEWNET;
    }
    unshare(flags).unwrap_or_else(|e| fail(&format_args!("unshare: {e}")));
    let exe =
        std::env::current_exe().unwrap_or_else(|e| fail(&format_args!("finding kiln itself: {e}")));
    let status = Command::new(exe)
        .arg("__exec-init")
        .arg(spec_path)
        .status()
        .unwrap_or_else(|e| fail(&format_args!("starting the step's init: {e}")));
    std::process::exit(crate::exit_code(status))
}

/// `kiln __exec-init SPEC`: PID 1 of the step. Builds the root, pivots
/// into it and execs the command.
pub fn exec_init_main(spec_path: &Path) -> ! {
    let spec = read_spec(spec_path).unwrap_or_else(|e| fail(&e));
    let _ = rustix::process::set_parent_process_death_signal(Some(Signal::KILL));
    let mut stubs = Vec::new();
    // read before the root is entered: the secrets' files are this machine's
    let secret_env = secret_env(&spec).unwrap_or_else(|e| fail(&e));
    setup(&spec, &mut stubs).unwrap_or_else(|e| fail(&e));
    if spec.args.is_empty() {
        fail(&"no command to run")
    }
    // no more than a Docker container: its capabilities and seccomp profile
    crate::confine::drop_capabilities().unwrap_or_else(|e| fail(&e));
    crate::confine::apply_seccomp().unwrap_or_else(|e| fail(&e));
    let mut cmd = command(&spec).unwrap_or_else(|e| fail(&e));
    cmd.envs(secret_env);
    let err = cmd.exec();
    let _ = writeln!(
        std::io::stderr(),
        "kiln: cannot run {:?}: {err}",
        spec.args.first().map(String::as_str).unwrap_or("")
    );
    std::process::exit(if err.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    })
}

/// Builds the step's root and enters it.
fn setup(spec: &RunSpec, stubs: &mut Vec<String>) -> R<()> {
    mount_change(
        "/",
        MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
    )
    .context("making mounts private")?;
    mount_overlay(spec)?;
    let root = &spec.rootfs;
    mount_system(spec, root, stubs)?;
    for m in &spec.mounts {
        step_mount(root, m, stubs)?;
    }
    fs::write(&spec.stubs_file, stubs.join("\n"))
        .context(format!("writing {}", spec.stubs_file.display()))?;
    rustix::system::sethostname(spec.hostname.as_bytes()).context("sethostname")?;
    pivot(root)?;
    let cwd = Path::new(&spec.cwd);
    if !cwd.is_dir() {
        // like runc, a missing working directory is created
        fs::create_dir_all(cwd).context(format!("creating working directory {}", spec.cwd))?;
    }
    std::env::set_current_dir(cwd).context(format!("entering {}", spec.cwd))
}

fn mount_overlay(spec: &RunSpec) -> R<()> {
    let lowers: Vec<PathBuf> = if spec.lowers.is_empty() {
        vec![spec.empty.clone()]
    } else {
        spec.lowers.clone()
    };
    // the mount data is limited to a page: name lowers relative to their
    // common directory when they share one
    let common = lowers[0]
        .parent()
        .map(Path::to_path_buf)
        .filter(|p| lowers.iter().all(|l| l.parent() == Some(p.as_path())));
    let names: Vec<String> = match &common {
        Some(dir) => {
            std::env::set_current_dir(dir).context(format!("entering {}", dir.display()))?;
            lowers
                .iter()
                .map(|l| {
                    l.file_name()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .into_owned()
                })
                .collect()
        }
        None => lowers.iter().map(|l| l.display().to_string()).collect(),
    };
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        names.join(":"),
        spec.upper.display(),
        spec.work.display()
    );
    // `volatile` (Linux 5.10): the step's fsyncs do not wait for the disk,
    // as buildah mounts its build containers. A step that does not finish
    // is thrown away, and what a finished one wrote stays in the page
    // cache across a kill; after a power loss `kiln fsck` finds a snapshot
    // that lost data (against its blob, or with --full its diff ID).
    // Kernels without it refuse the option: then it is mounted without.
    let volatile = std::ffi::CString::new(format!("{data},volatile")).context("overlay options")?;
    let data = std::ffi::CString::new(data).context("overlay options")?;
    // device nodes an image brings cannot be opened (a container's device
    // cgroup does the same); /dev is a mount of its own
    let root = |options: &std::ffi::CStr| {
        mount(
            "overlay",
            &spec.rootfs,
            "overlay",
            MountFlags::NODEV,
            Some(options),
        )
    };
    match root(volatile.as_c_str()) {
        Err(rustix::io::Errno::INVAL) => root(data.as_c_str()),
        other => other,
    }
    .context("mounting the overlay root")
}

/// Resolves `rel` inside `root` as the image sees it (its symlinks
/// followed, never out of the root) and creates it as a directory (or an
/// empty file) if missing, with any missing parents; notes each created
/// path so it can be removed from the layer afterwards. The path returned
/// goes through no symlink: nothing else writes in the root before the step
/// starts, so mounting on it mounts inside the root.
fn ensure(root: &Path, rel: &str, dir: bool, stubs: &mut Vec<String>) -> R<PathBuf> {
    let root = Root::open(root).context("opening the step's root")?;
    let found = root.make(Path::new(rel), !dir).context(format!(
        "creating mount point /{}",
        rel.trim_start_matches('/')
    ))?;
    stubs.extend(found.created.iter().map(|p| p.display().to_string()));
    Ok(root.host_path(&found.rel))
}

fn mount_system(spec: &RunSpec, root: &Path, stubs: &mut Vec<String>) -> R<()> {
    let proc_dir = ensure(root, "proc", true, stubs)?;
    mount(
        "proc",
        &proc_dir,
        "proc",
        MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
        None,
    )
    .context("mounting /proc")?;
    let sys = ensure(root, "sys", true, stubs)?;
    if mount(
        "sysfs",
        &sys,
        "sysfs",
        MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
        None,
    )
    .is_err()
    {
        // without a network namespace of our own, sysfs may refuse; a read-only bind works
        mount_bind("/sys", &sys).context("mounting /sys")?;
        let _ = mount_remount(&sys, MountFlags::BIND | MountFlags::RDONLY, "");
    }
    crate::confine::protect_paths(root)?;
    mount_dev(root, stubs)?;
    let hosts = ensure(root, "etc/hosts", false, stubs)?;
    bind_readonly(&spec.hosts_file, &hosts)?;
    if let Some(resolv) = &spec.resolv_conf {
        let target = ensure(root, "etc/resolv.conf", false, stubs)?;
        bind_readonly(resolv, &target)?;
    }
    Ok(())
}

fn bind_readonly(source: &Path, target: &Path) -> R<()> {
    mount_bind(source, target).context(format!(
        "binding {} to {}",
        source.display(),
        target.display()
    ))?;
    mount_remount(target, MountFlags::BIND | MountFlags::RDONLY, "")
        .context(format!("making {} read-only", target.display()))
}

fn mount_dev(root: &Path, stubs: &mut Vec<String>) -> R<()> {
    let dev = ensure(root, "dev", true, stubs)?;
    let data = c"mode=755,size=65536k";
    mount(
        "tmpfs",
        &dev,
        "tmpfs",
        MountFlags::NOSUID | MountFlags::NOEXEC,
        Some(data),
    )
    .context("mounting /dev")?;
    for name in ["null", "zero", "full", "random", "urandom", "tty"] {
        let target = dev.join(name);
        fs::write(&target, b"").context(format!("creating /dev/{name}"))?;
        mount_bind(Path::new("/dev").join(name), &target)
            .context(format!("binding /dev/{name}"))?;
    }
    let pts = dev.join("pts");
    fs::create_dir(&pts).context("creating /dev/pts")?;
    mount(
        "devpts",
        &pts,
        "devpts",
        MountFlags::NOSUID | MountFlags::NOEXEC,
        Some(c"newinstance,ptmxmode=0666,mode=0620"),
    )
    .context("mounting /dev/pts")?;
    let shm = dev.join("shm");
    fs::create_dir(&shm).context("creating /dev/shm")?;
    mount(
        "shm",
        &shm,
        "tmpfs",
        MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
        Some(c"mode=1777,size=65536k"),
    )
    .context("mounting /dev/shm")?;
    let links = [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ];
    for (name, target) in links {
        symlink(target, dev.join(name)).context(format!("creating /dev/{name}"))?;
    }
    Ok(())
}

/// The environment variables the step's secret mounts with `env=` give
/// the command: each secret's content as it is, as BuildKit gives it.
fn secret_env(spec: &RunSpec) -> R<Vec<(String, String)>> {
    let mut out = Vec::new();
    for m in &spec.mounts {
        if let MountKind::Secret {
            source,
            env: Some(name),
            ..
        } = &m.kind
        {
            let content =
                fs::read(source).context(format!("reading the secret {}", source.display()))?;
            out.push((name.clone(), String::from_utf8_lossy(&content).into_owned()));
        }
    }
    Ok(out)
}

/// A secret file in a tmpfs of its own with the mount's mode and owner,
/// bound read-only at `target` (nothing when the secret is only an
/// environment variable).
fn secret_mount(
    root: &Path,
    target: &str,
    source: &Path,
    (mode, uid, gid): (u32, u32, u32),
    staging: &Path,
    stubs: &mut Vec<String>,
) -> R<()> {
    if target.is_empty() {
        return Ok(());
    }
    let content = fs::read(source).context(format!("reading the secret {}", source.display()))?;
    fs::create_dir_all(staging).context(format!("creating {}", staging.display()))?;
    mount(
        "tmpfs",
        staging,
        "tmpfs",
        MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
        Some(c"mode=700"),
    )
    .context(format!("mounting a tmpfs for the secret at {target}"))?;
    let file = staging.join("secret");
    fs::write(&file, &content).context(format!("writing the secret for {target}"))?;
    rustix::fs::chown(
        &file,
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
    )
    .context(format!("setting the owner of the secret at {target}"))?;
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&file, fs::Permissions::from_mode(mode))
        .context(format!("setting the mode of the secret at {target}"))?;
    let at = ensure(root, target, false, stubs)?;
    bind_readonly(&file, &at)
}

fn step_mount(root: &Path, m: &crate::spec::Mount, stubs: &mut Vec<String>) -> R<()> {
    match &m.kind {
        MountKind::Bind { source, readonly } => {
            let is_dir = source.is_dir();
            let target = ensure(root, &m.target, is_dir, stubs)?;
            rustix::mount::mount_bind_recursive(source, &target).context(format!(
                "binding {} to {}",
                source.display(),
                m.target
            ))?;
            if *readonly {
                mount_remount(&target, MountFlags::BIND | MountFlags::RDONLY, "")
                    .context(format!("making {} read-only", m.target))?;
            }
            Ok(())
        }
        MountKind::Tmpfs { size } => {
            let target = ensure(root, &m.target, true, stubs)?;
            let data =
                std::ffi::CString::new(size.map(|s| format!("size={s}")).unwrap_or_default())
                    .context("tmpfs options")?;
            mount(
                "tmpfs",
                &target,
                "tmpfs",
                MountFlags::NOSUID | MountFlags::NODEV,
                Some(data.as_c_str()),
            )
            .context(format!("mounting tmpfs on {}", m.target))
        }
        MountKind::Layers {
            lowers,
            source,
            readonly,
            staging,
        } => layers_mount(root, &m.target, lowers, source, *readonly, staging, stubs),
        MountKind::Secret {
            source,
            mode,
            uid,
            gid,
            staging,
            ..
        } => secret_mount(root, &m.target, source, (*mode, *uid, *gid), staging, stubs),
    }
}

#[allow(clippy::too_many_arguments)]
fn layers_mount(
    root: &Path,
    target: &str,
    lowers: &[PathBuf],
    source: &str,
    readonly: bool,
    staging: &Path,
    stubs: &mut Vec<String>,
) -> R<()> {
    let (mnt, upper, work, empty) = (
        staging.join("m"),
        staging.join("u"),
        staging.join("w"),
        staging.join("e"),
    );
    for d in [&mnt, &upper, &work, &empty] {
        fs::create_dir_all(d).context(format!("creating {}", d.display()))?;
    }
    let mut names: Vec<String> = lowers.iter().map(|l| l.display().to_string()).collect();
    if names.is_empty() {
        names.push(empty.display().to_string());
    }
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        names.join(":"),
        upper.display(),
        work.display()
    );
    let data = std::ffi::CString::new(data).context("overlay options")?;
    mount(
        "overlay",
        &mnt,
        "overlay",
        MountFlags::empty(),
        Some(data.as_c_str()),
    )
    .context(format!("mounting the layers for {target}"))?;
    // the source is the other stage's path as that stage sees it: its
    // symlinks are followed inside its root, never out to this machine
    let within = Root::open(&mnt).context(format!("opening the layers for {target}"))?;
    let found = within
        .resolve(Path::new(source), Symlinks::Follow, Missing::Fail)
        .context(format!("the bind source {source}"))?;
    let src = within.host_path(&found.rel);
    let is_dir = src.is_dir();
    let at = ensure(root, target, is_dir, stubs)?;
    rustix::mount::mount_bind_recursive(&src, &at)
        .context(format!("binding {source} to {target}"))?;
    if readonly {
        mount_remount(&at, MountFlags::BIND | MountFlags::RDONLY, "")
            .context(format!("making {target} read-only"))?;
    }
    Ok(())
}

fn pivot(root: &Path) -> R<()> {
    std::env::set_current_dir(root).context("entering the root")?;
    // pivot_root(".", ".") stacks the old root on top of the new one; it is
    // then detached, leaving only the new root
    rustix::process::pivot_root(".", ".").context("pivot_root")?;
    unmount(".", UnmountFlags::DETACH).context("detaching the old root")?;
    std::env::set_current_dir("/").context("entering /")
}

fn command(spec: &RunSpec) -> R<Command> {
    // a single-threaded process, so the thread's credentials are the
    // process's; std's Command::uid would drop the supplementary groups
    let groups: Vec<rustix::process::Gid> = spec
        .groups
        .iter()
        .map(|g| rustix::process::Gid::from_raw(*g))
        .collect();
    rustix::thread::set_thread_groups(&groups).context("setgroups")?;
    rustix::thread::set_thread_gid(rustix::process::Gid::from_raw(spec.gid))
        .context(format!("setgid {}", spec.gid))?;
    rustix::thread::set_thread_uid(rustix::process::Uid::from_raw(spec.uid))
        .context(format!("setuid {}", spec.uid))?;
    // changing credentials clears the parent-death signal: set it again so
    // the step still dies with the build
    let _ = rustix::process::set_parent_process_death_signal(Some(Signal::KILL));
    let mut cmd = Command::new(&spec.args[0]);
    cmd.args(&spec.args[1..])
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)));
    Ok(cmd)
}
