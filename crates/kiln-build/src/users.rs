//! `USER name[:group]` to numeric ids through the image's /etc/passwd and
//! /etc/group, as Docker resolves them.

use crate::view::View;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ids {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

fn entries(text: &str) -> impl Iterator<Item = Vec<&str>> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split(':').collect())
}

/// Resolves `spec` (`""`, `name`, `uid`, `name:group`, `uid:gid`).
pub fn resolve(view: &View, spec: &str) -> Result<Ids, String> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd = view
        .read("etc/passwd")
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let groups_file = view
        .read("etc/group")
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let user = if user.is_empty() { "0" } else { user };
    let entry = entries(&passwd).find(|e| e.len() > 3 && (e[0] == user || e[2] == user));
    let (uid, name, mut gid) = match (user.parse::<u32>(), &entry) {
        (Ok(n), Some(e)) => (n, e[0].to_string(), e[3].parse().unwrap_or(0)),
        (Ok(n), None) => (n, String::new(), 0),
        (Err(_), Some(e)) => (
            e[2].parse()
                .map_err(|_| format!("bad uid in /etc/passwd for {user}"))?,
            e[0].to_string(),
            e[3].parse().unwrap_or(0),
        ),
        (Err(_), None) => {
            return Err(format!(
                "unable to find user {user}: no matching entries in passwd file"
            ))
        }
    };
    if let Some(g) = group {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => entries(&groups_file)
                .find(|e| e.len() > 2 && e[0] == g)
                .and_then(|e| e[2].parse().ok())
                .ok_or_else(|| {
                    format!("unable to find group {g}: no matching entries in group file")
                })?,
        };
    }
    let mut groups = vec![gid];
    if group.is_none() && !name.is_empty() {
        for e in entries(&groups_file).filter(|e| e.len() > 3) {
            if e[3].split(',').any(|m| m == name) {
                if let Ok(g) = e[2].parse() {
                    if !groups.contains(&g) {
                        groups.push(g);
                    }
                }
            }
        }
    }
    Ok(Ids { uid, gid, groups })
}
