//! One segment: a `.log` file of batches plus its `.index` and `.timeindex`.
//!
//! Invariants:
//! - `size` is the number of valid bytes: `[0, size)` of the `.log` file is a sequence of whole
//!   batches with increasing, non-overlapping offsets, all `>= base_offset` and within
//!   `base_offset + i32::MAX`; bytes are only ever written at `size` (appends).
//! - `max_mapped_len` is the largest length ever mapped for the current file; the file is never
//!   shrunk below it (see the `mmap` module). Truncating below it replaces the file instead.
//! - The indexes are writable (mapped read-write, preallocated) only while the segment is the
//!   log's active segment.
//! - Every batch a read, `batch_at` or `find_by_timestamp` hands out passed its CRC32C check,
//!   once: ranges of the file known to hold checked batches (written by this process, scanned by
//!   recovery, or checked on an earlier read) are remembered in [`MapState::verified`], so a batch
//!   is checked at most once per process however often it is fetched. A batch that fails is
//!   reported as [`LogError::Corrupt`] and never handed out.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use strata_protocol::batch::{offsets, BatchHeader, BatchIter, BATCH_HEADER_LEN};

use crate::config::LogConfig;
use crate::error::LogError;
use crate::index::{Entry, Index, IndexKind};
use crate::storage::{Storage, StorageFile};
use crate::txn_index::{self, AbortedTxn, TxnIndex};

/// File name of a segment file: the base offset zero-padded to 20 digits plus `ext`.
pub(crate) fn file_name(base_offset: i64, ext: &str) -> String {
    format!("{base_offset:020}.{ext}")
}

#[derive(Debug, Default)]
struct MapState {
    bytes: Option<Bytes>,
    max_mapped_len: u64,
    /// Byte ranges of the `.log` file whose batches passed their CRC check.
    verified: RangeSet,
}

/// Disjoint, non-adjacent byte ranges `[start, end)`, keyed by start.
#[derive(Debug, Default)]
pub(crate) struct RangeSet(BTreeMap<u64, u64>);

impl RangeSet {
    /// Whether `[start, end)` lies within one range.
    pub(crate) fn contains(&self, start: u64, end: u64) -> bool {
        self.0.range(..=start).next_back().is_some_and(|(_, &e)| e >= end)
    }

    /// Adds `[start, end)`, merging it with overlapping or adjacent ranges.
    pub(crate) fn insert(&mut self, mut start: u64, mut end: u64) {
        if start >= end {
            return;
        }
        if let Some((&s, &e)) = self.0.range(..=start).next_back() {
            if e >= start {
                start = s;
                end = end.max(e);
            }
        }
        let absorbed: Vec<u64> = self.0.range(start..=end).map(|(&s, _)| s).collect();
        for s in absorbed {
            if let Some(e) = self.0.remove(&s) {
                end = end.max(e);
            }
        }
        self.0.insert(start, end);
    }

    /// Forgets everything at or after `len`.
    pub(crate) fn truncate(&mut self, len: u64) {
        self.0.retain(|&s, _| s < len);
        for e in self.0.values_mut() {
            *e = (*e).min(len);
        }
    }

    /// Number of ranges.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }
}

/// Outcome of reading from one segment.
pub(crate) enum SegmentRead {
    /// No batch in this segment reaches the offset: look in the next segment.
    NotHere,
    /// The bytes to return (possibly empty when the bound excluded the first batch), and
    /// where they start in the segment file.
    Found { records: Bytes, position: u64 },
    /// The first batch to return has not been CRC-checked yet, and the read was asked not to
    /// read the file for it (see [`Segment::read`]'s `cached_only`).
    NeedsDisk,
}

/// What [`Segment::max_timestamp_from`] finds: (timestamp, offset) from batch headers, and the
/// batch the minimum offset falls inside with its position.
pub(crate) type HeaderMaxima = (Option<(i64, i64)>, Option<(usize, Bytes)>);

/// Result of scanning a segment during recovery.
pub(crate) struct Recovered {
    /// Offset after the last valid batch (the base offset if none).
    pub next_offset: i64,
    /// Bytes cut from the end because they were not valid batches.
    pub truncated_bytes: u64,
    /// Where the scan stopped before the end of the file, and why (a torn last write after a
    /// crash, or damage). `None` when every byte was a valid batch.
    pub problem: Option<(u64, String)>,
}

/// A segment of a log. See the module docs for its invariants.
#[derive(Debug)]
pub(crate) struct Segment {
    pub(crate) base_offset: i64,
    storage: Arc<dyn Storage>,
    dir: PathBuf,
    log_path: PathBuf,
    /// Shared so that a group-commit fsync can run without the log (see `Log::begin_flush`).
    file: Arc<dyn StorageFile>,
    size: u64,
    offset_index: Index,
    time_index: Index,
    bytes_since_index: u64,
    /// Largest batch max-timestamp and the last offset of the first batch reaching it.
    max_ts: Option<(i64, i64)>,
    /// Wall-clock time of the first append (for `segment.ms`).
    pub(crate) first_append_ms: Option<i64>,
    /// Wall-clock time of the last append, or the file's modification time when it was
    /// opened (for retention of segments whose records carry no timestamp).
    pub(crate) last_modified_ms: Option<i64>,
    map: Mutex<MapState>,
    /// The transactions aborted by markers in this segment (`.txnindex`).
    txn_index: TxnIndex,
}

