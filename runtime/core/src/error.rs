//! The one error type of the `flink_rs` library.
//!
//! Variants name the failing thing (a column, a file, a task) so that a message is enough to
//! find the problem without a debugger. Binaries add context with `anyhow`.

use std::path::PathBuf;

/// Result alias used throughout the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while building or running a job.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An Arrow kernel or builder failed (schema mismatch, bad cast, …).
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),

    /// A file could not be read or written.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A column named in the job does not exist in the stream's schema.
    #[error("unknown column `{name}`; the stream has columns [{available}]")]
    UnknownColumn { name: String, available: String },

    /// A column exists but has a type the operation cannot use.
    #[error("column `{name}` has type {actual}, expected {expected}")]
    ColumnType {
        name: String,
        expected: String,
        actual: String,
    },

    /// The job graph is not well formed (detected before anything runs).
    #[error("invalid job graph: {0}")]
    InvalidGraph(String),

    /// A connector or operator was configured with an impossible value.
    #[error("invalid configuration `{key}`: {message}")]
    Config { key: String, message: String },

    /// A task failed while running; `task` names the operator chain and subtask.
    #[error("task {task} failed: {message}")]
    TaskFailed { task: String, message: String },

    /// A task thread panicked.
    #[error("task {task} panicked: {message}")]
    TaskPanicked { task: String, message: String },

    /// The job was cancelled before it finished.
    #[error("job cancelled")]
    Cancelled,

    /// State could not be encoded or decoded (snapshot, restore).
    #[error("state `{state}`: {message}")]
    State { state: String, message: String },

    /// Writing, reading or validating a checkpoint or savepoint failed.
    #[error("checkpoint {0}")]
    Checkpoint(String),

    /// A checkpoint or savepoint in storage is incomplete or damaged (no `_metadata`, an
    /// invalid one, a state file missing or not matching it). Recovery skips such a
    /// checkpoint for the one before; any other failure to read one (storage unreachable)
    /// is an error, never a reason to go back to an older checkpoint.
    #[error("checkpoint {0}")]
    SnapshotCorrupt(String),

    /// A valid snapshot this job cannot restore (another max parallelism, state of an
    /// operator the job no longer has): the user must change the job or the setting.
    #[error("checkpoint {0}")]
    SnapshotIncompatible(String),

    /// A checkpoint or savepoint cannot be taken now: the job is restarting, finishing or
    /// has ended. Asking again later (of a running job) may succeed.
    #[error("checkpoint {0}")]
    SnapshotDeclined(String),

    /// A connector that cannot take part in checkpoints was asked to.
    #[error("checkpoint {0}")]
    CheckpointUnsupported(String),

    /// Object storage (local directory, S3, GCS, Azure) failed.
    #[error("object store {path}: {source}")]
    ObjectStore {
        path: String,
        #[source]
        source: object_store::Error,
    },

    /// The cluster's control or data plane failed (a lost taskmanager, a broken connection).
    #[error("cluster: {0}")]
    Network(String),

    /// A user function reported an error.
    #[error("{0}")]
    User(String),
}

impl Error {
    /// Shorthand for a configuration error.
    pub fn config(key: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Config {
            key: key.into(),
            message: message.into(),
        }
    }

    /// Shorthand for a state encoding error.
    pub fn state(state: impl Into<String>, message: impl std::fmt::Display) -> Self {
        Error::State {
            state: state.into(),
            message: message.to_string(),
        }
    }

    /// Wraps an I/O error with the operation and path it concerns.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
