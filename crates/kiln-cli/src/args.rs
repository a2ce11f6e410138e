//! The command line as typed: clap structures and nothing else.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// kiln bakes container and VM images from definitions in git, keeps them
/// fresh, chains them, and publishes them pinned.
#[derive(Debug, Parser)]
#[command(name = "kiln", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Work with Dockerfiles without building them.
    #[command(subcommand)]
    Dockerfile(DockerfileCommand),
}

#[derive(Debug, Subcommand)]
pub enum DockerfileCommand {
    /// Read a Dockerfile as BuildKit would and show its evaluated build graph.
    ///
    /// Prints the stages, their dependencies, the order a build runs them in
    /// and every instruction with its variables expanded; or, for a Dockerfile
    /// BuildKit rejects, the error with file, line, column and a hint. Also
    /// checks the context's .dockerignore (or <Dockerfile>.dockerignore).
    /// Exit status: 0 valid, 1 invalid, 2 bad command line.
    Check(CheckArgs),
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The Dockerfile to read [default: CONTEXT/Dockerfile]
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Set a build argument (KEY=VALUE, or KEY to take it from the environment)
    #[arg(long = "build-arg", value_name = "KEY=VALUE")]
    pub build_args: Vec<String>,
    /// Evaluate up to this stage; stages it does not need are skipped
    #[arg(long, value_name = "STAGE")]
    pub target: Option<String>,
    /// Target platform, such as linux/amd64 or linux/arm64 [default: the host's]
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
    /// Print the result (graph or error) as JSON on stdout
    #[arg(long)]
    pub json: bool,
    /// The build context directory
    #[arg(default_value = ".", value_name = "CONTEXT")]
    pub context: PathBuf,
}
