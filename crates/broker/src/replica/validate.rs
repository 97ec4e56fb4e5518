//! Produce-time validation of one partition's record bytes. Works on batch
//! headers only: no per-record work, no decompression.

use strata_protocol::batch::{verify_crc, BatchError, BatchHeader, BatchIter};

use crate::config::TopicSettings;
use crate::error::BrokerError;

/// Validates the bytes a producer sent for one partition and returns the
/// header of the single batch they must hold (Produce v3+ carries exactly
/// one RecordBatch v2 per partition).
pub fn validate_batch(records: &[u8], settings: &TopicSettings, now_ms: i64) -> Result<BatchHeader, BrokerError> {
    let mut iter = BatchIter::new(records);
    let (header, batch) = match iter.next() {
        Some(Ok(x)) => x,
        Some(Err(BatchError::BadMagic(_))) => return Err(BrokerError::UnsupportedMessageFormat),
        Some(Err(e)) => return Err(BrokerError::CorruptMessage(e.to_string())),
        None => return Err(BrokerError::CorruptMessage("empty record set".into())),
    };
    if iter.next().is_some() {
        return Err(BrokerError::InvalidRecord(
            "produce requests v3+ must carry exactly one record batch per partition".into(),
        ));
    }
    if batch.len() > settings.max_message_bytes {
        return Err(BrokerError::MessageTooLarge { size: batch.len(), max: settings.max_message_bytes });
    }
    if !verify_crc(batch) {
        return Err(BrokerError::CorruptMessage(format!("CRC mismatch (stored {:#010x})", header.crc)));
    }
    header.compression().map_err(|e| BrokerError::CorruptMessage(e.to_string()))?;
    if header.records_count <= 0 || header.last_offset_delta != header.records_count - 1 {
        return Err(BrokerError::InvalidRecord(format!(
            "batch claims {} records but a last offset delta of {}",
            header.records_count, header.last_offset_delta
        )));
    }
    if header.is_control() {
        return Err(BrokerError::InvalidRecord("clients may not produce control batches".into()));
    }
    if header.is_transactional() {
        return Err(BrokerError::TransactionsUnsupported);
    }
    if header.has_producer_id() && header.base_sequence < 0 {
        return Err(BrokerError::InvalidRecord("idempotent batch without a base sequence".into()));
    }
    if settings.compacted {
        // Compaction keeps the last record per key, so Kafka refuses records
        // without one. This is the only produce check that reads records, and
        // only compacted topics pay for it.
        let mut keyless = false;
        strata_protocol::records::for_each_record(batch, |r| {
            keyless |= !r.has_key;
            !keyless
        })
        .map_err(|e| BrokerError::CorruptMessage(e.to_string()))?;
        if keyless {
            return Err(BrokerError::InvalidRecord("Compacted topic cannot accept message without key.".into()));
        }
    }
    if !settings.log_append_time {
        let ts = header.max_timestamp;
        if ts >= 0 {
            if now_ms.saturating_sub(ts) > settings.timestamp_before_max_ms {
                return Err(BrokerError::InvalidTimestamp(format!(
                    "timestamp {ts} is more than message.timestamp.before.max.ms ({}) in the past",
                    settings.timestamp_before_max_ms
                )));
            }
            if ts.saturating_sub(now_ms) > settings.timestamp_after_max_ms {
                return Err(BrokerError::InvalidTimestamp(format!(
                    "timestamp {ts} is more than message.timestamp.after.max.ms ({}) in the future",
                    settings.timestamp_after_max_ms
                )));
            }
        } else if ts != -1 {
            return Err(BrokerError::InvalidTimestamp(format!("negative timestamp {ts}")));
        }
    }
    Ok(header)
}
