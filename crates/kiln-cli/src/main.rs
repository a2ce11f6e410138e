//! The `kiln` binary: everything happens in `kiln_cli`.
use std::process::ExitCode;

fn main() -> ExitCode {
    kiln_cli::main(std::env::args_os())
}
