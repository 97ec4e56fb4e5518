//! Walks the records of one RecordBatch v2, checking each record's structure as Kafka's
//! `DefaultRecord.readFrom` does, with no allocation per record.
//!
//! Record layout (varints are zigzag, as in Kafka's `ByteUtils.readVarint`):
//!
//! ```text
//! length: varint            bytes after this field
//! attributes: int8
//! timestampDelta: varlong
//! offsetDelta: varint
//! keyLength: varint         -1 for a null key
//! key: byte[keyLength]
//! valueLength: varint       -1 for a null value
//! value: byte[valueLength]
//! headerCount: varint
//! headers: [headerKeyLength: varint (>= 0), headerKey, headerValueLength: varint, headerValue]
//! ```
//!
//! Uncompressed batches are read in place from the slice; compressed ones through a streaming
//! decompressor and a fixed 32 KiB buffer. Memory is bounded by the codec, not by what the
//! records claim: the decoder's own window (up to 4 MiB per LZ4 block, up to the zstd window a
//! frame declares, one whole raw snappy block of at most 22x its compressed size) plus the
//! buffer. Time is bounded by the decompressed bytes, at most [`MAX_RECORDS_BYTES`].

use std::io::{BufRead, BufReader, Read};
use std::ops::ControlFlow;

use crate::batch::{BatchHeader, Compression, TimestampType, BATCH_HEADER_LEN};

use super::codec::decompressing_reader;
use super::{RecordsError, MAX_RECORDS_BYTES};

/// One record of a batch, as much of it as the broker's checks need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordView {
    /// Position in the batch, from 0.
    pub index: i32,
    /// `offsetDelta` as written (Kafka's clients write `index`).
    pub offset_delta: i32,
    /// The record's timestamp: `baseTimestamp + timestampDelta`, or the batch's
    /// `maxTimestamp` when the batch carries LogAppendTime.
    pub timestamp: i64,
    /// Key length; negative (written as -1) for a null key.
    pub key_len: i32,
    /// Value length; negative (written as -1) for a null value (a tombstone).
    pub value_len: i32,
}

impl RecordView {
    /// Whether the record has a key (a null key has a negative length).
    pub fn has_key(&self) -> bool {
        self.key_len >= 0
    }

    /// The record's offset once its batch starts at `base_offset`.
    pub fn offset(&self, base_offset: i64) -> i64 {
        base_offset.saturating_add(i64::from(self.offset_delta))
    }
}

/// Bytes to read records from: a slice, or a decompressing stream.
pub(super) trait Source {
    /// The next byte; `Ok(None)` at the end.
    fn byte(&mut self) -> Result<Option<u8>, RecordsError>;
    /// Skips `n` bytes; `Ok(false)` if fewer remain.
    fn skip(&mut self, n: usize) -> Result<bool, RecordsError>;
    /// Bytes consumed so far.
    fn position(&self) -> u64;
    /// Whether every byte has been consumed.
    fn at_end(&mut self) -> Result<bool, RecordsError>;
}

pub(super) struct SliceSource<'a> {
    pub(super) buf: &'a [u8],
    pub(super) pos: usize,
}

impl Source for SliceSource<'_> {
    #[inline]
    fn byte(&mut self) -> Result<Option<u8>, RecordsError> {
        let b = self.buf.get(self.pos).copied();
        self.pos += usize::from(b.is_some());
        Ok(b)
    }

    #[inline]
    fn skip(&mut self, n: usize) -> Result<bool, RecordsError> {
        if self.buf.len() - self.pos < n {
            self.pos = self.buf.len();
            return Ok(false);
        }
        self.pos += n;
        Ok(true)
    }

    fn position(&self) -> u64 {
        self.pos as u64
    }

    fn at_end(&mut self) -> Result<bool, RecordsError> {
        Ok(self.pos == self.buf.len())
    }
}

/// Uncompressed bytes buffered from the decompressor at a time.
const STREAM_BUFFER: usize = 32 * 1024;

struct StreamSource<R: Read> {
    reader: BufReader<R>,
    pos: u64,
}

fn decompress_error(e: std::io::Error) -> RecordsError {
    RecordsError::Decompress(e.to_string())
}

impl<R: Read> Source for StreamSource<R> {
    #[inline]
    fn byte(&mut self) -> Result<Option<u8>, RecordsError> {
        if self.pos >= MAX_RECORDS_BYTES {
            return Err(RecordsError::Inflated);
        }
        let b = self.reader.fill_buf().map_err(decompress_error)?.first().copied();
        if b.is_some() {
            self.reader.consume(1);
            self.pos += 1;
        }
        Ok(b)
    }

    fn skip(&mut self, mut n: usize) -> Result<bool, RecordsError> {
        if self.pos.saturating_add(n as u64) > MAX_RECORDS_BYTES {
            return Err(RecordsError::Inflated);
        }
        while n > 0 {
            let available = self.reader.fill_buf().map_err(decompress_error)?.len();
            if available == 0 {
                return Ok(false);
            }
            let take = available.min(n);
            self.reader.consume(take);
            self.pos += take as u64;
            n -= take;
        }
        Ok(true)
    }

    fn position(&self) -> u64 {
        self.pos
    }

    fn at_end(&mut self) -> Result<bool, RecordsError> {
        Ok(self.reader.fill_buf().map_err(decompress_error)?.is_empty())
    }
}

