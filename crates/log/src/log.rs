//! [`Log`]: one partition's log — a directory of segments.

use std::collections::BTreeMap;
use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use strata_protocol::batch::{set_base_offset, set_partition_leader_epoch, BatchHeader, BatchIter};

use crate::config::LogConfig;
use crate::epoch::LeaderEpochCache;
use crate::error::LogError;
use crate::segment::{AppendFailure, Segment, SegmentRead};
use crate::snapshot;
use crate::storage::{FsStorage, MemStorage, Storage, StorageFile};
use crate::txn_index::AbortedTxn;

/// Name of the clean-shutdown marker written by [`Log::close`].
pub const CLEAN_SHUTDOWN_FILE: &str = ".clean_shutdown";
/// Name of the checkpoint holding the log start offset (see [`Log::advance_log_start`]).
pub const LOG_START_CHECKPOINT_FILE: &str = "log-start-offset";

/// What an append did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendInfo {
    /// Offset assigned to the first record (the LEO before the append).
    pub first_offset: i64,
    /// Offset of the last record.
    pub last_offset: i64,
    /// Largest `maxTimestamp` of the appended batches.
    pub max_timestamp: i64,
    /// Last offset of the first batch carrying `max_timestamp`.
    pub offset_of_max_timestamp: i64,
    /// Sum of the batches' `recordsCount`.
    pub num_records: u64,
    /// Number of batches appended.
    pub num_batches: u32,
    /// Bytes appended.
    pub size_bytes: u64,
}

/// An fsync prepared by [`Log::begin_flush`], to run without the log's lock.
#[derive(Debug)]
pub struct PendingFlush {
    file: Arc<dyn StorageFile>,
    path: PathBuf,
    end: i64,
}

impl PendingFlush {
    /// Runs the fsync (blocking).
    pub fn sync(&self) -> std::io::Result<()> {
        self.file.sync()
    }

    /// The offset everything below which this fsync makes durable.
    pub fn end(&self) -> i64 {
        self.end
    }
}

/// Writes snapshot files into a log's directory (see [`crate::snapshot`]); made by
/// [`Log::snapshot_writer`], usable without the log.
#[derive(Debug, Clone)]
pub struct SnapshotWriter {
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) dir: PathBuf,
}

impl SnapshotWriter {
    /// How many snapshots are kept: the newest, and one to fall back on should it be damaged.
    pub const KEPT: usize = 2;

    /// Durably writes the snapshot of state derived from every batch below `offset`, then
    /// deletes all but the [`Self::KEPT`] newest snapshots.
    pub fn write(&self, offset: i64, payload: &[u8]) -> Result<(), LogError> {
        snapshot::write(&*self.storage, &self.dir, offset, payload)?;
        let names = self.storage.list(&self.dir).map_err(LogError::io(&self.dir))?;
        let offsets = snapshot::offsets_in(&names);
        for old in &offsets[..offsets.len().saturating_sub(Self::KEPT)] {
            snapshot::remove(&*self.storage, &self.dir, *old)?;
        }
        Ok(())
    }
}

/// A step of the timestamp search ([`Log::timestamp_candidate`]).
#[derive(Debug)]
pub enum TimestampCandidate {
    /// No record at or above the log start has a timestamp that large.
    None,
    /// This batch may hold the answer.
    Batch(TimestampBatch),
}

/// A batch that may hold the first record with timestamp `>= ts`, checked against its CRC.
#[derive(Debug)]
pub struct TimestampBatch {
    batch: Bytes,
    ts: i64,
    min_offset: i64,
    path: PathBuf,
    position: usize,
    /// Where the search goes on if this batch holds no answer.
    pub resume: TimestampResume,
}

/// Where a timestamp search goes on: a segment and a byte position in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimestampResume {
    segment: i64,
    position: usize,
}

impl TimestampBatch {
    /// The first record of the batch at offset `>= min_offset` (the log start) holding the
    /// batch's largest timestamp, as (offset, timestamp). Reads every record, decompressing if
    /// need be: call it without the log's lock.
    pub fn max_record(&self) -> Result<Option<(i64, i64)>, LogError> {
        strata_protocol::records::max_timestamp_record(&self.batch, self.min_offset)
            .map(|r| r.map(|r| (r.offset, r.timestamp)))
            .map_err(|e| LogError::Corrupt {
                path: self.path.clone(),
                position: self.position as u64,
                reason: e.to_string(),
            })
    }

    /// The first record of the batch at offset `>= min_offset` (the log start) with timestamp
    /// `>= ts`, as (offset, timestamp). Reads every record up to it, decompressing if need be:
    /// call it without the log's lock.
    pub fn find(&self) -> Result<Option<(i64, i64)>, LogError> {
        strata_protocol::records::first_at_or_after(&self.batch, self.ts, self.min_offset)
            .map(|r| r.map(|r| (r.offset, r.timestamp)))
            .map_err(|e| LogError::Corrupt {
                path: self.path.clone(),
                position: self.position as u64,
                reason: e.to_string(),
            })
    }
}

/// Step 1 of [`Log::max_timestamp_offset`].
#[derive(Debug)]
pub struct MaxTimestampPlan {
    /// (timestamp, last offset of its batch) from headers and segment maxima.
    headers: Option<(i64, i64)>,
    /// The batch the log start falls inside, whose records above it must be read.
    partial: Option<TimestampBatch>,
    /// The log start offset the plan was made at.
    min_offset: i64,
}

/// Where the answer of [`Log::max_timestamp_offset`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxTimestampFound {
    /// The record itself, as (offset, timestamp).
    Record((i64, i64)),
    /// In the batch holding this offset: read it ([`Log::batch_holding`]).
    InBatch(i64),
}

impl MaxTimestampPlan {
    /// The log start offset the plan was made at: a caller that dropped the log's lock must
    /// start over when the log start has moved since (the answer may lie below it).
    pub fn log_start_offset(&self) -> i64 {
        self.min_offset
    }

    /// Step 2, without the lock: the largest timestamp among the records of the batch the log
    /// start falls inside, as (timestamp, offset).
    pub fn partial_best(&self) -> Result<Option<(i64, i64)>, LogError> {
        match &self.partial {
            None => Ok(None),
            Some(b) => b.max_record().map(|r| r.map(|(offset, ts)| (ts, offset))),
        }
    }

    /// Step 3: the winner, given [`Self::partial_best`]'s answer. The partial batch holds the
    /// lowest offsets, so it wins a tie (the first record holding the largest timestamp).
    pub fn best(&self, partial: Option<(i64, i64)>) -> Option<MaxTimestampFound> {
        match (partial, self.headers) {
            (Some((pts, poff)), Some((hts, _))) if pts >= hts => Some(MaxTimestampFound::Record((poff, pts))),
            (Some((pts, poff)), None) => Some(MaxTimestampFound::Record((poff, pts))),
            (_, Some((_, off))) => Some(MaxTimestampFound::InBatch(off)),
            (None, None) => None,
        }
    }
}

/// What a read returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadInfo {
    /// Whole batches, a zero-copy slice of one segment (empty at the log end).
    pub records: Bytes,
    /// Where `records` lie in their segment file (`None` when empty): lets a server send them
    /// with `sendfile(2)` rather than from the mapping.
    pub file_range: Option<FileRange>,
    /// The log start offset when the read happened.
    pub log_start_offset: i64,
    /// The log end offset when the read happened.
    pub log_end_offset: i64,
}

/// The place of a read's records in their segment file. The handle keeps the file open, so a
/// segment deleted meanwhile stays readable through it, as its mapping does; the bytes in the
/// range never change while the read's `records` (a mapping of them) are alive.
#[derive(Clone, Debug)]
pub struct FileRange {
    file: Arc<dyn StorageFile>,
    position: u64,
}

impl FileRange {
    /// The segment file's descriptor (`None` for in-memory storage).
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.file.fd()
    }

    /// Where the records start in the file.
    pub fn position(&self) -> u64 {
        self.position
    }
}

impl PartialEq for FileRange {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.file, &other.file) && self.position == other.position
    }
}

impl Eq for FileRange {}

