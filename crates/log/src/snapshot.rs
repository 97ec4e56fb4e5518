//! Snapshot files beside the segments: `<offset>.snapshot`, named like segments by a 20-digit
//! zero-padded offset (Kafka's producer-state snapshots, `ProducerStateManager`).
//!
//! A snapshot holds state derived from the batches *below* its offset, so that state can be
//! rebuilt at open by loading the newest snapshot and replaying only the batches from its
//! offset on. The log crate stores and guards the bytes (the payload is opaque to it):
//!
//! ```text
//! magic "STPS" | version u16 = 1 | crc32c u32 of payload | payload length u32 | payload
//! ```
//!
//! all big-endian. A snapshot is written to `<name>.tmp`, fsynced, renamed into place and its
//! directory fsynced, so after a crash it is either whole or absent; one whose checks fail
//! anyway (a damaged disk) is skipped in favour of an older one or none.

use std::path::Path;

use crate::error::LogError;
use crate::storage::Storage;

/// File extension of snapshot files.
pub const SNAPSHOT_EXT: &str = "snapshot";
const MAGIC: &[u8; 4] = b"STPS";
const VERSION: u16 = 1;
const HEADER_LEN: usize = 14;

/// `<offset:020>.snapshot`.
pub fn file_name(offset: i64) -> String {
    format!("{offset:020}.{SNAPSHOT_EXT}")
}

/// Offsets of the snapshot files among `names`, ascending.
pub fn offsets_in(names: &[String]) -> Vec<i64> {
    let mut out: Vec<i64> = names
        .iter()
        .filter_map(|n| {
            let stem = n.strip_suffix(".snapshot")?;
            if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            stem.parse().ok()
        })
        .collect();
    out.sort_unstable();
    out
}

/// Frames `payload` as a snapshot file's bytes.
fn encode(payload: &[u8]) -> Result<Vec<u8>, LogError> {
    let len = u32::try_from(payload.len())
        .map_err(|_| LogError::InvalidArgument(format!("snapshot of {} bytes is too large", payload.len())))?;
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_be_bytes());
    out.extend_from_slice(&crc32c::crc32c(payload).to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
    Ok(out)
}

/// The payload of a snapshot file's bytes, or why they are not one.
fn decode(bytes: &[u8]) -> Result<&[u8], String> {
    if bytes.len() < HEADER_LEN || &bytes[..4] != MAGIC {
        return Err("not a snapshot file (bad magic or too short)".to_owned());
    }
    let field = |at: usize| -> [u8; 4] { [bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]] };
    let version = u16::from_be_bytes([bytes[4], bytes[5]]);
    if version != VERSION {
        return Err(format!("unknown snapshot version {version}"));
    }
    let crc = u32::from_be_bytes(field(6));
    let len = u32::from_be_bytes(field(10)) as usize;
    let payload = &bytes[HEADER_LEN..];
    if payload.len() != len {
        return Err(format!("payload is {} bytes, header says {len}", payload.len()));
    }
    if crc32c::crc32c(payload) != crc {
        return Err("CRC mismatch".to_owned());
    }
    Ok(payload)
}

/// Writes the snapshot at `offset` durably: tmp file, fsync, rename, fsync of `dir`.
pub fn write(storage: &dyn Storage, dir: &Path, offset: i64, payload: &[u8]) -> Result<(), LogError> {
    let path = dir.join(file_name(offset));
    let tmp = dir.join(format!("{}.tmp", file_name(offset)));
    let bytes = encode(payload)?;
    let f = storage.open(&tmp, true).map_err(LogError::io(&tmp))?;
    f.set_len(0).map_err(LogError::io(&tmp))?;
    f.write_all_at(0, &bytes).map_err(LogError::io(&tmp))?;
    f.sync().map_err(LogError::io(&tmp))?;
    drop(f);
    storage.rename(&tmp, &path).map_err(LogError::io(&path))?;
    storage.sync_dir(dir).map_err(LogError::io(dir))
}

