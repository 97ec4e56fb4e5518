//! [`LogManager`]: the partition logs' directories, as Kafka's `LogManager` keeps them.
//!
//! On disk each partition is a directory `<topic>-<partition>` under one of the data
//! directories (`log.dirs`), holding the log's segments and a `partition.metadata` file with
//! the topic id, so that a directory left by a deleted topic of the same name is never taken
//! for the new topic's. A partition found in a data directory at start stays there; a new one
//! goes to the directory holding the fewest partitions (Kafka's rule). Each data directory
//! also keeps a `replication-offset-checkpoint` with its partitions' high watermarks
//! ([`HW_CHECKPOINT_FILE`]).
//!
//! The broker owns the partitions (their locks, replication state and the open [`Log`]s); it
//! asks this manager to open, place, delete and sweep their directories, so it never touches
//! the file system itself. Once started ([`LogManager::startup`]) the manager also runs the
//! background work over the open logs, which it sees through [`ManagedLogs`]: retention, the
//! time-based flush and the cleaner ([`crate::maintenance`]). Every method may wait on the
//! disk: call it off the async workers.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError, Weak};

use uuid::Uuid;

use crate::cleaner::CleanerMetrics;
use crate::error::LogError;
use crate::maintenance::{Maintenance, MaintenanceConfig, ManagedLogs};
use crate::offset_checkpoint::{self, Checkpoints};
use crate::storage::FsStorage;
use crate::{Log, LogConfig};

/// Directory of the local metadata log inside a data directory: not a partition's.
pub const METADATA_DIR: &str = "__cluster_metadata-0";
/// The file in each partition directory naming its topic id (Kafka's name and format).
pub const PARTITION_METADATA_FILE: &str = "partition.metadata";
/// The file of each data directory that keeps its partitions' high watermarks (Kafka's
/// `replication-offset-checkpoint`).
pub const HW_CHECKPOINT_FILE: &str = "replication-offset-checkpoint";

/// The file each data directory gets at a clean shutdown, naming the broker epoch the broker
/// had (Kafka's `.kafka_cleanshutdown`, `{"version":0,"brokerEpoch":N}`). Read and removed at
/// start: a broker registers with that epoch as its `previous_broker_epoch` only when every
/// data directory has it, else with -1 (an unclean shutdown, KIP-966).
pub const CLEAN_SHUTDOWN_FILE: &str = ".kafka_cleanshutdown";

/// The name of a partition's directory.
pub fn partition_dir_name(topic: &str, index: i32) -> String {
    format!("{topic}-{index}")
}

/// Whether a directory name has the form of a partition's (`<topic>-<n>`); the metadata log's
/// directory does, and is not one.
pub fn is_partition_dir_name(name: &str) -> bool {
    name != METADATA_DIR
        && name
            .rsplit_once('-')
            .is_some_and(|(t, n)| !t.is_empty() && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The topic id a `partition.metadata` file names.
pub fn parse_topic_id(text: &str) -> Option<Uuid> {
    text.lines().find_map(|l| l.strip_prefix("topic_id:")).and_then(|v| Uuid::parse_str(v.trim()).ok())
}

/// See the module docs.
#[derive(Debug)]
pub struct LogManager {
    /// The data directories (`log.dirs`), in configured order; never empty.
    log_dirs: Vec<PathBuf>,
    /// Which data directory (index into `log_dirs`) holds each partition directory, by name:
    /// those found at start and those placed since.
    placement: Mutex<HashMap<String, usize>>,
    /// High watermarks read from the checkpoint files at start, by partition directory name,
    /// until each partition is opened.
    restored_hws: Mutex<Checkpoints>,
    /// Serializes writers of the checkpoint files (the periodic task and the shutdown).
    checkpointing: Mutex<()>,
    /// The background work, between [`LogManager::startup`] and [`LogManager::shutdown`].
    maintenance: Mutex<Option<Maintenance>>,
    /// The broker epoch of the last clean shutdown, -1 if the last shutdown was not clean
    /// (see [`CLEAN_SHUTDOWN_FILE`]).
    previous_broker_epoch: i64,
}

impl std::fmt::Debug for Maintenance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Maintenance")
    }
}