fn sane(h: &BatchHeader, expected_min: i64, base: i64) -> Result<(), String> {
    if h.base_offset < expected_min {
        return Err(format!("batch base offset {} is below the expected {expected_min}", h.base_offset));
    }
    if h.last_offset_delta < 0 || h.records_count < 0 {
        return Err(format!("negative lastOffsetDelta {} or recordsCount {}", h.last_offset_delta, h.records_count));
    }
    if h.last_offset().saturating_sub(base) > i64::from(i32::MAX) {
        return Err(format!("offset {} is out of the segment's range", h.last_offset()));
    }
    Ok(())
}

/// Why [`Segment::append`] failed, and whether the file is as it was before the call.
#[derive(Debug)]
pub(crate) enum AppendFailure {
    /// The write failed and whatever part of it reached the file was cut off again.
    RolledBack(LogError),
    /// The write failed and the partial write could not be cut off.
    NotRolledBack(LogError),
}

impl Segment {
    fn paths(dir: &Path, base: i64) -> (PathBuf, PathBuf, PathBuf) {
        Self::paths_with_suffix(dir, base, "")
    }

    /// The `.log`, `.index` and `.timeindex` paths of the segment at `base`, each followed by
    /// `suffix` (the cleaner writes `.cleaned` files).
    pub(crate) fn paths_with_suffix(dir: &Path, base: i64, suffix: &str) -> (PathBuf, PathBuf, PathBuf) {
        let path = |ext: &str| dir.join(format!("{}{suffix}", file_name(base, ext)));
        (path("log"), path("index"), path("timeindex"))
    }

    /// Creates an empty active segment at `base_offset`, replacing any files of that name.
    pub(crate) fn create(
        storage: &Arc<dyn Storage>,
        dir: &Path,
        base_offset: i64,
        config: &LogConfig,
    ) -> Result<Segment, LogError> {
        Self::create_with_suffix(storage, dir, base_offset, config, "")
    }

    /// [`Segment::create`] with every file name followed by `suffix`.
    pub(crate) fn create_with_suffix(
        storage: &Arc<dyn Storage>,
        dir: &Path,
        base_offset: i64,
        config: &LogConfig,
        suffix: &str,
    ) -> Result<Segment, LogError> {
        let (log_path, oi, ti) = Self::paths_with_suffix(dir, base_offset, suffix);
        let file: Arc<dyn StorageFile> = Arc::from(storage.open(&log_path, true).map_err(LogError::io(&log_path))?);
        file.set_len(0).map_err(LogError::io(&log_path))?;
        let txn_index = TxnIndex::create(storage, txn_index::path(dir, base_offset, suffix))?;
        Ok(Segment {
            txn_index,
            base_offset,
            storage: storage.clone(),
            dir: dir.to_path_buf(),
            offset_index: Index::create(storage, IndexKind::Offset, &oi, config.segment_index_bytes)?,
            time_index: Index::create(storage, IndexKind::Time, &ti, config.segment_index_bytes)?,
            log_path,
            file,
            size: 0,
            bytes_since_index: 0,
            max_ts: None,
            first_append_ms: None,
            last_modified_ms: None,
            map: Mutex::new(MapState::default()),
        })
    }

    /// Opens an existing segment without reading its data. Returns whether its indexes were
    /// missing or failed the sanity check (the caller must then call [`Segment::recover`]).
    pub(crate) fn open(
        storage: &Arc<dyn Storage>,
        dir: &Path,
        base_offset: i64,
        config: &LogConfig,
    ) -> Result<(Segment, bool), LogError> {
        let (log_path, oi, ti) = Self::paths(dir, base_offset);
        let file: Arc<dyn StorageFile> = Arc::from(storage.open(&log_path, false).map_err(LogError::io(&log_path))?);
        let size = file.len().map_err(LogError::io(&log_path))?;
        let offset_index = Index::open_checked(storage, IndexKind::Offset, &oi, size)?;
        let time_index = Index::open_checked(storage, IndexKind::Time, &ti, u64::MAX)?;
        let damaged = offset_index.is_none() || time_index.is_none();
        let offset_index = match offset_index {
            Some(i) => i,
            None => Index::create(storage, IndexKind::Offset, &oi, config.segment_index_bytes)?,
        };
        let time_index = match time_index {
            Some(i) => i,
            None => Index::create(storage, IndexKind::Time, &ti, config.segment_index_bytes)?,
        };
        let max_ts = time_index.last_entry()?.map(|e| (e.key, base_offset + i64::from(e.value)));
        let last_modified_ms = file.modified_ms().map_err(LogError::io(&log_path))?;
        let txn_index = TxnIndex::open(storage, txn_index::path(dir, base_offset, ""), base_offset)?;
        Ok((
            Segment {
                txn_index,
                base_offset,
                storage: storage.clone(),
                dir: dir.to_path_buf(),
                log_path,
                file,
                size,
                offset_index,
                time_index,
                bytes_since_index: 0,
                max_ts,
                first_append_ms: None,
                last_modified_ms,
                map: Mutex::new(MapState::default()),
            },
            damaged,
        ))
    }

