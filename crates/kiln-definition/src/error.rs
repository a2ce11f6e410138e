//! Errors that point into a kiln.toml: file, line, column, the line itself
//! and a hint.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// Something wrong with a factory definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub file: PathBuf,
    /// 1-based; 0 when the error is about the whole file (it cannot be read).
    pub line: usize,
    pub column: usize,
    pub message: String,
    pub hint: Option<String>,
    /// The text of the line the error points at.
    pub source_line: String,
}

impl Error {
    /// An error about a whole file.
    pub fn file(file: &Path, message: impl Into<String>) -> Self {
        Error {
            file: file.to_path_buf(),
            line: 0,
            column: 0,
            message: message.into(),
            hint: None,
            source_line: String::new(),
        }
    }

    /// An error at byte range `span` of `text`, the content of `file`.
    pub fn at(file: &Path, text: &str, span: Range<usize>, message: impl Into<String>) -> Self {
        let start = span.start.min(text.len());
        let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
        Error {
            file: file.to_path_buf(),
            line: text[..start].matches('\n').count() + 1,
            column: text[line_start..start].chars().count() + 1,
            message: message.into(),
            hint: None,
            source_line: text[line_start..line_end]
                .trim_end_matches('\r')
                .to_string(),
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.message)?;
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file.display(),
                self.line,
                self.column,
                self.message
            )?;
            let gutter = self.line.to_string();
            write!(
                f,
                "\n {gutter} | {}\n {} | {}^",
                self.source_line,
                " ".repeat(gutter.len()),
                " ".repeat(self.column.saturating_sub(1))
            )?;
        }
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}
