//! `strata-group`: the group and offset coordinator of Strata as a sans-IO state machine.
//!
//! One [`GroupCoordinatorShard`] owns the groups and committed offsets of one
//! `__consumer_offsets` partition. It does no I/O and reads no clock: every handler takes
//! `now_ms` and returns a [`CoordinatorResult`] — the [`GroupRecord`]s to append to the
//! partition, the response, and responses of *other* parked requests that this call
//! completed. The driver appends the records and sends every response of the result only
//! once the records are durable. On load, the driver feeds the partition's records to
//! [`GroupCoordinatorShard::replay`] to rebuild the same state.
//!
//! Classic JoinGroup and SyncGroup requests may park: the handler returns
//! `response: None`, and the answer arrives later among the `completions` of another call
//! (another member's join or sync, a leave, or [`GroupCoordinatorShard::tick`]), tagged
//! with the [`RequestToken`] the driver passed in. [`GroupCoordinatorShard::next_deadline`]
//! says when `tick` is next due (sessions, rebalance and sync timeouts, offset retention).
//!
//! # Layout
//! - [`shard`]: the shard, its config, request context, results, dispatch, replay and timers.
//! - [`classic`]: classic groups (JoinGroup, SyncGroup, Heartbeat, LeaveGroup, DescribeGroups).
//! - [`offsets`]: committed offsets (OffsetCommit, OffsetFetch, OffsetDelete, retention).
//! - [`txn_offsets`]: offsets committed in transactions (TxnOffsetCommit and the markers).
//! - [`consumer`]: KIP-848 consumer groups (ConsumerGroupHeartbeat, ConsumerGroupDescribe).
//! - [`assignor`]: the server-side `uniform` and `range` assignors.
//! - [`record`]: [`GroupRecord`] and its versioned key/value byte encoding.
//! - [`error`]: [`GroupError`], the one place errors map to Kafka error codes.
//!
//! # Example
//! ```
//! use strata_group::{partition_for, GroupConfig, GroupCoordinatorShard, RequestContext, RequestToken};
//! use strata_protocol::kafka_protocol::messages::{JoinGroupRequest, GroupId};
//! use strata_protocol::kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
//! use strata_protocol::kafka_protocol::protocol::StrBytes;
//!
//! assert_eq!(partition_for("my-group", 50), 12);
//! let mut shard = GroupCoordinatorShard::new(GroupConfig::default());
//! let _ = shard.tick(0); // after loading: arms the retention timer
//! let req = JoinGroupRequest::default()
//!     .with_group_id(GroupId(StrBytes::from_static_str("my-group")))
//!     .with_session_timeout_ms(10_000)
//!     .with_rebalance_timeout_ms(10_000)
//!     .with_protocol_type(StrBytes::from_static_str("consumer"))
//!     .with_protocols(vec![JoinGroupRequestProtocol::default()
//!         .with_name(StrBytes::from_static_str("range"))]);
//! // KIP-394: a v4+ join without a member id is told to come back with the one it is given.
//! let r = shard.join_group(0, &RequestContext::new(RequestToken(1), 9), &req);
//! let resp = r.response.unwrap();
//! assert_eq!(resp.error_code, 79); // MEMBER_ID_REQUIRED
//! assert!(r.records.is_empty());
//! // The rejoin parks until the initial rebalance delay (3 s by default) elapses.
//! let r = shard.join_group(10, &RequestContext::new(RequestToken(2), 9), &req.clone().with_member_id(resp.member_id));
//! assert!(r.response.is_none());
//! let done = shard.tick(shard.next_deadline().unwrap());
//! assert_eq!(done.completions.len(), 1);
//! ```

pub mod assignor;
pub mod classic;
pub mod consumer;
pub mod error;
pub mod offsets;
pub mod record;
pub mod shard;
pub mod txn_offsets;

pub use error::GroupError;
pub use record::{Assignment, GroupRecord};
pub use shard::{
    CoordinatorResult, GroupConfig, GroupCoordinatorShard, RequestContext, RequestToken, ResponseKind, TopicMetadata,
};

/// The `__consumer_offsets` partition that coordinates `group_id`, exactly as Kafka picks
/// it: `Utils.abs(groupId.hashCode()) % numPartitions`, with Java's `String.hashCode` over
/// UTF-16 code units and `Utils.abs(i32::MIN) == 0`. Returns 0 if `num_partitions <= 0`.
pub fn partition_for(group_id: &str, num_partitions: i32) -> i32 {
    if num_partitions <= 0 {
        return 0;
    }
    let hash = group_id.encode_utf16().fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)));
    let abs = if hash == i32::MIN { 0 } else { hash.abs() };
    abs % num_partitions
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_matches_java_string_hash_code() {
        // Values computed with Java: Math.abs("...".hashCode()) % 50.
        assert_eq!(partition_for("", 50), 0);
        assert_eq!(partition_for("a", 50), 97 % 50);
        // "my-group".hashCode() == -1906497762
        assert_eq!(partition_for("my-group", 50), 1906497762 % 50);
        // "console-consumer-12345".hashCode() == 158455506
        assert_eq!(partition_for("console-consumer-12345", 50), 158455506 % 50);
        // A string whose hash is i32::MIN ("polygenelubricants") maps to partition 0.
        assert_eq!(partition_for("polygenelubricants", 7), 0);
        // Characters outside the BMP count as two UTF-16 code units.
        let h = "😀".encode_utf16().fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)));
        assert_eq!(partition_for("😀", 7), h.abs() % 7);
        assert_eq!(partition_for("x", 0), 0);
    }
}
