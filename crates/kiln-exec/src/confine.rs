//! What a step may do once its root is built: no more than a container the
//! Docker engine starts with default settings.
//!
//! - capabilities: Docker's default set (bounding, permitted, effective;
//!   inheritable and ambient empty), so `CapBnd` in `/proc/self/status`
//!   reads `00000000a80425fb` as in a `docker run` container;
//! - a seccomp filter that refuses what Docker's default profile refuses a
//!   container without extra capabilities: mounting, namespaces, kernel
//!   modules, keyrings, clocks, reboot, swap, kexec, BPF, perf, io_uring,
//!   tracing other processes' memory, … (EPERM; `clone3` gets ENOSYS so C
//!   libraries fall back to `clone`, whose namespace flags are refused), and
//!   making block devices;
//! - Docker's masked paths in `/proc` and `/sys` (unreadable) and its
//!   read-only ones (`/proc/sys`, `/proc/sysrq-trigger`, …).
//!
//! What it does not do: there is no user namespace (root in a step is root
//! on this machine, limited by the above), no cgroup limits, and the filter
//! is for this machine's architecture only (a 32-bit x86 syscall from a
//! step is refused by the kernel's architecture check).

use std::collections::BTreeMap;
use std::path::Path;

use rustix::mount::{mount, mount_bind, mount_remount, MountFlags};
use rustix::thread::CapabilitySet;
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule,
};

use crate::setup_error::{Context, R};

/// Docker's default capabilities (moby's `oci/caps/defaults.go`).
pub const DEFAULT_CAPS: CapabilitySet = CapabilitySet::CHOWN
    .union(CapabilitySet::DAC_OVERRIDE)
    .union(CapabilitySet::FSETID)
    .union(CapabilitySet::FOWNER)
    .union(CapabilitySet::MKNOD)
    .union(CapabilitySet::NET_RAW)
    .union(CapabilitySet::SETGID)
    .union(CapabilitySet::SETUID)
    .union(CapabilitySet::SETFCAP)
    .union(CapabilitySet::SETPCAP)
    .union(CapabilitySet::NET_BIND_SERVICE)
    .union(CapabilitySet::SYS_CHROOT)
    .union(CapabilitySet::KILL)
    .union(CapabilitySet::AUDIT_WRITE);

/// Paths of the step's `/proc` and `/sys` hidden from it (Docker's list).
const MASKED: &[&str] = &[
    "proc/asound",
    "proc/acpi",
    "proc/interrupts",
    "proc/kcore",
    "proc/keys",
    "proc/latency_stats",
    "proc/timer_list",
    "proc/timer_stats",
    "proc/sched_debug",
    "proc/scsi",
    "sys/firmware",
    "sys/devices/virtual/powercap",
];

/// Paths of the step's `/proc` it may read but not write (Docker's list).
const READ_ONLY: &[&str] = &[
    "proc/bus",
    "proc/fs",
    "proc/irq",
    "proc/sys",
    "proc/sysrq-trigger",
];

/// Masks and write-protects Docker's paths under `root`'s freshly mounted
/// `/proc` and `/sys` (before `pivot_root`; kiln mounted both, so these
/// paths hold no symlink of the image's).
pub fn protect_paths(root: &Path) -> R<()> {
    for rel in MASKED {
        let p = root.join(rel);
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue; // not on this kernel
        };
        if meta.is_dir() {
            mount(
                "tmpfs",
                &p,
                "tmpfs",
                MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
                Some(c"size=0"),
            )
        } else {
            mount_bind("/dev/null", &p)
        }
        .context(format!("masking /{rel}"))?;
    }
    for rel in READ_ONLY {
        let p = root.join(rel);
        if std::fs::symlink_metadata(&p).is_err() {
            continue;
        }
        mount_bind(&p, &p).context(format!("binding /{rel}"))?;
        mount_remount(
            &p,
            MountFlags::BIND | MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV,
            "",
        )
        .context(format!("making /{rel} read-only"))?;
    }
    Ok(())
}

/// Limits this process (and what it execs) to Docker's default capabilities.
pub fn drop_capabilities() -> R<()> {
    for bit in 0..64u32 {
        let cap = CapabilitySet::from_bits_retain(1 << bit);
        if DEFAULT_CAPS.contains(cap) {
            continue;
        }
        match rustix::thread::capability_is_in_bounding_set(cap) {
            Ok(true) => rustix::thread::remove_capability_from_bounding_set(cap)
                .context(format!("dropping capability {bit}"))?,
            Ok(false) => {}
            Err(_) => break, // past the kernel's last capability
        }
    }
    let _ = rustix::thread::clear_ambient_capability_set();
    let sets = rustix::thread::capabilities(None).context("capget")?;
    // effective keeps what the rest of the setup needs (seccomp, setuid);
    // exec gives root the bounding set and anyone else nothing
    rustix::thread::set_capabilities(
        None,
        rustix::thread::CapabilitySets {
            effective: sets.effective,
            permitted: sets.permitted,
            inheritable: CapabilitySet::empty(),
        },
    )
    .context("capset")
}

