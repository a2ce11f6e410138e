//! Property test: layers made of random mixes of directories, files,
//! symlinks (relative, absolute, dangling, chained, climbing), hard links,
//! whiteouts and opaque markers, unpacked into a root inside a sandbox,
//! never create, change or link anything outside that root. A canary tree
//! beside the root is what their symlinks and hard links aim at; its
//! entries' inodes, link counts, sizes, modes, times and contents are
//! compared before and after.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use kiln_oci::unpack::{unpack, Target};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Kind {
    Dir,
    File(u8),
    Symlink(String),
    HardLink(String),
    Whiteout,
    Opaque,
}

const NAMES: &[&str] = &["a", "b", "etc", "l", "x"];

fn rel_path() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(NAMES), 1..4).prop_map(|v| v.join("/"))
}

/// Where a link may aim: inside, up and out, at the canary, nowhere.
fn link_target(canary: String) -> impl Strategy<Value = String> {
    prop_oneof![
        rel_path(),
        rel_path().prop_map(|p| format!("/{p}")),
        Just("..".to_string()),
        Just("../../../..".to_string()),
        rel_path().prop_map(|p| format!("../{p}")),
        Just("/".to_string()),
        Just(canary.clone()),
        Just(format!("{canary}/file")),
        Just(format!("{canary}/dir")),
        Just("missing/nowhere".to_string()),
    ]
}

fn entry(canary: String) -> impl Strategy<Value = (String, Kind)> {
    let kind = prop_oneof![
        2 => Just(Kind::Dir),
        2 => any::<u8>().prop_map(Kind::File),
        3 => link_target(canary.clone()).prop_map(Kind::Symlink),
        3 => prop_oneof![
            rel_path(),
            rel_path().prop_map(|p| format!("l/{p}")),
            Just("l/file".to_string()),
            Just(format!("{}/file", canary.trim_start_matches('/'))),
        ]
        .prop_map(Kind::HardLink),
        1 => Just(Kind::Whiteout),
        1 => Just(Kind::Opaque),
    ];
    (rel_path(), kind)
}

/// One entry at random, or a pair that attacks through a symlink: a link
/// named `l` aimed out (at the canary, or up), then an entry written, or a
/// hard link made, through it.
fn group(canary: String) -> impl Strategy<Value = Vec<(String, Kind)>> {
    let out = prop_oneof![
        Just(canary.clone()),
        Just(format!("{canary}/dir")),
        Just("../../..".to_string()),
        Just("../canary".to_string()),
    ];
    let through = prop_oneof![
        Just(Kind::HardLink("l/file".into())),
        Just(Kind::HardLink("l/canary/file".into())),
        Just(Kind::HardLink("l/inner".into())),
        any::<u8>().prop_map(Kind::File),
        Just(Kind::Dir),
        Just(Kind::Whiteout),
        Just(Kind::Opaque),
    ];
    let leaf = prop_oneof![
        Just("file".to_string()),
        Just("inner".to_string()),
        Just("canary/file".to_string()),
        Just("new".to_string()),
    ];
    prop_oneof![
        2 => entry(canary).prop_map(|e| vec![e]),
        1 => (out, through, leaf).prop_map(|(target, kind, leaf)| {
            vec![("l".to_string(), Kind::Symlink(target)), (format!("l/{leaf}"), kind)]
        }),
    ]
}

fn layer_tar(entries: &[(String, Kind)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, kind) in entries {
        let mut h = tar::Header::new_gnu();
        let (name, data): (String, Vec<u8>) = match kind {
            Kind::Whiteout => {
                let p = Path::new(path);
                let parent = p
                    .parent()
                    .map(|d| d.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let leaf = p.file_name().unwrap().to_string_lossy();
                let name = if parent.is_empty() {
                    format!(".wh.{leaf}")
                } else {
                    format!("{parent}/.wh.{leaf}")
                };
                (name, vec![])
            }
            Kind::Opaque => (format!("{path}/.wh..wh..opq"), vec![]),
            Kind::File(n) => (path.clone(), vec![*n; *n as usize % 7]),
            _ => (path.clone(), vec![]),
        };
        let ty = match kind {
            Kind::Dir => tar::EntryType::Directory,
            Kind::Symlink(_) => tar::EntryType::Symlink,
            Kind::HardLink(_) => tar::EntryType::Link,
            _ => tar::EntryType::Regular,
        };
        h.set_entry_type(ty);
        h.set_mode(0o755);
        h.set_size(data.len() as u64);
        if h.set_path(&name).is_err() {
            continue;
        }
        if let Kind::Symlink(t) | Kind::HardLink(t) = kind {
            if h.set_link_name(t).is_err() {
                continue;
            }
        }
        h.set_cksum();
        b.append(&h, &data[..]).unwrap();
    }
    b.into_inner().unwrap()
}

/// What is compared of an entry: inode, links, size, mode, mtime, content.
type Seen = (u64, u64, u64, u32, i64, Vec<u8>);

/// Everything under `dir` but `skip`.
fn snapshot(dir: &Path, skip: &Path) -> BTreeMap<PathBuf, Seen> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p == skip {
                continue;
            }
            let m = fs::symlink_metadata(&p).unwrap();
            let content = if m.is_file() {
                fs::read(&p).unwrap()
            } else {
                vec![]
            };
            if m.is_dir() {
                stack.push(p.clone());
            }
            out.insert(
                p,
                (m.ino(), m.nlink(), m.size(), m.mode(), m.mtime(), content),
            );
        }
    }
    out
}

struct Sandbox {
    _dir: tempfile::TempDir,
    top: PathBuf,
    canary: PathBuf,
}

fn sandbox() -> Sandbox {
    let dir = tempfile::tempdir().unwrap();
    let top = dir.path().to_path_buf();
    let canary = top.join("canary");
    fs::create_dir_all(canary.join("dir")).unwrap();
    fs::write(canary.join("file"), b"canary").unwrap();
    fs::write(canary.join("dir/inner"), b"inner").unwrap();
    Sandbox {
        _dir: dir,
        top,
        canary,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn nothing_outside_the_root_is_created_changed_or_linked(
        layers in prop::collection::vec(
            prop::collection::vec(group("/CANARY".into()), 1..8)
                .prop_map(|g| g.concat()), 1..4),
        flat in any::<bool>(),
    ) {
        let sb = sandbox();
        let canary = sb.canary.display().to_string();
        let root_parent = sb.top.join("r");
        let root = root_parent.join("root");
        fs::create_dir_all(&root).unwrap();
        let before = snapshot(&sb.top, &root);
        for (i, entries) in layers.iter().enumerate() {
            let entries: Vec<(String, Kind)> = entries
                .iter()
                .map(|(p, k)| {
                    let k = match k {
                        Kind::Symlink(t) => Kind::Symlink(t.replace("/CANARY", &canary)),
                        Kind::HardLink(t) => Kind::HardLink(t.replace("CANARY", canary.trim_start_matches('/'))),
                        k => k.clone(),
                    };
                    (p.clone(), k)
                })
                .collect();
            let tar = layer_tar(&entries);
            let (dest, target) = if flat {
                (root.clone(), Target::Flat)
            } else {
                let d = root.join(format!("layer{i}"));
                fs::create_dir_all(&d).unwrap();
                (d, Target::OverlayDiff)
            };
            // refusing a layer is fine; writing outside it never is
            let _ = unpack(&tar[..], &dest, target);
        }
        let after = snapshot(&sb.top, &root);
        prop_assert_eq!(before, after);
    }
}
