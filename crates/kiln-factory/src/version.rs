//! Version tags of new builds: the scheme an image's definition names,
//! never reusing a tag already baked.

use std::path::Path;

use chrono::{DateTime, Utc};
use kiln_definition::{Factory, Image, VersionScheme};

use crate::lock::Locked;

/// The version tag of a new build. Date: `YYYYMMDD.N`. Git and file: the
/// commit or the file's first line, with `-N` added when that version was
/// already baked (a version tag is never moved).
pub(crate) fn version(
    factory: &Factory,
    image: &Image,
    previous: Option<&Locked>,
    now: DateTime<Utc>,
) -> Result<String, String> {
    let dir = factory.files[image.file]
        .path
        .parent()
        .unwrap_or(Path::new("/"))
        .to_path_buf();
    let prev = previous.map(|l| l.version.as_str());
    match &image.version {
        VersionScheme::Date => {
            let day = now.format("%Y%m%d").to_string();
            let n = prev
                .and_then(|p| p.strip_prefix(&format!("{day}.")))
                .and_then(|n| n.parse::<u32>().ok())
                .unwrap_or(0);
            Ok(format!("{day}.{}", n + 1))
        }
        VersionScheme::Git => {
            let mut git = std::process::Command::new("git");
            git.arg("-C")
                .arg(&dir)
                .args(["rev-parse", "--short", "HEAD"]);
            let out = kiln_tool::run(&mut git).map_err(|e| match e {
                kiln_tool::ToolError::Failed { stderr, .. } => format!(
                    "version scheme \"git\": {} is not in a git repository with a commit: {stderr}",
                    dir.display()
                ),
                e => e.to_string(),
            })?;
            Ok(bump(out.trim(), prev))
        }
        VersionScheme::File(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                format!(
                    "version scheme \"file\": cannot read {}: {e}",
                    path.display()
                )
            })?;
            let v = text.lines().next().unwrap_or("").trim();
            if v.is_empty()
                || !v
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            {
                return Err(format!(
                    "version file {}: first line {v:?} is not a valid tag",
                    path.display()
                ));
            }
            Ok(bump(v, prev))
        }
    }
}

fn bump(base: &str, previous: Option<&str>) -> String {
    let Some(prev) = previous else {
        return base.to_string();
    };
    if prev == base {
        return format!("{base}-2");
    }
    match prev
        .strip_prefix(&format!("{base}-"))
        .and_then(|n| n.parse::<u32>().ok())
    {
        Some(n) => format!("{base}-{}", n + 1),
        None => base.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_tag_is_never_reused() {
        assert_eq!(bump("1.4.0", None), "1.4.0");
        assert_eq!(bump("1.4.0", Some("1.3.9")), "1.4.0");
        assert_eq!(bump("1.4.0", Some("1.4.0")), "1.4.0-2");
        assert_eq!(bump("1.4.0", Some("1.4.0-2")), "1.4.0-3");
        assert_eq!(bump("abc1234", Some("abc1234-x")), "abc1234");
    }

    #[test]
    fn version_schemes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("VERSION"), "2.1.0\nnotes\n").unwrap();
        std::fs::write(
            dir.path().join("kiln.toml"),
            "kiln = 1\n[image.a]\n[image.f]\nversion = \"file:VERSION\"\n[image.g]\nversion = \"git\"\n",
        )
        .unwrap();
        let f = kiln_definition::load(&[dir.path().to_path_buf()]).unwrap();
        let now = chrono::TimeZone::with_ymd_and_hms(&Utc, 2026, 11, 28, 9, 0, 0).unwrap();
        let locked = |v: &str| Locked {
            version: v.into(),
            ..Default::default()
        };
        assert_eq!(
            version(&f, &f.images["a"], None, now).unwrap(),
            "20261128.1"
        );
        assert_eq!(
            version(&f, &f.images["a"], Some(&locked("20261128.4")), now).unwrap(),
            "20261128.5"
        );
        assert_eq!(
            version(&f, &f.images["a"], Some(&locked("20261127.4")), now).unwrap(),
            "20261128.1"
        );
        assert_eq!(version(&f, &f.images["f"], None, now).unwrap(), "2.1.0");
        assert_eq!(
            version(&f, &f.images["f"], Some(&locked("2.1.0")), now).unwrap(),
            "2.1.0-2"
        );
        let e = version(&f, &f.images["g"], None, now).unwrap_err();
        assert!(e.contains("not in a git repository"), "{e}");
        let git = |args: &[&str]| {
            let ok = std::process::Command::new("git")
                .arg("-C")
                .arg(dir.path())
                .args(args)
                .output()
                .unwrap()
                .status
                .success();
            assert!(ok, "git {args:?}");
        };
        git(&["init", "-q"]);
        git(&[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@e",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            "x",
        ]);
        let v = version(&f, &f.images["g"], None, now).unwrap();
        assert!(
            v.len() >= 7 && v.chars().all(|c| c.is_ascii_hexdigit()),
            "{v}"
        );
    }
}
