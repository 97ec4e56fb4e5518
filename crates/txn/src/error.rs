//! [`TxnError`]: what can go wrong in the transaction coordinator.

/// An error of the transaction coordinator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxnError {
    /// A `__transaction_state` key of a version this coordinator does not know: the record is
    /// skipped on load, as Kafka skips it.
    #[error("unknown __transaction_state key version {0}")]
    UnknownKeyVersion(i16),
    /// A `__transaction_state` record that does not parse (damage, or an unknown value
    /// version): the load of its partition fails, as Kafka's does.
    #[error("corrupt __transaction_state record: {0}")]
    Corrupt(String),
}
