//! `RUN --mount=type=bind|cache|tmpfs|secret|ssh,...`: the CSV option list,
//! its defaults and its checks, as BuildKit's `runmount` defines them.

use serde::Serialize;

use crate::error::suggest;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MountType {
    Bind,
    Cache,
    Tmpfs,
    Secret,
    Ssh,
}

/// How concurrent builds share a cache mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Sharing {
    Shared,
    Private,
    Locked,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mount {
    #[serde(rename = "type")]
    pub kind: MountType,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    pub target: String,
    pub readonly: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sharing: Option<Sharing>,
    pub required: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    /// For secrets: expose the secret as this environment variable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
}

const KEYS: &[&str] = &[
    "type",
    "from",
    "source",
    "src",
    "target",
    "dst",
    "destination",
    "readonly",
    "ro",
    "readwrite",
    "rw",
    "id",
    "sharing",
    "required",
    "size",
    "mode",
    "uid",
    "gid",
    "env",
];

/// Splits one CSV record (Go's `encoding/csv` rules: quoted fields, `""`).
fn csv_fields(s: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars().peekable();
    let mut at_start = true;
    while let Some(c) = chars.next() {
        if at_start && c == '"' {
            loop {
                match chars.next() {
                    None => {
                        return Err(
                            "failed to parse csv mounts: extraneous or missing \" in quoted-field"
                                .into(),
                        )
                    }
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        cur.push('"');
                    }
                    Some('"') => break,
                    Some(ch) => cur.push(ch),
                }
            }
            at_start = false;
            continue;
        }
        match c {
            ',' => {
                fields.push(std::mem::take(&mut cur));
                at_start = true;
            }
            _ => {
                cur.push(c);
                at_start = false;
            }
        }
    }
    fields.push(cur);
    Ok(fields)
}

/// The check BuildKit makes before expansion: `from` cannot use variables.
pub fn check_unexpanded(spec: &str) -> Result<(), String> {
    for field in csv_fields(spec)? {
        if let Some((k, v)) = field.split_once('=') {
            if k.eq_ignore_ascii_case("from") {
                if let Some(i) = v.find('$') {
                    if i != v.len() - 1 {
                        return Err(
                            "'from' doesn't support variable expansion, define alias stage instead"
                                .into(),
                        );
                    }
                }
            }
        }
    }
    Ok(())
}

fn parse_bool(key: &str, v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "t" | "true" => Ok(true),
        "0" | "f" | "false" => Ok(false),
        _ => Err(format!("invalid value for {key}: {v}")),
    }
}

/// Parses a byte size like `64m`, `1g`, `512k` or a plain number.
fn ram_in_bytes(v: &str) -> Result<u64, String> {
    let lower = v.trim().to_ascii_lowercase();
    let lower = lower.strip_suffix('b').unwrap_or(&lower).to_string();
    let lower = lower.strip_suffix('i').unwrap_or(&lower).to_string();
    let (num, mult) = match lower.chars().last() {
        Some('k') => (&lower[..lower.len() - 1], 1u64 << 10),
        Some('m') => (&lower[..lower.len() - 1], 1 << 20),
        Some('g') => (&lower[..lower.len() - 1], 1 << 30),
        Some('t') => (&lower[..lower.len() - 1], 1 << 40),
        _ => (lower.as_str(), 1),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid value for size: {v}"))?;
    Ok((n * mult as f64) as u64)
}

/// Parses one `--mount` value whose fields were already expanded by `expand`.
pub fn parse(
    spec: &str,
    expand: &mut dyn FnMut(&str) -> Result<String, String>,
) -> Result<Mount, String> {
    let mut m = Mount {
        kind: MountType::Bind,
        from: None,
        source: None,
        target: String::new(),
        readonly: false,
        id: None,
        sharing: None,
        required: false,
        size: None,
        mode: None,
        uid: None,
        gid: None,
        env: None,
    };
    let mut ro_auto = true;
    // the type decides which other keys are allowed: read it first,
    // wherever it is written (BuildKit does not care about the order)
    let mut fields = csv_fields(spec)?;
    fields.sort_by_key(|f| !f.to_ascii_lowercase().starts_with("type="));
    for field in fields {
        let (key, value) = match field.split_once('=') {
            Some((k, v)) => (k.to_ascii_lowercase(), Some(v.to_string())),
            None => (field.to_ascii_lowercase(), None),
        };
        let Some(value) = value else {
            match key.as_str() {
                "readonly" | "ro" => {
                    m.readonly = true;
                    ro_auto = false;
                }
                "readwrite" | "rw" => {
                    m.readonly = false;
                    ro_auto = false;
                }
                "required" if matches!(m.kind, MountType::Secret | MountType::Ssh) => {
                    m.required = true
                }
                "required" => {
                    return Err(format!(
                        "unexpected key 'required' for mount type '{}'",
                        type_name(m.kind)
                    ))
                }
                _ => return Err(format!("invalid field '{field}' must be a key=value pair")),
            }
            continue;
        };
        let value = expand(&value)?;
        apply(&mut m, &key, &field, value, &mut ro_auto)?;
    }
    finish(m, ro_auto)
}

fn type_name(t: MountType) -> &'static str {
    match t {
        MountType::Bind => "bind",
        MountType::Cache => "cache",
        MountType::Tmpfs => "tmpfs",
        MountType::Secret => "secret",
        MountType::Ssh => "ssh",
    }
}

