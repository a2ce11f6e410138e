//! Roots of chains: a Debian root filesystem made by mmdebstrap (one per
//! platform, with `--architectures`), turned into an image by a short build.

use std::path::Path;

use kiln_store::RemoveOnDrop;

use kiln_build::{BuildOptions, Progress};
use kiln_definition::MmdebstrapDef;
use kiln_dockerfile::Platform;
use kiln_store::Store;

use crate::baked::BakeOptions;

/// Root filesystems from mmdebstrap, made an image by a short build: one
/// image, or with several `platforms` an image index (the foreign
/// architectures' maintainer scripts run under QEMU, as mmdebstrap does).
pub(crate) fn bootstrap(
    store: &Store,
    m: &MmdebstrapDef,
    platforms: &[Platform],
    tags: &[String],
    opts: &BakeOptions,
    progress: &mut (dyn Progress + Send),
) -> Result<kiln_build::BuildResult, String> {
    let dir = store.temp_path("mmdebstrap");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let _cleanup = RemoveOnDrop(dir.clone());
    let shared = std::sync::Mutex::new(&mut *progress);
    // mmdebstrap's phases are passed on as they come, each with its time
    let say = |l: &str| {
        shared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .output("mmdebstrap", l)
    };
    let epoch = opts.source_date_epoch.or_else(|| archive_epoch(m, &say));
    let dockerfile = if platforms.is_empty() {
        mmdebstrap(
            m,
            m.architecture.as_deref(),
            &dir.join("rootfs.tar"),
            epoch,
            &say,
        )?;
        "FROM scratch\nADD rootfs.tar /\nCMD [\"bash\"]\n"
    } else {
        let archs = platforms
            .iter()
            .map(|p| debian_arch(p).map(|a| (a, tar_name(p))))
            .collect::<Result<Vec<_>, _>>()?;
        // one mmdebstrap per architecture, at the same time
        let results: Vec<Result<(), String>> = std::thread::scope(|s| {
            let handles: Vec<_> = archs
                .iter()
                .map(|(arch, tar)| {
                    let (dir, say) = (&dir, &say);
                    s.spawn(move || mmdebstrap(m, Some(arch), &dir.join(tar), epoch, say))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err("mmdebstrap thread panicked".into()))
                })
                .collect()
        });
        results.into_iter().collect::<Result<Vec<()>, String>>()?;
        "FROM scratch\nARG TARGETARCH\nARG TARGETVARIANT\nADD rootfs-${TARGETARCH}${TARGETVARIANT}.tar /\nCMD [\"bash\"]\n"
    };
    std::fs::write(dir.join("Dockerfile"), dockerfile).map_err(|e| e.to_string())?;
    let bopts = BuildOptions {
        dockerfile: dir.join("Dockerfile"),
        context: dir.clone(),
        tags: tags.to_vec(),
        source_date_epoch: epoch,
        compression: opts.compression,
        kiln_exe: opts.kiln_exe.clone(),
        platforms: platforms.to_vec(),
        ..Default::default()
    };
    kiln_build::build(store, &kiln_build::StoreSource { store }, &bopts, progress)
        .map_err(|e| e.to_string())
}

/// The time a bootstrap stands at when none is asked for: the `Date` of
/// the archive's `Release` file for the suite (the newest of its sources'),
/// which changes only when an archive publishes. mmdebstrap with that `SOURCE_DATE_EPOCH` writes the
/// same bytes for the same packages (times clamped, logs and caches that
/// carry times left out), so an unchanged archive gives an unchanged base
/// and a rebuild of it is *unchanged*. `None` (with a line saying so) when
/// the Release file cannot be read: the base is then not reproducible.
fn archive_epoch(m: &MmdebstrapDef, say: &(dyn Fn(&str) + Sync)) -> Option<u64> {
    let main = match (&m.snapshot, &m.mirror) {
        (Some(ts), _) => format!("http://snapshot.debian.org/archive/debian/{ts}"),
        (None, Some(mirror)) => mirror.clone(),
        (None, None) => DEFAULT_MIRROR.to_string(),
    };
    let fetcher = kiln_packages::Fetcher::default();
    let mut latest = 0;
    for source in std::iter::once(&main).chain(&m.sources) {
        // a one-line entry names its suite; a URI takes the base's
        let (uri, suite) = match kiln_packages::deb::sources_list(source).first() {
            Some(s) => (s.uri.clone(), s.suite.clone()),
            None => (source.trim().to_string(), m.suite.clone()),
        };
        let base = uri.trim_end_matches('/');
        let urls = [
            format!("{base}/dists/{suite}/InRelease"),
            format!("{base}/dists/{suite}/Release"),
        ];
        let date = fetcher
            .first(&urls)
            .map_err(|e| e.to_string())
            .and_then(|(url, bytes)| {
                release_date(&String::from_utf8_lossy(&bytes)).ok_or(format!("{url}: no Date"))
            });
        match date {
            Ok(d) => latest = latest.max(d),
            Err(e) => {
                say(&format!("the archive's Release date is not known ({e}): this base will not be reproducible"));
                return None;
            }
        }
    }
    say(&format!(
        "SOURCE_DATE_EPOCH={latest}, the date of the archive's Release file (the newest of its sources)"
    ));
    Some(latest)
}

