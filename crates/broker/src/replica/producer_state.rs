//! Idempotent-producer state of one partition: the epoch and last few batches
//! of each producer id, to fence old epochs, reject gaps and answer retried
//! duplicates with their original offsets.
//!
//! Rebuilt on start by replaying the batch headers of the log, so it needs no
//! file of its own and is always consistent with what the log holds.

use std::collections::{HashMap, VecDeque};

use strata_protocol::batch::BatchHeader;

use crate::error::BrokerError;

/// How many recent batches per producer are kept for duplicate detection
/// (the Java and librdkafka clients keep at most 5 in flight).
pub const BATCHES_KEPT: usize = 5;

/// One appended batch, as remembered for duplicate detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMeta {
    pub first_seq: i32,
    pub last_seq: i32,
    pub first_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
}

#[derive(Debug, Clone, Default)]
struct ProducerEntry {
    epoch: i16,
    batches: VecDeque<BatchMeta>,
}

/// The outcome of checking a batch before it is appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// Append it.
    Append,
    /// Already appended: answer with the original batch's offsets.
    Duplicate(BatchMeta),
}

/// All producers of one partition.
#[derive(Debug, Default)]
pub struct ProducerStateTable {
    producers: HashMap<i64, ProducerEntry>,
}

fn last_seq(header: &BatchHeader) -> i32 {
    // Sequences wrap at i32::MAX back to 0, as in Kafka.
    ((i64::from(header.base_sequence) + i64::from(header.last_offset_delta)) % (i64::from(i32::MAX) + 1)) as i32
}

fn next_seq(seq: i32) -> i32 {
    if seq == i32::MAX {
        0
    } else {
        seq + 1
    }
}

impl ProducerStateTable {
    /// Checks an idempotent batch against the producer's state (Kafka's
    /// `ProducerAppendInfo.checkSequence` rules): an older epoch is fenced; a
    /// new epoch must start at sequence 0; within an epoch the batch must
    /// follow the last one; a producer with no state (new, or its batches
    /// were all removed by retention) may start anywhere.
    pub fn check(&self, header: &BatchHeader) -> Result<SequenceCheck, BrokerError> {
        let pid = header.producer_id;
        let Some(entry) = self.producers.get(&pid) else {
            return Ok(SequenceCheck::Append);
        };
        if header.producer_epoch < entry.epoch {
            return Err(BrokerError::InvalidProducerEpoch {
                producer_id: pid,
                epoch: header.producer_epoch,
                current: entry.epoch,
            });
        }
        let last = last_seq(header);
        if header.producer_epoch == entry.epoch {
            if let Some(dup) = entry.batches.iter().find(|b| b.first_seq == header.base_sequence && b.last_seq == last)
            {
                return Ok(SequenceCheck::Duplicate(*dup));
            }
            if let Some(prev) = entry.batches.back() {
                let expected = next_seq(prev.last_seq);
                if header.base_sequence != expected {
                    return Err(BrokerError::OutOfOrderSequence {
                        producer_id: pid,
                        expected,
                        got: header.base_sequence,
                    });
                }
            }
        } else if header.base_sequence != 0 {
            return Err(BrokerError::OutOfOrderSequence { producer_id: pid, expected: 0, got: header.base_sequence });
        }
        Ok(SequenceCheck::Append)
    }

    /// Records an appended batch (`header` with its assigned base offset).
    pub fn record(&mut self, header: &BatchHeader) {
        if header.producer_id < 0 {
            return;
        }
        let entry = self.producers.entry(header.producer_id).or_default();
        if header.producer_epoch != entry.epoch {
            entry.batches.clear();
            entry.epoch = header.producer_epoch;
        }
        if entry.batches.len() == BATCHES_KEPT {
            entry.batches.pop_front();
        }
        entry.batches.push_back(BatchMeta {
            first_seq: header.base_sequence,
            last_seq: last_seq(header),
            first_offset: header.base_offset,
            last_offset: header.last_offset(),
            max_timestamp: header.max_timestamp,
        });
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pid: i64, epoch: i16, seq: i32, n: i32, offset: i64) -> BatchHeader {
        BatchHeader {
            base_offset: offset,
            batch_length: 49,
            partition_leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: n - 1,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            records_count: n,
        }
    }

    #[test]
    fn sequences_duplicates_gaps_and_fencing() {
        let mut t = ProducerStateTable::default();
        assert_eq!(t.check(&h(7, 0, 0, 3, 0)).unwrap(), SequenceCheck::Append);
        t.record(&h(7, 0, 0, 3, 0));
        // Retried duplicate gets the original offsets.
        match t.check(&h(7, 0, 0, 3, 99)).unwrap() {
            SequenceCheck::Duplicate(m) => assert_eq!((m.first_offset, m.last_offset), (0, 2)),
            other => panic!("{other:?}"),
        }
        // Gap.
        assert!(matches!(t.check(&h(7, 0, 5, 1, 3)), Err(BrokerError::OutOfOrderSequence { expected: 3, got: 5, .. })));
        assert_eq!(t.check(&h(7, 0, 3, 1, 3)).unwrap(), SequenceCheck::Append);
        t.record(&h(7, 0, 3, 1, 3));
        // New epoch must restart at 0; old epoch is fenced after it.
        assert!(t.check(&h(7, 1, 4, 1, 4)).is_err());
        t.record(&h(7, 1, 0, 1, 4));
        assert!(matches!(t.check(&h(7, 0, 4, 1, 5)), Err(BrokerError::InvalidProducerEpoch { .. })));
        // Unknown producers may start anywhere.
        assert_eq!(t.check(&h(8, 3, 42, 1, 6)).unwrap(), SequenceCheck::Append);
    }

    #[test]
    fn sequence_wraps_at_i32_max() {
        let mut t = ProducerStateTable::default();
        t.record(&h(1, 0, i32::MAX - 1, 2, 0));
        assert_eq!(t.check(&h(1, 0, 0, 1, 2)).unwrap(), SequenceCheck::Append);
    }
}
