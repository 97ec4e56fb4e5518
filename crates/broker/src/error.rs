//! The broker's error type and the one place it becomes a Kafka error code.

use strata_log::LogError;
use strata_protocol::ResponseError;

/// Why a partition-level operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("unknown topic or partition")]
    UnknownTopicOrPartition,
    #[error("unknown topic id")]
    UnknownTopicId,
    #[error("record batch is corrupt: {0}")]
    CorruptMessage(String),
    #[error("invalid record: {0}")]
    InvalidRecord(String),
    #[error("record batch of {size} bytes exceeds max.message.bytes ({max})")]
    MessageTooLarge { size: usize, max: usize },
    /// Some records of a batch broke the topic's rules (KIP-467): each is named in the
    /// response's `record_errors`, and the batch is refused as a whole.
    #[error("{}", record_errors_message(errors, *invalid_timestamp))]
    RecordErrors { invalid_timestamp: bool, errors: Vec<RecordErrorOut> },
    #[error("message format older than v2 is not supported")]
    UnsupportedMessageFormat,
    #[error("out of order sequence number for producer {producer_id}: expected {expected}, got {got}")]
    OutOfOrderSequence { producer_id: i64, expected: i32, got: i32 },
    #[error("producer {producer_id} epoch {epoch} is older than the current epoch {current}")]
    InvalidProducerEpoch { producer_id: i64, epoch: i16, current: i16 },
    /// Transactional records without a transactional id the client may write as.
    #[error("transactional records need a transactional id")]
    TransactionalIdAuthorizationFailed,
    /// The principal may not use the topic this way (TOPIC_AUTHORIZATION_FAILED).
    #[error("not authorized to access the topic")]
    TopicAuthorizationFailed,
    /// The principal may not do this on the cluster (CLUSTER_AUTHORIZATION_FAILED).
    #[error("not authorized on the cluster")]
    ClusterAuthorizationFailed,
    /// A write that does not fit the producer's transaction state (INVALID_TXN_STATE).
    #[error("{0}")]
    InvalidTxnState(String),
    /// A transaction marker from a coordinator older than one that already wrote a marker
    /// for the producer (TRANSACTION_COORDINATOR_FENCED).
    #[error("transaction marker of producer {producer_id} from coordinator epoch {epoch}, older than {current}")]
    TransactionCoordinatorFenced { producer_id: i64, epoch: i32, current: i32 },
    #[error("{0}")]
    UnsupportedCompressionType(&'static str),
    #[error("the partition has {in_sync} in-sync replica(s), below min.insync.replicas={required}")]
    NotEnoughReplicas { in_sync: usize, required: usize },
    /// acks=all: the records were appended, but the ISR shrank below `min.insync.replicas`
    /// before they were committed (NOT_ENOUGH_REPLICAS_AFTER_APPEND; the producer retries).
    #[error("the records were appended but the partition has {in_sync} in-sync replica(s), below min.insync.replicas={required}")]
    NotEnoughReplicasAfterAppend { in_sync: usize, required: usize },
    /// acks=all: the high watermark did not pass the records within the request's timeout
    /// (REQUEST_TIMED_OUT).
    #[error("the records were not replicated to the in-sync replicas within {0} ms")]
    RequestTimedOut(i64),
    #[error("internal error: {0}")]
    Internal(String),
    /// What a transaction coordinator answered for a transactional write (KIP-890
    /// verification), already mapped to what the producer must see.
    #[error("{1}")]
    Coordinator(ResponseError, String),
    #[error("offset {offset} is out of range [{log_start}, {log_end}]")]
    OffsetOutOfRange { offset: i64, log_start: i64, log_end: i64 },
    #[error("storage error: {0}")]
    Storage(String),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("invalid topic: {0}")]
    InvalidTopic(String),
    /// The partition exists but this broker is not its leader (Kafka's
    /// NOT_LEADER_OR_FOLLOWER): clients refresh their metadata and go to the leader.
    #[error("this broker is not the leader of {0}")]
    NotLeaderOrFollower(String),
    /// The request names an older leader epoch than the partition's (KIP-320): the client's
    /// metadata is stale (FENCED_LEADER_EPOCH).
    #[error("leader epoch {requested} of {partition} is older than the current {current}")]
    FencedLeaderEpoch { partition: String, requested: i32, current: i32 },
    /// The request names a newer leader epoch than this broker knows (UNKNOWN_LEADER_EPOCH):
    /// this broker's metadata is behind; the client retries.
    #[error("leader epoch {requested} of {partition} is newer than the {current} this broker knows")]
    UnknownLeaderEpoch { partition: String, requested: i32, current: i32 },
    #[error("the broker is shutting down")]
    ShuttingDown,
}

/// One refused record of a batch: its index in the batch and Kafka's message for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordErrorOut {
    pub index: i32,
    pub message: String,
}

