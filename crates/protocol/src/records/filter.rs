//! Rewriting a batch with some of its records left out: what the log cleaner does to each
//! batch of a compacted log (Kafka's `MemoryRecords.filterTo`).
//!
//! The rewritten batch keeps the original's base offset, last offset (so the producer's last
//! sequence survives), producer id, epoch, base sequence, partition leader epoch, flags and
//! codec; only the records count, the records, `maxTimestamp`, the CRC and, when a delete
//! horizon is set (KIP-534), `baseTimestamp` change. A record kept as it was is copied byte
//! for byte: its offset and timestamp deltas are relative to the unchanged base offset and
//! base timestamp. Setting a delete horizon moves the base timestamp to the horizon, so every
//! kept record's timestamp delta is written again (its timestamp does not change).

use std::borrow::Cow;
use std::io::Read;

use crate::batch::{BatchHeader, Compression, TimestampType, BATCH_HEADER_LEN, LOG_OVERHEAD};

use super::codec::{compress_records, decompressing_reader, finish_batch};
use super::scan::{malformed, read_varint, read_varlong, SliceSource, Source};
use super::{CompressionLevels, RecompressError, RecordsError, MAX_RECORDS_BYTES};

/// Attribute bit 6: the batch's `baseTimestamp` is the delete horizon of its tombstones
/// and transaction markers (KIP-534, Kafka's `DefaultRecordBatch.DELETE_HORIZON_FLAG_MASK`).
pub const DELETE_HORIZON_FLAG: i16 = 0x40;

/// The delete horizon of a batch (ms since the epoch) when it carries one (KIP-534).
pub fn delete_horizon(header: &BatchHeader) -> Option<i64> {
    (header.attributes & DELETE_HORIZON_FLAG != 0).then_some(header.base_timestamp)
}

/// One record of a batch's (uncompressed) records section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawRecord<'a> {
    /// The record's bytes, from its length prefix to its last header.
    pub bytes: &'a [u8],
    /// `offsetDelta`.
    pub offset_delta: i32,
    /// `timestampDelta`.
    pub timestamp_delta: i64,
    /// The key; `None` for a null key.
    pub key: Option<&'a [u8]>,
    /// The value; `None` for a null value (a tombstone).
    pub value: Option<&'a [u8]>,
    /// Whether the value is null (a tombstone).
    pub null_value: bool,
    /// Where the attributes byte (the first after the length prefix) is in `bytes`.
    attributes_at: usize,
    /// Where the fields after `timestampDelta` start in `bytes`.
    after_timestamp: usize,
    /// Where the headers count is in `bytes`.
    headers_at: usize,
}

impl<'a> RawRecord<'a> {
    /// The record's offset in a batch based at `base_offset`.
    pub fn offset(&self, base_offset: i64) -> i64 {
        base_offset.saturating_add(i64::from(self.offset_delta))
    }

    /// The record's headers in order, as (key, value; `None` for a null value). Kafka's
    /// headers are a list: a key may repeat. [`parse_records`] checked their structure.
    pub fn headers(&self) -> Result<Vec<Header<'a>>, RecordsError> {
        let mut r = Reader::new(self.bytes, self.headers_at, 0);
        let count = r.varint()?;
        let mut out = Vec::with_capacity(usize::try_from(count).unwrap_or(0).min(self.bytes.len() / 2));
        for _ in 0..count.max(0) {
            let key = r.bytes()?.unwrap_or_default();
            out.push((key, r.bytes()?));
        }
        Ok(out)
    }
}

/// A record header: (key, value; `None` for a null value).
pub type Header<'a> = (&'a [u8], Option<&'a [u8]>);

/// One record for [`encode_batch`].
#[derive(Debug, Clone, Copy)]
pub struct NewRecord<'a> {
    /// Milliseconds since the epoch (CreateTime).
    pub timestamp: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    /// In order; a key may repeat (Kafka's headers are a list).
    pub headers: &'a [Header<'a>],
}