    /// Bytes of valid batches.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// Largest max-timestamp of the segment's batches and the offset holding it.
    pub(crate) fn max_timestamp(&self) -> Option<(i64, i64)> {
        self.max_ts
    }

    /// The time retention judges the segment by (Kafka's `LogSegment.largestTimestamp`): its
    /// largest record timestamp, or, when no record carries one (producers may write -1), the
    /// time it was last written. `None` only for a segment never written nor dated.
    pub(crate) fn largest_timestamp(&self) -> Option<i64> {
        match self.max_ts {
            Some((ts, _)) if ts >= 0 => Some(ts),
            _ => self.last_modified_ms,
        }
    }

    /// The `.log` file (for an fsync outside the log's lock, or for a reader to send from).
    pub(crate) fn data_file(&self) -> Arc<dyn StorageFile> {
        self.file.clone()
    }

    /// Path of the `.log` file.
    pub(crate) fn log_path(&self) -> &Path {
        &self.log_path
    }

    fn rel(&self, offset: i64) -> u32 {
        u32::try_from(offset - self.base_offset).unwrap_or(u32::MAX)
    }

    /// Whether the indexes have room for another append (keeping one time-index slot for the
    /// final entry written when the segment is sealed).
    pub(crate) fn indexes_nearly_full(&self) -> bool {
        self.offset_index.free_slots() < 1 || self.time_index.free_slots() < 2
    }

    /// Updates in-memory maxima and, every `index.interval.bytes`, the indexes for a batch at
    /// `position` — the same rule on append and on recovery, as in Apache Kafka.
    fn index_batch(&mut self, h: &BatchHeader, position: u64, interval: u32) {
        if self.max_ts.is_none_or(|(ts, _)| h.max_timestamp > ts) {
            self.max_ts = Some((h.max_timestamp, h.last_offset()));
        }
        if self.bytes_since_index > u64::from(interval) {
            let pos = u32::try_from(position).unwrap_or(u32::MAX);
            self.offset_index.append(Entry { key: i64::from(self.rel(h.last_offset())), value: pos });
            if let Some((ts, off)) = self.max_ts {
                // Keep the last slot for the entry written when the segment is sealed.
                if self.time_index.free_slots() >= 2 {
                    self.time_index.append(Entry { key: ts, value: self.rel(off) });
                }
            }
            self.bytes_since_index = 0;
        }
        self.bytes_since_index += h.total_size() as u64;
    }

    /// Writes `buf` (whole batches whose offsets were already assigned) at the end of the file
    /// and indexes them. On error nothing is considered written.
    pub(crate) fn append(&mut self, buf: &[u8], now_ms: i64, config: &LogConfig) -> Result<(), AppendFailure> {
        self.write_at_end(&[buf])?;
        let mut it = BatchIter::new(buf);
        loop {
            let pos = it.position() as u64;
            match it.next() {
                Some(Ok((h, _))) => self.index_batch(&h, self.size + pos, config.index_interval_bytes),
                _ => break,
            }
        }
        self.appended(buf.len() as u64, now_ms);
        Ok(())
    }

    /// Writes one batch whose offsets start at `header.base_offset` without copying it: the new
    /// base offset and the rest of `batch` (which still holds the producer's base offset) go to
    /// the file as two pieces of one vectored write. `header` is the batch's parsed header with
    /// the new base offset. The base offset is outside the CRC, which stays valid.
    pub(crate) fn append_batch(
        &mut self,
        header: &BatchHeader,
        batch: &[u8],
        now_ms: i64,
        config: &LogConfig,
    ) -> Result<(), AppendFailure> {
        // baseOffset, batchLength and partitionLeaderEpoch from `header` (the offset the log
        // assigned, the epoch a leader stamps; neither is under the CRC), the rest as it came.
        let mut prefix = [0u8; 16];
        prefix[..8].copy_from_slice(&header.base_offset.to_be_bytes());
        prefix[8..12].copy_from_slice(&header.batch_length.to_be_bytes());
        prefix[12..].copy_from_slice(&header.partition_leader_epoch.to_be_bytes());
        let rest = batch.get(prefix.len()..).unwrap_or_default();
        self.write_at_end(&[&prefix, rest])?;
        self.index_batch(header, self.size, config.index_interval_bytes);
        self.appended(batch.len() as u64, now_ms);
        Ok(())
    }

