//! Record-level reading of a RecordBatch v2, for the rare paths that need to
//! look inside a batch (ListOffsets by timestamp, keys on compacted topics),
//! and record-level writing for the broker's own batches. The produce and
//! fetch paths never come here: they work on batch headers only.
//!
//! Reading allocates nothing per record; compressed records are streamed.

use std::io::Read;

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{Record, RecordBatchEncoder, RecordEncodeOptions};

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
///
/// Compressed records are read through a streaming decompressor and skipped
/// record by record, so memory stays constant whatever the batch claims: a
/// decompression bomb costs time bounded by its records, never memory.
pub fn for_each_record(batch: &[u8], mut f: impl FnMut(RecordPosition) -> bool) -> Result<(), RecordsError> {
    let header = BatchHeader::parse(batch)?;
    let end = header.total_size().min(batch.len());
    let body = &batch[BATCH_HEADER_LEN.min(end)..end];
    let decompress = |e: std::io::Error| RecordsError::Decompress(e.to_string());
    let mut reader: Box<dyn Read + '_> = match header.compression()? {
        Compression::None => Box::new(body),
        Compression::Gzip => Box::new(flate2::read::GzDecoder::new(body)),
        Compression::Snappy => Box::new(SnappyReader::new(body).map_err(decompress)?),
        Compression::Lz4 => Box::new(lz4::Decoder::new(body).map_err(decompress)?),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(body).map_err(decompress)?),
    };
    let log_append = header.timestamp_type() == TimestampType::LogAppendTime;
    for index in 0..header.records_count.max(0) {
        let Some(mut pos) = read_record(&mut reader, &header) else {
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

/// Snappy as Kafka clients write it: either xerial-framed blocks (Java) or one
/// raw snappy block (librdkafka). Blocks are decompressed one at a time, and a
/// block may not claim more than snappy can expand its input to.
struct SnappyReader<'a> {
    blocks: &'a [u8],
    framed: bool,
    current: std::io::Cursor<Vec<u8>>,
}

const XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";
/// Snappy's densest op turns 3 input bytes into 64 output bytes.
const SNAPPY_MAX_RATIO: usize = 22;

impl<'a> SnappyReader<'a> {
    fn new(body: &'a [u8]) -> std::io::Result<Self> {
        if body.len() >= 16 && body.starts_with(XERIAL_MAGIC) {
            Ok(Self { blocks: &body[16..], framed: true, current: std::io::Cursor::new(Vec::new()) })
        } else {
            let mut r = Self { blocks: &[], framed: false, current: std::io::Cursor::new(Vec::new()) };
            r.current = std::io::Cursor::new(Self::block(body)?);
            Ok(r)
        }
    }

    fn block(compressed: &[u8]) -> std::io::Result<Vec<u8>> {
        let bad = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidData, m);
        let len = snap::raw::decompress_len(compressed).map_err(|e| bad(e.to_string()))?;
        if len > compressed.len().saturating_mul(SNAPPY_MAX_RATIO) + 64 {
            return Err(bad(format!("snappy block of {} bytes claims {len} bytes", compressed.len())));
        }
        snap::raw::Decoder::new().decompress_vec(compressed).map_err(|e| bad(e.to_string()))
    }
}

impl Read for SnappyReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let n = self.current.read(buf)?;
            if n > 0 || buf.is_empty() || !self.framed || self.blocks.is_empty() {
                return Ok(n);
            }
            if self.blocks.len() < 4 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let len = u32::from_be_bytes([self.blocks[0], self.blocks[1], self.blocks[2], self.blocks[3]]) as usize;
            let rest = &self.blocks[4..];
            if rest.len() < len {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.current = std::io::Cursor::new(Self::block(&rest[..len])?);
            self.blocks = &rest[len..];
        }
    }
}

/// One RecordBatch v2 without a producer id holding `entries` as key/value
/// records stamped `timestamp` (the broker's own writes, such as group
/// records, and test and benchmark fixtures).
pub fn encode_key_values(
    entries: impl IntoIterator<Item = (Option<Bytes>, Option<Bytes>)>,
    timestamp: i64,
    compression: kafka_protocol::records::Compression,
) -> Result<Bytes, String> {
    let records: Vec<Record> = entries
        .into_iter()
        .enumerate()
        .map(|(i, (key, value))| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
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

fn read_record(r: &mut dyn Read, header: &BatchHeader) -> Option<RecordPosition> {
    let len = u64::try_from(read_varint(r)?).ok()?;
    // The record's bytes, bounded by its length: read the leading fields,
    // then skip the rest without buffering it.
    let mut rec = r.take(len);
    let mut attributes = [0u8; 1];
    rec.read_exact(&mut attributes).ok()?;
    let ts_delta = read_varlong(&mut rec)?;
    let offset_delta = read_varint(&mut rec)?;
    let key_len = read_varint(&mut rec)?;
    let left = rec.limit();
    if std::io::copy(&mut rec, &mut std::io::sink()).ok()? != left {
        return None;
    }
    Some(RecordPosition {
        offset: header.base_offset.checked_add(i64::from(offset_delta))?,
        timestamp: header.base_timestamp.checked_add(ts_delta)?,
        has_key: key_len >= 0,
    })
}

fn read_unsigned_varint(r: &mut dyn Read) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let mut byte = [0u8; 1];
        r.read_exact(&mut byte).ok()?;
        value |= u64::from(byte[0] & 0x7f) << shift;
        if byte[0] & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

fn read_varlong(r: &mut dyn Read) -> Option<i64> {
    let raw = read_unsigned_varint(r)?;
    Some(((raw >> 1) as i64) ^ -((raw & 1) as i64))
}

fn read_varint(r: &mut dyn Read) -> Option<i32> {
    i32::try_from(read_varlong(r)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
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
    fn a_snappy_block_claiming_a_gigabyte_is_refused_without_allocating_it() {
        let mut b = batch(KCompression::Snappy, &[1]);
        b.truncate(BATCH_HEADER_LEN);
        // A raw snappy block whose length header claims 1 GiB.
        b.extend_from_slice(&[0x80, 0x80, 0x80, 0x80, 0x04, 0x00, 0x01]);
        let len = (b.len() - 12) as i32;
        b[8..12].copy_from_slice(&len.to_be_bytes());
        assert!(matches!(first_at_or_after(&b, 0), Err(RecordsError::Decompress(_))));
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
