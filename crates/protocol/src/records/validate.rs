//! The per-record checks Kafka's `LogValidator` makes on a producer's batch, in one streaming
//! pass with no allocation per record (only rejected records cost an entry).
//!
//! A batch can fail two ways, as in Kafka:
//! - as a whole ([`BatchRejection::Malformed`]): its records do not parse, their count or
//!   offset deltas disagree with the header (Kafka's `InvalidRecordException`);
//! - record by record ([`BatchRejection::Records`]): keyless records on a compacted topic, or
//!   CreateTime timestamps outside `message.timestamp.{before,after}.max.ms`. The producer is
//!   told which records were bad (Produce v8+ `record_errors`, KIP-467) and the whole batch is
//!   refused with INVALID_TIMESTAMP if any record had a bad timestamp, else INVALID_RECORD.

use std::ops::ControlFlow;

use crate::batch::{BatchHeader, TimestampType};

use super::scan::scan_records;
use super::RecordsError;

/// What the topic demands of each record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordPolicy {
    /// The broker's clock, in ms since the epoch.
    pub now_ms: i64,
    /// The topic's `message.timestamp.type` is LogAppendTime (records' own timestamps are
    /// then neither checked nor kept).
    pub log_append_time: bool,
    /// `message.timestamp.before.max.ms`.
    pub before_max_ms: i64,
    /// `message.timestamp.after.max.ms`.
    pub after_max_ms: i64,
    /// Every record needs a key (compacted topics).
    pub require_keys: bool,
}

/// Why one record was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordFault {
    /// A compacted topic got a record without a key (INVALID_RECORD).
    NoKey,
    /// The CreateTime timestamp is outside the allowed window (INVALID_TIMESTAMP).
    TimestampOutOfRange { timestamp: i64, offset_delta: i32 },
    /// The producer set LogAppendTime itself (INVALID_TIMESTAMP).
    ProducerLogAppendTime,
}

/// One refused record: its index in the batch and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordError {
    pub index: i32,
    pub fault: RecordFault,
}

impl RecordError {
    /// Kafka's message for this error, as `record_errors[].batch_index_error_message`.
    pub fn message(&self, policy: &RecordPolicy) -> String {
        match self.fault {
            RecordFault::NoKey => "Compacted topic cannot accept message without key.".to_owned(),
            RecordFault::TimestampOutOfRange { timestamp, offset_delta } => format!(
                "Timestamp {timestamp} of message with offset delta {offset_delta} is out of range. \
                 The timestamp should be within [{}, {}]",
                policy.now_ms.saturating_sub(policy.before_max_ms),
                policy.now_ms.saturating_add(policy.after_max_ms)
            ),
            RecordFault::ProducerLogAppendTime => {
                "Invalid timestamp type in message. Producer should not set timestamp type to LogAppendTime.".to_owned()
            }
        }
    }

    /// Whether this error makes the batch's error INVALID_TIMESTAMP.
    pub fn is_timestamp(&self) -> bool {
        !matches!(self.fault, RecordFault::NoKey)
    }
}

/// At most this many refused records are listed (each costs a few bytes here and a message
/// in the response); a batch with more is still refused whole.
pub const MAX_RECORD_ERRORS: usize = 10_000;

/// Why a batch was refused.
#[derive(Debug, thiserror::Error)]
pub enum BatchRejection {
    /// The records do not parse, or disagree with the header: the whole batch is invalid.
    #[error(transparent)]
    Malformed(#[from] RecordsError),
    /// Some records broke the topic's rules (at most [`MAX_RECORD_ERRORS`] listed, in order).
    #[error("{} record(s) of the batch were refused", errors.len())]
    Records { errors: Vec<RecordError> },
}

impl BatchRejection {
    /// Whether Kafka would answer INVALID_TIMESTAMP (any record had a bad timestamp) rather
    /// than INVALID_RECORD.
    pub fn is_timestamp(&self) -> bool {
        matches!(self, BatchRejection::Records { errors } if errors.iter().any(RecordError::is_timestamp))
    }
}

/// What validation learned about an accepted batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validated {
    /// The largest record timestamp (-1 if no record has one). For a LogAppendTime topic the
    /// broker stamps the batch instead, and this is not used.
    pub max_timestamp: i64,
}

/// Checks every record of `batch` (one whole v2 batch whose header is `header`) against
/// `policy`, as Kafka's `LogValidator` does for a client's batch: record structure and count,
/// offset deltas `0..n` in order, keys, and timestamps. Returns the records' largest
/// timestamp, which the caller must store as the batch's `maxTimestamp` (a header value is
/// never trusted: old clients write -1 there).
pub fn validate_records(
    batch: &[u8],
    header: &BatchHeader,
    policy: &RecordPolicy,
) -> Result<Validated, BatchRejection> {
    let producer_log_append = header.timestamp_type() == TimestampType::LogAppendTime;
    let mut max_timestamp = -1i64;
    let mut errors: Vec<RecordError> = Vec::new();
    let mut out_of_order: Option<(i32, i32)> = None;
    scan_records(batch, |r| {
        if r.offset_delta != r.index {
            out_of_order = Some((r.index, r.offset_delta));
            return ControlFlow::Break(());
        }
        let fault = if policy.require_keys && !r.has_key() {
            Some(RecordFault::NoKey)
        } else if !policy.log_append_time && r.timestamp != -1 {
            let late = policy.now_ms.saturating_sub(r.timestamp) > policy.before_max_ms;
            let early = r.timestamp.saturating_sub(policy.now_ms) > policy.after_max_ms;
            (late || early)
                .then_some(RecordFault::TimestampOutOfRange { timestamp: r.timestamp, offset_delta: r.offset_delta })
        } else if producer_log_append {
            Some(RecordFault::ProducerLogAppendTime)
        } else {
            None
        };
        match fault {
            Some(fault) => {
                if errors.len() < MAX_RECORD_ERRORS {
                    errors.push(RecordError { index: r.index, fault });
                }
            }
            None => max_timestamp = max_timestamp.max(r.timestamp),
        }
        ControlFlow::Continue(())
    })?;
    if let Some((index, delta)) = out_of_order {
        return Err(BatchRejection::Malformed(RecordsError::Malformed {
            index,
            reason: format!("Inner record offset delta {delta} is not the record's position {index} in its batch"),
        }));
    }
    if !errors.is_empty() {
        return Err(BatchRejection::Records { errors });
    }
    Ok(Validated { max_timestamp })
}
