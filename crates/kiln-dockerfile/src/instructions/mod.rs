//! Nodes to typed instructions: per-instruction flags, argument counts and
//! forms, as BuildKit's `instructions` package checks them. Values are still
//! unexpanded here; [`crate::eval`] expands them.

use serde::Serialize;

use crate::error::Span;

mod flags;
mod parse;
#[cfg(test)]
mod tests;

pub use flags::locate;
pub use parse::{parse_go_duration, parse_node, valid_stage_name};

/// Every instruction of the Dockerfile reference.
pub const INSTRUCTIONS: &[&str] = &[
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

/// A command line of RUN, CMD, ENTRYPOINT or HEALTHCHECK.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommandLine {
    /// One string in shell form, the argv in exec form.
    pub args: Vec<String>,
    /// True in shell form: the stage's SHELL is prepended when it runs.
    pub shell_form: bool,
    /// Heredocs written with the command (RUN only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub heredocs: Vec<InlineFile>,
}

/// Content written inline with a heredoc.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InlineFile {
    /// The heredoc's delimiter; for COPY and ADD the file name.
    pub name: String,
    pub content: String,
    /// Whether variables in the content are still to be expanded (unquoted
    /// delimiter). COPY and ADD contents are expanded during evaluation, after
    /// which this is false.
    pub expand: bool,
    #[serde(skip_serializing_if = "is_zero")]
    pub fd: u32,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
}

/// One name of an ARG instruction, with its default if it has one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArgDecl {
    pub name: String,
    pub default: Option<String>,
}

/// RUN `--network`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    #[default]
    Default,
    None,
    Host,
}

/// RUN `--security`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    #[default]
    Sandbox,
    Insecure,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Run {
    pub command: CommandLine,
    /// `--mount` values as written; parsed when the stage is evaluated.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<crate::mount::Mount>,
    #[serde(skip)]
    pub mount_specs: Vec<String>,
    pub network: Network,
    pub security: Security,
}

/// What COPY and ADD share: sources (paths, or heredocs written inline),
/// the destination and the ownership and filtering flags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Files {
    pub sources: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub inline: Vec<InlineFile>,
    pub dest: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chown: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chmod: Option<String>,
    pub link: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Copy {
    /// A stage (name or index) or an image to copy from instead of the context.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(flatten)]
    pub files: Files,
    pub parents: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Add {
    #[serde(flatten)]
    pub files: Files,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
    pub keep_git_dir: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unpack: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Healthcheck {
    /// `None` for `HEALTHCHECK NONE`.
    pub test: Option<CommandLine>,
    /// Durations in nanoseconds, as the image config stores them; 0 = default.
    pub interval: u64,
    pub timeout: u64,
    pub start_period: u64,
    pub start_interval: u64,
    pub retries: u32,
}

/// A port of EXPOSE.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Port {
    pub port: u16,
    pub protocol: String,
}

/// One instruction, typed. Strings are expanded once the stage is evaluated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "instruction", rename_all = "UPPERCASE")]
pub enum Instruction {
    Run(Run),
    Cmd(CommandLine),
    Entrypoint(CommandLine),
    Shell {
        shell: Vec<String>,
    },
    Env {
        pairs: Vec<KeyValue>,
    },
    Label {
        pairs: Vec<KeyValue>,
    },
    Maintainer {
        name: String,
    },
    Expose {
        #[serde(skip_serializing_if = "Vec::is_empty")]
        ports: Vec<Port>,
        #[serde(skip)]
        specs: Vec<String>,
    },
    Add(Add),
    Copy(Copy),
    Volume {
        paths: Vec<String>,
    },
    /// `USER user[:group]`; names are resolved against the image's
    /// /etc/passwd and /etc/group when the build runs.
    User {
        user: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        group: Option<String>,
    },
    Workdir {
        path: String,
    },
    Arg {
        args: Vec<ArgDecl>,
    },
    Onbuild {
        trigger: String,
    },
    Stopsignal {
        signal: String,
    },
    Healthcheck(Healthcheck),
}

/// A FROM line: the start of a stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct From {
    pub base: String,
    pub name: Option<String>,
    pub platform: Option<String>,
    pub span: Span,
    /// The `AS` keyword and the name as written, for casing checks.
    pub as_keyword: Option<String>,
    pub name_as_written: Option<String>,
}

/// The typed form of one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    From(From),
    Instruction(Instruction),
}
