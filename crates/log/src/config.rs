//! [`LogConfig`]: per-log settings, with Apache Kafka's defaults.

/// Settings of one log. Field names follow the Kafka topic configs they mirror.
#[derive(Clone, Debug, PartialEq)]
pub struct LogConfig {
    /// `segment.bytes`: roll when the next append would make the active segment larger.
    /// Values above `i32::MAX` act as `i32::MAX` (file positions in the index are 31-bit).
    pub segment_bytes: u64,
    /// `segment.ms`: roll when the active segment's first append is older than this.
    pub segment_ms: i64,
    /// Whether `cleanup.policy` contains `delete`: only then do `retention.ms` and
    /// `retention.bytes` delete segments (a compacted topic keeps its data until compaction).
    pub cleanup_delete: bool,
    /// Whether `cleanup.policy` contains `compact`: the log cleaner keeps only the latest
    /// record of each key (see [`crate::cleaner`]).
    pub cleanup_compact: bool,
    /// `delete.retention.ms`: how long a tombstone stays after its first cleaning (KIP-534).
    pub delete_retention_ms: i64,
    /// `min.compaction.lag.ms`: segments holding a record younger than this are not cleaned.
    pub min_compaction_lag_ms: i64,
    /// `max.compaction.lag.ms`: a log whose oldest dirty record is older is cleaned whatever
    /// its dirty ratio.
    pub max_compaction_lag_ms: i64,
    /// `min.cleanable.dirty.ratio`: dirty bytes over all cleanable bytes above which the log
    /// is cleaned.
    pub min_cleanable_dirty_ratio: f64,
    /// `retention.ms`: delete closed segments whose largest timestamp is older; -1 = unlimited.
    pub retention_ms: i64,
    /// `retention.bytes`: delete the oldest closed segments while the log is larger; -1 = unlimited.
    pub retention_bytes: i64,
    /// `flush.messages`: fsync after this many appended records; `u64::MAX` = never.
    pub flush_interval_messages: u64,
    /// `flush.ms`: fsync when this long has passed since the last flush (see
    /// [`Log::maybe_flush`](crate::Log::maybe_flush)); `i64::MAX` = never.
    pub flush_interval_ms: i64,
    /// `index.interval.bytes`: bytes appended between two index entries.
    pub index_interval_bytes: u32,
    /// `segment.index.bytes`: preallocated size of each index file; a full index rolls the segment.
    pub segment_index_bytes: u32,
    /// `max.message.bytes`: informational here, the broker enforces it.
    pub max_message_bytes: u32,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1024 * 1024 * 1024,
            segment_ms: 7 * 24 * 60 * 60 * 1000,
            cleanup_delete: true,
            cleanup_compact: false,
            delete_retention_ms: 24 * 60 * 60 * 1000,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX,
            min_cleanable_dirty_ratio: 0.5,
            retention_ms: 7 * 24 * 60 * 60 * 1000,
            retention_bytes: -1,
            flush_interval_messages: u64::MAX,
            flush_interval_ms: i64::MAX,
            index_interval_bytes: 4096,
            segment_index_bytes: 10 * 1024 * 1024,
            max_message_bytes: 1024 * 1024 + 12,
        }
    }
}

impl LogConfig {
    /// The age at which the active segment rolls: `segment.ms`, and for a compacted log at most
    /// `max.compaction.lag.ms` (the cleaner never touches the active segment; Kafka's
    /// `LogConfig.maxSegmentMs`).
    pub fn max_segment_ms(&self) -> i64 {
        if self.cleanup_compact {
            self.segment_ms.min(self.max_compaction_lag_ms)
        } else {
            self.segment_ms
        }
    }

    /// The segment size limit actually applied.
    pub(crate) fn effective_segment_bytes(&self) -> u64 {
        self.segment_bytes.clamp(1, i32::MAX as u64)
    }
}
