//! A zero-copy view of Kafka RecordBatch v2 (magic 2).
//!
//! The broker never decodes individual records on the produce or fetch path: it reads the fixed
//! 61-byte batch header in place, checks the CRC32C, and patches `baseOffset`,
//! `partitionLeaderEpoch` or the LogAppendTime fields directly in the received bytes.
//!
//! Header layout (big-endian), byte offsets from the start of the batch:
//!
//! | field                | type | at |
//! |----------------------|------|----|
//! | baseOffset           | i64  | 0  |
//! | batchLength          | i32  | 8  |
//! | partitionLeaderEpoch | i32  | 12 |
//! | magic                | i8   | 16 |
//! | crc                  | u32  | 17 |
//! | attributes           | i16  | 21 |
//! | lastOffsetDelta      | i32  | 23 |
//! | baseTimestamp        | i64  | 27 |
//! | maxTimestamp         | i64  | 35 |
//! | producerId           | i64  | 43 |
//! | producerEpoch        | i16  | 51 |
//! | baseSequence         | i32  | 53 |
//! | recordsCount         | i32  | 57 |
//!
//! `batchLength` counts the bytes after itself, so a batch occupies `batchLength + 12` bytes. The
//! CRC covers bytes `[21, end)`: everything from `attributes` on. `baseOffset` and
//! `partitionLeaderEpoch` lie outside the CRC, which is why a broker can assign offsets and stamp
//! the leader epoch without recomputing it.
//!
//! Nothing here allocates, and nothing panics on malformed input: every accessor that reads
//! client-controlled bytes returns a [`BatchError`] instead.

use std::fmt;

/// Length of the fixed RecordBatch v2 header.
pub const BATCH_HEADER_LEN: usize = 61;

/// Bytes before the `batchLength` field's coverage starts: `baseOffset` (8) + `batchLength` (4).
/// A batch's total size is `batchLength + LOG_OVERHEAD`.
pub const LOG_OVERHEAD: usize = 12;

/// The smallest legal `batchLength`: a header with no records (61 - 12).
pub const MIN_BATCH_LENGTH: i32 = (BATCH_HEADER_LEN - LOG_OVERHEAD) as i32;

/// The only magic value this view understands.
pub const MAGIC_V2: i8 = 2;

/// `producerId` of a batch written without an idempotent producer.
pub const NO_PRODUCER_ID: i64 = -1;

/// Byte offsets of the header fields.
pub mod offsets {
    /// `baseOffset` (i64).
    pub const BASE_OFFSET: usize = 0;
    /// `batchLength` (i32).
    pub const BATCH_LENGTH: usize = 8;
    /// `partitionLeaderEpoch` (i32).
    pub const PARTITION_LEADER_EPOCH: usize = 12;
    /// `magic` (i8).
    pub const MAGIC: usize = 16;
    /// `crc` (u32).
    pub const CRC: usize = 17;
    /// `attributes` (i16); also where the CRC-covered range starts.
    pub const ATTRIBUTES: usize = 21;
    /// `lastOffsetDelta` (i32).
    pub const LAST_OFFSET_DELTA: usize = 23;
    /// `baseTimestamp` (i64).
    pub const BASE_TIMESTAMP: usize = 27;
    /// `maxTimestamp` (i64).
    pub const MAX_TIMESTAMP: usize = 35;
    /// `producerId` (i64).
    pub const PRODUCER_ID: usize = 43;
    /// `producerEpoch` (i16).
    pub const PRODUCER_EPOCH: usize = 51;
    /// `baseSequence` (i32).
    pub const BASE_SEQUENCE: usize = 53;
    /// `recordsCount` (i32).
    pub const RECORDS_COUNT: usize = 57;
}

const COMPRESSION_MASK: i16 = 0x07;
const TIMESTAMP_TYPE_MASK: i16 = 0x08;
const TRANSACTIONAL_MASK: i16 = 0x10;
const CONTROL_MASK: i16 = 0x20;

/// Why a byte range is not a usable RecordBatch v2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchError {
    /// Fewer bytes than the header, or than the header's `batchLength` announces.
    Truncated {
        /// Bytes needed to make progress (the header, or the whole batch).
        needed: usize,
        /// Bytes available.
        available: usize,
    },
    /// The magic byte is not 2. Older message formats are not supported.
    BadMagic(i8),
    /// `batchLength` is smaller than an empty v2 batch (49).
    BadLength(i32),
    /// Attributes name a compression codec other than 0..=4.
    UnknownCompression(u8),
}

