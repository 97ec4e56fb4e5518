//! One partition replica on this broker: its log, its producer state, its replication state
//! (leader or follower, see [`Replication`]), and the fetches and acks=all produces waiting
//! for it to grow.
//!
//! Offsets: the *log end* (LEO) is where the next batch goes; the *high watermark* (HW) is
//! where the committed records end: every replica of the ISR has everything below it.
//! Invariants, tested below and in `replication.rs`:
//! - `log_start <= HW <= log end` on a leader, and a leader's HW never moves back (a new
//!   leader starts from the HW it had as a follower and waits for its followers);
//! - consumers read below the HW only; followers read up to the log end;
//! - an acks=all produce is answered once the HW has passed its last record (or fails);
//! - with one replica (an ISR of one) the HW is the log end, as in Kafka with replication
//!   factor 1.
//!
//! What "committed" means for durability — fsynced or only in the page cache — is the flush
//! policy's business, see `docs/durability.md`.
//!
//! With `flush.messages=1` (every acknowledged record durable) appends use
//! group commit: a producer appends under the partition lock, releases it, and
//! then waits for an fsync that started after its append; one fsync covers
//! every append that queued while the previous one ran. The high watermark is
//! then the log's recovery point, so consumers never see a record before it is
//! durable, and nothing is acknowledged before that either.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use strata_log::txn_index::AbortedTxn;
use strata_log::{FileRange, Log, MaxTimestampFound, SnapshotWriter, TimestampCandidate};
use strata_protocol::batch::{BatchHeader, Compression};
use strata_protocol::records::control::{encode_marker, EndTxnMarker};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::config::TopicSettings;
use crate::error::BrokerError;
use crate::replica::producer_state::{ProducerStateTable, SequenceCheck, Verification};
use crate::replica::replication::{Assignment, Following, PendingIsr, Replication, Role};
use crate::replica::validate::prepare_batch;
use crate::replica::watchers::{Watch, Watchers};

/// Who wrote a batch being appended on the leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// A producer: idempotent batches are checked for duplicates and sequence order,
    /// transactional ones for their verification.
    Client(Verification),
    /// A coordinator of this broker writing for a producer's transaction.
    Coordinator(Verification),
}

/// What a produce to this partition returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendResult {
    pub base_offset: i64,
    /// Offset of the last record appended (of the first attempt, for a retried duplicate).
    pub last_offset: i64,
    /// The leader epoch the records were appended in (-1 on a partition without one).
    pub leader_epoch: i32,
    /// The broker's timestamp when the topic uses LogAppendTime, else -1.
    pub log_append_time: i64,
    pub log_start_offset: i64,
}

/// A producer snapshot to write after a roll: where, at which offset, and its payload.
type RollSnapshot = (SnapshotWriter, i64, Vec<u8>);

/// How far a read may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadBound {
    /// Below the high watermark: what `read_uncommitted` consumers see.
    HighWatermark,
    /// Below the last stable offset: what `read_committed` consumers see, with the
    /// transactions aborted in the range read.
    LastStable,
    /// Up to the log end: what a follower replicates.
    LogEnd,
}

/// What a fetch from this partition returned.
#[derive(Debug, Clone)]
pub struct ReadResult {
    pub records: Bytes,
    /// Where `records` lie in their segment file (see [`FileRange`]).
    pub file_range: Option<FileRange>,
    pub high_watermark: i64,
    /// The last stable offset when the read was made ([`Partition::last_stable_offset`]).
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    /// With [`ReadBound::LastStable`]: the transactions aborted among the records read (Fetch's
    /// `aborted_transactions`), in marker order; else empty.
    pub aborted: Vec<AbortedTxn>,
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
    /// Mirrors of the log's offsets, readable without the lock. `log_end` is the end a leader
    /// counts as its own position and a follower fetches from: the LEO, or under group commit
    /// the fsynced end.
    log_end: AtomicI64,
    log_start: AtomicI64,
    /// The high watermark (see the module docs).
    high_watermark: AtomicI64,
    /// The checkpointed high watermark to start from (-1: none), see
    /// [`Partition::restore_high_watermark`].
    restored_hw: AtomicI64,
    /// The topic's `min.insync.replicas` (a copy of the settings' value), readable without the
    /// state lock, which `advance_high_watermark` may run under: a leader's high watermark does
    /// not move while its ISR is smaller ([`Replication::under_min_isr`]).
    min_isr: std::sync::atomic::AtomicUsize,
    /// Leader or follower, the ISR, the followers' positions. Locked after `state` when both
    /// are held.
    replication: Mutex<Replication>,
    /// Set when an ISR change waits to be sent to the controller.
    isr_change_waiting: AtomicBool,
    /// Whether appends may fsync (a message-count flush policy is set);
    /// readable without the lock so the produce path can decide where to run.
    flushes_on_append: AtomicBool,
    /// Whether every append waits for an fsync (`flush.messages=1`): group commit.
    group_commit: AtomicBool,
    /// Whether the topic's `compression.type` names a codec (appends may recompress).
    recompresses: AtomicBool,
    /// This broker's `node.id`, set with the first registration applied.
    local_id: std::sync::atomic::AtomicI32,
    /// Whether a group-commit fsync is running; producers waiting for their
    /// append to become durable sleep on `commit_done`.
    commit_running: Mutex<bool>,
    commit_done: Condvar,
    /// Long-poll fetches parked on this partition (see [`Watchers`]).
    watchers: Arc<Watchers>,
    /// Batch headers replayed at open to rebuild producer state.
    replayed_at_open: usize,
    /// Offset of the newest producer snapshot written (or found at open); -1 for none.
    snapshot_offset: AtomicI64,
    /// Serializes snapshot writes (each also prunes old snapshots), taken without `state`.
    snapshot_write: Mutex<()>,
}

impl Partition {
    /// Wraps an opened log, rebuilding idempotent-producer state from it: the newest intact
    /// producer snapshot, then the batches from its offset on (the whole log when there is no
    /// usable snapshot), without the producers idle longer than `producer.id.expiration.ms`.
    pub fn new(
        topic: String,
        topic_id: Uuid,
        index: i32,
        log: Log,
        settings: TopicSettings,
    ) -> Result<Self, BrokerError> {
        let mut log = log;
        let (producers, loaded) = load_producer_state(&mut log, &topic, index, &settings)?;
        let group_commit = settings.log.flush_interval_messages == 1;
        log.set_deferred_flush(group_commit);
        Ok(Self {
            topic,
            topic_id,
            index,
            log_end: AtomicI64::new(log.log_end_offset()),
            log_start: AtomicI64::new(log.log_start_offset()),
            // Unassigned: the log end (see `Role::Unassigned`); the first registration applied
            // lowers it when the partition has other replicas.
            high_watermark: AtomicI64::new(log.log_end_offset()),
            restored_hw: AtomicI64::new(-1),
            min_isr: std::sync::atomic::AtomicUsize::new(settings.min_insync_replicas),
            replication: Mutex::new(Replication::default()),
            isr_change_waiting: AtomicBool::new(false),
            flushes_on_append: AtomicBool::new(settings.log.flush_interval_messages != u64::MAX),
            group_commit: AtomicBool::new(group_commit),
            recompresses: AtomicBool::new(settings.compression.is_some()),
            commit_running: Mutex::new(false),
            local_id: std::sync::atomic::AtomicI32::new(-1),
            commit_done: Condvar::new(),
            state: Mutex::new(State { log: Some(log), producers, settings }),
            watchers: Arc::default(),
            replayed_at_open: loaded.replayed,
            snapshot_offset: AtomicI64::new(loaded.snapshot_offset),
            snapshot_write: Mutex::new(()),
        })
    }

    /// How many batch headers were replayed to rebuild producer state when the partition was
    /// opened (those after the producer snapshot loaded; all of them without one).
    pub fn batches_replayed_at_open(&self) -> usize {
        self.replayed_at_open
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn log_end_offset(&self) -> i64 {
        self.log_end.load(Ordering::Acquire)
    }

    /// The high watermark: consumers read below it, acks=all produces wait for it.
    pub fn high_watermark(&self) -> i64 {
        self.high_watermark.load(Ordering::Acquire)
    }

    fn replication(&self) -> MutexGuard<'_, Replication> {
        self.replication.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log_start.load(Ordering::Acquire)
    }

    /// Whether appending `records` at `now_ms` may block for long: fsync (a message-count
    /// flush policy, or a roll, which fsyncs the segment it closes), decompression (a
    /// compressed batch, whose every record is read) or recompression (the topic names a
    /// codec). Callers run such appends off the async workers.
    pub fn append_may_block(&self, records: &[u8], now_ms: i64) -> bool {
        self.flushes_on_append.load(Ordering::Relaxed)
            || self.recompresses.load(Ordering::Relaxed)
            || BatchHeader::parse(records).is_ok_and(|h| h.compression().ok() != Some(Compression::None))
            || self.append_would_roll(records, now_ms)
    }

    /// Whether appending `records` would roll the log first.
    fn append_would_roll(&self, records: &[u8], now_ms: i64) -> bool {
        let offsets = BatchHeader::parse(records).map_or(1, |h| i64::from(h.last_offset_delta) + 1);
        self.lock().log.as_ref().is_some_and(|l| l.append_would_roll(records.len() as u64, offsets, now_ms))
    }

    pub fn update_settings(&self, settings: TopicSettings) {
        self.min_isr.store(settings.min_insync_replicas, Ordering::Relaxed);
        let group_commit = settings.log.flush_interval_messages == 1;
        self.recompresses.store(settings.compression.is_some(), Ordering::Relaxed);
        self.flushes_on_append.store(settings.log.flush_interval_messages != u64::MAX, Ordering::Relaxed);
        let mut st = self.lock();
        let was_group_commit = self.group_commit.swap(group_commit, Ordering::Relaxed);
        if let Some(log) = st.log.as_mut() {
            log.update_config(settings.log.clone());
            log.set_deferred_flush(group_commit);
            if group_commit && !was_group_commit {
                // The high watermark becomes the recovery point: flush first so that it does not
                // move back below records consumers may already have read.
                if let Err(e) = log.flush() {
                    tracing::error!(topic = %self.topic, partition = self.index, error = %e,
                        "flush when turning on flush.messages=1 failed");
                }
            }
            self.publish_offsets(log);
        }
        st.settings = settings;
    }

