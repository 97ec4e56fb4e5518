//! The local metadata log: one file of frames `[len u32][crc32c u32][payload]`.
//!
//! Each [`MetadataLog::append`] (one controller commit) is one frame whose payload is a batch
//! of records (`0xB0`, then `u32` count, then each record as `[len u32][bytes]`); logs written
//! before batches hold one record per frame (the payload is the record), and still read.
//!
//! Durability: an append returns only after `fdatasync`, so a change acknowledged to a client
//! survives a crash. A crash mid-append can tear only the last frame: on open, a bad frame at
//! the end of the file is cut off (nothing in it was acknowledged), but a bad frame with a
//! valid frame after it is damage in the middle of the log, and the log refuses to open
//! ([`ControllerError::Corrupt`], naming the file and the byte), since replaying around it
//! would lose committed metadata. A failed append is cut off again; if that fails too, or an
//! fsync fails, the log goes offline and refuses every later append until a restart (the next
//! open decides from what is on disk).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use strata_log::storage::{FsStorage, Storage, StorageFile};
use strata_metadata::MetadataRecord;

use crate::ControllerError;

/// Largest frame accepted when reading (guards against a garbage length).
const MAX_FRAME: u32 = 64 * 1024 * 1024;
/// First payload byte of a batch frame (a single-record payload starts with the record's
/// version byte, which is small).
const BATCH_MARKER: u8 = 0xB0;
const FRAME_HEADER: usize = 8;

/// An open metadata log, positioned at its end.
#[derive(Debug)]
pub struct MetadataLog {
    path: PathBuf,
    file: Box<dyn StorageFile>,
    /// Bytes of whole, durable frames.
    len: u64,
    /// Why the log stopped taking appends, if it did.
    offline: Option<String>,
}

/// The frame at the start of `bytes`, if it is whole and its CRC matches.
fn frame(bytes: &[u8]) -> Option<&[u8]> {
    let header = bytes.get(..FRAME_HEADER)?;
    let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
    let crc = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    if len == 0 || len > MAX_FRAME {
        return None;
    }
    let payload = bytes.get(FRAME_HEADER..FRAME_HEADER + len as usize)?;
    (crc32c::crc32c(payload) == crc).then_some(payload)
}

/// Every byte of `file` (at `path`, for errors).
pub(crate) fn read_whole(file: &dyn StorageFile, path: &Path) -> Result<Vec<u8>, ControllerError> {
    let io = |source| ControllerError::Io { path: path.to_path_buf(), source };
    let len = file.len().map_err(io)?;
    let mut bytes = vec![0u8; usize::try_from(len).map_err(|_| io(std::io::ErrorKind::FileTooLarge.into()))?];
    file.read_at(0, &mut bytes).map_err(io)?;
    Ok(bytes)
}

/// `payload` as one frame: `[len u32][crc32c u32][payload]`.
pub(crate) fn encode_frame(payload: &[u8]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(FRAME_HEADER + payload.len());
    buf.extend_from_slice(&u32::try_from(payload.len()).unwrap_or(u32::MAX).to_be_bytes());
    buf.extend_from_slice(&crc32c::crc32c(payload).to_be_bytes());
    buf.extend_from_slice(payload);
    buf
}

/// Payloads with their positions, and where the whole frames end.
pub(crate) type Frames<'a> = (Vec<(usize, &'a [u8])>, usize);

/// The payloads of the whole frames at the start of `bytes`, each with its position, and
/// where they end. A bad frame is a torn tail (where the result ends) only if no valid frame
/// follows it; otherwise the file is damaged: `Err((position, reason))`.
pub(crate) fn parse_frames(bytes: &[u8]) -> Result<Frames<'_>, (usize, String)> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos < bytes.len() {
        let Some(payload) = frame(&bytes[pos..]) else {
            if let Some(later) = (pos + 1..bytes.len()).find(|&p| frame(&bytes[p..]).is_some()) {
                return Err((
                    pos,
                    format!("a frame fails its checksum or length, and a valid frame follows at byte {later}"),
                ));
            }
            break;
        };
        out.push((pos, payload));
        pos += FRAME_HEADER + payload.len();
    }
    Ok((out, pos))
}