fn apply(
    m: &mut Mount,
    key: &str,
    field: &str,
    value: String,
    ro_auto: &mut bool,
) -> Result<(), String> {
    let unexpected = |m: &Mount| {
        format!(
            "unexpected key '{key}' for mount type '{}'",
            type_name(m.kind)
        )
    };
    match key {
        "type" => {
            m.kind = match value.to_ascii_lowercase().as_str() {
                "bind" => MountType::Bind,
                "cache" => MountType::Cache,
                "tmpfs" => MountType::Tmpfs,
                "secret" => MountType::Secret,
                "ssh" => MountType::Ssh,
                _ => {
                    let types = ["bind", "cache", "tmpfs", "secret", "ssh"];
                    let hint = suggest(&value, types)
                        .map(|s| format!(" (did you mean {s}?)"))
                        .unwrap_or_default();
                    return Err(format!("unsupported mount type {value:?}{hint}"));
                }
            }
        }
        "from" => m.from = Some(value),
        "source" | "src" => m.source = Some(value),
        "target" | "dst" | "destination" => m.target = value,
        "readonly" | "ro" => {
            m.readonly = parse_bool(key, &value)?;
            *ro_auto = false;
        }
        "readwrite" | "rw" => {
            m.readonly = !parse_bool(key, &value)?;
            *ro_auto = false;
        }
        "required" if matches!(m.kind, MountType::Secret | MountType::Ssh) => {
            m.required = parse_bool(key, &value)?
        }
        "required" => return Err(unexpected(m)),
        "size" if m.kind == MountType::Tmpfs => m.size = Some(ram_in_bytes(&value)?),
        "size" => return Err(unexpected(m)),
        "id" => m.id = Some(value),
        "sharing" if m.kind != MountType::Cache => return Err(unexpected(m)),
        "sharing" => {
            m.sharing = Some(match value.to_ascii_lowercase().as_str() {
                "shared" => Sharing::Shared,
                "private" => Sharing::Private,
                "locked" => Sharing::Locked,
                _ => return Err(format!("unsupported sharing value {value:?}")),
            })
        }
        "mode" => {
            m.mode = Some(
                u32::from_str_radix(&value, 8)
                    .map_err(|_| format!("invalid value {value} for mode"))?,
            )
        }
        "uid" => {
            m.uid = Some(
                value
                    .parse()
                    .map_err(|_| format!("invalid value {value} for uid"))?,
            )
        }
        "gid" => {
            m.gid = Some(
                value
                    .parse()
                    .map_err(|_| format!("invalid value {value} for gid"))?,
            )
        }
        "env" => m.env = Some(value),
        _ => {
            let hint = suggest(key, KEYS.iter().copied())
                .map(|s| format!(" (did you mean {s}?)"))
                .unwrap_or_default();
            return Err(format!("unexpected key '{key}' in '{field}'{hint}"));
        }
    }
    Ok(())
}