impl fmt::Display for BatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BatchError::Truncated { needed, available } => {
                write!(f, "record batch truncated: needs {needed} bytes but only {available} are present")
            }
            BatchError::BadMagic(m) => {
                write!(f, "record batch has magic {m}, only magic 2 (Kafka 0.11+) batches are supported")
            }
            BatchError::BadLength(l) => {
                write!(f, "record batch length {l} is smaller than the minimum {MIN_BATCH_LENGTH}")
            }
            BatchError::UnknownCompression(c) => {
                write!(f, "record batch uses unknown compression codec {c}")
            }
        }
    }
}

impl std::error::Error for BatchError {}

/// Compression codec of a batch (attributes bits 0-2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Compression {
    /// 0
    None,
    /// 1
    Gzip,
    /// 2
    Snappy,
    /// 3
    Lz4,
    /// 4
    Zstd,
}

impl Compression {
    /// The codec's id in the attributes field.
    pub fn id(self) -> u8 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }

    /// The codec with attributes id `id`; 5..=7 are [`BatchError::UnknownCompression`].
    pub fn from_id(id: u8) -> Result<Compression, BatchError> {
        match id {
            0 => Ok(Compression::None),
            1 => Ok(Compression::Gzip),
            2 => Ok(Compression::Snappy),
            3 => Ok(Compression::Lz4),
            4 => Ok(Compression::Zstd),
            other => Err(BatchError::UnknownCompression(other)),
        }
    }
}

/// Meaning of a batch's timestamps (attributes bit 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TimestampType {
    /// Timestamps were set by the producer.
    CreateTime,
    /// The broker stamped `maxTimestamp` when appending; every record's timestamp reads as it.
    LogAppendTime,
}

/// The decoded fixed header of one RecordBatch v2.
///
/// Invariant (for headers returned by [`BatchHeader::parse`]): `magic == 2` and
/// `batch_length >= 49`, so [`BatchHeader::total_size`] is at least [`BATCH_HEADER_LEN`]. Other
/// fields are taken as found; validating them is the caller's policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the first record.
    pub base_offset: i64,
    /// Bytes following the `batchLength` field.
    pub batch_length: i32,
    /// Leader epoch of the leader that appended the batch.
    pub partition_leader_epoch: i32,
    /// Always 2.
    pub magic: i8,
    /// CRC32C of bytes `[21, end)`.
    pub crc: u32,
    /// Compression, timestamp type, transactional and control flags.
    pub attributes: i16,
    /// `last_offset - base_offset`.
    pub last_offset_delta: i32,
    /// Timestamp of the first record.
    pub base_timestamp: i64,
    /// Largest record timestamp (or the LogAppendTime).
    pub max_timestamp: i64,
    /// Idempotent producer id, or -1.
    pub producer_id: i64,
    /// Producer epoch, or -1.
    pub producer_epoch: i16,
    /// Sequence number of the first record, or -1.
    pub base_sequence: i32,
    /// Number of records in the batch.
    pub records_count: i32,
}

fn be_i64(buf: &[u8], at: usize) -> i64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[at..at + 8]);
    i64::from_be_bytes(b)
}

fn be_i32(buf: &[u8], at: usize) -> i32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&buf[at..at + 4]);
    i32::from_be_bytes(b)
}

fn be_i16(buf: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([buf[at], buf[at + 1]])
}

