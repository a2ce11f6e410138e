//! Whether this machine can run programs of another architecture: a
//! binfmt_misc handler (QEMU user emulation) registered for its ELF header,
//! enabled, with the F flag so the interpreter is opened at registration and
//! works inside a container's root filesystem.

use std::fs;
use std::path::Path;

const BINFMT: &str = "/proc/sys/fs/binfmt_misc";

/// ELF class (1: 32-bit, 2: 64-bit), data (1: little, 2: big endian) and
/// e_machine of an OCI architecture's executables.
fn elf(arch: &str) -> Option<(u8, u8, u16)> {
    Some(match arch {
        "amd64" => (2, 1, 62),
        "386" => (1, 1, 3),
        "arm64" => (2, 1, 183),
        "arm" => (1, 1, 40),
        "ppc64le" => (2, 1, 21),
        "s390x" => (2, 2, 22),
        "riscv64" => (2, 1, 243),
        "mips64le" => (2, 1, 8),
        "loong64" => (2, 1, 258),
        _ => return None,
    })
}

/// A registered handler, as `/proc/sys/fs/binfmt_misc/NAME` describes it.
#[derive(Debug, PartialEq, Eq)]
pub struct Handler {
    pub name: String,
    pub enabled: bool,
    pub interpreter: String,
    pub flags: String,
    pub offset: usize,
    pub magic: Vec<u8>,
    pub mask: Vec<u8>,
}

impl Handler {
    /// Reads the kernel's text for one handler; `None` for extension
    /// handlers (no magic) and text it does not recognise.
    pub fn parse(name: &str, text: &str) -> Option<Handler> {
        let mut h = Handler {
            name: name.to_string(),
            enabled: false,
            interpreter: String::new(),
            flags: String::new(),
            offset: 0,
            magic: Vec::new(),
            mask: Vec::new(),
        };
        for line in text.lines() {
            let (key, value) = line.split_once(' ').unwrap_or((line, ""));
            match key {
                "enabled" => h.enabled = true,
                "interpreter" => h.interpreter = value.to_string(),
                "flags:" => h.flags = value.to_string(),
                "offset" => h.offset = value.parse().ok()?,
                "magic" => h.magic = hex(value)?,
                "mask" => h.mask = hex(value)?,
                _ => {}
            }
        }
        (!h.magic.is_empty()).then_some(h)
    }

    /// True when this handler takes an ELF executable of `arch`.
    fn matches(&self, arch: &str) -> bool {
        let Some((class, data, machine)) = elf(arch) else {
            return false;
        };
        // the first 20 bytes of an ELF executable (ET_EXEC) of that machine
        let mut header = [0u8; 20];
        header[..4].copy_from_slice(b"\x7fELF");
        header[4] = class;
        header[5] = data;
        header[6] = 1;
        let (kind, machine) = if data == 1 {
            (2u16.to_le_bytes(), machine.to_le_bytes())
        } else {
            (2u16.to_be_bytes(), machine.to_be_bytes())
        };
        header[16..18].copy_from_slice(&kind);
        header[18..20].copy_from_slice(&machine);
        self.magic.iter().enumerate().all(|(i, m)| {
            let mask = self.mask.get(i).copied().unwrap_or(0xff);
            header
                .get(self.offset + i)
                .is_some_and(|b| b & mask == m & mask)
        })
    }
}

