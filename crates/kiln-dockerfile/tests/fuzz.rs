//! The frontend never panics, whatever it is given. Under `cargo test` bolero
//! replays the corpus in `__fuzz__/frontend_never_panics/corpus` and then
//! random inputs; `cargo bolero test frontend_never_panics` fuzzes it with
//! coverage guidance (new finds go into the same corpus).

use kiln_dockerfile::dockerignore::Matcher;
use kiln_dockerfile::{evaluate, Options, Platform, UnknownBases};

#[test]
fn frontend_never_panics() {
    let opts = Options {
        platform: Some(Platform::parse("linux/arm64").unwrap()),
        build_platform: Some(Platform::parse("linux/amd64").unwrap()),
        build_args: [("A".to_string(), "1".to_string())].into_iter().collect(),
        target: None,
    };
    bolero::check!().for_each(|input: &[u8]| {
        let text = String::from_utf8_lossy(input);
        if let Ok(graph) = evaluate(&text, &opts, &UnknownBases) {
            let printed = graph.to_dockerfile();
            let _ = evaluate(&printed, &opts, &UnknownBases);
            let _ = graph.describe("Dockerfile");
        } else if let Err(e) = evaluate(&text, &opts, &UnknownBases) {
            let _ = e.render("Dockerfile", &text);
        }
        if let Ok(m) = Matcher::from_dockerignore(&text) {
            let _ = m.excluded("a/b/c.txt");
        }
    });
}

/// Fragments that change how a Dockerfile reads; splicing them into corpus
/// files reaches far more of the parser than random bytes do.
const TOKENS: &[&str] = &[
    "\\\n",
    "\\",
    "`",
    "\n",
    "\r\n",
    "<<EOF",
    "<<-\"EOF\"",
    "\nEOF\n",
    "$",
    "${",
    "}",
    "${A:-",
    "${A:?",
    "${A#",
    "${A/",
    "\"",
    "'",
    "--from=",
    "--mount=",
    "type=cache,",
    "target=/x",
    "FROM a AS b\n",
    "FROM ",
    "ARG A\n",
    "#",
    "# escape=`\n",
    "[",
    "]",
    "[\"a\",",
    "=",
    " ",
    "\t",
    "AS ",
    "--platform=$BUILDPLATFORM ",
    "COPY --from=0 a b\n",
    "ONBUILD ",
    "\u{e9}",
    "\0",
];

fn corpus() -> &'static [String] {
    static FILES: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    FILES.get_or_init(read_corpus)
}

fn read_corpus() -> Vec<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/__fuzz__/frontend_never_panics/corpus");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| String::from_utf8_lossy(&std::fs::read(p).unwrap()).into_owned())
        .collect()
}

proptest::proptest! {
    // PROPTEST_CASES=100000 for a longer hunt
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(1500)
    ))]
    #[test]
    fn spliced_corpus_never_panics(
        file in 0usize..1000,
        edits in proptest::collection::vec((0usize..4000, 0usize..TOKENS.len(), proptest::bool::ANY), 1..6),
    ) {
        let files = corpus();
        let mut text: Vec<char> = files[file % files.len()].chars().collect();
        for (pos, tok, delete) in edits {
            let at = if text.is_empty() { 0 } else { pos % (text.len() + 1) };
            if delete && at < text.len() {
                text.remove(at);
            } else {
                for (i, c) in TOKENS[tok].chars().enumerate() {
                    text.insert(at + i, c);
                }
            }
        }
        let text: String = text.into_iter().collect();
        let opts = Options::default();
        match evaluate(&text, &opts, &UnknownBases) {
            Ok(graph) => {
                let _ = graph.describe("Dockerfile");
                let _ = evaluate(&graph.to_dockerfile(), &opts, &UnknownBases);
            }
            Err(e) => {
                let _ = e.render("Dockerfile", &text);
            }
        }
    }
}
