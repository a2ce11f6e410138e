//! Exit codes, so scripts can tell a bad Dockerfile from a bad command line.

/// What the process exit code means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// The command did what was asked.
    Success = 0,
    /// The input was checked and rejected (an invalid Dockerfile, a failed build).
    Failure = 1,
    /// The command line was wrong: unknown flag, missing file, bad value.
    Usage = 2,
    /// kiln itself failed (I/O error, bug).
    Internal = 3,
}

/// An error that carries its exit code; anything else is [`Exit::Internal`].
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    pub exit: Exit,
    pub message: String,
}

impl Failure {
    pub fn usage(message: impl Into<String>) -> anyhow::Error {
        Failure {
            exit: Exit::Usage,
            message: message.into(),
        }
        .into()
    }

    /// The operation was refused or failed outside kiln (a registry, a missing image).
    pub fn failed(message: impl Into<String>) -> anyhow::Error {
        Failure {
            exit: Exit::Failure,
            message: message.into(),
        }
        .into()
    }
}

pub(crate) fn classify(err: &anyhow::Error) -> Exit {
    err.chain()
        .find_map(|e| e.downcast_ref::<Failure>())
        .map(|f| f.exit)
        .unwrap_or(Exit::Internal)
}
