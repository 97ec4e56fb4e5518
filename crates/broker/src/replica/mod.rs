//! The partitions this broker hosts, kept in step with the metadata image.
//!
//! `ReplicaManager` is a metadata publisher: each new image creates the logs
//! of new partitions, deletes those of deleted topics, and applies changed
//! topic configs. Handlers look partitions up here.
//!
//! On disk each partition is a directory `<topic>-<partition>` under the data
//! directory holding the log's segments and a `partition.metadata` file with
//! the topic id, so that a directory left by a deleted topic of the same name
//! is never mistaken for the new topic's.

pub mod partition;
pub mod producer_state;
pub mod validate;
pub mod watchers;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;

use strata_log::Log;
use strata_metadata::{ConfigResource, MetadataDelta, MetadataImage, MetadataPublisher};
use uuid::Uuid;

use crate::config::TopicSettings;
use crate::error::BrokerError;
pub use partition::{AppendResult, Partition, ReadResult};

/// Directory of the local metadata log inside the data directory.
pub const METADATA_DIR: &str = "__cluster_metadata-0";
const PARTITION_METADATA_FILE: &str = "partition.metadata";

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Hosted partitions by topic name, then partition number.
type PartitionMap = HashMap<String, HashMap<i32, Arc<Partition>>>;

/// All hosted partitions and the current metadata image.
///
/// Both are read on every request and change only when metadata is published, so they are
/// immutable snapshots swapped atomically (`ArcSwap`): readers take no lock and never wait for
/// a publish, which builds a new map and swaps it in.
pub struct ReplicaManager {
    data_dir: PathBuf,
    broker_defaults: BTreeMap<String, String>,
    image: ArcSwap<MetadataImage>,
    partitions: ArcSwap<PartitionMap>,
    /// Serializes publishers (there is one, the metadata publisher, but a copy-on-write map
    /// must never have two).
    publishing: Mutex<()>,
}

impl ReplicaManager {
    pub fn new(data_dir: PathBuf, broker_defaults: BTreeMap<String, String>) -> Self {
        Self {
            data_dir,
            broker_defaults,
            image: ArcSwap::from_pointee(MetadataImage::empty()),
            partitions: ArcSwap::from_pointee(HashMap::new()),
            publishing: Mutex::new(()),
        }
    }

