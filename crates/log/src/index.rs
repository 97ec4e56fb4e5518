//! Sparse offset and time indexes of a segment, in Apache Kafka's file formats.
//!
//! - `.index`: entries of (offset relative to the segment base `u32`, file position `u32`),
//!   big-endian, 8 bytes each. An entry (o, p) says: the batch starting at position `p` has last
//!   offset `o`; so any offset >= `o` lies at or after `p`.
//! - `.timeindex`: entries of (timestamp `i64`, relative offset `u32`), 12 bytes each, appended
//!   only when the timestamp grows. An entry (t, o) says: no batch up to offset `o` has a larger
//!   max timestamp than `t`, and the first batch reaching `t` holds offset `o`.
//!
//! Invariants: keys strictly increase from entry to entry and values never decrease; an index
//! has `entries * entry_size` meaningful bytes (a preallocated file is zero beyond them).
//! The active segment's index is mapped read-write. Its file is allocated lazily: it starts at
//! [`INITIAL_INDEX_BYTES`] and doubles when full, up to `segment.index.bytes` (whose room
//! decides when the segment rolls, as in Kafka), so disk use follows data: an idle partition's
//! two indexes take a few KiB, not twice `segment.index.bytes`. Each growth claims its blocks
//! (`fallocate`), so a full disk is an error there and never a fault on a mapped write. A
//! closed segment's index is trimmed to its entries and mapped read-only on first use.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;

use crate::error::LogError;
use crate::storage::{IndexMap, Storage, StorageFile};

/// Bytes an active segment's index file starts with (then doubled as needed).
pub(crate) const INITIAL_INDEX_BYTES: usize = 8 * 1024;

/// Which of the two index formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IndexKind {
    /// `.index`: relative offset + position.
    Offset,
    /// `.timeindex`: timestamp + relative offset.
    Time,
}

impl IndexKind {
    pub(crate) fn entry_size(self) -> usize {
        match self {
            IndexKind::Offset => 8,
            IndexKind::Time => 12,
        }
    }
}

/// One decoded entry: `(key, value)` = (relative offset, position) for the offset index and
/// (timestamp, relative offset) for the time index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub key: i64,
    pub value: u32,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_be_bytes(a)
}

fn i64_at(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}

/// Decodes entry `i` of `bytes`; the caller guarantees `(i + 1) * entry_size <= bytes.len()`.
fn entry_at(kind: IndexKind, bytes: &[u8], i: usize) -> Entry {
    let at = i * kind.entry_size();
    match kind {
        IndexKind::Offset => Entry { key: i64::from(u32_at(bytes, at)), value: u32_at(bytes, at + 4) },
        IndexKind::Time => Entry { key: i64_at(bytes, at), value: u32_at(bytes, at + 8) },
    }
}

fn encode(kind: IndexKind, e: Entry) -> ([u8; 12], usize) {
    let mut b = [0u8; 12];
    match kind {
        IndexKind::Offset => {
            b[..4].copy_from_slice(&(e.key as u32).to_be_bytes());
            b[4..8].copy_from_slice(&e.value.to_be_bytes());
        }
        IndexKind::Time => {
            b[..8].copy_from_slice(&e.key.to_be_bytes());
            b[8..12].copy_from_slice(&e.value.to_be_bytes());
        }
    }
    (b, kind.entry_size())
}

enum State {
    /// Active segment: mapped read-write; the mapping (and file) may grow to `max_bytes`.
    Writable { file: Box<dyn StorageFile>, map: Box<dyn IndexMap>, max_bytes: usize },
    /// Closed segment: trimmed on disk, mapped read-only on first lookup.
    ReadOnly { map: Mutex<Option<Bytes>> },
}

/// A view of an index's bytes for lookups.
enum View<'a> {
    Borrowed(&'a [u8]),
    Shared(Bytes),
}

impl std::ops::Deref for View<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            View::Borrowed(b) => b,
            View::Shared(b) => b,
        }
    }
}

