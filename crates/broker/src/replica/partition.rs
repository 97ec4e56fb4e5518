//! One partition this broker leads: its log, its producer state, and the
//! fetches waiting for it to grow.
//!
//! Invariant: `log_start <= high_watermark <= log_end`. With one replica the
//! high watermark is the log end: an appended batch is committed at once
//! (Kafka's behaviour with replication factor 1). What "committed" means for
//! durability — fsynced or only in the page cache — is the flush policy's
//! business, see `docs/durability.md`.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::{Bytes, BytesMut};
use strata_log::Log;
use strata_protocol::batch::{set_log_append_time, BatchHeader};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::config::TopicSettings;
use crate::error::BrokerError;
use crate::replica::producer_state::{ProducerStateTable, SequenceCheck};
use crate::replica::validate::validate_batch;

/// What a produce to this partition returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendResult {
    pub base_offset: i64,
    /// The broker's timestamp when the topic uses LogAppendTime, else -1.
    pub log_append_time: i64,
    pub log_start_offset: i64,
}

/// What a fetch from this partition returned.
#[derive(Debug, Clone)]
pub struct ReadResult {
    pub records: Bytes,
    pub high_watermark: i64,
    pub log_start_offset: i64,
}

struct State {
    /// `None` once the partition is closed (shutdown or deletion).
    log: Option<Log>,
    producers: ProducerStateTable,
    settings: TopicSettings,
}

/// A partition and its log.
pub struct Partition {
    pub topic: String,
    pub topic_id: Uuid,
    pub index: i32,
    state: Mutex<State>,
    /// Mirrors of the log's offsets, readable without the lock.
    log_end: AtomicI64,
    log_start: AtomicI64,
    /// Whether appends may fsync (a message-count flush policy is set);
    /// readable without the lock so the produce path can decide where to run.
    flushes_on_append: AtomicBool,
    waiters: Mutex<Vec<Arc<Notify>>>,
}