impl BatchHeader {
    /// Reads the header at the start of `buf`.
    ///
    /// Only the 61 header bytes are needed; whether the rest of the batch is present is the
    /// caller's business (see [`BatchIter`]). Errors: [`BatchError::Truncated`] for fewer than 61
    /// bytes, [`BatchError::BadMagic`], and [`BatchError::BadLength`] for `batchLength < 49`.
    pub fn parse(buf: &[u8]) -> Result<BatchHeader, BatchError> {
        use offsets::*;
        if buf.len() < BATCH_HEADER_LEN {
            return Err(BatchError::Truncated { needed: BATCH_HEADER_LEN, available: buf.len() });
        }
        // The indexing below is in bounds: buf has at least 61 bytes.
        let magic = buf[MAGIC] as i8;
        if magic != MAGIC_V2 {
            return Err(BatchError::BadMagic(magic));
        }
        let batch_length = be_i32(buf, BATCH_LENGTH);
        if batch_length < MIN_BATCH_LENGTH {
            return Err(BatchError::BadLength(batch_length));
        }
        Ok(BatchHeader {
            base_offset: be_i64(buf, BASE_OFFSET),
            batch_length,
            partition_leader_epoch: be_i32(buf, PARTITION_LEADER_EPOCH),
            magic,
            crc: be_i32(buf, CRC) as u32,
            attributes: be_i16(buf, ATTRIBUTES),
            last_offset_delta: be_i32(buf, LAST_OFFSET_DELTA),
            base_timestamp: be_i64(buf, BASE_TIMESTAMP),
            max_timestamp: be_i64(buf, MAX_TIMESTAMP),
            producer_id: be_i64(buf, PRODUCER_ID),
            producer_epoch: be_i16(buf, PRODUCER_EPOCH),
            base_sequence: be_i32(buf, BASE_SEQUENCE),
            records_count: be_i32(buf, RECORDS_COUNT),
        })
    }

    /// Encodes the header exactly as [`BatchHeader::parse`] reads it (no validation, the `crc`
    /// field is written as is).
    pub fn to_bytes(&self) -> [u8; BATCH_HEADER_LEN] {
        use offsets::*;
        let mut b = [0u8; BATCH_HEADER_LEN];
        b[BASE_OFFSET..BASE_OFFSET + 8].copy_from_slice(&self.base_offset.to_be_bytes());
        b[BATCH_LENGTH..BATCH_LENGTH + 4].copy_from_slice(&self.batch_length.to_be_bytes());
        b[PARTITION_LEADER_EPOCH..PARTITION_LEADER_EPOCH + 4]
            .copy_from_slice(&self.partition_leader_epoch.to_be_bytes());
        b[MAGIC] = self.magic as u8;
        b[CRC..CRC + 4].copy_from_slice(&self.crc.to_be_bytes());
        b[ATTRIBUTES..ATTRIBUTES + 2].copy_from_slice(&self.attributes.to_be_bytes());
        b[LAST_OFFSET_DELTA..LAST_OFFSET_DELTA + 4].copy_from_slice(&self.last_offset_delta.to_be_bytes());
        b[BASE_TIMESTAMP..BASE_TIMESTAMP + 8].copy_from_slice(&self.base_timestamp.to_be_bytes());
        b[MAX_TIMESTAMP..MAX_TIMESTAMP + 8].copy_from_slice(&self.max_timestamp.to_be_bytes());
        b[PRODUCER_ID..PRODUCER_ID + 8].copy_from_slice(&self.producer_id.to_be_bytes());
        b[PRODUCER_EPOCH..PRODUCER_EPOCH + 2].copy_from_slice(&self.producer_epoch.to_be_bytes());
        b[BASE_SEQUENCE..BASE_SEQUENCE + 4].copy_from_slice(&self.base_sequence.to_be_bytes());
        b[RECORDS_COUNT..RECORDS_COUNT + 4].copy_from_slice(&self.records_count.to_be_bytes());
        b
    }

    /// Bytes the whole batch occupies: `batch_length + 12`. Never negative for a parsed header.
    pub fn total_size(&self) -> usize {
        // batch_length >= 49 for parsed headers; clamp anyway so a hand-built header cannot wrap.
        usize::try_from(self.batch_length).unwrap_or(0) + LOG_OVERHEAD
    }

    /// Offset of the last record: `base_offset + last_offset_delta` (saturating).
    pub fn last_offset(&self) -> i64 {
        self.base_offset.saturating_add(i64::from(self.last_offset_delta))
    }

    /// The compression codec; codes 5..=7 are an error.
    pub fn compression(&self) -> Result<Compression, BatchError> {
        Compression::from_id((self.attributes & COMPRESSION_MASK) as u8)
    }

    /// CreateTime or LogAppendTime.
    pub fn timestamp_type(&self) -> TimestampType {
        if self.attributes & TIMESTAMP_TYPE_MASK != 0 {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        }
    }