/// An offset or time index of one segment.
pub(crate) struct Index {
    kind: IndexKind,
    path: PathBuf,
    storage: Arc<dyn Storage>,
    entries: usize,
    state: State,
    /// The last attempt to grow the writable mapping failed (a full disk): room is then what
    /// is mapped, so the segment rolls before its last slots are gone.
    grow_failed: bool,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index")
            .field("kind", &self.kind)
            .field("path", &self.path)
            .field("entries", &self.entries)
            .finish()
    }
}

impl Index {
    /// Opens an existing, trimmed index read-only after a cheap sanity check: the length is a
    /// whole number of entries and the first and last entries are ordered. `max_position` bounds
    /// the positions an offset index may point at (the segment's size). Returns `Ok(None)` when
    /// the file is missing or fails the check: the caller rebuilds it and says so (the failed
    /// check is only a debug line: after a crash the active segment's index routinely fails it,
    /// and is rebuilt by recovery anyway).
    pub(crate) fn open_checked(
        storage: &Arc<dyn Storage>,
        kind: IndexKind,
        path: &Path,
        max_position: u64,
    ) -> Result<Option<Index>, LogError> {
        if !storage.exists(path).map_err(LogError::io(path))? {
            return Ok(None);
        }
        let file = storage.open(path, false).map_err(LogError::io(path))?;
        let len = file.len().map_err(LogError::io(path))?;
        let size = kind.entry_size() as u64;
        if len % size != 0 {
            tracing::debug!(path = %path.display(), len, "index length is not a whole number of entries; rebuilding it");
            return Ok(None);
        }
        let entries = usize::try_from(len / size).unwrap_or(0);
        if entries > 0 {
            let mut first = [0u8; 12];
            let mut last = [0u8; 12];
            let sz = kind.entry_size();
            file.read_at(0, &mut first[..sz]).map_err(LogError::io(path))?;
            file.read_at(len - size, &mut last[..sz]).map_err(LogError::io(path))?;
            let (f, l) = (entry_at(kind, &first, 0), entry_at(kind, &last, 0));
            // Keys strictly increase, so with more than one entry the last key is above the
            // first: an index left unsealed by a crash (zeros after its entries, or all zeros)
            // fails here and is rebuilt from the segment.
            let ordered = if entries > 1 { f.key < l.key } else { f.key <= l.key };
            let ok = match kind {
                IndexKind::Offset => ordered && f.value <= l.value && u64::from(l.value) < max_position.max(1),
                IndexKind::Time => ordered && f.value <= l.value,
            };
            if !ok {
                tracing::debug!(path = %path.display(), "index entries are out of order or point past the segment; rebuilding it");
                return Ok(None);
            }
        }
        Ok(Some(Index {
            kind,
            path: path.to_path_buf(),
            storage: storage.clone(),
            entries,
            state: State::ReadOnly { map: Mutex::new(None) },
            grow_failed: false,
        }))
    }

    /// Creates (or empties) the index file and maps it writable with room for `capacity_bytes`.
    pub(crate) fn create(
        storage: &Arc<dyn Storage>,
        kind: IndexKind,
        path: &Path,
        capacity_bytes: u32,
    ) -> Result<Index, LogError> {
        let file = storage.open(path, true).map_err(LogError::io(path))?;
        file.set_len(0).map_err(LogError::io(path))?;
        let mut index = Index {
            kind,
            path: path.to_path_buf(),
            storage: storage.clone(),
            entries: 0,
            state: State::ReadOnly { map: Mutex::new(None) },
            grow_failed: false,
        };
        index.make_writable_with(file, capacity_bytes)?;
        Ok(index)
    }

    fn make_writable_with(&mut self, file: Box<dyn StorageFile>, capacity_bytes: u32) -> Result<(), LogError> {
        let size = self.kind.entry_size();
        let max_bytes = (capacity_bytes as usize / size).max(self.entries).max(1) * size;
        // Room for the entries already there plus some, rounded to whole entries.
        let initial = (self.entries * size).max(INITIAL_INDEX_BYTES).min(max_bytes);
        let capacity = initial.div_ceil(size).max(self.entries).max(1) * size;
        // Growing the file while a read-only mapping may exist is safe; drop ours anyway.
        self.state = State::ReadOnly { map: Mutex::new(None) };
        file.allocate(capacity as u64).map_err(LogError::io(&self.path))?;
        let map = file.map_mut(capacity as u64).map_err(LogError::io(&self.path))?;
        self.state = State::Writable { file, map, max_bytes };
        Ok(())
    }

