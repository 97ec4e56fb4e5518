//! The local metadata log: one file of frames `[len u32][crc32c u32][record]`.
//!
//! Durability: [`MetadataLog::append`] returns only after `fdatasync`, so a
//! change acknowledged to a client survives a crash. On open, frames are read
//! in order; a torn or corrupt tail (a crash mid-append) is cut off at the
//! last whole frame, and nothing after it was ever acknowledged.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use strata_metadata::MetadataRecord;

use crate::ControllerError;

/// Largest record accepted when reading (guards against a garbage length).
const MAX_RECORD: u32 = 16 * 1024 * 1024;

/// An open metadata log, positioned at its end.
#[derive(Debug)]
pub struct MetadataLog {
    path: PathBuf,
    file: File,
}

impl MetadataLog {
    /// Opens (or creates) the log in `dir` and returns it with every record it holds.
    pub fn open(dir: &Path) -> Result<(Self, Vec<MetadataRecord>), ControllerError> {
        let path = dir.join("metadata.log");
        let io = |source| ControllerError::Io { path: path.clone(), source };
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut file = OpenOptions::new().read(true).append(true).create(true).open(&path).map_err(io)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io)?;
        let (records, valid_len) = Self::parse(&path, &bytes)?;
        if valid_len < bytes.len() {
            tracing::warn!(path = %path.display(), valid_len, file_len = bytes.len(), "truncating torn tail of the metadata log");
            file.set_len(valid_len as u64).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        file.seek(SeekFrom::End(0)).map_err(io)?;
        Ok((Self { path, file }, records))
    }

    fn parse(path: &Path, bytes: &[u8]) -> Result<(Vec<MetadataRecord>, usize), ControllerError> {
        let mut records = Vec::new();
        let mut pos = 0usize;
        while bytes.len() - pos >= 8 {
            let len = u32::from_be_bytes([bytes[pos], bytes[pos + 1], bytes[pos + 2], bytes[pos + 3]]);
            let crc = u32::from_be_bytes([bytes[pos + 4], bytes[pos + 5], bytes[pos + 6], bytes[pos + 7]]);
            if len > MAX_RECORD || bytes.len() - pos - 8 < len as usize {
                break;
            }
            let payload = &bytes[pos + 8..pos + 8 + len as usize];
            if crc32c::crc32c(payload) != crc {
                break;
            }
            let record = MetadataRecord::decode(payload).map_err(|e| ControllerError::Corrupt {
                path: path.to_path_buf(),
                position: pos as u64,
                reason: e.to_string(),
            })?;
            records.push(record);
            pos += 8 + len as usize;
        }
        Ok((records, pos))
    }

    /// Appends `records` and fsyncs before returning.
    pub fn append(&mut self, records: &[MetadataRecord]) -> Result<(), ControllerError> {
        let mut buf = Vec::new();
        for r in records {
            let payload = r.encode();
            let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
            buf.extend_from_slice(&len.to_be_bytes());
            buf.extend_from_slice(&crc32c::crc32c(&payload).to_be_bytes());
            buf.extend_from_slice(&payload);
        }
        let io = |source| ControllerError::Io { path: self.path.clone(), source };
        self.file.write_all(&buf).map_err(io)?;
        self.file.sync_data().map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_reopen_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let a = MetadataRecord::ClusterCreated { cluster_id: "x".into() };
        let b = MetadataRecord::ProducerIdsAllocated { broker_id: 1, next_producer_id: 10 };
        {
            let (mut log, recs) = MetadataLog::open(dir.path()).unwrap();
            assert!(recs.is_empty());
            log.append(&[a.clone(), b.clone()]).unwrap();
        }
        let path = dir.path().join("metadata.log");
        let full = std::fs::read(&path).unwrap();
        // Tear the last frame.
        std::fs::write(&path, &full[..full.len() - 3]).unwrap();
        let (mut log, recs) = MetadataLog::open(dir.path()).unwrap();
        assert_eq!(recs, vec![a.clone()]);
        log.append(std::slice::from_ref(&b)).unwrap();
        let (_, recs) = MetadataLog::open(dir.path()).unwrap();
        assert_eq!(recs, vec![a, b]);
    }
}
