//! Cleaning one log (Kafka's `Cleaner.doClean`), in steps that let the log's owner keep its
//! lock only where the log changes:
//!
//! 1. under the lock, [`Log::clean_plan`] takes the closed segments below the first
//!    uncleanable offset (their mapped bytes, which never change once a segment is closed);
//! 2. without it, [`CleanPlan::build_offset_map`] records the latest offset of every key in
//!    the dirty section, then [`CleanPlan::clean_group`] rewrites each group of segments into
//!    one new segment written under `.cleaned` names and fsynced;
//! 3. under the lock again, [`Log::replace_segments`] swaps each new segment in for its group,
//!    unless the log changed meanwhile (retention, truncation, deletion), in which case the
//!    cleaned files are dropped.
//!
//! # The swap, and what a crash leaves
//! 1. `B.log.cleaned`, `B.index.cleaned`, `B.timeindex.cleaned` (and `B.txnindex.cleaned`
//!    when the group aborted transactions) are written and fsynced.
//! 2. `B.log.cleaned` is renamed to `B.E.swap` and the directory fsynced: the commit point.
//!    `B` is the group's first base offset and `E` the base offset of the segment after the
//!    group, so the name says which segments it replaces: those with base offsets in `[B, E)`.
//! 3. The replaced segments' files are deleted.
//! 4. The `.cleaned` indexes are renamed to `B.index`, `B.timeindex` and `B.txnindex`, then `B.E.swap` to
//!    `B.log`, and the directory fsynced.
//!
//! [`recover_swaps`], run when a log is opened, finishes a swap found committed (steps 3 and 4;
//! indexes missing then are rebuilt) and deletes the files of one that was not. So a crash at
//! any step leaves the old segments or the new one, never a mix and never neither.
//!
//! # What is kept
//! A record is kept when it is the latest of its key in the map, or lies above what the map
//! covers; records without a key go. A tombstone (null value) is kept until the delete horizon
//! of its batch passes: the first cleaning that keeps it sets the horizon to
//! `now + delete.retention.ms` in the batch (KIP-534).
//!
//! Transactions (Kafka's `CleanedTransactionMetadata`): nothing at or above the log's last
//! stable offset is cleaned. Records of aborted transactions are removed and never enter the
//! offset map (so they never shadow older committed values); committed transactional records
//! are compacted like any others. A transaction marker may go once no record of its
//! transaction is left in the segments the cleaning rewrites: it is first kept with a delete
//! horizon of `now + delete.retention.ms`, then removed by a cleaning after it. The `.txnindex`
//! entries of the rewritten segments are kept (an entry whose records are gone covers
//! nothing).
//!
//! A batch left without records is dropped, except the last batch of an idempotent producer,
//! kept empty so that the producer's sequence survives a restart. Offsets never change; what
//! goes leaves gaps.

use std::collections::{HashMap, HashSet, VecDeque};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use strata_protocol::batch::{verify_crc, BatchHeader, BATCH_HEADER_LEN};
use strata_protocol::records::filter::{delete_horizon, parse_records, rebuild_batch, records_section_within};
use strata_protocol::records::CompressionLevels;

use super::offset_map::OffsetMap;
use crate::error::LogError;
use crate::log::Log;
use crate::segment::{AppendFailure, Segment};
use crate::storage::{Storage, StorageFile};
use crate::txn_index::{self, AbortedTxn};
use crate::LogConfig;

/// Suffix of the files of a segment being written by the cleaner.
pub const CLEANED_SUFFIX: &str = ".cleaned";
/// Extension of a committed swap, `<B:020>.<E:020>.swap`.
pub const SWAP_EXT: &str = "swap";

/// How dirty a log is (Kafka's `LogToClean`), from segment sizes: `clean_bytes` below the
/// first dirty offset, `dirty_bytes` from it to the first uncleanable offset.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CleanableStats {
    /// Where the dirty section starts (the cleaner checkpoint, at least the log start).
    pub first_dirty: i64,
    /// Where what may be cleaned ends: the active segment, or the first segment holding a
    /// record younger than `min.compaction.lag.ms`.
    pub first_uncleanable: i64,
    pub clean_bytes: u64,
    pub dirty_bytes: u64,
    /// Whether the oldest dirty record is older than `max.compaction.lag.ms`.
    pub max_lag_exceeded: bool,
}

impl CleanableStats {
    /// `dirty_bytes / (clean_bytes + dirty_bytes)`; 0 when both are 0.
    pub fn dirty_ratio(&self) -> f64 {
        let total = self.clean_bytes + self.dirty_bytes;
        if total == 0 {
            0.0
        } else {
            self.dirty_bytes as f64 / total as f64
        }
    }
}

