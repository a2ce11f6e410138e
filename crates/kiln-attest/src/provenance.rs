//! SLSA provenance: an in-toto Statement v1 whose predicate is a SLSA
//! Provenance v1 — what was built (the subject digests), from what
//! definition (external parameters: never the values of secrets), on what
//! resolved inputs (bases by digest, the context's digest, the git commit
//! of the definition), by which builder, when.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};

/// The in-toto statement type.
pub const STATEMENT: &str = "https://in-toto.io/Statement/v1";
/// The SLSA provenance predicate type.
pub const SLSA: &str = "https://slsa.dev/provenance/v1";
/// What kiln's build definitions mean (documented in the README).
pub const BUILD_TYPE: &str = "https://kiln.invalid/buildtypes/bake/v1";

/// One thing a statement is about: a name and its sha256.
#[derive(Debug, Clone)]
pub struct Named {
    pub name: String,
    /// `sha256:…`
    pub digest: String,
}

/// One resolved input of a build.
#[derive(Debug, Clone)]
pub struct Dependency {
    /// What it is to the build (`base`, `context`, `definition`).
    pub name: String,
    /// Where it came from (`registry/repo:tag`, `git+file:///…`).
    pub uri: Option<String>,
    /// Algorithm → hex (`sha256`, `gitCommit`).
    pub digest: BTreeMap<String, String>,
}

/// A build as the provenance records it.
#[derive(Debug, Clone)]
pub struct Build {
    pub subjects: Vec<Named>,
    /// The definition as given: kiln.toml's entry, the Dockerfile, target,
    /// platform, build arguments, the names (only) of secrets.
    pub external: Value,
    pub dependencies: Vec<Dependency>,
    /// The builder's identity (`kiln@HOST`) and version.
    pub builder: String,
    pub version: String,
    pub invocation: String,
    pub started: DateTime<Utc>,
    pub finished: DateTime<Utc>,
}

fn hex(d: &str) -> &str {
    d.strip_prefix("sha256:").unwrap_or(d)
}

/// An in-toto Statement v1 about `subjects` with `predicate` of
/// `predicate_type` (SBOMs are attested this way too).
pub fn statement(subjects: &[Named], predicate_type: &str, predicate: Value) -> Value {
    json!({
        "_type": STATEMENT,
        "subject": subjects
            .iter()
            .map(|s| json!({"name": s.name, "digest": {"sha256": hex(&s.digest)}}))
            .collect::<Vec<_>>(),
        "predicateType": predicate_type,
        "predicate": predicate,
    })
}

fn time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The provenance statement of `b`.
pub fn provenance(b: &Build) -> Value {
    let deps: Vec<Value> = b
        .dependencies
        .iter()
        .map(|d| {
            let mut v = json!({"name": d.name, "digest": d.digest});
            if let Some(u) = &d.uri {
                v["uri"] = json!(u);
            }
            v
        })
        .collect();
    statement(
        &b.subjects,
        SLSA,
        json!({
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": b.external,
                "resolvedDependencies": deps,
            },
            "runDetails": {
                "builder": {"id": b.builder, "version": {"kiln": b.version}},
                "metadata": {
                    "invocationId": b.invocation,
                    "startedOn": time(&b.started),
                    "finishedOn": time(&b.finished),
                },
            },
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_provenance_statement_names_its_subject_inputs_and_builder() {
        let at = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let b = Build {
            subjects: vec![Named {
                name: "reg/app".into(),
                digest: format!("sha256:{}", "a".repeat(64)),
            }],
            external: json!({"image": "app", "args": {"V": "1"}, "secrets": ["token"]}),
            dependencies: vec![Dependency {
                name: "base".into(),
                uri: Some("reg/base:1".into()),
                digest: BTreeMap::from([("sha256".into(), "b".repeat(64))]),
            }],
            builder: "kiln@host".into(),
            version: "0.1.0".into(),
            invocation: "job-1".into(),
            started: at,
            finished: at,
        };
        let s = provenance(&b);
        assert_eq!(s["_type"], STATEMENT);
        assert_eq!(s["predicateType"], SLSA);
        assert_eq!(s["subject"][0]["digest"]["sha256"], "a".repeat(64));
        let p = &s["predicate"];
        assert_eq!(
            p["buildDefinition"]["resolvedDependencies"][0]["uri"],
            "reg/base:1"
        );
        assert_eq!(
            p["runDetails"]["metadata"]["startedOn"],
            "2023-11-14T22:13:20Z"
        );
    }
}
