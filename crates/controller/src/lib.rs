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

/// The `ControllerChannel` methods that are one decision committed as it is (DeleteTopics,
/// CreatePartitions, AlterConfigs), for a controller type with an inherent
/// `commit(decide) -> impl Future<Output = Result<T, ApiError>>`.
#[macro_export]
#[doc(hidden)]
macro_rules! decided_channel_methods {
    () => {
        fn delete_topics(
            &self,
            topics: Vec<strata_metadata::channel::TopicRef>,
        ) -> strata_metadata::channel::BoxFuture<'_, Vec<strata_metadata::channel::DeleteTopicResult>> {
            let refs = topics.clone();
            let commit = self.commit(move |img| $crate::decisions::delete_topics(img, topics));
            Box::pin(async move {
                match commit.await {
                    Ok(results) => results,
                    Err(e) => $crate::decisions::delete_topics_failed(refs, &e),
                }
            })
        }

        fn create_partitions(
            &self,
            topic: String,
            total_count: i32,
            assignments: Option<Vec<Vec<i32>>>,
            validate_only: bool,
        ) -> strata_metadata::channel::BoxFuture<'_, Result<(), strata_metadata::channel::ApiError>> {
            let commit = self.commit(move |img| {
                $crate::decisions::create_partitions_request(
                    img,
                    &topic,
                    total_count,
                    assignments.as_deref(),
                    validate_only,
                )
            });
            Box::pin(async move { commit.await? })
        }

        fn alter_configs(
            &self,
            resource: strata_metadata::ConfigResource,
            ops: Vec<strata_metadata::channel::ConfigOp>,
            replace: bool,
            validate_only: bool,
        ) -> strata_metadata::channel::BoxFuture<'_, Result<(), strata_metadata::channel::ApiError>> {
            let commit = self.commit(move |img| {
                $crate::decisions::alter_configs_request(img, &resource, &ops, replace, validate_only)
            });
            Box::pin(async move { commit.await? })
        }
    };
}

pub mod bootstrap;
pub mod client;
pub mod decisions;
pub mod metadata_log;
pub mod placement;
pub mod quorum;
pub mod raft;

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
