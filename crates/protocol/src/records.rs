//! Record-level reading of a RecordBatch v2, for the rare paths that need to
//! look inside a batch (ListOffsets by timestamp). The produce and fetch paths
//! never come here: they work on batch headers only.
//!
//! Nothing is allocated per record; a compressed batch is decompressed once.

use bytes::{Buf, Bytes};
use kafka_protocol::compression::{Decompressor, Gzip, Lz4, None as NoCompression, Snappy, Zstd};

use crate::batch::{BatchHeader, Compression, TimestampType, BATCH_HEADER_LEN};

/// Offset and timestamp of one record, as found inside a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordPosition {
    pub offset: i64,
    pub timestamp: i64,
    /// Whether the record has a key (a null key has length -1).
    pub has_key: bool,
}

/// Why the records of a batch could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RecordsError {
    #[error("batch header: {0}")]
    Header(#[from] crate::batch::BatchError),
    #[error("cannot decompress batch: {0}")]
    Decompress(String),
    #[error("record {index} of the batch is malformed")]
    Malformed { index: i32 },
}

/// Calls `f` with the offset and timestamp of every record in `batch` (one
/// whole v2 batch), in order, until `f` returns `false`.
pub fn for_each_record(batch: &[u8], mut f: impl FnMut(RecordPosition) -> bool) -> Result<(), RecordsError> {
    let header = BatchHeader::parse(batch)?;
    let end = header.total_size().min(batch.len());
    let mut body = Bytes::copy_from_slice(&batch[BATCH_HEADER_LEN.min(end)..end]);
    let take = |b: &mut Bytes| Ok(b.clone());
    let mut records = match header.compression()? {
        Compression::None => NoCompression::decompress(&mut body, take),
        Compression::Gzip => Gzip::decompress(&mut body, take),
        Compression::Snappy => Snappy::decompress(&mut body, take),
        Compression::Lz4 => Lz4::decompress(&mut body, take),
        Compression::Zstd => Zstd::decompress(&mut body, take),
    }
    .map_err(|e| RecordsError::Decompress(e.to_string()))?;
    let log_append = header.timestamp_type() == TimestampType::LogAppendTime;
    for index in 0..header.records_count.max(0) {
        let Some(mut pos) = read_record(&mut records, &header) else {
            return Err(RecordsError::Malformed { index });
        };
        if log_append {
            pos.timestamp = header.max_timestamp;
        }
        if !f(pos) {
            break;
        }
    }
    Ok(())
}

/// The first record whose timestamp is at or after `target`, if any.
pub fn first_at_or_after(batch: &[u8], target: i64) -> Result<Option<RecordPosition>, RecordsError> {
    let mut found = None;
    for_each_record(batch, |pos| {
        if pos.timestamp >= target {
            found = Some(pos);
            false
        } else {
            true
        }
    })?;
    Ok(found)
}

/// The record holding the batch's largest timestamp (the first such, if tied).
pub fn max_timestamp_record(batch: &[u8]) -> Result<Option<RecordPosition>, RecordsError> {
    let mut best: Option<RecordPosition> = None;
    for_each_record(batch, |pos| {
        if best.is_none_or(|b| pos.timestamp > b.timestamp) {
            best = Some(pos);
        }
        true
    })?;
    Ok(best)
}

fn read_record(buf: &mut Bytes, header: &BatchHeader) -> Option<RecordPosition> {
    let len = read_varint(buf)?;
    let len = usize::try_from(len).ok()?;
    if buf.remaining() < len {
        return None;
    }
    let mut rec = buf.split_to(len);
    if rec.remaining() < 1 {
        return None;
    }
    rec.advance(1); // attributes
    let ts_delta = read_varlong(&mut rec)?;
    let offset_delta = read_varint(&mut rec)?;
    let key_len = read_varint(&mut rec)?;
    Some(RecordPosition {
        offset: header.base_offset.checked_add(i64::from(offset_delta))?,
        timestamp: header.base_timestamp.checked_add(ts_delta)?,
        has_key: key_len >= 0,
    })
}

fn read_unsigned_varint(buf: &mut Bytes) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        if !buf.has_remaining() {
            return None;
        }
        let byte = buf.get_u8();
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

fn read_varlong(buf: &mut Bytes) -> Option<i64> {
    let raw = read_unsigned_varint(buf)?;
    Some(((raw >> 1) as i64) ^ -((raw & 1) as i64))
}

fn read_varint(buf: &mut Bytes) -> Option<i32> {
    i32::try_from(read_varlong(buf)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::records::{
        Compression as KCompression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType as KTimestampType,
    };

    fn batch(compression: KCompression, timestamps: &[i64]) -> BytesMut {
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
                timestamp_type: KTimestampType::Creation,
                offset: 100 + i as i64,
                sequence: i as i32,
                timestamp: *ts,
                key: Some(Bytes::from(format!("k{i}"))),
                value: Some(Bytes::from(vec![7u8; 300])),
                headers: Default::default(),
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(&mut buf, &records, &RecordEncodeOptions { version: 2, compression }).unwrap();
        buf
    }

    #[test]
    fn finds_first_record_at_or_after_in_every_codec() {
        for c in [KCompression::None, KCompression::Gzip, KCompression::Snappy, KCompression::Lz4, KCompression::Zstd] {
            let b = batch(c, &[10, 30, 20, 40, 40]);
            let hit = first_at_or_after(&b, 25).unwrap().unwrap();
            assert_eq!(hit, RecordPosition { offset: 101, timestamp: 30, has_key: true }, "{c:?}");
            assert_eq!(first_at_or_after(&b, 41).unwrap(), None);
            let max = max_timestamp_record(&b).unwrap().unwrap();
            assert_eq!(max, RecordPosition { offset: 103, timestamp: 40, has_key: true });
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut b = batch(KCompression::None, &[1, 2, 3]);
        // The first record's length varint now claims ~2^31 bytes.
        b[61..66].copy_from_slice(&[0xfe, 0xff, 0xff, 0xff, 0x0f]);
        assert!(first_at_or_after(&b, 100).is_err());
        assert!(first_at_or_after(&b[..30], 0).is_err());
    }
}