/// A RecordBatch v2 of a plain producer (no producer id, CreateTime) at base offset 0 holding
/// `records` in order, compressed with `codec`: what a client sends in a Produce request.
/// At most [`MAX_RECORDS_BYTES`] ([`RecompressError::TooLarge`]).
pub fn encode_batch(records: &[NewRecord<'_>], codec: Compression) -> Result<Vec<u8>, RecompressError> {
    let base_timestamp = records.first().map_or(-1, |r| r.timestamp);
    let mut section = Vec::new();
    let mut max_timestamp = base_timestamp;
    let put_bytes = |out: &mut Vec<u8>, b: Option<&[u8]>| match b {
        None => put_varint(out, -1),
        Some(b) => {
            put_varint(out, i32::try_from(b.len()).unwrap_or(i32::MAX));
            out.extend_from_slice(b);
        }
    };
    for (i, r) in records.iter().enumerate() {
        max_timestamp = max_timestamp.max(r.timestamp);
        let mut body = vec![0u8]; // attributes: none are defined for records
        put_varlong(&mut body, r.timestamp.saturating_sub(base_timestamp));
        put_varint(&mut body, i32::try_from(i).unwrap_or(i32::MAX));
        put_bytes(&mut body, r.key);
        put_bytes(&mut body, r.value);
        put_varint(&mut body, i32::try_from(r.headers.len()).unwrap_or(i32::MAX));
        for (k, v) in r.headers {
            put_bytes(&mut body, Some(k));
            put_bytes(&mut body, *v);
        }
        put_varint(&mut section, i32::try_from(body.len()).unwrap_or(i32::MAX));
        section.extend_from_slice(&body);
    }
    let count = i32::try_from(records.len()).unwrap_or(i32::MAX);
    let header = BatchHeader {
        base_offset: 0,
        batch_length: 0,
        partition_leader_epoch: -1,
        magic: 2,
        crc: 0,
        attributes: 0,
        last_offset_delta: count.saturating_sub(1).max(0),
        base_timestamp,
        max_timestamp,
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
        records_count: count,
    };
    let limit = usize::try_from(MAX_RECORDS_BYTES).unwrap_or(usize::MAX);
    let out = compress_records(&mut &section[..], codec, CompressionLevels::default(), limit, section.len())?;
    finish_batch(out, header, codec, limit)
}

/// The records section of `batch`, decompressed when it is compressed (at most
/// [`MAX_RECORDS_BYTES`]).
pub fn records_section(batch: &[u8]) -> Result<Cow<'_, [u8]>, RecordsError> {
    records_section_within(batch, MAX_RECORDS_BYTES)?.ok_or(RecordsError::Inflated)
}

/// [`records_section`], or `None` when the section is (or decompresses to) more than `limit`
/// bytes: nothing larger is ever held in memory.
pub fn records_section_within(batch: &[u8], limit: u64) -> Result<Option<Cow<'_, [u8]>>, RecordsError> {
    let header = BatchHeader::parse(batch)?;
    let end = header.total_size().min(batch.len());
    let body = &batch[BATCH_HEADER_LEN.min(end)..end];
    let limit = limit.min(MAX_RECORDS_BYTES);
    match header.compression()? {
        Compression::None if body.len() as u64 > limit => Ok(None),
        Compression::None => Ok(Some(Cow::Borrowed(body))),
        codec => {
            let mut out = Vec::with_capacity(body.len().saturating_mul(2).min(limit as usize));
            decompressing_reader(codec, body)?
                .take(limit + 1)
                .read_to_end(&mut out)
                .map_err(|e| RecordsError::Decompress(e.to_string()))?;
            if out.len() as u64 > limit {
                return Ok(None);
            }
            Ok(Some(Cow::Owned(out)))
        }
    }
}

