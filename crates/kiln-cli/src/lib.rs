//! kiln's command-line interface: argument parsing, settings, one module per
//! command, and the only place in kiln that prints.
#![cfg_attr(not(test), deny(clippy::print_stdout, clippy::print_stderr))]

mod args;
mod commands;
mod exit;
mod interrupt;
mod printer;

use std::ffi::OsString;
use std::process::ExitCode;

use clap::Parser;

pub use exit::{Exit, Failure};
use printer::Printer;

/// Runs kiln with `argv`, prints any error once, and returns the exit code.
pub fn main(argv: impl IntoIterator<Item = OsString>) -> ExitCode {
    let argv: Vec<OsString> = argv.into_iter().collect();
    // the step helpers: fresh single-threaded processes, never via clap
    match (argv.get(1).and_then(|a| a.to_str()), argv.get(2)) {
        (Some("__exec"), Some(spec)) => kiln_exec::exec_main(std::path::Path::new(spec)),
        (Some("__exec-init"), Some(spec)) => kiln_exec::exec_init_main(std::path::Path::new(spec)),
        _ => {}
    }
    let printer = Printer::stdio();
    let code = match args::Cli::try_parse_from(argv) {
        Ok(cli) => match commands::run(cli, &printer) {
            Ok(code) => code,
            Err(err) => {
                let code = exit::classify(&err);
                printer.error(&format!("error: {err:#}"));
                code
            }
        },
        Err(e) => {
            let code = if e.use_stderr() {
                Exit::Usage
            } else {
                Exit::Success
            };
            let _ = e.print();
            code
        }
    };
    if std::env::var_os("KILN_STATS").is_some() {
        report_peak_memory(&printer);
    }
    ExitCode::from(code as u8)
}

/// With KILN_STATS set, kiln reports its own peak resident memory (the
/// kernel's VmHWM) on exit; tests use it to hold kiln to a memory bound.
fn report_peak_memory(printer: &Printer) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    if let Some(line) = status.lines().find(|l| l.starts_with("VmHWM:")) {
        let kib = line.split_whitespace().nth(1).unwrap_or("0");
        printer.error(&format!("kiln: peak memory {kib} KiB"));
    }
}
