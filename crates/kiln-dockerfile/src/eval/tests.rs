use super::*;

fn eval(text: &str) -> Result<BuildGraph, Diagnostic> {
    eval_with(text, &[], None)
}

fn eval_with(
    text: &str,
    args: &[(&str, &str)],
    target: Option<&str>,
) -> Result<BuildGraph, Diagnostic> {
    let opts = Options {
        build_args: args
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        target: target.map(str::to_string),
        platform: Some(Platform::parse("linux/arm64").unwrap()),
        build_platform: Some(Platform::parse("linux/amd64").unwrap()),
    };
    evaluate(text, &opts, &UnknownBases)
}

fn env_of(g: &BuildGraph, stage: usize) -> EnvList {
    g.stages[stage].config.clone().unwrap().env
}

fn run_env(g: &BuildGraph, stage: usize, step: usize) -> EnvList {
    g.stages[stage].steps[step].build_env.clone().unwrap()
}

#[test]
fn env_sees_old_value_in_same_instruction() {
    let g = eval("FROM a\nENV a=1\nENV a=b c=$a\n").unwrap();
    let e = env_of(&g, 0);
    assert_eq!(e.get("a").as_deref(), Some("b"));
    assert_eq!(e.get("c").as_deref(), Some("1"));
}

#[test]
fn arg_default_refers_to_earlier_arg() {
    let g = eval("FROM a\nARG V=1\nARG W=${V}.0\nRUN echo $W\n").unwrap();
    assert_eq!(run_env(&g, 0, 2).get("W").as_deref(), Some("1.0"));
}

#[test]
fn global_arg_must_be_redeclared() {
    let g = eval("ARG V=1\nFROM a\nENV x=$V\nARG V\nENV y=$V\n").unwrap();
    let e = env_of(&g, 0);
    assert_eq!(e.get("x").as_deref(), Some(""));
    assert_eq!(e.get("y").as_deref(), Some("1"));
}

#[test]
fn global_arg_in_from_and_build_arg_override() {
    let g = eval_with("ARG TAG=1\nFROM alpine:$TAG\n", &[("TAG", "2")], None).unwrap();
    assert_eq!(
        g.stages[0].base,
        Base::Image {
            reference: "alpine:2".into()
        }
    );
}

#[test]
fn arg_after_env_wins_for_expansion_only() {
    let g = eval_with(
        "FROM a\nENV X=env\nARG X\nLABEL l=$X\n",
        &[("X", "arg")],
        None,
    )
    .unwrap();
    let cfg = g.stages[0].config.clone().unwrap();
    assert_eq!(cfg.labels.get("l").as_deref(), Some("arg"));
    assert_eq!(cfg.env.get("X").as_deref(), Some("env"));
}

#[test]
fn from_stage_inherits_args() {
    let g = eval("FROM a AS base\nARG V=7\nFROM base\nRUN echo $V\n").unwrap();
    assert_eq!(run_env(&g, 1, 0).get("V").as_deref(), Some("7"));
}

#[test]
fn platform_args() {
    let g = eval("FROM --platform=$BUILDPLATFORM a AS b\nARG TARGETARCH\nARG BUILDOS\nRUN x\n")
        .unwrap();
    assert_eq!(
        g.stages[0].platform.as_ref().unwrap().to_string(),
        "linux/amd64"
    );
    let e = run_env(&g, 0, 2);
    assert_eq!(e.get("TARGETARCH").as_deref(), Some("arm64"));
    assert_eq!(e.get("BUILDOS").as_deref(), Some("linux"));
}

#[test]
fn undeclared_arg_is_empty() {
    let g = eval("FROM a\nWORKDIR /x$NOPE\n").unwrap();
    assert_eq!(g.stages[0].config.as_ref().unwrap().workdir, "/x");
}

#[test]
fn workdir_relative() {
    let g = eval("FROM a\nWORKDIR /app\nWORKDIR src\nWORKDIR ../lib\n").unwrap();
    assert_eq!(g.stages[0].config.as_ref().unwrap().workdir, "/app/lib");
}

#[test]
fn required_var_message() {
    let e = eval("FROM a\nRUN true\nENV x=\"${NEED:?set NEED please}\"\n").unwrap_err();
    assert_eq!(e.span.line, 3);
    assert!(e.message.contains("NEED: set NEED please"), "{}", e.message);
}

#[test]
fn target_prunes_and_errors_only_when_needed() {
    let text = "FROM a AS one\nRUN true\nFROM b AS two\nENV x=${NEED:?boom}\nCOPY --from=three / /\nFROM c AS three\n";
    let g = eval_with(text, &[], Some("one")).unwrap();
    assert!(g.stages[0].needed && !g.stages[1].needed && !g.stages[2].needed);
    assert_eq!(g.order, vec![0]);
    assert!(eval_with(text, &[], Some("two")).is_err());
}

