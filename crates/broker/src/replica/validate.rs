//! Produce-time validation of one partition's record bytes, as Kafka's `LogValidator`:
//! the batch header, then every record in one streaming pass (structure, count, offset
//! deltas, keys on compacted topics, timestamps), then what the broker rewrites: the
//! header's `maxTimestamp` from the records (or LogAppendTime), and the codec when the topic's
//! `compression.type` is not `producer`.
//!
//! The producer's bytes are stored as they came whenever nothing needs rewriting (the common
//! case); otherwise the batch is copied once and patched or recompressed.

use strata_protocol::batch::{set_max_timestamp, verify_crc, BatchError, BatchHeader, BatchIter, TimestampType};
use strata_protocol::records::{
    recompress, validate_records, BatchRejection, RecompressError, RecordPolicy, RecordsError,
};

use crate::config::TopicSettings;
use crate::error::{BrokerError, RecordErrorOut};

/// A batch that passed validation, ready to append.
#[derive(Debug)]
pub struct Prepared {
    /// The header of the batch to store (of `rewritten` when there is one).
    pub header: BatchHeader,
    /// The batch to store when it differs from the producer's bytes: recompressed, or with
    /// the broker's `maxTimestamp`. `None`: store the producer's bytes as they are.
    pub rewritten: Option<Vec<u8>>,
}

/// Validates the bytes a producer sent for one partition (Produce v3+ carries exactly one
/// RecordBatch v2 per partition) and works out what to store.
///
/// Errors, as Kafka answers them: a batch that is not v2 is UNSUPPORTED_FOR_MESSAGE_FORMAT;
/// a bad CRC, a truncated batch or an unknown codec CORRUPT_MESSAGE; more than one batch, a
/// count or offset range that disagree, control batches, malformed records INVALID_RECORD;
/// bad records [`BrokerError::RecordErrors`] (INVALID_RECORD, or INVALID_TIMESTAMP if a
/// timestamp was bad, with each bad record's index, KIP-467); a batch over
/// `max.message.bytes`, before or after recompression, MESSAGE_TOO_LARGE.
pub fn prepare_batch(records: &[u8], settings: &TopicSettings, now_ms: i64) -> Result<Prepared, BrokerError> {
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
    let source = header.compression().map_err(|e| BrokerError::CorruptMessage(e.to_string()))?;
    if header.records_count <= 0 || header.last_offset_delta != header.records_count - 1 {
        return Err(BrokerError::InvalidRecord(format!(
            "batch claims {} records but a last offset delta of {}",
            header.records_count, header.last_offset_delta
        )));
    }
    if header.is_control() {
        return Err(BrokerError::InvalidRecord("clients may not produce control batches".into()));
    }
    if header.is_transactional() && !header.has_producer_id() {
        return Err(BrokerError::InvalidRecord("a transactional batch without a producer id".into()));
    }
    if header.has_producer_id() && header.base_sequence < 0 {
        return Err(BrokerError::InvalidRecord("idempotent batch without a base sequence".into()));
    }
    let policy = RecordPolicy {
        now_ms,
        log_append_time: settings.log_append_time,
        before_max_ms: settings.timestamp_before_max_ms,
        after_max_ms: settings.timestamp_after_max_ms,
        require_keys: settings.compacted,
    };
    let validated = validate_records(batch, &header, &policy).map_err(|e| rejection(e, &policy))?;

    let mut rewritten = match settings.compression {
        Some(target) if target != source => {
            Some(recompress(batch, target, settings.compression_levels, settings.max_message_bytes).map_err(
                |e| match e {
                    RecompressError::TooLarge { limit, .. } => {
                        BrokerError::MessageTooLarge { size: limit.saturating_add(1), max: limit }
                    }
                    RecompressError::Records(e) => records_error(e),
                    // Compressing into memory does not fail; if it did, it is a bug of ours.
                    other => BrokerError::Internal(other.to_string()),
                },
            )?)
        }
        _ => None,
    };
    let (kind, max_timestamp) = if settings.log_append_time {
        (TimestampType::LogAppendTime, now_ms)
    } else {
        (TimestampType::CreateTime, validated.max_timestamp)
    };
    if rewritten.is_none() && (header.timestamp_type() != kind || header.max_timestamp != max_timestamp) {
        rewritten = Some(batch.to_vec());
    }
    let header = match rewritten.as_mut() {
        Some(copy) => {
            set_max_timestamp(copy, kind, max_timestamp).map_err(|e| BrokerError::CorruptMessage(e.to_string()))?;
            BatchHeader::parse(copy).map_err(|e| BrokerError::CorruptMessage(e.to_string()))?
        }
        None => header,
    };
    Ok(Prepared { header, rewritten })
}