    /// Publishes the offsets readers see. Under group commit the log end published (and so
    /// the high watermark) stops at the recovery point (what is fsynced). Called under the
    /// lock. A leader's high watermark follows (see [`Self::advance_high_watermark`]).
    fn publish_offsets(&self, log: &Log) {
        self.log_start.store(log.log_start_offset(), Ordering::Release);
        let end = if self.group_commit.load(Ordering::Relaxed) { log.recovery_point() } else { log.log_end_offset() };
        self.log_end.store(end, Ordering::Release);
        // Retention or DeleteRecords may move the log start past a follower's (or a lagging
        // leader's) high watermark: it follows, as in Kafka's `maybeIncrementLogStartOffset`.
        self.high_watermark.fetch_max(log.log_start_offset(), Ordering::AcqRel);
        self.advance_high_watermark();
    }

    /// Moves a leader's (or an unassigned partition's) high watermark up to the smallest log
    /// end of its ISR, never back, and wakes what waits on it. Returns whether it moved.
    fn advance_high_watermark(&self) -> bool {
        let candidate = {
            let repl = self.replication();
            if repl.under_min_isr(self.min_isr.load(Ordering::Relaxed)) {
                return false;
            }
            repl.leader_high_watermark(self.local_id(), self.log_end_offset())
        };
        let Some(candidate) = candidate else { return false };
        let moved = self.high_watermark.fetch_max(candidate, Ordering::AcqRel) < candidate;
        if moved {
            self.wake_waiters();
        }
        moved
    }

    /// This broker's id as the registration names it (-1 before one is applied).
    fn local_id(&self) -> i32 {
        self.local_id.load(Ordering::Relaxed)
    }

