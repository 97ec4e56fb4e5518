//! `strata-txn`: the transaction coordinator of Strata as a sans-IO state machine (issue #15),
//! built the way `strata-group` builds the group coordinator; the plan is
//! `docs/design/transaction-coordinator.md`.
//!
//! One [`TxnCoordinatorShard`] owns the transactional ids of one `__transaction_state`
//! partition. It does no I/O and reads no clock: handlers take `now_ms`, and a transition
//! comes back as an [`Append`] of the record that makes it durable; the driver appends it,
//! waits until the ISR has it, and reports with [`TxnCoordinatorShard::complete_append`], which
//! applies it and gives the answer. Decided transactions come back as [`MarkerWork`] for the
//! driver to write to the partitions' leaders.
//!
//! # Layout
//! - [`shard`]: the shard, two-phase transitions, replay, markers, timers.
//! - [`init`], [`add`], [`end`], [`describe`]: one module per API family.
//! - [`state`]: [`TxnState`], Kafka's transaction states and the transitions it allows.
//! - [`record`]: [`TxnRecord`], the `__transaction_state` records in Kafka's byte format.
//! - [`error`]: [`TxnError`], the errors of loading records.
//!
//! # Example
//! ```
//! use strata_txn::{ProducerIdSource, Step, TxnConfig, TxnCoordinatorShard};
//!
//! struct Ids(i64);
//! impl ProducerIdSource for Ids {
//!     fn try_next(&mut self) -> Option<i64> { self.0 += 1; Some(self.0) }
//! }
//! let mut shard = TxnCoordinatorShard::new(TxnConfig::default(), 0);
//! let Step::Append(append) = shard.init_producer_id("t", 60_000, None, &mut Ids(0), 0) else { panic!() };
//! assert_eq!(append.records.len(), 1);
//! // Durable: the producer gets id 1, epoch 0.
//! let done = shard.complete_append(append.id, Ok(()));
//! assert_eq!(done.answer, Some(Ok((1, 0))));
//! ```

pub mod add;
pub mod describe;
pub mod end;
pub mod error;
pub mod init;
pub mod record;
pub mod shard;
pub mod state;

pub use describe::ListFilter;
pub use error::TxnError;
pub use record::{TxnPartitions, TxnRecord, TxnValue};
pub use shard::{
    epoch_exhausted, Append, AppendId, Completed, Identity, MarkerWork, Pending, ProducerIdSource, Step, TxnConfig,
    TxnCoordinatorShard, TxnMetadata,
};
pub use state::TxnState;