fn finish(mut m: Mount, ro_auto: bool) -> Result<Mount, String> {
    let file_info_allowed = matches!(
        m.kind,
        MountType::Secret | MountType::Ssh | MountType::Cache
    );
    if !file_info_allowed {
        for (set, what) in [
            (m.mode.is_some(), "mode"),
            (m.uid.is_some(), "uid"),
            (m.gid.is_some(), "gid"),
        ] {
            if set {
                return Err(format!(
                    "{what} not allowed for {:?} type mounts",
                    type_name(m.kind)
                ));
            }
        }
    }
    if ro_auto {
        m.readonly = !matches!(m.kind, MountType::Cache | MountType::Tmpfs);
    }
    match m.kind {
        MountType::Secret => {
            if m.from.is_some() {
                return Err("secret mount should not have a from".into());
            }
            if m.source.is_none() && m.target.is_empty() && m.id.is_none() && m.env.is_none() {
                return Err("invalid secret mount. one of source, target required".into());
            }
            if m.source.is_some() && m.id.is_some() {
                return Err("both source and id can't be set".into());
            }
            let id =
                m.id.clone()
                    .or_else(|| m.source.clone())
                    .unwrap_or_else(|| base_name(&m.target));
            if m.target.is_empty() && m.env.is_none() {
                m.target = format!("/run/secrets/{id}");
            }
            m.id = Some(id);
        }
        MountType::Ssh => {
            if m.target.is_empty() {
                m.target = "/run/buildkit/ssh_agent.0".into();
            }
            m.id.get_or_insert_with(|| "default".into());
        }
        MountType::Cache => {
            m.sharing.get_or_insert(Sharing::Shared);
            if m.target.is_empty() {
                return Err("mount type cache requires a target".into());
            }
            m.id.get_or_insert_with(|| m.target.clone());
        }
        MountType::Bind | MountType::Tmpfs => {
            if m.target.is_empty() {
                return Err(format!(
                    "mount type {} requires a target",
                    type_name(m.kind)
                ));
            }
        }
    }
    Ok(m)
}

fn base_name(p: &str) -> String {
    p.trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or("")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(spec: &str) -> Result<Mount, String> {
        parse(spec, &mut |s| Ok(s.to_string()))
    }

    #[test]
    fn cache_defaults() {
        let m = p("type=cache,target=/root/.cache/go-build").unwrap();
        assert_eq!(m.kind, MountType::Cache);
        assert_eq!(m.sharing, Some(Sharing::Shared));
        assert!(!m.readonly);
        assert_eq!(m.id.as_deref(), Some("/root/.cache/go-build"));
    }

    #[test]
    fn the_type_may_come_last() {
        let m = p("target=/c,sharing=locked,type=cache").unwrap();
        assert_eq!(m.kind, MountType::Cache);
        assert_eq!(m.sharing, Some(Sharing::Locked));
        let m = p("required,id=tok,type=secret").unwrap();
        assert!(m.required);
    }

    #[test]
    fn bind_is_readonly_by_default() {
        let m = p("target=/src,from=build,source=/out").unwrap();
        assert_eq!(m.kind, MountType::Bind);
        assert!(m.readonly);
        assert!(!p("type=bind,target=/src,rw").unwrap().readonly);
    }

    #[test]
    fn secret_default_target() {
        let m = p("type=secret,id=npmrc").unwrap();
        assert_eq!(m.target, "/run/secrets/npmrc");
        let m = p("type=secret,id=tok,env=TOKEN,required").unwrap();
        assert!(m.required);
        assert_eq!(m.env.as_deref(), Some("TOKEN"));
    }

    #[test]
    fn errors() {
        assert!(p("type=cahce,target=/x")
            .unwrap_err()
            .contains("did you mean cache?"));
        assert!(p("type=bind,target=/x,mode=0700")
            .unwrap_err()
            .contains("mode not allowed"));
        assert!(p("type=tmpfs").unwrap_err().contains("requires a target"));
        assert!(p("type=bind,target=/x,sharing=locked").is_err());
        assert!(p("type=cache,target=/x,bogus=1")
            .unwrap_err()
            .contains("unexpected key 'bogus'"));
        assert!(check_unexpanded("type=bind,from=$X,target=/x").is_err());
    }

    #[test]
    fn tmpfs_size() {
        assert_eq!(
            p("type=tmpfs,target=/t,size=64m").unwrap().size,
            Some(64 << 20)
        );
    }
}