    /// Group commit: returns once everything below `end` is fsynced. If no fsync
    /// is running, this producer runs one for everything appended so far;
    /// otherwise it waits for the running one and checks again, so one fsync
    /// answers every producer that appended before it started.
    fn commit_through(&self, end: i64) -> Result<(), BrokerError> {
        let mut running = self.commit_running.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if self.log_end_offset() >= end {
                return Ok(()); // an fsync that started after this append covered it
            }
            if !*running {
                break;
            }
            running = self.commit_done.wait(running).unwrap_or_else(PoisonError::into_inner);
        }
        *running = true;
        drop(running);
        let result = self.flush_for_commit();
        *self.commit_running.lock().unwrap_or_else(PoisonError::into_inner) = false;
        self.commit_done.notify_all();
        result
    }

    /// One group-commit fsync: prepared and recorded under the partition lock,
    /// run without it so appends go on meanwhile.
    fn flush_for_commit(&self) -> Result<(), BrokerError> {
        let pending = self.lock().log.as_mut().ok_or(BrokerError::ShuttingDown)?.begin_flush()?;
        let synced = pending.sync();
        let mut st = self.lock();
        let log = st.log.as_mut().ok_or(BrokerError::ShuttingDown)?;
        let recorded = log.end_flush(pending, synced);
        let before = self.log_end_offset();
        self.publish_offsets(log);
        drop(st);
        if self.log_end_offset() > before {
            // Under group commit the high watermark moved: parked fetches may now answer.
            self.wake_waiters();
        }
        Ok(recorded?)
    }

    /// Applies the partition's registration on broker `local_id` (Kafka's `makeLeader` /
    /// `makeFollower`). A leader in a new epoch starts the epoch at its log end, durably (see
    /// [`Log::become_leader`]: the checkpoint is fsynced, so run this off the async workers)
    /// and stamps it on what it appends; a follower stops stamping. The first registration
    /// applied to a partition with other replicas lowers the high watermark to the log start:
    /// what was committed before the restart is not known here (Kafka reads it from a
    /// checkpoint), and claiming the log end would let consumers read records that were never
    /// committed; the ISR brings it back up. Parked produces and fetches re-check.
    pub fn apply_assignment(&self, local_id: i32, assignment: Assignment, now_ms: i64) -> Result<(), BrokerError> {
        let mut st = self.lock();
        let log = st.log.as_mut().ok_or(BrokerError::ShuttingDown)?;
        self.local_id.store(local_id, Ordering::Relaxed);
        if assignment.leader == local_id {
            log.become_leader(assignment.leader_epoch)?;
        } else {
            log.stop_leading();
        }
        {
            let mut repl = self.replication();
            if repl.role() == Role::Unassigned && assignment.replicas.len() > 1 {
                // A replica's first registration: its high watermark is the checkpointed one
                // (below what it holds durably), else its log start; never its log end,
                // which may hold records that were never committed.
                let start = log.log_start_offset();
                let hw = match self.restored_hw.load(Ordering::Acquire) {
                    hw if hw >= 0 => hw.clamp(start, self.log_end_offset().max(start)),
                    _ => start,
                };
                self.high_watermark.store(hw, Ordering::Release);
            }
            repl.apply(local_id, assignment, self.log_end_offset(), now_ms);
        }
        self.publish_offsets(log);
        drop(st);
        self.wake_waiters();
        Ok(())
    }

    /// The registration last applied, and whether this broker leads.
    pub fn assignment(&self) -> Option<Assignment> {
        self.replication().assignment().cloned()
    }

    /// Whether an acks=all produce whose last record is `last_offset`, appended in
    /// `leader_epoch`, is done (Kafka's `checkEnoughReplicasReachOffset`): `None` while the
    /// high watermark has not passed it; then Ok, or NOT_ENOUGH_REPLICAS_AFTER_APPEND when the
    /// ISR shrank below `min.insync.replicas` meanwhile. NOT_LEADER_OR_FOLLOWER once this
    /// broker no longer leads in that epoch: the records may not survive the new leader.
    pub fn acks_all_done(&self, last_offset: i64, leader_epoch: i32) -> Option<Result<(), BrokerError>> {
        // The role, the ISR and the high watermark read together: leadership cannot move
        // between them (a publish changes the role under this lock).
        let (role, leading, in_sync, hw) = {
            let repl = self.replication();
            (repl.role(), repl.leading_epoch(), repl.in_sync_count(), self.high_watermark())
        };
        if role == Role::Follower
            || leading.is_some_and(|e| e != leader_epoch)
            || (leading.is_none() && leader_epoch >= 0)
        {
            return Some(Err(BrokerError::NotLeaderOrFollower(format!(
                "{}-{} (leadership moved while the produce waited for its replicas)",
                self.topic, self.index
            ))));
        }
        if hw <= last_offset {
            return None;
        }
        let required = self.min_isr.load(Ordering::Relaxed);
        if in_sync < required {
            return Some(Err(BrokerError::NotEnoughReplicasAfterAppend { in_sync, required }));
        }
        Some(Ok(()))
    }

    /// Waits until [`Self::acks_all_done`] says the append `appended` is done, parked on the
    /// partition as Kafka's `DelayedProduce` waits in its purgatory: woken by every move of
    /// the high watermark and change of leadership. REQUEST_TIMED_OUT at `deadline`
    /// (`timeout_ms` is only for the message).
    pub async fn await_committed(
        &self,
        appended: &AppendResult,
        deadline: tokio::time::Instant,
        timeout_ms: i32,
    ) -> Result<(), BrokerError> {
        let done = || self.acks_all_done(appended.last_offset, appended.leader_epoch);
        if let Some(result) = done() {
            return result;
        }
        let waiter = Arc::new(Notify::new());
        let _watch = self.watch(&waiter);
        loop {
            if let Some(result) = done() {
                return result;
            }
            tokio::select! {
                _ = waiter.notified() => {}
                _ = tokio::time::sleep_until(deadline) => {
                    return done().unwrap_or(Err(BrokerError::RequestTimedOut(i64::from(timeout_ms))));
                }
            }
        }
    }

    /// Waits until the low watermark (see [`Replication::low_watermark`]; `live` says which
    /// brokers are live) reaches `offset`, as Kafka's `DelayedDeleteRecords`: a DeleteRecords
    /// is answered once every live replica has moved its log start there. Returns the low
    /// watermark; NOT_LEADER_OR_FOLLOWER once this broker does not lead, REQUEST_TIMED_OUT at
    /// `deadline`.
    pub async fn await_low_watermark(
        &self,
        offset: i64,
        live: impl Fn(i32) -> bool,
        deadline: tokio::time::Instant,
        timeout_ms: i32,
    ) -> Result<i64, BrokerError> {
        let low = || {
            self.replication().low_watermark(self.log_start_offset(), &live).ok_or_else(|| {
                BrokerError::NotLeaderOrFollower(format!("{}-{} (leadership moved)", self.topic, self.index))
            })
        };
        let waiter = Arc::new(Notify::new());
        let _watch = self.watch(&waiter);
        loop {
            let current = low()?;
            if current >= offset {
                return Ok(current);
            }
            tokio::select! {
                _ = waiter.notified() => {}
                _ = tokio::time::sleep_until(deadline) => {
                    return match low()? {
                        l if l >= offset => Ok(l),
                        _ => Err(BrokerError::RequestTimedOut(i64::from(timeout_ms))),
                    };
                }
            }
        }
    }

    /// A follower's fetch at `offset`, with its log start `log_start`, reached this leader (see
    /// [`Replication::follower_fetched`]): its position moves the high watermark, and a
    /// follower that has caught up is proposed for the ISR when `broker_epoch` is given: the
    /// epoch of the fetching broker's registration when the metadata lets it join (live). NOT_LEADER_OR_FOLLOWER when this broker does not lead or `replica` is
    /// not a replica. Returns whether an ISR change now waits to be sent.
    pub fn follower_fetched(
        &self,
        replica: i32,
        offset: i64,
        log_start: i64,
        broker_epoch: Option<i64>,
        now_ms: i64,
    ) -> Result<bool, BrokerError> {
        let now = now_ms;
        let end = self.log_end_offset();
        let log_start_moved = {
            let mut repl = self.replication();
            if !repl.follower_fetched(replica, offset, end, now) {
                return Err(BrokerError::NotLeaderOrFollower(format!(
                    "{}-{} (broker {replica} fetched as a replica of it, but this broker does not lead it with that replica)",
                    self.topic, self.index
                )));
            }
            repl.follower_log_start(replica, log_start)
        };
        if log_start_moved {
            self.wake_waiters(); // a DeleteRecords may wait for it
        }
        self.advance_high_watermark();
        let hw = self.high_watermark();
        if self.replication().propose_expand(replica, hw, broker_epoch) {
            self.isr_change_waiting.store(true, Ordering::Release);
            return Ok(true);
        }
        Ok(false)
    }

    /// Proposes removing the ISR members that have not caught up for `lag_ms` (run every
    /// `replica.lag.time.max.ms / 2`). Returns whether a change now waits to be sent.
    pub fn maybe_shrink_isr(&self, now_ms: i64, lag_ms: i64) -> bool {
        let local = self.local_id();
        if self.replication().propose_shrink(local, now_ms, lag_ms) {
            self.isr_change_waiting.store(true, Ordering::Release);
            return true;
        }
        false
    }

    /// The ISR change to send to the controller now, if any (marked sent).
    pub fn take_isr_proposal(&self) -> Option<PendingIsr> {
        if !self.isr_change_waiting.swap(false, Ordering::AcqRel) {
            return None;
        }
        self.replication().take_proposal()
    }

    /// KIP-73: whether this partition's replication is throttled on one side (the topic's
    /// `leader.replication.throttled.replicas`, with `leader_side`, or
    /// `follower.replication.throttled.replicas`, naming this partition on `local_id`), and if
    /// so whether `replica` (the fetching follower) is in the ISR, which exempts it. `None`
    /// when not throttled; `Some(in_sync)` when throttled.
    pub fn replication_throttle(&self, leader_side: bool, local_id: i32, replica: i32) -> Option<bool> {
        let listed = {
            let st = self.lock();
            let list = if leader_side { &st.settings.leader_throttled } else { &st.settings.follower_throttled };
            list.contains(self.index, local_id)
        };
        listed.then(|| self.replication().assignment().is_some_and(|a| a.isr.contains(&replica)))
    }

    /// The high watermark the `replication-offset-checkpoint` file kept for this partition:
    /// used (capped by the log) when its first registration makes it a replicated partition.
    pub fn restore_high_watermark(&self, hw: i64) {
        self.restored_hw.store(hw, Ordering::Release);
    }

    /// Whether this broker leads or follows the partition (as the last registration applied
    /// says).
    pub fn role(&self) -> super::replication::Role {
        self.replication().role()
    }

    /// The replica a consumer in `client_rack` fetching at `fetch_offset` should read from
    /// instead of this leader (KIP-392); see [`Replication::preferred_read_replica`].
    pub fn preferred_read_replica(
        &self,
        local_id: i32,
        client_rack: &str,
        fetch_offset: i64,
        rack_of: impl Fn(i32) -> Option<String>,
    ) -> Option<i32> {
        self.replication().preferred_read_replica(local_id, client_rack, fetch_offset, rack_of)
    }

    /// The controller's answer to an ISR change (see [`Replication::proposal_answered`]);
    /// `None` when it could not be asked: the change waits to be sent again.
    pub fn isr_proposal_answered(&self, proposal: &PendingIsr, outcome: Option<&strata_metadata::channel::IsrOutcome>) {
        let mut repl = self.replication();
        repl.proposal_answered(proposal, outcome);
        if repl.has_unsent() {
            self.isr_change_waiting.store(true, Ordering::Release);
        }
    }

    /// Appends records fetched from the leader (Kafka's `appendRecordsToFollowerOrFutureReplica`):
    /// whole batches are CRC-checked, those already here are skipped, a trailing partial batch
    /// is left for the next fetch. Producer state follows, as on the leader, so that this
    /// replica deduplicates retries once it leads. Under group commit the append is fsynced
    /// before the new end is published (a follower reports only what is durable). Returns
    /// the number of bytes appended; nothing when this replica no longer follows `from` (the
    /// response is stale). A replica whose log is empty and starts inside the first batch (it
    /// started over at the leader's log start, which DeleteRecords may put inside a batch)
    /// starts at that batch instead. Waits on the disk: run off the async workers.
    pub fn append_as_follower(&self, records: &[u8], from: Following, now_ms: i64) -> Result<usize, BrokerError> {
        let end = self.lock().log.as_ref().ok_or(BrokerError::ShuttingDown)?.log_end_offset();
        let mut start = None;
        let mut len = 0usize;
        let mut headers = Vec::new();
        for item in strata_protocol::batch::BatchIter::new(records) {
            let Ok((h, bytes)) = item else { break }; // a partial batch at the end
            let at = len;
            len += h.total_size();
            if h.last_offset() < end {
                continue;
            }
            if !strata_protocol::batch::verify_crc(bytes) {
                return Err(BrokerError::CorruptMessage(format!(
                    "batch at offset {} fetched from the leader fails its CRC",
                    h.base_offset
                )));
            }
            start.get_or_insert(at);
            headers.push((h, at..len));
        }
        let Some(start) = start else { return Ok(0) };
        let batches = &records[start..len];
        let mut guard = self.lock();
        let st = &mut *guard;
        if !self.replication().follows(from) {
            return Ok(0);
        }
        let log = st.log.as_mut().ok_or(BrokerError::ShuttingDown)?;
        if let Some((first, _)) = headers.first() {
            if first.base_offset < log.log_end_offset() && log.log_end_offset() == log.log_start_offset() {
                log.truncate_fully_and_start_at(first.base_offset)?;
                st.producers = ProducerStateTable::default();
            }
        }
        let segment_before = log.active_base_offset();
        log.append_as_follower(batches, now_ms)?;
        let snapshot = (log.active_base_offset() != segment_before)
            .then(|| (log.snapshot_writer(), log.active_base_offset(), st.producers.encode()));
        for (h, range) in headers.iter().filter(|(h, _)| h.has_producer_id()) {
            apply_to_producers(&mut st.producers, log, h, &records[range.clone()], &self.topic, self.index)?;
        }
        if self.group_commit.load(Ordering::Relaxed) {
            log.flush()?;
        }
        self.publish_offsets(log);
        drop(guard);
        if let Some((writer, offset, payload)) = snapshot {
            self.write_snapshot(&writer, offset, &payload);
        }
        Ok(batches.len())
    }

    /// A follower's high watermark: the leader's, capped at its own log end (it may be behind).
    pub fn set_follower_high_watermark(&self, leader_high_watermark: i64, from: Following) {
        let moved = {
            let repl = self.replication();
            if !repl.follows(from) {
                return;
            }
            let hw = leader_high_watermark.min(self.log_end_offset()).max(self.log_start_offset());
            self.high_watermark.swap(hw, Ordering::AcqRel) != hw
        };
        if moved {
            self.wake_waiters();
        }
    }

    /// Truncates a follower's log to `offset` (KIP-101: what OffsetForLeaderEpoch says was
    /// never committed) and rebuilds the producer state from the newest snapshot at or below
    /// the new end. Nothing when this replica no longer follows `from`. Waits on the disk.
    pub fn truncate_to(&self, offset: i64, from: Following) -> Result<(), BrokerError> {
        let mut guard = self.lock();
        let st = &mut *guard;
        if !self.replication().follows(from) {
            return Ok(());
        }
        let log = st.log.as_mut().ok_or(BrokerError::ShuttingDown)?;
        if offset >= log.log_end_offset() {
            return Ok(());
        }
        log.truncate_to(offset)?;
        let (producers, _) = load_producer_state(log, &self.topic, self.index, &st.settings)?;
        st.producers = producers;
        self.snapshot_offset.fetch_min(log.log_end_offset(), Ordering::Relaxed);
        self.high_watermark.fetch_min(log.log_end_offset(), Ordering::AcqRel);
        self.publish_offsets(log);
        Ok(())
    }

    /// Empties a follower's log and restarts it at `offset`: the leader's log starts after
    /// this replica's end (Kafka's `truncateFullyAndStartAt`). Nothing when this replica no
    /// longer follows `from`. Waits on the disk.
    pub fn reset_to(&self, offset: i64, from: Following) -> Result<(), BrokerError> {
        let mut guard = self.lock();
        let st = &mut *guard;
        if !self.replication().follows(from) {
            return Ok(());
        }
        let log = st.log.as_mut().ok_or(BrokerError::ShuttingDown)?;
        log.truncate_fully_and_start_at(offset)?;
        st.producers = ProducerStateTable::default();
        self.snapshot_offset.store(-1, Ordering::Relaxed);
        self.high_watermark.store(offset, Ordering::Release);
        self.publish_offsets(log);
        Ok(())
    }

    /// The newest leader epoch in this replica's log, if any.
    pub fn latest_epoch(&self) -> Option<i32> {
        self.lock().log.as_ref().and_then(Log::latest_epoch)
    }

    /// Bytes of the partition's segment files (DescribeLogDirs); 0 once closed.
    pub fn size_bytes(&self) -> u64 {
        self.lock().log.as_ref().map_or(0, Log::size_bytes)
    }

    /// OffsetForLeaderEpoch: the largest epoch at or below `epoch` and where it ends (see
    /// [`Log::end_offset_for_epoch`]).
    pub fn end_offset_for_epoch(&self, epoch: i32) -> Result<(i32, i64), BrokerError> {
        let st = self.lock();
        let log = st.log.as_ref().ok_or(BrokerError::ShuttingDown)?;
        log.check_online()?;
        Ok(log.end_offset_for_epoch(epoch))
    }

    /// The leader epoch of the record at `offset` (or, with `None`, of the newest record), -1
    /// when unknown: what ListOffsets v4+ reports beside an offset.
    pub fn epoch_at(&self, offset: Option<i64>) -> i32 {
        let st = self.lock();
        let Some(log) = st.log.as_ref() else { return -1 };
        match offset {
            Some(o) => log.epoch_for_offset(o),
            // Kafka reports the partition's current leader epoch for the latest offset.
            None => log.leader_epoch().or(log.latest_epoch()),
        }
        .unwrap_or(-1)
    }

    /// Kafka's check before an acks=all append (`Partition.appendRecordsToLeader`): with fewer
    /// in-sync replicas than the topic's `min.insync.replicas`, the produce is refused with
    /// NOT_ENOUGH_REPLICAS (retriable) and nothing is appended. acks 0 and 1 are not checked.
    /// The topic's `min.insync.replicas`.
    pub fn min_insync_replicas(&self) -> usize {
        self.min_isr.load(Ordering::Relaxed)
    }

    pub fn check_min_isr(&self, acks: i16, in_sync: usize) -> Result<(), BrokerError> {
        let required = self.min_isr.load(Ordering::Relaxed);
        if acks == -1 && in_sync < required {
            return Err(BrokerError::NotEnoughReplicas { in_sync, required });
        }
        Ok(())
    }

    /// Validates and appends one producer batch (the bytes of one partition
    /// of a Produce request). A retried duplicate of an idempotent batch
    /// returns the offsets it got the first time.
    pub fn append(&self, records: &Bytes, now_ms: i64) -> Result<AppendResult, BrokerError> {
        self.append_from(records, now_ms, Origin::Client(Verification::Off))
    }

    /// [`Self::append`] of a transactional producer's batch with what the leader knows of its
    /// verification (KIP-890 part 1): a batch that would open a transaction needs the guard of
    /// a verification the coordinator confirmed, else INVALID_TXN_STATE.
    pub fn append_verified(
        &self,
        records: &Bytes,
        now_ms: i64,
        verification: Verification,
    ) -> Result<AppendResult, BrokerError> {
        self.append_from(records, now_ms, Origin::Client(verification))
    }

    /// Before a transactional producer's batch at `epoch` is verified with its coordinator:
    /// `None` when the producer already has a transaction open here at that epoch (nothing to
    /// verify), else a verification guard. NOT_LEADER_OR_FOLLOWER on a follower.
    pub fn prepare_verification(&self, producer_id: i64, epoch: i16) -> Result<Option<u64>, BrokerError> {
        let mut st = self.lock();
        if self.replication().role() == Role::Follower {
            return Err(BrokerError::NotLeaderOrFollower(format!("{}-{}", self.topic, self.index)));
        }
        if st.producers.has_open_txn(producer_id, epoch) {
            return Ok(None);
        }
        Ok(Some(st.producers.new_guard(producer_id)))
    }

    /// Whether `guard` (from [`Self::prepare_verification`]) is still in place for
    /// `producer_id`.
    pub fn has_guard(&self, producer_id: i64, guard: u64) -> bool {
        self.lock().producers.has_guard(producer_id, guard)
    }

    /// The producers this replica remembers (DescribeProducers): any replica answers, as in
    /// Kafka.
    pub fn active_producers(&self) -> Vec<crate::replica::producer_state::ActiveProducer> {
        self.lock().producers.active_producers()
    }

    /// Whether producer `producer_id` may still write at `epoch` here: INVALID_PRODUCER_EPOCH
    /// if the partition has seen a newer epoch of it.
    pub fn check_producer_epoch(&self, producer_id: i64, epoch: i16) -> Result<(), BrokerError> {
        self.lock().producers.check_epoch(producer_id, epoch)
    }

    /// Appends a batch the group coordinator wrote for a producer's transaction
    /// (TxnOffsetCommit; Kafka's `AppendOrigin.COORDINATOR`): the producer's epoch is checked
    /// (an older one is INVALID_PRODUCER_EPOCH) but not its sequence numbers, which belong to
    /// the producer's own batches.
    /// `verification`: as for [`Self::append_verified`] (KIP-890 covers these writes too).
    pub fn append_from_coordinator(
        &self,
        records: &Bytes,
        now_ms: i64,
        verification: Verification,
    ) -> Result<AppendResult, BrokerError> {
        self.append_from(records, now_ms, Origin::Coordinator(verification))
    }

    fn append_from(&self, records: &Bytes, now_ms: i64, origin: Origin) -> Result<AppendResult, BrokerError> {
        // Validation reads every record (and may recompress): it runs outside the partition
        // lock, so producers of one partition validate in parallel and readers are not held up.
        let settings = self.lock().settings.clone();
        let prepared = prepare_batch(records, &settings, now_ms)?;
        let header = prepared.header;
        if self.append_would_roll(records, now_ms) {
            // The roll fsyncs the segment it closes, under the partition lock. Fsync it now,
            // without the lock, so that one has only what arrives meanwhile left to write and
            // readers of this partition are not held up by a segment-sized fsync.
            self.flush_for_commit()?;
        }
        let log_append_time = if settings.log_append_time { now_ms } else { -1 };
        let mut guard = self.lock();
        let st = &mut *guard;
        // Leadership may have moved since the caller looked it up: a follower's log takes only
        // what its leader sends (it would diverge, and the records would be truncated away).
        if self.replication().role() == Role::Follower {
            return Err(BrokerError::NotLeaderOrFollower(format!(
                "{}-{} (this broker stopped leading it)",
                self.topic, self.index
            )));
        }
        if let (true, Origin::Coordinator(verification)) = (header.has_producer_id(), origin) {
            st.producers.check_epoch(header.producer_id, header.producer_epoch)?;
            st.producers.check_verified(&header, verification)?;
        } else if header.has_producer_id() {
            let check = st.producers.check(&header)?;
            if let Origin::Client(verification) = origin {
                if check == SequenceCheck::Append {
                    st.producers.check_verified(&header, verification)?;
                }
            }
            if let SequenceCheck::Duplicate(meta) = check {
                let log_start = st.log.as_ref().map_or(0, Log::log_start_offset);
                let end = st.log.as_ref().map_or(0, Log::log_end_offset);
                let leader_epoch = st.log.as_ref().and_then(Log::leader_epoch).unwrap_or(-1);
                drop(guard);
                if self.group_commit.load(Ordering::Relaxed) {
                    // The first attempt may still be waiting for its fsync.
                    self.commit_through(end)?;
                }
                return Ok(AppendResult {
                    base_offset: meta.first_offset,
                    last_offset: meta.last_offset,
                    leader_epoch,
                    log_append_time,
                    log_start_offset: log_start,
                });
            }
        }
        let log = st.log.as_mut().ok_or(BrokerError::ShuttingDown)?;
        let segment_before = log.active_base_offset();
        let info = match prepared.rewritten {
            // Recompressed, or the broker's maxTimestamp (and so the CRC) differs.
            Some(mut copy) => log.append(&mut copy, now_ms)?,
            // The request's bytes go to the file as they are, beside the assigned base offset.
            None => log.append_batch(&records[..header.total_size()], now_ms)?,
        };
        // At a roll, snapshot the producer state of every batch below the new segment (this
        // batch is the new segment's first), as Kafka does; written without the lock.
        let snapshot = (log.active_base_offset() != segment_before)
            .then(|| (log.snapshot_writer(), log.active_base_offset(), st.producers.encode()));
        let leader_epoch = log.leader_epoch().unwrap_or(-1);
        let stored = BatchHeader { base_offset: info.first_offset, ..header };
        st.producers.record(&stored);
        self.publish_offsets(log);
        let log_start_offset = log.log_start_offset();
        drop(guard);
        self.complete_append(
            snapshot,
            AppendResult {
                base_offset: info.first_offset,
                last_offset: info.last_offset,
                leader_epoch,
                log_append_time,
                log_start_offset,
            },
        )
    }

    /// What follows an append once the partition lock is released: the producer snapshot of
    /// a roll is written, then, under group commit, the append waits for its fsync (it is
    /// acknowledged only once durable; a failed fsync takes the log offline and the append
    /// fails with KAFKA_STORAGE_ERROR); otherwise waiting readers are woken.
    fn complete_append(
        &self,
        snapshot: Option<RollSnapshot>,
        result: AppendResult,
    ) -> Result<AppendResult, BrokerError> {
        if let Some((writer, offset, payload)) = snapshot {
            self.write_snapshot(&writer, offset, &payload);
        }
        if self.group_commit.load(Ordering::Relaxed) {
            self.commit_through(result.last_offset + 1)?;
        } else {
            self.wake_waiters();
        }
        Ok(result)
    }

    /// Reads from `offset` up to `max_bytes` (at least one whole batch if any
    /// is there), never past the high watermark. May read the segment file to CRC-check
    /// batches read for the first time: not for async workers (see [`Partition::read_cached`]).
    pub fn read(&self, offset: i64, max_bytes: usize) -> Result<ReadResult, BrokerError> {
        self.read_with(offset, max_bytes, false, ReadBound::HighWatermark)?
            .ok_or(BrokerError::Storage("read asked to be repeated".to_owned()))
    }

    /// [`Partition::read`] up to `bound`: the high watermark for consumers, the log end for
    /// followers.
    pub fn read_to(&self, offset: i64, max_bytes: usize, bound: ReadBound) -> Result<ReadResult, BrokerError> {
        self.read_with(offset, max_bytes, false, bound)?
            .ok_or(BrokerError::Storage("read asked to be repeated".to_owned()))
    }

    /// [`Partition::read`] without reading the segment file: only batches already CRC-checked
    /// are returned (from the mapping, which holds them in the page cache), and `Ok(None)`
    /// says the first batch needs a check from disk, to be done with [`Partition::read`] off
    /// the async workers.
    pub fn read_cached(
        &self,
        offset: i64,
        max_bytes: usize,
        bound: ReadBound,
    ) -> Result<Option<ReadResult>, BrokerError> {
        self.read_with(offset, max_bytes, true, bound)
    }

    fn read_with(
        &self,
        offset: i64,
        max_bytes: usize,
        cached_only: bool,
        bound: ReadBound,
    ) -> Result<Option<ReadResult>, BrokerError> {
        let mut guard = self.lock();
        let st = &mut *guard;
        // Read under the lock: the high watermark, or the published end (under group commit,
        // the fsynced end), which a follower replicates.
        let hw = self.high_watermark();
        let log = st.log.as_ref().ok_or(BrokerError::ShuttingDown)?;
        let lso = stable_offset(&mut st.producers, hw, log.log_start_offset());
        let max_offset = match bound {
            ReadBound::HighWatermark => hw,
            ReadBound::LastStable => lso,
            ReadBound::LogEnd => self.log_end_offset(),
        };
        let info = if cached_only {
            log.read_cached(offset, max_bytes, max_offset)?
        } else {
            Some(log.read(offset, max_bytes, max_offset)?)
        };
        Ok(info.map(|info| {
            let aborted = match bound {
                ReadBound::LastStable if !info.records.is_empty() => {
                    // Up to the end of the last batch read (Kafka's upper bound of the fetch).
                    let end = strata_protocol::batch::BatchIter::new(&info.records)
                        .map_while(Result::ok)
                        .last()
                        .map_or(offset, |(h, _)| h.last_offset() + 1);
                    log.collect_aborted_txns(offset, end)
                }
                _ => Vec::new(),
            };
            ReadResult {
                records: info.records,
                file_range: info.file_range,
                high_watermark: hw,
                last_stable_offset: lso,
                log_start_offset: info.log_start_offset,
                aborted,
            }
        }))
    }

    /// The last stable offset (LSO): the first offset of the earliest transaction not yet
    /// decided by a marker the high watermark passed, capped by the high watermark; the high
    /// watermark when there is none (Kafka's `UnifiedLog.lastStableOffset`). What
    /// `read_committed` consumers read up to. Invariant: `log_start <= LSO <= HW <= LEO`.
    pub fn last_stable_offset(&self) -> i64 {
        let mut st = self.lock();
        let hw = self.high_watermark();
        stable_offset(&mut st.producers, hw, self.log_start_offset())
    }

    /// Appends a transaction marker as this partition's leader (WriteTxnMarkers; Kafka's
    /// `appendRecordsToLeader` from the coordinator): the producer's open transaction is
    /// committed or aborted, an aborted one gets its entry in the aborted-transaction index.
    /// NOT_LEADER_OR_FOLLOWER on a follower; INVALID_PRODUCER_EPOCH for an older producer
    /// epoch; TRANSACTION_COORDINATOR_FENCED for an older coordinator epoch. Waits on the disk.
    pub fn append_txn_marker(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        marker: EndTxnMarker,
        now_ms: i64,
    ) -> Result<AppendResult, BrokerError> {
        let mut batch = encode_marker(producer_id, producer_epoch, marker, now_ms).to_vec();
        if self.append_would_roll(&batch, now_ms) {
            // As for `append`: the roll's fsync is mostly done before the lock is taken.
            self.flush_for_commit()?;
        }
        let mut guard = self.lock();
        let st = &mut *guard;
        if self.replication().role() == Role::Follower {
            return Err(BrokerError::NotLeaderOrFollower(format!(
                "{}-{} (this broker stopped leading it)",
                self.topic, self.index
            )));
        }
        st.producers.check_marker(producer_id, producer_epoch, marker.coordinator_epoch)?;
        let log = st.log.as_mut().ok_or(BrokerError::ShuttingDown)?;
        let segment_before = log.active_base_offset();
        let info = log.append(&mut batch, now_ms)?;
        let snapshot = (log.active_base_offset() != segment_before)
            .then(|| (log.snapshot_writer(), log.active_base_offset(), st.producers.encode()));
        let header = BatchHeader::parse(&batch).map_err(|e| BrokerError::Internal(e.to_string()))?;
        let stored = BatchHeader { base_offset: info.first_offset, ..header };
        apply_to_producers(&mut st.producers, log, &stored, &batch, &self.topic, self.index)?;
        let leader_epoch = log.leader_epoch().unwrap_or(-1);
        self.publish_offsets(log);
        let log_start_offset = log.log_start_offset();
        drop(guard);
        self.complete_append(
            snapshot,
            AppendResult {
                base_offset: info.first_offset,
                last_offset: info.last_offset,
                leader_epoch,
                log_append_time: -1,
                log_start_offset,
            },
        )
    }

    /// ListOffsets by timestamp ([`Log::offset_for_timestamp`]): batch headers are searched
    /// under the partition lock, but the candidate batch's records are read (decompressed)
    /// without it, so appends and reads of the partition are not held up by a big batch.
    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(i64, i64)>, BrokerError> {
        let mut resume = None;
        loop {
            let candidate = {
                let st = self.lock();
                st.log.as_ref().ok_or(BrokerError::ShuttingDown)?.timestamp_candidate(ts, resume)?
            };
            match candidate {
                TimestampCandidate::None => return Ok(None),
                TimestampCandidate::Batch(batch) => match batch.find()? {
                    // The log start may have passed the answer while the lock was dropped
                    // (DeleteRecords, retention): search again from the new start.
                    Some(found) => match self.lock().log.as_ref().map(|l| l.log_start_offset()) {
                        Some(start) if start > found.0 => resume = None,
                        _ => return Ok(Some(found)),
                    },
                    None => resume = Some(batch.resume),
                },
            }
        }
    }

    /// ListOffsets `MAX_TIMESTAMP` ([`Log::max_timestamp_offset`]), with the records of the
    /// batches it must read (decompressing) read without the partition lock.
    pub fn max_timestamp_offset(&self) -> Result<Option<(i64, i64)>, BrokerError> {
        // The lock is dropped between the steps: when the log start moved meanwhile
        // (DeleteRecords, retention), the plan may point below it, so start over. Each retry
        // follows a move of the log start (or a truncation); after a few, the answer is worked
        // out under the lock in one go.
        for _ in 0..8 {
            let plan = self.lock().log.as_ref().ok_or(BrokerError::ShuttingDown)?.max_timestamp_plan()?;
            let best = plan.best(plan.partial_best()?);
            let st = self.lock();
            let log = st.log.as_ref().ok_or(BrokerError::ShuttingDown)?;
            if log.log_start_offset() != plan.log_start_offset() {
                continue;
            }
            match best {
                None => return Ok(None),
                Some(MaxTimestampFound::Record(found)) => return Ok(Some(found)),
                Some(MaxTimestampFound::InBatch(offset)) => {
                    let Some(batch) = log.batch_holding(offset)? else { continue };
                    drop(st);
                    return Ok(batch.max_record()?);
                }
            }
        }
        Ok(self.lock().log.as_ref().ok_or(BrokerError::ShuttingDown)?.max_timestamp_offset()?)
    }

    /// Runs `f` on the log under the partition lock.
    pub fn with_log<T>(&self, f: impl FnOnce(&mut Log) -> Result<T, BrokerError>) -> Result<T, BrokerError> {
        let mut st = self.lock();
        let log = st.log.as_mut().ok_or(BrokerError::ShuttingDown)?;
        let out = f(log);
        self.publish_offsets(log);
        out
    }

    /// Parks a long-poll fetch on this partition until the returned [`Watch`] is dropped:
    /// `waiter` is notified at every append, close or delete meanwhile. A notification that
    /// fires before the waiter awaits it is kept, so no append is missed.
    pub fn watch(&self, waiter: &Arc<Notify>) -> Watch {
        self.watchers.watch(waiter)
    }

    /// How many fetches are parked on this partition right now.
    pub fn parked_fetches(&self) -> usize {
        self.watchers.len()
    }

    fn wake_waiters(&self) {
        self.watchers.wake_all();
    }

    /// Closes the log cleanly: flush, a producer snapshot at the log end (so the next start
    /// replays nothing), clean-shutdown marker. Later calls answer ShuttingDown.
    pub fn close(&self) -> Result<(), BrokerError> {
        let (log, payload) = {
            let mut st = self.lock();
            (st.log.take(), st.producers.encode())
        };
        self.wake_waiters();
        let Some(mut log) = log else { return Ok(()) };
        if log.flush().is_ok() {
            self.write_snapshot(&log.snapshot_writer(), log.log_end_offset(), &payload);
        }
        log.close().map_err(BrokerError::from)
    }

    /// DeleteRecords: moves the log start forward to `offset` (see
    /// [`Log::advance_log_start`]); returns the new log start. Before it moves, the producer
    /// state is snapshotted at the log end (made durable first): a restart replays no batch
    /// below the log start, and producers known only from the batches between the last
    /// snapshot and the new log start must not be forgotten (a retry of their acknowledged
    /// batch would be appended again). Snapshot first, so no crash can leave the log start
    /// moved without it.
    pub fn advance_log_start(&self, offset: i64) -> Result<i64, BrokerError> {
        if offset > self.log_start_offset() {
            self.snapshot_at_log_end()?;
        }
        let mut st = self.lock();
        let log = st.log.as_mut().ok_or(BrokerError::ShuttingDown)?;
        let result = log.advance_log_start(offset);
        self.publish_offsets(log);
        Ok(result?)
    }

    /// Snapshots the producer state at the log end, after making the log durable up to it
    /// (the bulk of that fsync without the partition lock).
    fn snapshot_at_log_end(&self) -> Result<(), BrokerError> {
        self.flush_for_commit()?;
        let (writer, offset, payload) = {
            let mut st = self.lock();
            let log = st.log.as_mut().ok_or(BrokerError::ShuttingDown)?;
            if log.recovery_point() < log.log_end_offset() {
                log.flush()?; // appends came in meanwhile
            }
            // The replay from this snapshot will not re-add entries for markers below it.
            log.flush_txn_index()?;
            let snapshot = (log.snapshot_writer(), log.log_end_offset());
            self.publish_offsets(log);
            (snapshot.0, snapshot.1, st.producers.encode())
        };
        let _serial = self.snapshot_write.lock().unwrap_or_else(PoisonError::into_inner);
        writer.write(offset, &payload)?;
        self.snapshot_offset.fetch_max(offset, Ordering::Relaxed);
        Ok(())
    }

    /// Writes a producer snapshot. A failure costs only start time (the next start replays
    /// from an older snapshot), so it is logged, not returned.
    fn write_snapshot(&self, writer: &SnapshotWriter, offset: i64, payload: &[u8]) {
        let _serial = self.snapshot_write.lock().unwrap_or_else(PoisonError::into_inner);
        match writer.write(offset, payload) {
            Ok(()) => {
                self.snapshot_offset.fetch_max(offset, Ordering::Relaxed);
            }
            Err(e) => tracing::warn!(topic = %self.topic, partition = self.index, offset, error = %e,
                "writing the producer snapshot failed; the next start replays more of the log"),
        }
    }

    /// Retention now ([`strata_log::maintenance::enforce_retention`] on this partition
    /// alone): the number of segments deleted.
    #[cfg(test)]
    pub fn enforce_retention(self: &Arc<Self>, now_ms: i64) -> usize {
        strata_log::maintenance::enforce_retention(
            &[self.clone() as Arc<dyn strata_log::maintenance::ManagedLog>],
            now_ms,
        )
    }

    /// Forgets the producers idle longer than the topic's `producer.id.expiration.ms`.
    /// Returns how many were forgotten.
    pub fn remove_expired_producers(&self, now_ms: i64) -> usize {
        let mut st = self.lock();
        let expiration = st.settings.producer_id_expiration_ms;
        st.producers.remove_expired(now_ms, expiration)
    }

    /// How many producers' state this partition holds.
    pub fn producer_count(&self) -> usize {
        self.lock().producers.len()
    }

    /// Closes and removes the log's files (topic deletion).
    pub fn delete(&self) -> Result<(), BrokerError> {
        let log = self.lock().log.take();
        // Parked acks=all produces and DeleteRecords fail now (NOT_LEADER_OR_FOLLOWER), not
        // at their timeout.
        self.replication().resign();
        self.wake_waiters();
        match log {
            Some(log) => log.delete().map_err(BrokerError::from),
            None => Ok(()),
        }
    }
}

