//! Property: any Dockerfile kiln accepts, printed back from its evaluated
//! graph, reads as the same graph.

mod common;

use kiln_dockerfile::{evaluate, Options, Platform, UnknownBases};
use proptest::prelude::*;

/// Text for values: letters, spaces, quotes, escapes and variable references,
/// so some generated files are invalid (those are skipped) and the valid ones
/// exercise quoting and expansion.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9._/-]{1,10}",
        "\"[a-zA-Z0-9 $'{}:.-]{0,12}\"",
        "'[a-zA-Z0-9 $\"{}:.-]{0,12}'",
        "[a-z]{1,4}\\$[AB]",
        "\\$\\{[AB]:-[a-z ]{0,4}\\}",
        "\\$\\{[AB]#[a-z*]{0,3}\\}",
        "\\\\\\$[a-z]{1,4}",
    ]
}

fn key() -> impl Strategy<Value = String> {
    "[A-Z][A-Z0-9_]{0,5}"
}

fn instruction(stages: usize) -> impl Strategy<Value = String> {
    let from = if stages > 0 {
        format!("--from={} ", stages - 1)
    } else {
        String::new()
    };
    prop_oneof![
        (key(), value()).prop_map(|(k, v)| format!("ENV {k}={v}")),
        (key(), value(), key(), value())
            .prop_map(|(k, v, k2, v2)| format!("ENV {k}={v} {k2}={v2}")),
        (key(), "[a-z $]{1,12}").prop_map(|(k, v)| format!("ENV {k} {v}")),
        (key(), value()).prop_map(|(k, v)| format!("ARG {k}={v}")),
        key().prop_map(|k| format!("ARG {k}")),
        (key(), value()).prop_map(|(k, v)| format!("LABEL {}={v}", k.to_lowercase())),
        "[a-z $&|;\"'=-]{1,30}".prop_map(|c| format!("RUN {c}")),
        proptest::collection::vec("[a-z $\"\\\\]{0,6}", 1..4)
            .prop_map(|a| format!("RUN {}", serde_json::to_string(&a).unwrap())),
        ("[a-z]{1,6}", value()).prop_map(move |(s, d)| format!("COPY {from}{s} /{d}")),
        (value(), "[0-7]{3}").prop_map(|(d, m)| format!("ADD --chmod={m} src /{d}")),
        value().prop_map(|w| format!("WORKDIR {w}")),
        value().prop_map(|u| format!("USER {u}")),
        "[0-9]{2,4}(/udp)?".prop_map(|p| format!("EXPOSE {p}")),
        value().prop_map(|v| format!("VOLUME /{v}")),
        "[a-z ]{1,10}".prop_map(|c| format!("CMD {c}")),
        proptest::collection::vec("[a-z /]{0,6}", 0..3)
            .prop_map(|a| format!("ENTRYPOINT {}", serde_json::to_string(&a).unwrap())),
        ("[1-9][0-9]?(s|ms|m)", "[a-z ]{1,8}")
            .prop_map(|(d, c)| format!("HEALTHCHECK --interval={d} CMD {c}")),
        Just("HEALTHCHECK NONE".to_string()),
        Just("STOPSIGNAL SIGTERM".to_string()),
        Just("SHELL [\"/bin/bash\", \"-c\"]".to_string()),
        "[a-z ]{1,10}".prop_map(|c| format!("RUN --mount=type=cache,target=/c --network=none {c}")),
        ("[a-z]{1,6}", "[a-z$ ]{0,10}").prop_map(|(n, c)| format!(
            "COPY <<{} /f\n{c}\n{}",
            n.to_uppercase(),
            n.to_uppercase()
        )),
        ("[a-z$ ]{0,10}").prop_map(|c| format!("RUN <<EOF\n{c}\nEOF")),
        Just("ONBUILD RUN echo child".to_string()),
    ]
}

fn stage(index: usize) -> impl Strategy<Value = String> {
    let base = if index == 0 {
        "alpine".to_string()
    } else {
        format!("s{}", index - 1)
    };
    (
        proptest::bool::ANY,
        proptest::collection::vec(instruction(index), 0..8),
    )
        .prop_map(move |(plat, body)| {
            let platform = if plat {
                "--platform=$BUILDPLATFORM "
            } else {
                ""
            };
            let mut s = format!("FROM {platform}{base} AS s{index}\n");
            for line in body {
                s.push_str(&line);
                s.push('\n');
            }
            s
        })
}

fn dockerfile() -> impl Strategy<Value = String> {
    (
        proptest::collection::vec((key(), value()), 0..3),
        stage(0),
        proptest::option::of(stage(1)),
        proptest::option::of(stage(2)),
    )
        .prop_map(|(globals, s0, s1, s2)| {
            let mut text: String = globals
                .iter()
                .map(|(k, v)| format!("ARG {k}={v}\n"))
                .collect();
            text.push_str(&s0);
            if let Some(s1) = s1 {
                text.push_str(&s1);
                if let Some(s2) = s2 {
                    text.push_str(&s2);
                }
            }
            text
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000)
    ))]
    #[test]
    fn printed_graph_reads_back_the_same(text in dockerfile()) {
        let opts = Options {
            platform: Some(Platform::parse("linux/arm64").unwrap()),
            build_platform: Some(Platform::parse("linux/amd64").unwrap()),
            ..Options::default()
        };
        let Ok(graph) = evaluate(&text, &opts, &UnknownBases) else {
            return Ok(());
        };
        let printed = graph.to_dockerfile();
        let again = evaluate(&printed, &opts, &UnknownBases);
        prop_assert!(again.is_ok(), "printed file rejected: {:?}\n--- original\n{text}\n--- printed\n{printed}", again.err());
        prop_assert_eq!(
            common::normalized(&graph),
            common::normalized(&again.unwrap()),
            "--- original\n{}\n--- printed\n{}", text, printed
        );
    }
}

#[test]
fn generator_produces_mostly_valid_files() {
    // guard against a generator that only yields rejected files, which
    // would make the property above vacuous
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let valid = (0..200)
        .filter(|_| {
            let text = dockerfile().new_tree(&mut runner).unwrap().current();
            evaluate(&text, &Options::default(), &UnknownBases).is_ok()
        })
        .count();
    assert!(
        valid >= 100,
        "only {valid} of 200 generated files were valid"
    );
}
