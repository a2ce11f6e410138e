//! Build checks: warnings named as BuildKit names them, and the `# check=`
//! directive that skips them or turns them into errors.

use serde::Serialize;

use crate::error::{Diagnostic, ErrorKind, Span};

/// The checks kiln reports, with BuildKit's rule names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Rule {
    DuplicateStageName,
    StageNameCasing,
    FromAsCasing,
    MaintainerDeprecated,
    JSONArgsRecommended,
    NoEmptyContinuation,
    LegacyKeyValueFormat,
    MultipleInstructionsDisallowed,
    UndefinedArgInFrom,
    WorkdirRelativePath,
    ReservedStageName,
    ExposeInvalidFormat,
}

impl Rule {
    pub fn name(self) -> &'static str {
        match self {
            Rule::DuplicateStageName => "DuplicateStageName",
            Rule::StageNameCasing => "StageNameCasing",
            Rule::FromAsCasing => "FromAsCasing",
            Rule::MaintainerDeprecated => "MaintainerDeprecated",
            Rule::JSONArgsRecommended => "JSONArgsRecommended",
            Rule::NoEmptyContinuation => "NoEmptyContinuation",
            Rule::LegacyKeyValueFormat => "LegacyKeyValueFormat",
            Rule::MultipleInstructionsDisallowed => "MultipleInstructionsDisallowed",
            Rule::UndefinedArgInFrom => "UndefinedArgInFrom",
            Rule::WorkdirRelativePath => "WorkdirRelativePath",
            Rule::ReservedStageName => "ReservedStageName",
            Rule::ExposeInvalidFormat => "ExposeInvalidFormat",
        }
    }
}

/// A problem that does not stop the build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    pub rule: Rule,
    pub message: String,
    pub span: Span,
}

impl Warning {
    pub fn new(rule: Rule, span: Span, message: impl Into<String>) -> Self {
        Warning {
            rule,
            message: message.into(),
            span,
        }
    }
}

/// The `# check=skip=A,B;error=true` directive.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CheckConfig {
    pub skip_all: bool,
    pub skip: Vec<String>,
    pub error: bool,
}

impl CheckConfig {
    /// Parses the directive's value; `line` is where it was written.
    pub fn parse(value: &str, line: usize) -> Result<Self, Diagnostic> {
        let mut cfg = CheckConfig::default();
        for part in value.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let bad = |msg: String| {
                Diagnostic::new(ErrorKind::Syntax, Span::line(line), msg).with_hint(
                    "the check directive reads like `# check=skip=RuleA,RuleB;error=true`",
                )
            };
            let Some((key, val)) = part.split_once('=') else {
                return Err(bad(format!("invalid check directive field {part:?}")));
            };
            match key.trim().to_ascii_lowercase().as_str() {
                "skip" => {
                    for rule in val.split(',').map(str::trim).filter(|r| !r.is_empty()) {
                        if rule.eq_ignore_ascii_case("all") {
                            cfg.skip_all = true;
                        } else {
                            cfg.skip.push(rule.to_string());
                        }
                    }
                }
                "error" => {
                    cfg.error = match val.trim().to_ascii_lowercase().as_str() {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        other => {
                            return Err(bad(format!("invalid boolean {other:?} for check error")))
                        }
                    }
                }
                other => return Err(bad(format!("unknown check directive key {other:?}"))),
            }
        }
        Ok(cfg)
    }

    /// The directive's value that gives this configuration, if it differs
    /// from the default.
    pub fn directive(&self) -> Option<String> {
        let mut skip = self.skip.clone();
        if self.skip_all {
            skip.push("all".into());
        }
        let mut parts = Vec::new();
        if !skip.is_empty() {
            parts.push(format!("skip={}", skip.join(",")));
        }
        if self.error {
            parts.push("error=true".into());
        }
        (!parts.is_empty()).then(|| parts.join(";"))
    }

    pub fn enabled(&self, rule: Rule) -> bool {
        !self.skip_all
            && !self
                .skip
                .iter()
                .any(|s| s.eq_ignore_ascii_case(rule.name()))
    }

    /// Drops skipped warnings; with `error=true`, fails on the first one left.
    pub fn apply(&self, warnings: Vec<Warning>) -> Result<Vec<Warning>, Diagnostic> {
        let kept: Vec<Warning> = warnings
            .into_iter()
            .filter(|w| self.enabled(w.rule))
            .collect();
        if self.error {
            if let Some(w) = kept.first() {
                return Err(Diagnostic::new(
                    ErrorKind::Lint,
                    w.span,
                    format!("lint violation {}: {}", w.rule.name(), w.message),
                )
                .with_hint(format!(
                    "`# check=error=true` makes warnings errors; fix it or add `skip={}`",
                    w.rule.name()
                )));
            }
        }
        Ok(kept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_check_directive() {
        let c =
            CheckConfig::parse("skip=JSONArgsRecommended,StageNameCasing;error=true", 1).unwrap();
        assert!(c.error);
        assert!(!c.enabled(Rule::JSONArgsRecommended));
        assert!(c.enabled(Rule::FromAsCasing));
        assert!(CheckConfig::parse("nonsense", 1).is_err());
        assert!(CheckConfig::parse("skip=all", 1).unwrap().skip_all);
    }

    #[test]
    fn error_true_turns_warnings_into_errors() {
        let c = CheckConfig::parse("error=true", 1).unwrap();
        let w = Warning::new(
            Rule::MaintainerDeprecated,
            Span::line(3),
            "MAINTAINER is deprecated",
        );
        let e = c.apply(vec![w]).unwrap_err();
        assert_eq!(e.span.line, 3);
        assert!(e.message.contains("MaintainerDeprecated"));
    }
}