/// Where [`load_producer_state`] started from.
struct ProducerStateLoaded {
    /// The snapshot used, -1 for none.
    snapshot_offset: i64,
    /// Batch headers replayed after it.
    replayed: usize,
}

/// Rebuilds idempotent-producer state from a log: the newest intact producer snapshot, then
/// the batches from its offset on (the whole log when there is no usable snapshot), without
/// the producers idle longer than `producer.id.expiration.ms`.
fn load_producer_state(
    log: &mut Log,
    topic: &str,
    index: i32,
    settings: &TopicSettings,
) -> Result<(ProducerStateTable, ProducerStateLoaded), BrokerError> {
    let mut snapshot_offset = -1;
    let (mut producers, replay_from) = match log.latest_snapshot()? {
        Some((offset, payload)) => match ProducerStateTable::decode(&payload) {
            Ok(table) => {
                snapshot_offset = offset;
                (table, offset)
            }
            Err(reason) => {
                tracing::warn!(%topic, partition = index, offset, reason,
                    "unreadable producer snapshot; rebuilding producer state from the whole log");
                (ProducerStateTable::default(), log.log_start_offset())
            }
        },
        None => (ProducerStateTable::default(), log.log_start_offset()),
    };
    let headers = log.batch_headers(replay_from)?;
    for header in &headers {
        if header.is_control() {
            // A marker: its record says commit or abort (one read per marker replayed).
            let end = log.log_end_offset();
            match log.read(header.base_offset, header.total_size(), end) {
                Ok(read) => apply_to_producers(&mut producers, log, header, &read.records, topic, index)?,
                Err(e) => tracing::warn!(%topic, partition = index, offset = header.base_offset, error = %e,
                    "cannot read a transaction marker while loading producer state; skipping it"),
            }
        } else {
            producers.record(header);
        }
    }
    let expired = producers.remove_expired(super::now_ms(), settings.producer_id_expiration_ms);
    tracing::debug!(%topic, partition = index, snapshot_offset = replay_from, batches_replayed = headers.len(),
        producers = producers.len(), expired, "producer state loaded");
    Ok((producers, ProducerStateLoaded { snapshot_offset, replayed: headers.len() }))
}

