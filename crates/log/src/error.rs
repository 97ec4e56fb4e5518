//! [`LogError`], the one error type of this crate.

use std::io;
use std::path::PathBuf;

use strata_protocol::batch::BatchError;

/// Everything that can go wrong in a [`Log`](crate::Log).
///
/// [`LogError::is_storage_error`] separates failures of the disk (the log should be taken
/// offline and an operator should look at the disk) from failures of the request (the client or
/// broker asked for something impossible).
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A file system call failed.
    #[error("I/O error on {}: {source}; check the disk and the permissions of the log directory", path.display())]
    Io {
        /// The file or directory the call was about.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The requested offset is not in `[log_start, log_end]`.
    #[error("offset {offset} is out of range: this log holds offsets [{log_start}, {log_end})")]
    OffsetOutOfRange {
        /// The offset asked for.
        offset: i64,
        /// The log start offset at the time.
        log_start: i64,
        /// The log end offset at the time.
        log_end: i64,
    },
    /// Data on disk does not parse although it was written by this log (disk damage, or a file
    /// edited by hand).
    #[error("corrupt data in {} at byte {position}: {reason}; the segment may need to be deleted or restored from a replica", path.display())]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// Byte position of the damage in that file.
        position: u64,
        /// What is wrong.
        reason: String,
    },
    /// The bytes handed to [`Log::append`](crate::Log::append) are not a sequence of whole v2
    /// batches. Nothing was written.
    #[error("invalid record batch at byte {position} of the append: {source}")]
    InvalidBatch {
        /// Position of the bad batch within the appended buffer.
        position: usize,
        /// What is wrong with it.
        #[source]
        source: BatchError,
    },
    /// A batch's header is well formed but unusable for the log (e.g. a negative
    /// `lastOffsetDelta`). Nothing was written.
    #[error("record batch at byte {position} of the append rejected: {reason}")]
    BadBatchHeader {
        /// Position of the batch within the appended buffer.
        position: usize,
        /// Why it was rejected.
        reason: String,
    },
    /// An append that cannot fit in a segment (positions and relative offsets are 31-bit).
    #[error("append of {size} bytes spanning {offsets} offsets does not fit in one segment")]
    AppendTooLarge {
        /// Bytes in the append.
        size: u64,
        /// Offsets the append spans.
        offsets: i64,
    },
    /// The log cleaner was asked to stop in the middle of a cleaning (shutdown); nothing of
    /// that cleaning was swapped in.
    #[error("log cleaning aborted")]
    CleaningAborted,
    /// A partition directory this process will not use or touch: it holds another topic's
    /// log, or is in two data directories.
    #[error("{}: {reason}", dir.display())]
    DirectoryConflict {
        /// The directory.
        dir: PathBuf,
        /// What is wrong and what to do.
        reason: String,
    },
    /// An argument outside the operation's domain, e.g. a negative offset.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// An earlier I/O failure left the log's files in a state this process cannot vouch for
    /// (see [`Log::is_offline`](crate::Log::is_offline)); reopening the log recovers it.
    #[error("log {} is offline after an I/O failure ({reason}); restart the broker to recover it from disk", dir.display())]
    Offline {
        /// The log's directory.
        dir: PathBuf,
        /// The failure that took it offline.
        reason: String,
    },
}

impl LogError {
    /// Whether the error comes from the storage (I/O failure or corrupt data) rather than from
    /// the request. A broker takes the log directory offline on storage errors.
    pub fn is_storage_error(&self) -> bool {
        matches!(self, LogError::Io { .. } | LogError::Corrupt { .. } | LogError::Offline { .. })
    }

    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> LogError {
        let path = path.into();
        move |source| LogError::Io { path, source }
    }
}
