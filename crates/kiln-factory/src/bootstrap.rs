//! Roots of chains: a Debian root filesystem made by mmdebstrap (one per
//! platform, with `--architectures`), turned into an image by a short build.

use std::path::Path;

use kiln_store::RemoveOnDrop;

use kiln_build::{BuildOptions, Progress};
use kiln_definition::MmdebstrapDef;
use kiln_dockerfile::Platform;
use kiln_store::Store;

use crate::bake::BakeOptions;

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
    let dockerfile = if platforms.is_empty() {
        mmdebstrap(
            m,
            m.architecture.as_deref(),
            &dir.join("rootfs.tar"),
            opts,
            progress,
        )?;
        "FROM scratch\nADD rootfs.tar /\nCMD [\"bash\"]\n"
    } else {
        let archs = platforms
            .iter()
            .map(|p| debian_arch(p).map(|a| (a, tar_name(p))))
            .collect::<Result<Vec<_>, _>>()?;
        // one mmdebstrap per architecture, at the same time; their lines
        // are passed on once all have finished
        let results: Vec<(Result<(), String>, Collect)> = std::thread::scope(|s| {
            let handles: Vec<_> = archs
                .iter()
                .map(|(arch, tar)| {
                    let dir = &dir;
                    s.spawn(move || {
                        let mut lines = Collect::default();
                        let r = mmdebstrap(m, Some(arch), &dir.join(tar), opts, &mut lines);
                        (r, lines)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        (Err("mmdebstrap thread panicked".into()), Collect::default())
                    })
                })
                .collect()
        });
        for (result, lines) in results {
            for l in lines.0 {
                progress.output("", &l);
            }
            result?;
        }
        "FROM scratch\nARG TARGETARCH\nARG TARGETVARIANT\nADD rootfs-${TARGETARCH}${TARGETVARIANT}.tar /\nCMD [\"bash\"]\n"
    };
    std::fs::write(dir.join("Dockerfile"), dockerfile).map_err(|e| e.to_string())?;
    let bopts = BuildOptions {
        dockerfile: dir.join("Dockerfile"),
        context: dir.clone(),
        tags: tags.to_vec(),
        source_date_epoch: opts.source_date_epoch,
        compression: opts.compression,
        kiln_exe: opts.kiln_exe.clone(),
        platforms: platforms.to_vec(),
        ..Default::default()
    };
    kiln_build::build(store, &kiln_build::StoreSource { store }, &bopts, progress)
        .map_err(|e| e.to_string())
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

/// Runs mmdebstrap for one architecture into the tar `out`.
fn mmdebstrap(
    m: &MmdebstrapDef,
    arch: Option<&str>,
    out: &Path,
    opts: &BakeOptions,
    progress: &mut dyn Progress,
) -> Result<(), String> {
    let mut cmd = std::process::Command::new("mmdebstrap");
    cmd.arg(format!("--variant={}", m.variant))
        .arg(format!("--components={}", m.components.join(",")))
        .arg("--quiet");
    if !m.packages.is_empty() {
        cmd.arg(format!("--include={}", m.packages.join(",")));
    }
    if let Some(a) = arch {
        cmd.arg(format!("--architectures={a}"));
    }
    if let Some(epoch) = opts.source_date_epoch {
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
        (None, None) => {}
    }
    progress.output("", &format!("running {cmd:?}"));
    let out = cmd.output().map_err(|e| {
        format!("running mmdebstrap (is it installed? apt-get install mmdebstrap): {e}")
    })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(15).collect();
        return Err(format!(
            "mmdebstrap{} failed ({}):\n{}",
            arch.map(|a| format!(" --architectures={a}"))
                .unwrap_or_default(),
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        ));
    }
    Ok(())
}

/// Progress lines kept until they can be passed on.
#[derive(Default)]
struct Collect(Vec<String>);

impl Progress for Collect {
    fn step(&mut self, _: &str, _: usize, _: &str, _: bool) {}
    fn output(&mut self, _: &str, line: &str) {
        self.0.push(line.to_string());
    }
}
