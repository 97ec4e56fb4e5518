//! Durable Raft storage for raft-rs, with an in-memory twin that raft-rs reads.
//!
//! Two files in the metadata directory, both written through [`Storage`] (so tests run them
//! on the in-memory file system that loses what was not fsynced):
//!
//! - `raft.wal`: frames `[len u32][crc32c u32][payload]` (the metadata log's framing). A payload
//!   is a kind byte and a protobuf message: `E` an [`Entry`], `H` a [`HardState`]. Replay
//!   keeps the last hard state; an entry at an index at or below the last one replaces the
//!   suffix from there (what raft-rs asks for when a new leader overwrites uncommitted entries).
//! - `raft.snapshot`: the newest snapshot (a protobuf [`Snapshot`]: index, term, conf state and
//!   the metadata image), replaced atomically (temporary file, fsync, rename, directory fsync).
//!
//! Durability: [`RaftStore::append`] and [`RaftStore::set_hard_state`] only write;
//! [`RaftStore::sync`] makes everything written durable (one fsync per Ready, as raft-rs's
//! Ready loop expects: messages that depend on it are sent only after it). A torn last frame is
//! cut off at open (nothing in it was acknowledged); a bad frame with valid frames after it is
//! damage, and the store refuses to open. After a failed write or fsync the store is offline
//! and every later write fails (the owner stops the node; a restart replays what is on disk).
//!
//! Compaction: [`RaftStore::compact`] stores a snapshot at an applied index and rewrites the
//! WAL with only the entries after it (temporary file, fsync, rename). A crash between the two
//! leaves the new snapshot and the old WAL, whose entries at or below the snapshot are skipped.
//!
//! The conf state kept is the snapshot's; conf changes after it are in the log and are applied
//! again when committed entries are replayed after a restart (etcd's raftexample does the same).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use protobuf::Message as _;
use raft::prelude::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError};
use strata_log::storage::{Storage, StorageFile};

use crate::metadata_log::{encode_frame, parse_frames, read_whole};
use crate::ControllerError;

const WAL: &str = "raft.wal";
const SNAPSHOT: &str = "raft.snapshot";
const KIND_ENTRY: u8 = b'E';
const KIND_HARD_STATE: u8 = b'H';
/// Index and term of a new cluster's bootstrap snapshot (the initial voters, no metadata).
pub const BOOTSTRAP_INDEX: u64 = 1;

/// The Raft log, hard state and snapshot of one node: durable files plus the in-memory twin
/// raft-rs reads through [`raft::Storage`].
///
/// Invariants: `entries` are contiguous and start at `snapshot.index + 1`; `hard_state.commit
/// <= last_index()`.
pub struct RaftStore {
    storage: Arc<dyn Storage>,
    dir: PathBuf,
    wal: Box<dyn StorageFile>,
    /// Bytes of whole frames in the WAL.
    wal_len: u64,
    /// Bytes of entries written since the WAL was last rewritten (for compaction decisions).
    hard_state: HardState,
    conf_state: ConfState,
    snapshot: Snapshot,
    entries: Vec<Entry>,
    /// Why the store stopped taking writes, if it did.
    offline: Option<String>,
    /// raft-rs asked for a snapshot for a peer the newest one does not include (a node added
    /// since): the owner takes a new one (see [`RaftStore::take_snapshot_wanted`]).
    snapshot_wanted: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for RaftStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftStore")
            .field("dir", &self.dir)
            .field("first_index", &self.first())
            .field("last_index", &self.last())
            .field("commit", &self.hard_state.commit)
            .finish()
    }
}

fn pb_err(path: &Path, e: protobuf::ProtobufError) -> ControllerError {
    ControllerError::Corrupt { path: path.to_path_buf(), position: 0, reason: e.to_string() }
}

