//! The leader-epoch cache of a log (Kafka's `LeaderEpochFileCache`, KIP-101/279): for each
//! leader epoch that appended to the log, the offset of its first record.
//!
//! A leader assigns its epoch at the log end offset when it becomes leader, before it appends
//! anything in that epoch, and stamps every batch it appends with it; a follower (replication)
//! assigns the epochs of the batches it copies. The cache answers OffsetForLeaderEpoch: where
//! an epoch's records end, so a replica or a consumer that saw an older epoch can find out
//! what the current leader never had and cut exactly that.
//!
//! Invariants: epochs and start offsets both strictly increase from one entry to the next
//! (an assignment that breaks this first removes the entries in its way, as Kafka's
//! `maybeTruncateNonMonotonicEntries` does); every start offset is at most the log end offset
//! and at least the log start offset once the log has applied its truncations.
//!
//! Durability (as Kafka's): an assignment is written and fsynced before it returns, so the
//! checkpoint never lacks an epoch that has records; truncations only mark the cache dirty and
//! are written at the next assignment, flush or close. A stale checkpoint after a crash holds
//! at most entries past the log end or below the log start, and opening the log truncates
//! those away again.
//!
//! File format (Kafka's `leader-epoch-checkpoint`): a version line `0`, a count line, then one
//! `epoch startOffset` line per entry.

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::LogError;
use crate::storage::Storage;

/// The checkpoint file's name in a partition directory.
pub const LEADER_EPOCH_CHECKPOINT_FILE: &str = "leader-epoch-checkpoint";
/// No epoch (Kafka's `UNDEFINED_EPOCH`).
pub const UNDEFINED_EPOCH: i32 = -1;
/// No offset (Kafka's `UNDEFINED_EPOCH_OFFSET`).
pub const UNDEFINED_EPOCH_OFFSET: i64 = -1;
/// Largest checkpoint file read: a cache holds one line per leader change.
const MAX_FILE: u64 = 16 << 20;

/// The epochs of one log and where each starts (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaderEpochCache {
    /// epoch -> start offset.
    entries: BTreeMap<i32, i64>,
    /// A truncation not written yet.
    dirty: bool,
}

impl LeaderEpochCache {
    /// Reads the checkpoint in `dir`; a missing file is an empty cache. An unreadable one is
    /// logged and taken as empty (as Kafka does for a corrupt checkpoint, the cache then fills
    /// again from the epochs assigned from now on).
    pub fn read(storage: &dyn Storage, dir: &Path) -> Result<Self, LogError> {
        let path = dir.join(LEADER_EPOCH_CHECKPOINT_FILE);
        if !storage.exists(&path).map_err(LogError::io(&path))? {
            return Ok(Self::default());
        }
        let f = storage.open(&path, false).map_err(LogError::io(&path))?;
        let len = f.len().map_err(LogError::io(&path))?;
        let mut buf = vec![0u8; len.min(MAX_FILE) as usize];
        f.read_at(0, &mut buf).map_err(LogError::io(&path))?;
        match parse(&buf) {
            Ok(entries) => {
                let mut cache = Self::default();
                for (epoch, start) in entries {
                    cache.assign(epoch, start);
                }
                cache.dirty = false;
                Ok(cache)
            }
            Err(reason) => {
                tracing::warn!(path = %path.display(), reason, "unreadable leader-epoch checkpoint; starting it again empty");
                Ok(Self { entries: BTreeMap::new(), dirty: true })
            }
        }
    }

    /// Writes the cache to `dir` atomically (temporary file, fsync, rename, directory fsync).
    pub fn write(&mut self, storage: &dyn Storage, dir: &Path) -> Result<(), LogError> {
        let mut text = format!("0\n{}\n", self.entries.len());
        for (epoch, start) in &self.entries {
            text.push_str(&format!("{epoch} {start}\n"));
        }
        crate::storage::replace_file(storage, dir, LEADER_EPOCH_CHECKPOINT_FILE, text.as_bytes())
            .map_err(|(path, e)| LogError::io(&path)(e))?;
        self.dirty = false;
        Ok(())
    }

