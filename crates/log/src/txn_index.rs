//! A segment's aborted-transaction index (Kafka's `TransactionIndex`, the `<base>.txnindex`
//! file): one entry per transaction aborted by a marker in the segment, in marker order, so
//! that a `read_committed` fetch can tell its consumer which producers' records in the range
//! it reads were aborted (Fetch's `aborted_transactions`).
//!
//! The file is Kafka's format: a sequence of 34-byte entries `version i16 (0), producer_id
//! i64, first_offset i64, last_offset i64, last_stable_offset i64`, big-endian, with no
//! header; it exists only once a transaction was aborted in its segment. `last_offset` (the
//! abort marker's offset) increases strictly from entry to entry. `last_stable_offset` is the
//! partition's last stable offset just after the marker: a search for the transactions
//! overlapping `[from, to)` can stop at the first entry whose `last_stable_offset >= to`,
//! since any transaction aborted later began at or after it.
//!
//! Entries are few (one per aborted transaction) and kept in memory; the file is appended to
//! and cut at truncation, and made durable with its segment.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::LogError;
use crate::storage::{Storage, StorageFile};

/// Bytes of one entry in the file.
pub const ENTRY_BYTES: usize = 34;

/// One aborted transaction of one producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AbortedTxn {
    pub producer_id: i64,
    /// Offset of the transaction's first record in the partition.
    pub first_offset: i64,
    /// Offset of the abort marker.
    pub last_offset: i64,
    /// The partition's last stable offset once the marker was appended.
    pub last_stable_offset: i64,
}

impl AbortedTxn {
    /// The entry's 34 bytes.
    pub fn encode(&self) -> [u8; ENTRY_BYTES] {
        let mut out = [0u8; ENTRY_BYTES];
        out[0..2].copy_from_slice(&0i16.to_be_bytes());
        out[2..10].copy_from_slice(&self.producer_id.to_be_bytes());
        out[10..18].copy_from_slice(&self.first_offset.to_be_bytes());
        out[18..26].copy_from_slice(&self.last_offset.to_be_bytes());
        out[26..34].copy_from_slice(&self.last_stable_offset.to_be_bytes());
        out
    }

    /// Parses one entry; an error says what is wrong with it.
    pub fn decode(bytes: &[u8; ENTRY_BYTES]) -> Result<Self, String> {
        let i64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[at..at + 8]);
            i64::from_be_bytes(b)
        };
        let version = i16::from_be_bytes([bytes[0], bytes[1]]);
        if version != 0 {
            return Err(format!("unknown entry version {version}"));
        }
        let txn = AbortedTxn {
            producer_id: i64_at(2),
            first_offset: i64_at(10),
            last_offset: i64_at(18),
            last_stable_offset: i64_at(26),
        };
        if txn.first_offset < 0 || txn.last_offset < txn.first_offset {
            return Err(format!("offsets {}..{} do not make a transaction", txn.first_offset, txn.last_offset));
        }
        Ok(txn)
    }
}

/// The path of the index of the segment at `base` (with `suffix`, as the cleaner names its
/// files).
pub(crate) fn path(dir: &Path, base: i64, suffix: &str) -> PathBuf {
    dir.join(format!("{}{suffix}", crate::segment::file_name(base, "txnindex")))
}

/// See the module docs.
#[derive(Debug)]
pub(crate) struct TxnIndex {
    storage: Arc<dyn Storage>,
    path: PathBuf,
    /// The open file, once it exists.
    file: Option<Box<dyn StorageFile>>,
    entries: Vec<AbortedTxn>,
}

impl TxnIndex {
    /// A new, empty index at `path`, removing any file there.
    pub(crate) fn create(storage: &Arc<dyn Storage>, path: PathBuf) -> Result<Self, LogError> {
        match storage.remove(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(LogError::io(&path)(e)),
        }
        Ok(Self { storage: storage.clone(), path, file: None, entries: Vec::new() })
    }