/// `records` as a batch payload (see the module docs); also the data of a Raft entry.
pub(crate) fn encode_batch(records: &[MetadataRecord]) -> Vec<u8> {
    let mut payload = vec![BATCH_MARKER];
    payload.extend_from_slice(&(records.len() as u32).to_be_bytes());
    for r in records {
        let bytes = r.encode();
        payload.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        payload.extend_from_slice(&bytes);
    }
    payload
}

/// Records of a frame's payload (a batch, or one record of an older log).
pub(crate) fn records(payload: &[u8]) -> Result<Vec<MetadataRecord>, String> {
    let Some((&BATCH_MARKER, mut rest)) = payload.split_first() else {
        return MetadataRecord::decode(payload).map(|r| vec![r]).map_err(|e| e.to_string());
    };
    let take = |rest: &mut &[u8], n: usize| -> Result<Vec<u8>, String> {
        let (head, tail) = rest.split_at_checked(n).ok_or("batch frame ends early")?;
        *rest = tail;
        Ok(head.to_vec())
    };
    let u32_of = |b: Vec<u8>| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
    let count = u32_of(take(&mut rest, 4)?);
    let mut out = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        let len = u32_of(take(&mut rest, 4)?);
        let record = take(&mut rest, len)?;
        out.push(MetadataRecord::decode(&record).map_err(|e| e.to_string())?);
    }
    if !rest.is_empty() {
        return Err("bytes after the last record of a batch frame".into());
    }
    Ok(out)
}

impl MetadataLog {
    /// Opens (or creates) the log in `dir` on the local file system and returns it with every
    /// record it holds.
    pub fn open(dir: &Path) -> Result<(Self, Vec<MetadataRecord>), ControllerError> {
        Self::open_with_storage(Arc::new(FsStorage), dir)
    }

    /// [`MetadataLog::open`] on `storage` (the in-memory twin in tests).
    pub fn open_with_storage(
        storage: Arc<dyn Storage>,
        dir: &Path,
    ) -> Result<(Self, Vec<MetadataRecord>), ControllerError> {
        let path = dir.join("metadata.log");
        let io = |source| ControllerError::Io { path: path.clone(), source };
        storage.create_dir_all(dir).map_err(io)?;
        let created = !storage.exists(&path).map_err(io)?;
        let file = storage.open(&path, true).map_err(io)?;
        if created {
            storage.sync_dir(dir).map_err(io)?;
        }
        let bytes = read_whole(&*file, &path)?;
        let (records, valid_len) = Self::parse(&path, &bytes)?;
        if valid_len < bytes.len() {
            // What a crash during an append leaves; recovery, not damage (damage is refused above).
            tracing::info!(path = %path.display(), valid_len, file_len = bytes.len(),
                "cutting a torn last frame off the metadata log (an append the crash interrupted; never acknowledged)");
            file.set_len(valid_len as u64).map_err(io)?;
            file.sync().map_err(io)?;
        }
        Ok((Self { path, file, len: valid_len as u64, offline: None }, records))
    }

    /// Every record of the whole frames of `bytes`, and where they end. A bad frame is the
    /// torn tail only if no valid frame follows it; otherwise the log is damaged.
    fn parse(path: &Path, bytes: &[u8]) -> Result<(Vec<MetadataRecord>, usize), ControllerError> {
        let corrupt = |position: usize, reason: String| ControllerError::Corrupt {
            path: path.to_path_buf(),
            position: position as u64,
            reason,
        };
        let (frames, end) = parse_frames(bytes).map_err(|(pos, reason)| corrupt(pos, reason))?;
        let mut records = Vec::new();
        for (pos, payload) in frames {
            records.extend(self::records(payload).map_err(|reason| corrupt(pos, reason))?);
        }
        Ok((records, end))
    }