/// A closed segment as the plan saw it (its file, read with `pread`: a bad sector is an I/O
/// error for the cleaner, never a SIGBUS of a mapping).
#[derive(Debug, Clone)]
struct SegView {
    base: i64,
    /// Base offset of the segment after it.
    next_base: i64,
    size: u64,
    file: Arc<dyn StorageFile>,
    path: PathBuf,
    /// Its aborted-transaction index entries (carried into the cleaned segment).
    aborted: Vec<AbortedTxn>,
}

/// Bytes of a batch's records, decompressed, above which the cleaner leaves the batch as it
/// is (and out of the offset map) rather than hold them in memory.
pub const MAX_FILTERED_RECORDS_BYTES: u64 = 64 << 20;

/// Bytes read from a segment file at a time.
const READ_CHUNK: usize = 1 << 20;

/// Reads the batches of a closed segment in order, CRC-checked, through a reused buffer.
struct BatchReader<'a> {
    seg: &'a SegView,
    pos: u64,
    buf: Vec<u8>,
    buf_start: u64,
}

impl<'a> BatchReader<'a> {
    fn new(seg: &'a SegView) -> Self {
        BatchReader { seg, pos: 0, buf: Vec::new(), buf_start: 0 }
    }

    fn corrupt(&self, reason: impl ToString) -> LogError {
        LogError::Corrupt { path: self.seg.path.clone(), position: self.pos, reason: reason.to_string() }
    }

    /// Makes `buf` hold `[pos, pos + need)`.
    fn fill(&mut self, need: usize) -> Result<(), LogError> {
        let have_end = self.buf_start + self.buf.len() as u64;
        if self.pos >= self.buf_start && self.pos + need as u64 <= have_end {
            return Ok(());
        }
        let left = usize::try_from(self.seg.size - self.pos).unwrap_or(usize::MAX);
        let want = need.max(READ_CHUNK).min(left);
        self.buf.resize(want, 0);
        self.seg.file.read_at(self.pos, &mut self.buf[..want]).map_err(LogError::io(&self.seg.path))?;
        self.buf_start = self.pos;
        Ok(())
    }

    /// The next batch, as its header and its range in [`Self::bytes`]; `None` at the end.
    fn next_batch(&mut self) -> Result<Option<(BatchHeader, Range<usize>)>, LogError> {
        if self.pos >= self.seg.size {
            return Ok(None);
        }
        if self.seg.size - self.pos < BATCH_HEADER_LEN as u64 {
            return Err(self.corrupt("a partial batch header ends the segment"));
        }
        self.fill(BATCH_HEADER_LEN)?;
        let at = (self.pos - self.buf_start) as usize;
        let h = BatchHeader::parse(&self.buf[at..]).map_err(|e| self.corrupt(e))?;
        let total = h.total_size();
        if self.pos + total as u64 > self.seg.size {
            return Err(self.corrupt("a batch runs past the end of the segment"));
        }
        self.fill(total)?;
        let at = (self.pos - self.buf_start) as usize;
        if !verify_crc(&self.buf[at..at + total]) {
            return Err(self.corrupt("CRC mismatch"));
        }
        self.pos += total as u64;
        Ok(Some((h, at..at + total)))
    }

    fn bytes(&self, range: Range<usize>) -> &[u8] {
        &self.buf[range]
    }

    /// Whether the last batch returned was the segment's last.
    fn at_end(&self) -> bool {
        self.pos >= self.seg.size
    }
}

/// What one cleaning works on; see the module docs. Holds mapped segment bytes, not the log.
#[derive(Debug)]
pub struct CleanPlan {
    dir: PathBuf,
    storage: Arc<dyn Storage>,
    config: LogConfig,
    segments: Vec<SegView>,
    first_dirty: i64,
    first_uncleanable: i64,
    producer_last: HashMap<i64, i64>,
    /// Aborted transactions with records in the cleanable range, by first offset.
    aborted: Vec<AbortedTxn>,
    /// The walk over the groups of this cleaning, one after the other from the first (Kafka's
    /// one `CleanedTransactionMetadata` per cleaning): a marker in one group knows of its
    /// transaction's records in an earlier one.
    walk: std::sync::Mutex<TxnWalk>,
}

/// Which transactions the batches walked so far belong to (Kafka's
/// `CleanedTransactionMetadata`), for one walk over batches in offset order starting at
/// `from`: the aborted transactions whose marker is at or after `from` are known up front.
#[derive(Debug)]
struct TxnWalk {
    /// Aborted transactions not yet reached, by first offset.
    upcoming: VecDeque<AbortedTxn>,
    /// Producers inside an aborted transaction: whether a batch of it was seen.
    aborted: HashMap<i64, bool>,
    /// Producers inside a committed (or not aborted) transaction whose batch was seen.
    committed: HashSet<i64>,
}