/// Splits a records section into its `count` records, checking each one's structure.
pub fn parse_records(section: &[u8], count: i32) -> Result<Vec<RawRecord<'_>>, RecordsError> {
    let mut out = Vec::with_capacity(usize::try_from(count).unwrap_or(0).min(section.len() / 7 + 1));
    let mut pos = 0usize;
    for index in 0..count.max(0) {
        let mut r = Reader::new(section, pos, index);
        let length = r.varint()?;
        let body_start = r.pos();
        let end = usize::try_from(length)
            .ok()
            .and_then(|l| body_start.checked_add(l))
            .filter(|e| *e <= section.len())
            .ok_or_else(|| malformed(index, format!("Invalid record size {length}")))?;
        r.byte()?; // attributes
        let timestamp_delta = r.varlong()?;
        let after_timestamp = r.pos() - pos;
        let offset_delta = r.varint()?;
        let key = r.bytes()?;
        let value = r.bytes()?;
        let null_value = value.is_none();
        let headers_at = r.pos() - pos;
        let headers = r.varint()?;
        if headers < 0 {
            return Err(malformed(index, format!("Found invalid number of record headers {headers}")));
        }
        for _ in 0..headers {
            if r.bytes()?.is_none() {
                return Err(malformed(index, "Invalid negative header key size"));
            }
            r.bytes()?;
        }
        if r.pos() != end {
            return Err(malformed(index, "Invalid record size: the fields do not fill the record"));
        }
        let attributes_at = body_start - pos;
        out.push(RawRecord {
            bytes: &section[pos..end],
            offset_delta,
            timestamp_delta,
            key,
            value,
            null_value,
            attributes_at,
            after_timestamp,
            headers_at,
        });
        pos = end;
    }
    if pos != section.len() {
        return Err(malformed(count, "Incorrect declared batch size, records still remaining in file"));
    }
    Ok(out)
}