    /// Writes `parts` at the end of the file; on failure cuts off whatever part of them landed.
    fn write_at_end(&mut self, parts: &[&[u8]]) -> Result<(), AppendFailure> {
        let Err(source) = self.file.write_all_vectored_at(self.size, parts) else {
            return Ok(());
        };
        let error = LogError::Io { path: self.log_path.clone(), source };
        // Drop any partial write; it lies beyond every mapping, so shrinking is safe.
        Err(match self.file.set_len(self.size) {
            Ok(()) => AppendFailure::RolledBack(error),
            Err(e) => {
                tracing::error!(path = %self.log_path.display(), error = %e, "cannot cut off a failed append");
                AppendFailure::NotRolledBack(error)
            }
        })
    }

    /// Bookkeeping after `len` bytes were written and indexed at the end.
    fn appended(&mut self, len: u64, now_ms: i64) {
        // The caller checked the CRCs of what it appends (see `Log::append`).
        self.map.lock().unwrap_or_else(PoisonError::into_inner).verified.insert(self.size, self.size + len);
        self.size += len;
        self.first_append_ms.get_or_insert(now_ms);
        self.last_modified_ms = Some(now_ms);
    }

    /// Scans the whole `.log` file through a temporary mapping, checking every batch's header
    /// and CRC; cuts the file after the last valid batch and rebuilds both indexes. When
    /// `active` the indexes stay writable, otherwise they are sealed.
    pub(crate) fn recover(&mut self, config: &LogConfig, active: bool) -> Result<Recovered, LogError> {
        let len = self.file.len().map_err(LogError::io(&self.log_path))?;
        let (_, oi, ti) = Self::paths(&self.dir, self.base_offset);
        self.offset_index = Index::create(&self.storage, IndexKind::Offset, &oi, config.segment_index_bytes)?;
        self.time_index = Index::create(&self.storage, IndexKind::Time, &ti, config.segment_index_bytes)?;
        self.max_ts = None;
        self.bytes_since_index = 0;
        *self.map.lock().unwrap_or_else(PoisonError::into_inner) = MapState::default();

        // Read with pread, never through a mapping: a bad sector is then an I/O error that
        // takes this log offline, not a SIGBUS that kills the broker.
        let mut header = [0u8; BATCH_HEADER_LEN];
        let mut expected = self.base_offset;
        let mut problem = None;
        let mut pos = 0u64;
        while pos < len {
            if len - pos < BATCH_HEADER_LEN as u64 {
                problem = Some((pos, "truncated batch header".to_owned()));
                break;
            }
            self.file.read_at(pos, &mut header).map_err(LogError::io(&self.log_path))?;
            let h = match BatchHeader::parse(&header) {
                Ok(h) => h,
                Err(e) => {
                    problem = Some((pos, e.to_string()));
                    break;
                }
            };
            if let Err(reason) = sane(&h, expected, self.base_offset) {
                problem = Some((pos, reason));
                break;
            }
            let total = h.total_size() as u64;
            if total > len - pos {
                problem = Some((pos, format!("batch of {total} bytes runs past the end of the file")));
                break;
            }
            if u32::try_from(pos + total).is_err() {
                problem = Some((pos, "segment larger than 4 GiB".to_owned()));
                break;
            }
            if self.crc_at(pos, total).map_err(LogError::io(&self.log_path))? != h.crc {
                problem = Some((pos, "CRC mismatch".to_owned()));
                break;
            }
            self.index_batch(&h, pos, config.index_interval_bytes);
            expected = h.last_offset() + 1;
            pos += total;
        }
        let valid = pos;
        let truncated_bytes = len - valid;
        // The active segment's tail is routinely torn by a crash (the caller reports it in its
        // recovery line); a closed segment was fsynced when it was rolled, so damage there is
        // worth a warning.
        if let (Some((pos, reason)), false) = (&problem, active) {
            tracing::warn!(
                path = %self.log_path.display(), position = pos, %reason, dropped_bytes = truncated_bytes,
                "recovery truncates a closed segment after its last valid batch"
            );
        }
        if truncated_bytes > 0 {
            self.file.set_len(valid).map_err(LogError::io(&self.log_path))?;
            self.file.sync().map_err(LogError::io(&self.log_path))?;
        }
        self.size = valid;
        self.map.lock().unwrap_or_else(PoisonError::into_inner).verified.insert(0, valid);
        // Aborted transactions whose marker was cut off with the tail are gone too.
        self.txn_index.truncate_to(expected)?;
        self.txn_index.flush()?;
        if !active {
            self.seal()?;
        }
        Ok(Recovered { next_offset: expected, truncated_bytes, problem })
    }

