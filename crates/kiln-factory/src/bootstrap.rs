//! Roots of chains: a Debian root filesystem made by mmdebstrap, turned
//! into an image by a one-line build.

use std::path::PathBuf;

use kiln_build::{BuildOptions, Progress};
use kiln_definition::MmdebstrapDef;
use kiln_store::Store;

use crate::bake::BakeOptions;

/// A root filesystem from mmdebstrap, made an image by a one-line build.
pub(crate) fn bootstrap(
    store: &Store,
    m: &MmdebstrapDef,
    tags: &[String],
    opts: &BakeOptions,
    progress: &mut (dyn Progress + Send),
) -> Result<kiln_build::BuildResult, String> {
    let dir = store.temp_path("mmdebstrap");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let _cleanup = RemoveOnDrop(dir.clone());
    let tar = dir.join("rootfs.tar");
    let mut cmd = std::process::Command::new("mmdebstrap");
    cmd.arg(format!("--variant={}", m.variant))
        .arg(format!("--components={}", m.components.join(",")))
        .arg("--quiet");
    if !m.packages.is_empty() {
        cmd.arg(format!("--include={}", m.packages.join(",")));
    }
    if let Some(a) = &m.architecture {
        cmd.arg(format!("--architectures={a}"));
    }
    if let Some(epoch) = opts.source_date_epoch {
        cmd.env("SOURCE_DATE_EPOCH", epoch.to_string());
    }
    cmd.arg(&m.suite).arg(&tar);
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
            "mmdebstrap failed ({}):\n{}",
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        ));
    }
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM scratch\nADD rootfs.tar /\nCMD [\"bash\"]\n",
    )
    .map_err(|e| e.to_string())?;
    let bopts = BuildOptions {
        dockerfile: dir.join("Dockerfile"),
        context: dir.clone(),
        tags: tags.to_vec(),
        source_date_epoch: opts.source_date_epoch,
        compression: opts.compression,
        kiln_exe: opts.kiln_exe.clone(),
        ..Default::default()
    };
    kiln_build::build(store, &kiln_build::StoreSource { store }, &bopts, progress)
        .map_err(|e| e.to_string())
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