/// The LSO for a high watermark `hw` and a log start `log_start` (see
/// [`Partition::last_stable_offset`]): a transaction that began below the log start (which
/// DeleteRecords or retention moved past it) holds it at the log start, as Kafka's
/// `maybeIncrementFirstUnstableOffset` does.
fn stable_offset(producers: &mut ProducerStateTable, hw: i64, log_start: i64) -> i64 {
    producers.on_high_watermark(hw);
    producers.first_unstable_offset().map_or(hw, |first| first.min(hw)).max(log_start.min(hw))
}

/// Updates `producers` with an appended batch (`header` with its offset, `batch` its bytes):
/// a data batch as [`ProducerStateTable::record`]; a marker decides its producer's
/// transaction, and an aborted one gets its entry in the log's aborted-transaction index
/// (`ensure`, so a replay after a crash re-adds what the crash cut off, and nothing twice). A
/// control batch whose marker does not parse is skipped with a warning.
fn apply_to_producers(
    producers: &mut ProducerStateTable,
    log: &mut Log,
    header: &BatchHeader,
    batch: &[u8],
    topic: &str,
    index: i32,
) -> Result<(), BrokerError> {
    if !header.is_control() {
        producers.record(header);
        return Ok(());
    }
    match strata_protocol::records::control::parse_marker(batch) {
        Ok(marker) => {
            let decided = producers.record_marker(header, marker.commit, marker.coordinator_epoch);
            if decided.aborted {
                log.ensure_aborted_txn(AbortedTxn {
                    producer_id: decided.producer_id,
                    first_offset: decided.first_offset,
                    last_offset: decided.last_offset,
                    last_stable_offset: producers.last_stable_offset_after(&decided),
                })?;
            }
        }
        Err(e) => tracing::warn!(%topic, partition = index, offset = header.base_offset, error = %e,
            "skipping a control batch that is not a transaction marker"),
    }
    Ok(())
}

