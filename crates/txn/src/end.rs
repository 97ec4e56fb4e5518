//! EndTxn (Kafka's `TransactionCoordinator.endTransaction`): the producer commits or aborts
//! its transaction. Under transactions V2 (EndTxn v5+, KIP-890 part 2) every commit or abort
//! bumps the producer's epoch, so a request delayed from one transaction can never land in
//! the next.

use strata_protocol::ResponseError;

use crate::record::{TxnPartitions, TxnValue};
use crate::shard::{epoch_exhausted, Identity, ProducerIdSource, Step, Then, Transit, TxnCoordinatorShard};
use crate::state::TxnState;

impl TxnCoordinatorShard {
    /// EndTxn for `transactional_id`: `commit` or abort. `tv2`: the request is EndTxn v5+.
    ///
    /// Answers, once the PrepareCommit/PrepareAbort record is committed, the producer id and
    /// epoch the producer uses next (under TV2 the bumped epoch, or a new producer id with
    /// epoch 0 when the epoch is used up; under TV0 unchanged). The markers follow
    /// ([`crate::Completed::markers`]). A retry of an EndTxn that already took effect answers
    /// NONE with the current id and epoch. Errors: INVALID_REQUEST, INVALID_PRODUCER_ID_MAPPING,
    /// PRODUCER_FENCED, CONCURRENT_TRANSACTIONS, INVALID_TXN_STATE (e.g. a commit with no
    /// transaction open, or the other decision than the one already taken),
    /// COORDINATOR_LOAD_IN_PROGRESS (TV2 needs a new producer id and none is at hand).
    // The request's fields, as Kafka's `endTransaction` takes them.
    #[allow(clippy::too_many_arguments)]
    pub fn end_txn(
        &mut self,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
        tv2: bool,
        ids: &mut dyn ProducerIdSource,
        now_ms: i64,
    ) -> Step<Identity> {
        let m = match self.known(transactional_id) {
            Ok(m) => m,
            Err(e) => return Step::Done(Err(e)),
        };
        let current = &m.value;
        let state = current.state;
        let decided = |c: bool| if c { TxnState::PrepareCommit } else { TxnState::PrepareAbort };
        let done_ok = Step::Done(Ok((current.producer_id, current.producer_epoch)));
        let invalid = Step::Done(Err(ResponseError::InvalidTxnState));
        if !tv2 {
            if producer_id != current.producer_id {
                return Step::Done(Err(ResponseError::InvalidProducerIdMapping));
            }
            if producer_epoch != current.producer_epoch {
                return Step::Done(Err(ResponseError::ProducerFenced));
            }
            if m.pending.is_some() {
                return Step::Done(Err(ResponseError::ConcurrentTransactions));
            }
            return match (state, commit) {
                (TxnState::Ongoing, _) => self.prepare(transactional_id, commit, false, false, ids, now_ms),
                (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false) => {
                    Step::Done(Err(ResponseError::ConcurrentTransactions))
                }
                (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => done_ok,
                _ => invalid,
            };
        }
        // Transactions V2: a retry is the same request again after its bump took effect.
        let retry_bump = producer_epoch < i16::MAX && current.producer_epoch == producer_epoch + 1;
        let retry_overflow = current.prev_producer_id == producer_id
            && producer_epoch == crate::shard::MAX_CLIENT_EPOCH
            && current.producer_epoch == 0;
        let retry = retry_bump || retry_overflow;
        if producer_id != current.producer_id && !retry_overflow {
            return Step::Done(Err(ResponseError::InvalidProducerIdMapping));
        }
        // KAFKA-18464: a transition in flight answers before the epoch is looked at, so an
        // abort sent just after a commit does not fence its own producer.
        if m.pending.is_some() {
            return Step::Done(Err(ResponseError::ConcurrentTransactions));
        }
        let same = producer_epoch == current.producer_epoch && producer_id == current.producer_id;
        let epoch_ok = match state {
            TxnState::Ongoing | TxnState::Empty => same,
            TxnState::PrepareCommit | TxnState::PrepareAbort => retry_bump,
            _ => retry || same,
        };
        if !epoch_ok {
            return Step::Done(Err(ResponseError::ProducerFenced));
        }
        match (state, commit) {
            (TxnState::Ongoing, _) => self.prepare(transactional_id, commit, true, false, ids, now_ms),
            (TxnState::Empty, false) => self.prepare(transactional_id, false, true, true, ids, now_ms),
            (TxnState::CompleteAbort, false) | (TxnState::CompleteCommit, true) if retry => done_ok,
            (TxnState::CompleteAbort | TxnState::CompleteCommit, false) if same => {
                self.prepare(transactional_id, false, true, true, ids, now_ms)
            }
            (TxnState::PrepareCommit | TxnState::PrepareAbort, c) if state == decided(c) => {
                Step::Done(Err(ResponseError::ConcurrentTransactions))
            }
            _ => invalid,
        }
    }

    /// The PrepareCommit/PrepareAbort transition: under TV2 one epoch higher (and a new
    /// producer id for later when that uses the epochs up); `empty`: an abort with no
    /// transaction open (TV2), which still bumps the epoch.
    fn prepare(
        &mut self,
        id: &str,
        commit: bool,
        tv2: bool,
        empty: bool,
        ids: &mut dyn ProducerIdSource,
        now_ms: i64,
    ) -> Step<Identity> {
        let Some(m) = self.txns.get(id) else { return Step::Done(Err(ResponseError::NotCoordinator)) };
        let current = &m.value;
        let mut value = TxnValue {
            state: if commit { TxnState::PrepareCommit } else { TxnState::PrepareAbort },
            last_update_ms: now_ms,
            client_transaction_version: if tv2 { 2 } else { 0 },
            ..current.clone()
        };
        if empty {
            value.partitions = TxnPartitions::new();
            value.start_ms = now_ms;
        }
        let mut last = m.last_producer_epoch;
        if tv2 {
            if epoch_exhausted(current.producer_epoch) {
                match ids.try_next() {
                    Some(pid) => value.next_producer_id = pid,
                    None => return Step::Done(Err(ResponseError::CoordinatorLoadInProgress)),
                }
            }
            if current.producer_epoch < i16::MAX {
                value.producer_epoch = current.producer_epoch + 1;
                last = current.producer_epoch;
            }
        }
        let transit = Transit { value, last_producer_epoch: last };
        Step::Append(self.start_append(vec![(id.to_string(), Some(transit))], Then::Identity))
    }
}
