//! Rebuilding for freshness: which RUN steps run again instead of coming
//! from the cache, so a rebuild picks up new packages (what BuildKit's users
//! do with `--no-cache-filter`). Everything else — COPY, ADD, unchanged
//! bases — stays cached, and a step after a refreshed one is reused only
//! when the refreshed step made the same layer (cache keys follow the
//! layers they stand on).

use kiln_dockerfile::instructions::CommandLine;

/// Which RUN steps a build runs again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Refresh {
    /// None: the cache as usual.
    #[default]
    Off,
    /// The RUN steps that run a package manager (`apt-get`, `apt`,
    /// `aptitude`, `apk`, `dnf`, `yum`, `microdnf`, `zypper`).
    Packages,
    /// Every RUN step.
    Runs,
}

impl Refresh {
    /// Whether this RUN runs again.
    pub fn reruns(self, command: &CommandLine) -> bool {
        match self {
            Refresh::Off => false,
            Refresh::Runs => true,
            Refresh::Packages => fetches_packages(command),
        }
    }
}

/// The package managers whose runs fetch packages.
const MANAGERS: &[&str] = &[
    "apt-get", "apt", "aptitude", "apk", "dnf", "yum", "microdnf", "zypper",
];

/// Whether a RUN's command (or a heredoc it runs) calls a package manager:
/// a word that is one of them, as a command or a path ending in one.
pub fn fetches_packages(command: &CommandLine) -> bool {
    let texts = command
        .args
        .iter()
        .chain(command.heredocs.iter().map(|h| &h.content));
    texts
        .flat_map(|t| t.split(|c: char| c.is_whitespace() || ";&|()`$\"'".contains(c)))
        .map(|w| w.rsplit('/').next().unwrap_or(w))
        .any(|w| MANAGERS.contains(&w))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shell(s: &str) -> CommandLine {
        CommandLine {
            args: vec![s.to_string()],
            shell_form: true,
            heredocs: vec![],
        }
    }

    #[test]
    fn package_steps_are_found() {
        for s in [
            "apt-get update && apt-get install -y curl",
            "set -e; /usr/bin/apt install -y x",
            "apk add --no-cache git",
            "(dnf -y upgrade)",
        ] {
            assert!(fetches_packages(&shell(s)), "{s}");
        }
        for s in [
            "make install",
            "echo apt-get-like > /x",
            "cp aptitude.conf /etc",
        ] {
            assert!(!fetches_packages(&shell(s)), "{s}");
        }
        let exec = CommandLine {
            args: vec!["/usr/bin/apt-get".into(), "update".into()],
            shell_form: false,
            heredocs: vec![],
        };
        assert!(Refresh::Packages.reruns(&exec));
        assert!(!Refresh::Off.reruns(&exec));
        assert!(Refresh::Runs.reruns(&shell("true")));
    }
}
