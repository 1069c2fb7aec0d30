//! The library's error type: every failure names what it was working on.

use std::path::PathBuf;

use crate::daemon::protocol::ErrorKind;

/// Errors of the rollupd library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A query that does not follow the JSON query language; the message names the offending part.
    #[error("{0}")]
    InvalidQuery(String),
    /// An input file that could not be folded.
    #[error("{path}: {reason}")]
    BadFile { path: PathBuf, reason: String },
    /// A file that changed while it was read or folded; it is read again once it settles.
    #[error("{0}: changed while being read; folded again once it settles")]
    Changed(PathBuf),
    /// An I/O failure on a path.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A failure inside DuckDB.
    #[error("duckdb: {0}")]
    DuckDb(#[from] duckdb::Error),
    /// A failure inside Arrow (IPC, casts, kernels).
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// State on disk that cannot be used (wrong version, missing parts).
    #[error("state {path}: {reason}")]
    State { path: PathBuf, reason: String },
    /// The state folder was removed or replaced while the daemon ran: nothing more can be
    /// committed to it, and the daemon stops.
    #[error(
        "{0}: the state folder was removed or replaced while rollupd ran; stopping \
         (the next start rebuilds it from the watched folder)"
    )]
    StateGone(PathBuf),
    /// Work stopped early because the engine was asked to stop.
    #[error("cancelled: rollupd is shutting down")]
    Cancelled,
    /// A request over one of the daemon's limits; the message names the limit.
    #[error("{0}")]
    TooLarge(String),
    /// A request that took longer than it may; the message names the limit.
    #[error("{0}")]
    Timeout(String),
    /// A query stopped because the client that asked for it went away.
    #[error("the client went away; the query was stopped")]
    Abandoned,
    /// An error reply from the daemon.
    #[error("{kind} error: {message}")]
    Remote { kind: ErrorKind, message: String },
    /// Anything else that is a bug or an unexpected condition.
    #[error("{0}")]
    Internal(String),
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An `InvalidQuery` error with the given message.
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidQuery(msg.into())
    }

    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// Whether trying again, with nothing changed, may succeed (an I/O error), unlike
    /// content that does not parse.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Io { .. })
    }

    /// The protocol's error kind for this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidQuery(_) => ErrorKind::InvalidQuery,
            Error::TooLarge(_) => ErrorKind::TooLarge,
            Error::Timeout(_) => ErrorKind::Timeout,
            Error::Remote { kind, .. } => *kind,
            _ => ErrorKind::Internal,
        }
    }
}