    /// Whether the batch belongs to a transaction.
    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_MASK != 0
    }

    /// Whether the batch holds a control record (transaction marker).
    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_MASK != 0
    }

    /// Whether an idempotent or transactional producer wrote the batch (`producer_id >= 0`).
    pub fn has_producer_id(&self) -> bool {
        self.producer_id > NO_PRODUCER_ID
    }
}

/// CRC32C of `batch[21..]`, the range the header's `crc` field covers.
///
/// `batch` must be exactly one batch (use [`BatchHeader::total_size`] to cut it); a slice
/// shorter than 21 bytes yields the CRC of nothing.
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(batch.get(offsets::ATTRIBUTES..).unwrap_or(&[]))
}

/// Whether the batch at the start of `batch` is complete and its stored CRC matches its content.
///
/// Bytes after the batch's `total_size` are ignored; a malformed or truncated batch is `false`.
pub fn verify_crc(batch: &[u8]) -> bool {
    let Ok(header) = BatchHeader::parse(batch) else {
        return false;
    };
    match batch.get(..header.total_size()) {
        Some(whole) => compute_crc(whole) == header.crc,
        None => false,
    }
}

fn header_mut(batch: &mut [u8]) -> Result<&mut [u8], BatchError> {
    let available = batch.len();
    batch.get_mut(..BATCH_HEADER_LEN).ok_or(BatchError::Truncated { needed: BATCH_HEADER_LEN, available })
}

/// Overwrites `baseOffset`. It lies outside the CRC range, so the CRC stays valid.
pub fn set_base_offset(batch: &mut [u8], base_offset: i64) -> Result<(), BatchError> {
    let h = header_mut(batch)?;
    h[offsets::BASE_OFFSET..offsets::BASE_OFFSET + 8].copy_from_slice(&base_offset.to_be_bytes());
    Ok(())
}

/// Overwrites `partitionLeaderEpoch`. It lies outside the CRC range, so the CRC stays valid.
pub fn set_partition_leader_epoch(batch: &mut [u8], epoch: i32) -> Result<(), BatchError> {
    let h = header_mut(batch)?;
    h[offsets::PARTITION_LEADER_EPOCH..offsets::PARTITION_LEADER_EPOCH + 4].copy_from_slice(&epoch.to_be_bytes());
    Ok(())
}

/// Stamps the batch with the broker's LogAppendTime, as Apache Kafka's `LogValidator` does for
/// v2 batches: [`set_max_timestamp`] with [`TimestampType::LogAppendTime`]. `baseTimestamp` and
/// the records' timestamp deltas stay untouched (readers take every record's timestamp from
/// `maxTimestamp` when the bit is set).
pub fn set_log_append_time(batch: &mut [u8], timestamp: i64) -> Result<(), BatchError> {
    set_max_timestamp(batch, TimestampType::LogAppendTime, timestamp)
}

/// Sets the batch's timestamp type and `maxTimestamp` and recomputes the CRC, as Kafka's
/// `DefaultRecordBatch.setMaxTimestamp`: the broker stores the largest record timestamp it
/// found (CreateTime), or its own clock (LogAppendTime), never what the producer claimed.
///
/// `batch` must hold the whole batch: [`BatchError::Truncated`] otherwise. When the batch
/// already carries that type and timestamp nothing is written (Kafka skips the CRC as well).
pub fn set_max_timestamp(batch: &mut [u8], kind: TimestampType, timestamp: i64) -> Result<(), BatchError> {
    let header = BatchHeader::parse(batch)?;
    let total = header.total_size();
    let available = batch.len();
    let batch = batch.get_mut(..total).ok_or(BatchError::Truncated { needed: total, available })?;
    if header.timestamp_type() == kind && header.max_timestamp == timestamp {
        return Ok(());
    }
    let attributes = match kind {
        TimestampType::LogAppendTime => header.attributes | TIMESTAMP_TYPE_MASK,
        TimestampType::CreateTime => header.attributes & !TIMESTAMP_TYPE_MASK,
    };
    batch[offsets::ATTRIBUTES..offsets::ATTRIBUTES + 2].copy_from_slice(&attributes.to_be_bytes());
    batch[offsets::MAX_TIMESTAMP..offsets::MAX_TIMESTAMP + 8].copy_from_slice(&timestamp.to_be_bytes());
    let crc = compute_crc(batch);
    batch[offsets::CRC..offsets::CRC + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(())
}

/// Iterates over a buffer of concatenated batches, yielding each header with the batch's bytes.
///
/// Ends (`None`) exactly at the end of the buffer. A malformed or partial batch yields one
/// `Err` — [`BatchError::Truncated`] for a trailing partial batch — after which the iterator is
/// exhausted. Callers choose the policy: the fetch path tolerates a trailing partial batch, the
/// produce path rejects it. [`BatchIter::position`] tells how many bytes were consumed by the
/// batches yielded so far (the valid prefix once an error was seen). CRCs are not checked.
#[derive(Clone, Debug)]
pub struct BatchIter<'a> {
    buf: &'a [u8],
    pos: usize,
    done: bool,
}