impl TxnWalk {
    fn new(all: &[AbortedTxn], from: i64) -> Self {
        let mut upcoming: Vec<AbortedTxn> = all.iter().copied().filter(|t| t.last_offset >= from).collect();
        upcoming.sort_by_key(|t| t.first_offset);
        TxnWalk { upcoming: upcoming.into(), aborted: HashMap::new(), committed: HashSet::new() }
    }

    fn reach(&mut self, offset: i64) {
        while self.upcoming.front().is_some_and(|t| t.first_offset <= offset) {
            // An entry whose marker lies behind (a marker an earlier cleaning removed) no
            // longer says anything about the batches here.
            if let Some(t) = self.upcoming.pop_front().filter(|t| t.last_offset >= offset) {
                self.aborted.entry(t.producer_id).or_insert(false);
            }
        }
    }

    /// A data batch: whether it belongs to an aborted transaction.
    fn data(&mut self, h: &BatchHeader) -> bool {
        self.reach(h.last_offset());
        if !h.is_transactional() {
            return false;
        }
        match self.aborted.get_mut(&h.producer_id) {
            Some(seen) => {
                *seen = true;
                true
            }
            None => {
                self.committed.insert(h.producer_id);
                false
            }
        }
    }

    /// A marker (`commit`: its type, `None` for a control batch without a record): whether no
    /// record of its transaction was seen in this walk, so the marker may go.
    fn marker(&mut self, h: &BatchHeader, commit: Option<bool>) -> bool {
        self.reach(h.last_offset());
        match commit {
            Some(false) => self.aborted.remove(&h.producer_id) != Some(true),
            Some(true) => !self.committed.remove(&h.producer_id),
            None => true,
        }
    }
}

/// The type of the marker in control batch `bytes` (`Some(true)` commit), `None` if it holds
/// no (readable) marker.
fn marker_type(bytes: &[u8]) -> Option<bool> {
    strata_protocol::records::control::parse_marker(bytes).ok().map(|m| m.commit)
}

/// A segment written by [`CleanPlan::clean_group`], to be swapped in by
/// [`Log::replace_segments`] (or dropped with [`CleanedSegment::discard`]).
#[derive(Debug)]
pub struct CleanedSegment {
    base: i64,
    end: i64,
    replaced: Vec<(i64, u64)>,
    segment: Option<Segment>,
    storage: Arc<dyn Storage>,
    dir: PathBuf,
    /// Bytes of the replaced segments.
    pub bytes_before: u64,
    /// Bytes of the new segment.
    pub bytes_after: u64,
    /// Records read and kept.
    pub records_read: u64,
    pub records_kept: u64,
}

impl CleanedSegment {
    /// Deletes the cleaned files (the log changed under the cleaner, or it stops).
    pub fn discard(mut self) {
        self.segment.take();
        let (log, oi, ti) = Segment::paths_with_suffix(&self.dir, self.base, CLEANED_SUFFIX);
        for p in [log, oi, ti, txn_index::path(&self.dir, self.base, CLEANED_SUFFIX)] {
            let _ = self.storage.remove(&p);
        }
    }
}

fn append_error(e: AppendFailure) -> LogError {
    match e {
        AppendFailure::RolledBack(e) | AppendFailure::NotRolledBack(e) => e,
    }
}

impl Log {
    /// How dirty the log is, given the cleaner checkpoint for it (`None`: never cleaned);
    /// `None` when the log is not compacted, is offline, or has nothing cleanable.
    pub fn cleanable_stats(&self, checkpoint: Option<i64>, now_ms: i64) -> Result<Option<CleanableStats>, LogError> {
        if !self.config.cleanup_compact || self.ensure_online().is_err() {
            return Ok(None);
        }
        let first_dirty = self.first_dirty(checkpoint);
        let first_uncleanable = self.first_uncleanable(first_dirty, now_ms);
        if first_dirty >= first_uncleanable {
            return Ok(None);
        }
        let mut stats =
            CleanableStats { first_dirty, first_uncleanable, clean_bytes: 0, dirty_bytes: 0, max_lag_exceeded: false };
        let bases: Vec<i64> = self.segments.keys().copied().collect();
        for (i, (&base, seg)) in self.segments.iter().enumerate() {
            let next_base = bases.get(i + 1).copied().unwrap_or(i64::MAX);
            if base >= first_uncleanable {
                break;
            }
            if next_base <= first_dirty {
                stats.clean_bytes += seg.size();
            } else {
                if stats.dirty_bytes == 0 && self.config.max_compaction_lag_ms < i64::MAX {
                    // The first dirty batch's timestamp tells how old the oldest dirty record is.
                    let mut head = [0u8; BATCH_HEADER_LEN];
                    let read = seg.data_file().read_at(0, &mut head).is_ok();
                    let first = if read { BatchHeader::parse(&head).ok() } else { None };
                    let oldest = first.map_or(seg.largest_timestamp().unwrap_or(now_ms), |h| h.max_timestamp);
                    stats.max_lag_exceeded = now_ms.saturating_sub(oldest) > self.config.max_compaction_lag_ms;
                }
                stats.dirty_bytes += seg.size();
            }
        }
        Ok(Some(stats))
    }