/// The log cleaner works on the partition's log under the partition lock only for its plan
/// and each segment swap (see `strata_log::cleaner::clean`).
/// Retention deletes segments only below the high watermark: what every in-sync replica holds
/// and consumers could read. Deleting segments moves the log start, so the producer state of
/// their batches must be in a snapshot first (as for [`Partition::advance_log_start`]); the one
/// written at the last roll normally covers them, and when it is missing (its write failed, or
/// the log predates snapshots) the state is snapshotted at the log end before anything goes.
impl strata_log::maintenance::ManagedLog for Partition {
    fn name(&self) -> String {
        format!("{}-{}", self.topic, self.index)
    }

    fn retention_bound(&self) -> i64 {
        self.high_watermark()
    }

    fn before_log_start_moves(&self) -> bool {
        let (active_base, log_start) = {
            let st = self.lock();
            let Some(log) = st.log.as_ref() else { return false };
            (log.active_base_offset(), log.log_start_offset())
        };
        if active_base > log_start && self.snapshot_offset.load(Ordering::Relaxed) < active_base {
            if let Err(e) = self.snapshot_at_log_end() {
                if !matches!(e, BrokerError::ShuttingDown) {
                    tracing::error!(topic = %self.topic, partition = self.index, error = %e,
                        "cannot snapshot the producer state; retention waits for the next round");
                }
                return false;
            }
        }
        true
    }
}

impl strata_log::cleaner::CleanableLog for Partition {
    fn with_log(&self, f: &mut dyn FnMut(&mut Log)) -> bool {
        let mut st = self.lock();
        let Some(log) = st.log.as_mut() else { return false };
        f(log);
        self.publish_offsets(log);
        true
    }

    fn producer_last_offsets(&self) -> std::collections::HashMap<i64, i64> {
        self.lock().producers.last_offsets()
    }