/// Kafka's top-level message for a batch refused record by record (`LogValidator`).
fn record_errors_message(errors: &[RecordErrorOut], invalid_timestamp: bool) -> String {
    if invalid_timestamp {
        return "One or more records have been rejected due to invalid timestamp".to_owned();
    }
    let shown: Vec<String> = errors
        .iter()
        .take(3)
        .map(|e| format!("RecordError(batchIndex={}, message='{}')", e.index, e.message))
        .collect();
    // The list stops at MAX_RECORD_ERRORS; a batch with more says "at least".
    let total = if errors.len() >= strata_protocol::records::validate::MAX_RECORD_ERRORS {
        format!("at least {}", errors.len())
    } else {
        errors.len().to_string()
    };
    format!(
        "One or more records have been rejected due to {total} record errors in total, and only showing the first three errors at most: [{}]",
        shown.join(", ")
    )
}

impl From<LogError> for BrokerError {
    fn from(e: LogError) -> Self {
        match e {
            LogError::OffsetOutOfRange { offset, log_start, log_end } => {
                BrokerError::OffsetOutOfRange { offset, log_start, log_end }
            }
            // A batch the log refuses at append was validated by us first, so
            // reaching here means the header lied about itself.
            LogError::InvalidBatch { .. } | LogError::BadBatchHeader { .. } => {
                BrokerError::CorruptMessage(e.to_string())
            }
            // Stored data that fails its CRC or does not parse: Kafka answers a fetch that hits
            // it with CORRUPT_MESSAGE (its log read throws CorruptRecordException, which
            // `Errors.forException` maps so). KAFKA_STORAGE_ERROR would be wrong: clients treat
            // it as a leader move and retry forever, hiding the damage, while the Java consumer
            // surfaces CORRUPT_MESSAGE to the application with the offset.
            LogError::Corrupt { .. } => BrokerError::CorruptMessage(e.to_string()),
            LogError::AppendTooLarge { size, .. } => BrokerError::MessageTooLarge { size: size as usize, max: 0 },
            other => BrokerError::Storage(other.to_string()),
        }
    }
}

impl BrokerError {
    /// The Kafka error code a client receives for this error.
    pub fn code(&self) -> ResponseError {
        match self {
            BrokerError::UnknownTopicOrPartition => ResponseError::UnknownTopicOrPartition,
            BrokerError::UnknownTopicId => ResponseError::UnknownTopicId,
            BrokerError::CorruptMessage(_) => ResponseError::CorruptMessage,
            BrokerError::InvalidRecord(_) => ResponseError::InvalidRecord,
            BrokerError::MessageTooLarge { .. } => ResponseError::MessageTooLarge,
            // Kafka answers INVALID_TIMESTAMP if any refused record had a bad timestamp.
            BrokerError::RecordErrors { invalid_timestamp: true, .. } => ResponseError::InvalidTimestamp,
            BrokerError::RecordErrors { invalid_timestamp: false, .. } => ResponseError::InvalidRecord,
            BrokerError::UnsupportedMessageFormat => ResponseError::UnsupportedForMessageFormat,
            BrokerError::OutOfOrderSequence { .. } => ResponseError::OutOfOrderSequenceNumber,
            BrokerError::InvalidProducerEpoch { .. } => ResponseError::InvalidProducerEpoch,
            BrokerError::TransactionCoordinatorFenced { .. } => ResponseError::TransactionCoordinatorFenced,
            BrokerError::InvalidTxnState(_) => ResponseError::InvalidTxnState,
            BrokerError::TransactionalIdAuthorizationFailed => ResponseError::TransactionalIdAuthorizationFailed,
            BrokerError::TopicAuthorizationFailed => ResponseError::TopicAuthorizationFailed,
            BrokerError::ClusterAuthorizationFailed => ResponseError::ClusterAuthorizationFailed,
            BrokerError::UnsupportedCompressionType(_) => ResponseError::UnsupportedCompressionType,
            // Retriable: the producer retries while the ISR is short.
            BrokerError::NotEnoughReplicas { .. } => ResponseError::NotEnoughReplicas,
            BrokerError::NotEnoughReplicasAfterAppend { .. } => ResponseError::NotEnoughReplicasAfterAppend,
            BrokerError::RequestTimedOut(_) => ResponseError::RequestTimedOut,
            BrokerError::Internal(_) => ResponseError::UnknownServerError,
            BrokerError::Coordinator(code, _) => *code,
            BrokerError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
            // KAFKA_STORAGE_ERROR is retriable: the client retries while the
            // operator fixes the disk, as with Kafka.
            BrokerError::Storage(_) => ResponseError::KafkaStorageError,
            BrokerError::InvalidRequest(_) => ResponseError::InvalidRequest,
            BrokerError::InvalidTopic(_) => ResponseError::InvalidTopicException,
            // Retriable, so clients come back after the restart.
            BrokerError::ShuttingDown | BrokerError::NotLeaderOrFollower(_) => ResponseError::NotLeaderOrFollower,
            BrokerError::FencedLeaderEpoch { .. } => ResponseError::FencedLeaderEpoch,
            BrokerError::UnknownLeaderEpoch { .. } => ResponseError::UnknownLeaderEpoch,
        }
    }

    pub fn code_i16(&self) -> i16 {
        self.code().code()
    }
}
