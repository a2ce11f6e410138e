//! kiln's Dockerfile frontend.
//!
//! Reads a Dockerfile the way BuildKit does and turns it into a typed,
//! evaluated [`BuildGraph`]: stages, their dependencies and every instruction
//! with its variables expanded where the Dockerfile reference says so. It does
//! no I/O: the caller hands it the text, the build arguments and platforms,
//! and (through [`BaseImages`]) what it knows of base images.
//!
//! Rejected input yields a [`Diagnostic`] with the line, column and a hint.
#![cfg_attr(not(test), deny(clippy::print_stdout, clippy::print_stderr))]

pub mod dockerignore;
pub mod error;
pub mod eval;
pub mod glob;
pub mod graph;
pub mod instructions;
pub mod lint;
pub mod mount;
pub mod parser;
pub mod platform;
mod printer;
pub mod shell;
mod words;

pub use error::{Diagnostic, ErrorKind, Span};
pub use eval::{
    evaluate, Base, BaseConfig, BaseImages, BuildGraph, Options, Stage, Step, UnknownBases,
};
pub use instructions::Instruction;
pub use lint::{Rule, Warning};
pub use parser::parse;
pub use platform::Platform;

/// One evaluated instruction as Dockerfile text, the form history entries
/// and progress lines show.
pub fn instruction_text(i: &Instruction, escape: char) -> String {
    printer::instruction(i, escape)
}

/// Whether a `# syntax=` value names the frontend built into kiln (and BuildKit):
/// `docker/dockerfile:1`, `:1.x`, `:1.x.y`, with or without `docker.io/`, and
/// their `-labs` variants. kiln never fetches a frontend image.
pub fn is_builtin_syntax(value: &str) -> bool {
    let name = value.split_whitespace().next().unwrap_or("");
    let name = name.split('@').next().unwrap_or(name);
    let name = name.strip_prefix("docker.io/").unwrap_or(name);
    let Some(tag) = name.strip_prefix("docker/dockerfile") else {
        return false;
    };
    let tag = match tag.strip_prefix(':') {
        Some(t) => t,
        None => return tag.is_empty(),
    };
    let tag = tag.strip_suffix("-labs").unwrap_or(tag);
    tag == "latest" || tag == "labs" || tag == "1" || tag.starts_with("1.")
}

#[cfg(test)]
mod tests {
    #[test]
    fn builtin_syntax() {
        for v in [
            "docker/dockerfile:1",
            "docker/dockerfile:1.7",
            "docker.io/docker/dockerfile:1.4.3",
            "docker/dockerfile:1-labs",
            "docker/dockerfile",
        ] {
            assert!(super::is_builtin_syntax(v), "{v}");
        }
        for v in ["example.com/my/frontend:2", "docker/dockerfile:2"] {
            assert!(!super::is_builtin_syntax(v), "{v}");
        }
    }
}
