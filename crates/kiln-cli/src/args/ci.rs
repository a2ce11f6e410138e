//! The arguments of spreading the factory over a CI engine: `kiln ci`,
//! `kiln lock`, and the runner-job options of `kiln bake`.

use std::path::PathBuf;

use clap::{Args, Subcommand};

/// Baking one job of a graph spread over CI runners (`kiln ci github`
/// writes such jobs): only the image named is built, on what kiln.lock and
/// the fragments say, and its lock entry goes to a fragment.
#[derive(Debug, Args)]
pub struct RunnerArgs {
    /// Write the image's lock entry to FILE instead of kiln.lock, and build
    /// only the image named: those it stands on are taken as kiln.lock and
    /// the fragments hold them, pulled by digest
    #[arg(long, value_name = "FILE")]
    pub fragment: Option<PathBuf>,
    /// Lock fragments of jobs that ran before (files or directories of
    /// *.toml), read as if merged into kiln.lock; a missing directory has
    /// none
    #[arg(long, value_name = "PATH", requires = "fragment")]
    pub fragments: Vec<PathBuf>,
    /// Build only this platform of a multi-platform image (`kiln ci index`
    /// assembles its index from every platform's fragment)
    #[arg(long, value_name = "PLATFORM", requires = "fragment")]
    pub platform: Option<String>,
    /// Push to registries by digest only, moving no tag
    #[arg(long, requires = "fragment")]
    pub push_by_digest: bool,
}

#[derive(Debug, Subcommand)]
pub enum CiCommand {
    /// Write a GitHub Actions workflow from the factory graph: a plan job,
    /// one job per image (a matrix over platforms, on native runners where
    /// GitHub has them), an index job per multi-platform image and a job
    /// that merges the results into kiln.lock. Exit status 1 with --check
    /// when the file is out of date.
    Github(CiGithubArgs),
    /// Assemble a multi-platform image's index from the fragments of the
    /// jobs that each baked one platform (and pushed it by digest), push it
    /// under the image's version and moving tags, and write the whole
    /// image's lock entry to a fragment. An index the lock already holds is
    /// not pushed again.
    Index(CiIndexArgs),
}

#[derive(Debug, Args)]
pub struct CiIndexArgs {
    /// A factory file or directory [default: .]
    #[arg(short = 'f', long = "file", value_name = "PATH")]
    pub files: Vec<PathBuf>,
    /// The multi-platform image
    pub image: String,
    /// The platforms' fragments (files or directories of *.toml)
    #[arg(long, required = true, value_name = "PATH")]
    pub fragments: Vec<PathBuf>,
    /// Where the whole image's lock entry goes
    #[arg(long, value_name = "FILE")]
    pub fragment: PathBuf,
}

#[derive(Debug, Args)]
pub struct CiGithubArgs {
    /// A factory file or directory [default: .]
    #[arg(short = 'f', long = "file", value_name = "PATH")]
    pub files: Vec<PathBuf>,
    /// Where the workflow goes [default: standard output]
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Write nothing; fail when FILE (-o) differs from what would be written
    #[arg(long, requires = "output")]
    pub check: bool,
    /// Open a pull request with the new kiln.lock instead of pushing it
    #[arg(long)]
    pub pull_request: bool,
    /// Log every job in to REGISTRY before it runs kiln (repeatable): as
    /// the secret KILN_REGISTRY_USER (default: the actor) with the
    /// secret KILN_REGISTRY_PASSWORD (default: the job's token, which
    /// ghcr.io takes)
    #[arg(long, value_name = "REGISTRY")]
    pub login: Vec<String>,
    /// The shell command that installs kiln on a runner
    #[arg(
        long,
        value_name = "COMMAND",
        default_value = "cargo install --locked --git https://github.com/kiln-factory/kiln kiln-cli"
    )]
    pub install: String,
}

#[derive(Debug, Subcommand)]
pub enum LockCommand {
    /// Merge lock fragments (what jobs that each baked one image on their
    /// own runner hand on) into the factory's kiln.lock files. A
    /// multi-platform image is taken only whole (from its index's
    /// fragment); the others keep their entries.
    Merge(LockMergeArgs),
}

#[derive(Debug, Args)]
pub struct LockMergeArgs {
    /// A factory file or directory [default: .]
    #[arg(short = 'f', long = "file", value_name = "PATH")]
    pub files: Vec<PathBuf>,
    /// Fragment files, or directories of them (*.toml)
    #[arg(required = true, value_name = "FRAGMENT")]
    pub fragments: Vec<PathBuf>,
}
