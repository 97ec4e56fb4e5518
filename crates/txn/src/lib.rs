//! `strata-txn`: the transaction coordinator of Strata as a sans-IO state machine (issue #15),
//! built the way `strata-group` builds the group coordinator; the plan is
//! `docs/design/transaction-coordinator.md`.
//!
//! So far:
//! - [`state`]: [`TxnState`], the states of a transactional id, with Kafka's ids and names
//!   and the transitions Kafka allows;
//! - [`record`]: [`TxnRecord`], what the coordinator writes to `__transaction_state`, in
//!   Kafka's byte format (`TransactionLogKey` v0, `TransactionLogValue` v0 and v1), so that
//!   the log is readable by Kafka's tools and a Strata coordinator can load what it wrote;
//! - [`error`]: [`TxnError`], the errors of the crate.

pub mod error;
pub mod record;
pub mod state;

pub use error::TxnError;
pub use record::{TxnPartitions, TxnRecord, TxnValue};
pub use state::TxnState;