/// The batch `header` describes, holding only `kept` (records of that batch, in order),
/// compressed with the batch's codec. With `delete_horizon`, the batch is marked with it
/// (KIP-534). `max_size` bounds the result ([`RecompressError::TooLarge`]).
pub fn rebuild_batch(
    header: &BatchHeader,
    kept: &[RawRecord<'_>],
    delete_horizon: Option<i64>,
    levels: CompressionLevels,
    max_size: usize,
) -> Result<Vec<u8>, RecompressError> {
    let codec = header.compression().map_err(RecordsError::Header)?;
    let base_timestamp = delete_horizon.unwrap_or(header.base_timestamp);
    let mut section = Vec::with_capacity(kept.iter().map(|r| r.bytes.len() + 4).sum());
    let mut max_timestamp = i64::MIN;
    for r in kept {
        let timestamp = header.base_timestamp.saturating_add(r.timestamp_delta);
        max_timestamp = max_timestamp.max(timestamp);
        if base_timestamp == header.base_timestamp {
            section.extend_from_slice(r.bytes);
        } else {
            let mut body = Vec::with_capacity(r.bytes.len() + 8);
            body.push(r.bytes[r.attributes_at]);
            put_varlong(&mut body, timestamp.saturating_sub(base_timestamp));
            body.extend_from_slice(&r.bytes[r.after_timestamp..]);
            put_varint(&mut section, i32::try_from(body.len()).unwrap_or(i32::MAX));
            section.extend_from_slice(&body);
        }
    }
    let max_timestamp = match header.timestamp_type() {
        TimestampType::LogAppendTime => header.max_timestamp,
        TimestampType::CreateTime if kept.is_empty() => header.max_timestamp,
        TimestampType::CreateTime => max_timestamp,
    };
    let mut attributes = header.attributes;
    if delete_horizon.is_some() {
        attributes |= DELETE_HORIZON_FLAG;
    }
    let rebuilt = BatchHeader {
        attributes,
        base_timestamp,
        max_timestamp,
        records_count: i32::try_from(kept.len()).unwrap_or(i32::MAX),
        ..*header
    };
    if kept.is_empty() {
        // Kafka's `writeEmptyHeader`: no records section at all, whatever the codec.
        let mut out = vec![0; BATCH_HEADER_LEN];
        let empty = BatchHeader { attributes: attributes & !0x07, ..rebuilt };
        out[..BATCH_HEADER_LEN].copy_from_slice(&empty.to_bytes());
        return finish_batch(out, empty, Compression::None, max_size.max(BATCH_HEADER_LEN));
    }
    let out = compress_records(&mut &section[..], codec, levels, max_size, section.len())?;
    finish_batch(out, rebuilt, codec, max_size)
}

/// Size in bytes of a batch with no records ([`rebuild_batch`] with nothing kept).
pub const EMPTY_BATCH_SIZE: usize = BATCH_HEADER_LEN;
const _: () = assert!(EMPTY_BATCH_SIZE >= LOG_OVERHEAD);

fn put_varlong(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn put_varint(out: &mut Vec<u8>, v: i32) {
    put_varlong(out, i64::from(v));
}

/// A record's fields read in place from an uncompressed records section, with the scan's
/// varint decoding.
struct Reader<'a> {
    src: SliceSource<'a>,
    index: i32,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], pos: usize, index: i32) -> Self {
        Reader { src: SliceSource { buf, pos }, index }
    }

    fn premature(&self) -> RecordsError {
        malformed(self.index, "premature end of the record")
    }

    fn pos(&self) -> usize {
        self.src.pos
    }

    fn byte(&mut self) -> Result<u8, RecordsError> {
        self.src.byte()?.ok_or_else(|| self.premature())
    }

    fn varlong(&mut self) -> Result<i64, RecordsError> {
        read_varlong(&mut self.src, self.index)?.ok_or_else(|| self.premature())
    }

    fn varint(&mut self) -> Result<i32, RecordsError> {
        read_varint(&mut self.src, self.index)?.ok_or_else(|| self.premature())
    }

    /// A length-prefixed field; `None` when null (negative length).
    fn bytes(&mut self) -> Result<Option<&'a [u8]>, RecordsError> {
        let len = self.varint()?;
        let Ok(len) = usize::try_from(len) else { return Ok(None) };
        let start = self.src.pos;
        if !self.src.skip(len)? {
            return Err(self.premature());
        }
        Ok(Some(&self.src.buf[start..start + len]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::verify_crc;
    use bytes::Bytes;

    fn batch(codec: kafka_protocol::records::Compression, entries: &[(&str, Option<&str>)]) -> Vec<u8> {
        let e = entries.iter().map(|(k, v)| (Some(Bytes::from(k.to_string())), v.map(|v| Bytes::from(v.to_string()))));
        super::super::encode_key_values(e, 1_000, codec).unwrap().to_vec()
    }

    fn keys_values(b: &[u8]) -> Vec<(i64, String, Option<String>, i64)> {
        let h = BatchHeader::parse(b).unwrap();
        let section = records_section(b).unwrap();
        parse_records(&section, h.records_count)
            .unwrap()
            .iter()
            .map(|r| {
                let rec = (
                    String::from_utf8(r.key.unwrap().to_vec()).unwrap(),
                    r.value.map(|v| String::from_utf8(v.to_vec()).unwrap()),
                );
                (r.offset(h.base_offset), rec.0, rec.1, h.base_timestamp + r.timestamp_delta)
            })
            .collect()
    }

    #[test]
    fn kept_records_keep_offsets_timestamps_and_the_last_offset_in_every_codec() {
        use kafka_protocol::records::Compression as C;
        for codec in [C::None, C::Gzip, C::Snappy, C::Lz4, C::Zstd] {
            let original = batch(codec, &[("a", Some("1")), ("b", Some("2")), ("a", None), ("c", Some("3"))]);
            let h = BatchHeader::parse(&original).unwrap();
            let section = records_section(&original).unwrap();
            let records = parse_records(&section, h.records_count).unwrap();
            let kept: Vec<_> = records.iter().copied().filter(|r| r.key != Some(b"c")).skip(1).collect();
            for horizon in [None, Some(99_000)] {
                let rebuilt = rebuild_batch(&h, &kept, horizon, CompressionLevels::default(), 1 << 20).unwrap();
                let nh = BatchHeader::parse(&rebuilt).unwrap();
                assert!(verify_crc(&rebuilt), "{codec:?}");
                assert_eq!(nh.total_size(), rebuilt.len());
                assert_eq!((nh.base_offset, nh.last_offset_delta, nh.records_count), (h.base_offset, 3, 2));
                assert_eq!(nh.compression().unwrap(), h.compression().unwrap());
                assert_eq!(delete_horizon(&nh), horizon);
                let got = keys_values(&rebuilt);
                assert_eq!(
                    got,
                    vec![(1, "b".into(), Some("2".into()), 1_000), (2, "a".into(), None, 1_000)],
                    "{codec:?} {horizon:?}"
                );
                // The scan used on the produce path and by ListOffsets reads it too.
                let mut n = 0;
                super::super::for_each_record(&rebuilt, |p| {
                    assert_eq!(p.timestamp, 1_000);
                    n += 1;
                    true
                })
                .unwrap();
                assert_eq!(n, 2);
            }
        }
    }

    #[test]
    fn nothing_kept_leaves_an_empty_batch_with_the_producer_fields() {
        let original = batch(kafka_protocol::records::Compression::Lz4, &[("a", Some("1")), ("b", Some("2"))]);
        let h = BatchHeader::parse(&original).unwrap();
        let rebuilt = rebuild_batch(&h, &[], None, CompressionLevels::default(), 1 << 20).unwrap();
        let nh = BatchHeader::parse(&rebuilt).unwrap();
        assert_eq!(rebuilt.len(), EMPTY_BATCH_SIZE);
        assert!(verify_crc(&rebuilt));
        assert_eq!((nh.records_count, nh.last_offset_delta, nh.producer_id), (0, 1, h.producer_id));
    }

    #[test]
    fn encoded_batches_keep_repeated_headers_in_every_codec() {
        let headers: [(&[u8], Option<&[u8]>); 3] = [(b"h", Some(b"1")), (b"h", Some(b"2")), (b"n", None)];
        let records = [
            NewRecord { timestamp: 1_000, key: Some(b"k"), value: Some(b"v"), headers: &headers },
            NewRecord { timestamp: 1_005, key: None, value: None, headers: &[] },
        ];
        for codec in [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd] {
            let batch = encode_batch(&records, codec).unwrap();
            let header = BatchHeader::parse(&batch).unwrap();
            assert!(crate::batch::verify_crc(&batch), "{codec:?}");
            assert_eq!((header.records_count, header.last_offset_delta, header.max_timestamp), (2, 1, 1_005));
            let section = records_section(&batch).unwrap();
            let parsed = parse_records(&section, header.records_count).unwrap();
            assert_eq!(parsed[0].headers().unwrap(), headers.to_vec(), "{codec:?}");
            assert_eq!((parsed[0].key, parsed[0].value), (Some(&b"k"[..]), Some(&b"v"[..])));
            assert_eq!((parsed[1].key, parsed[1].value, parsed[1].timestamp_delta), (None, None, 5));
            assert!(parsed[1].headers().unwrap().is_empty());
        }
    }

    #[test]
    fn damaged_sections_are_errors_not_panics() {
        let original = batch(kafka_protocol::records::Compression::None, &[("a", Some("1")), ("b", Some("2"))]);
        let h = BatchHeader::parse(&original).unwrap();
        let section = records_section(&original).unwrap().to_vec();
        for cut in 0..section.len() {
            assert!(parse_records(&section[..cut], h.records_count).is_err());
        }
        for i in 0..section.len() {
            for bit in 0..8 {
                let mut bad = section.clone();
                bad[i] ^= 1 << bit;
                let _ = parse_records(&bad, h.records_count);
            }
        }
        assert!(parse_records(&section, h.records_count + 1).is_err());
    }
}
