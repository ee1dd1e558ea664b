//! The error type of every fallible Sabot operation.

use std::path::PathBuf;

use arrow::datatypes::DataType;
use arrow::error::ArrowError;

/// A specialised `Result` whose error is [`SabotError`].
pub type Result<T, E = SabotError> = std::result::Result<T, E>;

/// Everything that can go wrong in Sabot, each variant naming where it happened.
///
/// ```
/// use sabot::SabotError;
/// let err = SabotError::ColumnNotFound { column: "price".into(), available: vec!["bid".into()] };
/// assert_eq!(err.to_string(), "column 'price' not found; available columns: [bid]");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SabotError {
    /// A column named in an expression or a record does not exist.
    #[error("column '{column}' not found; available columns: [{}]", available.join(", "))]
    ColumnNotFound {
        /// The name that was looked up.
        column: String,
        /// The columns that do exist.
        available: Vec<String>,
    },

    /// A column exists but holds another type than required.
    #[error("column '{column}' has type {found}, expected {expected}")]
    TypeMismatch {
        /// The column.
        column: String,
        /// The type the caller needed.
        expected: DataType,
        /// The type the data has.
        found: DataType,
    },

    /// A null value where the target cannot hold one.
    #[error("column '{column}' row {row} is null, but the field is not optional")]
    UnexpectedNull {
        /// The column.
        column: String,
        /// The row index inside the batch.
        row: usize,
    },

    /// An expression or plan is invalid (caught while planning, before any data is read).
    #[error("plan error: {0}")]
    Plan(String),

    /// An expression failed while being evaluated (overflow, division by zero, bad cast...).
    #[error("failed to evaluate {expr}: {source}")]
    Eval {
        /// The expression, as displayed.
        expr: String,
        /// The kernel's error.
        #[source]
        source: ArrowError,
    },

    /// A file could not be opened, read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// A file exists but its content is not valid for its format.
    #[error("{path}: {location}{message}", location = location.as_ref().map(|l| format!("{l}: ")).unwrap_or_default())]
    Format {
        /// The file.
        path: PathBuf,
        /// Line, row, column or offset inside the file, when known (e.g. "line 17, column 'amount'").
        location: Option<String>,
        /// What is wrong.
        message: String,
    },

    /// An Arrow kernel failed outside of expression evaluation.
    #[error(transparent)]
    Arrow(#[from] ArrowError),

    /// A Parquet reader or writer failed without a file to name.
    #[error(transparent)]
    Parquet(#[from] parquet::errors::ParquetError),

    /// A user-supplied closure or operator failed.
    #[error("{operator}: {message}")]
    User {
        /// The operator that ran the closure.
        operator: String,
        /// The closure's message.
        message: String,
    },

    /// An error shared by several consumers (e.g. a join build side seen by every probe).
    #[error(transparent)]
    Shared(std::sync::Arc<SabotError>),

    /// Keyed state could not be registered, read, written, snapshotted or restored.
    #[error("state '{state}': {message}")]
    State {
        /// The state (`operator/state`), or the backend's directory when no single state is involved.
        state: String,
        /// What went wrong.
        message: String,
    },

    /// A Kafka client operation failed (connecting, producing, committing...).
    #[error("kafka {context}: {message}")]
    Kafka {
        /// What was being done, naming the topic (e.g. "produce to 'alerts'").
        context: String,
        /// librdkafka's message.
        message: String,
    },

    /// A Kafka message could not be decoded and the source has no dead-letter topic.
    #[error("topic '{topic}' partition {partition} offset {offset}: {reason}")]
    MalformedMessage {
        /// The topic the message was read from.
        topic: String,
        /// Its partition.
        partition: i32,
        /// Its offset in the partition.
        offset: i64,
        /// Why it could not be decoded.
        reason: String,
    },

    /// A checkpoint could not be written, read or restored.
    #[error("checkpoint {location}: {message}")]
    Checkpoint {
        /// The checkpoint's directory (or the checkpoint directory when no single checkpoint is involved).
        location: String,
        /// What went wrong.
        message: String,
    },

    /// A worker thread panicked or the execution was torn down.
    #[error("execution failed: {0}")]
    Execution(String),
}

impl SabotError {
    /// Builds a [`SabotError::Plan`].
    pub fn plan(message: impl Into<String>) -> Self {
        SabotError::Plan(message.into())
    }

    /// Builds a [`SabotError::Kafka`] for an operation described by `context`.
    pub fn kafka(context: impl Into<String>, error: impl std::fmt::Display) -> Self {
        SabotError::Kafka { context: context.into(), message: error.to_string() }
    }

    /// Builds a [`SabotError::ColumnNotFound`] listing the columns `schema` does have.
    pub fn column_not_found(schema: &arrow::datatypes::Schema, column: &str) -> Self {
        SabotError::ColumnNotFound {
            column: column.to_string(),
            available: schema.fields().iter().map(|f| f.name().clone()).collect(),
        }
    }

    /// Builds a [`SabotError::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        SabotError::Io { path: path.into(), source }
    }

    /// Builds a [`SabotError::Checkpoint`] for the checkpoint at `location`.
    pub fn checkpoint(location: impl AsRef<std::path::Path>, message: impl Into<String>) -> Self {
        SabotError::Checkpoint { location: location.as_ref().display().to_string(), message: message.into() }
    }

    /// Builds a [`SabotError::Format`] for `path`, with an optional location inside it.
    pub fn format(path: impl Into<PathBuf>, location: Option<String>, message: impl Into<String>) -> Self {
        SabotError::Format { path: path.into(), location, message: message.into() }
    }
}