/// The payload of the snapshot at `offset`; `Ok(None)` (logged) when the file is damaged.
pub fn read(storage: &dyn Storage, dir: &Path, offset: i64) -> Result<Option<Vec<u8>>, LogError> {
    let path = dir.join(file_name(offset));
    let f = storage.open(&path, false).map_err(LogError::io(&path))?;
    let file_len = f.len().map_err(LogError::io(&path))?;
    // The header first: the length it gives must account for the whole file, so a damaged
    // length (or a stray huge file) costs no allocation of its size.
    let mut header = [0u8; HEADER_LEN];
    let expected = if file_len >= HEADER_LEN as u64 {
        f.read_at(0, &mut header).map_err(LogError::io(&path))?;
        HEADER_LEN as u64 + u64::from(u32::from_be_bytes([header[10], header[11], header[12], header[13]]))
    } else {
        u64::MAX
    };
    if file_len != expected {
        tracing::warn!(path = %path.display(), file_len, "ignoring a damaged snapshot file (its length does not match its header)");
        return Ok(None);
    }
    let len =
        usize::try_from(file_len).map_err(|_| LogError::InvalidArgument(format!("{} is too large", path.display())))?;
    let mut bytes = vec![0u8; len];
    f.read_at(0, &mut bytes).map_err(LogError::io(&path))?;
    match decode(&bytes) {
        Ok(payload) => Ok(Some(payload.to_vec())),
        Err(reason) => {
            tracing::warn!(path = %path.display(), reason, "ignoring a damaged snapshot file");
            Ok(None)
        }
    }
}

/// Removes the snapshot at `offset` (no error if it is already gone).
pub fn remove(storage: &dyn Storage, dir: &Path, offset: i64) -> Result<(), LogError> {
    let path = dir.join(file_name(offset));
    match storage.remove(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(LogError::io(&path)(e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_round_trips_and_any_flipped_bit_is_caught() {
        let payload = b"producer state".to_vec();
        let bytes = encode(&payload).unwrap();
        assert_eq!(decode(&bytes).unwrap(), &payload[..]);
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            assert!(decode(&bad).is_err(), "flipping a bit of byte {i} went unnoticed");
        }
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "a file cut at {cut} went unnoticed");
        }
    }

    #[test]
    fn only_well_named_files_are_snapshots() {
        let names: Vec<String> = [
            "00000000000000000042.snapshot",
            "00000000000000000007.snapshot",
            "7.snapshot",
            "x.log",
            "00000000000000000001.snapshot.tmp",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(offsets_in(&names), vec![7, 42]);
    }

    #[test]
    fn a_file_longer_or_shorter_than_its_header_says_is_skipped_unread() {
        use crate::storage::MemStorage;
        let storage = MemStorage::new();
        let dir = Path::new("/d");
        storage.create_dir_all(dir).unwrap();
        write(&storage, dir, 5, b"state").unwrap();
        assert_eq!(read(&storage, dir, 5).unwrap().as_deref(), Some(&b"state"[..]));
        let f = storage.open(&dir.join(file_name(5)), false).unwrap();
        f.write_all_at(HEADER_LEN as u64 + 5, b"trailing").unwrap();
        assert_eq!(read(&storage, dir, 5).unwrap(), None, "longer than the header says");
        // A header claiming 4 GiB in a small file is refused before anything that size is made.
        f.set_len(0).unwrap();
        let mut header = encode(b"state").unwrap();
        header[10..14].copy_from_slice(&u32::MAX.to_be_bytes());
        f.write_all_at(0, &header).unwrap();
        assert_eq!(read(&storage, dir, 5).unwrap(), None, "shorter than the header says");
        f.set_len(3).unwrap();
        assert_eq!(read(&storage, dir, 5).unwrap(), None, "shorter than a header");
        remove(&storage, dir, 5).unwrap();
        remove(&storage, dir, 5).unwrap(); // already gone: not an error
    }
}
