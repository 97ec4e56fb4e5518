//! Idempotent-producer state of one partition: the epoch and last few batches
//! of each producer id, to fence old epochs, reject gaps and answer retried
//! duplicates with their original offsets (Kafka's `ProducerStateManager`).
//!
//! Persisted as snapshots (Kafka's `<offset>.snapshot` files, see
//! `strata_log::snapshot`): at every segment roll the state of the batches below the new
//! segment is written, and at a clean shutdown the state at the log end. At start the newest
//! intact snapshot is loaded and only the batches from its offset on are replayed, so start
//! time does not grow with the log. Without a snapshot the whole log is replayed.
//!
//! A producer whose last batch is older than `producer.id.expiration.ms` (by the batch's max
//! timestamp, as Kafka judges it) is forgotten, at load and every
//! `producer.id.expiration.check.interval.ms`, so the table stays bounded however many
//! producer ids clients invent. A forgotten producer may start again at any sequence.

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

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct ProducerEntry {
    epoch: i16,
    /// Max timestamp of the producer's last batch (ms): what expiration judges.
    last_timestamp: i64,
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
#[derive(Debug, Default, PartialEq, Eq)]
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
        entry.last_timestamp = header.max_timestamp;
    }

    /// Forgets every producer whose last batch's max timestamp is `expiration_ms` or more
    /// before `now_ms` (Kafka's `ProducerStateManager.removeExpiredProducers`). Returns how
    /// many were forgotten.
    pub fn remove_expired(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        let before = self.producers.len();
        self.producers.retain(|_, e| now_ms.saturating_sub(e.last_timestamp) < expiration_ms);
        before - self.producers.len()
    }

    /// The table as a snapshot payload (big-endian):
    /// `count u32`, then per producer `producer_id i64, epoch i16, last_timestamp i64,
    /// batches u8`, then per batch `first_seq i32, last_seq i32, first_offset i64,
    /// last_offset i64, max_timestamp i64`. Producers are written in id order, so equal tables
    /// give equal bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut ids: Vec<&i64> = self.producers.keys().collect();
        ids.sort_unstable();
        let mut out = Vec::with_capacity(4 + self.producers.len() * (ENTRY_LEN + 2 * BATCH_LEN));
        out.extend_from_slice(&(ids.len() as u32).to_be_bytes());
        for id in ids {
            let e = &self.producers[id];
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(&e.epoch.to_be_bytes());
            out.extend_from_slice(&e.last_timestamp.to_be_bytes());
            out.push(e.batches.len() as u8);
            for b in &e.batches {
                out.extend_from_slice(&b.first_seq.to_be_bytes());
                out.extend_from_slice(&b.last_seq.to_be_bytes());
                out.extend_from_slice(&b.first_offset.to_be_bytes());
                out.extend_from_slice(&b.last_offset.to_be_bytes());
                out.extend_from_slice(&b.max_timestamp.to_be_bytes());
            }
        }
        out
    }

    /// Parses what [`Self::encode`] wrote; an error says what is wrong (the caller then
    /// rebuilds the table from the log instead).
    pub fn decode(payload: &[u8]) -> Result<Self, String> {
        let mut r = Cursor { bytes: payload, at: 0 };
        let count = r.u32()? as usize;
        if count > payload.len() / ENTRY_LEN {
            return Err(format!("{count} producers cannot fit in {} bytes", payload.len()));
        }
        let mut producers = HashMap::with_capacity(count);
        for _ in 0..count {
            let id = r.i64()?;
            let epoch = r.i16()?;
            let last_timestamp = r.i64()?;
            let n = usize::from(r.u8()?);
            if n > BATCHES_KEPT {
                return Err(format!("producer {id} has {n} batches, more than {BATCHES_KEPT}"));
            }
            let mut batches = VecDeque::with_capacity(n);
            for _ in 0..n {
                batches.push_back(BatchMeta {
                    first_seq: r.i32()?,
                    last_seq: r.i32()?,
                    first_offset: r.i64()?,
                    last_offset: r.i64()?,
                    max_timestamp: r.i64()?,
                });
            }
            if producers.insert(id, ProducerEntry { epoch, last_timestamp, batches }).is_some() {
                return Err(format!("producer {id} appears twice"));
            }
        }
        if r.at != payload.len() {
            return Err(format!("{} bytes left over", payload.len() - r.at));
        }
        Ok(Self { producers })
    }

    /// Each producer id with the last offset of its last batch: the log cleaner keeps that
    /// batch (emptied if need be) so the producer's sequence survives a restart.
    pub fn last_offsets(&self) -> HashMap<i64, i64> {
        self.producers.iter().filter_map(|(id, p)| Some((*id, p.batches.back()?.last_offset))).collect()
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }
}