    /// Whether a truncation has not been written yet.
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Records that `epoch` starts at `start` (Kafka's `assign`). Returns whether the cache
    /// changed; a change leaves it dirty, for the caller to write before appending in `epoch`. The same epoch again at an offset not below its
    /// start changes nothing; an entry that is not below both the new epoch and its start is
    /// removed first. Negative epochs or offsets (records from before leader epochs) are ignored.
    pub fn assign(&mut self, epoch: i32, start: i64) -> bool {
        if epoch < 0 || start < 0 {
            return false;
        }
        if let Some((&last_epoch, &last_start)) = self.entries.last_key_value() {
            if last_epoch == epoch && start >= last_start {
                return false;
            }
        }
        while let Some((&e, &s)) = self.entries.last_key_value() {
            if e >= epoch || s >= start {
                self.entries.remove(&e);
            } else {
                break;
            }
        }
        self.entries.insert(epoch, start);
        self.dirty = true;
        true
    }

    /// Removes the entries starting at or after `end` (the log was truncated to `end`).
    pub fn truncate_from_end(&mut self, end: i64) {
        while let Some((&e, &s)) = self.entries.last_key_value() {
            if s >= end {
                self.entries.remove(&e);
                self.dirty = true;
            } else {
                break;
            }
        }
    }

    /// The log start moved to `start`: entries starting at or below it go, and the last of
    /// them is kept starting at `start` (the epoch of the first record left).
    pub fn truncate_from_start(&mut self, start: i64) {
        let removed: Vec<(i32, i64)> =
            self.entries.range(..).take_while(|(_, s)| **s <= start).map(|(e, s)| (*e, *s)).collect();
        if let Some(&(epoch, old)) = removed.last() {
            for (e, _) in &removed {
                self.entries.remove(e);
            }
            self.entries.insert(epoch, start);
            if removed.len() > 1 || old != start {
                self.dirty = true;
            }
        }
    }

    /// Forgets every entry (the log was emptied).
    pub fn clear(&mut self) {
        if !self.entries.is_empty() {
            self.entries.clear();
            self.dirty = true;
        }
    }

    /// The newest epoch and its start offset.
    pub fn latest(&self) -> Option<(i32, i64)> {
        self.entries.last_key_value().map(|(e, s)| (*e, *s))
    }

    /// Every entry, oldest first.
    pub fn entries(&self) -> Vec<(i32, i64)> {
        self.entries.iter().map(|(e, s)| (*e, *s)).collect()
    }

    /// Kafka's `endOffsetFor`: the largest epoch at or below `requested` and where it ends (the
    /// start of the next epoch, or `log_end` for the newest). An epoch below the first known
    /// one answers `requested` with the first known start offset; [`UNDEFINED_EPOCH`] (or an
    /// empty cache, or an epoch above every known one) answers
    /// `(UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET)`.
    pub fn end_offset_for(&self, requested: i32, log_end: i64) -> (i32, i64) {
        if requested == UNDEFINED_EPOCH {
            return (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET);
        }
        if self.latest().is_some_and(|(e, _)| e == requested) {
            return (requested, log_end);
        }
        let Some((_, &higher_start)) = self.entries.range(requested.saturating_add(1)..).next() else {
            return (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET);
        };
        match self.entries.range(..=requested).next_back() {
            None => (requested, higher_start),
            Some((&floor, _)) => (floor, higher_start),
        }
    }

    /// The epoch of the record at `offset`: the newest epoch starting at or before it.
    pub fn epoch_for_offset(&self, offset: i64) -> Option<i32> {
        self.entries.iter().take_while(|(_, s)| **s <= offset).last().map(|(e, _)| *e)
    }
}

fn parse(buf: &[u8]) -> Result<Vec<(i32, i64)>, String> {
    let text = std::str::from_utf8(buf).map_err(|_| "not UTF-8".to_string())?;
    let mut lines = text.lines();
    match lines.next().map(str::trim) {
        Some("0") => {}
        other => return Err(format!("version {other:?}, expected 0")),
    }
    let count: usize = lines.next().and_then(|l| l.trim().parse().ok()).ok_or("bad entry count")?;
    let mut out = Vec::with_capacity(count.min(1 << 16));
    for _ in 0..count {
        let line = lines.next().ok_or("fewer entries than the count")?;
        let mut parts = line.split_whitespace();
        let epoch = parts.next().and_then(|p| p.parse::<i32>().ok());
        let start = parts.next().and_then(|p| p.parse::<i64>().ok());
        match (epoch, start, parts.next()) {
            (Some(e), Some(s), None) => out.push((e, s)),
            _ => return Err(format!("bad entry line {line:?}")),
        }
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::storage::MemStorage;
    use proptest::prelude::*;

    fn cache(entries: &[(i32, i64)]) -> LeaderEpochCache {
        let mut c = LeaderEpochCache::default();
        for (e, s) in entries {
            c.assign(*e, *s);
        }
        c
    }

    #[test]
    fn end_offsets_follow_kafka() {
        let c = cache(&[(1, 0), (3, 10), (5, 20)]);
        assert_eq!(c.end_offset_for(5, 30), (5, 30), "the newest epoch ends at the log end");
        assert_eq!(c.end_offset_for(3, 30), (3, 20));
        assert_eq!(c.end_offset_for(4, 30), (3, 20), "an unknown epoch: the one below, ending where the next starts");
        assert_eq!(c.end_offset_for(0, 30), (0, 0), "below the first: the first start");
        assert_eq!(c.end_offset_for(6, 30), (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET));
        assert_eq!(c.end_offset_for(UNDEFINED_EPOCH, 30), (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET));
        assert_eq!(LeaderEpochCache::default().end_offset_for(2, 30), (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET));
        assert_eq!(c.epoch_for_offset(9), Some(1));
        assert_eq!(c.epoch_for_offset(10), Some(3));
        assert_eq!(c.epoch_for_offset(100), Some(5));
        assert_eq!(cache(&[(2, 5)]).epoch_for_offset(4), None);
    }

    #[test]
    fn assignments_stay_monotonic_and_truncations_cut_exactly() {
        let mut c = cache(&[(1, 0), (3, 10), (5, 20)]);
        assert!(!c.assign(5, 25), "the same epoch later changes nothing");
        assert!(c.assign(4, 15), "an older epoch removes what is in its way");
        assert_eq!(c.entries(), vec![(1, 0), (3, 10), (4, 15)]);
        c.truncate_from_end(15);
        assert_eq!(c.entries(), vec![(1, 0), (3, 10)]);
        assert!(c.is_dirty());
        c.truncate_from_start(12);
        assert_eq!(c.entries(), vec![(3, 12)]);
        c.clear();
        assert_eq!(c.latest(), None);
        assert!(!c.assign(-1, 4) && !c.assign(2, -1));
    }

    #[test]
    fn the_checkpoint_round_trips_and_a_bad_one_is_empty() {
        let storage = MemStorage::new();
        let dir = Path::new("/p/t-0");
        storage.create_dir_all(dir).unwrap();
        let mut c = cache(&[(0, 0), (2, 7), (9, 1000)]);
        c.write(&storage, dir).unwrap();
        assert_eq!(LeaderEpochCache::read(&storage, dir).unwrap().entries(), c.entries());
        // Power cut after the write: it was fsynced and renamed.
        storage.crash(1);
        assert_eq!(LeaderEpochCache::read(&storage, dir).unwrap().entries(), c.entries());
        let f = storage.open(&dir.join(LEADER_EPOCH_CHECKPOINT_FILE), true).unwrap();
        f.write_all_at(0, b"7\n1\n0 0\n").unwrap();
        assert_eq!(LeaderEpochCache::read(&storage, dir).unwrap().latest(), None);
    }

    proptest! {
        /// Against a model (a list of entries kept monotonic): after any sequence of
        /// assignments and truncations, entries strictly increase in epoch and offset, and
        /// end_offset_for agrees with a scan of the model.
        #[test]
        fn matches_a_model(ops in proptest::collection::vec((0u8..4, 0i32..20, 0i64..200), 1..60)) {
            let mut c = LeaderEpochCache::default();
            let mut model: Vec<(i32, i64)> = Vec::new();
            for (op, e, o) in ops {
                match op {
                    0 | 1 => {
                        let same = model.last().is_some_and(|&(le, ls)| le == e && o >= ls);
                        if !same {
                            while model.last().is_some_and(|&(le, ls)| le >= e || ls >= o) {
                                model.pop();
                            }
                            model.push((e, o));
                        }
                        c.assign(e, o);
                    }
                    2 => {
                        model.retain(|&(_, s)| s < o);
                        c.truncate_from_end(o);
                    }
                    _ => {
                        let keep: Vec<(i32, i64)> = model.iter().copied().filter(|&(_, s)| s > o).collect();
                        if let Some(&(last_e, _)) = model.iter().rfind(|&&(_, s)| s <= o) {
                            model = std::iter::once((last_e, o)).chain(keep).collect();
                        }
                        c.truncate_from_start(o);
                    }
                }
                prop_assert_eq!(c.entries(), model.clone());
                prop_assert!(model.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1));
            }
            for requested in 0..22 {
                let leo = 300;
                let expected = match model.last() {
                    Some(&(le, _)) if le == requested => (requested, leo),
                    _ => match model.iter().find(|(e, _)| *e > requested) {
                        None => (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET),
                        Some(&(_, hs)) => match model.iter().rfind(|(e, _)| *e <= requested) {
                            None => (requested, hs),
                            Some(&(fe, _)) => (fe, hs),
                        },
                    },
                };
                prop_assert_eq!(c.end_offset_for(requested, leo), expected);
            }
        }
    }
}
