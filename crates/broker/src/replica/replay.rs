//! Reading a whole partition back, as a coordinator does when it comes to lead the partition of
//! its internal topic (`__consumer_offsets`, `__transaction_state`).

use strata_protocol::kafka_protocol::records::{Record, RecordBatchDecoder};

use super::{Partition, ReadBound};
use crate::BrokerError;

/// Hands every record of `partition`, from its log start to its log end, to `f` in offset
/// order, reading `read_bytes` at a time. Up to the log end: the replica has just become the
/// leader, and what it holds beyond its high watermark will be committed (a leader never
/// truncates its own log). Control records (transaction markers) are handed over too.
/// `KAFKA_STORAGE_ERROR`-kind errors for a read that fails or a batch that does not decode.
pub fn replay_log(
    partition: &Partition,
    read_bytes: usize,
    mut f: impl FnMut(&Record) -> Result<(), BrokerError>,
) -> Result<(), BrokerError> {
    let mut offset = partition.log_start_offset();
    let end = partition.log_end_offset();
    while offset < end {
        let read = partition.read_to(offset, read_bytes, ReadBound::LogEnd)?;
        if read.records.is_empty() {
            break;
        }
        let mut buf = read.records.clone();
        let sets = RecordBatchDecoder::decode_all(&mut buf).map_err(|e| {
            BrokerError::Storage(format!("{}-{}: undecodable batch: {e}", partition.topic, partition.index))
        })?;
        // Batches, not records, say where the next read starts: the cleaner keeps a batch's
        // last offset when it removes its last records (and may leave an empty batch).
        let next = strata_protocol::batch::BatchIter::new(&read.records)
            .map_while(Result::ok)
            .map(|(h, _)| h.last_offset() + 1)
            .fold(offset, i64::max);
        for set in sets {
            for r in set.records.iter().filter(|r| r.offset >= offset) {
                f(r)?;
            }
        }
        if next <= offset {
            break;
        }
        offset = next;
    }
    Ok(())
}