/// Syscalls Docker's default profile refuses a container without extra
/// capabilities.
fn refused() -> Vec<i64> {
    let mut v = vec![
        libc::SYS_acct,
        libc::SYS_add_key,
        libc::SYS_bpf,
        libc::SYS_clock_adjtime,
        libc::SYS_clock_settime,
        libc::SYS_delete_module,
        libc::SYS_finit_module,
        libc::SYS_fsconfig,
        libc::SYS_fsmount,
        libc::SYS_fsopen,
        libc::SYS_fspick,
        libc::SYS_get_mempolicy,
        libc::SYS_init_module,
        libc::SYS_io_uring_enter,
        libc::SYS_io_uring_register,
        libc::SYS_io_uring_setup,
        libc::SYS_kcmp,
        libc::SYS_kexec_file_load,
        libc::SYS_kexec_load,
        libc::SYS_keyctl,
        libc::SYS_lookup_dcookie,
        libc::SYS_mbind,
        libc::SYS_mount,
        libc::SYS_mount_setattr,
        libc::SYS_move_mount,
        libc::SYS_move_pages,
        libc::SYS_name_to_handle_at,
        libc::SYS_nfsservctl,
        libc::SYS_open_by_handle_at,
        libc::SYS_open_tree,
        libc::SYS_perf_event_open,
        libc::SYS_pivot_root,
        libc::SYS_process_vm_readv,
        libc::SYS_process_vm_writev,
        libc::SYS_quotactl,
        libc::SYS_reboot,
        libc::SYS_request_key,
        libc::SYS_set_mempolicy,
        libc::SYS_setns,
        libc::SYS_settimeofday,
        libc::SYS_swapoff,
        libc::SYS_swapon,
        libc::SYS_syslog,
        libc::SYS_umount2,
        libc::SYS_unshare,
        libc::SYS_userfaultfd,
    ];
    #[cfg(target_arch = "x86_64")]
    v.extend([
        libc::SYS_ioperm,
        libc::SYS_iopl,
        libc::SYS__sysctl,
        libc::SYS_sysfs,
        libc::SYS_uselib,
        libc::SYS_ustat,
    ]);
    v
}

const NAMESPACE_FLAGS: &[u64] = &[
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWCGROUP as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
    0x80, // CLONE_NEWTIME
];

fn masked_eq(arg: u8, mask: u64, value: u64) -> R<SeccompRule> {
    let cond = SeccompCondition::new(
        arg,
        SeccompCmpArgLen::Qword,
        SeccompCmpOp::MaskedEq(mask),
        value,
    )
    .context("a seccomp condition")?;
    SeccompRule::new(vec![cond]).context("a seccomp rule")
}

fn program(rules: BTreeMap<i64, Vec<SeccompRule>>, errno: i32) -> R<BpfProgram> {
    let arch = std::env::consts::ARCH
        .try_into()
        .context("the seccomp architecture")?;
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(errno as u32),
        arch,
    )
    .context("a seccomp filter")?;
    filter.try_into().context("compiling the seccomp filter")
}

/// The two filters a step runs under: EPERM for what is refused, ENOSYS
/// for `clone3` (its flags are out of a filter's reach, so it is refused
/// whole, as Docker does, and C libraries fall back to `clone`).
fn filters() -> R<[BpfProgram; 2]> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        refused().into_iter().map(|nr| (nr, Vec::new())).collect();
    let ns: Vec<SeccompRule> = NAMESPACE_FLAGS
        .iter()
        .map(|f| masked_eq(0, *f, *f))
        .collect::<R<_>>()?;
    rules.insert(libc::SYS_clone, ns);
    let ifmt = libc::S_IFMT as u64;
    let blk = libc::S_IFBLK as u64;
    rules.insert(libc::SYS_mknodat, vec![masked_eq(2, ifmt, blk)?]);
    #[cfg(target_arch = "x86_64")]
    rules.insert(libc::SYS_mknod, vec![masked_eq(1, ifmt, blk)?]);
    let clone3: BTreeMap<i64, Vec<SeccompRule>> = [(libc::SYS_clone3, Vec::new())].into();
    Ok([program(rules, libc::EPERM)?, program(clone3, libc::ENOSYS)?])
}

/// Installs the step's seccomp filters on this process (inherited by what
/// it execs). Needs CAP_SYS_ADMIN in the effective set: call before
/// changing to the step's user.
pub fn apply_seccomp() -> R<()> {
    for f in filters()? {
        seccompiler::apply_filter(&f).context("installing the seccomp filter")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_capabilities_are_dockers() {
        // CapBnd of `docker run` with default settings
        assert_eq!(DEFAULT_CAPS.bits(), 0xa80425fb);
    }

    #[test]
    fn the_filters_compile() {
        let [main, clone3] = filters().unwrap();
        assert!(main.len() > refused().len());
        assert!(!clone3.is_empty());
    }
}
