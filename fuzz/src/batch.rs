//! RecordBatch v2: `BatchIter`, `BatchHeader::parse`, `verify_crc`, the in-place patches and
//! record-level reading (which decompresses) on untrusted bytes.

use strata_protocol::batch::{
    compute_crc, offsets, set_base_offset, set_log_append_time, set_partition_leader_epoch, verify_crc, BatchHeader,
    BatchIter, TimestampType, BATCH_HEADER_LEN, LOG_OVERHEAD, MIN_BATCH_LENGTH,
};
use strata_protocol::batch::Compression;
use strata_protocol::records::{
    first_at_or_after, for_each_record, max_timestamp_record, recompress, validate_records, CompressionLevels,
    RecordPolicy, RecordPosition,
};

/// Header-level walk, what the produce and fetch paths do: iterate, parse, check CRCs.
/// Returns the whole batches found.
///
/// Asserts: each batch is exactly `total_size` bytes, contiguous with the previous one, and
/// re-parses to the same header, which re-encodes to the same 61 bytes; `verify_crc` agrees
/// with `compute_crc`; after an error the iterator is exhausted and `position` is the end of
/// the valid prefix; without an error the walk ends exactly at the end of the buffer.
pub fn walk_headers(buf: &[u8]) -> Vec<(BatchHeader, &[u8])> {
    let mut out = Vec::new();
    let mut it = BatchIter::new(buf);
    let mut pos = 0usize;
    let mut failed = false;
    while let Some(item) = it.next() {
        match item {
            Ok((h, batch)) => {
                assert_eq!(batch.len(), h.total_size());
                assert!(batch.len() >= BATCH_HEADER_LEN);
                assert_eq!(batch.as_ptr(), buf[pos..].as_ptr(), "batches are contiguous");
                assert_eq!(BatchHeader::parse(batch), Ok(h));
                assert_eq!(h.to_bytes()[..], batch[..BATCH_HEADER_LEN]);
                assert_eq!(verify_crc(batch), compute_crc(batch) == h.crc);
                let _ = (h.compression(), h.timestamp_type(), h.last_offset());
                let _ = (h.is_transactional(), h.is_control(), h.has_producer_id());
                pos += batch.len();
                assert_eq!(it.position(), pos);
                out.push((h, batch));
            }
            Err(e) => {
                assert_eq!(it.position(), pos);
                let _ = e.to_string();
                failed = true;
                break;
            }
        }
    }
    assert!(it.next().is_none(), "the iterator is fused");
    if !failed {
        assert_eq!(pos, buf.len(), "a clean walk ends at the end of the buffer");
    }
    out
}

/// Everything a batch view offers, on `data` as a buffer of concatenated batches.
///
/// Asserts (beyond [`walk_headers`]): record-level reading of a whole batch either fails or
/// visits exactly `recordsCount` records, and `first_at_or_after` / `max_timestamp_record`
/// agree with a plain scan; `set_base_offset` and `set_partition_leader_epoch` keep the CRC
/// verdict; `set_log_append_time` yields a batch whose CRC verifies and whose header changed in
/// just the timestamp type and `maxTimestamp`.
pub fn batches(data: &[u8]) {
    // Whatever the first bytes are, direct calls must not panic.
    let _ = BatchHeader::parse(data);
    let _ = verify_crc(data);
    let _ = for_each_record(data, |_| true);

    for (h, batch) in walk_headers(data) {
        records(&h, batch);
        patches(&h, batch);
    }
}