    /// Resumes the active segment after a clean shutdown: makes the indexes writable and finds
    /// the next offset by scanning from the last index entry. Returns `None` when the tail does
    /// not parse, in which case the caller runs [`Segment::recover`].
    pub(crate) fn resume_clean(&mut self, config: &LogConfig) -> Result<Option<i64>, LogError> {
        // Lookups binary-search the index: one out of order (damaged on disk) would send
        // reads of new batches into the middle of old ones. Recover instead.
        if !self.offset_index.is_increasing()? {
            return Ok(None);
        }
        let last = self.offset_index.last_entry()?;
        let start = last.map_or(0, |e| u64::from(e.value));
        self.offset_index.make_writable(config.segment_index_bytes)?;
        self.time_index.make_writable(config.segment_index_bytes)?;
        if start > self.size {
            return Ok(None);
        }
        let mut next = self.base_offset;
        let mut pos = start;
        let mut header = [0u8; strata_protocol::batch::BATCH_HEADER_LEN];
        while pos < self.size {
            if self.file.read_at(pos, &mut header).is_err() {
                return Ok(None);
            }
            let Ok(h) = BatchHeader::parse(&header) else {
                return Ok(None);
            };
            if sane(&h, next.max(self.base_offset), self.base_offset).is_err() {
                return Ok(None);
            }
            // The index's last entry names the last offset of the batch at its position (see
            // `index_batch`): if the batch there says otherwise, the index does not describe
            // this file, and reads through it would land in the wrong place. Recover instead.
            if pos == start && last.is_some_and(|e| e.key != h.last_offset() - self.base_offset) {
                return Ok(None);
            }
            next = h.last_offset() + 1;
            pos += h.total_size() as u64;
        }
        if pos != self.size {
            return Ok(None);
        }
        self.bytes_since_index = self.size - start;
        Ok(Some(next))
    }

    /// The valid bytes as a (cached, zero-copy) mapping; re-maps when the segment grew.
    pub(crate) fn data(&self) -> Result<Bytes, LogError> {
        let size = usize::try_from(self.size).unwrap_or(usize::MAX);
        let mut m = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(b) = &m.bytes {
            if b.len() >= size {
                return Ok(b.slice(..size));
            }
        }
        let bytes = self.file.map(self.size).map_err(LogError::io(&self.log_path))?;
        m.max_mapped_len = m.max_mapped_len.max(self.size);
        m.bytes = Some(bytes.clone());
        Ok(bytes)
    }

    fn corrupt(&self, position: usize, reason: impl ToString) -> LogError {
        LogError::Corrupt { path: self.log_path.clone(), position: position as u64, reason: reason.to_string() }
    }

    /// Position of the first batch whose last offset is `>= offset`, if any.
    fn locate(&self, data: &[u8], offset: i64) -> Result<Option<(usize, BatchHeader)>, LogError> {
        let start = self.scan_start(data, offset)?;
        self.first_batch_from(data, start, |h| h.last_offset() >= offset)
    }

    /// Where a forward scan for `offset` may start: the offset index's entry at or below it.
    ///
    /// The index only speeds scans up. One that passed the cheap checks at open (a clean
    /// shutdown trusts it) can still be wrong inside, e.g. damaged on disk: when its entry does
    /// not point at a batch starting at or before `offset` (offsets are dense, so the wanted
    /// batch starts there or later), the scan starts at the segment's beginning instead, so a
    /// bad index costs time, never an error or a wrong answer.
    fn scan_start(&self, data: &[u8], offset: i64) -> Result<usize, LogError> {
        let rel = offset.saturating_sub(self.base_offset);
        let Some(entry) = self.offset_index.floor(rel)? else {
            return Ok(0);
        };
        let start = entry.value as usize;
        if start == 0 {
            return Ok(0);
        }
        // An entry names the last offset of the batch at its position (see `index_batch`): a
        // header that parses there by chance (inside a record's bytes) will not also match it.
        let leads_there = data.get(start..).and_then(|rest| BatchHeader::parse(rest).ok()).is_some_and(|h| {
            h.base_offset <= offset && h.last_offset().checked_sub(self.base_offset) == Some(entry.key)
        });
        if !leads_there {
            tracing::warn!(path = %self.log_path.display(), offset, index_position = start,
                "offset index entry does not point at a batch at or before the offset; scanning the segment from its start");
            return Ok(0);
        }
        Ok(start)
    }

    fn first_batch_from(
        &self,
        data: &[u8],
        start: usize,
        pred: impl Fn(&BatchHeader) -> bool,
    ) -> Result<Option<(usize, BatchHeader)>, LogError> {
        let mut it = BatchIter::new(data.get(start..).unwrap_or(&[]));
        loop {
            let pos = start + it.position();
            match it.next() {
                None => return Ok(None),
                Some(Err(e)) => return Err(self.corrupt(pos, e)),
                Some(Ok((h, _))) if pred(&h) => return Ok(Some((pos, h))),
                Some(Ok(_)) => {}
            }
        }
    }

