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
