//! Instruction checks, one table per concern.

mod checks {
    use crate::error::{Diagnostic, ErrorKind};
    use crate::instructions::*;
    use crate::parser::parse;

    fn parsed(text: &str) -> Result<Parsed, Diagnostic> {
        let ast = parse(text).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        parse_node(ast.nodes.last().unwrap(), &lines)
    }

    fn instr(text: &str) -> Instruction {
        match parsed(text).unwrap() {
            Parsed::Instruction(i) => i,
            Parsed::From(_) => panic!("FROM"),
        }
    }

    #[test]
    fn unknown_flag_on_cmd() {
        let e = parsed("CMD --x [\"a\"]").unwrap_err();
        assert_eq!(e.message, "unknown flag: --x");
        assert_eq!(e.span.column, 5);
        assert_eq!(e.hint.as_deref(), Some("CMD takes no flags"));
    }

    #[test]
    fn copy_flag_typo_suggests() {
        let e = parsed("COPY --chmodd=755 a b").unwrap_err();
        assert_eq!(e.hint.as_deref(), Some("did you mean --chmod?"));
    }

    #[test]
    fn unknown_instruction_suggests() {
        let e = parsed("FORM alpine").unwrap_err();
        assert_eq!(e.kind, ErrorKind::UnknownInstruction);
        assert_eq!(e.hint.as_deref(), Some("did you mean FROM?"));
    }

    #[test]
    fn from_stage_names() {
        let Parsed::From(f) = parsed("FROM alpine AS Builder").unwrap() else {
            panic!()
        };
        assert_eq!(f.name.as_deref(), Some("builder"));
        assert!(parsed("FROM alpine AS base-${X}").is_err());
        assert!(parsed("FROM alpine AS 1st").is_err());
        assert!(parsed("FROM alpine AS").is_err());
    }

    #[test]
    fn copy_heredoc_and_flags() {
        let Instruction::Copy(c) =
            instr("COPY --link --chmod=644 <<EOF /etc/motd\nhi $USER\nEOF\n")
        else {
            panic!()
        };
        assert!(c.files.link);
        assert_eq!(c.files.chmod.as_deref(), Some("644"));
        assert_eq!(c.files.inline[0].content, "hi $USER\n");
        assert_eq!(c.files.dest, "/etc/motd");
    }

    #[test]
    fn copy_from_variable_is_rejected() {
        let e = parsed("COPY --from=$STAGE /a /b").unwrap_err();
        assert!(e.message.contains("doesn't support variable expansion"));
    }

    #[test]
    fn healthcheck_options() {
        let Instruction::Healthcheck(h) =
            instr("HEALTHCHECK --interval=30s --retries=3 CMD curl -f http://localhost/")
        else {
            panic!()
        };
        assert_eq!(h.interval, 30_000_000_000);
        assert_eq!(h.retries, 3);
        assert_eq!(h.test.unwrap().args, vec!["curl -f http://localhost/"]);
        assert!(parsed("HEALTHCHECK NONE x").is_err());
        assert!(parsed("HEALTHCHECK --interval=1x CMD true").is_err());
    }

    #[test]
    fn shell_must_be_json() {
        assert!(parsed("SHELL /bin/bash -c").is_err());
        let Instruction::Shell { shell } = instr(r#"SHELL ["powershell", "-command"]"#) else {
            panic!()
        };
        assert_eq!(shell.len(), 2);
    }

    #[test]
    fn json_not_strings_is_an_error() {
        let text = "CMD [1, 2]";
        let e = parse(text).unwrap_err();
        assert!(e
            .message
            .contains("arrays must be comprised of strings only"));
    }

    #[test]
    fn cmd_empty_json_is_accepted() {
        let Instruction::Cmd(c) = instr("CMD []") else {
            panic!()
        };
        assert!(c.args.is_empty() && !c.shell_form);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_go_duration("1m30s"), Ok(90_000_000_000));
        assert_eq!(parse_go_duration("1.5s"), Ok(1_500_000_000));
        assert!(parse_go_duration("5").is_err());
    }
}

mod every_instruction {
    use crate::instructions::*;
    use crate::parser::parse;

    /// One line per instruction of the reference, and the variant it becomes.
    #[test]
    fn each_instruction_has_its_typed_form() {
        let table: &[(&str, &str)] = &[
            ("ADD --link src /dst", "ADD"),
            ("ARG A B=1", "ARG"),
            ("CMD [\"a\"]", "CMD"),
            ("COPY --from=x a /b", "COPY"),
            ("ENTRYPOINT exec app", "ENTRYPOINT"),
            ("ENV A=1", "ENV"),
            ("EXPOSE 80/udp", "EXPOSE"),
            ("FROM a AS b", "FROM"),
            ("HEALTHCHECK NONE", "HEALTHCHECK"),
            ("LABEL a=b", "LABEL"),
            ("MAINTAINER me", "MAINTAINER"),
            ("ONBUILD RUN x", "ONBUILD"),
            ("RUN --network=none x", "RUN"),
            ("SHELL [\"sh\", \"-c\"]", "SHELL"),
            ("STOPSIGNAL 9", "STOPSIGNAL"),
            ("USER app:app", "USER"),
            ("VOLUME /v", "VOLUME"),
            ("WORKDIR /w", "WORKDIR"),
        ];
        assert_eq!(table.len(), INSTRUCTIONS.len());
        for (line, want) in table {
            let ast = parse(line).unwrap();
            let lines = [*line];
            let got = match parse_node(&ast.nodes[0], &lines).unwrap() {
                Parsed::From(_) => "FROM".to_string(),
                Parsed::Instruction(i) => serde_json::to_value(&i).unwrap()["instruction"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            };
            assert_eq!(&got, want, "{line}");
            // lowercase spelling is the same instruction
            let lower = line.replacen(want, &want.to_ascii_lowercase(), 1);
            assert!(
                parse_node(&parse(&lower).unwrap().nodes[0], &[lower.as_str()]).is_ok(),
                "{lower}"
            );
        }
    }
}