    /// All steps of a cleaning at once, for a caller that owns the log outright (tests,
    /// tools): returns the new first dirty offset, or `None` when nothing was cleanable.
    pub fn clean_now(
        &mut self,
        checkpoint: Option<i64>,
        now_ms: i64,
        producer_last: HashMap<i64, i64>,
        stable_offset: i64,
        map: &mut OffsetMap,
    ) -> Result<Option<i64>, LogError> {
        let Some(plan) = self.clean_plan(checkpoint, now_ms, producer_last, stable_offset)? else { return Ok(None) };
        let end = plan.build_offset_map(map, &mut |_| true)?;
        for group in plan.groups(end) {
            let cleaned = plan.clean_group(group, map, now_ms, &mut |_| true)?;
            if !self.replace_segments(cleaned)? {
                return Err(LogError::InvalidArgument("the log changed during cleaning".to_owned()));
            }
        }
        Ok(Some(end))
    }

    fn first_dirty(&self, checkpoint: Option<i64>) -> i64 {
        match checkpoint {
            // A checkpoint beyond the log end (the log was truncated) is stale.
            Some(c) if c <= self.log_end_offset => c.max(self.log_start_offset),
            _ => self.log_start_offset,
        }
    }

    /// The active segment's base, or the first segment from `first_dirty` on holding a record
    /// younger than `min.compaction.lag.ms` (Kafka's `LogCleanerManager.cleanableOffsets`).
    fn first_uncleanable(&self, first_dirty: i64, now: i64) -> i64 {
        let active = self.segments.keys().next_back().copied().unwrap_or(first_dirty);
        let lag = self.config.min_compaction_lag_ms;
        if lag <= 0 {
            return active;
        }
        let start = self.segments.range(..=first_dirty).next_back().map_or(i64::MIN, |(b, _)| *b);
        self.segments
            .range(start..active)
            .find(|(_, s)| s.largest_timestamp().is_some_and(|ts| ts > now.saturating_sub(lag)))
            .map_or(active, |(b, _)| *b)
    }

    /// Step 1 (under the log's lock): what a cleaning of this log would work on, or `None`
    /// when nothing is cleanable. `producer_last` gives, for each idempotent producer id, the
    /// last offset of its last batch (the owner's producer state), whose batch is kept even
    /// when cleaning empties it. `stable_offset`: the owner's last stable offset (at most its
    /// high watermark); no segment holding it or anything above is cleaned, as in Kafka: what
    /// may still be truncated, or belongs to an undecided transaction, stays as it is.
    pub fn clean_plan(
        &self,
        checkpoint: Option<i64>,
        now_ms: i64,
        producer_last: HashMap<i64, i64>,
        stable_offset: i64,
    ) -> Result<Option<CleanPlan>, LogError> {
        if !self.config.cleanup_compact {
            return Ok(None);
        }
        self.ensure_online()?;
        let first_dirty = self.first_dirty(checkpoint);
        let stable_segment = self.segments.range(..=stable_offset).next_back().map_or(i64::MIN, |(b, _)| *b);
        let first_uncleanable = self.first_uncleanable(first_dirty, now_ms).min(stable_segment);
        if first_dirty >= first_uncleanable {
            return Ok(None);
        }
        let bases: Vec<i64> = self.segments.keys().copied().collect();
        let mut segments = Vec::new();
        for (i, (&base, seg)) in self.segments.iter().enumerate() {
            if base >= first_uncleanable {
                break;
            }
            let Some(&next_base) = bases.get(i + 1) else { break };
            let path = seg.log_path().to_path_buf();
            segments.push(SegView {
                base,
                next_base,
                size: seg.size(),
                file: seg.data_file(),
                path,
                aborted: seg.aborted_txns().to_vec(),
            });
        }
        let from = segments.first().map_or(first_dirty, |s| s.base);
        let aborted = self.collect_aborted_txns(from, first_uncleanable);
        let walk = std::sync::Mutex::new(TxnWalk::new(&aborted, from));
        Ok(Some(CleanPlan {
            dir: self.dir.clone(),
            storage: self.storage.clone(),
            config: self.config.clone(),
            segments,
            first_dirty,
            first_uncleanable,
            producer_last,
            aborted,
            walk,
        }))
    }

