//! The metadata controller: decides metadata changes and makes them durable in the Raft
//! metadata quorum.
//!
//! Decisions are pure functions of the current image ([`decisions`]); the active controller
//! of the quorum ([`quorum::QuorumController`]) proposes the records they return, and every
//! node applies the committed ones and tells its publishers. A single node is a quorum of one
//! voter, on the same path as three.
//!
//! # Layout
//! - [`decisions`]: `(image, request) -> (records, result)` for every controller request.
//! - [`raft`]: the Raft node on raft-rs, its durable store and its transport.
//! - [`quorum`]: the controller that drives the Raft node and implements `ControllerChannel`.
//! - [`bootstrap`]: what the metadata directory must hold before the controller starts.
//! - [`metadata_log`]: the checksummed frames the Raft store shares with the single-node
//!   log of earlier builds (read once, to migrate it).

pub mod bootstrap;
pub mod client_quotas;
pub mod decisions;
pub mod metadata_log;
pub mod partition_change;
pub mod placement;
pub mod quorum;
pub mod raft;
pub mod reassign;

/// Errors of the controller crate.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("metadata log {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("metadata log {path} is damaged at byte {position}: {reason}; restore the file from a backup (refusing to start: replaying around the damage would lose committed metadata)")]
    Corrupt { path: std::path::PathBuf, position: u64, reason: String },
    #[error("metadata log {path} is offline ({reason}); restart the broker")]
    Offline { path: std::path::PathBuf, reason: String },
    #[error(transparent)]
    Metadata(#[from] strata_metadata::MetadataError),
    /// The metadata log does not belong to this node or to the data beside it.
    #[error("{0}")]
    Identity(String),
    /// raft-rs refused a configuration or a committed entry cannot be read.
    #[error("metadata quorum: {0}")]
    Raft(String),
}
