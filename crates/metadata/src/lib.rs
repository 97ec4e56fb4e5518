//! The cluster's metadata as an ordered stream of records, and the immutable
//! image they build.
//!
//! Every change to topics, partitions, configs, brokers or producer-id blocks
//! is a [`MetadataRecord`]. Records are applied in log order to a
//! [`MetadataImage`], producing a new image and a [`MetadataDelta`] saying
//! what changed. Nothing here does I/O: the controller persists and orders the
//! records (a local log on one node, the Raft log in a quorum), the broker
//! applies the images it is published.
//!
//! # Layout
//! - [`record`]: the records and their versioned byte encoding (what Raft carries).
//! - [`image`]: `MetadataImage`, `MetadataDelta` and `apply`.
//! - [`config`]: the topic config keys Strata knows, their types, defaults and validation.
//! - [`channel`]: the requests a broker sends the controller, and the `ControllerChannel` seam.
//!
//! # Example
//! ```
//! use strata_metadata::{MetadataImage, MetadataRecord};
//! let id = uuid::Uuid::new_v4();
//! let (image, delta) = MetadataImage::empty().apply(&[
//!     MetadataRecord::TopicCreated { name: "t".into(), topic_id: id },
//!     MetadataRecord::PartitionCreated { topic_id: id, partition: 0, replicas: vec![1], leader: 1, leader_epoch: 0 },
//! ]).unwrap();
//! assert_eq!(image.topic("t").unwrap().partitions.len(), 1);
//! assert_eq!(delta.created_partitions().count(), 1);
//! ```

pub mod channel;
pub mod config;
pub mod image;
pub mod record;

pub use image::{MetadataDelta, MetadataImage, MetadataPublisher, PartitionImage, TopicImage};
pub use record::{ConfigResource, MetadataRecord};

/// Errors of the metadata crate.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    /// A record could not be decoded (corrupt metadata log or newer format).
    #[error("cannot decode metadata record: {0}")]
    Decode(String),
    /// A record contradicts the image it is applied to: the metadata log is
    /// inconsistent and the node must not serve from it.
    #[error("metadata record does not apply: {0}")]
    Inconsistent(String),
}

/// Whether a topic name holds '.' or '_', which Kafka's metric names cannot tell apart.
pub fn has_collision_chars(name: &str) -> bool {
    name.contains(['.', '_'])
}

/// `name` with every '.' replaced by '_' (Kafka's `Topic.unifyCollisionChars`): two names
/// collide when these are equal.
pub fn unify_collision_chars(name: &str) -> String {
    name.replace('.', "_")
}

/// Kafka's topic name rule: 1–249 chars of `[a-zA-Z0-9._-]`, not "." or "..".
/// The error is the message clients are shown.
pub fn check_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("Topic name is illegal, it can't be empty".into());
    }
    if name == "." || name == ".." {
        return Err(format!("Topic name cannot be \"{name}\""));
    }
    if name.len() > 249 {
        return Err(format!("Topic name is illegal, it can't be longer than 249 characters, topic name: {name}"));
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) {
        return Err(format!(
            "Topic name \"{name}\" is illegal, it contains a character other than ASCII alphanumerics, '.', '_' and '-'"
        ));
    }
    Ok(())
}