/// Bytes of a producer's fixed fields in a snapshot.
const ENTRY_LEN: usize = 8 + 2 + 8 + 1;
/// Bytes of one remembered batch in a snapshot.
const BATCH_LEN: usize = 4 + 4 + 8 + 8 + 8;

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let end = self.at.checked_add(N).filter(|e| *e <= self.bytes.len());
        let Some(end) = end else {
            return Err(format!("truncated at byte {}", self.at));
        };
        let mut out = [0u8; N];
        out.copy_from_slice(&self.bytes[self.at..end]);
        self.at = end;
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take::<1>()?[0])
    }
    fn i16(&mut self) -> Result<i16, String> {
        Ok(i16::from_be_bytes(self.take()?))
    }
    fn i32(&mut self) -> Result<i32, String> {
        Ok(i32::from_be_bytes(self.take()?))
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_be_bytes(self.take()?))
    }
    fn i64(&mut self) -> Result<i64, String> {
        Ok(i64::from_be_bytes(self.take()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A batch header of producer `pid`: `n` records from sequence `seq` at `offset`, `ts` as
    /// both timestamps.
    pub(super) fn header(pid: i64, epoch: i16, seq: i32, n: i32, offset: i64, ts: i64) -> BatchHeader {
        BatchHeader {
            base_offset: offset,
            batch_length: 49,
            partition_leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: n - 1,
            base_timestamp: ts,
            max_timestamp: ts,
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            records_count: n,
        }
    }

    fn h(pid: i64, epoch: i16, seq: i32, n: i32, offset: i64) -> BatchHeader {
        header(pid, epoch, seq, n, offset, 0)
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

#[cfg(test)]
mod snapshot_tests {
    use super::tests::header;
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever batches were recorded, a snapshot decodes to the same table, and the
        /// decoded table judges the next batch of every producer as the original does.
        #[test]
        fn a_snapshot_round_trips(batches in prop::collection::vec((0i64..20, 0i16..3, 1i32..5, any::<i64>()), 0..200)) {
            let mut t = ProducerStateTable::default();
            let mut offset = 0;
            let mut next_seq: HashMap<(i64, i16), i32> = HashMap::new();
            for (pid, epoch, n, ts) in batches {
                let seq = next_seq.entry((pid, epoch)).or_insert(0);
                t.record(&header(pid, epoch, *seq, n, offset, ts));
                *seq += n;
                offset += i64::from(n);
            }
            let decoded = ProducerStateTable::decode(&t.encode()).expect("decodes");
            prop_assert_eq!(&decoded, &t);
            prop_assert_eq!(decoded.encode(), t.encode());
            for ((pid, epoch), seq) in next_seq {
                let next = header(pid, epoch, seq, 1, offset, 0);
                prop_assert_eq!(decoded.check(&next).ok(), t.check(&next).ok());
            }
        }

        /// Damaged payloads are refused with an error, never a panic or a huge allocation.
        #[test]
        fn garbage_is_refused_not_a_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = ProducerStateTable::decode(&bytes);
        }
    }

    #[test]
    fn a_truncated_or_padded_snapshot_is_refused() {
        let mut t = ProducerStateTable::default();
        t.record(&header(1, 0, 0, 2, 0, 10));
        t.record(&header(2, 0, 0, 1, 2, 10));
        let bytes = t.encode();
        for cut in 0..bytes.len() {
            assert!(ProducerStateTable::decode(&bytes[..cut]).is_err(), "cut at {cut} accepted");
        }
        let mut padded = bytes.clone();
        padded.push(0);
        assert!(ProducerStateTable::decode(&padded).is_err());
        let mut huge = bytes;
        huge[..4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(ProducerStateTable::decode(&huge).is_err());
    }

    #[test]
    fn idle_producers_expire_by_their_last_batch_timestamp() {
        let mut t = ProducerStateTable::default();
        t.record(&header(1, 0, 0, 1, 0, 1_000));
        t.record(&header(2, 0, 0, 1, 1, 5_000));
        assert_eq!(t.remove_expired(10_999, 10_000), 0);
        assert_eq!(t.remove_expired(11_000, 10_000), 1, "producer 1 is 10 s idle");
        assert_eq!(t.len(), 1);
        // An expired producer is unknown again: it may restart at any sequence.
        assert_eq!(t.check(&header(1, 0, 42, 1, 2, 11_000)).unwrap(), SequenceCheck::Append);
        assert_eq!(t.remove_expired(15_000, 10_000), 1);
        assert!(t.is_empty());
    }
}
