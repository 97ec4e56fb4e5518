//! Kafka's `OffsetCheckpointFile` format, shared by the per-data-directory checkpoint files
//! (`cleaner-offset-checkpoint`, `replication-offset-checkpoint`): one offset per partition.
//!
//! ```text
//! 0                      version
//! 2                      number of entries
//! orders 0 1520          topic, partition, offset
//! orders 1 988
//! ```
//!
//! Written to a `.tmp` file, fsynced, renamed into place and the directory fsynced. A missing
//! file reads as empty; an unreadable or damaged one too, with a log line (each file's user
//! says what an empty checkpoint costs).

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::LogError;
use crate::storage::Storage;

/// Log directory name (`<topic>-<partition>`) → offset.
pub type Checkpoints = BTreeMap<String, i64>;

/// Reads the checkpoint file `name` of `data_dir`; empty when it is missing or damaged
/// (`consequence` ends the log line: what starting without it means).
pub fn read(storage: &dyn Storage, data_dir: &Path, name: &str, consequence: &str) -> Checkpoints {
    let path = data_dir.join(name);
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
            tracing::warn!(path = %path.display(), error = %e, "cannot read the checkpoint file; {consequence}");
            return Checkpoints::new();
        }
    };
    match parse(&text) {
        Some(c) => c,
        None => {
            tracing::warn!(path = %path.display(), "malformed checkpoint file; {consequence}");
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

/// Durably replaces the checkpoint file `name` of `data_dir` with `entries`.
pub fn write(storage: &dyn Storage, data_dir: &Path, name: &str, entries: &Checkpoints) -> Result<(), LogError> {
    let mut text = format!("0\n{}\n", entries.len());
    for (dir_name, offset) in entries {
        let (topic, partition) = dir_name.rsplit_once('-').unwrap_or((dir_name.as_str(), "0"));
        text.push_str(&format!("{topic} {partition} {offset}\n"));
    }
    crate::storage::replace_file(storage, data_dir, name, text.as_bytes()).map_err(|(path, e)| LogError::io(&path)(e))
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
        assert!(read(&s, d, "cp", "").is_empty());
        let mut c = Checkpoints::new();
        c.insert("my-topic-3".into(), 42);
        c.insert("__consumer_offsets-0".into(), 7);
        write(&s, d, "cp", &c).unwrap();
        assert_eq!(read(&s, d, "cp", ""), c);
        s.open(&d.join("cp"), false).unwrap().write_all_at(0, b"9").unwrap();
        assert!(read(&s, d, "cp", "").is_empty());
    }
}