    /// Doubles the writable mapping (up to its maximum) when it is full. On failure (a full
    /// disk) the index keeps its mapping and simply takes no more entries until a later
    /// growth succeeds: entries are sparse hints, a missing one costs only a longer scan.
    fn grow(&mut self) -> bool {
        let size = self.kind.entry_size();
        let State::Writable { file, map, max_bytes } = &mut self.state else {
            return false;
        };
        let current = map.bytes().len();
        let wanted = (current * 2).min(*max_bytes) / size * size;
        if wanted <= current {
            return false;
        }
        let grown = file
            .allocate(wanted as u64)
            // Written back first (not made durable), so the new mapping starts from the
            // entries the old one holds.
            .and_then(|()| map.write_back())
            .and_then(|()| file.map_mut(wanted as u64));
        match grown {
            Ok(new_map) => {
                *map = new_map;
                self.grow_failed = false;
                true
            }
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e,
                    "cannot grow the index; the segment rolls once the mapped room is used");
                self.grow_failed = true;
                false
            }
        }
    }

    /// Turns a closed segment's index back into a writable one (the segment became active).
    pub(crate) fn make_writable(&mut self, capacity_bytes: u32) -> Result<(), LogError> {
        if matches!(self.state, State::Writable { .. }) {
            return Ok(());
        }
        let file = self.storage.open(&self.path, true).map_err(LogError::io(&self.path))?;
        self.make_writable_with(file, capacity_bytes)
    }

    /// How many more entries fit (a read-only index takes none).
    /// Entries the index can still take: up to its maximum size (the roll decision), or, once
    /// growing it failed, up to what is mapped.
    pub(crate) fn free_slots(&self) -> usize {
        match &self.state {
            State::Writable { max_bytes, map, .. } => {
                let room = if self.grow_failed { map.bytes().len() } else { *max_bytes };
                (room / self.kind.entry_size()).saturating_sub(self.entries)
            }
            State::ReadOnly { .. } => 0,
        }
    }

    /// Bytes of the file the writable mapping covers now (0 for a closed index).
    #[cfg(test)]
    pub(crate) fn mapped_bytes(&self) -> usize {
        match &self.state {
            State::Writable { map, .. } => map.bytes().len(),
            State::ReadOnly { .. } => 0,
        }
    }

    fn view(&self) -> Result<View<'_>, LogError> {
        let len = self.entries * self.kind.entry_size();
        match &self.state {
            State::Writable { map, .. } => Ok(View::Borrowed(map.bytes().get(..len).unwrap_or(&[]))),
            State::ReadOnly { map } => {
                let mut guard = map.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(b) = guard.as_ref() {
                    return Ok(View::Shared(b.clone()));
                }
                let file = self.storage.open(&self.path, false).map_err(LogError::io(&self.path))?;
                let bytes = file.map(len as u64).map_err(LogError::io(&self.path))?;
                *guard = Some(bytes.clone());
                Ok(View::Shared(bytes))
            }
        }
    }

    /// The last entry, if any.
    pub(crate) fn last_entry(&self) -> Result<Option<Entry>, LogError> {
        if self.entries == 0 {
            return Ok(None);
        }
        // A closed index: read the entry without mapping the file.
        if let State::ReadOnly { map } = &self.state {
            let mapped = map.lock().unwrap_or_else(PoisonError::into_inner).is_some();
            if !mapped {
                let file = self.storage.open(&self.path, false).map_err(LogError::io(&self.path))?;
                let size = self.kind.entry_size();
                let mut buf = [0u8; 12];
                file.read_at(((self.entries - 1) * size) as u64, &mut buf[..size]).map_err(LogError::io(&self.path))?;
                return Ok(Some(entry_at(self.kind, &buf, 0)));
            }
        }
        let v = self.view()?;
        Ok(self.checked_entry(&v, self.entries - 1))
    }

    fn checked_entry(&self, bytes: &[u8], i: usize) -> Option<Entry> {
        if (i + 1) * self.kind.entry_size() <= bytes.len() {
            Some(entry_at(self.kind, bytes, i))
        } else {
            None
        }
    }

    /// Whether every entry's key (and, for an offset index, position) is above the previous
    /// one's: the order [`floor`](Self::floor)'s binary search relies on. Reads every entry.
    pub(crate) fn is_increasing(&self) -> Result<bool, LogError> {
        let v = self.view()?;
        let n = (v.len() / self.kind.entry_size()).min(self.entries);
        let mut prev: Option<Entry> = None;
        for i in 0..n {
            let e = entry_at(self.kind, &v, i);
            if let Some(p) = prev {
                let values_ok = match self.kind {
                    IndexKind::Offset => e.value > p.value,
                    IndexKind::Time => e.value >= p.value,
                };
                if e.key <= p.key || !values_ok {
                    return Ok(false);
                }
            }
            prev = Some(e);
        }
        Ok(true)
    }

    /// The last entry whose key is `<= key` (binary search), if any.
    pub(crate) fn floor(&self, key: i64) -> Result<Option<Entry>, LogError> {
        let v = self.view()?;
        let n = (v.len() / self.kind.entry_size()).min(self.entries);
        // Find the number of entries with entry.key <= key.
        let (mut lo, mut hi) = (0usize, n);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if entry_at(self.kind, &v, mid).key <= key {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(if lo == 0 { None } else { Some(entry_at(self.kind, &v, lo - 1)) })
    }

    /// Appends an entry when it keeps the index increasing and there is room; returns whether it
    /// was appended. Only a writable index takes entries.
    pub(crate) fn append(&mut self, entry: Entry) -> bool {
        let size = self.kind.entry_size();
        let last = match self.entries {
            0 => None,
            n => match &self.state {
                State::Writable { map, .. } => self.checked_entry(map.bytes(), n - 1),
                State::ReadOnly { .. } => return false,
            },
        };
        if let Some(last) = last {
            if entry.key <= last.key || entry.value < last.value {
                return false;
            }
        }
        if self.free_slots() == 0 {
            return false;
        }
        let (buf, len) = encode(self.kind, entry);
        let at = self.entries * size;
        let mapped = match &self.state {
            State::Writable { map, .. } => map.bytes().len(),
            State::ReadOnly { .. } => 0,
        };
        if at + len > mapped && !self.grow() {
            return false;
        }
        if let State::Writable { map, .. } = &mut self.state {
            if let Some(dst) = map.bytes_mut().get_mut(at..at + len) {
                dst.copy_from_slice(&buf[..len]);
                self.entries += 1;
                // Keep two mapped slots free ahead of need: the entry a seal writes must not
                // depend on a growth that could fail then (with growth failing, the segment
                // rolls while one mapped slot is left for it).
                if (self.entries + 2) * size > map.bytes().len() {
                    self.grow();
                }
                return true;
            }
        }
        false
    }

    /// Keeps only the entries for which `keep` holds (a prefix: stops at the first rejected one).
    /// Writable indexes only (make the index writable first).
    pub(crate) fn truncate_while(&mut self, keep: impl Fn(Entry) -> bool) -> Result<(), LogError> {
        let v = self.view()?;
        let mut n = 0;
        while n < self.entries {
            match self.checked_entry(&v, n) {
                Some(e) if keep(e) => n += 1,
                _ => break,
            }
        }
        drop(v);
        self.entries = n;
        Ok(())
    }

    /// Makes the entries durable.
    pub(crate) fn flush(&self) -> Result<(), LogError> {
        if let State::Writable { file, map, .. } = &self.state {
            map.flush().map_err(LogError::io(&self.path))?;
            file.sync().map_err(LogError::io(&self.path))?;
        }
        Ok(())
    }

    /// Flushes, drops the writable mapping, trims the file to its entries and makes the index
    /// read-only (the segment is no longer active, or the log is closing).
    pub(crate) fn seal(&mut self) -> Result<(), LogError> {
        let state = std::mem::replace(&mut self.state, State::ReadOnly { map: Mutex::new(None) });
        if let State::Writable { file, map, .. } = state {
            map.flush().map_err(LogError::io(&self.path))?;
            drop(map); // rule 2 of `mmap`: unmap before shrinking
            file.set_len((self.entries * self.kind.entry_size()) as u64).map_err(LogError::io(&self.path))?;
            file.sync().map_err(LogError::io(&self.path))?;
        }
        Ok(())
    }

    /// Path of the index file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemStorage;

    #[test]
    fn an_active_index_starts_small_and_grows_to_its_maximum() {
        let storage: Arc<dyn Storage> = Arc::new(MemStorage::new());
        storage.create_dir_all(Path::new("/d")).unwrap();
        let path = Path::new("/d/00000000000000000000.index");
        let max = 10 * 1024 * 1024;
        let mut index = Index::create(&storage, IndexKind::Offset, path, max).unwrap();
        assert_eq!(index.mapped_bytes(), INITIAL_INDEX_BYTES, "not preallocated to segment.index.bytes");
        assert_eq!(storage.open(path, false).unwrap().len().unwrap(), INITIAL_INDEX_BYTES as u64);
        assert_eq!(index.free_slots(), max as usize / 8, "the roll decision still sees the whole room");
        let n = 5_000;
        for i in 0..n {
            assert!(index.append(Entry { key: i, value: (i * 100) as u32 }), "entry {i}");
        }
        assert_eq!(index.mapped_bytes(), 64 * 1024, "doubled as it filled");
        for i in (0..n).step_by(97) {
            assert_eq!(index.floor(i).unwrap(), Some(Entry { key: i, value: (i * 100) as u32 }));
        }
        // Sealed: trimmed to its entries, still readable.
        index.seal().unwrap();
        assert_eq!(storage.open(path, false).unwrap().len().unwrap(), n as u64 * 8);
        assert_eq!(index.floor(n - 1).unwrap(), Some(Entry { key: n - 1, value: ((n - 1) * 100) as u32 }));
    }

    #[test]
    fn a_full_disk_stops_growth_with_a_mapped_slot_left_for_the_seal() {
        let mem = MemStorage::new();
        let storage: Arc<dyn Storage> = Arc::new(mem.clone());
        storage.create_dir_all(Path::new("/d")).unwrap();
        let path = Path::new("/d/0.timeindex");
        let mut index = Index::create(&storage, IndexKind::Time, path, 10 * 1024 * 1024).unwrap();
        mem.set_space_limit(Some(mem.total_bytes()));
        let mut key = 0;
        // Room is what is mapped once growing failed; appends stop with slots to spare.
        while index.free_slots() >= 2 {
            key += 1;
            assert!(index.append(Entry { key, value: key as u32 }));
        }
        assert!(index.free_slots() >= 1, "a mapped slot is left for the seal's entry");
        assert!(index.append(Entry { key: key + 1, value: key as u32 + 1 }), "the seal's entry fits");
        assert_eq!(index.mapped_bytes(), INITIAL_INDEX_BYTES.div_ceil(12) * 12, "it never grew");
    }

    #[test]
    fn an_index_never_grows_past_its_maximum() {
        let storage: Arc<dyn Storage> = Arc::new(MemStorage::new());
        storage.create_dir_all(Path::new("/d")).unwrap();
        let mut index = Index::create(&storage, IndexKind::Time, Path::new("/d/0.timeindex"), 120).unwrap();
        for i in 0..10 {
            assert!(index.append(Entry { key: i, value: i as u32 }));
        }
        assert_eq!(index.free_slots(), 0);
        assert!(!index.append(Entry { key: 10, value: 10 }));
        assert_eq!(index.mapped_bytes(), 120);
    }
}
