//! AddPartitionsToTxn and AddOffsetsToTxn (Kafka's `handleAddPartitionsToTransaction` and
//! `handleVerifyPartitionsInTransaction`): partitions join the open transaction, so that its
//! markers reach them; KIP-890 part 1 lets a partition leader ask whether one has.

use strata_protocol::ResponseError;

use crate::record::TxnPartitions;
use crate::shard::{contains_all, partitions_of, Identity, Step, Then, Transit, TxnCoordinatorShard, TxnMetadata};
use crate::state::TxnState;

impl TxnCoordinatorShard {
    /// Adds `partitions` to the transaction of `transactional_id`, opening one if none is
    /// (AddPartitionsToTxn, and AddOffsetsToTxn with the group's `__consumer_offsets`
    /// partition). `transaction_version`: 0 for client requests (v0–3, AddOffsetsToTxn), 2 for
    /// a partition leader adding under transactions V2 (v4+ with `verifyOnly = false`).
    ///
    /// Answers NONE at once when every partition is already in the open transaction,
    /// otherwise once the Ongoing record is committed. Errors: INVALID_REQUEST (empty id),
    /// INVALID_PRODUCER_ID_MAPPING (unknown id or another producer id), CONCURRENT_TRANSACTIONS
    /// (a transition in flight, checked first as Kafka 4.3 does, or the previous transaction's
    /// markers still being written), PRODUCER_FENCED (another epoch).
    pub fn add_partitions(
        &mut self,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        partitions: &[(String, i32)],
        transaction_version: i16,
        now_ms: i64,
    ) -> Step<Identity> {
        let m = match self.known(transactional_id) {
            Ok(m) => m,
            Err(e) => return Step::Done(Err(e)),
        };
        if m.pending.is_some() {
            return Step::Done(Err(ResponseError::ConcurrentTransactions));
        }
        if let Err(e) = same_producer(m, producer_id, producer_epoch) {
            return Step::Done(Err(e));
        }
        let current = &m.value;
        let mut union = match current.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort => {
                return Step::Done(Err(ResponseError::ConcurrentTransactions))
            }
            TxnState::Ongoing if contains_all(&current.partitions, partitions) => {
                return Step::Done(Ok((current.producer_id, current.producer_epoch)))
            }
            TxnState::Ongoing => current.partitions.clone(),
            _ => TxnPartitions::new(),
        };
        for (topic, set) in partitions_of(partitions) {
            union.entry(topic).or_default().extend(set);
        }
        let value = crate::record::TxnValue {
            state: TxnState::Ongoing,
            partitions: union,
            start_ms: if current.state == TxnState::Ongoing { current.start_ms } else { now_ms },
            last_update_ms: now_ms,
            client_transaction_version: transaction_version,
            ..current.clone()
        };
        let transit = Transit { value, last_producer_epoch: m.last_producer_epoch };
        Step::Append(self.start_append(vec![(transactional_id.to_string(), Some(transit))], Then::Identity))
    }

    /// KIP-890 part 1: whether each of `partitions` is in the open transaction of
    /// `transactional_id` (AddPartitionsToTxn v4+ with `verifyOnly = true`, sent by partition
    /// leaders before they append a transactional batch). Writes nothing and does not look at
    /// transitions in flight. `Ok(flags)`: one per partition, in order. Errors for every
    /// partition: INVALID_REQUEST, INVALID_PRODUCER_ID_MAPPING, PRODUCER_FENCED,
    /// CONCURRENT_TRANSACTIONS (the transaction is decided).
    pub fn verify_partitions(
        &self,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        partitions: &[(String, i32)],
    ) -> Result<Vec<bool>, ResponseError> {
        let m = self.known(transactional_id)?;
        same_producer(m, producer_id, producer_epoch)?;
        if matches!(m.value.state, TxnState::PrepareCommit | TxnState::PrepareAbort) {
            return Err(ResponseError::ConcurrentTransactions);
        }
        let open = m.value.state == TxnState::Ongoing;
        Ok(partitions.iter().map(|(t, p)| open && m.value.partitions.get(t).is_some_and(|s| s.contains(p))).collect())
    }
}

/// INVALID_PRODUCER_ID_MAPPING for another producer id, PRODUCER_FENCED for another epoch.
fn same_producer(m: &TxnMetadata, producer_id: i64, producer_epoch: i16) -> Result<(), ResponseError> {
    if producer_id != m.value.producer_id {
        Err(ResponseError::InvalidProducerIdMapping)
    } else if producer_epoch != m.value.producer_epoch {
        Err(ResponseError::ProducerFenced)
    } else {
        Ok(())
    }
}