#[test]
fn forward_copy_from_is_an_error_when_needed() {
    let e = eval("FROM a AS one\nCOPY --from=two /x /x\nFROM b AS two\n").err();
    assert!(e.is_none(), "stage one is not needed by the default target");
    let e = eval_with(
        "FROM a AS one\nCOPY --from=two /x /x\nFROM b AS two\n",
        &[],
        Some("one"),
    )
    .unwrap_err();
    assert!(
        e.message
            .contains("needs to be defined before current stage"),
        "{}",
        e.message
    );
}

#[test]
fn index_out_of_range_everywhere() {
    let e = eval_with(
        "FROM a AS one\nFROM b AS two\nCOPY --from=5 / /\n",
        &[],
        Some("one"),
    )
    .unwrap_err();
    assert!(e.message.contains("invalid stage index 5"));
}

#[test]
fn cycle() {
    let e = eval("FROM a AS s0\nCOPY --from=s0 a b\n").unwrap_err();
    assert!(e
        .message
        .contains("circular dependency detected on stage: s0"));
}

#[test]
fn duplicate_stage_name_is_a_warning() {
    let g = eval("FROM a AS x\nFROM b AS x\nFROM x\n").unwrap();
    assert!(g
        .warnings
        .iter()
        .any(|w| w.rule == Rule::DuplicateStageName));
    assert_eq!(g.stages[2].base, Base::Stage { index: 1 });
}

#[test]
fn instruction_before_from() {
    let e = eval("RUN x\nFROM a\n").unwrap_err();
    assert!(e.message.contains("no build stage"));
}

#[test]
fn heredoc_copy_expands_unless_quoted() {
    let g = eval("FROM a\nENV N=kiln\nCOPY <<A <<\"B\" /d/\n$N\nA\n$N\nB\n").unwrap();
    let Instruction::Copy(crate::instructions::Copy { files: c, .. }) =
        &g.stages[0].steps[1].instruction
    else {
        panic!()
    };
    assert_eq!(c.inline[0].content, "kiln\n");
    assert_eq!(c.inline[1].content, "$N\n");
}

#[test]
fn unused_build_args_are_reported() {
    let g = eval_with(
        "ARG G\nFROM a\nARG S\n",
        &[("G", "1"), ("S", "2"), ("NOPE", "3"), ("HTTP_PROXY", "p")],
        None,
    )
    .unwrap();
    assert_eq!(g.unused_build_args, vec!["NOPE"]);
}

#[test]
fn proxy_args_reach_run_without_declaration() {
    let g = eval_with("FROM a\nRUN x\n", &[("HTTP_PROXY", "http://p:3128")], None).unwrap();
    assert_eq!(
        run_env(&g, 0, 0).get("HTTP_PROXY").as_deref(),
        Some("http://p:3128")
    );
    assert!(env_of(&g, 0).get("HTTP_PROXY").is_none());
}

#[test]
fn expose_ports() {
    let g = eval("FROM a\nARG P=8080\nEXPOSE 80 $P/udp 9000-9001\n").unwrap();
    let cfg = g.stages[0].config.as_ref().unwrap();
    assert_eq!(
        cfg.exposed_ports,
        vec!["80/tcp", "8080/udp", "9000/tcp", "9001/tcp"]
    );
    assert!(eval("FROM a\nEXPOSE 80/xyz\n").is_err());
}

#[test]
fn entrypoint_resets_cmd_from_base() {
    let g = eval("FROM a AS b\nCMD [\"x\"]\nFROM b\nENTRYPOINT [\"y\"]\n").unwrap();
    let cfg = g.stages[1].config.as_ref().unwrap();
    assert_eq!(cfg.cmd, None);
    assert_eq!(cfg.entrypoint, Some(vec!["y".into()]));
}

#[test]
fn check_error_directive() {
    let e = eval("# check=error=true\nFROM a\nMAINTAINER me\n").unwrap_err();
    assert_eq!(e.kind, ErrorKind::Lint);
    let g = eval("# check=skip=MaintainerDeprecated;error=true\nFROM a\nMAINTAINER me\n").unwrap();
    assert!(g.warnings.is_empty());
}

#[test]
fn references() {
    assert!(check_reference("docker.io/library/debian:bookworm").is_ok());
    assert!(check_reference("localhost:5000/a/b@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef").is_ok());
    assert!(check_reference("Debian").is_err());
    assert!(check_reference("debian:").is_err());
}