impl RaftStore {
    /// Opens (creating if missing) the store in `dir`. A new store of a node among
    /// `initial_voters` (the static `controller.quorum.voters`) starts with a bootstrap snapshot
    /// at [`BOOTSTRAP_INDEX`] holding them; one with no initial voters (a node that joins an
    /// existing quorum) starts empty and learns the membership from the leader's snapshot.
    /// Otherwise the membership is the snapshot's plus the conf changes in the log.
    pub fn open(storage: Arc<dyn Storage>, dir: &Path, initial_voters: &[u64]) -> Result<Self, ControllerError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ControllerError::Io { path: path.clone(), source }
        };
        storage.create_dir_all(dir).map_err(io(dir))?;
        let snap_path = dir.join(SNAPSHOT);
        let tmp = dir.join(format!("{SNAPSHOT}.tmp"));
        if storage.exists(&tmp).map_err(io(&tmp))? {
            storage.remove(&tmp).map_err(io(&tmp))?;
        }
        let wal_path = dir.join(WAL);
        let wal_tmp = dir.join(format!("{WAL}.tmp"));
        if storage.exists(&wal_tmp).map_err(io(&wal_tmp))? {
            storage.remove(&wal_tmp).map_err(io(&wal_tmp))?;
        }
        let created = !storage.exists(&wal_path).map_err(io(&wal_path))?;
        let wal = storage.open(&wal_path, true).map_err(io(&wal_path))?;
        if created {
            storage.sync_dir(dir).map_err(io(dir))?;
        }
        let bytes = read_whole(&*wal, &wal_path)?;
        let snapshot =
            if storage.exists(&snap_path).map_err(io(&snap_path))? {
                let f = storage.open(&snap_path, false).map_err(io(&snap_path))?;
                let snap_bytes = read_whole(&*f, &snap_path)?;
                let (frames, end) = parse_frames(&snap_bytes).map_err(|(position, reason)| {
                    ControllerError::Corrupt { path: snap_path.clone(), position: position as u64, reason }
                })?;
                match frames.as_slice() {
                    [(_, payload)] if end == snap_bytes.len() => {
                        Snapshot::parse_from_bytes(payload).map_err(|e| pb_err(&snap_path, e))?
                    }
                    _ => {
                        return Err(ControllerError::Corrupt {
                            path: snap_path,
                            position: 0,
                            reason: "a snapshot file holds exactly one whole frame".into(),
                        })
                    }
                }
            } else if bytes.is_empty() && !initial_voters.is_empty() {
                let s = bootstrap_snapshot(initial_voters, Vec::new());
                let body = s.write_to_bytes().map_err(|e| pb_err(&snap_path, e))?;
                replace_file(&*storage, dir, SNAPSHOT, &encode_frame(&body))?;
                s
            } else {
                let mut s = Snapshot::default();
                s.mut_metadata().mut_conf_state().voters = initial_voters.to_vec();
                s
            };

        let (frames, valid) = parse_frames(&bytes).map_err(|(position, reason)| ControllerError::Corrupt {
            path: wal_path.clone(),
            position: position as u64,
            reason,
        })?;
        let snap_index = snapshot.get_metadata().index;
        let mut hard_state = HardState::default();
        let mut entries: Vec<Entry> = Vec::new();
        for (pos, payload) in frames {
            let corrupt =
                |reason: String| ControllerError::Corrupt { path: wal_path.clone(), position: pos as u64, reason };
            match payload.split_first() {
                Some((&KIND_ENTRY, body)) => {
                    let e = Entry::parse_from_bytes(body).map_err(|e| corrupt(e.to_string()))?;
                    if e.index <= snap_index {
                        continue;
                    }
                    let first = snap_index + 1;
                    let next = first + entries.len() as u64;
                    if e.index > next {
                        return Err(corrupt(format!("entry {} after a gap (next is {next})", e.index)));
                    }
                    entries.truncate((e.index - first) as usize);
                    entries.push(e);
                }
                Some((&KIND_HARD_STATE, body)) => {
                    hard_state = HardState::parse_from_bytes(body).map_err(|e| corrupt(e.to_string()))?;
                }
                _ => return Err(corrupt("unknown frame kind".into())),
            }
        }
        if valid < bytes.len() {
            tracing::info!(path = %wal_path.display(), valid, len = bytes.len(),
                "cutting a torn last frame off the Raft log (a write the crash interrupted; never acknowledged)");
            wal.set_len(valid as u64).map_err(io(&wal_path))?;
            wal.sync().map_err(io(&wal_path))?;
        }
        // A snapshot newer than the WAL's hard state (installed, then a crash before the WAL
        // was rewritten): the snapshot is committed.
        if hard_state.commit < snap_index {
            hard_state.commit = snap_index;
        }
        if hard_state.term < snapshot.get_metadata().term {
            hard_state.term = snapshot.get_metadata().term;
        }
        let conf_state = snapshot.get_metadata().get_conf_state().clone();
        let store = Self {
            storage,
            dir: dir.to_path_buf(),
            wal,
            wal_len: valid as u64,
            hard_state,
            conf_state,
            snapshot,
            entries,
            offline: None,
            snapshot_wanted: false.into(),
        };
        // Entries lost to a crash below the commit a hard state names cannot happen (the hard
        // state is written after its entries, in the same fsync), but a damaged disk could:
        if store.hard_state.commit > store.last() {
            return Err(ControllerError::Corrupt {
                path: wal_path,
                position: valid as u64,
                reason: format!(
                    "the hard state says {} is committed but the log ends at {}",
                    store.hard_state.commit,
                    store.last()
                ),
            });
        }
        store.check_online()?;
        Ok(store)
    }

    /// Whether `dir` holds a Raft store (a snapshot, or a WAL with at least one byte).
    pub fn exists(storage: &dyn Storage, dir: &Path) -> Result<bool, ControllerError> {
        let io = |path: PathBuf| move |source| ControllerError::Io { path, source };
        let snap = dir.join(SNAPSHOT);
        if storage.exists(&snap).map_err(io(snap.clone()))? {
            return Ok(true);
        }
        let wal = dir.join(WAL);
        if !storage.exists(&wal).map_err(io(wal.clone()))? {
            return Ok(false);
        }
        let f = storage.open(&wal, false).map_err(io(wal.clone()))?;
        Ok(f.len().map_err(io(wal))? > 0)
    }

    /// Formats a new store in `dir` (as `kafka-storage format` writes the bootstrap checkpoint):
    /// a bootstrap snapshot at [`BOOTSTRAP_INDEX`] with `voters` and `image` (a new cluster's:
    /// its id; a migrated single node's: everything it had), durable on return. Refuses
    /// ([`ControllerError::Identity`]) a directory that already holds a store.
    pub fn format(
        storage: &dyn Storage,
        dir: &Path,
        voters: &[u64],
        image: &strata_metadata::MetadataImage,
    ) -> Result<(), ControllerError> {
        if Self::exists(storage, dir)? {
            return Err(ControllerError::Identity(format!("{} already holds a metadata log", dir.display())));
        }
        storage.create_dir_all(dir).map_err(|source| ControllerError::Io { path: dir.to_path_buf(), source })?;
        let path = dir.join(SNAPSHOT);
        let s = bootstrap_snapshot(voters, image.to_snapshot());
        let body = s.write_to_bytes().map_err(|e| pb_err(&path, e))?;
        replace_file(storage, dir, SNAPSHOT, &encode_frame(&body))
    }

    fn first(&self) -> u64 {
        self.snapshot.get_metadata().index + 1
    }

    fn last(&self) -> u64 {
        self.snapshot.get_metadata().index + self.entries.len() as u64
    }

    fn check_online(&self) -> Result<(), ControllerError> {
        match &self.offline {
            Some(reason) => Err(ControllerError::Offline { path: self.dir.join(WAL), reason: reason.clone() }),
            None => Ok(()),
        }
    }

    fn write_frame(&mut self, kind: u8, body: &[u8]) -> Result<(), ControllerError> {
        self.check_online()?;
        let mut payload = Vec::with_capacity(1 + body.len());
        payload.push(kind);
        payload.extend_from_slice(body);
        let frame = encode_frame(&payload);
        if let Err(e) = self.wal.write_all_at(self.wal_len, &frame) {
            self.offline = Some(format!("a write failed: {e}"));
            return Err(ControllerError::Io { path: self.dir.join(WAL), source: e });
        }
        self.wal_len += frame.len() as u64;
        Ok(())
    }

    /// Appends `entries` (raft-rs's `Ready::entries`): entries at or below the last index
    /// replace the suffix from their index. Written, not yet durable: call [`sync`](Self::sync).
    pub fn append(&mut self, entries: &[Entry]) -> Result<(), ControllerError> {
        let Some(first_new) = entries.first().map(|e| e.index) else {
            return Ok(());
        };
        let first = self.first();
        if first_new < first || first_new > self.last() + 1 {
            return Err(ControllerError::Corrupt {
                path: self.dir.join(WAL),
                position: self.wal_len,
                reason: format!("append at {first_new} outside [{first}, {}]", self.last() + 1),
            });
        }
        for e in entries {
            let body = e.write_to_bytes().map_err(|e| pb_err(&self.dir.join(WAL), e))?;
            self.write_frame(KIND_ENTRY, &body)?;
        }
        self.entries.truncate((first_new - first) as usize);
        self.entries.extend_from_slice(entries);
        Ok(())
    }

    /// Records a new hard state (term, vote, commit). Written, not yet durable.
    pub fn set_hard_state(&mut self, hs: &HardState) -> Result<(), ControllerError> {
        let body = hs.write_to_bytes().map_err(|e| pb_err(&self.dir.join(WAL), e))?;
        self.write_frame(KIND_HARD_STATE, &body)?;
        self.hard_state = hs.clone();
        Ok(())
    }

    /// Records a new commit index (raft-rs's `LightReady::commit_index`). Written, not yet durable.
    pub fn set_commit(&mut self, commit: u64) -> Result<(), ControllerError> {
        let mut hs = self.hard_state.clone();
        hs.commit = commit;
        self.set_hard_state(&hs)
    }

    /// Makes everything written durable (fdatasync of the WAL).
    pub fn sync(&mut self) -> Result<(), ControllerError> {
        self.check_online()?;
        if let Err(e) = self.wal.sync() {
            // The kernel may have dropped what it could not write: never trust this file again
            // in this process.
            self.offline = Some(format!("fsync failed: {e}"));
            return Err(ControllerError::Io { path: self.dir.join(WAL), source: e });
        }
        Ok(())
    }

    /// The membership as of the snapshot, then as the application applies conf changes.
    pub fn set_conf_state(&mut self, cs: ConfState) {
        self.conf_state = cs;
    }

    /// The current hard state.
    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    /// The newest snapshot (index 0 and no data before the first one).
    pub fn snapshot_ref(&self) -> &Snapshot {
        &self.snapshot
    }

    /// Whether a peer needs a newer snapshot than the stored one; clears the request.
    pub fn take_snapshot_wanted(&self) -> bool {
        self.snapshot_wanted.swap(false, std::sync::atomic::Ordering::Relaxed)
    }

    /// Bytes of the WAL file.
    pub fn wal_bytes(&self) -> u64 {
        self.wal_len
    }

    /// Installs a snapshot received from the leader (raft-rs's `Ready::snapshot`): every entry
    /// it covers goes; if the log holds the snapshot's index with its term, the entries after
    /// it stay (raft-rs only sends a snapshot that is ahead, so normally all go). Durable on
    /// return.
    pub fn apply_snapshot(&mut self, snapshot: Snapshot) -> Result<(), ControllerError> {
        let index = snapshot.get_metadata().index;
        let term = snapshot.get_metadata().term;
        let keep_from = if self.term_of(index) == Some(term) { index + 1 } else { self.last() + 1 };
        let kept: Vec<Entry> = self.entries.iter().filter(|e| e.index >= keep_from).cloned().collect();
        self.write_snapshot(&snapshot)?;
        self.conf_state = snapshot.get_metadata().get_conf_state().clone();
        self.snapshot = snapshot;
        self.entries = kept;
        if self.hard_state.commit < index {
            self.hard_state.commit = index;
        }
        if self.hard_state.term < term {
            self.hard_state.term = term;
        }
        self.rewrite_wal()
    }

    /// Takes a snapshot holding `data` (the image after applying through `index`, which must be
    /// applied and therefore committed) and drops the entries up to it. Durable on return.
    pub fn compact(&mut self, index: u64, data: Vec<u8>) -> Result<(), ControllerError> {
        let Some(term) = self.term_of(index) else {
            return Err(ControllerError::Corrupt {
                path: self.dir.join(WAL),
                position: 0,
                reason: format!("snapshot at {index}, outside the log [{}, {}]", self.first(), self.last()),
            });
        };
        let mut snapshot = Snapshot { data: data.into(), ..Default::default() };
        let meta = snapshot.mut_metadata();
        meta.index = index;
        meta.term = term;
        meta.set_conf_state(self.conf_state.clone());
        self.write_snapshot(&snapshot)?;
        let first = self.first();
        self.entries.drain(..(index + 1 - first) as usize);
        self.snapshot = snapshot;
        self.rewrite_wal()
    }

    fn term_of(&self, index: u64) -> Option<u64> {
        let meta = self.snapshot.get_metadata();
        if index == meta.index {
            return Some(meta.term);
        }
        let first = self.first();
        (index >= first).then(|| self.entries.get((index - first) as usize).map(|e| e.term)).flatten()
    }

    fn write_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), ControllerError> {
        self.check_online()?;
        let path = self.dir.join(SNAPSHOT);
        let body = snapshot.write_to_bytes().map_err(|e| pb_err(&path, e))?;
        let result = replace_file(&*self.storage, &self.dir, SNAPSHOT, &encode_frame(&body));
        if result.is_err() {
            self.offline = Some("writing a snapshot failed".into());
        }
        result
    }

    /// Replaces the WAL with the current entries and hard state.
    fn rewrite_wal(&mut self) -> Result<(), ControllerError> {
        self.check_online()?;
        let path = self.dir.join(WAL);
        let mut bytes = Vec::new();
        for e in &self.entries {
            let mut payload = vec![KIND_ENTRY];
            payload.extend(e.write_to_bytes().map_err(|e| pb_err(&path, e))?);
            bytes.extend(encode_frame(&payload));
        }
        let mut payload = vec![KIND_HARD_STATE];
        payload.extend(self.hard_state.write_to_bytes().map_err(|e| pb_err(&path, e))?);
        bytes.extend(encode_frame(&payload));
        if let Err(e) = replace_file(&*self.storage, &self.dir, WAL, &bytes) {
            self.offline = Some("rewriting the Raft log failed".into());
            return Err(e);
        }
        self.wal = self.storage.open(&path, false).map_err(|source| {
            self.offline = Some("reopening the Raft log failed".into());
            ControllerError::Io { path: path.clone(), source }
        })?;
        self.wal_len = bytes.len() as u64;
        Ok(())
    }
}

