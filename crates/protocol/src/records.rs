//! Record-level work on RecordBatch v2: reading records inside a batch (ListOffsets by
//! timestamp, produce validation), changing a batch's codec, and writing the broker's own
//! batches.
//!
//! Nothing here allocates per record; compressed records are streamed through a fixed buffer.
//!
//! # Layout
//! - [`scan`]: walks a batch's records, checking each record's structure.
//! - [`validate`]: Kafka's per-record produce checks (`LogValidator`) on top of the scan.
//! - [`codec`]: streaming decompression, and [`codec::recompress`] for topic codecs.

pub mod codec;
pub mod control;
pub mod filter;
pub mod scan;
pub mod validate;

use std::ops::ControlFlow;

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{Record, RecordBatchEncoder, RecordEncodeOptions};

pub use codec::{recompress, CompressionLevels, RecompressError};
pub use scan::{scan_records, RecordView};
pub use validate::{validate_records, BatchRejection, RecordError, RecordFault, RecordPolicy, Validated};

/// Offset and timestamp of one record, as found inside a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordPosition {
    pub offset: i64,
    pub timestamp: i64,
    /// Whether the record has a key (a null key has length -1).
    pub has_key: bool,
}

/// Why the records of a batch could not be read. On the produce path a malformed or inflated
/// batch is INVALID_RECORD (Kafka's `InvalidRecordException`); a bad header or a codec stream
/// that does not decompress is CORRUPT_MESSAGE.
#[derive(Debug, thiserror::Error)]
pub enum RecordsError {
    #[error("batch header: {0}")]
    Header(#[from] crate::batch::BatchError),
    #[error("cannot decompress batch: {0}")]
    Decompress(String),
    #[error("record {index} of the batch is malformed: {reason}")]
    Malformed { index: i32, reason: String },
    /// The records decompress to more than [`MAX_RECORDS_BYTES`].
    #[error("the batch's records decompress to more than {} bytes", MAX_RECORDS_BYTES)]
    Inflated,
}

/// Most bytes the records of one batch may decompress to: 2 GiB, more than any client can
/// build (the Java producer assembles a batch in one `ByteBuffer`, whose size is an `int`;
/// librdkafka caps it at 1 GB). It bounds the work a decompression bomb can cost the broker.
pub const MAX_RECORDS_BYTES: u64 = i32::MAX as u64;

/// Calls `f` with the offset and timestamp of every record in `batch` (one
/// whole v2 batch), in order, until `f` returns `false`.
///
/// Compressed records are read through a streaming decompressor and skipped
/// record by record, so memory stays constant whatever the batch claims: a
/// decompression bomb costs time bounded by its records, never memory.
pub fn for_each_record(batch: &[u8], mut f: impl FnMut(RecordPosition) -> bool) -> Result<(), RecordsError> {
    let base_offset = crate::batch::BatchHeader::parse(batch)?.base_offset;
    scan_records(batch, |r| {
        let pos = RecordPosition { offset: r.offset(base_offset), timestamp: r.timestamp, has_key: r.has_key() };
        if f(pos) {
            ControlFlow::Continue(())
        } else {
            ControlFlow::Break(())
        }
    })
}

/// One RecordBatch v2 without a producer id holding `entries` as key/value
/// records stamped `timestamp` (the broker's own writes, such as group
/// records, and test and benchmark fixtures).
pub fn encode_key_values(
    entries: impl IntoIterator<Item = (Option<Bytes>, Option<Bytes>)>,
    timestamp: i64,
    compression: kafka_protocol::records::Compression,
) -> Result<Bytes, String> {
    encode_batch_of(entries, timestamp, compression, None)
}

/// One transactional RecordBatch v2 of `producer_id` at `producer_epoch` holding `entries`
/// (a coordinator's write in a producer's transaction, such as TxnOffsetCommit's offsets).
pub fn encode_transactional_key_values(
    entries: impl IntoIterator<Item = (Option<Bytes>, Option<Bytes>)>,
    timestamp: i64,
    producer_id: i64,
    producer_epoch: i16,
) -> Result<Bytes, String> {
    let none = kafka_protocol::records::Compression::None;
    encode_batch_of(entries, timestamp, none, Some((producer_id, producer_epoch)))
}

/// One batch of `entries`; `producer`: a transactional producer's id and epoch.
fn encode_batch_of(
    entries: impl IntoIterator<Item = (Option<Bytes>, Option<Bytes>)>,
    timestamp: i64,
    compression: kafka_protocol::records::Compression,
    producer: Option<(i64, i16)>,
) -> Result<Bytes, String> {
    let (producer_id, producer_epoch) = producer.unwrap_or((-1, -1));
    let records: Vec<Record> = entries
        .into_iter()
        .enumerate()
        .map(|(i, (key, value))| Record {
            transactional: producer.is_some(),
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id,
            producer_epoch,
            timestamp_type: kafka_protocol::records::TimestampType::Creation,
            // The encoder starts a new batch whenever offset - sequence changes.
            offset: i as i64,
            sequence: i as i32,
            timestamp,
            key,
            value,
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(&mut buf, &records, &RecordEncodeOptions { version: 2, compression })
        .map_err(|e| e.to_string())?;
    Ok(buf.freeze())
}

/// The first record at or above offset `min_offset` (the log start) whose timestamp is at or
/// after `target`, if any.
pub fn first_at_or_after(batch: &[u8], target: i64, min_offset: i64) -> Result<Option<RecordPosition>, RecordsError> {
    let mut found = None;
    for_each_record(batch, |pos| {
        if pos.offset >= min_offset && pos.timestamp >= target {
            found = Some(pos);
            false
        } else {
            true
        }
    })?;
    Ok(found)
}

/// The record at or above offset `min_offset` (the log start) holding the largest timestamp
/// of the batch's records there (the first such, if tied).
pub fn max_timestamp_record(batch: &[u8], min_offset: i64) -> Result<Option<RecordPosition>, RecordsError> {
    let mut best: Option<RecordPosition> = None;
    for_each_record(batch, |pos| {
        if pos.offset >= min_offset && best.is_none_or(|b| pos.timestamp > b.timestamp) {
            best = Some(pos);
        }
        true
    })?;
    Ok(best)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::batch::{verify_crc, BatchHeader, Compression, BATCH_HEADER_LEN};
    use kafka_protocol::records::{Compression as KCompression, RecordBatchDecoder, TimestampType as KTimestampType};

    const CODECS: [KCompression; 5] =
        [KCompression::None, KCompression::Gzip, KCompression::Snappy, KCompression::Lz4, KCompression::Zstd];

    fn record(i: usize, ts: i64, key: Option<&str>) -> Record {
        Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: 7,
            producer_epoch: 3,
            timestamp_type: KTimestampType::Creation,
            offset: 100 + i as i64,
            sequence: 40 + i as i32,
            timestamp: ts,
            key: key.map(|k| Bytes::from(k.to_owned())),
            value: Some(Bytes::from(vec![7u8; 300])),
            headers: [(
                crate::kafka_protocol::protocol::StrBytes::from_static_str("h"),
                Some(Bytes::from_static(b"v")),
            )]
            .into_iter()
            .collect(),
        }
    }

    fn encode(records: &[Record], compression: KCompression) -> BytesMut {
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(&mut buf, records, &RecordEncodeOptions { version: 2, compression }).unwrap();
        buf
    }

    fn batch(compression: KCompression, timestamps: &[i64]) -> BytesMut {
        let records: Vec<Record> =
            timestamps.iter().enumerate().map(|(i, ts)| record(i, *ts, Some(&format!("k{i}")))).collect();
        encode(&records, compression)
    }

    /// A batch whose records are exactly `records` (raw record bytes) behind a valid header.
    fn raw_batch(records: &[u8], count: i32) -> Vec<u8> {
        let mut b = batch(KCompression::None, &[1]).to_vec();
        b.truncate(BATCH_HEADER_LEN);
        b.extend_from_slice(records);
        let h = BatchHeader {
            batch_length: (b.len() - 12) as i32,
            records_count: count,
            last_offset_delta: count - 1,
            ..BatchHeader::parse(&b).unwrap()
        };
        b[..BATCH_HEADER_LEN].copy_from_slice(&h.to_bytes());
        b
    }

    fn policy(now_ms: i64) -> RecordPolicy {
        RecordPolicy {
            now_ms,
            log_append_time: false,
            before_max_ms: i64::MAX,
            after_max_ms: i64::MAX,
            require_keys: false,
        }
    }

    #[test]
    fn finds_first_record_at_or_after_in_every_codec() {
        for c in CODECS {
            let b = batch(c, &[10, 30, 20, 40, 40]);
            let hit = first_at_or_after(&b, 25, 0).unwrap().unwrap();
            assert_eq!(hit, RecordPosition { offset: 101, timestamp: 30, has_key: true }, "{c:?}");
            assert_eq!(first_at_or_after(&b, 41, 0).unwrap(), None);
            let max = max_timestamp_record(&b, 0).unwrap().unwrap();
            assert_eq!(max, RecordPosition { offset: 103, timestamp: 40, has_key: true });
        }
    }

    #[test]
    fn lookups_skip_records_below_the_log_start() {
        let b = batch(KCompression::Lz4, &[10, 30, 20, 40, 15]);
        // Offsets 100..=104; the log starts at 102.
        assert_eq!(first_at_or_after(&b, 0, 102).unwrap().unwrap().offset, 102);
        assert_eq!(first_at_or_after(&b, 25, 102).unwrap().unwrap().offset, 103);
        assert_eq!(
            max_timestamp_record(&b, 104).unwrap().unwrap(),
            RecordPosition { offset: 104, timestamp: 15, has_key: true }
        );
        assert_eq!(max_timestamp_record(&b, 105).unwrap(), None);
    }

    #[test]
    fn a_snappy_block_claiming_a_gigabyte_is_refused_without_allocating_it() {
        let mut b = batch(KCompression::Snappy, &[1]);
        b.truncate(BATCH_HEADER_LEN);
        // A raw snappy block whose length header claims 1 GiB.
        b.extend_from_slice(&[0x80, 0x80, 0x80, 0x80, 0x04, 0x00, 0x01]);
        let len = (b.len() - 12) as i32;
        b[8..12].copy_from_slice(&len.to_be_bytes());
        assert!(matches!(first_at_or_after(&b, 0, 0), Err(RecordsError::Decompress(_))));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut b = batch(KCompression::None, &[1, 2, 3]);
        // The first record's length varint now claims ~2^31 bytes.
        b[61..66].copy_from_slice(&[0xfe, 0xff, 0xff, 0xff, 0x0f]);
        assert!(first_at_or_after(&b, 100, 0).is_err());
        assert!(first_at_or_after(&b[..30], 0, 0).is_err());
    }

    #[test]
    fn validation_computes_the_max_timestamp_from_the_records() {
        for c in CODECS {
            let mut b = batch(c, &[1_000, 1_020, 1_010]);
            // An old Sarama writes -1 as the header's max timestamp.
            b[35..43].copy_from_slice(&(-1i64).to_be_bytes());
            let h = BatchHeader::parse(&b).unwrap();
            let v = validate_records(&b, &h, &policy(1_000)).unwrap();
            assert_eq!(v.max_timestamp, 1_020, "{c:?}");
        }
        // Records without timestamps leave it at -1.
        let b = batch(KCompression::None, &[-1, -1]);
        let h = BatchHeader::parse(&b).unwrap();
        assert_eq!(validate_records(&b, &h, &policy(1_000)).unwrap().max_timestamp, -1);
    }

    #[test]
    fn every_record_timestamp_is_checked_whatever_the_header_claims() {
        let day = 86_400_000;
        let now = 10 * day;
        for c in CODECS {
            let mut b = batch(c, &[now, now + day, now - 5]);
            // The header claims "now".
            b[35..43].copy_from_slice(&now.to_be_bytes());
            let h = BatchHeader::parse(&b).unwrap();
            let p = RecordPolicy { after_max_ms: 60_000, ..policy(now) };
            let err = validate_records(&b, &h, &p).unwrap_err();
            assert!(err.is_timestamp());
            let BatchRejection::Records { errors } = err else { panic!("{c:?}") };
            assert_eq!(errors.len(), 1);
            assert_eq!(errors[0].index, 1);
            assert!(errors[0].message(&p).contains("out of range"), "{}", errors[0].message(&p));
            // A LogAppendTime topic does not look at them.
            let p = RecordPolicy { log_append_time: true, ..p };
            assert!(validate_records(&b, &h, &p).is_ok());
        }
    }

    #[test]
    fn keyless_records_on_a_compacted_topic_are_named() {
        let records = [record(0, 5, Some("a")), record(1, 5, None), record(2, 5, Some("c")), record(3, 5, None)];
        for c in CODECS {
            let b = encode(&records, c);
            let h = BatchHeader::parse(&b).unwrap();
            let p = RecordPolicy { require_keys: true, ..policy(5) };
            let err = validate_records(&b, &h, &p).unwrap_err();
            assert!(!err.is_timestamp());
            let BatchRejection::Records { errors } = err else { panic!() };
            assert_eq!(errors.iter().map(|e| e.index).collect::<Vec<_>>(), vec![1, 3]);
            assert!(validate_records(&b, &h, &policy(5)).is_ok());
        }
    }

    #[test]
    fn a_producer_may_not_claim_log_append_time() {
        let mut b = batch(KCompression::None, &[5]);
        crate::batch::set_log_append_time(&mut b, -1).unwrap();
        let h = BatchHeader::parse(&b).unwrap();
        let err = validate_records(&b, &h, &policy(5)).unwrap_err();
        assert!(err.is_timestamp());
    }

    fn one_record(body: &[u8]) -> Vec<u8> {
        let mut r = vec![(body.len() as u8) << 1];
        r.extend_from_slice(body);
        r
    }

    #[test]
    fn malformed_records_reject_the_whole_batch() {
        let ok = [0u8, 0, 0, 2, b'k', 2, b'v', 0]; // attrs, ts, delta 0, key "k", value "v", 0 headers
        let good = raw_batch(&one_record(&ok), 1);
        let h = BatchHeader::parse(&good).unwrap();
        assert!(validate_records(&good, &h, &policy(0)).is_ok());
        // Any negative key length reads as a null key, as in Kafka.
        let null_key = raw_batch(&one_record(&[0, 0, 0, 3, 2, b'v', 0]), 1);
        let h = BatchHeader::parse(&null_key).unwrap();
        assert!(validate_records(&null_key, &h, &policy(0)).is_ok());
        let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
        // A record longer than its fields.
        let mut long = one_record(&ok);
        long[0] += 2;
        long.push(0);
        cases.push(("record size", raw_batch(&long, 1)));
        // Bytes after the declared records.
        let mut trailing = one_record(&ok);
        trailing.push(0);
        cases.push(("still remaining", raw_batch(&trailing, 1)));
        // Fewer records than the header counts.
        cases.push(("premature EOF", raw_batch(&one_record(&ok), 2)));
        // A negative header count and a negative header key length.
        cases.push(("number of record headers", raw_batch(&one_record(&[0, 0, 0, 2, b'k', 2, b'v', 1]), 1)));
        cases.push(("header key size", raw_batch(&one_record(&[0, 0, 0, 2, b'k', 2, b'v', 2, 1, 0]), 1)));
        // Offset delta 1 for the first record.
        cases.push(("offset delta", raw_batch(&one_record(&[0, 0, 2, 2, b'k', 2, b'v', 0]), 1)));
        for (what, b) in cases {
            let h = BatchHeader::parse(&b).unwrap();
            match validate_records(&b, &h, &policy(0)) {
                Err(BatchRejection::Malformed(e)) => assert!(e.to_string().contains(what), "{what}: {e}"),
                other => panic!("{what}: {other:?}"),
            }
        }
    }

    fn decoded(b: &[u8]) -> Vec<Record> {
        let mut bytes = Bytes::copy_from_slice(b);
        RecordBatchDecoder::decode_all(&mut bytes).unwrap().into_iter().flat_map(|s| s.records).collect()
    }

    #[test]
    fn recompression_keeps_every_record_and_header_field() {
        let records: Vec<Record> = (0..50).map(|i| record(i, 1_000 + i as i64, Some("key"))).collect();
        for from in CODECS {
            let original = encode(&records, from);
            let oh = BatchHeader::parse(&original).unwrap();
            for to in [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd] {
                let out = recompress(&original, to, CompressionLevels::default(), 1 << 20).unwrap();
                assert!(verify_crc(&out), "{from:?} -> {to:?}");
                let h = BatchHeader::parse(&out).unwrap();
                assert_eq!(h.total_size(), out.len());
                assert_eq!(h.compression().unwrap(), to);
                let same = BatchHeader { attributes: oh.attributes, batch_length: oh.batch_length, crc: oh.crc, ..h };
                assert_eq!(same, oh, "every other header field is kept");
                assert_eq!(decoded(&out), decoded(&original), "{from:?} -> {to:?}");
            }
        }
    }

    #[test]
    fn recompression_of_a_bomb_stops_at_the_size_limit() {
        let big = Record { value: Some(Bytes::from(vec![0u8; 4 << 20])), ..record(0, 1, Some("k")) };
        let b = encode(&[big], KCompression::Zstd);
        assert!(b.len() < 64 << 10);
        let err = recompress(&b, Compression::None, CompressionLevels::default(), 1 << 20).unwrap_err();
        assert!(matches!(err, RecompressError::TooLarge { .. }), "{err}");
    }
}