impl Partition {
    /// Wraps an opened log, rebuilding idempotent-producer state from it.
    pub fn new(
        topic: String,
        topic_id: Uuid,
        index: i32,
        log: Log,
        settings: TopicSettings,
    ) -> Result<Self, BrokerError> {
        let mut producers = ProducerStateTable::default();
        for header in log.batch_headers(log.log_start_offset())? {
            producers.record(&header);
        }
        Ok(Self {
            topic,
            topic_id,
            index,
            log_end: AtomicI64::new(log.log_end_offset()),
            log_start: AtomicI64::new(log.log_start_offset()),
            flushes_on_append: AtomicBool::new(settings.log.flush_interval_messages != u64::MAX),
            state: Mutex::new(State { log: Some(log), producers, settings }),
            waiters: Mutex::new(Vec::new()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn log_end_offset(&self) -> i64 {
        self.log_end.load(Ordering::Acquire)
    }

    pub fn high_watermark(&self) -> i64 {
        self.log_end_offset()
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log_start.load(Ordering::Acquire)
    }

    /// Whether an append may fsync before returning (so callers keep it off
    /// the async workers).
    pub fn flushes_on_append(&self) -> bool {
        self.flushes_on_append.load(Ordering::Relaxed)
    }

    pub fn update_settings(&self, settings: TopicSettings) {
        self.flushes_on_append.store(settings.log.flush_interval_messages != u64::MAX, Ordering::Relaxed);
        let mut st = self.lock();
        if let Some(log) = st.log.as_mut() {
            log.update_config(settings.log.clone());
        }
        st.settings = settings;
    }

    fn publish_offsets(&self, log: &Log) {
        self.log_start.store(log.log_start_offset(), Ordering::Release);
        self.log_end.store(log.log_end_offset(), Ordering::Release);
    }

    /// Validates and appends one producer batch (the bytes of one partition
    /// of a Produce request). A retried duplicate of an idempotent batch
    /// returns the offsets it got the first time.
    pub fn append(&self, records: &Bytes, now_ms: i64) -> Result<AppendResult, BrokerError> {
        let mut guard = self.lock();
        let st = &mut *guard;
        let header = validate_batch(records, &st.settings, now_ms)?;
        let log_append_time = if st.settings.log_append_time { now_ms } else { -1 };
        if header.has_producer_id() {
            if let SequenceCheck::Duplicate(meta) = st.producers.check(&header)? {
                let log_start = st.log.as_ref().map_or(0, Log::log_start_offset);
                return Ok(AppendResult {
                    base_offset: meta.first_offset,
                    log_append_time,
                    log_start_offset: log_start,
                });
            }
        }
        let log = st.log.as_mut().ok_or(BrokerError::ShuttingDown)?;
        let batch = &records[..header.total_size()];
        let info = if st.settings.log_append_time {
            // The timestamps (and so the CRC) change: patch our own copy of the batch.
            let mut copy = BytesMut::from(batch);
            set_log_append_time(&mut copy, now_ms).map_err(|e| BrokerError::CorruptMessage(e.to_string()))?;
            log.append(&mut copy, now_ms)?
        } else {
            // The request's bytes go to the file as they are, beside the assigned base offset.
            log.append_batch(batch, now_ms)?
        };
        let stored = BatchHeader { base_offset: info.first_offset, ..header };
        st.producers.record(&stored);
        self.publish_offsets(log);
        let log_start_offset = log.log_start_offset();
        drop(guard);
        self.wake_waiters();
        Ok(AppendResult { base_offset: info.first_offset, log_append_time, log_start_offset })
    }

    /// Reads from `offset` up to `max_bytes` (at least one whole batch if any
    /// is there), never past the high watermark.
    pub fn read(&self, offset: i64, max_bytes: usize) -> Result<ReadResult, BrokerError> {
        let st = self.lock();
        let log = st.log.as_ref().ok_or(BrokerError::ShuttingDown)?;
        let hw = log.log_end_offset();
        let info = log.read(offset, max_bytes, hw)?;
        Ok(ReadResult { records: info.records, high_watermark: hw, log_start_offset: info.log_start_offset })
    }

    /// Runs `f` on the log under the partition lock.
    pub fn with_log<T>(&self, f: impl FnOnce(&mut Log) -> Result<T, BrokerError>) -> Result<T, BrokerError> {
        let mut st = self.lock();
        let log = st.log.as_mut().ok_or(BrokerError::ShuttingDown)?;
        let out = f(log);
        self.publish_offsets(log);
        out
    }

    /// Asks to be notified at the next append. The notification is kept if it
    /// fires before the waiter awaits it, so no append is missed.
    pub fn register_waiter(&self, waiter: &Arc<Notify>) {
        self.waiters.lock().unwrap_or_else(PoisonError::into_inner).push(waiter.clone());
    }

    fn wake_waiters(&self) {
        let waiters = std::mem::take(&mut *self.waiters.lock().unwrap_or_else(PoisonError::into_inner));
        for w in waiters {
            w.notify_one();
        }
    }

    /// Closes the log cleanly (flush, clean-shutdown marker). Later calls
    /// answer ShuttingDown.
    pub fn close(&self) -> Result<(), BrokerError> {
        let log = self.lock().log.take();
        self.wake_waiters();
        match log {
            Some(log) => log.close().map_err(BrokerError::from),
            None => Ok(()),
        }
    }

    /// Closes and removes the log's files (topic deletion).
    pub fn delete(&self) -> Result<(), BrokerError> {
        let log = self.lock().log.take();
        self.wake_waiters();
        match log {
            Some(log) => log.delete().map_err(BrokerError::from),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_protocol::kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };

    fn batch(pid: i64, epoch: i16, seq: i32, n: usize, ts: i64) -> Bytes {
        let records: Vec<Record> = (0..n)
            .map(|i| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: pid,
                producer_epoch: epoch,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: if pid >= 0 { seq + i as i32 } else { i as i32 },
                timestamp: ts,
                key: Some(Bytes::from(format!("k{i}"))),
                value: Some(Bytes::from_static(b"value")),
                headers: Default::default(),
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            &records,
            &RecordEncodeOptions { version: 2, compression: Compression::None },
        )
        .unwrap();
        buf.freeze()
    }

    fn partition(settings: TopicSettings) -> Partition {
        let log = Log::open_in_memory(settings.log.clone(), 0);
        Partition::new("t".into(), Uuid::new_v4(), 0, log, settings).unwrap()
    }

    fn settings() -> TopicSettings {
        TopicSettings::resolve(None, &Default::default())
    }

    #[test]
    fn appends_assign_dense_offsets_and_reads_return_them() {
        let p = partition(settings());
        assert_eq!(p.append(&batch(-1, -1, 0, 3, 1000), 1000).unwrap().base_offset, 0);
        assert_eq!(p.append(&batch(-1, -1, 0, 2, 1000), 1000).unwrap().base_offset, 3);
        assert_eq!((p.log_end_offset(), p.high_watermark(), p.log_start_offset()), (5, 5, 0));
        let r = p.read(0, 1 << 20).unwrap();
        let headers: Vec<_> =
            strata_protocol::batch::BatchIter::new(&r.records).map(|b| b.unwrap().0.base_offset).collect();
        assert_eq!(headers, vec![0, 3]);
        assert!(p.read(5, 100).unwrap().records.is_empty());
        assert!(matches!(p.read(6, 100), Err(BrokerError::OffsetOutOfRange { .. })));
    }

    #[test]
    fn retried_idempotent_batches_get_their_first_offsets() {
        let p = partition(settings());
        let first = batch(7, 0, 0, 3, 1000);
        assert_eq!(p.append(&first, 1000).unwrap().base_offset, 0);
        assert_eq!(p.append(&batch(7, 0, 3, 1, 1000), 1000).unwrap().base_offset, 3);
        // The retry is answered with the original offset and not appended again.
        assert_eq!(p.append(&first, 1000).unwrap().base_offset, 0);
        assert_eq!(p.log_end_offset(), 4);
        assert!(matches!(p.append(&batch(7, 0, 9, 1, 1000), 1000), Err(BrokerError::OutOfOrderSequence { .. })));
    }

    #[test]
    fn bad_batches_get_precise_errors() {
        let p = partition(settings());
        let mut corrupt = BytesMut::from(&batch(-1, -1, 0, 2, 1000)[..]);
        let last = corrupt.len() - 1;
        corrupt[last] ^= 0xff;
        assert!(matches!(p.append(&corrupt.freeze(), 1000), Err(BrokerError::CorruptMessage(_))));
        let mut small = settings();
        small.max_message_bytes = 50;
        let p = partition(small);
        assert!(matches!(p.append(&batch(-1, -1, 0, 2, 1000), 1000), Err(BrokerError::MessageTooLarge { .. })));
        let mut two = BytesMut::from(&batch(-1, -1, 0, 1, 1000)[..]);
        two.extend_from_slice(&batch(-1, -1, 0, 1, 1000));
        let p = partition(settings());
        assert!(matches!(p.append(&two.freeze(), 1000), Err(BrokerError::InvalidRecord(_))));
        assert_eq!(p.log_end_offset(), 0);
    }

    #[test]
    fn log_append_time_overrides_the_producer_timestamp() {
        let mut s = settings();
        s.log_append_time = true;
        let p = partition(s);
        let r = p.append(&batch(-1, -1, 0, 2, 5), 777).unwrap();
        assert_eq!(r.log_append_time, 777);
        let stored = p.read(0, 1 << 20).unwrap().records;
        let h = strata_protocol::batch::BatchHeader::parse(&stored).unwrap();
        assert_eq!(h.max_timestamp, 777);
        assert!(strata_protocol::batch::verify_crc(&stored[..h.total_size()]));
    }
}
