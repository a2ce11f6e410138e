//! Where output goes: data to stdout, messages to stderr.

use std::io::Write;

/// The one way kiln writes to the terminal.
pub struct Printer {
    _private: (),
}

impl Printer {
    pub fn stdio() -> Self {
        Printer { _private: () }
    }

    /// Data the user asked for (a report, JSON).
    pub fn data(&self, text: &str) {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(text.as_bytes());
        if !text.ends_with('\n') {
            let _ = out.write_all(b"\n");
        }
        let _ = out.flush();
    }

    /// Errors, warnings and progress.
    pub fn error(&self, text: &str) {
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(text.as_bytes());
        if !text.ends_with('\n') {
            let _ = err.write_all(b"\n");
        }
    }
}

/// Build progress as plain lines on stderr: one per step, RUN output
/// indented under it.
pub struct StepPrinter<'a> {
    printer: &'a Printer,
    count: usize,
    passthrough: bool,
}

impl<'a> StepPrinter<'a> {
    pub fn new(printer: &'a Printer) -> Self {
        StepPrinter {
            printer,
            count: 0,
            passthrough: false,
        }
    }

    /// For `kiln run`: the command's output goes to stdout as it is.
    pub fn passthrough(printer: &'a Printer) -> Self {
        StepPrinter {
            printer,
            count: 0,
            passthrough: true,
        }
    }
}

impl kiln_build::Progress for StepPrinter<'_> {
    fn step(&mut self, stage: &str, line: usize, text: &str, cached: bool) {
        self.count += 1;
        let first = text.lines().next().unwrap_or("");
        let mark = if cached { " CACHED" } else { "" };
        self.printer.error(&format!(
            "#{} [{stage}] line {line}: {first}{mark}",
            self.count
        ));
    }

    fn output(&mut self, stage: &str, line: &str) {
        if self.passthrough {
            self.printer.data(line);
        } else if stage.is_empty() {
            self.printer.error(line);
        } else {
            // stages build concurrently: each output line says whose it is
            self.printer.error(&format!("  {stage} | {line}"));
        }
    }
}
