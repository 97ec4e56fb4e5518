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
//! producer ids clients invent. A forgotten producer may start again at any sequence. A
//! producer with an open transaction is never forgotten.
//!
//! **Transactions.** A transactional batch opens its producer's transaction at its first
//! offset, if none is open; a marker (a control batch, commit or abort) closes it: the
//! transaction is then decided but *unreplicated* until the high watermark passes its marker.
//! The first unstable offset is the first offset of the earliest open or unreplicated
//! transaction; the partition's last stable offset (LSO) is that, capped by the high watermark
//! (Kafka's `ProducerStateManager.firstUnstableOffset`). Open transactions are kept in
//! snapshots; unreplicated ones are not (after a restart the high watermark bounds the LSO).

use std::collections::{BTreeMap, HashMap, VecDeque};

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

#[derive(Debug, Clone, PartialEq, Eq)]
struct ProducerEntry {
    epoch: i16,
    /// Max timestamp of the producer's last batch (ms): what expiration judges.
    last_timestamp: i64,
    batches: VecDeque<BatchMeta>,
    /// First offset of the producer's open transaction.
    txn_first_offset: Option<i64>,
    /// Coordinator epoch of the producer's last transaction marker, -1 before any.
    coordinator_epoch: i32,
}

impl Default for ProducerEntry {
    fn default() -> Self {
        Self { epoch: 0, last_timestamp: 0, batches: VecDeque::new(), txn_first_offset: None, coordinator_epoch: -1 }
    }
}

/// A transaction a marker decided (Kafka's `CompletedTxn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompletedTxn {
    pub producer_id: i64,
    /// Its first record's offset (the marker's own when it had none).
    pub first_offset: i64,
    /// The marker's offset.
    pub last_offset: i64,
    pub aborted: bool,
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
    /// Open transactions: first offset → producer id.
    ongoing: BTreeMap<i64, i64>,
    /// Decided transactions whose marker the high watermark has not passed: first offset →
    /// marker offset.
    unreplicated: BTreeMap<i64, i64>,
    /// KIP-890 verification guards of producers with no transaction open here: set when the
    /// leader asks the coordinator whether the partition is in the producer's transaction,
    /// taken by the first transactional batch appended, dropped by any marker of the producer
    /// (so a verification that raced a marker no longer counts). Not persisted.
    guards: HashMap<i64, u64>,
    next_guard: u64,
}

/// One producer as DescribeProducers shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActiveProducer {
    pub producer_id: i64,
    pub epoch: i16,
    pub last_sequence: i32,
    pub last_timestamp: i64,
    pub coordinator_epoch: i32,
    pub txn_start_offset: i64,
}