impl LogManager {
    /// A manager of `log_dirs` (which must exist). Scans them for the partition directories
    /// they hold, so that each partition is opened where it is; a partition directory present
    /// in two of them is refused (which one holds the data to serve is unknowable), as an
    /// unreadable directory is. Reads their high watermark checkpoints.
    pub fn open(log_dirs: Vec<PathBuf>) -> Result<Self, LogError> {
        if log_dirs.is_empty() {
            return Err(LogError::InvalidArgument("no data directory (log.dirs is empty)".into()));
        }
        let mut placement: HashMap<String, usize> = HashMap::new();
        for (i, dir) in log_dirs.iter().enumerate() {
            for entry in std::fs::read_dir(dir).map_err(LogError::io(dir))? {
                let entry = entry.map_err(LogError::io(dir))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if !is_partition_dir_name(&name) || !entry.path().is_dir() {
                    continue;
                }
                if let Some(&other) = placement.get(&name) {
                    return Err(LogError::DirectoryConflict {
                        dir: dir.join(&name),
                        reason: format!(
                            "the partition directory {name} is in two data directories, {} and {}; move one aside (the broker cannot tell which holds the data to serve)",
                            log_dirs[other].display(),
                            dir.display()
                        ),
                    });
                }
                placement.insert(name, i);
            }
        }
        let previous_broker_epoch = take_clean_shutdown_epoch(&log_dirs);
        Ok(Self { previous_broker_epoch, ..Self::with_placement(log_dirs, placement) })
    }

    /// A manager of the one directory `data_dir`, without scanning it (tests, tools).
    pub fn single(data_dir: PathBuf) -> Self {
        Self::with_placement(vec![data_dir], HashMap::new())
    }

    fn with_placement(log_dirs: Vec<PathBuf>, placement: HashMap<String, usize>) -> Self {
        let mut restored = Checkpoints::new();
        for dir in &log_dirs {
            restored.extend(offset_checkpoint::read(
                &FsStorage,
                dir,
                HW_CHECKPOINT_FILE,
                "replicated partitions start with their high watermark at their log start",
            ));
        }
        Self {
            log_dirs,
            placement: Mutex::new(placement),
            restored_hws: Mutex::new(restored),
            checkpointing: Mutex::new(()),
            maintenance: Mutex::new(None),
            previous_broker_epoch: -1,
        }
    }

    /// The broker epoch this broker had when it last shut down cleanly, -1 when it did not
    /// (a crash, a power cut, a failed close): the `previous_broker_epoch` of its registration.
    pub fn previous_broker_epoch(&self) -> i64 {
        self.previous_broker_epoch
    }

    /// Records a clean shutdown at `broker_epoch` in every data directory (after every log was
    /// closed). A directory that cannot be written makes the next start count as unclean.
    pub fn mark_clean_shutdown(&self, broker_epoch: i64) {
        let text = format!("{{\"version\":0,\"brokerEpoch\":{broker_epoch}}}");
        for dir in &self.log_dirs {
            if let Err((path, e)) = crate::storage::replace_file(&FsStorage, dir, CLEAN_SHUTDOWN_FILE, text.as_bytes())
            {
                tracing::warn!(path = %path.display(), error = %e, "cannot record the clean shutdown; the next start counts as unclean");
            }
        }
    }

    /// Starts the background work over the logs `logs` lists (Kafka's `LogManager.startup`):
    /// retention every `retention_check_interval`, the time-based flush every
    /// `flush_scheduler_interval`, and the cleaner threads. It stops by itself once `logs`
    /// is dropped. Call once; a second call replaces (and stops) the first's work.
    pub fn startup(&self, logs: Weak<dyn ManagedLogs>, config: MaintenanceConfig) -> Result<(), LogError> {
        let started = Maintenance::start(logs, config).map_err(|e| LogError::Io {
            path: self.log_dirs[0].clone(),
            source: std::io::Error::new(e.kind(), format!("cannot start the log maintenance threads: {e}")),
        })?;
        let previous = self.maintenance.lock().unwrap_or_else(PoisonError::into_inner).replace(started);
        drop(previous);
        Ok(())
    }

    /// Stops the background work: the periodic tasks after the pass each may be running, the
    /// cleaners after the group of segments each is writing. Returns when all have stopped
    /// (before the logs are closed, at shutdown).
    pub fn shutdown(&self) {
        let running = self.maintenance.lock().unwrap_or_else(PoisonError::into_inner).take();
        drop(running);
    }