    /// Whether the batch at `position` (header `h`) was already CRC-checked.
    fn is_verified(&self, position: usize, h: &BatchHeader) -> bool {
        let (start, end) = (position as u64, (position + h.total_size()) as u64);
        self.map.lock().unwrap_or_else(PoisonError::into_inner).verified.contains(start, end)
    }

    /// Checks the CRC of `batch` (the batch at `position`, with header `h`) unless a read, an
    /// append or recovery already did; remembers a success.
    fn verify(&self, position: usize, h: &BatchHeader) -> Result<(), LogError> {
        let (start, end) = (position as u64, (position + h.total_size()) as u64);
        if self.map.lock().unwrap_or_else(PoisonError::into_inner).verified.contains(start, end) {
            return Ok(());
        }
        // pread, not the mapping: a bad sector is an I/O error here (KAFKA_STORAGE_ERROR for
        // the read), never a SIGBUS. Checked once, then only the mapping is read.
        let crc = self.crc_at(start, end - start).map_err(LogError::io(&self.log_path))?;
        if crc != h.crc {
            return Err(self.corrupt(
                position,
                format!("CRC mismatch in the batch at offsets {}..={}", h.base_offset, h.last_offset()),
            ));
        }
        self.map.lock().unwrap_or_else(PoisonError::into_inner).verified.insert(start, end);
        Ok(())
    }

    /// CRC32C of the batch at `pos` (`total` bytes), from the CRC-covered range on, read from the
    /// file with `pread` in fixed chunks.
    fn crc_at(&self, pos: u64, total: u64) -> std::io::Result<u32> {
        const CHUNK: usize = 256 * 1024;
        let from = offsets::ATTRIBUTES as u64;
        let mut buf = vec![0u8; CHUNK.min(total.saturating_sub(from) as usize)];
        let mut crc = 0u32;
        let mut at = pos + from;
        let end = pos + total;
        while at < end {
            let n = ((end - at) as usize).min(CHUNK);
            self.file.read_at(at, &mut buf[..n])?;
            crc = crc32c::crc32c_append(crc, &buf[..n]);
            at += n as u64;
        }
        Ok(crc)
    }

