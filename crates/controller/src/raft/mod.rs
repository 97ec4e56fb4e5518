//! The metadata quorum on raft-rs (KRaft's role, tikv's Raft): a durable replicated log of
//! metadata record batches.
//!
//! - [`store`]: entries, hard state and snapshots on disk, with the in-memory twin raft-rs reads.
//! - [`node`]: one node's Raft state machine and metadata image, driven without I/O of its own
//!   (the real driver and the deterministic simulation both drive it).
//! - [`logger`]: raft-rs's slog records, bridged to tracing.

pub mod logger;
pub mod node;
pub mod store;
pub mod transport;

pub use node::{Applied, Membership, Proposed, QuorumConfig, QuorumNode, ReadyOutput, Refused};
pub use store::RaftStore;