    /// Step 3 (under the log's lock): swaps `cleaned` in for the segments it was made from, as
    /// the module docs describe. Returns `false` (and drops the cleaned files) when those
    /// segments changed since the plan; an I/O error takes the log offline (a restart then
    /// finishes or undoes the swap).
    pub fn replace_segments(&mut self, mut cleaned: CleanedSegment) -> Result<bool, LogError> {
        self.ensure_online()?;
        let active = self.segments.keys().next_back().copied();
        let unchanged = self.config.cleanup_compact
            && cleaned.replaced.iter().all(|(base, size)| {
                Some(*base) != active && self.segments.get(base).is_some_and(|s| s.size() == *size)
            })
            && self.segments.range(cleaned.base..cleaned.end).count() == cleaned.replaced.len();
        if !unchanged {
            cleaned.discard();
            return Ok(false);
        }
        // The new segment's files are closed before they are renamed.
        drop(cleaned.segment.take());
        let result = self.swap_in(&cleaned);
        self.offline_on_io_error(result).map(|()| true)
    }

    fn swap_in(&mut self, cleaned: &CleanedSegment) -> Result<(), LogError> {
        let dir = self.dir.clone();
        let storage = self.storage.clone();
        let (log_c, oi_c, ti_c) = Segment::paths_with_suffix(&dir, cleaned.base, CLEANED_SUFFIX);
        let swap = dir.join(swap_name(cleaned.base, cleaned.end));
        storage.rename(&log_c, &swap).map_err(LogError::io(&swap))?;
        storage.sync_dir(&dir).map_err(LogError::io(&dir))?;
        for (base, _) in &cleaned.replaced {
            if let Some(seg) = self.segments.remove(base) {
                seg.delete_files()?;
            }
        }
        // The deletions are durable before the new segment takes the old first one's name.
        storage.sync_dir(&dir).map_err(LogError::io(&dir))?;
        let txn_c = txn_index::path(&dir, cleaned.base, CLEANED_SUFFIX);
        finish_swap(&*storage, &dir, cleaned.base, &swap, [&oi_c, &ti_c, &txn_c])?;
        let (seg, damaged) = Segment::open(&self.storage, &dir, cleaned.base, &self.config)?;
        let mut seg = seg;
        if damaged {
            seg.recover(&self.config, false)?;
        }
        self.segments.insert(cleaned.base, seg);
        Ok(())
    }
}

/// `<base:020>.<end:020>.swap`.
fn swap_name(base: i64, end: i64) -> String {
    format!("{base:020}.{end:020}.{SWAP_EXT}")
}

fn parse_swap_name(name: &str) -> Option<(i64, i64)> {
    let stem = name.strip_suffix(".swap")?;
    let (b, e) = stem.split_once('.')?;
    let digits = |s: &str| s.len() == 20 && s.bytes().all(|c| c.is_ascii_digit());
    if !digits(b) || !digits(e) {
        return None;
    }
    Some((b.parse().ok()?, e.parse().ok()?))
}

/// Steps 3-4's renames: the cleaned indexes (offset, time, aborted transactions), then the
/// swap file, to their final names.
fn finish_swap(
    storage: &dyn Storage,
    dir: &Path,
    base: i64,
    swap: &Path,
    cleaned_indexes: [&Path; 3],
) -> Result<(), LogError> {
    let (_, oi, ti) = Segment::paths_with_suffix(dir, base, "");
    let txn = txn_index::path(dir, base, "");
    for (from, to) in cleaned_indexes.into_iter().zip([&oi, &ti, &txn]) {
        if storage.exists(from).map_err(LogError::io(from))? {
            storage.rename(from, to).map_err(LogError::io(to))?;
        } else if *to != txn && storage.exists(to).map_err(LogError::io(to))? {
            // Left from the replaced segment: it does not index the new one. (A `.txnindex`
            // without its `.cleaned` file is the new one, renamed before a crash: the old
            // one was deleted, durably, before any rename.)
            storage.remove(to).map_err(LogError::io(to))?;
        }
    }
    let (log, _, _) = Segment::paths_with_suffix(dir, base, "");
    storage.rename(swap, &log).map_err(LogError::io(&log))?;
    storage.sync_dir(dir).map_err(LogError::io(dir))
}

