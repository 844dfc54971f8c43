//! Errors of the operator crate, classified the Arroyo way.

/// Whose fault an error is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorDomain {
    /// Bad input or configuration from a user.
    User,
    /// A dependency (Kafka, storage, catalog) failed.
    External,
    /// A bug.
    Internal,
}

/// Whether retrying can help.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryHint {
    /// Retrying will fail the same way.
    NoRetry,
    /// Retry with backoff.
    WithBackoff,
}

/// Errors raised by sources and sinks (errors in data are quarantined, not raised).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading a source failed.
    #[error("source {source_name:?}: {message}")]
    Source {
        /// The source.
        source_name: String,
        /// What happened.
        message: String,
    },
    /// Kafka failed.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The Iceberg catalog or table IO failed.
    #[error("iceberg: {0}")]
    Iceberg(#[from] iceberg::Error),
    /// Building an Arrow batch failed.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    /// Reading a Parquet data file failed.
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// Local IO failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// The sink stopped; the pipeline must stop consuming.
    #[error("sink stopped: {0}")]
    SinkStopped(String),
    /// Another writer committed to the table between our read of it and our commit.
    #[error("commit conflict on custody.{0}: the table changed while this commit was prepared")]
    CommitConflict(String),
    /// A compaction's output does not hold exactly its inputs' rows.
    #[error("compaction of custody.{table}: {detail}")]
    Compaction {
        /// The table.
        table: String,
        /// What did not add up.
        detail: String,
    },
    /// A retention application found the lake other than it planned.
    #[error("retention of custody.{table}: {detail}")]
    Retention {
        /// The table.
        table: String,
        /// What did not add up.
        detail: String,
    },
    /// The table holds something this version cannot read correctly (delete files).
    #[error("unsupported table content: {0}")]
    Unsupported(String),
    /// The object storage holding the tables failed.
    #[error("object storage: {0}")]
    ObjectStorage(#[from] opendal::Error),
    /// The tables' storage location is misconfigured.
    #[error("storage configuration: {0}")]
    StorageConfig(String),
    /// The SQL catalog database failed.
    #[error("catalog database: {0}")]
    CatalogDb(#[from] sqlx::Error),
    /// The warehouse is not in a state Custody may write to (or trust); nothing was changed.
    #[error("warehouse refused: {0}")]
    WarehouseDamaged(String),
    /// The warehouse's state does not match what was signed: it was modified, rolled back or
    /// truncated by someone without the signing key. Custody refuses to sign on top of it.
    #[error("warehouse does not match its signatures: {0}")]
    Tampered(String),
    /// A source was never reachable.
    #[error("source {source_name:?} never connected: {message}")]
    NeverConnected {
        /// The source.
        source_name: String,
        /// What was tried and the last error.
        message: String,
    },
    /// An input under a name seen before is not the same input.
    #[error("source {source_name:?} is not the input ingested under that name before: {message}")]
    SourceMismatch {
        /// The source.
        source_name: String,
        /// How it differs.
        message: String,
    },
}

impl Error {
    /// The error's domain.
    pub fn domain(&self) -> ErrorDomain {
        match self {
            Error::Source { .. }
            | Error::Kafka(_)
            | Error::Iceberg(_)
            | Error::Parquet(_)
            | Error::Io(_)
            | Error::CatalogDb(_)
            | Error::ObjectStorage(_)
            | Error::CommitConflict(_) => ErrorDomain::External,
            Error::NeverConnected { .. } => ErrorDomain::External,
            Error::WarehouseDamaged(_)
            | Error::Tampered(_)
            | Error::SourceMismatch { .. }
            | Error::StorageConfig(_)
            | Error::Unsupported(_) => ErrorDomain::User,
            Error::Arrow(_)
            | Error::SinkStopped(_)
            | Error::Compaction { .. }
            | Error::Retention { .. } => ErrorDomain::Internal,
        }
    }

    /// Whether retrying can help.
    pub fn retry_hint(&self) -> RetryHint {
        match self.domain() {
            ErrorDomain::External => RetryHint::WithBackoff,
            ErrorDomain::User | ErrorDomain::Internal => RetryHint::NoRetry,
        }
    }
}

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
