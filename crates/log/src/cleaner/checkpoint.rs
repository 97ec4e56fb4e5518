//! The `cleaner-offset-checkpoint` file of a data directory (Kafka's `OffsetCheckpointFile`):
//! how far each log of the directory is clean, so a restart does not clean it all again.
//!
//! ```text
//! 0                      version
//! 2                      number of entries
//! orders 0 1520          topic, partition, first dirty offset
//! orders 1 988
//! ```
//!
//! Written to a `.tmp` file, fsynced, renamed into place and the directory fsynced. A missing
//! or unreadable file means "nothing is clean yet" (logged), which costs only work.

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::LogError;
use crate::storage::Storage;

/// Name of the file in each data directory.
pub const CLEANER_CHECKPOINT_FILE: &str = "cleaner-offset-checkpoint";

/// Log directory name (`<topic>-<partition>`) → first dirty offset.
pub type Checkpoints = BTreeMap<String, i64>;

/// Reads the checkpoint file of `data_dir`; empty when it is missing or damaged.
pub fn read(storage: &dyn Storage, data_dir: &Path) -> Checkpoints {
    let path = data_dir.join(CLEANER_CHECKPOINT_FILE);
    let text = (|| -> std::io::Result<Option<String>> {
        if !storage.exists(&path)? {
            return Ok(None);
        }
        let f = storage.open(&path, false)?;
        let len = f.len()?.min(64 << 20);
        let mut buf = vec![0u8; len as usize];
        f.read_at(0, &mut buf)?;
        Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
    })();
    let text = match text {
        Ok(Some(t)) => t,
        Ok(None) => return Checkpoints::new(),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read the cleaner checkpoint; logs will be cleaned from their start");
            return Checkpoints::new();
        }
    };
    match parse(&text) {
        Some(c) => c,
        None => {
            tracing::warn!(path = %path.display(), "malformed cleaner checkpoint; logs will be cleaned from their start");
            Checkpoints::new()
        }
    }
}

fn parse(text: &str) -> Option<Checkpoints> {
    let mut lines = text.lines();
    if lines.next()?.trim() != "0" {
        return None;
    }
    let count: usize = lines.next()?.trim().parse().ok()?;
    let mut out = Checkpoints::new();
    for _ in 0..count {
        let mut f = lines.next()?.split_whitespace();
        let (topic, partition, offset) = (f.next()?, f.next()?.parse::<i32>().ok()?, f.next()?.parse::<i64>().ok()?);
        out.insert(format!("{topic}-{partition}"), offset);
    }
    Some(out)
}

/// Durably replaces the checkpoint file of `data_dir` with `entries`.
pub fn write(storage: &dyn Storage, data_dir: &Path, entries: &Checkpoints) -> Result<(), LogError> {
    let mut text = format!("0\n{}\n", entries.len());
    for (name, offset) in entries {
        let (topic, partition) = name.rsplit_once('-').unwrap_or((name.as_str(), "0"));
        text.push_str(&format!("{topic} {partition} {offset}\n"));
    }
    crate::storage::replace_file(storage, data_dir, CLEANER_CHECKPOINT_FILE, text.as_bytes())
        .map_err(|(path, e)| LogError::io(&path)(e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemStorage;

    #[test]
    fn round_trips_and_damage_reads_as_empty() {
        let s = MemStorage::new();
        let d = Path::new("/data");
        s.create_dir_all(d).unwrap();
        assert!(read(&s, d).is_empty());
        let mut c = Checkpoints::new();
        c.insert("my-topic-3".into(), 42);
        c.insert("__consumer_offsets-0".into(), 7);
        write(&s, d, &c).unwrap();
        assert_eq!(read(&s, d), c);
        s.open(&d.join(CLEANER_CHECKPOINT_FILE), false).unwrap().write_all_at(0, b"9").unwrap();
        assert!(read(&s, d).is_empty());
    }
}