/// At open, before segments are read: finishes every committed swap in `dir` and deletes
/// the files of cleanings that had not committed (see the module docs).
pub(crate) fn recover_swaps(storage: &dyn Storage, dir: &Path) -> Result<(), LogError> {
    let names = storage.list(dir).map_err(LogError::io(dir))?;
    let mut changed = false;
    for name in &names {
        let Some((base, end)) = parse_swap_name(name) else { continue };
        tracing::info!(dir = %dir.display(), base, end, "finishing a log cleaner swap a stop interrupted");
        // `B.txnindex` without `B.txnindex.cleaned` is the new one, already renamed (the old
        // segments' files were deleted, durably, before any rename): unlike the other
        // indexes it cannot be rebuilt from the data, so it stays.
        let txn_cleaned = format!("{base:020}.txnindex{CLEANED_SUFFIX}");
        let renamed_txn_index = !names.contains(&txn_cleaned);
        for other in &names {
            let Some((stem, ext)) = other.split_once('.') else { continue };
            let is_segment_file = matches!(ext, "log" | "index" | "timeindex" | "txnindex");
            let in_range = stem.len() == 20 && stem.parse::<i64>().is_ok_and(|b| b >= base && b < end);
            let new_txn_index = ext == "txnindex" && stem.parse::<i64>() == Ok(base) && renamed_txn_index;
            if is_segment_file && in_range && !new_txn_index {
                let p = dir.join(other);
                match storage.remove(&p) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(LogError::io(&p)(e)),
                    _ => {}
                }
            }
        }
        let (_, oi_c, ti_c) = Segment::paths_with_suffix(dir, base, CLEANED_SUFFIX);
        let txn_c = txn_index::path(dir, base, CLEANED_SUFFIX);
        finish_swap(storage, dir, base, &dir.join(name), [&oi_c, &ti_c, &txn_c])?;
        changed = true;
    }
    for name in storage.list(dir).map_err(LogError::io(dir))? {
        if name.ends_with(CLEANED_SUFFIX) {
            let p = dir.join(&name);
            storage.remove(&p).map_err(LogError::io(&p))?;
            changed = true;
        }
    }
    if changed {
        storage.sync_dir(dir).map_err(LogError::io(dir))?;
    }
    Ok(())
}

impl CleanPlan {
    /// Where the dirty section starts.
    pub fn first_dirty(&self) -> i64 {
        self.first_dirty
    }