/// One partition's log: a directory of segments, each a `.log` file of RecordBatch v2 exactly as
/// received, with a sparse `.index` and `.timeindex` (Apache Kafka's layout).
///
/// Invariants (checked by the test suite after every operation):
/// - `log_start_offset <= log_end_offset`;
/// - offsets are increasing: each batch starts right after the previous one ends, except where
///   the log cleaner removed batches of a compacted log (offsets never change; gaps remain);
/// - appends happen only at the log end offset (LEO); the last segment is the only one written
///   (the *active* segment), and there is always one;
/// - after [`Log::open`] every batch of the active segment passed its CRC check (closed
///   segments were fsynced when they were rolled);
/// - once an fsync has failed, nothing more is read from or written to the log by this process
///   (see [`Log::is_offline`]): after a failed fsync the kernel may have dropped the pages it
///   could not write, and a later fsync would report success without them.
///
/// Not internally synchronized: readers take `&self`, writers `&mut self`; wrap the log in a
/// lock to share it. `Bytes` returned by reads stay valid after the log changes or is dropped.
#[derive(Debug)]
pub struct Log {
    pub(crate) dir: PathBuf,
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) config: LogConfig,
    /// Keyed by base offset; never empty; the last one is active.
    pub(crate) segments: BTreeMap<i64, Segment>,
    pub(crate) log_start_offset: i64,
    pub(crate) log_end_offset: i64,
    unflushed_messages: u64,
    last_flush_ms: i64,
    /// Why the log went offline, if it did (see [`Log::is_offline`]).
    offline: Option<String>,
    /// Everything below this offset was fsynced by this process, or found on disk at open
    /// (Kafka's recovery point). Invariant: `log_start_offset <= recovery_point <= log_end_offset`
    /// except right after a truncation below the log start, where all three are equal.
    recovery_point: i64,
    /// Whether appends leave the `flush.messages` policy to the caller (see
    /// [`Log::set_deferred_flush`]).
    defer_flush: bool,
    /// Which opening of a directory this is (see [`Log::instance_id`]).
    instance: u64,
    /// Where each leader epoch starts (see [`crate::epoch`]).
    epochs: LeaderEpochCache,
    /// While this replica leads: its leader epoch, stamped on every batch appended (Kafka's
    /// `appendAsLeader`). `None`: batches keep the epoch they carry.
    leader_epoch: Option<i32>,
}