fn records_error(e: RecordsError) -> BrokerError {
    match e {
        // Kafka's InvalidRecordException: the records do not parse or disagree with the header.
        RecordsError::Malformed { .. } | RecordsError::Inflated => BrokerError::InvalidRecord(e.to_string()),
        RecordsError::Header(_) | RecordsError::Decompress(_) => BrokerError::CorruptMessage(e.to_string()),
    }
}

fn rejection(e: BatchRejection, policy: &RecordPolicy) -> BrokerError {
    let invalid_timestamp = e.is_timestamp();
    match e {
        BatchRejection::Malformed(e) => records_error(e),
        BatchRejection::Records { errors } => BrokerError::RecordErrors {
            invalid_timestamp,
            errors: errors.iter().map(|r| RecordErrorOut { index: r.index, message: r.message(policy) }).collect(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{Bytes, BytesMut};
    use strata_protocol::batch::Compression;
    use strata_protocol::kafka_protocol::records::{
        Compression as KCompression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType as KType,
    };

    fn batch(timestamps: &[i64], keys: bool, compression: KCompression) -> Vec<u8> {
        let records: Vec<Record> = timestamps
            .iter()
            .enumerate()
            .map(|(i, ts)| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: KType::Creation,
                offset: i as i64,
                sequence: i as i32,
                timestamp: *ts,
                key: keys.then(|| Bytes::from(format!("k{i}"))),
                value: Some(Bytes::from_static(b"value")),
                headers: Default::default(),
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(&mut buf, &records, &RecordEncodeOptions { version: 2, compression })
            .unwrap_or_else(|e| panic!("{e}"));
        buf.to_vec()
    }

    fn settings() -> TopicSettings {
        TopicSettings::resolve(None, &Default::default())
    }

    #[test]
    fn the_header_max_timestamp_comes_from_the_records() {
        let mut b = batch(&[100, 120, 110], true, KCompression::None);
        b[35..43].copy_from_slice(&(-1i64).to_be_bytes());
        let crc = strata_protocol::batch::compute_crc(&b);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        let p = prepare_batch(&b, &settings(), 200).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.header.max_timestamp, 120);
        let stored = p.rewritten.unwrap_or_else(|| panic!("the header had to be fixed"));
        assert!(verify_crc(&stored));
        // A batch whose header is right is stored as it came.
        let good = batch(&[100, 120, 110], true, KCompression::None);
        assert!(prepare_batch(&good, &settings(), 200).unwrap_or_else(|e| panic!("{e}")).rewritten.is_none());
    }

    #[test]
    fn topic_compression_rewrites_other_codecs() {
        let mut s = settings();
        s.compression = Some(Compression::Zstd);
        let lz4 = batch(&[1, 2], true, KCompression::Lz4);
        let p = prepare_batch(&lz4, &s, 2).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.header.compression().ok(), Some(Compression::Zstd));
        let zstd = batch(&[1, 2], true, KCompression::Zstd);
        assert!(prepare_batch(&zstd, &s, 2).unwrap_or_else(|e| panic!("{e}")).rewritten.is_none());
        s.compression = Some(Compression::None);
        let p = prepare_batch(&lz4, &s, 2).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.header.compression().ok(), Some(Compression::None));
    }

    #[test]
    fn bad_records_are_listed() {
        let mut s = settings();
        s.compacted = true;
        let b = batch(&[1, 2], false, KCompression::Gzip);
        match prepare_batch(&b, &s, 2) {
            Err(BrokerError::RecordErrors { invalid_timestamp: false, errors }) => {
                assert_eq!(errors.iter().map(|e| e.index).collect::<Vec<_>>(), vec![0, 1]);
            }
            other => panic!("{other:?}"),
        }
    }
}