    /// Reads from the batch holding `offset`: at most `max_bytes` but at least one whole batch,
    /// no batch whose base offset is `>= max_offset`. Every batch returned passed its CRC check
    /// (see [`Segment::verify`]). Stops before a damaged batch when batches precede it, so the
    /// data before the damage stays readable; a read that starts at the damaged batch gets
    /// [`LogError::Corrupt`].
    pub(crate) fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        max_offset: i64,
        cached_only: bool,
    ) -> Result<SegmentRead, LogError> {
        let data = self.data()?;
        let Some((start, _)) = self.locate(&data, offset)? else {
            return Ok(SegmentRead::NotHere);
        };
        let mut end = start;
        let mut next: Option<i64> = None;
        for item in BatchIter::new(data.get(start..).unwrap_or(&[])) {
            let checked =
                item.map_err(|e| self.corrupt(end, e)).and_then(|(h, batch)| match next {
                    // A gap is the log cleaner's doing; going back is damage.
                    Some(n) if h.base_offset < n => Err(self
                        .corrupt(end, format!("batch base offset {} where {n} or more was expected", h.base_offset))),
                    _ => Ok((h, batch)),
                });
            let (h, batch) = match checked {
                Ok(ok) => ok,
                Err(e) if end > start => {
                    tracing::debug!(error = %e, "read stops before a damaged batch");
                    break;
                }
                Err(e) => return Err(e),
            };
            if h.base_offset >= max_offset {
                break;
            }
            if end > start && end - start + batch.len() > max_bytes {
                break;
            }
            if cached_only && !self.is_verified(end, &h) {
                // Checking it means reading the file: the caller decides where to wait.
                if end > start {
                    break;
                }
                return Ok(SegmentRead::NeedsDisk);
            }
            match self.verify(end, &h) {
                Ok(()) => {}
                Err(e) if end > start => {
                    tracing::debug!(error = %e, "read stops before a damaged batch");
                    break;
                }
                Err(e) => return Err(e),
            }
            end += batch.len();
            next = Some(h.last_offset() + 1);
        }
        Ok(SegmentRead::Found { records: data.slice(start..end), position: start as u64 })
    }

    /// The batch holding `offset`, if in this segment (CRC-checked).
    pub(crate) fn batch_at(&self, offset: i64) -> Result<Option<Bytes>, LogError> {
        let data = self.data()?;
        match self.locate(&data, offset)?.filter(|(_, h)| h.base_offset <= offset) {
            Some((pos, h)) => self.checked_slice(&data, pos, &h).map(Some),
            None => Ok(None),
        }
    }

    fn checked_slice(&self, data: &Bytes, pos: usize, h: &BatchHeader) -> Result<Bytes, LogError> {
        let batch = data.slice(pos..pos + h.total_size());
        self.verify(pos, h)?;
        Ok(batch)
    }

    /// The next batch that may hold a record at offset `>= min_offset` with timestamp `>= ts`:
    /// from byte `from` if given, else from where the time index says (Kafka's
    /// `LogSegment.findOffsetByTimestamp`); batches whose max timestamp is below `ts` are
    /// skipped by their header. Returns the batch (CRC-checked) and its position; reading its
    /// records (decompressing) is the caller's, so it can happen without the log's lock.
    pub(crate) fn timestamp_candidate(
        &self,
        ts: i64,
        min_offset: i64,
        from: Option<usize>,
    ) -> Result<Option<(usize, Bytes)>, LogError> {
        let data = self.data()?;
        let start = match from {
            Some(pos) => pos,
            None => {
                let from_time = self
                    .time_index
                    .floor(ts)?
                    .map(|e| self.base_offset + i64::from(e.value))
                    .unwrap_or(self.base_offset);
                self.scan_start(&data, from_time.max(min_offset))?
            }
        };
        match self.first_batch_from(&data, start, |h| h.max_timestamp >= ts && h.last_offset() >= min_offset)? {
            Some((pos, h)) => Ok(Some((pos, self.checked_slice(&data, pos, &h)?))),
            None => Ok(None),
        }
    }

    /// The largest record timestamp at offsets `>= min_offset` and the first offset holding
    /// it, as far as batch headers tell: `(best, partial)`. `best` is (timestamp, last offset
    /// of the batch) over the batches wholly at or above `min_offset`; `partial` is the batch
    /// `min_offset` falls inside (CRC-checked, with its position), whose records the caller
    /// reads without the log's lock.
    pub(crate) fn max_timestamp_from(&self, min_offset: i64) -> Result<HeaderMaxima, LogError> {
        let data = self.data()?;
        let Some((mut pos, _)) = self.locate(&data, min_offset)? else {
            return Ok((None, None));
        };
        let mut best: Option<(i64, i64)> = None;
        let mut partial = None;
        while let Some((at, h)) = self.first_batch_from(&data, pos, |_| true)? {
            if h.base_offset >= min_offset {
                if best.is_none_or(|(b, _)| h.max_timestamp > b) {
                    best = Some((h.max_timestamp, h.last_offset()));
                }
            } else if h.last_offset() >= min_offset {
                partial = Some((at, self.checked_slice(&data, at, &h)?));
            }
            pos = at + h.total_size();
        }
        Ok((best, partial))
    }

    /// Headers of the batches whose last offset is `>= from_offset`.
    pub(crate) fn headers_from(&self, from_offset: i64, out: &mut Vec<BatchHeader>) -> Result<(), LogError> {
        let data = self.data()?;
        let Some((start, _)) = self.locate(&data, from_offset)? else {
            return Ok(());
        };
        let mut it = BatchIter::new(data.get(start..).unwrap_or(&[]));
        loop {
            let pos = start + it.position();
            match it.next() {
                None => return Ok(()),
                Some(Err(e)) => return Err(self.corrupt(pos, e)),
                Some(Ok((h, _))) => out.push(h),
            }
        }
    }

    /// Removes every batch holding an offset `>= offset` and makes the segment writable (it
    /// becomes the active segment). Durable on return. Returns the new next offset.
    pub(crate) fn truncate_to(&mut self, offset: i64, config: &LogConfig) -> Result<i64, LogError> {
        // Scan with a temporary mapping: it is dropped before the file changes.
        let data = self.file.map(self.size).map_err(LogError::io(&self.log_path))?;
        let mut cut = 0usize;
        let mut next = self.base_offset;
        let mut max_ts: Option<(i64, i64)> = None;
        let mut it = BatchIter::new(&data);
        for item in it.by_ref() {
            let (h, batch) = item.map_err(|e| self.corrupt(cut, e))?;
            if h.last_offset() >= offset {
                break;
            }
            if max_ts.is_none_or(|(ts, _)| h.max_timestamp > ts) {
                max_ts = Some((h.max_timestamp, h.last_offset()));
            }
            cut += batch.len();
            next = h.last_offset() + 1;
        }
        let cut64 = cut as u64;
        if cut64 < self.size {
            let max_mapped = self.map.lock().unwrap_or_else(PoisonError::into_inner).max_mapped_len;
            if cut64 >= max_mapped {
                // No mapping ever covered the bytes being cut: shrink in place.
                drop(data);
                self.file.set_len(cut64).map_err(LogError::io(&self.log_path))?;
                self.file.sync().map_err(LogError::io(&self.log_path))?;
                self.map.lock().unwrap_or_else(PoisonError::into_inner).verified.truncate(cut64);
            } else {
                // Readers may hold mappings of the tail: write the kept prefix to a new file and
                // rename it over the old one (rule 2 of `mmap`).
                let tmp = self.log_path.with_extension("log.truncating");
                let f = self.storage.open(&tmp, true).map_err(LogError::io(&tmp))?;
                f.set_len(0).map_err(LogError::io(&tmp))?;
                f.write_all_at(0, data.get(..cut).unwrap_or(&[])).map_err(LogError::io(&tmp))?;
                f.sync().map_err(LogError::io(&tmp))?;
                drop(data);
                self.storage.rename(&tmp, &self.log_path).map_err(LogError::io(&self.log_path))?;
                self.storage.sync_dir(&self.dir).map_err(LogError::io(&self.dir))?;
                self.file = Arc::from(f);
                let mut m = self.map.lock().unwrap_or_else(PoisonError::into_inner);
                let mut verified = std::mem::take(&mut m.verified);
                verified.truncate(cut64);
                *m = MapState { verified, ..MapState::default() };
            }
            self.size = cut64;
        }
        self.offset_index.make_writable(config.segment_index_bytes)?;
        self.time_index.make_writable(config.segment_index_bytes)?;
        self.offset_index.truncate_while(|e| u64::from(e.value) < cut64)?;
        let base = self.base_offset;
        self.time_index.truncate_while(|e| base + i64::from(e.value) < next)?;
        self.offset_index.flush()?;
        self.time_index.flush()?;
        self.txn_index.truncate_to(offset)?;
        self.txn_index.flush()?;
        self.max_ts = max_ts;
        self.bytes_since_index = 0;
        Ok(next)
    }

    /// Makes data and indexes durable.
    pub(crate) fn flush(&self) -> Result<(), LogError> {
        self.file.sync().map_err(LogError::io(&self.log_path))?;
        self.offset_index.flush()?;
        self.time_index.flush()?;
        self.txn_index.flush()
    }

    /// Records a transaction aborted by a marker in this segment (the caller appended the
    /// marker). Made durable with the segment.
    pub(crate) fn append_aborted_txn(&mut self, txn: AbortedTxn) -> Result<(), LogError> {
        self.txn_index.append(txn)
    }

    /// Makes the aborted-transaction index durable.
    pub(crate) fn flush_txn_index(&self) -> Result<(), LogError> {
        self.txn_index.flush()
    }

    /// See [`TxnIndex::ensure`].
    pub(crate) fn ensure_aborted_txn(&mut self, txn: AbortedTxn) -> Result<(), LogError> {
        self.txn_index.ensure(txn)
    }

    /// The transactions aborted in this segment, in marker order.
    pub(crate) fn aborted_txns(&self) -> &[AbortedTxn] {
        self.txn_index.entries()
    }

    /// See [`TxnIndex::collect`].
    pub(crate) fn collect_aborted_txns(&self, from: i64, to: i64, out: &mut Vec<AbortedTxn>) -> bool {
        self.txn_index.collect(from, to, out)
    }

    /// The segment stops being active (roll or close): writes the final time-index entry (the
    /// segment's max timestamp, so a reopen knows it without a scan), flushes everything and
    /// trims the indexes to their entries.
    pub(crate) fn seal(&mut self) -> Result<(), LogError> {
        if let Some((ts, off)) = self.max_ts {
            let e = Entry { key: ts, value: self.rel(off) };
            self.time_index.append(e);
        }
        self.file.sync().map_err(LogError::io(&self.log_path))?;
        self.txn_index.flush()?;
        self.offset_index.seal()?;
        self.time_index.seal()
    }

    /// Best-effort removal of the files of the segment at `base` (cleanup after a failed create).
    pub(crate) fn remove_files(storage: &dyn Storage, dir: &Path, base: i64) {
        let (log, oi, ti) = Self::paths(dir, base);
        for p in [log, oi, ti, txn_index::path(dir, base, "")] {
            let _ = storage.remove(&p);
        }
    }

    /// Deletes the segment's files. Mappings handed out earlier stay valid.
    pub(crate) fn delete_files(self) -> Result<(), LogError> {
        let paths = [
            self.log_path.clone(),
            self.offset_index.path().to_path_buf(),
            self.time_index.path().to_path_buf(),
            self.txn_index.path().to_path_buf(),
        ];
        let storage = self.storage.clone();
        drop(self);
        for p in paths {
            match storage.remove(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(LogError::io(p)(e)),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::RangeSet;

    #[test]
    fn range_set_merges_and_truncates() {
        let mut r = RangeSet::default();
        r.insert(10, 20);
        r.insert(30, 40);
        assert!(r.contains(10, 20) && r.contains(12, 18) && !r.contains(15, 25) && !r.contains(0, 5));
        r.insert(20, 30); // adjacent on both sides: one range
        assert_eq!(r.len(), 1);
        assert!(r.contains(10, 40));
        r.insert(0, 5);
        r.insert(5, 5); // empty: ignored
        assert_eq!(r.len(), 2);
        r.truncate(15);
        assert!(r.contains(0, 5) && r.contains(10, 15) && !r.contains(10, 16));
        r.truncate(3);
        assert!(r.contains(0, 3) && !r.contains(0, 4));
        assert_eq!(r.len(), 1);
    }
}