impl<'a> BatchIter<'a> {
    /// An iterator over the batches in `buf`.
    pub fn new(buf: &'a [u8]) -> BatchIter<'a> {
        BatchIter { buf, pos: 0, done: false }
    }

    /// Byte position of the next batch: the end of the last batch yielded.
    pub fn position(&self) -> usize {
        self.pos
    }
}

impl<'a> Iterator for BatchIter<'a> {
    type Item = Result<(BatchHeader, &'a [u8]), BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let rest = self.buf.get(self.pos..).unwrap_or(&[]);
        if rest.is_empty() {
            self.done = true;
            return None;
        }
        let header = match BatchHeader::parse(rest) {
            Ok(h) => h,
            Err(e) => {
                self.done = true;
                return Some(Err(e));
            }
        };
        let total = header.total_size();
        match rest.get(..total) {
            Some(batch) => {
                self.pos += total;
                Some(Ok((header, batch)))
            }
            None => {
                self.done = true;
                Some(Err(BatchError::Truncated { needed: total, available: rest.len() }))
            }
        }
    }
}

impl std::iter::FusedIterator for BatchIter<'_> {}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn put_varint(out: &mut Vec<u8>, v: i64) {
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        loop {
            if z < 0x80 {
                out.push(z as u8);
                return;
            }
            out.push((z as u8 & 0x7f) | 0x80);
            z >>= 7;
        }
    }

    /// Builds an uncompressed v2 batch with real record encoding and a valid CRC.
    fn build_batch(base_offset: i64, base_ts: i64, values: &[&[u8]]) -> Vec<u8> {
        let mut records = Vec::new();
        for (i, v) in values.iter().enumerate() {
            let mut body = Vec::new();
            body.push(0u8); // attributes
            put_varint(&mut body, i as i64); // timestamp delta
            put_varint(&mut body, i as i64); // offset delta
            put_varint(&mut body, -1); // null key
            put_varint(&mut body, v.len() as i64);
            body.extend_from_slice(v);
            put_varint(&mut body, 0); // headers
            put_varint(&mut records, body.len() as i64);
            records.extend_from_slice(&body);
        }
        let n = values.len() as i32;
        let header = BatchHeader {
            base_offset,
            batch_length: (BATCH_HEADER_LEN - LOG_OVERHEAD + records.len()) as i32,
            partition_leader_epoch: -1,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: (n - 1).max(0),
            base_timestamp: base_ts,
            max_timestamp: base_ts + i64::from((n - 1).max(0)),
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            records_count: n,
        };
        let mut out = header.to_bytes().to_vec();
        out.extend_from_slice(&records);
        let crc = compute_crc(&out);
        out[offsets::CRC..offsets::CRC + 4].copy_from_slice(&crc.to_be_bytes());
        out
    }

    #[test]
    fn golden_empty_header_bytes() {
        // A batch with no records: batchLength 49, everything else zero but magic.
        let mut b = [0u8; 61];
        b[8..12].copy_from_slice(&49i32.to_be_bytes());
        b[16] = 2;
        let h = BatchHeader::parse(&b).unwrap();
        assert_eq!(h.total_size(), 61);
        assert_eq!(h.to_bytes(), b);
        // CRC32C of 40 zero bytes.
        assert_eq!(compute_crc(&b), crc32c::crc32c(&[0u8; 40]));
    }

    #[test]
    fn parse_fields() {
        let b = build_batch(42, 1_000, &[b"a", b"bb", b"ccc"]);
        let h = BatchHeader::parse(&b).unwrap();
        assert_eq!(h.base_offset, 42);
        assert_eq!(h.last_offset(), 44);
        assert_eq!(h.records_count, 3);
        assert_eq!(h.total_size(), b.len());
        assert_eq!(h.max_timestamp, 1_002);
        assert_eq!(h.compression(), Ok(Compression::None));
        assert_eq!(h.timestamp_type(), TimestampType::CreateTime);
        assert!(!h.is_transactional() && !h.is_control() && !h.has_producer_id());
        assert!(verify_crc(&b));
    }

    #[test]
    fn parse_errors() {
        let mut b = build_batch(0, 0, &[b"x"]);
        assert_eq!(BatchHeader::parse(&b[..60]), Err(BatchError::Truncated { needed: 61, available: 60 }));
        b[16] = 1;
        assert_eq!(BatchHeader::parse(&b), Err(BatchError::BadMagic(1)));
        b[16] = 2;
        b[8..12].copy_from_slice(&48i32.to_be_bytes());
        assert_eq!(BatchHeader::parse(&b), Err(BatchError::BadLength(48)));
        b[8..12].copy_from_slice(&(-5i32).to_be_bytes());
        assert_eq!(BatchHeader::parse(&b), Err(BatchError::BadLength(-5)));
    }

    #[test]
    fn attribute_flags() {
        let mut h = BatchHeader::parse(&build_batch(0, 0, &[b"x"])).unwrap();
        for (id, c) in [
            (0, Compression::None),
            (1, Compression::Gzip),
            (2, Compression::Snappy),
            (3, Compression::Lz4),
            (4, Compression::Zstd),
        ] {
            h.attributes = id;
            assert_eq!(h.compression(), Ok(c));
            assert_eq!(c.id(), id as u8);
        }
        for id in 5..=7 {
            h.attributes = id;
            assert_eq!(h.compression(), Err(BatchError::UnknownCompression(id as u8)));
        }
        h.attributes = 0x08 | 0x10 | 0x20;
        assert_eq!(h.timestamp_type(), TimestampType::LogAppendTime);
        assert!(h.is_transactional() && h.is_control());
        h.producer_id = 0;
        assert!(h.has_producer_id());
    }

    #[test]
    fn crc_detects_corruption_and_ignores_offset_and_epoch() {
        let mut b = build_batch(0, 0, &[b"hello", b"world"]);
        set_base_offset(&mut b, 1234).unwrap();
        set_partition_leader_epoch(&mut b, 7).unwrap();
        assert!(verify_crc(&b));
        let h = BatchHeader::parse(&b).unwrap();
        assert_eq!((h.base_offset, h.partition_leader_epoch), (1234, 7));
        let last = b.len() - 1;
        b[last] ^= 1;
        assert!(!verify_crc(&b));
        assert!(!verify_crc(&b[..30]));
        assert_eq!(compute_crc(&b[..10]), crc32c::crc32c(&[]));
    }

    #[test]
    fn patchers_reject_short_buffers() {
        let mut short = [0u8; 10];
        assert!(set_base_offset(&mut short, 1).is_err());
        assert!(set_partition_leader_epoch(&mut short, 1).is_err());
        assert!(set_log_append_time(&mut short, 1).is_err());
        let mut b = build_batch(0, 0, &[b"abc"]);
        let n = b.len();
        assert!(matches!(set_log_append_time(&mut b[..n - 1], 5), Err(BatchError::Truncated { .. })));
    }

    #[test]
    fn log_append_time_sets_type_and_max_timestamp() {
        let mut b = build_batch(0, 100, &[b"abc", b"d"]);
        b[offsets::ATTRIBUTES + 1] |= 0x10; // transactional: must survive
        let crc = compute_crc(&b);
        b[offsets::CRC..offsets::CRC + 4].copy_from_slice(&crc.to_be_bytes());
        set_log_append_time(&mut b, 9_999).unwrap();
        let h = BatchHeader::parse(&b).unwrap();
        assert_eq!(h.timestamp_type(), TimestampType::LogAppendTime);
        assert_eq!(h.max_timestamp, 9_999);
        assert_eq!(h.base_timestamp, 100, "Kafka leaves baseTimestamp alone");
        assert!(h.is_transactional());
        assert!(verify_crc(&b));
        let before = b.clone();
        set_log_append_time(&mut b, 9_999).unwrap();
        assert_eq!(before, b);
    }

    #[test]
    fn iter_concatenation_and_trailing_partial() {
        let a = build_batch(0, 0, &[b"a"]);
        let b = build_batch(1, 0, &[b"b", b"c"]);
        let mut buf = a.clone();
        buf.extend_from_slice(&b);
        let got: Vec<_> = BatchIter::new(&buf).collect();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].as_ref().unwrap().1, &a[..]);
        assert_eq!(got[1].as_ref().unwrap().0.base_offset, 1);
        assert_eq!(BatchIter::new(&[]).count(), 0);

        let cut = &buf[..buf.len() - 3];
        let mut it = BatchIter::new(cut);
        assert!(it.next().unwrap().is_ok());
        assert_eq!(it.position(), a.len());
        assert!(matches!(it.next(), Some(Err(BatchError::Truncated { .. }))));
        assert!(it.next().is_none());
        assert_eq!(it.position(), a.len());
    }

    fn arb_header() -> impl Strategy<Value = BatchHeader> {
        (
            (any::<i64>(), MIN_BATCH_LENGTH..=i32::MAX, any::<i32>()),
            (any::<u32>(), any::<i16>(), any::<i32>(), any::<i64>()),
            (any::<i64>(), any::<i64>(), any::<i16>(), any::<i32>()),
            any::<i32>(),
        )
            .prop_map(|((bo, bl, ple), (crc, at, lod, bt), (mt, pid, pe, bs), rc)| BatchHeader {
                base_offset: bo,
                batch_length: bl,
                partition_leader_epoch: ple,
                magic: 2,
                crc,
                attributes: at,
                last_offset_delta: lod,
                base_timestamp: bt,
                max_timestamp: mt,
                producer_id: pid,
                producer_epoch: pe,
                base_sequence: bs,
                records_count: rc,
            })
    }

    proptest! {
        #[test]
        fn header_round_trip(h in arb_header()) {
            prop_assert_eq!(BatchHeader::parse(&h.to_bytes()), Ok(h));
        }

        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = BatchHeader::parse(&bytes);
            let _ = verify_crc(&bytes);
            let mut m = bytes.clone();
            let _ = set_log_append_time(&mut m, 1);
            for (h, b) in BatchIter::new(&bytes).flatten() {
                prop_assert_eq!(h.total_size(), b.len());
            }
        }

        #[test]
        fn crc_round_trip_and_single_bit_flip(
            values in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..8),
            flip in any::<prop::sample::Index>(),
        ) {
            let refs: Vec<&[u8]> = values.iter().map(|v| v.as_slice()).collect();
            let mut b = build_batch(5, 77, &refs);
            prop_assert!(verify_crc(&b));
            // Flip a bit in the CRC-covered range: always detected (CRC catches all 1-bit errors).
            let i = offsets::ATTRIBUTES + flip.index(b.len() - offsets::ATTRIBUTES);
            b[i] ^= 0x40;
            prop_assert!(!verify_crc(&b));
        }

        #[test]
        fn iter_random_concatenation_and_truncation(
            sizes in proptest::collection::vec(0usize..5, 0..6),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut buf = Vec::new();
            let mut ends = Vec::new();
            for (i, n) in sizes.iter().enumerate() {
                let vals: Vec<&[u8]> = std::iter::repeat_n(&b"v"[..], *n).collect();
                buf.extend_from_slice(&build_batch(i as i64 * 10, 0, &vals));
                ends.push(buf.len());
            }
            let all: Vec<_> = BatchIter::new(&buf).collect::<Result<_, _>>().unwrap();
            prop_assert_eq!(all.len(), sizes.len());
            let cut = cut.index(buf.len() + 1);
            let mut it = BatchIter::new(&buf[..cut]);
            let mut ok = 0;
            let mut err = 0;
            for item in it.by_ref() {
                match item {
                    Ok((_, b)) => { prop_assert!(verify_crc(b)); ok += 1; }
                    Err(e) => {
                        let truncated = matches!(e, BatchError::Truncated { .. });
                        prop_assert!(truncated);
                        err += 1;
                    }
                }
            }
            let whole = ends.iter().filter(|&&e| e <= cut).count();
            prop_assert_eq!(ok, whole);
            prop_assert_eq!(err, usize::from(!ends.contains(&cut) && cut != 0));
            prop_assert_eq!(it.position(), if whole == 0 { 0 } else { ends[whole - 1] });
        }
    }
}