    /// What the cleaner did since [`LogManager::startup`] (zeros before).
    pub fn cleaner_metrics(&self) -> CleanerMetrics {
        self.maintenance
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|m| m.cleaner().metrics())
            .unwrap_or_default()
    }

    /// The data directories, in configured order.
    pub fn log_dirs(&self) -> &[PathBuf] {
        &self.log_dirs
    }

    fn placement(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.placement.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Which of [`LogManager::log_dirs`] holds `topic`-`index`, if it is placed.
    pub fn log_dir_of(&self, topic: &str, index: i32) -> Option<usize> {
        self.placement().get(&partition_dir_name(topic, index)).copied()
    }

    /// The directory of a partition: where it is, or, for a new partition, in the data
    /// directory holding the fewest partitions (the first of those on a tie).
    fn partition_dir(&self, topic: &str, index: i32) -> PathBuf {
        let name = partition_dir_name(topic, index);
        let mut placement = self.placement();
        let dir = match placement.get(&name) {
            Some(&i) => i,
            None => {
                let mut held = vec![0usize; self.log_dirs.len()];
                for &i in placement.values() {
                    held[i] += 1;
                }
                let fewest = (0..held.len()).min_by_key(|&i| held[i]).unwrap_or(0);
                placement.insert(name.clone(), fewest);
                fewest
            }
        };
        self.log_dirs[dir].join(name)
    }

    /// Opens (creating it if new) the log of `topic`-`index` of the topic `topic_id`. A
    /// directory naming another topic id is removed when `was_deleted` says a committed
    /// deletion removed that topic, and refused otherwise (missing metadata never removes
    /// data); a directory without its id file (a crash right after creating it) is kept.
    pub fn open_log(
        &self,
        topic: &str,
        index: i32,
        topic_id: Uuid,
        config: LogConfig,
        now_ms: i64,
        was_deleted: impl Fn(&Uuid) -> bool,
    ) -> Result<Log, LogError> {
        let dir = self.partition_dir(topic, index);
        let id_file = dir.join(PARTITION_METADATA_FILE);
        match std::fs::read_to_string(&id_file) {
            Ok(text) if parse_topic_id(&text) == Some(topic_id) => {}
            Ok(text) => match parse_topic_id(&text) {
                Some(old) if was_deleted(&old) => {
                    tracing::info!(dir = %dir.display(), old_topic_id = %old, "removing the log of a deleted topic of the same name");
                    std::fs::remove_dir_all(&dir).map_err(LogError::io(&dir))?;
                }
                other => {
                    return Err(LogError::DirectoryConflict {
                        reason: format!(
                            "it holds topic id {}, the metadata names {topic_id} for {topic}; not touching it (move it aside to use the partition)",
                            other.map_or_else(|| "(unreadable)".to_owned(), |id| id.to_string())
                        ),
                        dir,
                    })
                }
            },
            Err(_) => {}
        }
        std::fs::create_dir_all(&dir).map_err(LogError::io(&dir))?;
        if !id_file.exists() {
            let text = format!("version: 0\ntopic_id: {topic_id}\n");
            crate::storage::replace_file(&FsStorage, &dir, PARTITION_METADATA_FILE, text.as_bytes())
                .map_err(|(path, e)| LogError::io(&path)(e))?;
        }
        Log::open(&dir, config, now_ms)
    }

    /// The high watermark the checkpoint kept for `topic`-`index`, once (at its opening).
    pub fn take_restored_high_watermark(&self, topic: &str, index: i32) -> Option<i64> {
        self.restored_hws.lock().unwrap_or_else(PoisonError::into_inner).remove(&partition_dir_name(topic, index))
    }

    /// Forgets where a deleted partition directory was, so that it no longer counts.
    pub fn forget(&self, topic: &str, index: i32) {
        self.placement().remove(&partition_dir_name(topic, index));
    }

    /// Removes the partition directories of topics a committed record deleted (`was_deleted`;
    /// left by a crash between the deletion and the removal of the files), except those
    /// `hosted` says are open. A directory whose topic the metadata does not know at all is
    /// kept, with a warning.
    pub fn remove_deleted_topics_data(&self, hosted: impl Fn(&str) -> bool, was_deleted: impl Fn(&Uuid) -> bool) {
        let entries = self.log_dirs.iter().filter_map(|d| std::fs::read_dir(d).ok()).flat_map(|e| e.flatten());
        for entry in entries {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if !path.is_dir() || hosted(&name) {
                continue;
            }
            let Ok(text) = std::fs::read_to_string(path.join(PARTITION_METADATA_FILE)) else {
                continue;
            };
            match parse_topic_id(&text) {
                Some(id) if was_deleted(&id) => {
                    tracing::info!(dir = %path.display(), topic_id = %id, "removing the log of a deleted topic");
                    match std::fs::remove_dir_all(&path) {
                        Ok(()) => {
                            self.placement().remove(&name);
                        }
                        Err(e) => {
                            tracing::warn!(dir = %path.display(), error = %e, "cannot remove the log of a deleted topic")
                        }
                    }
                }
                id => tracing::warn!(dir = %path.display(), topic_id = ?id,
                    "keeping a partition directory the metadata does not know (no committed record deleted its topic)"),
            }
        }
    }

    /// Writes every data directory's `replication-offset-checkpoint` with the high watermarks
    /// `(topic, partition, high watermark)` of the partitions it holds (Kafka's
    /// `ReplicaManager.checkpointHighWatermarks`): fsynced, then renamed into place. The
    /// values read at start for partitions not opened yet are kept.
    pub fn checkpoint_high_watermarks(&self, hws: impl IntoIterator<Item = (String, i32, i64)>) {
        let _writing = self.checkpointing.lock().unwrap_or_else(PoisonError::into_inner);
        let mut by_dir: Vec<Checkpoints> = vec![Checkpoints::new(); self.log_dirs.len()];
        {
            let placement = self.placement();
            let restored = self.restored_hws.lock().unwrap_or_else(PoisonError::into_inner);
            for (name, hw) in restored.iter() {
                if let Some(entries) = placement.get(name).and_then(|i| by_dir.get_mut(*i)) {
                    entries.insert(name.clone(), *hw);
                }
            }
            for (topic, index, hw) in hws {
                let name = partition_dir_name(&topic, index);
                if let Some(entries) = placement.get(&name).and_then(|i| by_dir.get_mut(*i)) {
                    entries.insert(name, hw);
                }
            }
        }
        for (dir, entries) in self.log_dirs.iter().zip(&by_dir) {
            if let Err(e) = offset_checkpoint::write(&FsStorage, dir, HW_CHECKPOINT_FILE, entries) {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot write the high watermark checkpoint");
            }
        }
    }
}