fn hex(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// How to give this machine a handler, for error messages.
pub const HOW_TO_ENABLE: &str =
    "install QEMU user emulation: `apt-get install qemu-user-static binfmt-support` \
(Debian registers a handler per architecture, with the F flag); if binfmt_misc is not mounted, \
`mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc && update-binfmts --enable` as root \
(in a container, on the host)";

/// Ok when programs of `arch` run here: it is the host's architecture, or
/// an enabled handler with the F flag takes its executables. The error says
/// what is missing and how to enable it.
pub fn check(arch: &str, host_arch: &str) -> Result<(), String> {
    if arch == host_arch {
        return Ok(());
    }
    check_in(Path::new(BINFMT), arch, host_arch)
}

fn check_in(dir: &Path, arch: &str, host_arch: &str) -> Result<(), String> {
    let cannot = format!("this {host_arch} machine cannot run {arch} programs");
    if elf(arch).is_none() {
        return Err(format!(
            "{cannot}: kiln knows no executable format for architecture {arch:?}"
        ));
    }
    if !dir.join("status").exists() {
        return Err(format!(
            "{cannot}: binfmt_misc is not mounted at {}; {HOW_TO_ENABLE}",
            dir.display()
        ));
    }
    let mut entries: Vec<_> = fs::read_dir(dir)
        .map_err(|e| format!("{cannot}: reading {}: {e}", dir.display()))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "status" && n != "register")
        .collect();
    entries.sort();
    let handlers: Vec<Handler> = entries
        .iter()
        .filter_map(|n| Handler::parse(n, &fs::read_to_string(dir.join(n)).ok()?))
        .filter(|h| h.matches(arch))
        .collect();
    match handlers.iter().find(|h| h.enabled && h.flags.contains('F')) {
        Some(_) => Ok(()),
        None => match handlers.first() {
            None => Err(format!(
                "{cannot}: no binfmt_misc handler is registered for them; {HOW_TO_ENABLE}"
            )),
            Some(h) if !h.enabled => Err(format!(
                "{cannot}: the binfmt_misc handler {} is disabled; enable it with `update-binfmts --enable {}` or `echo 1 > {}`",
                h.name,
                h.name,
                dir.join(&h.name).display()
            )),
            Some(h) => Err(format!(
                "{cannot}: the binfmt_misc handler {} ({}) lacks the F flag, so its interpreter is not found inside a container; \
register it with the F flag (Debian's qemu-user-static does)",
                h.name, h.interpreter
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel's text for the handler Debian's qemu-user-static registers.
    const AARCH64: &str = "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: POCF\noffset 0\nmagic 7f454c460201010000000000000000000200b700\nmask ffffffffffffff00fffffffffffffffffeffffff\n";
    const S390X: &str = "enabled\ninterpreter /usr/libexec/qemu-binfmt/s390x-binfmt-P\nflags: POCF\noffset 0\nmagic 7f454c4602020100000000000000000000020016\nmask ffffffffffffff00fffffffffffffffffffeffff\n";

    #[test]
    fn handlers_match_their_architecture_only() {
        let h = Handler::parse("qemu-aarch64", AARCH64).unwrap();
        assert!(h.enabled && h.flags.contains('F'));
        assert!(h.matches("arm64"));
        assert!(!h.matches("amd64") && !h.matches("arm") && !h.matches("s390x"));
        let s = Handler::parse("qemu-s390x", S390X).unwrap();
        assert!(s.matches("s390x") && !s.matches("arm64"));
        assert_eq!(
            Handler::parse(
                "jar",
                "enabled\ninterpreter /usr/bin/jexec\nflags: \nextension .jar\n"
            ),
            None
        );
    }

    #[test]
    fn the_host_needs_no_handler_and_each_gap_is_named() {
        assert_eq!(check("amd64", "amd64"), Ok(()));
        let dir = tempfile::tempdir().unwrap();
        let err = check_in(dir.path(), "arm64", "amd64").unwrap_err();
        assert!(err.contains("binfmt_misc is not mounted"), "{err}");
        assert!(err.contains("apt-get install qemu-user-static"), "{err}");
        fs::write(dir.path().join("status"), "enabled\n").unwrap();
        let err = check_in(dir.path(), "arm64", "amd64").unwrap_err();
        assert!(err.contains("no binfmt_misc handler"), "{err}");
        fs::write(
            dir.path().join("qemu-aarch64"),
            AARCH64.replace("enabled", "disabled"),
        )
        .unwrap();
        let err = check_in(dir.path(), "arm64", "amd64").unwrap_err();
        assert!(err.contains("qemu-aarch64 is disabled"), "{err}");
        fs::write(
            dir.path().join("qemu-aarch64"),
            AARCH64.replace("POCF", "PO"),
        )
        .unwrap();
        let err = check_in(dir.path(), "arm64", "amd64").unwrap_err();
        assert!(err.contains("lacks the F flag"), "{err}");
        fs::write(dir.path().join("qemu-aarch64"), AARCH64).unwrap();
        assert_eq!(check_in(dir.path(), "arm64", "amd64"), Ok(()));
        let err = check_in(dir.path(), "sparc", "amd64").unwrap_err();
        assert!(err.contains("no executable format"), "{err}");
    }
}