    /// Where the cleanable section ends.
    pub fn first_uncleanable(&self) -> i64 {
        self.first_uncleanable
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Step 2a: puts the latest offset of every key of the dirty section into `map` (cleared
    /// first), batch by batch until the map is full. Returns the offset up to which the map
    /// covers the dirty section: the next cleaning's first dirty offset. `io` is told how many
    /// bytes were read (for throttling); when it answers `false` the cleaning stops with
    /// [`LogError::CleaningAborted`].
    pub fn build_offset_map(&self, map: &mut OffsetMap, io: &mut dyn FnMut(u64) -> bool) -> Result<i64, LogError> {
        map.clear();
        let mut end = self.first_dirty;
        let dirty = self.segments.iter().filter(|s| s.next_base > self.first_dirty);
        let mut txns = TxnWalk::new(&self.aborted, dirty.clone().next().map_or(self.first_dirty, |s| s.base));
        for seg in dirty {
            let mut reader = BatchReader::new(seg);
            while let Some((h, range)) = reader.next_batch()? {
                if !io(range.len() as u64) {
                    return Err(LogError::CleaningAborted);
                }
                // Aborted records never enter the map: they must not shadow committed ones.
                let aborted = if h.is_control() {
                    txns.marker(&h, marker_type(reader.bytes(range.clone())));
                    true
                } else {
                    txns.data(&h)
                };
                if h.last_offset() < self.first_dirty {
                    continue;
                }
                if !aborted {
                    if !map.has_room_for(h.records_count.max(0) as usize) {
                        if map.is_empty() {
                            return Err(LogError::InvalidArgument(format!(
                                "a batch of {} records does not fit in the cleaner's offset map of {} keys (raise log.cleaner.dedupe.buffer.size)",
                                h.records_count,
                                map.capacity()
                            )));
                        }
                        map.covered_to(end);
                        return Ok(end);
                    }
                    let bytes = reader.bytes(range);
                    // A batch too big to hold decompressed stays out of the map (and as it is).
                    if let Some(section) = section_of(bytes, &seg.path)? {
                        for r in parse_records(&section, h.records_count).map_err(|e| corrupt(&seg.path, &e))? {
                            let offset = r.offset(h.base_offset);
                            if let (Some(key), true) = (r.key, offset >= self.first_dirty) {
                                map.put(key, offset);
                            }
                        }
                    }
                }
                end = h.last_offset() + 1;
            }
            end = end.max(seg.next_base.min(self.first_uncleanable));
        }
        map.covered_to(end);
        Ok(end)
    }

    /// The segments to clean, given the map's `end`, in groups that each become one segment
    /// (Kafka's `groupSegmentsBySize`): consecutive, at most `segment.bytes` together, and an
    /// offset range that fits a segment's 32-bit relative offsets.
    pub fn groups(&self, end: i64) -> Vec<Range<usize>> {
        let limit = self.config.segment_bytes.clamp(1, i32::MAX as u64);
        let count = self.segments.iter().take_while(|s| s.base < end).count();
        let mut out = Vec::new();
        let mut start = 0;
        while start < count {
            let mut size = self.segments[start].size;
            let mut stop = start + 1;
            while stop < count {
                let next = &self.segments[stop];
                let fits = size + next.size <= limit
                    && next.next_base.saturating_sub(self.segments[start].base) <= i64::from(i32::MAX);
                if !fits {
                    break;
                }
                size += next.size;
                stop += 1;
            }
            out.push(start..stop);
            start = stop;
        }
        out
    }

    /// Step 2b: writes the cleaned copy of the segments `group` (from [`Self::groups`]) under
    /// `.cleaned` names, fsynced. `now_ms` decides which tombstones' delete horizon passed and
    /// sets the horizon of tombstones cleaned for the first time. The group's last batch is
    /// always kept (emptied if need be), so the new segment ends where the old ones did and
    /// recovery can tell a whole closed segment from a torn roll. `io` as for
    /// [`Self::build_offset_map`].
    pub fn clean_group(
        &self,
        group: Range<usize>,
        map: &OffsetMap,
        now_ms: i64,
        io: &mut dyn FnMut(u64) -> bool,
    ) -> Result<CleanedSegment, LogError> {
        let segs = &self.segments[group];
        let (Some(first), Some(last)) = (segs.first(), segs.last()) else {
            return Err(LogError::InvalidArgument("an empty group of segments to clean".to_owned()));
        };
        let map_end = map.end().unwrap_or(self.first_dirty);
        let mut cleaned = CleanedSegment {
            base: first.base,
            end: last.next_base,
            replaced: segs.iter().map(|s| (s.base, s.size)).collect(),
            segment: None,
            storage: self.storage.clone(),
            dir: self.dir.clone(),
            bytes_before: segs.iter().map(|s| s.size).sum(),
            bytes_after: 0,
            records_read: 0,
            records_kept: 0,
        };
        let mut out = Segment::create_with_suffix(&self.storage, &self.dir, first.base, &self.config, CLEANED_SUFFIX)?;
        let mut txns = self.walk.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Abort markers this group removes: their index entries go with them.
        let mut removed_aborts: HashSet<i64> = HashSet::new();
        let written = (|| -> Result<(), LogError> {
            for (i, seg) in segs.iter().enumerate() {
                let mut reader = BatchReader::new(seg);
                while let Some((h, range)) = reader.next_batch()? {
                    if !io(range.len() as u64) {
                        return Err(LogError::CleaningAborted);
                    }
                    let group_last = i + 1 == segs.len() && reader.at_end();
                    let bytes = reader.bytes(range);
                    let kept = if h.is_control() {
                        let kind = marker_type(bytes);
                        let alone = txns.marker(&h, kind);
                        let kept = self.filter_marker(&h, bytes, alone, now_ms, &seg.path, group_last)?;
                        let removed = alone && delete_horizon(&h).is_some_and(|at| now_ms >= at);
                        if removed && kind == Some(false) {
                            removed_aborts.insert(h.base_offset);
                        }
                        kept
                    } else {
                        let drop_all = txns.data(&h);
                        let view = Filter { map, map_end, now_ms, drop_all };
                        self.filter_batch(&h, bytes, &view, &seg.path, group_last, &mut cleaned)?
                    };
                    if let Some(b) = kept {
                        out.append(&b, now_ms, &self.config).map_err(append_error)?;
                        if !io(b.len() as u64) {
                            return Err(LogError::CleaningAborted);
                        }
                    }
                }
            }
            // Every aborted transaction of the group keeps its entry while its marker stays (one
            // whose records are gone covers nothing); a removed marker takes it along, so that
            // no later cleaning takes the producer's next transactions for aborted ones.
            for txn in segs.iter().flat_map(|s| &s.aborted).filter(|t| !removed_aborts.contains(&t.last_offset)) {
                out.append_aborted_txn(*txn)?;
            }
            out.seal()
        })();
        cleaned.bytes_after = out.size();
        cleaned.segment = Some(out);
        match written {
            Ok(()) => {
                self.storage.sync_dir(&self.dir).map_err(LogError::io(&self.dir))?;
                Ok(cleaned)
            }
            Err(e) => {
                cleaned.discard();
                Err(e)
            }
        }
    }

    /// The batch with only the records to keep; `None` to drop it whole. `group_last`: the last
    /// batch of the group, kept even when emptied.
    fn filter_batch<'a>(
        &self,
        h: &BatchHeader,
        bytes: &'a [u8],
        f: &Filter<'_>,
        path: &Path,
        group_last: bool,
        stats: &mut CleanedSegment,
    ) -> Result<Option<std::borrow::Cow<'a, [u8]>>, LogError> {
        let (map, map_end, now_ms) = (f.map, f.map_end, f.now_ms);
        let Some(section) = section_of(bytes, path)? else {
            return Ok(Some(std::borrow::Cow::Borrowed(bytes)));
        };
        let records = parse_records(&section, h.records_count).map_err(|e| corrupt(path, &e))?;
        let horizon = delete_horizon(h);
        let horizon_passed = horizon.is_some_and(|t| now_ms >= t);
        let mut tombstones = false;
        let kept: Vec<_> = records
            .iter()
            .copied()
            .filter(|r| {
                let offset = r.offset(h.base_offset);
                if f.drop_all {
                    return false;
                }
                let Some(key) = r.key else { return false };
                // Past what the map covers, nothing is known of later records of the key: keep
                // as it is, tombstones too (dropping one whose older values the map has not
                // yet removed would bring those values back).
                let keep = if offset >= map_end {
                    true
                } else {
                    map.get(key).is_none_or(|o| offset >= o) && !(r.null_value && horizon_passed)
                };
                tombstones |= keep && r.null_value;
                keep
            })
            .collect();
        stats.records_read += records.len() as u64;
        stats.records_kept += kept.len() as u64;
        // An empty batch is kept only as the last of its producer (its sequence must survive a
        // restart, Kafka's RETAIN_EMPTY) or as the group's last batch; otherwise it goes, even
        // one emptied by an earlier cleaning.
        let last_of_producer = h.has_producer_id() && self.producer_last.get(&h.producer_id) == Some(&h.last_offset());
        if kept.is_empty() && !last_of_producer && !group_last {
            return Ok(None);
        }
        let set_horizon = tombstones && horizon.is_none();
        if kept.len() == records.len() && !set_horizon {
            return Ok(Some(std::borrow::Cow::Borrowed(bytes)));
        }
        let new_horizon =
            if set_horizon { Some(now_ms.saturating_add(self.config.delete_retention_ms)) } else { horizon };
        let rebuilt =
            rebuild_batch(h, &kept, new_horizon, CompressionLevels::default(), usize::MAX >> 1).map_err(|e| {
                LogError::InvalidArgument(format!("cannot rewrite a batch at offset {}: {e}", h.base_offset))
            })?;
        Ok(Some(std::borrow::Cow::Owned(rebuilt)))
    }
}