fn records(h: &BatchHeader, batch: &[u8]) {
    let targets = [h.base_timestamp, h.max_timestamp];
    let mut first: [Option<RecordPosition>; 2] = [None, None];
    let mut max: Option<RecordPosition> = None;
    let mut seen: i64 = 0;
    let log_append = h.timestamp_type() == TimestampType::LogAppendTime;
    let scan = for_each_record(batch, |p| {
        seen += 1;
        if log_append {
            assert_eq!(p.timestamp, h.max_timestamp);
        }
        for (t, f) in targets.iter().zip(first.iter_mut()) {
            if f.is_none() && p.timestamp >= *t {
                *f = Some(p);
            }
        }
        if max.is_none_or(|m| p.timestamp > m.timestamp) {
            max = Some(p);
        }
        true
    });
    match scan {
        Ok(()) => {
            assert_eq!(seen, i64::from(h.records_count.max(0)));
            for (t, f) in targets.iter().zip(first) {
                assert_eq!(first_at_or_after(batch, *t, i64::MIN).ok(), Some(f));
            }
            assert_eq!(max_timestamp_record(batch, i64::MIN).ok(), Some(max));
            validation(h, batch, max);
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

/// Produce validation of a batch whose records all read: either it is refused, or it is
/// accepted with the records' largest timestamp; recompression keeps the records readable.
fn validation(h: &BatchHeader, batch: &[u8], max: Option<RecordPosition>) {
    let policy =
        RecordPolicy { now_ms: 0, log_append_time: false, before_max_ms: i64::MAX, after_max_ms: i64::MAX, require_keys: false };
    if let Ok(v) = validate_records(batch, h, &policy) {
        if h.timestamp_type() == TimestampType::CreateTime {
            assert_eq!(v.max_timestamp, max.map_or(-1, |m| m.timestamp.max(-1)));
        }
        let limit = 4 << 20;
        if let Ok(out) = recompress(batch, Compression::Zstd, CompressionLevels::default(), limit) {
            assert!(out.len() <= limit);
            assert!(verify_crc(&out), "a recompressed batch carries its CRC");
            let mut seen = 0i64;
            for_each_record(&out, |_| {
                seen += 1;
                true
            })
            .expect("recompressed records read back");
            assert_eq!(seen, i64::from(h.records_count.max(0)));
        }
    }
}

fn patches(h: &BatchHeader, batch: &[u8]) {
    let crc_ok = verify_crc(batch);
    let mut b = batch.to_vec();
    set_base_offset(&mut b, h.base_offset.wrapping_add(1000)).expect("whole batch");
    set_partition_leader_epoch(&mut b, h.partition_leader_epoch.wrapping_add(1)).expect("whole batch");
    assert_eq!(verify_crc(&b), crc_ok, "offset and epoch lie outside the CRC");

    let ts = h.max_timestamp.wrapping_add(1);
    set_log_append_time(&mut b, ts).expect("whole batch");
    assert!(verify_crc(&b), "set_log_append_time recomputes the CRC");
    let after = BatchHeader::parse(&b).expect("still a batch");
    assert_eq!(after.timestamp_type(), TimestampType::LogAppendTime);
    let expected = BatchHeader {
        base_offset: h.base_offset.wrapping_add(1000),
        partition_leader_epoch: h.partition_leader_epoch.wrapping_add(1),
        attributes: after.attributes,
        max_timestamp: ts,
        crc: after.crc,
        ..*h
    };
    assert_eq!(after, expected);
    assert_eq!(after.attributes & !0x08, h.attributes & !0x08);
    // A second identical stamp is a no-op.
    let before = b.clone();
    set_log_append_time(&mut b, ts).expect("whole batch");
    assert_eq!(b, before);
}

/// A copy of `data` where every batch header found by following `batchLength` (valid or not)
/// gets the CRC32C of its bytes `[21, end)` (end clamped to the buffer), so parsing gets past
/// the CRC check and into records and decompression.
pub fn fix_crcs(data: &[u8]) -> Vec<u8> {
    let mut out = data.to_vec();
    let mut pos = 0usize;
    while out.len() - pos >= BATCH_HEADER_LEN {
        let at = pos + offsets::BATCH_LENGTH;
        let len = i32::from_be_bytes([out[at], out[at + 1], out[at + 2], out[at + 3]]);
        if len < MIN_BATCH_LENGTH {
            break;
        }
        let total = len as usize + LOG_OVERHEAD;
        let end = pos.saturating_add(total).min(out.len());
        let crc = crc32c::crc32c(&out[pos + offsets::ATTRIBUTES..end]);
        out[pos + offsets::CRC..pos + offsets::CRC + 4].copy_from_slice(&crc.to_be_bytes());
        if end < pos + total {
            break;
        }
        pos = end;
    }
    out
}
