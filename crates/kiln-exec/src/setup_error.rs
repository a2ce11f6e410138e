//! Why a step could not be set up in the helper processes: what was being
//! done (mounting /proc, binding a secret, installing the seccomp filter)
//! and the typed cause. The helper prints it and exits 125.

/// What was being done, and why it failed.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {cause}")]
pub(crate) struct SetupError {
    pub what: String,
    #[source]
    pub cause: Cause,
}

/// The underlying failure.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Cause {
    /// A system call (mount, unshare, pivot_root, capset, …).
    #[error(transparent)]
    Sys(#[from] rustix::io::Errno),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A path in the step's root (a mount point, a bind source).
    #[error(transparent)]
    Root(#[from] kiln_root::Error),
    /// The step's spec file is not what the build wrote.
    #[error(transparent)]
    Spec(#[from] serde_json::Error),
    /// A seccomp filter could not be made.
    #[error(transparent)]
    Seccomp(#[from] seccompiler::Error),
    #[error(transparent)]
    SeccompBackend(#[from] seccompiler::BackendError),
    /// Mount options with a NUL byte.
    #[error(transparent)]
    Nul(#[from] std::ffi::NulError),
}

pub(crate) type R<T> = Result<T, SetupError>;

/// Names what was being done when a call failed.
pub(crate) trait Context<T> {
    fn context(self, what: impl Into<String>) -> R<T>;
}

impl<T, E: Into<Cause>> Context<T> for Result<T, E> {
    fn context(self, what: impl Into<String>) -> R<T> {
        self.map_err(|e| SetupError {
            what: what.into(),
            cause: e.into(),
        })
    }
}