    /// The latest published metadata image.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.image.load_full()
    }

    pub fn broker_defaults(&self) -> &BTreeMap<String, String> {
        &self.broker_defaults
    }

    pub fn partition(&self, topic: &str, index: i32) -> Option<Arc<Partition>> {
        self.partitions.load().get(topic).and_then(|parts| parts.get(&index)).cloned()
    }

    /// Looks a partition up by topic name: UNKNOWN_TOPIC_OR_PARTITION if the metadata has no
    /// such partition, KAFKA_STORAGE_ERROR if it has but its log could not be opened (an I/O
    /// error at start: the partition is offline, as in Kafka, until the disk is fixed and the
    /// broker restarted).
    pub fn get(&self, topic: &str, index: i32) -> Result<Arc<Partition>, BrokerError> {
        self.partition(topic, index).ok_or_else(|| {
            let known =
                self.image().topic(topic).is_some_and(|t| usize::try_from(index).is_ok_and(|i| i < t.partitions.len()));
            if known {
                BrokerError::Storage(format!(
                    "{topic}-{index} is offline: its log could not be opened (see the broker's log)"
                ))
            } else {
                BrokerError::UnknownTopicOrPartition
            }
        })
    }

    pub fn all_partitions(&self) -> Vec<Arc<Partition>> {
        self.partitions.load().values().flat_map(|parts| parts.values().cloned()).collect()
    }

    pub fn settings_for(&self, image: &MetadataImage, topic: &str) -> TopicSettings {
        TopicSettings::resolve(image.configs(&ConfigResource::Topic(topic.to_string())), &self.broker_defaults)
    }

    fn partition_dir(&self, topic: &str, index: i32) -> PathBuf {
        self.data_dir.join(format!("{topic}-{index}"))
    }

    fn open_partition(
        &self,
        image: &MetadataImage,
        topic: &str,
        topic_id: Uuid,
        index: i32,
    ) -> Result<Arc<Partition>, BrokerError> {
        let dir = self.partition_dir(topic, index);
        let id_file = dir.join(PARTITION_METADATA_FILE);
        match std::fs::read_to_string(&id_file) {
            Ok(text) if parse_topic_id(&text) == Some(topic_id) => {}
            // Only a committed delete removes data: the directory of a deleted topic of the
            // same name goes, one whose topic the metadata does not know stays untouched.
            Ok(text) => match parse_topic_id(&text) {
                Some(old) if image.was_deleted(&old) => {
                    tracing::info!(dir = %dir.display(), old_topic_id = %old, "removing the log of a deleted topic of the same name");
                    remove_dir(&dir)?;
                }
                other => {
                    return Err(BrokerError::Storage(format!(
                        "{} holds topic id {}, the metadata names {topic_id} for {topic}; not touching it (move it aside to use the partition)",
                        dir.display(),
                        other.map_or_else(|| "(unreadable)".to_owned(), |id| id.to_string())
                    )))
                }
            },
            Err(_) if dir.exists() => {
                // A directory without its id file predates it being written: a
                // crash right after creating the directory. Nothing in it was
                // ever acknowledged under another topic id, so keep it.
            }
            Err(_) => {}
        }
        std::fs::create_dir_all(&dir).map_err(|e| BrokerError::Storage(format!("creating {}: {e}", dir.display())))?;
        if !id_file.exists() {
            write_synced(&id_file, format!("version: 0\ntopic_id: {topic_id}\n").as_bytes())?;
        }
        let settings = self.settings_for(image, topic);
        let now = now_ms();
        let log = Log::open(&dir, settings.log.clone(), now)?;
        Ok(Arc::new(Partition::new(topic.to_string(), topic_id, index, log, settings)?))
    }

    /// Removes the partition directories of topics a committed record deleted (left by a crash
    /// between the deletion and the removal of the files). A directory whose topic the metadata
    /// does not know at all is kept, with a warning: missing metadata never removes data.
    pub fn remove_deleted_topics_data(&self) {
        let Ok(entries) = std::fs::read_dir(&self.data_dir) else {
            return;
        };
        let image = self.image();
        let hosted: Vec<PathBuf> = self
            .partitions
            .load()
            .iter()
            .flat_map(|(t, parts)| parts.keys().map(|p| self.partition_dir(t, *p)))
            .collect();
        for entry in entries.flatten() {
            let path = entry.path();
            if !path.is_dir() || hosted.contains(&path) {
                continue;
            }
            let Ok(text) = std::fs::read_to_string(path.join(PARTITION_METADATA_FILE)) else {
                continue;
            };
            match parse_topic_id(&text) {
                Some(id) if image.was_deleted(&id) => {
                    tracing::info!(dir = %path.display(), topic_id = %id, "removing the log of a deleted topic");
                    if let Err(e) = remove_dir(&path) {
                        tracing::warn!(error = %e, "cannot remove the log of a deleted topic");
                    }
                }
                id => tracing::warn!(dir = %path.display(), topic_id = ?id,
                    "keeping a partition directory the metadata does not know (no committed record deleted its topic)"),
            }
        }
    }

    /// Enforces retention on every partition.
    pub fn enforce_retention(&self, now_ms: i64) {
        for p in self.all_partitions() {
            match p.with_log(|log| log.enforce_retention(now_ms).map_err(BrokerError::from)) {
                Ok(0) | Err(BrokerError::ShuttingDown) => {}
                Ok(n) => {
                    tracing::info!(topic = %p.topic, partition = p.index, segments = n, "retention deleted segments")
                }
                Err(e) => {
                    tracing::error!(topic = %p.topic, partition = p.index, error = %e, "retention failed")
                }
            }
        }
    }

    /// Forgets, in every partition, the idempotent producers idle longer than
    /// `producer.id.expiration.ms` (run every `producer.id.expiration.check.interval.ms`).
    pub fn remove_expired_producers(&self, now_ms: i64) {
        let removed: usize = self.all_partitions().iter().map(|p| p.remove_expired_producers(now_ms)).sum();
        if removed > 0 {
            tracing::debug!(producers = removed, "expired idle producer ids");
        }
    }

    /// Applies the time-based flush policy (`flush.ms`) to every partition.
    pub fn flush_due(&self, now_ms: i64) {
        for p in self.all_partitions() {
            if let Err(e) = p.with_log(|log| log.maybe_flush(now_ms).map_err(BrokerError::from)) {
                if !matches!(e, BrokerError::ShuttingDown) {
                    tracing::error!(topic = %p.topic, partition = p.index, error = %e, "flush failed");
                }
            }
        }
    }

    /// Flushes and closes every log (graceful shutdown), several at a time: closing is mostly
    /// waiting for fsyncs.
    pub fn close_all(&self) {
        let partitions = self.all_partitions();
        parallel_map(&partitions, |p| {
            if let Err(e) = p.close() {
                tracing::error!(topic = %p.topic, partition = p.index, error = %e, "closing log failed");
            }
        });
    }
}

