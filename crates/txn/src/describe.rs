//! DescribeTransactions (65) and ListTransactions (66), answered from the last durable state
//! of each transactional id (never from a transition in flight).

use strata_protocol::ResponseError;

use crate::shard::{TxnCoordinatorShard, TxnMetadata};
use crate::state::TxnState;

/// ListTransactions filters (KIP-664; v1 adds the duration, KIP-994).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    /// State names to keep (Kafka's names, case-sensitive); empty: every state.
    pub states: Vec<TxnState>,
    /// Producer ids to keep; empty: every producer.
    pub producer_ids: Vec<i64>,
    /// Keep only transactions open longer than this many ms (`< 0`: no filter). An id with
    /// no transaction open (start -1) passes, as in Kafka.
    pub min_duration_ms: i64,
}

impl TxnCoordinatorShard {
    /// DescribeTransactions for one id: INVALID_REQUEST for an empty id,
    /// TRANSACTIONAL_ID_NOT_FOUND for one this coordinator does not know (or that has never
    /// been made durable).
    pub fn describe(&self, transactional_id: &str) -> Result<&TxnMetadata, ResponseError> {
        if transactional_id.is_empty() {
            return Err(ResponseError::InvalidRequest);
        }
        self.txns.get(transactional_id).filter(|m| m.persisted).ok_or(ResponseError::TransactionalIdNotFound)
    }

    /// ListTransactions: the ids that pass `filter`, with their state.
    pub fn list(&self, filter: &ListFilter, now_ms: i64) -> Vec<(&String, &TxnMetadata)> {
        self.txns
            .iter()
            .filter(|(_, m)| m.persisted)
            .filter(|(_, m)| filter.states.is_empty() || filter.states.contains(&m.value.state))
            .filter(|(_, m)| filter.producer_ids.is_empty() || filter.producer_ids.contains(&m.value.producer_id))
            .filter(|(_, m)| filter.min_duration_ms < 0 || now_ms - m.value.start_ms > filter.min_duration_ms)
            .collect()
    }
}