    /// Appends `records` as one frame and fsyncs before returning. On failure the frame is cut
    /// off again; if that is not possible, or the fsync failed (the kernel may have dropped
    /// what it could not write), the log goes offline: every later append fails.
    pub fn append(&mut self, records: &[MetadataRecord]) -> Result<(), ControllerError> {
        if let Some(reason) = &self.offline {
            return Err(ControllerError::Offline { path: self.path.clone(), reason: reason.clone() });
        }
        let buf = encode_frame(&encode_batch(records));
        let io = |source| ControllerError::Io { path: self.path.clone(), source };
        if let Err(e) = self.file.write_all_at(self.len, &buf) {
            // e.g. a full disk: cut off whatever part of the frame landed.
            if let Err(cut) = self.file.set_len(self.len) {
                self.offline = Some(format!("a failed append ({e}) could not be cut off ({cut})"));
                tracing::error!(path = %self.path.display(), error = %e, %cut,
                    "the metadata log is offline: a failed append could not be cut off; restart the broker");
            }
            return Err(io(e));
        }
        if let Err(e) = self.file.sync() {
            self.offline = Some(format!("fsync failed: {e}"));
            tracing::error!(path = %self.path.display(), error = %e,
                "the metadata log is offline: fsync failed; restart the broker");
            return Err(io(e));
        }
        self.len += buf.len() as u64;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn a() -> MetadataRecord {
        MetadataRecord::ClusterCreated { cluster_id: "x".into() }
    }

    fn b() -> MetadataRecord {
        MetadataRecord::ProducerIdsAllocated { broker_id: 1, next_producer_id: 10 }
    }

    #[test]
    fn records_survive_reopen_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut log, recs) = MetadataLog::open(dir.path()).unwrap();
            assert!(recs.is_empty());
            log.append(&[a()]).unwrap();
            log.append(&[b(), b()]).unwrap();
        }
        let path = dir.path().join("metadata.log");
        let full = std::fs::read(&path).unwrap();
        // Tear the last frame (one commit of two records): both go, nothing else.
        std::fs::write(&path, &full[..full.len() - 3]).unwrap();
        let (mut log, recs) = MetadataLog::open(dir.path()).unwrap();
        assert_eq!(recs, vec![a()]);
        log.append(&[b()]).unwrap();
        let (_, recs) = MetadataLog::open(dir.path()).unwrap();
        assert_eq!(recs, vec![a(), b()]);
    }

    #[test]
    fn damage_in_the_middle_refuses_to_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut log, _) = MetadataLog::open(dir.path()).unwrap();
            log.append(&[a()]).unwrap();
            log.append(&[b()]).unwrap();
        }
        let path = dir.path().join("metadata.log");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[10] ^= 0x40; // inside the first frame's payload
        std::fs::write(&path, &bytes).unwrap();
        match MetadataLog::open(dir.path()) {
            Err(ControllerError::Corrupt { position, .. }) => assert_eq!(position, 0),
            other => panic!("{other:?}"),
        }
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "nothing was cut");
    }

    /// A full disk mid-append: the torn frame is cut off, the commit fails, and the log goes on
    /// with the next append; nothing acknowledged is lost after a crash (before this, the torn
    /// frame stayed, later appends landed after it, and the next open cut them all off).
    #[test]
    fn a_failed_append_is_rolled_back_and_a_failed_fsync_takes_the_log_offline() {
        use strata_log::storage::MemStorage;
        let storage = MemStorage::new();
        let dir = Path::new("/meta");
        let (mut log, _) = MetadataLog::open_with_storage(Arc::new(storage.clone()), dir).unwrap();
        log.append(&[a()]).unwrap();
        storage.set_space_limit(Some(storage.total_bytes() + 10));
        assert!(log.append(&[b(), b(), b()]).is_err(), "the disk is full");
        storage.set_space_limit(None);
        log.append(&[b()]).unwrap();
        drop(log);
        storage.crash(3);
        let (mut log, recs) = MetadataLog::open_with_storage(Arc::new(storage.clone()), dir).unwrap();
        assert_eq!(recs, vec![a(), b()], "both acknowledged commits survive");
        storage.set_sync_failures(true);
        assert!(log.append(&[b()]).is_err());
        storage.set_sync_failures(false);
        assert!(matches!(log.append(&[b()]), Err(ControllerError::Offline { .. })), "offline until a restart");
    }

    #[test]
    fn logs_of_single_record_frames_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let mut old = Vec::new();
        for r in [a(), b()] {
            let payload = r.encode();
            old.extend_from_slice(&(payload.len() as u32).to_be_bytes());
            old.extend_from_slice(&crc32c::crc32c(&payload).to_be_bytes());
            old.extend_from_slice(&payload);
        }
        std::fs::write(dir.path().join("metadata.log"), &old).unwrap();
        let (_, recs) = MetadataLog::open(dir.path()).unwrap();
        assert_eq!(recs, vec![a(), b()]);
    }

    /// Power cut at a random changing operation (issue #11 point 14): every commit the log
    /// acknowledged before the cut is there after it, in order, and nothing but commits that
    /// were attempted (the one in flight may or may not have made it).
    #[test]
    fn acknowledged_commits_survive_a_power_cut_at_any_point() {
        use strata_log::storage::{for_each_seed, MemStorage, SimRng};
        fn workload(storage: &MemStorage, seed: u64) -> Vec<(u64, Vec<MetadataRecord>)> {
            let mut rng = SimRng::new(seed);
            let dir = Path::new("/data/__cluster_metadata-0");
            let (mut log, _) = MetadataLog::open_with_storage(Arc::new(storage.clone()), dir).unwrap();
            let mut next = 0;
            let mut acked = Vec::new();
            for _ in 0..40 {
                let batch: Vec<MetadataRecord> = (0..1 + rng.below(4))
                    .map(|_| {
                        next += 1 + rng.below(1000) as i64;
                        MetadataRecord::ProducerIdsAllocated { broker_id: 1, next_producer_id: next }
                    })
                    .collect();
                log.append(&batch).unwrap();
                acked.push((storage.ops(), batch));
            }
            acked
        }
        for_each_seed("acknowledged_commits_survive_a_power_cut_at_any_point", 200, |seed| {
            let dry = MemStorage::new();
            workload(&dry, seed);
            let cut = 1 + SimRng::new(seed ^ 0x5EED).below(dry.ops());
            let storage = MemStorage::new();
            storage.set_crash_point(cut, seed);
            let commits = workload(&storage, seed);
            let image = storage.take_crash_image().expect("the cut was reached");
            let (_, recs) = MetadataLog::open_with_storage(Arc::new(image), Path::new("/data/__cluster_metadata-0"))
                .expect("a power cut never leaves a log that refuses to open");
            let attempted: Vec<MetadataRecord> = commits.iter().flat_map(|(_, b)| b.clone()).collect();
            let acked: usize = commits.iter().filter(|(ops, _)| *ops < cut).map(|(_, b)| b.len()).sum();
            assert!(recs.len() >= acked, "{} records after the cut, {acked} were acknowledged", recs.len());
            assert_eq!(&recs[..], &attempted[..recs.len()], "what survived is what was written, in order");
            // Whole commits only: a commit is one frame.
            let mut boundary = 0;
            let ends: Vec<usize> = commits
                .iter()
                .map(|(_, b)| {
                    boundary += b.len();
                    boundary
                })
                .collect();
            assert!(
                recs.is_empty() || ends.contains(&recs.len()),
                "a commit survived in part ({} records)",
                recs.len()
            );
        });
    }
}