/// What the leader knows of a transactional client batch's verification (KIP-890 part 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    /// Not checked: `transaction.partition.verification.enable=false`, or not a client's
    /// transactional write.
    Off,
    /// The coordinator confirmed the partition is in the transaction, under this guard.
    Verified(u64),
    /// Not verified: the producer had a transaction open here when the request arrived.
    Unverified,
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
        if !header.is_transactional() && entry.txn_first_offset.is_some() {
            return Err(BrokerError::InvalidTxnState(format!(
                "producer {pid} wrote a non-transactional batch while its transaction is open"
            )));
        }
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
            match entry.batches.back() {
                Some(prev) => {
                    let expected = next_seq(prev.last_seq);
                    if header.base_sequence != expected {
                        return Err(BrokerError::OutOfOrderSequence {
                            producer_id: pid,
                            expected,
                            got: header.base_sequence,
                        });
                    }
                }
                // The epoch came with a marker (transactions V2 bump it at every commit and
                // abort): the producer's first batch at it starts at sequence 0, as in Kafka.
                None if header.base_sequence != 0
                    && entry.txn_first_offset.is_none()
                    && entry.coordinator_epoch >= 0 =>
                {
                    return Err(BrokerError::OutOfOrderSequence {
                        producer_id: pid,
                        expected: 0,
                        got: header.base_sequence,
                    });
                }
                None => {}
            }
        } else if header.base_sequence != 0 {
            return Err(BrokerError::OutOfOrderSequence { producer_id: pid, expected: 0, got: header.base_sequence });
        }
        Ok(SequenceCheck::Append)
    }

    /// Checks a write for producer `producer_id` at `epoch` that a coordinator makes for it
    /// (Kafka's `AppendOrigin.COORDINATOR`): only the epoch, as [`Self::check`] does (an older
    /// one is INVALID_PRODUCER_EPOCH); the sequence numbers are not the producer's own.
    pub fn check_epoch(&self, producer_id: i64, epoch: i16) -> Result<(), BrokerError> {
        match self.producers.get(&producer_id) {
            Some(entry) if epoch < entry.epoch => {
                Err(BrokerError::InvalidProducerEpoch { producer_id, epoch, current: entry.epoch })
            }
            _ => Ok(()),
        }
    }

    /// Every producer this partition remembers (DescribeProducers, KIP-664), by producer id:
    /// epoch, last sequence (-1 for none), last batch timestamp, coordinator epoch of its last
    /// marker, and where its open transaction starts (-1 for none).
    pub fn active_producers(&self) -> Vec<ActiveProducer> {
        let mut out: Vec<ActiveProducer> = self
            .producers
            .iter()
            .map(|(pid, e)| ActiveProducer {
                producer_id: *pid,
                epoch: e.epoch,
                last_sequence: e.batches.back().map_or(-1, |b| b.last_seq),
                last_timestamp: e.last_timestamp,
                coordinator_epoch: e.coordinator_epoch,
                txn_start_offset: e.txn_first_offset.unwrap_or(-1),
            })
            .collect();
        out.sort_by_key(|p| p.producer_id);
        out
    }

    /// Whether `producer_id` has a transaction open in this partition at `epoch` (Kafka 4's
    /// `hasOngoingTransaction(producerId, epoch)`): a batch at a newer epoch is the next
    /// transaction (transactions V2 bump the epoch at every commit), whose marker for the open
    /// one has not arrived yet; it must be verified, not appended into the open one.
    pub fn has_open_txn(&self, producer_id: i64, epoch: i16) -> bool {
        self.producers.get(&producer_id).is_some_and(|e| e.txn_first_offset.is_some() && e.epoch == epoch)
    }

    /// The verification guard of `producer_id`: the one in place (concurrent requests of the
    /// producer share it, as Kafka's `maybeCreateVerificationStateEntry` does), or a new one.
    pub fn new_guard(&mut self, producer_id: i64) -> u64 {
        let next = self.next_guard + 1;
        let guard = *self.guards.entry(producer_id).or_insert(next);
        if guard == next {
            self.next_guard = next;
        }
        guard
    }

    /// Whether `guard` is still `producer_id`'s verification guard (no marker or append took
    /// it since).
    pub fn has_guard(&self, producer_id: i64, guard: u64) -> bool {
        self.guards.get(&producer_id) == Some(&guard)
    }

    /// KIP-890: a transactional batch of a producer with no transaction open here starts one,
    /// which only a verification the coordinator answered, and whose guard is still in place,
    /// allows (Kafka's `UnifiedLog.analyzeAndValidateProducerState`). INVALID_TXN_STATE
    /// otherwise.
    pub fn check_verified(&self, header: &BatchHeader, verification: Verification) -> Result<(), BrokerError> {
        if !header.is_transactional() || self.has_open_txn(header.producer_id, header.producer_epoch) {
            return Ok(());
        }
        match verification {
            Verification::Off => Ok(()),
            Verification::Verified(guard) if self.guards.get(&header.producer_id) == Some(&guard) => Ok(()),
            _ => Err(BrokerError::InvalidTxnState("Record was not part of an ongoing transaction".into())),
        }
    }

    /// Records an appended data batch (`header` with its assigned base offset); a
    /// transactional one opens its producer's transaction if none is open. Control batches go
    /// to [`Self::record_marker`] instead.
    pub fn record(&mut self, header: &BatchHeader) {
        if header.producer_id < 0 || header.is_control() {
            return;
        }
        let entry = self.producers.entry(header.producer_id).or_default();
        if header.is_transactional() && entry.txn_first_offset.is_none() {
            entry.txn_first_offset = Some(header.base_offset);
            self.ongoing.insert(header.base_offset, header.producer_id);
            self.guards.remove(&header.producer_id);
        }
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

    /// Checks a transaction marker of producer `producer_id` at `epoch` from a coordinator at
    /// `coordinator_epoch` (Kafka's `ProducerAppendInfo.appendEndTxnMarker` checks): an older
    /// producer epoch is INVALID_PRODUCER_EPOCH, an older coordinator epoch
    /// TRANSACTION_COORDINATOR_FENCED.
    pub fn check_marker(&self, producer_id: i64, epoch: i16, coordinator_epoch: i32) -> Result<(), BrokerError> {
        let Some(entry) = self.producers.get(&producer_id) else { return Ok(()) };
        if epoch < entry.epoch {
            return Err(BrokerError::InvalidProducerEpoch { producer_id, epoch, current: entry.epoch });
        }
        if coordinator_epoch < entry.coordinator_epoch {
            return Err(BrokerError::TransactionCoordinatorFenced {
                producer_id,
                epoch: coordinator_epoch,
                current: entry.coordinator_epoch,
            });
        }
        Ok(())
    }

    /// Records an appended transaction marker (`header`, the control batch with its offset):
    /// the producer's open transaction, if any, is decided (`commit` or abort) and stays
    /// unstable until the high watermark passes the marker. A marker's epoch becomes the
    /// producer's (transactions V2 bump it at every marker). Returns the decided transaction.
    pub fn record_marker(&mut self, header: &BatchHeader, commit: bool, coordinator_epoch: i32) -> CompletedTxn {
        let offset = header.base_offset;
        self.guards.remove(&header.producer_id);
        let entry = self.producers.entry(header.producer_id).or_default();
        if header.producer_epoch != entry.epoch {
            entry.batches.clear();
            entry.epoch = header.producer_epoch;
        }
        entry.coordinator_epoch = coordinator_epoch;
        entry.last_timestamp = header.max_timestamp;
        let first_offset = match entry.txn_first_offset.take() {
            Some(first) => {
                self.ongoing.remove(&first);
                first
            }
            None => offset,
        };
        self.unreplicated.insert(first_offset, offset);
        CompletedTxn { producer_id: header.producer_id, first_offset, last_offset: offset, aborted: !commit }
    }

    /// The partition's last stable offset right after `txn`'s marker, for its aborted-transaction
    /// index entry (Kafka's `ProducerStateManager.lastStableOffset`): the first offset of the
    /// earliest transaction another producer has open, else the offset after the marker.
    pub fn last_stable_offset_after(&self, txn: &CompletedTxn) -> i64 {
        self.ongoing.iter().find(|(_, pid)| **pid != txn.producer_id).map_or(txn.last_offset + 1, |(first, _)| *first)
    }

    /// The first offset of the earliest transaction open, or decided by a marker the high
    /// watermark has not passed; `None` when there is none.
    pub fn first_unstable_offset(&self) -> Option<i64> {
        let ongoing = self.ongoing.keys().next().copied();
        let unreplicated = self.unreplicated.keys().next().copied();
        match (ongoing, unreplicated) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The high watermark moved to `high_watermark`: transactions whose marker is below it
    /// are stable (Kafka's `onHighWatermarkUpdated`).
    pub fn on_high_watermark(&mut self, high_watermark: i64) {
        self.unreplicated.retain(|_, marker| *marker >= high_watermark);
    }

    /// Forgets every producer whose last batch's max timestamp is `expiration_ms` or more
    /// before `now_ms` (Kafka's `ProducerStateManager.removeExpiredProducers`), except those
    /// with an open transaction. Returns how many were forgotten.
    pub fn remove_expired(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        let before = self.producers.len();
        self.producers
            .retain(|_, e| e.txn_first_offset.is_some() || now_ms.saturating_sub(e.last_timestamp) < expiration_ms);
        before - self.producers.len()
    }

    /// The table as a snapshot payload (big-endian), version 1: `u32::MAX, 1u8, count u32`,
    /// then per producer `producer_id i64, epoch i16, last_timestamp i64, coordinator_epoch
    /// i32, txn_first_offset i64 (-1: none), batches u8`, then per batch `first_seq i32,
    /// last_seq i32, first_offset i64, last_offset i64, max_timestamp i64`. Version 0 (read,
    /// never written) is `count u32` and the producers without the two transaction fields.
    /// Producers are written in id order, so equal tables give equal bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut ids: Vec<&i64> = self.producers.keys().collect();
        ids.sort_unstable();
        let mut out = Vec::with_capacity(9 + self.producers.len() * (ENTRY_LEN + 12 + 2 * BATCH_LEN));
        out.extend_from_slice(&VERSIONED.to_be_bytes());
        out.push(1);
        out.extend_from_slice(&(ids.len() as u32).to_be_bytes());
        for id in ids {
            let e = &self.producers[id];
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(&e.epoch.to_be_bytes());
            out.extend_from_slice(&e.last_timestamp.to_be_bytes());
            out.extend_from_slice(&e.coordinator_epoch.to_be_bytes());
            out.extend_from_slice(&e.txn_first_offset.unwrap_or(-1).to_be_bytes());
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
        let mut count = r.u32()? as usize;
        let version = if count == VERSIONED as usize {
            let v = r.u8()?;
            if v != 1 {
                return Err(format!("unknown snapshot version {v}"));
            }
            count = r.u32()? as usize;
            v
        } else {
            0
        };
        if count > payload.len() / ENTRY_LEN {
            return Err(format!("{count} producers cannot fit in {} bytes", payload.len()));
        }
        let mut producers = HashMap::with_capacity(count);
        let mut ongoing = BTreeMap::new();
        for _ in 0..count {
            let id = r.i64()?;
            let epoch = r.i16()?;
            let last_timestamp = r.i64()?;
            let (coordinator_epoch, txn_first_offset) = if version >= 1 {
                let coordinator_epoch = r.i32()?;
                let first = r.i64()?;
                (coordinator_epoch, (first >= 0).then_some(first))
            } else {
                (-1, None)
            };
            if let Some(first) = txn_first_offset {
                if ongoing.insert(first, id).is_some() {
                    return Err(format!("two open transactions start at offset {first}"));
                }
            }
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
            let entry = ProducerEntry { epoch, last_timestamp, batches, txn_first_offset, coordinator_epoch };
            if producers.insert(id, entry).is_some() {
                return Err(format!("producer {id} appears twice"));
            }
        }
        if r.at != payload.len() {
            return Err(format!("{} bytes left over", payload.len() - r.at));
        }
        Ok(Self { producers, ongoing, ..Self::default() })
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

/// Bytes of a producer's fixed fields in a version 0 snapshot (the smallest).
const ENTRY_LEN: usize = 8 + 2 + 8 + 1;
/// The first four bytes of a versioned snapshot (a version 0 snapshot starts with its producer
/// count, which is never this large).
const VERSIONED: u32 = u32::MAX;
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

    fn txn(pid: i64, epoch: i16, seq: i32, n: i32, offset: i64) -> BatchHeader {
        BatchHeader { attributes: 0x10, ..h(pid, epoch, seq, n, offset) }
    }

    fn marker(pid: i64, epoch: i16, offset: i64) -> BatchHeader {
        BatchHeader { attributes: 0x30, base_sequence: -1, ..h(pid, epoch, -1, 1, offset) }
    }

    /// Kafka's first unstable offset: open transactions, then decided ones until the high
    /// watermark passes their marker; aborted ones get their last stable offset.
    #[test]
    fn transactions_open_close_and_bound_the_stable_offset() {
        let mut t = ProducerStateTable::default();
        t.record(&h(9, 0, 0, 2, 0)); // idempotent, not transactional
        assert_eq!(t.first_unstable_offset(), None);
        t.record(&txn(1, 0, 0, 3, 2));
        t.record(&txn(2, 0, 0, 1, 5));
        t.record(&txn(1, 0, 3, 2, 6)); // same transaction
        assert_eq!(t.first_unstable_offset(), Some(2));
        assert!(matches!(t.check(&h(1, 0, 5, 1, 8)), Err(BrokerError::InvalidTxnState(_))), "open transaction");

        t.check_marker(1, 0, 3).unwrap();
        let committed = t.record_marker(&marker(1, 0, 8), true, 3);
        assert_eq!(committed, CompletedTxn { producer_id: 1, first_offset: 2, last_offset: 8, aborted: false });
        assert_eq!(t.first_unstable_offset(), Some(2), "decided, not yet replicated");
        t.on_high_watermark(9);
        assert_eq!(t.first_unstable_offset(), Some(5));
        assert!(matches!(t.check_marker(1, 0, 2), Err(BrokerError::TransactionCoordinatorFenced { .. })));

        let aborted = t.record_marker(&marker(2, 0, 9), false, 3);
        assert_eq!(aborted, CompletedTxn { producer_id: 2, first_offset: 5, last_offset: 9, aborted: true });
        assert_eq!(t.last_stable_offset_after(&aborted), 10);
        t.record(&txn(1, 1, 0, 1, 10)); // the next transaction (a bumped epoch)
        assert_eq!(t.last_stable_offset_after(&aborted), 10, "another producer's open transaction");
        t.on_high_watermark(10);
        assert_eq!(t.first_unstable_offset(), Some(10));
        // A marker with no open transaction decides an empty one at the marker.
        let empty = t.record_marker(&marker(3, 0, 11), false, 0);
        assert_eq!((empty.first_offset, empty.last_offset), (11, 11));
        // Producers with an open transaction do not expire.
        assert_eq!(t.remove_expired(i64::MAX, 1), 3);
        assert_eq!(t.len(), 1);
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
        let mut huge = bytes.clone();
        huge[5..9].copy_from_slice(&u32::MAX.to_be_bytes()); // the count, after the version
        assert!(ProducerStateTable::decode(&huge).is_err());
        let mut unknown = bytes;
        unknown[4] = 2;
        assert!(ProducerStateTable::decode(&unknown).is_err(), "an unknown version");
    }

    /// Open transactions are in snapshots; version 0 snapshots (before transactions) still load.
    #[test]
    fn snapshots_keep_open_transactions_and_read_version_0() {
        let mut t = ProducerStateTable::default();
        t.record(&BatchHeader { attributes: 0x10, ..header(1, 0, 0, 2, 4, 10) });
        t.record(&header(2, 0, 0, 1, 6, 10));
        let decoded = ProducerStateTable::decode(&t.encode()).unwrap();
        assert_eq!(decoded.first_unstable_offset(), Some(4));
        assert_eq!(decoded, t);

        // Version 0: count, then producer 2 with one batch.
        let mut v0 = 1u32.to_be_bytes().to_vec();
        v0.extend_from_slice(&2i64.to_be_bytes());
        v0.extend_from_slice(&0i16.to_be_bytes());
        v0.extend_from_slice(&10i64.to_be_bytes());
        v0.push(1);
        for v in [0i32, 0] {
            v0.extend_from_slice(&v.to_be_bytes());
        }
        for v in [6i64, 6, 10] {
            v0.extend_from_slice(&v.to_be_bytes());
        }
        let old = ProducerStateTable::decode(&v0).unwrap();
        assert_eq!(old.check(&header(2, 0, 1, 1, 7, 10)).unwrap(), SequenceCheck::Append);
        assert!(old.check(&header(2, 0, 3, 1, 7, 10)).is_err());
        assert_eq!(old.first_unstable_offset(), None);
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