    fn last_stable_offset(&self) -> i64 {
        Partition::last_stable_offset(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use std::collections::HashMap;
    use strata_protocol::kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };

    fn batch(pid: i64, epoch: i16, seq: i32, n: usize, ts: i64) -> Bytes {
        batch_of(false, pid, epoch, seq, n, ts)
    }

    fn batch_of(transactional: bool, pid: i64, epoch: i16, seq: i32, n: usize, ts: i64) -> Bytes {
        let records: Vec<Record> = (0..n)
            .map(|i| Record {
                transactional,
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

    fn durable_settings() -> TopicSettings {
        let mut s = settings();
        s.log.flush_interval_messages = 1;
        s
    }

    fn partition_on(storage: &strata_log::storage::MemStorage, settings: TopicSettings) -> Partition {
        let log = Log::open_with_storage(
            Arc::new(storage.clone()),
            std::path::Path::new("/data/t-0"),
            settings.log.clone(),
            0,
        )
        .unwrap();
        Partition::new("t".into(), Uuid::new_v4(), 0, log, settings).unwrap()
    }

    /// A replicated partition's first registration starts its high watermark at the
    /// checkpointed one, capped by the log; without a checkpoint, at the log start.
    #[test]
    fn the_checkpointed_high_watermark_is_restored_within_the_log() {
        let storage = strata_log::storage::MemStorage::new();
        let p = partition_on(&storage, durable_settings());
        p.append(&batch(-1, -1, 0, 5, 0), 0).unwrap();
        p.close().unwrap();
        let replicated =
            super::Assignment { leader: 1, leader_epoch: 1, partition_epoch: 0, replicas: vec![1, 2], isr: vec![1, 2] };
        for (restored, expected) in [(Some(3), 3), (Some(99), 5), (None, 0)] {
            let p = partition_on(&storage, durable_settings());
            if let Some(hw) = restored {
                p.restore_high_watermark(hw);
            }
            p.apply_assignment(1, replicated.clone(), 0).unwrap();
            assert_eq!(p.high_watermark(), expected, "restored {restored:?}");
            p.close().unwrap();
        }
    }

    /// flush.messages=1: every acknowledged append is fsynced, appends of concurrent producers
    /// share fsyncs, and what readers see never runs ahead of what is durable.
    #[test]
    fn group_commit_shares_fsyncs_and_acknowledges_only_durable_appends() {
        let storage = strata_log::storage::MemStorage::new();
        let p = Arc::new(partition_on(&storage, durable_settings()));
        // One append alone: the syncs one flush costs (data file, and whatever else).
        p.append(&batch(-1, -1, 0, 1, 1000), 1000).unwrap();
        let syncs_before = storage.file_syncs();
        p.append(&batch(-1, -1, 0, 1, 1000), 1000).unwrap();
        let per_flush = storage.file_syncs() - syncs_before;
        assert!(per_flush >= 1);
        // A disk whose fsync takes 2 ms, so producers really overlap.
        storage.set_sync_delay(std::time::Duration::from_millis(2));
        let syncs_before = storage.file_syncs();
        let (threads, per_thread) = (8, 50);
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let p = p.clone();
                std::thread::spawn(move || {
                    let mut offsets = Vec::new();
                    for _ in 0..per_thread {
                        let r = p.append(&batch(-1, -1, 0, 1, 1000), 1000).unwrap();
                        // Acknowledged means visible (the high watermark is the fsynced end).
                        assert!(p.high_watermark() > r.base_offset);
                        offsets.push(r.base_offset);
                    }
                    offsets
                })
            })
            .collect();
        let mut all: Vec<i64> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
        all.sort_unstable();
        assert_eq!(all, (2..2 + threads * per_thread).collect::<Vec<i64>>(), "dense, no duplicates");
        assert_eq!(p.high_watermark(), p.with_log(|log| Ok(log.log_end_offset())).unwrap());
        let flushes = (storage.file_syncs() - syncs_before) / per_flush;
        let appends = (threads * per_thread) as u64;
        // Eight producers waiting on one fsync at a time: far fewer flushes than appends.
        assert!(flushes * 2 <= appends, "{flushes} flushes for {appends} appends");
        // A crash now loses nothing that was acknowledged.
        drop(p);
        storage.set_sync_delay(std::time::Duration::ZERO);
        storage.crash(11);
        let p = partition_on(&storage, durable_settings());
        assert_eq!(p.log_end_offset(), 2 + threads * per_thread);
    }

    #[test]
    fn turning_on_group_commit_never_moves_the_high_watermark_back() {
        let p = partition(settings());
        p.append(&batch(-1, -1, 0, 3, 1000), 1000).unwrap();
        assert_eq!(p.high_watermark(), 3);
        p.update_settings(durable_settings());
        // Anything that republishes the offsets (retention, the flush timer, ListOffsets).
        p.with_log(|_| Ok(())).unwrap();
        assert_eq!(p.high_watermark(), 3);
        assert_eq!(p.append(&batch(-1, -1, 0, 1, 1000), 1000).unwrap().base_offset, 3);
        assert_eq!(p.high_watermark(), 4);
    }

    #[test]
    fn group_commit_failure_is_not_acknowledged_or_visible() {
        let storage = strata_log::storage::MemStorage::new();
        let p = partition_on(&storage, durable_settings());
        p.append(&batch(-1, -1, 0, 2, 1000), 1000).unwrap();
        assert_eq!(p.high_watermark(), 2);
        storage.set_sync_failures(true);
        assert!(matches!(p.append(&batch(-1, -1, 0, 1, 1000), 1000), Err(BrokerError::Storage(_))));
        assert_eq!(p.high_watermark(), 2, "the unflushed record never became visible");
        assert!(matches!(p.read(0, 1 << 20), Err(BrokerError::Storage(_))), "the log is offline");
    }

    fn assignment(leader: i32, leader_epoch: i32) -> Assignment {
        Assignment { leader, leader_epoch, partition_epoch: leader_epoch, replicas: vec![1, 2, 3], isr: vec![1, 2, 3] }
    }

    /// Leadership moves under a produce and a fetcher: a follower refuses producers, drops
    /// what a fetcher of an older leader or epoch sends, and an acks=all wait started in the
    /// old epoch fails instead of being answered by the new leader's high watermark.
    #[test]
    fn stale_work_is_refused_after_leadership_moves() {
        let leader = partition(settings());
        leader.apply_assignment(1, assignment(1, 0), 0).unwrap();
        let appended = leader.append(&batch(-1, -1, 0, 2, 1000), 1000).unwrap();
        assert_eq!(appended.leader_epoch, 0);
        assert!(leader.acks_all_done(appended.last_offset, 0).is_none(), "followers have not fetched");
        leader.apply_assignment(1, assignment(2, 1), 0).unwrap();
        assert!(matches!(
            leader.acks_all_done(appended.last_offset, 0),
            Some(Err(BrokerError::NotLeaderOrFollower(_)))
        ));
        assert!(matches!(leader.append(&batch(-1, -1, 0, 1, 1000), 1000), Err(BrokerError::NotLeaderOrFollower(_))));

        // A follower of broker 2 in epoch 1 takes only what that pairing sends.
        let source = partition(settings());
        source.append(&batch(-1, -1, 0, 3, 1000), 1000).unwrap();
        let records = source.read(0, 1 << 20).unwrap().records;
        let f = partition(settings());
        f.apply_assignment(3, assignment(2, 1), 0).unwrap();
        let stale = Following { leader: 1, leader_epoch: 0 };
        assert_eq!(f.append_as_follower(&records, stale, 1000).unwrap(), 0);
        f.set_follower_high_watermark(3, stale);
        assert_eq!((f.log_end_offset(), f.high_watermark()), (0, 0));
        let current = Following { leader: 2, leader_epoch: 1 };
        assert!(f.append_as_follower(&records, current, 1000).unwrap() > 0);
        f.set_follower_high_watermark(3, current);
        assert_eq!((f.log_end_offset(), f.high_watermark()), (3, 3));
        f.truncate_to(1, stale).unwrap();
        assert_eq!(f.log_end_offset(), 3, "a stale truncation changes nothing");
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

    /// Settings whose segments hold one small batch each, so every append rolls.
    fn tiny_segments() -> TopicSettings {
        let mut s = settings();
        s.log.segment_bytes = 100;
        s
    }

    fn now() -> i64 {
        crate::replica::now_ms()
    }

    /// The partition side of transactions: the last stable offset stops at the earliest
    /// open transaction, a marker decides it, `read_committed` reads stop at the LSO and name
    /// the aborted transactions among their records; all of it survives a restart (open
    /// transactions from the producer state, aborted ones from the `.txnindex`).
    #[test]
    fn transactions_bound_read_committed_reads_and_survive_a_restart() {
        let storage = strata_log::storage::MemStorage::new();
        let p = partition_on(&storage, settings());
        let commit = EndTxnMarker { commit: true, coordinator_epoch: 1 };
        let abort = EndTxnMarker { commit: false, coordinator_epoch: 1 };
        p.append(&batch(-1, -1, 0, 2, now()), now()).unwrap(); // 0-1, plain
        p.append(&batch_of(true, 7, 0, 0, 2, now()), now()).unwrap(); // 2-3, producer 7
        p.append(&batch_of(true, 8, 0, 0, 1, now()), now()).unwrap(); // 4, producer 8
        assert_eq!((p.high_watermark(), p.last_stable_offset()), (5, 2));
        let committed_read = |from| p.read_to(from, 1 << 20, ReadBound::LastStable).unwrap();
        assert_eq!(records_in(&committed_read(0).records), 2, "only what precedes the open transaction");
        assert!(matches!(p.append(&batch(7, 0, 2, 1, now()), now()), Err(BrokerError::InvalidTxnState(_))));

        let m7 = p.append_txn_marker(7, 0, abort, now()).unwrap(); // 5
        assert_eq!(m7.base_offset, 5);
        assert_eq!(p.last_stable_offset(), 4, "producer 8's transaction is still open");
        assert!(matches!(
            p.append_txn_marker(7, 0, EndTxnMarker { coordinator_epoch: 0, ..commit }, now()),
            Err(BrokerError::TransactionCoordinatorFenced { .. })
        ));
        assert!(matches!(p.append_txn_marker(7, -1, abort, now()), Err(BrokerError::InvalidProducerEpoch { .. })));
        p.append_txn_marker(8, 0, commit, now()).unwrap(); // 6
        assert_eq!(p.last_stable_offset(), 7);
        let read = committed_read(0);
        assert_eq!(records_in(&read.records), 7);
        let aborted = |r: &ReadResult| r.aborted.iter().map(|t| (t.producer_id, t.first_offset)).collect::<Vec<_>>();
        assert_eq!(aborted(&read), vec![(7, 2)]);
        assert!(committed_read(6).aborted.is_empty(), "the aborted transaction ends before offset 6");
        assert!(p.read_to(0, 1 << 20, ReadBound::HighWatermark).unwrap().aborted.is_empty());

        // A new transaction of producer 7 stays open across a restart.
        p.append(&batch_of(true, 7, 0, 2, 1, now()), now()).unwrap(); // 7
        p.close().unwrap();
        let p = partition_on(&storage, settings());
        assert_eq!((p.high_watermark(), p.last_stable_offset()), (8, 7));
        assert_eq!(aborted(&p.read_to(0, 1 << 20, ReadBound::LastStable).unwrap()), vec![(7, 2)]);
        p.append_txn_marker(7, 0, commit, now()).unwrap(); // 8
        assert_eq!(p.last_stable_offset(), 9);

        // Without a clean close, the replay from the last snapshot decides the transactions
        // again from their markers, and re-adds aborted ones to the index.
        p.append(&batch_of(true, 7, 0, 3, 1, now()), now()).unwrap(); // 9
        p.append_txn_marker(7, 0, abort, now()).unwrap(); // 10
        drop(p);
        let p = partition_on(&storage, settings());
        assert_eq!(p.last_stable_offset(), 11);
        // Reads go one segment at a time (the restart rolled one at 8).
        let mut seen = Vec::new();
        let mut offset = 0;
        while offset < 11 {
            let r = p.read_to(offset, 1 << 20, ReadBound::LastStable).unwrap();
            offset += records_in(&r.records).max(1);
            seen.extend(aborted(&r));
        }
        seen.dedup();
        assert_eq!(seen, vec![(7, 2), (7, 9)]);
    }

    /// A producer snapshot at the log end (DeleteRecords, retention) is written only once the
    /// aborted-transaction index below it is durable: the replay after a power cut starts at
    /// the snapshot and would not re-add the entry.
    /// KIP-890 part 1: a transactional batch may open a transaction only under the guard of a
    /// verification that no marker raced (the ABA case: verified, the transaction ended, then
    /// the late write arrives).
    #[test]
    fn a_transaction_opens_only_under_a_verification_no_marker_raced() {
        use crate::replica::Verification;
        let storage = strata_log::storage::MemStorage::new();
        let p = partition_on(&storage, settings());
        let abort = EndTxnMarker { commit: false, coordinator_epoch: 0 };
        let not_added = |r: Result<AppendResult, BrokerError>| matches!(r, Err(BrokerError::InvalidTxnState(_)));
        // Never verified, or verified under another guard: refused.
        assert!(not_added(p.append_verified(&batch_of(true, 7, 0, 0, 1, now()), now(), Verification::Unverified)));
        let guard = p.prepare_verification(7, 0).unwrap().unwrap();
        assert_eq!(p.prepare_verification(7, 0).unwrap(), Some(guard), "concurrent requests share the guard");
        assert!(not_added(p.append_verified(
            &batch_of(true, 7, 0, 0, 1, now()),
            now(),
            Verification::Verified(guard + 1)
        )));
        // Verified: it opens the transaction, and the producer's next batches need no guard.
        p.append_verified(&batch_of(true, 7, 0, 0, 1, now()), now(), Verification::Verified(guard)).unwrap(); // 0
        assert_eq!(p.prepare_verification(7, 0).unwrap(), None, "a transaction is open: nothing to verify");
        p.append_verified(&batch_of(true, 7, 0, 1, 1, now()), now(), Verification::Unverified).unwrap(); // 1
        p.append_txn_marker(7, 0, abort, now()).unwrap(); // 2
                                                          // A verification that raced the marker does not count: the guard went with it.
        let stale = p.prepare_verification(7, 0).unwrap().unwrap();
        p.append_txn_marker(7, 0, abort, now()).unwrap(); // 3
        assert!(not_added(p.append_verified(&batch_of(true, 7, 0, 2, 1, now()), now(), Verification::Verified(stale))));
        assert_eq!(p.log_end_offset(), 4, "no refused batch was appended");
        assert_eq!(p.last_stable_offset(), p.high_watermark(), "no transaction is left hanging");
        // With verification off (the broker config), the batch opens a transaction as before.
        p.append_verified(&batch_of(true, 7, 0, 2, 1, now()), now(), Verification::Off).unwrap(); // 4
                                                                                                  // Transactions V2: the next transaction's first batch (a bumped epoch) arrives before
                                                                                                  // the marker of the open one. It is not part of that transaction: it needs its own
                                                                                                  // verification, and cannot slip into the open one.
        assert!(not_added(p.append_verified(&batch_of(true, 7, 1, 0, 1, now()), now(), Verification::Unverified)));
        assert!(p.prepare_verification(7, 1).unwrap().is_some(), "a newer epoch is verified");
        assert_eq!(p.prepare_verification(7, 0).unwrap(), None);
    }

    #[test]
    fn aborted_transactions_survive_a_power_cut_after_a_log_start_snapshot() {
        let abort = EndTxnMarker { commit: false, coordinator_epoch: 0 };
        for seed in 0..8 {
            let storage = strata_log::storage::MemStorage::new();
            let p = partition_on(&storage, settings());
            p.append(&batch(-1, -1, 0, 2, now()), now()).unwrap(); // 0-1
            p.append(&batch_of(true, 7, 0, 0, 1, now()), now()).unwrap(); // 2
            p.append_txn_marker(7, 0, abort, now()).unwrap(); // 3
            p.append(&batch(-1, -1, 0, 1, now()), now()).unwrap(); // 4
            p.advance_log_start(1).unwrap();
            drop(p);
            storage.crash(seed);
            let p = partition_on(&storage, settings());
            assert_eq!(p.log_end_offset(), 5, "seed {seed}");
            let read = p.read_to(1, 1 << 20, ReadBound::LastStable).unwrap();
            let aborted: Vec<_> = read.aborted.iter().map(|t| (t.producer_id, t.first_offset, t.last_offset)).collect();
            assert_eq!(aborted, vec![(7, 2, 3)], "seed {seed}");
        }
    }

    /// DeleteRecords past the start of an open transaction: the LSO stays at the log start,
    /// never below it.
    #[test]
    fn the_last_stable_offset_never_falls_below_the_log_start() {
        let p = partition(settings());
        p.append(&batch_of(true, 7, 0, 0, 2, now()), now()).unwrap(); // 0-1, open
        p.append(&batch(-1, -1, 0, 3, now()), now()).unwrap(); // 2-4
        assert_eq!(p.last_stable_offset(), 0);
        p.advance_log_start(3).unwrap();
        assert_eq!(p.last_stable_offset(), 3);
        let read = p.read_to(3, 1 << 20, ReadBound::LastStable).unwrap();
        assert_eq!((read.last_stable_offset, read.records.is_empty()), (3, true));
    }

    fn records_in(bytes: &[u8]) -> i64 {
        strata_protocol::batch::BatchIter::new(bytes).map(|b| i64::from(b.unwrap().0.records_count)).sum()
    }

    #[test]
    fn producer_state_outlives_retention_and_a_clean_restart() {
        let storage = strata_log::storage::MemStorage::new();
        let p = partition_on(&storage, tiny_segments());
        let last7 = batch(7, 0, 1, 1, now());
        p.append(&batch(7, 0, 0, 1, now()), now()).unwrap();
        assert_eq!(p.append(&last7, now()).unwrap().base_offset, 1);
        for seq in 0..5 {
            p.append(&batch(8, 0, seq, 1, now()), now()).unwrap();
        }
        // Retention removes every segment that holds producer 7's batches.
        p.with_log(|log| Ok(log.advance_log_start(5)?)).unwrap();
        p.with_log(|log| Ok(log.enforce_retention(now())?)).unwrap();
        assert_eq!(p.log_start_offset(), 5);
        p.close().unwrap();

        let p = partition_on(&storage, tiny_segments());
        assert_eq!(p.batches_replayed_at_open(), 0, "the shutdown snapshot covers the whole log");
        // As in Kafka, producer 7 is still known: its retry is a duplicate, not a second copy.
        assert_eq!(p.append(&last7, now()).unwrap().base_offset, 1);
        assert_eq!(p.log_end_offset(), 7);
        assert!(matches!(p.append(&batch(7, 0, 5, 1, now()), now()), Err(BrokerError::OutOfOrderSequence { .. })));
        assert_eq!(p.append(&batch(7, 0, 2, 1, now()), now()).unwrap().base_offset, 7);
    }

    #[test]
    fn after_a_crash_only_the_batches_after_the_last_roll_snapshot_are_replayed() {
        for seed in 0..20 {
            let storage = strata_log::storage::MemStorage::new();
            let p = partition_on(&storage, tiny_segments());
            let mut last = HashMap::new();
            for i in 0..60 {
                let pid = i % 6;
                let seq = (i / 6) as i32;
                let b = batch(pid, 0, seq, 1, now());
                let offset = p.append(&b, now()).unwrap().base_offset;
                last.insert(pid, (b, offset, seq));
            }
            p.with_log(|log| Ok(log.flush()?)).unwrap();
            drop(p);
            storage.crash(seed);
            let p = partition_on(&storage, tiny_segments());
            assert!(p.batches_replayed_at_open() <= 1, "seed {seed}: replayed {}", p.batches_replayed_at_open());
            for (pid, (b, offset, seq)) in &last {
                assert_eq!(p.append(b, now()).unwrap().base_offset, *offset, "seed {seed}: producer {pid}'s retry");
                p.append(&batch(*pid, 0, seq + 1, 1, now()), now()).unwrap();
            }
            assert_eq!(p.producer_count(), 6);
        }
    }

    /// A log written with no producer snapshot (by a broker before snapshots, or whose roll
    /// snapshots failed): retention must snapshot before it deletes the only record of a
    /// producer, or a restart forgets it and a retry of its acknowledged batch is appended twice.
    #[test]
    fn retention_snapshots_first_when_no_snapshot_covers_what_it_deletes() {
        let storage = strata_log::storage::MemStorage::new();
        let dir = std::path::Path::new("/data/t-0");
        let mut config = tiny_segments();
        config.log.retention_ms = 60_000;
        let old = now() - 3_600_000;
        let last7 = batch(7, 0, 1, 1, old);
        {
            let mut log = Log::open_with_storage(Arc::new(storage.clone()), dir, config.log.clone(), 0).unwrap();
            log.append_batch(&batch(7, 0, 0, 1, old), old).unwrap();
            log.append_batch(&last7, old).unwrap();
            for seq in 0..5 {
                log.append_batch(&batch(8, 0, seq, 1, now()), now()).unwrap();
            }
            log.close().unwrap();
        }
        use strata_log::storage::Storage;
        assert!(strata_log::snapshot::offsets_in(&storage.list(dir).unwrap()).is_empty());
        let p = Arc::new(partition_on(&storage, config.clone()));
        assert!(p.enforce_retention(now()) > 0, "producer 7's segments expired");
        assert!(p.log_start_offset() >= 2);
        drop(p); // no clean close: no shutdown snapshot
        let p = partition_on(&storage, config);
        assert_eq!(p.append(&last7, now()).unwrap().base_offset, 1, "producer 7's retry is a duplicate");
        assert_eq!(p.log_end_offset(), 7);
    }

    /// Under group commit, any fsync that moves the high watermark (here the one before a
    /// DeleteRecords snapshot) wakes parked fetches: the producer whose records it covered
    /// finds them durable and returns without a wake of its own.
    #[tokio::test]
    async fn every_fsync_that_moves_the_high_watermark_wakes_parked_fetches() {
        let p = partition(durable_settings());
        p.with_log(|log| Ok(log.append_batch(&batch(-1, -1, 0, 2, now()), now())?)).unwrap();
        assert_eq!(p.log_end_offset(), 0, "not durable, not visible");
        let waiter = Arc::new(tokio::sync::Notify::new());
        let _watch = p.watch(&waiter);
        p.advance_log_start(1).unwrap();
        assert_eq!(p.log_end_offset(), 2);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter.notified()).await.expect("the fetch was woken");
    }

    #[test]
    fn a_damaged_snapshot_falls_back_to_replaying_the_log() {
        let storage = strata_log::storage::MemStorage::new();
        let p = partition_on(&storage, settings());
        let b = batch(3, 0, 0, 2, now());
        p.append(&b, now()).unwrap();
        p.close().unwrap();
        let snap = std::path::Path::new("/data/t-0").join(strata_log::snapshot::file_name(2));
        use strata_log::storage::Storage;
        storage.open(&snap, false).unwrap().write_all_at(20, &[0xAB]).unwrap();
        let p = partition_on(&storage, settings());
        assert_eq!(p.batches_replayed_at_open(), 1);
        assert_eq!(p.append(&b, now()).unwrap().base_offset, 0, "state rebuilt from the log");
    }

    #[test]
    fn idle_producers_are_forgotten_after_producer_id_expiration_ms() {
        let storage = strata_log::storage::MemStorage::new();
        let mut s = settings();
        s.producer_id_expiration_ms = 60_000;
        let p = partition_on(&storage, s.clone());
        let t = now();
        p.append(&batch(1, 0, 0, 1, t - 120_000), t).unwrap(); // idle two minutes
        p.append(&batch(2, 0, 0, 1, t), t).unwrap();
        assert_eq!(p.producer_count(), 2);
        assert_eq!(p.remove_expired_producers(t), 1);
        assert_eq!(p.producer_count(), 1);
        // Expired producers are dropped at load too: the snapshot has both, the clock says one.
        p.append(&batch(3, 0, 0, 1, t - 120_000), t).unwrap();
        p.close().unwrap();
        let p = partition_on(&storage, s);
        assert_eq!(p.producer_count(), 1);
    }

    /// An append that will roll fsyncs the closed segment: the produce path must run it off
    /// the async workers, and the bulk of that fsync happens before the partition lock is taken.
    #[test]
    fn an_append_that_rolls_is_flagged_as_blocking_and_pre_flushed() {
        let storage = strata_log::storage::MemStorage::new();
        let mut s = settings();
        s.log.segment_bytes = 300;
        let p = partition_on(&storage, s);
        let b = batch(-1, -1, 0, 1, now());
        assert!(!p.append_may_block(&b, now()), "an empty segment takes it without rolling");
        p.append(&b, now()).unwrap();
        let mut appended = b.len();
        while appended + b.len() <= 300 {
            assert!(!p.append_may_block(&b, now()));
            p.append(&b, now()).unwrap();
            appended += b.len();
        }
        assert!(p.append_may_block(&b, now()), "this one rolls");
        let syncs = storage.file_syncs();
        p.append(&b, now()).unwrap();
        assert!(storage.file_syncs() > syncs);
        assert_eq!(p.with_log(|log| Ok(log.num_segments())).unwrap(), 2);
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