    /// The index at `path` as the file holds it (empty when there is none), for the segment
    /// starting at `base`. The entries are read up to the first one that is partial, does not
    /// parse, or does not follow the one before (a crash during a write: the file's length
    /// may have reached the disk before its bytes); the file is cut there with a warning, and
    /// the caller re-adds what the log's markers say (see [`TxnIndex::ensure`]). Read in
    /// chunks: memory follows the valid entries, never a damaged length.
    pub(crate) fn open(storage: &Arc<dyn Storage>, path: PathBuf, base: i64) -> Result<Self, LogError> {
        if !storage.exists(&path).map_err(LogError::io(&path))? {
            return Ok(Self { storage: storage.clone(), path, file: None, entries: Vec::new() });
        }
        let file = storage.open(&path, false).map_err(LogError::io(&path))?;
        let len = file.len().map_err(LogError::io(&path))?;
        let mut entries: Vec<AbortedTxn> = Vec::new();
        let mut damage = None;
        let mut chunk = vec![0u8; ENTRY_BYTES * 1024];
        let mut pos = 0u64;
        'read: while pos < len {
            let n = usize::try_from((len - pos).min(chunk.len() as u64)).unwrap_or(chunk.len());
            let n = n - n % ENTRY_BYTES;
            if n == 0 {
                damage = Some("a partial entry".to_owned());
                break;
            }
            file.read_at(pos, &mut chunk[..n]).map_err(LogError::io(&path))?;
            for bytes in chunk[..n].chunks_exact(ENTRY_BYTES) {
                let mut entry = [0u8; ENTRY_BYTES];
                entry.copy_from_slice(bytes);
                let parsed = AbortedTxn::decode(&entry).and_then(|txn| {
                    let follows = entries.last().is_none_or(|p| p.last_offset < txn.last_offset);
                    if txn.last_offset >= base && follows {
                        Ok(txn)
                    } else {
                        Err(format!("marker offset {} out of order", txn.last_offset))
                    }
                });
                match parsed {
                    Ok(txn) => entries.push(txn),
                    Err(reason) => {
                        damage = Some(reason);
                        break 'read;
                    }
                }
                pos += ENTRY_BYTES as u64;
            }
        }
        if let Some(reason) = damage {
            let keep = (entries.len() * ENTRY_BYTES) as u64;
            tracing::warn!(path = %path.display(), %reason, kept_entries = entries.len(), cut_bytes = len - keep,
                "cutting a damaged tail off an aborted-transaction index");
            file.set_len(keep).map_err(LogError::io(&path))?;
            file.sync().map_err(LogError::io(&path))?;
        }
        Ok(Self { storage: storage.clone(), path, file: Some(file), entries })
    }

    /// Makes sure `txn` is in the index (recovery re-adds what a crash may have cut off): a
    /// no-op when it is there, else it is added in marker order (replacing an entry for the
    /// same marker that says otherwise). An addition at the end is an append; elsewhere the
    /// file is replaced whole (temporary file, fsync, rename), so a crash leaves the old
    /// index or the new one.
    pub(crate) fn ensure(&mut self, txn: AbortedTxn) -> Result<(), LogError> {
        let at = self.entries.partition_point(|t| t.last_offset < txn.last_offset);
        match self.entries.get(at) {
            Some(t) if *t == txn => return Ok(()),
            Some(t) if t.last_offset == txn.last_offset => self.entries[at] = txn,
            None => return self.append(txn),
            Some(_) => self.entries.insert(at, txn),
        }
        let bytes: Vec<u8> = self.entries.iter().flat_map(|t| t.encode()).collect();
        let (dir, name) = match (self.path.parent(), self.path.file_name()) {
            (Some(d), Some(n)) => (d.to_path_buf(), n.to_string_lossy().into_owned()),
            _ => return Err(LogError::InvalidArgument(format!("no file name in {}", self.path.display()))),
        };
        self.file = None;
        crate::storage::replace_file(&*self.storage, &dir, &name, &bytes).map_err(|(p, e)| LogError::io(&p)(e))?;
        self.file = Some(self.storage.open(&self.path, false).map_err(LogError::io(&self.path))?);
        Ok(())
    }
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The entries, in marker order.
    pub(crate) fn entries(&self) -> &[AbortedTxn] {
        &self.entries
    }

    /// Appends `txn`, whose marker must come after every entry's. Written to the file (created
    /// if need be), not made durable (see [`TxnIndex::flush`]).
    pub(crate) fn append(&mut self, txn: AbortedTxn) -> Result<(), LogError> {
        if self.entries.last().is_some_and(|p| p.last_offset >= txn.last_offset) {
            return Err(LogError::InvalidArgument(format!(
                "aborted transaction marker at {} is not after the last one in {}",
                txn.last_offset,
                self.path.display()
            )));
        }
        self.create_file()?;
        let position = (self.entries.len() * ENTRY_BYTES) as u64;
        if let Some(file) = &self.file {
            file.write_all_at(position, &txn.encode()).map_err(LogError::io(&self.path))?;
        }
        self.entries.push(txn);
        Ok(())
    }

    /// Creates the file (empty) if it does not exist yet, durably: its directory entry is
    /// fsynced, so the entries [`TxnIndex::flush`] makes durable are found after a crash.
    fn create_file(&mut self) -> Result<(), LogError> {
        if self.file.is_some() {
            return Ok(());
        }
        let file = self.storage.open(&self.path, true).map_err(LogError::io(&self.path))?;
        file.set_len(0).map_err(LogError::io(&self.path))?;
        if let Some(dir) = self.path.parent() {
            self.storage.sync_dir(dir).map_err(LogError::io(dir))?;
        }
        self.file = Some(file);
        Ok(())
    }

    /// Removes the entries whose marker is at or after `offset`.
    pub(crate) fn truncate_to(&mut self, offset: i64) -> Result<(), LogError> {
        let keep = self.entries.partition_point(|t| t.last_offset < offset);
        if keep < self.entries.len() {
            if let Some(file) = &self.file {
                file.set_len((keep * ENTRY_BYTES) as u64).map_err(LogError::io(&self.path))?;
            }
            self.entries.truncate(keep);
        }
        Ok(())
    }

    /// Makes the file durable (nothing to do when it does not exist).
    pub(crate) fn flush(&self) -> Result<(), LogError> {
        match &self.file {
            Some(f) => f.sync().map_err(LogError::io(&self.path)),
            None => Ok(()),
        }
    }

    /// Adds to `out` the transactions aborted here that overlap `[from, to)` (marker at or
    /// after `from`, first record before `to`). Returns whether the search is complete: an
    /// entry here already had a last stable offset at or past `to`, so later segments hold
    /// no transaction that began before `to`.
    pub(crate) fn collect(&self, from: i64, to: i64, out: &mut Vec<AbortedTxn>) -> bool {
        for t in &self.entries {
            if t.last_offset >= from && t.first_offset < to {
                out.push(*t);
            }
            if t.last_stable_offset >= to {
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemStorage;
    use proptest::prelude::*;

    fn txn(pid: i64, first: i64, last: i64, lso: i64) -> AbortedTxn {
        AbortedTxn { producer_id: pid, first_offset: first, last_offset: last, last_stable_offset: lso }
    }

    proptest! {
        #[test]
        fn entries_round_trip(pid in any::<i64>(), first in 0i64..i64::MAX / 2, len in 0i64..1 << 40, lso in any::<i64>()) {
            let t = txn(pid, first, first + len, lso);
            prop_assert_eq!(AbortedTxn::decode(&t.encode()), Ok(t));
        }
    }

    #[test]
    fn kafka_byte_layout() {
        let bytes = txn(7, 100, 110, 111).encode();
        assert_eq!(&bytes[0..2], &[0, 0]);
        assert_eq!(&bytes[2..10], &7i64.to_be_bytes());
        assert_eq!(&bytes[26..34], &111i64.to_be_bytes());
        let mut bad = bytes;
        bad[1] = 1;
        assert!(AbortedTxn::decode(&bad).is_err(), "unknown version");
    }

    #[test]
    fn append_truncate_reopen_and_collect() {
        let storage: Arc<dyn Storage> = Arc::new(MemStorage::new());
        let dir = Path::new("/d");
        storage.create_dir_all(dir).unwrap();
        let p = path(dir, 100, "");
        assert!(p.ends_with("00000000000000000100.txnindex"));
        let mut index = TxnIndex::create(&storage, p.clone()).unwrap();
        assert!(!storage.exists(&p).unwrap(), "no file until a transaction is aborted");
        index.append(txn(1, 100, 105, 106)).unwrap();
        index.append(txn(2, 101, 110, 111)).unwrap();
        index.append(txn(3, 120, 130, 150)).unwrap();
        assert!(index.append(txn(4, 120, 130, 150)).is_err(), "markers must increase");
        index.flush().unwrap();

        let reopened = TxnIndex::open(&storage, p.clone(), 100).unwrap();
        assert_eq!(reopened.entries(), index.entries());
        let mut out = Vec::new();
        assert!(reopened.collect(106, 112, &mut out), "an entry's last stable offset reaches 112");
        assert_eq!(out, vec![txn(2, 101, 110, 111)]);
        out.clear();
        assert!(!reopened.collect(0, 1000, &mut out));
        assert_eq!(out.len(), 3);

        index.truncate_to(110).unwrap();
        assert_eq!(index.entries(), &[txn(1, 100, 105, 106)]);
        let reopened = TxnIndex::open(&storage, p.clone(), 100).unwrap();
        assert_eq!(reopened.entries(), index.entries());

        // A crash tore the last entry: it is cut off, and re-added where it belongs.
        let f = storage.open(&p, false).unwrap();
        f.set_len(ENTRY_BYTES as u64 + 3).unwrap();
        let mut torn = TxnIndex::open(&storage, p.clone(), 100).unwrap();
        assert_eq!(torn.entries(), &[txn(1, 100, 105, 106)]);
        assert_eq!(f.len().unwrap(), ENTRY_BYTES as u64);
        torn.ensure(txn(0, 100, 102, 100)).unwrap();
        torn.ensure(txn(1, 100, 105, 106)).unwrap();
        torn.ensure(txn(2, 106, 109, 110)).unwrap();
        let reopened = TxnIndex::open(&storage, p.clone(), 100).unwrap();
        assert_eq!(reopened.entries(), &[txn(0, 100, 102, 100), txn(1, 100, 105, 106), txn(2, 106, 109, 110)]);
        // Damage in the middle (zeros where the second entry was): cut from there. (The
        // insertion above replaced the file.)
        let f = storage.open(&p, false).unwrap();
        f.write_all_at(ENTRY_BYTES as u64, &[0u8; ENTRY_BYTES]).unwrap();
        let cut = TxnIndex::open(&storage, p.clone(), 100).unwrap();
        assert_eq!(cut.entries(), &[txn(0, 100, 102, 100)]);
        assert_eq!(f.len().unwrap(), ENTRY_BYTES as u64);
        // An entry for the same marker that says otherwise is replaced.
        let mut fixed = cut;
        fixed.ensure(txn(5, 101, 102, 103)).unwrap();
        assert_eq!(TxnIndex::open(&storage, p.clone(), 100).unwrap().entries(), &[txn(5, 101, 102, 103)]);
        let fresh = TxnIndex::create(&storage, p.clone()).unwrap();
        assert!(fresh.entries().is_empty() && !storage.exists(&p).unwrap());
    }
}
