//! InitProducerId with a transactional id (Kafka's `TransactionCoordinator.handleInitProducerId`):
//! a new epoch for the producer, which fences every older instance of it, and the abort of
//! the transaction an older instance left open.

use strata_protocol::ResponseError;

use crate::record::{TxnPartitions, TxnValue};
use crate::shard::{
    epoch_exhausted, Identity, ProducerIdSource, Step, Then, Transit, TxnCoordinatorShard, TxnMetadata,
};
use crate::state::TxnState;

impl TxnCoordinatorShard {
    /// InitProducerId for `transactional_id` (v0–5). `expected`: the producer id and epoch the
    /// client already holds (KIP-360, v3+), `None` for a fresh producer.
    ///
    /// Answers, once the Empty record with the new epoch is committed, the producer id and
    /// epoch to use: the epoch bumped by one, or a new producer id with epoch 0 when the epoch
    /// is used up. If a transaction is open, it is fenced and aborted first and the answer is
    /// CONCURRENT_TRANSACTIONS (the client retries and then gets its epoch). Errors:
    /// INVALID_REQUEST (empty id), INVALID_TRANSACTION_TIMEOUT (`timeout_ms` not in
    /// `1..=transaction.max.timeout.ms`), CONCURRENT_TRANSACTIONS (a transition in flight or a
    /// decided transaction whose markers are being written), PRODUCER_FENCED (`expected` is not
    /// this producer's; the handler downgrades it to INVALID_PRODUCER_EPOCH below v4),
    /// COORDINATOR_LOAD_IN_PROGRESS (no producer id at hand).
    pub fn init_producer_id(
        &mut self,
        transactional_id: &str,
        timeout_ms: i32,
        expected: Option<Identity>,
        ids: &mut dyn ProducerIdSource,
        now_ms: i64,
    ) -> Step<Identity> {
        use Step::Done;
        if transactional_id.is_empty() {
            return Done(Err(ResponseError::InvalidRequest));
        }
        if timeout_ms <= 0 || timeout_ms > self.config.max_timeout_ms {
            return Done(Err(ResponseError::InvalidTransactionTimeout));
        }
        if !self.txns.contains_key(transactional_id) {
            let Some(pid) = ids.try_next() else { return Done(Err(ResponseError::CoordinatorLoadInProgress)) };
            let value = TxnValue {
                producer_id: pid,
                prev_producer_id: -1,
                next_producer_id: -1,
                producer_epoch: -1,
                txn_timeout_ms: timeout_ms,
                state: TxnState::Empty,
                partitions: TxnPartitions::new(),
                last_update_ms: now_ms,
                start_ms: -1,
                client_transaction_version: 0,
            };
            let fresh = TxnMetadata { value, last_producer_epoch: -1, pending: None, persisted: false };
            self.txns.insert(transactional_id.to_string(), fresh);
        }
        let Some(m) = self.txns.get(transactional_id) else { return Done(Err(ResponseError::NotCoordinator)) };
        if m.pending.is_some() {
            return Done(Err(ResponseError::ConcurrentTransactions));
        }
        let current = &m.value;
        if let Some((pid, epoch)) = expected {
            let valid = current.producer_epoch == -1
                || pid == current.producer_id
                || (pid == current.prev_producer_id && epoch_exhausted(epoch));
            if !valid {
                return Done(Err(ResponseError::ProducerFenced));
            }
        }
        match current.state {
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => {}
            TxnState::Ongoing => {
                // An older instance left a transaction open: fence it with a higher epoch and
                // abort what it wrote; this producer retries once the abort is done.
                return match self.fence_and_abort(transactional_id, now_ms, ids) {
                    Ok(transit) => Step::Append(
                        self.start_append(vec![(transactional_id.to_string(), Some(transit))], Then::Fenced),
                    ),
                    Err(e) => Done(Err(e)),
                };
            }
            _ => return Done(Err(ResponseError::ConcurrentTransactions)),
        }
        let epoch = current.producer_epoch;
        let mut value = TxnValue {
            txn_timeout_ms: timeout_ms,
            state: TxnState::Empty,
            partitions: TxnPartitions::new(),
            start_ms: -1,
            last_update_ms: now_ms,
            next_producer_id: -1,
            ..current.clone()
        };
        let last;
        if epoch_exhausted(epoch) && expected.is_none_or(|(_, e)| e == epoch) {
            // No epoch left to bump to: a new producer id (Kafka's `prepareProducerIdRotation`).
            let Some(pid) = ids.try_next() else { return Done(Err(ResponseError::CoordinatorLoadInProgress)) };
            value.prev_producer_id = if expected.is_some() { value.producer_id } else { -1 };
            value.producer_id = pid;
            value.producer_epoch = 0;
            last = if expected.is_some() { epoch } else { -1 };
        } else {
            match expected {
                None => {
                    value.producer_epoch = epoch + 1;
                    last = -1;
                }
                Some((_, e)) if epoch == -1 || e == epoch => {
                    value.producer_epoch = epoch + 1;
                    last = epoch;
                }
                // The retry of a call whose answer was lost: the epoch it already gave.
                Some((_, e)) if e == m.last_producer_epoch => last = m.last_producer_epoch,
                Some(_) => return Done(Err(ResponseError::ProducerFenced)),
            }
        }
        let transit = Transit { value, last_producer_epoch: last };
        Step::Append(self.start_append(vec![(transactional_id.to_string(), Some(transit))], Then::Identity))
    }
}
