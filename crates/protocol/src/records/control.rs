//! Transaction markers: the control batches that commit or abort a producer's transaction in
//! a partition (Kafka's `EndTransactionMarker` and `ControlRecordType`).
//!
//! A marker is a batch with the control and transactional attribute bits, the producer's id
//! and epoch, base sequence -1, and one record whose key is `version i16 (0), type i16 (0 =
//! ABORT, 1 = COMMIT)` and whose value is `version i16 (0), coordinator_epoch i32`.

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};

use super::filter::{parse_records, records_section};
use super::RecordsError;
use crate::batch::BatchHeader;

/// What a marker says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndTxnMarker {
    /// COMMIT (`true`) or ABORT.
    pub commit: bool,
    /// The epoch of the transaction coordinator that wrote it.
    pub coordinator_epoch: i32,
}

/// One marker batch of `producer_id` at `producer_epoch`, its record stamped `timestamp`
/// (offset 0: the log assigns the real one).
pub fn encode_marker(producer_id: i64, producer_epoch: i16, marker: EndTxnMarker, timestamp: i64) -> Bytes {
    let mut key = Vec::with_capacity(4);
    key.extend_from_slice(&0i16.to_be_bytes());
    key.extend_from_slice(&i16::from(marker.commit).to_be_bytes());
    let mut value = Vec::with_capacity(6);
    value.extend_from_slice(&0i16.to_be_bytes());
    value.extend_from_slice(&marker.coordinator_epoch.to_be_bytes());
    let record = Record {
        transactional: true,
        control: true,
        delete_horizon: false,
        partition_leader_epoch: 0,
        producer_id,
        producer_epoch,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: -1,
        timestamp,
        key: Some(Bytes::from(key)),
        value: Some(Bytes::from(value)),
        headers: Default::default(),
    };
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions { version: 2, compression: Compression::None };
    // One uncompressed record into memory: nothing here can fail.
    match RecordBatchEncoder::encode(&mut buf, std::slice::from_ref(&record), &options) {
        Ok(()) => buf.freeze(),
        Err(_) => Bytes::new(),
    }
}

/// The marker in a control batch (`batch`, one whole v2 batch); an error when it is not one
/// (not a control batch, no record, or a key or value of another shape or version).
pub fn parse_marker(batch: &[u8]) -> Result<EndTxnMarker, RecordsError> {
    let header = BatchHeader::parse(batch)?;
    let malformed = |reason: &str| RecordsError::Malformed { index: 0, reason: reason.to_owned() };
    if !header.is_control() {
        return Err(malformed("not a control batch"));
    }
    let section = records_section(batch)?;
    let records = parse_records(&section, header.records_count.min(1))?;
    let record = records.first().ok_or_else(|| malformed("a control batch without a record"))?;
    let key = record.key.ok_or_else(|| malformed("a control record without a key"))?;
    let (commit, value) = match key {
        [0, 0, 0, 0] => (false, record.value),
        [0, 0, 0, 1] => (true, record.value),
        _ => return Err(malformed("a control record of another type or version")),
    };
    match value {
        Some([0, 0, e0, e1, e2, e3, ..]) => {
            Ok(EndTxnMarker { commit, coordinator_epoch: i32::from_be_bytes([*e0, *e1, *e2, *e3]) })
        }
        _ => Err(malformed("a transaction marker value of another shape or version")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::batch::verify_crc;

    #[test]
    fn markers_round_trip_with_kafka_attributes() {
        for commit in [true, false] {
            let marker = EndTxnMarker { commit, coordinator_epoch: 7 };
            let batch = encode_marker(42, 3, marker, 1_000);
            let h = BatchHeader::parse(&batch).unwrap();
            assert!(h.is_control() && h.is_transactional() && verify_crc(&batch));
            assert_eq!((h.producer_id, h.producer_epoch, h.base_sequence, h.records_count), (42, 3, -1, 1));
            assert_eq!(parse_marker(&batch).unwrap(), marker);
        }
    }

    #[test]
    fn other_batches_are_not_markers() {
        let data =
            crate::records::encode_key_values([(None, Some(Bytes::from_static(b"v")))], 0, Compression::None).unwrap();
        assert!(parse_marker(&data).is_err());
        assert!(parse_marker(&[0u8; 10]).is_err());
    }
}