/// Calls `visit` with every record of `batch` (one whole v2 batch), in order, until it
/// returns `Break`. Each record's structure is checked on the way ([`RecordsError::Malformed`]
/// with Kafka's wording): its length matches its fields, key, value and header lengths are
/// sane, and, when every record was visited, exactly `recordsCount` records fill the section.
pub fn scan_records(batch: &[u8], visit: impl FnMut(&RecordView) -> ControlFlow<()>) -> Result<(), RecordsError> {
    let header = BatchHeader::parse(batch)?;
    let end = header.total_size().min(batch.len());
    let body = &batch[BATCH_HEADER_LEN.min(end)..end];
    match header.compression()? {
        Compression::None => walk(&header, SliceSource { buf: body, pos: 0 }, visit),
        codec => {
            let reader = decompressing_reader(codec, body)?;
            let source = StreamSource { reader: BufReader::with_capacity(STREAM_BUFFER, reader), pos: 0 };
            walk(&header, source, visit)
        }
    }
}

fn walk(
    header: &BatchHeader,
    mut source: impl Source,
    mut visit: impl FnMut(&RecordView) -> ControlFlow<()>,
) -> Result<(), RecordsError> {
    let log_append = header.timestamp_type() == TimestampType::LogAppendTime;
    for index in 0..header.records_count.max(0) {
        let mut record = read_record(&mut source, header, index)?;
        if log_append {
            record.timestamp = header.max_timestamp;
        }
        if visit(&record).is_break() {
            return Ok(());
        }
    }
    if !source.at_end()? {
        return Err(malformed(header.records_count, "Incorrect declared batch size, records still remaining in file"));
    }
    Ok(())
}

pub(super) fn malformed(index: i32, reason: impl Into<String>) -> RecordsError {
    RecordsError::Malformed { index, reason: reason.into() }
}

fn read_record(s: &mut impl Source, header: &BatchHeader, index: i32) -> Result<RecordView, RecordsError> {
    let premature = || malformed(index, "Incorrect declared batch size, premature EOF reached");
    let length = read_varint(s, index)?.ok_or_else(premature)?;
    if length < 0 {
        return Err(malformed(index, format!("Invalid record size: negative size {length}")));
    }
    let start = s.position();
    let _attributes = s.byte()?.ok_or_else(premature)?;
    let timestamp_delta = read_varlong(s, index)?.ok_or_else(premature)?;
    let offset_delta = read_varint(s, index)?.ok_or_else(premature)?;
    let key_len = read_length(s, index)?;
    let value_len = read_length(s, index)?;
    let header_count = read_varint(s, index)?.ok_or_else(premature)?;
    if header_count < 0 {
        return Err(malformed(index, format!("Found invalid number of record headers {header_count}")));
    }
    let length = length as u64;
    for _ in 0..header_count {
        if s.position() - start >= length {
            // Every header takes at least two bytes: more headers than bytes left.
            return Err(malformed(
                index,
                format!("Found invalid number of record headers. {header_count} is larger than the remaining size of the record"),
            ));
        }
        let key = read_varint(s, index)?.ok_or_else(premature)?;
        if key < 0 {
            return Err(malformed(index, format!("Invalid negative header key size {key}")));
        }
        if !s.skip(key as usize)? {
            return Err(premature());
        }
        read_length(s, index)?;
    }
    let read = s.position() - start;
    if read != length {
        return Err(malformed(
            index,
            format!("Invalid record size: expected to read {length} bytes in record payload, but instead read {read}"),
        ));
    }
    let timestamp = header
        .base_timestamp
        .checked_add(timestamp_delta)
        .ok_or_else(|| malformed(index, "timestamp delta overflows"))?;
    Ok(RecordView { index, offset_delta, timestamp, key_len, value_len })
}

/// A length-prefixed field whose bytes are skipped; returns the length. Any negative length
/// is a null field, as Kafka's `Utils.readBytes` reads it (the record's size check then
/// catches a record whose lengths do not add up).
fn read_length(s: &mut impl Source, index: i32) -> Result<i32, RecordsError> {
    let len = read_varint(s, index)?
        .ok_or_else(|| malformed(index, "Incorrect declared batch size, premature EOF reached"))?;
    if len > 0 && !s.skip(len as usize)? {
        return Err(malformed(index, "Incorrect declared batch size, premature EOF reached"));
    }
    Ok(len)
}

/// An unsigned LEB128 of at most `max_bytes` bytes; `Ok(None)` at a clean end of input.
#[inline]
fn read_unsigned(s: &mut impl Source, index: i32, max_bytes: u32) -> Result<Option<u64>, RecordsError> {
    let mut value = 0u64;
    for i in 0..max_bytes {
        let Some(b) = s.byte()? else {
            return if i == 0 { Ok(None) } else { Err(malformed(index, "varint ends early")) };
        };
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(Some(value));
        }
    }
    Err(malformed(index, "varint is too long"))
}

#[inline]
pub(super) fn read_varlong(s: &mut impl Source, index: i32) -> Result<Option<i64>, RecordsError> {
    Ok(read_unsigned(s, index, 10)?.map(|raw| ((raw >> 1) as i64) ^ -((raw & 1) as i64)))
}

#[inline]
pub(super) fn read_varint(s: &mut impl Source, index: i32) -> Result<Option<i32>, RecordsError> {
    match read_unsigned(s, index, 5)? {
        None => Ok(None),
        Some(raw) => {
            let raw = u32::try_from(raw).map_err(|_| malformed(index, "varint is out of range"))?;
            Ok(Some(((raw >> 1) as i32) ^ -((raw & 1) as i32)))
        }
    }
}