/// Reads and removes every data directory's [`CLEAN_SHUTDOWN_FILE`]: the broker epoch they all
/// name, else -1.
fn take_clean_shutdown_epoch(log_dirs: &[PathBuf]) -> i64 {
    let mut epochs = Vec::with_capacity(log_dirs.len());
    for dir in log_dirs {
        let path = dir.join(CLEAN_SHUTDOWN_FILE);
        let epoch = std::fs::read_to_string(&path).ok().and_then(|text| parse_broker_epoch(&text));
        if path.exists() {
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove the clean shutdown file");
            }
        }
        epochs.push(epoch);
    }
    match epochs.first() {
        Some(Some(first)) if epochs.iter().all(|e| *e == Some(*first)) => *first,
        _ => -1,
    }
}

/// The `brokerEpoch` of a clean shutdown file's JSON.
fn parse_broker_epoch(text: &str) -> Option<i64> {
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    value.get("brokerEpoch")?.as_i64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_directory_names() {
        assert!(
            is_partition_dir_name("t-0")
                && is_partition_dir_name("a-b-12")
                && is_partition_dir_name("__consumer_offsets-49")
        );
        for name in [METADATA_DIR, "t", "t-", "-1", "t-x", "lost+found"] {
            assert!(!is_partition_dir_name(name), "{name}");
        }
    }

    #[test]
    fn a_clean_shutdown_is_remembered_once_and_only_when_every_directory_has_it() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let dirs = vec![a.path().to_path_buf(), b.path().to_path_buf()];
        assert_eq!(LogManager::open(dirs.clone()).unwrap().previous_broker_epoch(), -1, "never shut down");
        LogManager::open(dirs.clone()).unwrap().mark_clean_shutdown(42);
        assert_eq!(LogManager::open(dirs.clone()).unwrap().previous_broker_epoch(), 42);
        assert_eq!(
            LogManager::open(dirs.clone()).unwrap().previous_broker_epoch(),
            -1,
            "read once: a crash after a start is unclean"
        );
        LogManager::open(dirs.clone()).unwrap().mark_clean_shutdown(43);
        std::fs::remove_file(b.path().join(CLEAN_SHUTDOWN_FILE)).unwrap();
        assert_eq!(LogManager::open(dirs.clone()).unwrap().previous_broker_epoch(), -1, "one directory without it");
        std::fs::write(a.path().join(CLEAN_SHUTDOWN_FILE), "garbage").unwrap();
        assert_eq!(LogManager::open(dirs).unwrap().previous_broker_epoch(), -1);
    }

    #[test]
    fn a_directory_of_another_topic_is_refused_unless_that_topic_was_deleted() {
        let root = tempfile::tempdir().unwrap();
        let logs = LogManager::open(vec![root.path().to_path_buf()]).unwrap();
        let (old, new) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let now = 0;
        drop(logs.open_log("t", 0, old, LogConfig::default(), now, |_| false).unwrap());
        let e = logs.open_log("t", 0, new, LogConfig::default(), now, |_| false).unwrap_err().to_string();
        assert!(e.contains("holds topic id"), "{e}");
        drop(logs.open_log("t", 0, new, LogConfig::default(), now, |id| *id == old).unwrap());
        let text = std::fs::read_to_string(root.path().join("t-0").join(PARTITION_METADATA_FILE)).unwrap();
        assert_eq!(parse_topic_id(&text), Some(new));
    }
}