/// The mirror mmdebstrap uses when none is named.
const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";

/// The `Date:` of a Release file, in seconds since the epoch.
fn release_date(release: &str) -> Option<u64> {
    let date = release
        .lines()
        .find_map(|l| l.strip_prefix("Date:"))?
        .trim();
    let date = date
        .strip_suffix(" UTC")
        .map_or(date.to_string(), |d| format!("{d} +0000"));
    let t = chrono::DateTime::parse_from_rfc2822(&date).ok()?;
    u64::try_from(t.timestamp()).ok()
}

/// The tar a platform's root filesystem is written to.
fn tar_name(p: &Platform) -> String {
    format!("rootfs-{}{}.tar", p.architecture, p.variant)
}

/// Debian's name for a platform's architecture.
fn debian_arch(p: &Platform) -> Result<String, String> {
    let arch = match (p.architecture.as_str(), p.variant.as_str()) {
        ("amd64", _) => "amd64",
        ("arm64", _) => "arm64",
        ("arm", "v7" | "") => "armhf",
        ("arm", _) => "armel",
        ("386", _) => "i386",
        ("ppc64le", _) => "ppc64el",
        ("s390x", _) => "s390x",
        ("riscv64", _) => "riscv64",
        ("mips64le", _) => "mips64el",
        _ => return Err(format!("mmdebstrap: Debian has no architecture for {p}")),
    };
    Ok(arch.to_string())
}

/// Runs mmdebstrap for one architecture into the tar `out`, passing each
/// phase it reports (its `I:`, `W:` and `E:` lines) to `say` with the
/// architecture and the time since it started.
fn mmdebstrap(
    m: &MmdebstrapDef,
    arch: Option<&str>,
    out: &Path,
    epoch: Option<u64>,
    say: &(dyn Fn(&str) + Sync),
) -> Result<(), String> {
    let mut cmd = std::process::Command::new("mmdebstrap");
    cmd.arg(format!("--variant={}", m.variant))
        .arg(format!("--components={}", m.components.join(",")));
    if !m.packages.is_empty() {
        cmd.arg(format!("--include={}", m.packages.join(",")));
    }
    if let Some(a) = arch {
        cmd.arg(format!("--architectures={a}"));
    }
    if let Some(epoch) = epoch {
        cmd.env("SOURCE_DATE_EPOCH", epoch.to_string());
    }
    cmd.arg(&m.suite).arg(out);
    match (&m.snapshot, &m.mirror) {
        (Some(ts), _) => {
            cmd.arg(format!(
                "deb http://snapshot.debian.org/archive/debian/{ts}/ {} {}",
                m.suite,
                m.components.join(" ")
            ));
        }
        (None, Some(mirror)) => {
            cmd.arg(mirror);
        }
        // with more sources, mmdebstrap's default mirror must be named
        (None, None) if !m.sources.is_empty() => {
            cmd.arg(DEFAULT_MIRROR);
        }
        (None, None) => {}
    }
    cmd.args(&m.sources);
    let label = arch.unwrap_or("host");
    say(&format!("[{label}] running {cmd:?}"));
    let started = std::time::Instant::now();
    let ran = kiln_tool::run_streaming(&mut cmd, &mut |line| {
        if ["I: ", "W: ", "E: "].iter().any(|p| line.starts_with(p)) {
            say(&format!(
                "[{label} {:>4}s] {line}",
                started.elapsed().as_secs()
            ));
        }
    });
    ran.map_err(|e| match e {
        kiln_tool::ToolError::Failed { status, stderr, .. } => format!(
            "mmdebstrap{} failed ({status}):\n{stderr}",
            arch.map(|a| format!(" --architectures={a}"))
                .unwrap_or_default(),
        ),
        e if e.is_missing() => {
            format!("running mmdebstrap (is it installed? apt-get install mmdebstrap): {e}")
        }
        e => e.to_string(),
    })?;
    say(&format!(
        "[{label} {:>4}s] done",
        started.elapsed().as_secs()
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_dates() {
        let r =
            "Origin: Debian\nSuite: stable\nDate: Sat, 11 Jul 2026 10:16:37 UTC\nValid-Until: x\n";
        assert_eq!(release_date(r), Some(1_783_764_997));
        assert_eq!(
            release_date("Date: Sat, 11 Jul 2026 10:16:37 +0000\n"),
            Some(1_783_764_997)
        );
        assert_eq!(release_date("Origin: x\n"), None);
    }
}