/// What decides which records of a data batch stay.
struct Filter<'a> {
    map: &'a OffsetMap,
    map_end: i64,
    now_ms: i64,
    /// The batch belongs to an aborted transaction: none of its records stay.
    drop_all: bool,
}

impl CleanPlan {
    /// A transaction marker: kept as it is while records of its transaction are left (`alone`
    /// false); once they are gone, kept with a delete horizon the first time, removed after
    /// it (unless it is the group's last batch, which always stays, emptied).
    fn filter_marker<'a>(
        &self,
        h: &BatchHeader,
        bytes: &'a [u8],
        alone: bool,
        now_ms: i64,
        path: &Path,
        group_last: bool,
    ) -> Result<Option<std::borrow::Cow<'a, [u8]>>, LogError> {
        if !alone {
            return Ok(Some(std::borrow::Cow::Borrowed(bytes)));
        }
        let rebuild = |kept: &[strata_protocol::records::filter::RawRecord<'_>], horizon: Option<i64>| {
            rebuild_batch(h, kept, horizon, CompressionLevels::default(), usize::MAX >> 1).map_err(|e| {
                LogError::InvalidArgument(format!("cannot rewrite a marker at offset {}: {e}", h.base_offset))
            })
        };
        match delete_horizon(h) {
            Some(at) if now_ms >= at => {
                if group_last {
                    Ok(Some(std::borrow::Cow::Owned(rebuild(&[], Some(at))?)))
                } else {
                    Ok(None)
                }
            }
            Some(_) => Ok(Some(std::borrow::Cow::Borrowed(bytes))),
            None => {
                let Some(section) = section_of(bytes, path)? else {
                    return Ok(Some(std::borrow::Cow::Borrowed(bytes)));
                };
                let records = parse_records(&section, h.records_count).map_err(|e| corrupt(path, &e))?;
                let horizon = now_ms.saturating_add(self.config.delete_retention_ms);
                Ok(Some(std::borrow::Cow::Owned(rebuild(&records, Some(horizon))?)))
            }
        }
    }
}

/// The decompressed records of `batch`, or `None` when they are more than
/// [`MAX_FILTERED_RECORDS_BYTES`].
fn section_of<'a>(batch: &'a [u8], path: &Path) -> Result<Option<std::borrow::Cow<'a, [u8]>>, LogError> {
    records_section_within(batch, MAX_FILTERED_RECORDS_BYTES).map_err(|e| corrupt(path, &e))
}

fn corrupt(path: &Path, e: &dyn std::fmt::Display) -> LogError {
    LogError::Corrupt { path: path.to_path_buf(), position: 0, reason: e.to_string() }
}