/// A new cluster's first snapshot: `voters` and `data` at index 1 (term 1), as TiKV bootstraps
/// raft-rs groups, so the log starts at 2 and a node that joins later with an empty store is
/// always sent a snapshot (and so the membership) before any entry.
fn bootstrap_snapshot(voters: &[u64], data: Vec<u8>) -> Snapshot {
    let mut s = Snapshot { data: data.into(), ..Default::default() };
    let meta = s.mut_metadata();
    meta.mut_conf_state().voters = voters.to_vec();
    meta.index = BOOTSTRAP_INDEX;
    meta.term = BOOTSTRAP_INDEX;
    s
}

/// Writes `bytes` to `dir/name` atomically (see [`strata_log::storage::replace_file`]).
fn replace_file(storage: &dyn Storage, dir: &Path, name: &str, bytes: &[u8]) -> Result<(), ControllerError> {
    strata_log::storage::replace_file(storage, dir, name, bytes)
        .map_err(|(path, source)| ControllerError::Io { path, source })
}

impl raft::Storage for RaftStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState { hard_state: self.hard_state.clone(), conf_state: self.conf_state.clone() })
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low < self.first() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last() + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let first = self.first();
        let mut out: Vec<Entry> = self.entries[(low - first) as usize..(high - first) as usize].to_vec();
        raft::util::limit_size(&mut out, max_size.into());
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        let meta = self.snapshot.get_metadata();
        if idx == meta.index {
            return Ok(meta.term);
        }
        if idx < self.first() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        self.term_of(idx).ok_or(raft::Error::Store(StorageError::Unavailable))
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.first())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last())
    }

    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        let cs = self.snapshot.get_metadata().get_conf_state();
        let member =
            [&cs.voters, &cs.learners, &cs.voters_outgoing, &cs.learners_next].iter().any(|ids| ids.contains(&to));
        if self.snapshot.get_metadata().index < request_index || !member {
            // Not taken yet, or taken before `to` joined (a node refuses a snapshot whose
            // membership leaves it out): the owner takes one now, and raft-rs asks again.
            self.snapshot_wanted.store(true, std::sync::atomic::Ordering::Relaxed);
            return Err(raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable));
        }
        Ok(self.snapshot.clone())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use raft::Storage as _;
    use strata_log::storage::MemStorage;

    fn entry(index: u64, term: u64, data: &[u8]) -> Entry {
        Entry { index, term, data: data.to_vec().into(), ..Default::default() }
    }

    fn hs(term: u64, vote: u64, commit: u64) -> HardState {
        HardState { term, vote, commit, ..Default::default() }
    }

    const DIR: &str = "/meta";

    /// A store that starts empty (a joining node's), so entries start at 1.
    fn open(mem: &MemStorage) -> RaftStore {
        RaftStore::open(Arc::new(mem.clone()), Path::new(DIR), &[]).unwrap()
    }

    #[test]
    fn a_new_cluster_starts_from_a_bootstrap_snapshot_of_its_voters() {
        let mem = MemStorage::new();
        let s = RaftStore::open(Arc::new(mem.clone()), Path::new(DIR), &[1, 2, 3]).unwrap();
        assert_eq!((s.first_index().unwrap(), s.last_index().unwrap()), (2, 1));
        assert_eq!(s.term(1).unwrap(), 1);
        assert_eq!(s.initial_state().unwrap().conf_state.voters, vec![1, 2, 3]);
        assert_eq!(s.hard_state().commit, 1);
        assert_eq!(s.snapshot(1, 2).unwrap().get_metadata().get_conf_state().voters, vec![1, 2, 3]);
        // A node the snapshot's membership leaves out (one added since) needs a newer one.
        assert!(!s.take_snapshot_wanted());
        assert!(matches!(s.snapshot(1, 4), Err(raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable))));
        assert!(s.take_snapshot_wanted() && !s.take_snapshot_wanted());
        drop(s);
        // Durable, and a later open with other voters changes nothing.
        mem.crash(9);
        let s = RaftStore::open(Arc::new(mem.clone()), Path::new(DIR), &[7]).unwrap();
        assert_eq!(s.initial_state().unwrap().conf_state.voters, vec![1, 2, 3]);
        assert_eq!(s.first_index().unwrap(), 2);
    }

    #[test]
    fn what_was_synced_survives_a_crash_and_what_was_not_may_not() {
        let mem = MemStorage::new();
        let mut s = open(&mem);
        assert!(s.initial_state().unwrap().conf_state.voters.is_empty());
        assert_eq!((s.first_index().unwrap(), s.last_index().unwrap()), (1, 0));
        s.append(&[entry(1, 1, b"a"), entry(2, 1, b"b"), entry(3, 1, b"c")]).unwrap();
        s.set_hard_state(&hs(1, 1, 2)).unwrap();
        s.sync().unwrap();
        // A new leader overwrites the uncommitted suffix; not synced.
        s.append(&[entry(3, 2, b"C"), entry(4, 2, b"D")]).unwrap();
        drop(s);
        for seed in 0..20 {
            let crashed = mem.clone();
            crashed.crash(seed);
            let s = open(&crashed);
            assert_eq!(s.hard_state().commit, 2);
            let last = s.last_index().unwrap();
            assert!((3..=4).contains(&last), "last {last}");
            assert_eq!(s.term(1).unwrap(), 1);
            assert_eq!(s.term(2).unwrap(), 1);
            // Entry 3 is either the old one (the overwrite was lost) or the new one.
            let e3 = &s.entries(3, 4, None, GetEntriesContext::empty(false)).unwrap()[0];
            assert!(e3.term == 1 && &e3.data[..] == b"c" || e3.term == 2 && &e3.data[..] == b"C");
            if last == 4 {
                assert_eq!(e3.term, 2);
            }
        }
    }

    #[test]
    fn compaction_keeps_later_entries_and_snapshot_survives_reopen() {
        let mem = MemStorage::new();
        let mut s = open(&mem);
        let entries: Vec<Entry> = (1..=10).map(|i| entry(i, 1, &[i as u8])).collect();
        s.append(&entries).unwrap();
        s.set_hard_state(&hs(1, 1, 8)).unwrap();
        s.sync().unwrap();
        s.set_conf_state(ConfState { voters: vec![1, 2], ..Default::default() });
        s.compact(6, b"image@6".to_vec()).unwrap();
        assert_eq!(s.first_index().unwrap(), 7);
        assert!(matches!(
            s.entries(5, 7, None, GetEntriesContext::empty(false)),
            Err(raft::Error::Store(StorageError::Compacted))
        ));
        assert_eq!(s.term(6).unwrap(), 1);
        drop(s);
        mem.crash(3);
        let s = open(&mem);
        assert_eq!((s.first_index().unwrap(), s.last_index().unwrap()), (7, 10));
        assert_eq!(&s.snapshot(6, 2).unwrap().data[..], b"image@6");
        assert_eq!(s.hard_state().commit, 8);
    }

    #[test]
    fn an_installed_snapshot_replaces_the_log() {
        let mem = MemStorage::new();
        let mut s = open(&mem);
        s.append(&[entry(1, 1, b"a"), entry(2, 1, b"b")]).unwrap();
        s.sync().unwrap();
        let mut snap = Snapshot { data: b"image@50".to_vec().into(), ..Default::default() };
        snap.mut_metadata().index = 50;
        snap.mut_metadata().term = 3;
        snap.mut_metadata().mut_conf_state().voters = vec![1, 2, 3, 4];
        s.apply_snapshot(snap).unwrap();
        assert_eq!((s.first_index().unwrap(), s.last_index().unwrap()), (51, 50));
        s.append(&[entry(51, 3, b"x")]).unwrap();
        s.sync().unwrap();
        drop(s);
        mem.crash(1);
        let s = open(&mem);
        assert_eq!((s.first_index().unwrap(), s.last_index().unwrap()), (51, 51));
        assert_eq!(s.initial_state().unwrap().conf_state.voters, vec![1, 2, 3, 4]);
        assert_eq!(s.hard_state().commit, 50);
        assert_eq!(s.hard_state().term, 3);
    }

    #[test]
    fn damage_in_the_middle_is_refused_and_a_torn_tail_is_cut() {
        let mem = MemStorage::new();
        let mut s = open(&mem);
        s.append(&[entry(1, 1, b"a"), entry(2, 1, b"b")]).unwrap();
        s.sync().unwrap();
        let len = s.wal_bytes();
        drop(s);
        let f = mem.open(&Path::new(DIR).join(WAL), false).unwrap();
        // A torn tail: half a frame.
        f.write_all_at(len, &[0, 0, 0, 40, 1, 2]).unwrap();
        f.sync().unwrap();
        let s = open(&mem);
        assert_eq!(s.last_index().unwrap(), 2);
        assert_eq!(s.wal_bytes(), len);
        drop(s);
        // A flipped byte in the first frame, with a valid one after it.
        f.write_all_at(10, &[0xff]).unwrap();
        f.sync().unwrap();
        let e = RaftStore::open(Arc::new(mem.clone()), Path::new(DIR), &[1]).unwrap_err();
        assert!(matches!(e, ControllerError::Corrupt { .. }), "{e}");
    }
}