/// Numbers each [`Log`] opened by this process.
static NEXT_INSTANCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn parse_segment_name(name: &str) -> Option<(i64, &str)> {
    let (stem, ext) = name.split_once('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((stem.parse().ok()?, ext))
}

impl Log {
    /// Opens (creating if missing) the log in `dir` on the local file system, recovering it if
    /// the clean-shutdown marker is absent.
    pub fn open(dir: &Path, config: LogConfig, now_ms: i64) -> Result<Log, LogError> {
        Log::open_with_storage(Arc::new(FsStorage), dir, config, now_ms)
    }

    /// A fresh, empty log on its own in-memory storage (the twin used in tests and simulation).
    pub fn open_in_memory(config: LogConfig, now_ms: i64) -> Log {
        let storage = Arc::new(MemStorage::new());
        match Log::open_with_storage(storage, Path::new("/in-memory/log"), config, now_ms) {
            Ok(log) => log,
            // A new in-memory file system has no failing operation on this path.
            Err(e) => unreachable!("opening an empty in-memory log failed: {e}"),
        }
    }

    /// Opens (creating if missing) the log in `dir` of `storage`.
    ///
    /// Without the clean-shutdown marker, the active segment is scanned: every batch's header
    /// and CRC are checked, a torn or corrupt tail is cut after the last valid batch and the
    /// indexes are rebuilt. Index files of any segment that are missing or fail a sanity check
    /// are rebuilt (a closed segment found damaged on the way is cut too, and the segments
    /// after it are deleted, as Apache Kafka does). The marker is deleted before anything is
    /// written.
    pub fn open_with_storage(
        storage: Arc<dyn Storage>,
        dir: &Path,
        config: LogConfig,
        now_ms: i64,
    ) -> Result<Log, LogError> {
        let io = LogError::io(dir);
        storage.create_dir_all(dir).map_err(LogError::io(dir))?;
        let marker = dir.join(CLEAN_SHUTDOWN_FILE);
        let clean = storage.exists(&marker).map_err(LogError::io(&marker))?;
        if clean {
            storage.remove(&marker).map_err(LogError::io(&marker))?;
            storage.sync_dir(dir).map_err(LogError::io(dir))?;
        }
        // A cleaner swap a stop interrupted is finished (or undone) before segments are read.
        crate::cleaner::clean::recover_swaps(&*storage, dir)?;
        let names = storage.list(dir).map_err(io)?;
        let mut bases = Vec::new();
        for name in &names {
            if name.ends_with(".truncating") || name.ends_with(".tmp") {
                let p = dir.join(name);
                storage.remove(&p).map_err(LogError::io(&p))?;
            } else if let Some((base, "log")) = parse_segment_name(name) {
                bases.push(base);
            }
        }
        bases.sort_unstable();
        for name in &names {
            if let Some((base, "index" | "timeindex" | "txnindex")) = parse_segment_name(name) {
                if bases.binary_search(&base).is_err() {
                    let p = dir.join(name);
                    storage.remove(&p).map_err(LogError::io(&p))?;
                }
            }
        }
        let checkpoint = read_checkpoint(&*storage, dir)?;
        let epochs = LeaderEpochCache::read(&*storage, dir)?;

        let mut log = Log {
            dir: dir.to_path_buf(),
            storage: storage.clone(),
            config,
            segments: BTreeMap::new(),
            log_start_offset: 0,
            log_end_offset: 0,
            unflushed_messages: 0,
            last_flush_ms: now_ms,
            offline: None,
            recovery_point: 0,
            defer_flush: false,
            instance: NEXT_INSTANCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            epochs,
            leader_epoch: None,
        };
        let mut leo = None;
        // Whether the active segment was scanned by recovery: what it found may sit only in the
        // page cache (a process crash keeps it there), so it is fsynced before it is served.
        let mut recovered_active = false;
        // What recovery of the active segment found, for the one line that reports it.
        let mut recovery = None;
        // A crash between a roll's creation of the new (empty) segment and the end of the old
        // one's sealing can leave the old segment's tail unsynced (torn, or cut at a batch
        // boundary) and its indexes unsealed, with the empty new one after it: after an unclean
        // stop with an empty last segment, the one before it is scanned too.
        // A last segment whose every byte is torn counts as empty too: it is recovered here,
        // once, and the loop below takes it as it is (so every open of the same durable files
        // ends at the same log end offset).
        let mut recovered_last: Option<(Segment, crate::segment::Recovered)> = None;
        let last_is_empty = match bases.last() {
            Some(&last) if bases.len() >= 2 && !clean => {
                let path = dir.join(format!("{last:020}.log"));
                let len = storage.open(&path, false).and_then(|f| f.len()).map_err(LogError::io(&path))?;
                if len > 0 {
                    let (mut seg, _) = Segment::open(&storage, dir, last, &log.config)?;
                    let rec = seg.recover(&log.config, true)?;
                    let emptied = seg.size() == 0;
                    recovered_last = Some((seg, rec));
                    emptied
                } else {
                    true
                }
            }
            _ => false,
        };
        let before_last = if last_is_empty { bases.len().checked_sub(2).map(|i| bases[i]) } else { None };
        let mut remaining = bases.iter().copied().peekable();
        while let Some(base) = remaining.next() {
            let is_last = remaining.peek().is_none();
            if is_last {
                if let Some((seg, rec)) = recovered_last.take() {
                    recovered_active = true;
                    leo = Some(rec.next_offset);
                    recovery = Some(rec);
                    log.segments.insert(base, seg);
                    continue;
                }
            }
            let (mut seg, damaged) = Segment::open(&storage, dir, base, &log.config)?;
            if Some(base) == before_last {
                let rec = seg.recover(&log.config, true)?;
                let next_base = remaining.peek().copied().unwrap_or(rec.next_offset);
                // The cleaner keeps the last batch of every segment it writes (emptied if need
                // be), so a whole closed segment always ends at the next one's base.
                if rec.next_offset == next_base {
                    tracing::info!(path = %seg.log_path().display(), log_end = rec.next_offset,
                        "recovered the segment before an empty active one (a roll the crash interrupted)");
                    seg.seal()?;
                    log.segments.insert(base, seg);
                    continue;
                }
                // It ends short of the empty segment's base: that one goes, this one is active.
                tracing::info!(path = %seg.log_path().display(), log_end = rec.next_offset,
                    truncated_bytes = rec.truncated_bytes,
                    "a roll the crash interrupted left this segment short; it is active again");
                for later in remaining.by_ref() {
                    let s = match recovered_last.take() {
                        Some((s, _)) if s.base_offset == later => s,
                        _ => Segment::open(&storage, dir, later, &log.config)?.0,
                    };
                    s.delete_files()?;
                }
                recovered_active = true;
                leo = Some(rec.next_offset);
                recovery = Some(rec);
                log.segments.insert(base, seg);
                break;
            }
            if is_last {
                let resumed = if clean && !damaged { seg.resume_clean(&log.config)? } else { None };
                let next = match resumed {
                    Some(next) => next,
                    None => {
                        if clean {
                            tracing::warn!(dir = %dir.display(), "clean shutdown marker present but the active segment needs recovery");
                        }
                        recovered_active = true;
                        let rec = seg.recover(&log.config, true)?;
                        let next = rec.next_offset;
                        recovery = Some(rec);
                        next
                    }
                };
                leo = Some(next);
                log.segments.insert(base, seg);
            } else if damaged {
                tracing::info!(path = %seg.log_path().display(), "rebuilding missing or damaged index files");
                let rec = seg.recover(&log.config, false)?;
                if rec.truncated_bytes > 0 {
                    tracing::warn!(path = %seg.log_path().display(), "closed segment was damaged; deleting the segments after it");
                    for later in remaining.by_ref() {
                        let (s, _) = Segment::open(&storage, dir, later, &log.config)?;
                        s.delete_files()?;
                    }
                    seg.truncate_to(rec.next_offset, &log.config)?;
                    leo = Some(rec.next_offset);
                }
                log.segments.insert(base, seg);
            } else {
                log.segments.insert(base, seg);
            }
        }
        match (log.segments.first_key_value(), leo) {
            (Some((&first, _)), Some(leo)) => {
                log.log_end_offset = leo;
                log.log_start_offset = checkpoint.unwrap_or(first).max(first);
            }
            _ => {
                let start = checkpoint.unwrap_or(0).max(0);
                let seg = Segment::create(&storage, dir, start, &log.config)?;
                log.segments.insert(start, seg);
                log.log_start_offset = start;
                log.log_end_offset = start;
            }
        }
        for seg in log.segments.values_mut() {
            // A file system that cannot date a file: the retention clock starts at the open.
            seg.last_modified_ms.get_or_insert(now_ms);
        }
        if let Some(active) = log.segments.values_mut().next_back() {
            if active.size() > 0 {
                // `segment.ms` counts from the first append; after a restart, from the open
                // (Kafka likewise restarts its segment clock when it loads a segment).
                active.first_append_ms = Some(now_ms);
            }
        }
        if log.log_start_offset > log.log_end_offset {
            // Unflushed data below a persisted log start was lost in a crash: restart empty at
            // the log start so offsets never go backwards for consumers.
            // Only records already deleted (below the log start) are gone: recovery, not loss.
            tracing::info!(dir = %dir.display(), log_start = log.log_start_offset, log_end = log.log_end_offset,
                "log end is below the checkpointed log start after a crash; starting empty at the log start");
            log.truncate_fully_and_start_at(log.log_start_offset)?;
        }
        if recovered_active {
            // The recovery point below says "everything up to the LEO is durable", and with
            // flush.messages=1 the high watermark is the recovery point: make it true before a
            // consumer can read a record that a power cut could still take back.
            log.active()?.flush()?;
        }
        storage.sync_dir(dir).map_err(LogError::io(dir))?;
        if let Some(rec) = recovery {
            // After a crash every log is recovered: one line each, and a torn last write (what
            // a crash during an append leaves) is reported here, not as a warning.
            let (position, reason) = rec.problem.map_or((None, None), |(p, r)| (Some(p), Some(r)));
            tracing::info!(dir = %dir.display(), log_start = log.log_start_offset, log_end = log.log_end_offset,
                truncated_bytes = rec.truncated_bytes, truncated_at = position, reason,
                "recovered the log after an unclean shutdown");
        }
        tracing::debug!(dir = %dir.display(), clean, segments = log.segments.len(),
            log_start = log.log_start_offset, log_end = log.log_end_offset, "log opened");
        log.recovery_point = log.log_end_offset;
        // A checkpoint older than a truncation, or newer than what a crash kept of the log.
        log.epochs.truncate_from_end(log.log_end_offset);
        log.epochs.truncate_from_start(log.log_start_offset);
        Ok(log)
    }

    /// The directory of this log.
    /// A number unique to this opening of the log within the process: a log deleted and
    /// created again in the same directory (a topic recreated under its old name) gets another,
    /// so state kept about the old one (the cleaner's checkpoint) is not taken for the new.
    pub fn instance_id(&self) -> u64 {
        self.instance
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The configuration in force.
    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// Replaces the configuration; segment and index sizes apply to segments created from now on.
    pub fn update_config(&mut self, config: LogConfig) {
        self.config = config;
    }

    /// First offset that may be read. Invariant: `log_start_offset() <= log_end_offset()`.
    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset
    }

    /// Offset the next appended record gets (LEO).
    pub fn log_end_offset(&self) -> i64 {
        self.log_end_offset
    }

    /// Bytes of all segments.
    pub fn size_bytes(&self) -> u64 {
        self.segments.values().map(Segment::size).sum()
    }

    /// Number of segments (at least one).
    pub fn num_segments(&self) -> usize {
        self.segments.len()
    }

    /// Base offset of the active segment; it changes when the log rolls.
    pub fn active_base_offset(&self) -> i64 {
        self.segments.keys().next_back().copied().unwrap_or(self.log_end_offset)
    }

    /// A handle that writes snapshots into this log's directory without the log (so without
    /// whatever lock guards it); see [`SnapshotWriter::write`].
    pub fn snapshot_writer(&self) -> SnapshotWriter {
        SnapshotWriter { storage: self.storage.clone(), dir: self.dir.clone() }
    }

    /// The newest intact snapshot at or below the log end offset, as `(offset, payload)`.
    /// Snapshots above the LEO describe batches a crash or a truncation removed: they are
    /// deleted. A damaged snapshot is skipped (logged) in favour of the next older one.
    pub fn latest_snapshot(&self) -> Result<Option<(i64, Vec<u8>)>, LogError> {
        let names = self.storage.list(&self.dir).map_err(LogError::io(&self.dir))?;
        for offset in snapshot::offsets_in(&names).into_iter().rev() {
            if offset > self.log_end_offset {
                self.remove_snapshots_above(self.log_end_offset)?;
                continue;
            }
            if let Some(payload) = snapshot::read(&*self.storage, &self.dir, offset)? {
                return Ok(Some((offset, payload)));
            }
        }
        Ok(None)
    }

    /// Deletes the snapshots above `offset`, durably: a stale snapshot that came back after a
    /// crash would be loaded once the log grows past it again.
    fn remove_snapshots_above(&self, offset: i64) -> Result<(), LogError> {
        let names = self.storage.list(&self.dir).map_err(LogError::io(&self.dir))?;
        let doomed: Vec<i64> = snapshot::offsets_in(&names).into_iter().filter(|s| *s > offset).collect();
        for s in &doomed {
            snapshot::remove(&*self.storage, &self.dir, *s)?;
        }
        if !doomed.is_empty() {
            self.storage.sync_dir(&self.dir).map_err(LogError::io(&self.dir))?;
        }
        Ok(())
    }

    /// Whether an I/O failure took the log offline: an fsync failed, or a failed append or
    /// segment change could not be undone, so the files may not hold what this process believes
    /// they hold. From then on every operation except [`Log::delete`] fails with
    /// [`LogError::Offline`] (the broker answers KAFKA_STORAGE_ERROR, as Kafka does for an
    /// offline log directory), and the periodic flush and retention do nothing. Reopening the
    /// log (a broker restart) recovers it from what is on disk: nothing acknowledged under
    /// `flush.messages=1` is lost, because an append whose fsync failed was not acknowledged.
    pub fn is_offline(&self) -> bool {
        self.offline.is_some()
    }

    /// [`LogError::Offline`] if the log is offline (see [`Log::is_offline`]).
    pub fn check_online(&self) -> Result<(), LogError> {
        self.ensure_online()
    }

    pub(crate) fn ensure_online(&self) -> Result<(), LogError> {
        match &self.offline {
            None => Ok(()),
            Some(reason) => Err(LogError::Offline { dir: self.dir.clone(), reason: reason.clone() }),
        }
    }

    /// Takes the log offline because of `error` (logged once) and returns the error.
    fn go_offline(&mut self, error: LogError) -> LogError {
        if self.offline.is_none() {
            tracing::error!(dir = %self.dir.display(), %error,
                "taking the log offline: its files may not hold what was written; restart the broker to recover it");
            self.offline = Some(error.to_string());
        }
        error
    }

    /// Passes `result` through, taking the log offline if it failed on I/O.
    pub(crate) fn offline_on_io_error<T>(&mut self, result: Result<T, LogError>) -> Result<T, LogError> {
        match result {
            Err(e @ LogError::Io { .. }) => Err(self.go_offline(e)),
            other => other,
        }
    }

    fn active(&mut self) -> Result<&mut Segment, LogError> {
        match self.segments.values_mut().next_back() {
            Some(s) => Ok(s),
            None => Err(LogError::InvalidArgument("log has no segment (it was being deleted)".to_owned())),
        }
    }

    /// Appends one or more already-validated v2 batches (concatenated, exactly as received).
    ///
    /// Assigns offsets from the LEO by patching each batch's `baseOffset` in place (so `batches`
    /// holds what was written), rolls first if the active segment is full or old, and applies the
    /// `flush.messages` policy. Only ever appends at the LEO. Nothing is written when the input
    /// is not a sequence of whole, well-formed batches (CRCs are the caller's to check; reads
    /// trust what was appended). On an I/O error (e.g. a full disk) whatever part of the append
    /// reached the file is cut off again and the LEO does not move.
    pub fn append(&mut self, batches: &mut [u8], now_ms: i64) -> Result<AppendInfo, LogError> {
        self.ensure_online()?;
        let plan = self.plan_append(batches)?;
        self.roll_if_needed(&plan, now_ms)?;
        self.assign_leader_epoch_at(plan.first_offset)?;

        // Assign offsets in place. Every batch parsed in `plan_append`, so the loop cannot fail.
        let mut pos = 0usize;
        let mut next = plan.first_offset;
        while let Some(rest) = batches.get_mut(pos..).filter(|r| !r.is_empty()) {
            let h = BatchHeader::parse(rest).map_err(|source| LogError::InvalidBatch { position: pos, source })?;
            set_base_offset(rest, next).map_err(|source| LogError::InvalidBatch { position: pos, source })?;
            if let Some(epoch) = self.leader_epoch {
                set_partition_leader_epoch(rest, epoch)
                    .map_err(|source| LogError::InvalidBatch { position: pos, source })?;
            }
            next += i64::from(h.last_offset_delta) + 1;
            pos += h.total_size();
        }

        let config = self.config.clone();
        let written = self.active()?.append(batches, now_ms, &config);
        self.finish_append(written, plan, now_ms)
    }

    /// Appends exactly one already-validated v2 batch, like [`Log::append`], without copying or
    /// changing `batch`: its base offset (assigned from the LEO) is written to the file beside
    /// the rest of its bytes in one vectored write. The produce path uses this: the batch stays
    /// a slice of the request it came in.
    pub fn append_batch(&mut self, batch: &[u8], now_ms: i64) -> Result<AppendInfo, LogError> {
        self.ensure_online()?;
        let plan = self.plan_append(batch)?;
        if plan.num_batches != 1 {
            return Err(LogError::InvalidArgument(format!(
                "append_batch takes one record batch, got {}",
                plan.num_batches
            )));
        }
        self.roll_if_needed(&plan, now_ms)?;
        self.assign_leader_epoch_at(plan.first_offset)?;
        let parsed = BatchHeader::parse(batch).map_err(|source| LogError::InvalidBatch { position: 0, source })?;
        let header = BatchHeader {
            base_offset: plan.first_offset,
            partition_leader_epoch: self.leader_epoch.unwrap_or(parsed.partition_leader_epoch),
            ..parsed
        };
        let config = self.config.clone();
        let written = self.active()?.append_batch(&header, batch, now_ms, &config);
        self.finish_append(written, plan, now_ms)
    }

    /// Appends batches fetched from the partition's leader (Kafka's `appendAsFollower`): whole
    /// v2 batches, CRC-checked by the caller, whose offsets and leader epochs the leader
    /// assigned and which are kept as they are. The first batch must start at or after the
    /// LEO (a compacted leader's log has gaps) and each batch after the one before; the LEO
    /// becomes the end of the last. A batch stamped with an epoch newer than the cache's
    /// latest starts that epoch at its base offset (written to the checkpoint before the
    /// batch, as a leader's epoch is). Rolls and flushes as [`Log::append`] does.
    pub fn append_as_follower(&mut self, batches: &[u8], now_ms: i64) -> Result<AppendInfo, LogError> {
        self.ensure_online()?;
        if self.leader_epoch.is_some() {
            return Err(LogError::InvalidArgument("a leader does not append as a follower".to_owned()));
        }
        let mut plan = self.plan_append(batches)?;
        let mut epochs = Vec::new();
        let mut expected = self.log_end_offset;
        let mut it = BatchIter::new(batches);
        loop {
            let position = it.position();
            let Some(item) = it.next() else { break };
            let (h, _) = item.map_err(|source| LogError::InvalidBatch { position, source })?;
            if h.base_offset < expected {
                return Err(LogError::InvalidArgument(format!(
                    "a follower append must not go back: batch at offset {} below {expected}",
                    h.base_offset
                )));
            }
            if position == 0 {
                plan.first_offset = h.base_offset;
            }
            expected = h.base_offset + i64::from(h.last_offset_delta) + 1;
            epochs.push((h.partition_leader_epoch, h.base_offset));
        }
        plan.last_offset = expected - 1;
        plan.offset_of_max_timestamp = plan.offset_of_max_timestamp.min(plan.last_offset);
        self.roll_if_needed(&plan, now_ms)?;
        for (epoch, base) in epochs {
            if epoch >= 0 && self.epochs.latest().is_none_or(|(e, _)| epoch > e) {
                self.epochs.assign(epoch, base);
            }
        }
        self.write_epochs_if_dirty()?;
        let config = self.config.clone();
        let written = self.active()?.append(batches, now_ms, &config);
        self.finish_append(written, plan, now_ms)
    }

    /// Validates `batches` and works out what appending them at the LEO will report. Nothing
    /// changes.
    fn plan_append(&self, batches: &[u8]) -> Result<AppendInfo, LogError> {
        if batches.is_empty() {
            return Err(LogError::InvalidArgument(
                "append of zero bytes: at least one record batch is required".to_owned(),
            ));
        }
        let mut span: i64 = 0;
        let mut num_records: u64 = 0;
        let mut num_batches: u32 = 0;
        let mut max_ts: Option<(i64, i64)> = None;
        let mut it = BatchIter::new(batches);
        loop {
            let position = it.position();
            let Some(item) = it.next() else { break };
            let (h, _) = item.map_err(|source| LogError::InvalidBatch { position, source })?;
            if h.last_offset_delta < 0 || h.records_count < 0 {
                return Err(LogError::BadBatchHeader {
                    position,
                    reason: format!(
                        "lastOffsetDelta {} and recordsCount {} must not be negative",
                        h.last_offset_delta, h.records_count
                    ),
                });
            }
            let last = self.log_end_offset + span + i64::from(h.last_offset_delta);
            if max_ts.is_none_or(|(ts, _)| h.max_timestamp > ts) {
                max_ts = Some((h.max_timestamp, last));
            }
            span += i64::from(h.last_offset_delta) + 1;
            num_records += h.records_count as u64;
            num_batches += 1;
        }
        let size = batches.len() as u64;
        if span > i64::from(i32::MAX) || size > i32::MAX as u64 {
            return Err(LogError::AppendTooLarge { size, offsets: span });
        }
        let first_offset = self.log_end_offset;
        let last_offset = first_offset.checked_add(span - 1).ok_or(LogError::AppendTooLarge { size, offsets: span })?;
        let (max_timestamp, offset_of_max_timestamp) = max_ts.unwrap_or((-1, last_offset));
        Ok(AppendInfo {
            first_offset,
            last_offset,
            max_timestamp,
            offset_of_max_timestamp,
            num_records,
            num_batches,
            size_bytes: size,
        })
    }

    /// Rolls before any byte of the planned append is written, if the active segment is full,
    /// old, or cannot address the append's offsets or index entries.
    fn roll_if_needed(&mut self, plan: &AppendInfo, now_ms: i64) -> Result<(), LogError> {
        if self.must_roll(plan.size_bytes, plan.last_offset, now_ms) {
            self.roll_at()?;
        }
        Ok(())
    }

    /// Whether an append of `size_bytes` ending at `last_offset` has to roll first.
    fn must_roll(&self, size_bytes: u64, last_offset: i64, now_ms: i64) -> bool {
        let Some(active) = self.segments.values().next_back() else { return false };
        active.size() > 0
            && (active.size() + size_bytes > self.config.effective_segment_bytes()
                || active.first_append_ms.is_some_and(|t| now_ms.saturating_sub(t) > self.config.max_segment_ms())
                || last_offset - active.base_offset > i64::from(i32::MAX)
                || active.indexes_nearly_full())
    }

    /// Whether appending `size_bytes` (of at most `offsets` offsets) at `now_ms` would roll the
    /// log first: such an append fsyncs the old segment, so callers run it off the async
    /// workers.
    pub fn append_would_roll(&self, size_bytes: u64, offsets: i64, now_ms: i64) -> bool {
        self.must_roll(size_bytes, self.log_end_offset.saturating_add(offsets.max(1) - 1), now_ms)
    }

    /// Moves the LEO past a written append and applies the `flush.messages` policy.
    fn finish_append(
        &mut self,
        written: Result<(), AppendFailure>,
        plan: AppendInfo,
        now_ms: i64,
    ) -> Result<AppendInfo, LogError> {
        if let Err(failure) = written {
            return Err(match failure {
                AppendFailure::RolledBack(e) => e,
                AppendFailure::NotRolledBack(e) => self.go_offline(e),
            });
        }
        self.log_end_offset = plan.last_offset + 1;
        self.unflushed_messages = self.unflushed_messages.saturating_add(plan.num_records);
        if !self.defer_flush && self.unflushed_messages >= self.config.flush_interval_messages {
            // A failed fsync takes the log offline (inside `flush`); the append is not
            // acknowledged, and what the disk kept is decided by recovery at the next open.
            self.flush()?;
            self.last_flush_ms = now_ms;
        }
        Ok(plan)
    }

    fn out_of_range(&self, offset: i64) -> LogError {
        LogError::OffsetOutOfRange { offset, log_start: self.log_start_offset, log_end: self.log_end_offset }
    }

    /// Reads whole batches starting with the one holding `offset`, from one segment: at most
    /// `max_bytes`, but always at least one whole batch if there is one (KIP-74), and no batch
    /// whose base offset is `>= max_offset` (exclusive bound, e.g. the high watermark).
    ///
    /// Zero copy: the records are a slice of the segment's mapping. `offset == LEO` (or
    /// `>= max_offset`) gives empty records; `offset` below the log start or above the LEO is
    /// [`LogError::OffsetOutOfRange`]. The first batch may start before `offset` (a batch is
    /// never split); readers skip the records they did not ask for, as Kafka clients do.
    ///
    /// Every batch returned passed its CRC32C check; each batch is checked once per process
    /// (appended and recovered bytes count as checked). A read that runs into a damaged batch
    /// stops before it; one that starts at it is [`LogError::Corrupt`] with the file and position.
    pub fn read(&self, offset: i64, max_bytes: usize, max_offset: i64) -> Result<ReadInfo, LogError> {
        // A read allowed to check CRCs never asks for the disk.
        self.read_inner(offset, max_bytes, max_offset, false)?
            .ok_or_else(|| LogError::InvalidArgument("a full read asked to be repeated".to_owned()))
    }

    /// [`Log::read`] that never reads the segment file itself: it returns only batches already
    /// CRC-checked (appended, recovered or read before) and stops before the first one that is
    /// not; `Ok(None)` when the very first batch is not. Async callers read with this and
    /// repeat a `None` with [`Log::read`] where waiting on the disk is allowed.
    pub fn read_cached(&self, offset: i64, max_bytes: usize, max_offset: i64) -> Result<Option<ReadInfo>, LogError> {
        self.read_inner(offset, max_bytes, max_offset, true)
    }

    fn read_inner(
        &self,
        offset: i64,
        max_bytes: usize,
        max_offset: i64,
        cached_only: bool,
    ) -> Result<Option<ReadInfo>, LogError> {
        self.ensure_online()?;
        if offset < self.log_start_offset || offset > self.log_end_offset {
            return Err(self.out_of_range(offset));
        }
        let info = |records: Bytes, file_range| ReadInfo {
            file_range: if records.is_empty() { None } else { file_range },
            records,
            log_start_offset: self.log_start_offset,
            log_end_offset: self.log_end_offset,
        };
        if offset == self.log_end_offset || offset >= max_offset {
            return Ok(Some(info(Bytes::new(), None)));
        }
        let start = self.segments.range(..=offset).next_back().map_or(i64::MIN, |(b, _)| *b);
        for seg in self.segments.range(start..).map(|(_, s)| s) {
            match seg.read(offset, max_bytes, max_offset, cached_only)? {
                SegmentRead::Found { records, position } => {
                    return Ok(Some(info(records, Some(FileRange { file: seg.data_file(), position }))))
                }
                SegmentRead::NeedsDisk => return Ok(None),
                SegmentRead::NotHere => {}
            }
        }
        Ok(Some(info(Bytes::new(), None)))
    }

    /// DeleteRecords: moves the log start forward to `offset` (clamped to the LEO; never
    /// backwards), persists it in the `log-start-offset` checkpoint, and deletes the segments
    /// that lie wholly below it. Returns the new log start offset.
    pub fn advance_log_start(&mut self, offset: i64) -> Result<i64, LogError> {
        self.ensure_online()?;
        let new = offset.min(self.log_end_offset);
        if new <= self.log_start_offset {
            return Ok(self.log_start_offset);
        }
        // A failed checkpoint write changes nothing in memory; either checkpoint on disk is a
        // valid log start, so the log stays online.
        write_checkpoint(&*self.storage, &self.dir, new)?;
        self.log_start_offset = new;
        self.epochs.truncate_from_start(new);
        self.delete_segments_while(|_, next_base, log_start| next_base <= log_start)?;
        Ok(new)
    }

    /// Deletes closed segments from the oldest while `pred(segment, next_segment_base, log_start)`
    /// holds. Never deletes the active segment. Moves the log start to the first remaining
    /// segment if needed (persisted). Returns how many were deleted.
    fn delete_segments_while(&mut self, pred: impl FnMut(&Segment, i64, i64) -> bool) -> Result<usize, LogError> {
        let result = self.delete_segments_while_inner(pred);
        self.offline_on_io_error(result)
    }

    fn delete_segments_while_inner(
        &mut self,
        mut pred: impl FnMut(&Segment, i64, i64) -> bool,
    ) -> Result<usize, LogError> {
        let mut deleted = 0;
        loop {
            let mut keys = self.segments.keys();
            let (Some(&first), Some(&second)) = (keys.next(), keys.next()) else {
                break;
            };
            let Some(seg) = self.segments.get(&first) else {
                break;
            };
            if !pred(seg, second, self.log_start_offset) {
                break;
            }
            if let Some(seg) = self.segments.remove(&first) {
                tracing::info!(path = %seg.log_path().display(), "deleting segment");
                seg.delete_files()?;
                deleted += 1;
            }
        }
        if deleted > 0 {
            self.storage.sync_dir(&self.dir).map_err(LogError::io(&self.dir))?;
            if let Some((&first, _)) = self.segments.first_key_value() {
                if first > self.log_start_offset {
                    write_checkpoint(&*self.storage, &self.dir, first)?;
                    self.log_start_offset = first;
                    self.epochs.truncate_from_start(first);
                }
            }
        }
        Ok(deleted)
    }

    /// Applies `retention.ms` (by each segment's largest record timestamp, or when no record
    /// has one, the time the segment was last written, as Kafka does) and `retention.bytes`
    /// (by total size), only when `cleanup.policy` contains `delete`, and deletes
    /// segments wholly below the log start. Never deletes the active segment. Moves the log
    /// start to the first remaining segment. Returns the number of segments deleted.
    pub fn enforce_retention(&mut self, now_ms: i64) -> Result<usize, LogError> {
        self.enforce_retention_below(now_ms, i64::MAX)
    }

    /// As [`Log::enforce_retention`], deleting by time or size only segments that end at or
    /// below `high_watermark` (Kafka's `UnifiedLog.deletableSegments`): a replicated log never
    /// drops records its followers may not have yet, nor ones consumers were never shown.
    pub fn enforce_retention_below(&mut self, now_ms: i64, high_watermark: i64) -> Result<usize, LogError> {
        if self.is_offline() {
            return Ok(0);
        }
        // A compact-only topic (`__consumer_offsets` among them) is never trimmed by time or size.
        let (retention_ms, retention_bytes) =
            if self.config.cleanup_delete { (self.config.retention_ms, self.config.retention_bytes) } else { (-1, -1) };
        let mut total = self.size_bytes();
        self.delete_segments_while(|seg, next_base, log_start| {
            let expired =
                retention_ms >= 0 && seg.largest_timestamp().is_some_and(|ts| now_ms.saturating_sub(ts) > retention_ms);
            let oversize = retention_bytes >= 0 && total.saturating_sub(seg.size()) >= retention_bytes as u64;
            let below_start = next_base <= log_start;
            let delete = ((expired || oversize) && next_base <= high_watermark) || below_start;
            if delete {
                total -= seg.size();
            }
            delete
        })
    }

    /// ListOffsets by timestamp (Kafka's `UnifiedLog.fetchOffsetByTimestamp`): the first record
    /// at or above the log start whose timestamp is `>= ts`, as (offset, timestamp); `None`
    /// when there is none. Segments whose largest timestamp is below `ts` are skipped, then the
    /// time index, batch headers and the records of one batch narrow it down. Records below the
    /// log start (DeleteRecords can cut a batch) never answer: a client given an offset below
    /// it would be told OFFSET_OUT_OF_RANGE and lose its place.
    ///
    /// The same search in steps, for callers that hold a lock around the log: see
    /// [`Log::timestamp_candidate`].
    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(i64, i64)>, LogError> {
        let mut resume = None;
        loop {
            match self.timestamp_candidate(ts, resume)? {
                TimestampCandidate::None => return Ok(None),
                TimestampCandidate::Batch(c) => match c.find()? {
                    Some(found) => return Ok(Some(found)),
                    None => resume = Some(c.resume),
                },
            }
        }
    }

    /// One step of [`Log::offset_for_timestamp`]: the next batch that may hold the answer,
    /// starting where the previous candidate ended (`resume`) or, with `None`, at the start.
    /// Only headers are read here (and the candidate's CRC checked): reading its records,
    /// which may mean decompressing, is [`TimestampBatch::find`], to run without the lock
    /// that guards the log. If the candidate holds no answer, ask again with its `resume`.
    pub fn timestamp_candidate(
        &self,
        ts: i64,
        resume: Option<TimestampResume>,
    ) -> Result<TimestampCandidate, LogError> {
        self.ensure_online()?;
        let min_offset = self.log_start_offset;
        let first = self.segments.range(..=min_offset).next_back().map_or(i64::MIN, |(b, _)| *b);
        let (from_segment, mut from_pos) = match resume {
            // A resume point in a segment retention has since removed restarts at the first
            // segment still there, from its start: the position belongs to the old file.
            Some(r) if r.segment >= first => (r.segment, Some(r.position)),
            _ => (first, None),
        };
        for (&base, seg) in self.segments.range(from_segment..) {
            let from = if base == from_segment { from_pos.take() } else { None };
            if seg.max_timestamp().is_none_or(|(max, _)| max < ts) {
                continue;
            }
            if let Some((position, batch)) = seg.timestamp_candidate(ts, min_offset, from)? {
                return Ok(TimestampCandidate::Batch(TimestampBatch {
                    resume: TimestampResume { segment: base, position: position + batch.len() },
                    batch,
                    ts,
                    min_offset,
                    path: seg.log_path().to_path_buf(),
                    position,
                }));
            }
        }
        Ok(TimestampCandidate::None)
    }

    /// ListOffsets `MAX_TIMESTAMP` (-3): the record at or above the log start holding the
    /// log's largest timestamp (the first such if tied), as (offset, timestamp).
    ///
    /// The same in steps, for callers that hold a lock around the log: [`Log::max_timestamp_plan`]
    /// under the lock, [`MaxTimestampPlan::partial_best`] without it, then the winning batch
    /// from [`Log::batch_holding`] under the lock and [`TimestampBatch::max_record`] without.
    pub fn max_timestamp_offset(&self) -> Result<Option<(i64, i64)>, LogError> {
        let plan = self.max_timestamp_plan()?;
        match plan.best(plan.partial_best()?) {
            None => Ok(None),
            Some(MaxTimestampFound::Record(found)) => Ok(Some(found)),
            Some(MaxTimestampFound::InBatch(offset)) => match self.batch_holding(offset)? {
                Some(batch) => batch.max_record(),
                None => Ok(None),
            },
        }
    }

    /// Step 1 of [`Log::max_timestamp_offset`]: what batch headers and segment maxima tell.
    pub fn max_timestamp_plan(&self) -> Result<MaxTimestampPlan, LogError> {
        self.ensure_online()?;
        let min_offset = self.log_start_offset;
        let mut plan = MaxTimestampPlan { headers: None, partial: None, min_offset };
        for (&base, seg) in self.segments.range(..) {
            let (candidate, partial) = if base >= min_offset {
                (seg.max_timestamp(), None)
            } else {
                // The segment the log start falls inside: only what lies above it counts.
                seg.max_timestamp_from(min_offset)?
            };
            if let Some((position, batch)) = partial {
                plan.partial = Some(self.timestamp_batch(seg, batch, position, i64::MIN, min_offset, 0));
            }
            if let Some((ts, off)) = candidate {
                if plan.headers.is_none_or(|(b, _)| ts > b) {
                    plan.headers = Some((ts, off));
                }
            }
        }
        Ok(plan)
    }

    /// The batch holding `offset` (CRC-checked), its records to be read with
    /// [`TimestampBatch::max_record`] without the log's lock.
    pub fn batch_holding(&self, offset: i64) -> Result<Option<TimestampBatch>, LogError> {
        self.ensure_online()?;
        let seg_base = self.segments.range(..=offset).next_back().map_or(i64::MIN, |(b, _)| *b);
        let Some(seg) = self.segments.get(&seg_base) else { return Ok(None) };
        Ok(seg.batch_at(offset)?.map(|batch| self.timestamp_batch(seg, batch, 0, i64::MIN, self.log_start_offset, 0)))
    }

    fn timestamp_batch(
        &self,
        seg: &Segment,
        batch: Bytes,
        position: usize,
        ts: i64,
        min_offset: i64,
        resume_position: usize,
    ) -> TimestampBatch {
        TimestampBatch {
            batch,
            ts,
            min_offset,
            path: seg.log_path().to_path_buf(),
            position,
            resume: TimestampResume { segment: seg.base_offset, position: resume_position },
        }
    }

    /// Records the transaction `txn` as aborted by its marker, already appended at
    /// `txn.last_offset`: an entry in the aborted-transaction index of the segment holding
    /// the marker (Kafka's `LogSegment.updateTxnIndex`), after every entry there. Made durable
    /// with the segment (its flush, roll or close). An I/O error takes the log offline.
    pub fn append_aborted_txn(&mut self, txn: AbortedTxn) -> Result<(), LogError> {
        self.ensure_online()?;
        if txn.last_offset >= self.log_end_offset || txn.last_offset < self.log_start_offset {
            return Err(LogError::InvalidArgument(format!(
                "abort marker at {} is not in the log [{}, {})",
                txn.last_offset, self.log_start_offset, self.log_end_offset
            )));
        }
        self.update_txn_index(txn, Segment::append_aborted_txn)
    }

    /// Runs `update` with `txn` on the index of the segment holding its marker; the index of
    /// a closed segment (made durable when it rolled) is made durable at once.
    fn update_txn_index(
        &mut self,
        txn: AbortedTxn,
        update: fn(&mut Segment, AbortedTxn) -> Result<(), LogError>,
    ) -> Result<(), LogError> {
        let active = self.segments.keys().next_back().copied();
        let result = match self.segments.range_mut(..=txn.last_offset).next_back() {
            Some((base, seg)) if Some(*base) != active => update(seg, txn).and_then(|()| seg.flush_txn_index()),
            Some((_, seg)) => update(seg, txn),
            None => Ok(()),
        };
        self.offline_on_io_error(result)
    }

    /// Makes the active segment's aborted-transaction index durable (closed segments' are):
    /// before a producer snapshot at the log end, whose replay would not re-add entries for
    /// markers below it.
    pub fn flush_txn_index(&mut self) -> Result<(), LogError> {
        self.ensure_online()?;
        let result = match self.segments.values().next_back() {
            Some(seg) => seg.flush_txn_index(),
            None => Ok(()),
        };
        self.offline_on_io_error(result)
    }

    /// As [`Log::append_aborted_txn`], but a no-op when the entry is there: after a crash,
    /// the owner replays the markers of the recovered tail and re-adds the entries the crash
    /// may have cut off.
    pub fn ensure_aborted_txn(&mut self, txn: AbortedTxn) -> Result<(), LogError> {
        self.ensure_online()?;
        if txn.last_offset >= self.log_end_offset || txn.last_offset < self.log_start_offset {
            return Ok(());
        }
        self.update_txn_index(txn, Segment::ensure_aborted_txn)
    }

    /// The aborted transactions that overlap `[from, to)` (marker at or after `from`, first
    /// record before `to`), for a `read_committed` fetch of that range (Kafka's
    /// `collectAbortedTransactions`): from the segment holding `from` on, until a segment's
    /// index shows the last stable offset had passed `to`.
    pub fn collect_aborted_txns(&self, from: i64, to: i64) -> Vec<AbortedTxn> {
        let mut out = Vec::new();
        let start = self.segments.range(..=from).next_back().map_or(i64::MIN, |(b, _)| *b);
        for seg in self.segments.range(start..).map(|(_, s)| s) {
            if seg.collect_aborted_txns(from, to, &mut out) {
                break;
            }
        }
        out
    }

    /// Headers of all batches holding offsets `>= from_offset` (clamped to the log start), in
    /// order — used to rebuild idempotent-producer state on start. Headers are not CRC-checked
    /// (that would read every byte of the log at start); a segment whose headers stop parsing
    /// contributes the headers before the damage, which is logged.
    pub fn batch_headers(&self, from_offset: i64) -> Result<Vec<BatchHeader>, LogError> {
        self.ensure_online()?;
        let from = from_offset.max(self.log_start_offset);
        let mut out = Vec::new();
        if from >= self.log_end_offset {
            return Ok(out);
        }
        let start = self.segments.range(..=from).next_back().map_or(i64::MIN, |(b, _)| *b);
        for seg in self.segments.range(start..).map(|(_, s)| s) {
            match seg.headers_from(from, &mut out) {
                Ok(()) => {}
                // A damaged header in a segment must not make the whole log unusable: keep what
                // was read and go on with the next segment; reads report the damage.
                Err(e @ LogError::Corrupt { .. }) => {
                    tracing::error!(error = %e, "skipping the rest of a damaged segment while reading batch headers");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Removes every batch holding an offset `>= offset`; the LEO becomes the end of the last
    /// kept batch (`offset` itself when it is a batch boundary). A no-op when `offset >= LEO`.
    /// Below the log start, the log is emptied and restarts at `offset` (as Kafka's
    /// `truncateFullyAndStartAt`). Durable on return.
    ///
    /// Never shrinks a file readers may have mapped: the kept prefix is then written to a new
    /// file renamed over the old one.
    pub fn truncate_to(&mut self, offset: i64) -> Result<(), LogError> {
        self.ensure_online()?;
        let result = self.truncate_to_inner(offset);
        self.offline_on_io_error(result)
    }

    fn truncate_to_inner(&mut self, offset: i64) -> Result<(), LogError> {
        if offset < 0 {
            return Err(LogError::InvalidArgument(format!("cannot truncate to negative offset {offset}")));
        }
        if offset >= self.log_end_offset {
            return Ok(());
        }
        let first = self.segments.first_key_value().map_or(0, |(b, _)| *b);
        if offset < self.log_start_offset || offset <= first {
            return self.truncate_fully_inner(offset);
        }
        let doomed: Vec<i64> = self.segments.range(offset..).map(|(b, _)| *b).collect();
        for base in doomed {
            if let Some(seg) = self.segments.remove(&base) {
                seg.delete_files()?;
            }
        }
        let config = self.config.clone();
        let next = self.active()?.truncate_to(offset, &config)?;
        self.storage.sync_dir(&self.dir).map_err(LogError::io(&self.dir))?;
        self.log_end_offset = next;
        self.recovery_point = self.recovery_point.min(next);
        self.epochs.truncate_from_end(next);
        self.remove_snapshots_above(next)?;
        if self.log_end_offset < self.log_start_offset {
            // The cut removed the batch holding the log start.
            let start = self.log_start_offset;
            return self.truncate_fully_inner(start);
        }
        tracing::info!(dir = %self.dir.display(), offset, log_end = next, "log truncated");
        Ok(())
    }

    /// Empties the log and restarts it at `offset` (Kafka's `truncateFullyAndStartAt`): what a
    /// follower does when the leader's log starts after its own end. Durable on return.
    pub fn truncate_fully_and_start_at(&mut self, offset: i64) -> Result<(), LogError> {
        self.ensure_online()?;
        let result = self.truncate_fully_inner(offset);
        self.offline_on_io_error(result)
    }

    fn truncate_fully_inner(&mut self, offset: i64) -> Result<(), LogError> {
        let segments = std::mem::take(&mut self.segments);
        for (_, seg) in segments {
            seg.delete_files()?;
        }
        let seg = Segment::create(&self.storage, &self.dir, offset, &self.config)?;
        self.segments.insert(offset, seg);
        write_checkpoint(&*self.storage, &self.dir, offset)?;
        self.storage.sync_dir(&self.dir).map_err(LogError::io(&self.dir))?;
        self.log_start_offset = offset;
        self.log_end_offset = offset;
        self.unflushed_messages = 0;
        self.recovery_point = offset;
        self.epochs.clear();
        self.remove_snapshots_above(-1)?;
        tracing::info!(dir = %self.dir.display(), offset, "log emptied, restarting at offset");
        Ok(())
    }

    /// Starts a new active segment at the LEO (a no-op when the active segment is empty). The
    /// old segment is sealed: fsynced, its indexes trimmed.
    pub fn roll(&mut self, now_ms: i64) -> Result<(), LogError> {
        self.ensure_online()?;
        let _ = now_ms;
        if self.active()?.size() == 0 {
            return Ok(());
        }
        self.roll_at()
    }

    /// Creates the new segment before sealing the old one, so that a failure (a full disk)
    /// leaves the old segment active and writable, with the new one's files removed.
    fn roll_at(&mut self) -> Result<(), LogError> {
        let leo = self.log_end_offset;
        let seg = match Segment::create(&self.storage, &self.dir, leo, &self.config) {
            Ok(seg) => seg,
            Err(e) => {
                Segment::remove_files(&*self.storage, &self.dir, leo);
                return Err(e);
            }
        };
        if let Err(e) = self.active()?.seal() {
            // The old segment's fsync (or its index trim) failed: what it holds on disk is
            // unknown.
            let _ = seg.delete_files();
            return Err(self.go_offline(e));
        }
        if let Err(e) = self.storage.sync_dir(&self.dir) {
            // The new segment's directory entry may not survive a crash.
            let _ = seg.delete_files();
            return Err(self.go_offline(LogError::io(&self.dir)(e)));
        }
        self.segments.insert(leo, seg);
        self.unflushed_messages = 0;
        self.recovery_point = leo;
        tracing::debug!(dir = %self.dir.display(), base_offset = leo, "rolled new segment");
        Ok(())
    }

    /// Makes everything appended so far durable (data and indexes of the active segment;
    /// closed segments were made durable when rolled).
    pub fn flush(&mut self) -> Result<(), LogError> {
        self.ensure_online()?;
        let result = self.active()?.flush();
        self.offline_on_io_error(result)?;
        self.unflushed_messages = 0;
        self.recovery_point = self.log_end_offset;
        self.write_epochs_if_dirty()
    }

    /// Before a leader's append at `offset`: its epoch is in the cache (it is, since
    /// [`Log::become_leader`], unless a truncation below the epoch's start removed it; then it
    /// starts again here, durably, as Kafka's `maybeAssignEpochStartOffset` on append).
    fn assign_leader_epoch_at(&mut self, offset: i64) -> Result<(), LogError> {
        match self.leader_epoch {
            Some(epoch) if self.epochs.latest().is_none_or(|(e, _)| e != epoch) => self.assign_epoch(epoch, offset),
            _ => Ok(()),
        }
    }

    /// Assigns `epoch` at `offset` in the cache and writes the checkpoint if that (or an earlier
    /// truncation) changed it: durable before anything is appended in the epoch.
    fn assign_epoch(&mut self, epoch: i32, offset: i64) -> Result<(), LogError> {
        self.epochs.assign(epoch, offset);
        self.write_epochs_if_dirty()
    }

    fn write_epochs_if_dirty(&mut self) -> Result<(), LogError> {
        if self.epochs.is_dirty() {
            let result = self.epochs.write(&*self.storage, &self.dir);
            self.offline_on_io_error(result)?;
        }
        Ok(())
    }

    /// This replica becomes the partition's leader in `epoch` (Kafka's
    /// `maybeAssignEpochStartOffset` in `Partition.makeLeader`): the epoch starts at the log end
    /// offset, durably (the checkpoint is written and fsynced here, so run this off the async
    /// workers), and every batch appended from now on is stamped with it.
    pub fn become_leader(&mut self, epoch: i32) -> Result<(), LogError> {
        self.ensure_online()?;
        if self.leader_epoch == Some(epoch) {
            return Ok(());
        }
        self.assign_epoch(epoch, self.log_end_offset)?;
        self.leader_epoch = Some(epoch);
        Ok(())
    }

    /// This replica stops leading: batches appended from now on keep their own epochs.
    pub fn stop_leading(&mut self) {
        self.leader_epoch = None;
    }

    /// The epoch this replica leads in, if it leads.
    pub fn leader_epoch(&self) -> Option<i32> {
        self.leader_epoch
    }

    /// The newest leader epoch that appended to this log (what a ListOffsets for the latest
    /// offset reports), if any.
    pub fn latest_epoch(&self) -> Option<i32> {
        self.epochs.latest().map(|(e, _)| e)
    }

    /// The leader epoch of the record at `offset`, if the cache knows it.
    pub fn epoch_for_offset(&self, offset: i64) -> Option<i32> {
        self.epochs.epoch_for_offset(offset)
    }

    /// OffsetForLeaderEpoch (see [`LeaderEpochCache::end_offset_for`]): the largest epoch at or
    /// below `epoch` and the offset where it ends.
    pub fn end_offset_for_epoch(&self, epoch: i32) -> (i32, i64) {
        self.epochs.end_offset_for(epoch, self.log_end_offset)
    }

    /// Every (epoch, start offset) the cache holds, oldest first.
    pub fn epoch_entries(&self) -> Vec<(i32, i64)> {
        self.epochs.entries()
    }

    /// Group commit, step 1, under the lock that serializes access to the log: the fsync that
    /// will make everything appended so far durable. Run it ([`PendingFlush::sync`]) without
    /// that lock, so appends go on meanwhile, then report it with [`Log::end_flush`].
    pub fn begin_flush(&mut self) -> Result<PendingFlush, LogError> {
        self.ensure_online()?;
        let active = self.active()?;
        Ok(PendingFlush { file: active.data_file(), path: active.log_path().to_path_buf(), end: self.log_end_offset })
    }

    /// Group commit, step 3, under the lock again: records the outcome of the fsync. A failure
    /// takes the log offline (see [`Log::is_offline`]); success moves the recovery point to
    /// where the log ended when the fsync was prepared. Only the active segment's data file is
    /// synced: its indexes are rebuilt by recovery after a crash, and older segments were
    /// synced when they were rolled.
    pub fn end_flush(&mut self, pending: PendingFlush, result: std::io::Result<()>) -> Result<(), LogError> {
        self.ensure_online()?;
        if let Err(source) = result {
            return Err(self.go_offline(LogError::Io { path: pending.path, source }));
        }
        self.recovery_point = self.recovery_point.max(pending.end).min(self.log_end_offset);
        if self.recovery_point == self.log_end_offset {
            self.unflushed_messages = 0;
        }
        Ok(())
    }

    /// The offset below which every record is durable: fsynced by this process, or found on
    /// disk when the log was opened.
    pub fn recovery_point(&self) -> i64 {
        self.recovery_point
    }

    /// With `true`, appends never fsync on their own when `flush.messages` is reached; the
    /// caller calls [`Log::flush`] (after releasing whatever lock serializes appends, so one
    /// fsync can cover the appends of several producers: group commit) and must not acknowledge
    /// an append before [`Log::recovery_point`] passes it. `flush.ms` still applies.
    pub fn set_deferred_flush(&mut self, defer: bool) {
        self.defer_flush = defer;
    }

    /// Applies the `flush.ms` policy: flushes when there is unflushed data and
    /// `flush_interval_ms` has passed since the last flush. Returns whether it flushed.
    pub fn maybe_flush(&mut self, now_ms: i64) -> Result<bool, LogError> {
        if self.unflushed_messages > 0
            && self.offline.is_none()
            && now_ms.saturating_sub(self.last_flush_ms) >= self.config.flush_interval_ms
        {
            self.flush()?;
            self.last_flush_ms = now_ms;
            return Ok(true);
        }
        Ok(false)
    }

    /// Flushes, trims the active segment's indexes and writes the clean-shutdown marker, so the
    /// next open skips recovery.
    pub fn close(mut self) -> Result<(), LogError> {
        self.ensure_online()?;
        self.active()?.seal()?;
        self.write_epochs_if_dirty()?;
        let marker = self.dir.join(CLEAN_SHUTDOWN_FILE);
        let f = self.storage.open(&marker, true).map_err(LogError::io(&marker))?;
        f.sync().map_err(LogError::io(&marker))?;
        self.storage.sync_dir(&self.dir).map_err(LogError::io(&self.dir))?;
        Ok(())
    }

    /// Removes the whole directory. `Bytes` handed out earlier stay valid.
    pub fn delete(mut self) -> Result<(), LogError> {
        self.segments.clear();
        self.storage.remove_dir_all(&self.dir).map_err(LogError::io(&self.dir))
    }
}

fn read_checkpoint(storage: &dyn Storage, dir: &Path) -> Result<Option<i64>, LogError> {
    let path = dir.join(LOG_START_CHECKPOINT_FILE);
    if !storage.exists(&path).map_err(LogError::io(&path))? {
        return Ok(None);
    }
    let f = storage.open(&path, false).map_err(LogError::io(&path))?;
    let len = f.len().map_err(LogError::io(&path))?.min(64);
    let mut buf = vec![0u8; len as usize];
    f.read_at(0, &mut buf).map_err(LogError::io(&path))?;
    let parsed = std::str::from_utf8(&buf).ok().and_then(|s| s.trim().parse::<i64>().ok()).filter(|v| *v >= 0);
    if parsed.is_none() {
        tracing::warn!(path = %path.display(), "unreadable log start checkpoint; using the first segment's base offset");
    }
    Ok(parsed)
}

fn write_checkpoint(storage: &dyn Storage, dir: &Path, offset: i64) -> Result<(), LogError> {
    crate::storage::replace_file(storage, dir, LOG_START_CHECKPOINT_FILE, format!("{offset}\n").as_bytes())
        .map_err(|(path, e)| LogError::io(&path)(e))
}