/// Threads for opening and closing logs: enough to keep the disk's queue full while each waits
/// for its fsyncs, few enough to cost nothing.
const LOG_IO_THREADS: usize = 8;

/// `items.iter().map(f)` on up to [`LOG_IO_THREADS`] threads, results in the order of `items`.
fn parallel_map<'a, T: Sync, R: Send>(items: &'a [T], f: impl Fn(&'a T) -> R + Sync) -> Vec<R> {
    let threads = LOG_IO_THREADS.min(items.len());
    if threads <= 1 {
        return items.iter().map(f).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut results: Vec<(usize, R)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(item) = items.get(i) else { break };
                        done.push((i, f(item)));
                    }
                    done
                })
            })
            .collect();
        // A worker only panics if `f` does; that panic is re-raised here, as in the serial case.
        workers.into_iter().flat_map(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p))).collect()
    });
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

fn parse_topic_id(text: &str) -> Option<Uuid> {
    text.lines().find_map(|l| l.strip_prefix("topic_id:")).and_then(|v| Uuid::parse_str(v.trim()).ok())
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), BrokerError> {
    use std::io::Write;
    let err = |e: std::io::Error| BrokerError::Storage(format!("writing {}: {e}", path.display()));
    let mut f = std::fs::File::create(path).map_err(err)?;
    f.write_all(bytes).map_err(err)?;
    f.sync_all().map_err(err)
}

fn remove_dir(dir: &Path) -> Result<(), BrokerError> {
    std::fs::remove_dir_all(dir).map_err(|e| BrokerError::Storage(format!("removing {}: {e}", dir.display())))
}

impl MetadataPublisher for ReplicaManager {
    fn publish(&self, image: &Arc<MetadataImage>, delta: &MetadataDelta) {
        let _publishing = self.publishing.lock().unwrap_or_else(PoisonError::into_inner);
        self.image.store(image.clone());
        for (name, id) in &delta.deleted_topics {
            let mut map = PartitionMap::clone(&self.partitions.load());
            let removed = map.remove(name).unwrap_or_default();
            self.partitions.store(Arc::new(map));
            for p in removed.into_values().filter(|p| p.topic_id == *id) {
                if let Err(e) = p.delete() {
                    tracing::error!(topic = %name, partition = p.index, error = %e, "cannot delete the log of a deleted topic");
                }
            }
        }
        // Opening a log is mostly waiting for the disk (fsyncs, recovery reads), so many are
        // opened at once: at start every partition is "created" by the metadata replay.
        let opened = parallel_map(&delta.created_partitions, |(name, id, index)| {
            (name, *index, self.open_partition(image, name, *id, *index))
        });
        if !opened.is_empty() {
            let mut map = PartitionMap::clone(&self.partitions.load());
            for (name, index, result) in opened {
                match result {
                    Ok(p) => {
                        map.entry(name.clone()).or_default().insert(index, p);
                    }
                    Err(e) => {
                        tracing::error!(topic = %name, partition = index, error = %e, "cannot open partition log")
                    }
                }
            }
            self.partitions.store(Arc::new(map));
        }
        for resource in &delta.changed_configs {
            if let ConfigResource::Topic(name) = resource {
                if image.topic(name).is_some() {
                    let settings = self.settings_for(image, name);
                    for p in self.all_partitions().into_iter().filter(|p| &p.topic == name) {
                        p.update_settings(settings.clone());
                    }
                }
            }
        }
    }
}
