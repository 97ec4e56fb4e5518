//! The partitions this broker hosts, kept in step with the metadata image.
//!
//! `ReplicaManager` is a metadata publisher: each new image creates the logs
//! of new partitions, deletes those of deleted topics, and applies changed
//! topic configs. Handlers look partitions up here.
//!
//! The partitions' directories on disk (placement over `log.dirs`, `partition.metadata`,
//! the high watermark checkpoints) are `strata_log::manager::LogManager`'s: this module never
//! touches the file system itself.

pub mod fetch;
pub mod fetcher;
pub mod isr;
pub mod partition;
pub mod producer_state;
pub mod quota;
pub mod replay;
pub mod replication;
pub mod validate;
pub mod watchers;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use arc_swap::ArcSwap;

use strata_log::manager::{partition_dir_name, LogManager};
use strata_metadata::{ConfigResource, MetadataDelta, MetadataImage, MetadataPublisher};
use uuid::Uuid;

use crate::config::TopicSettings;
use crate::error::BrokerError;
pub use partition::{AppendResult, Partition, ReadBound, ReadResult};
pub use producer_state::Verification;
pub use strata_log::manager::{HW_CHECKPOINT_FILE, METADATA_DIR};

/// Who appends (Kafka's `AppendOrigin`): a client's Produce may not write internal topics,
/// a coordinator may.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOrigin {
    Client,
    Coordinator,
}

/// One partition's records for [`ReplicaManager::append_records`].
#[derive(Debug, Clone)]
pub struct AppendEntry {
    pub topic: String,
    pub index: i32,
    pub records: bytes::Bytes,
    /// KIP-890: what the leader knows of a transactional batch's verification.
    pub verification: Verification,
}

/// Appends `records` to `partition` at once, or off the async workers when the append may
/// fsync (a flush policy or a roll), decompress or recompress.
async fn append_off_worker(
    partition: Arc<Partition>,
    records: bytes::Bytes,
    verification: Verification,
) -> Result<AppendResult, BrokerError> {
    let now = now_ms();
    if !partition.append_may_block(&records, now) {
        partition.append_verified(&records, now, verification)
    } else {
        tokio::task::spawn_blocking(move || partition.append_verified(&records, now, verification))
            .await
            .unwrap_or_else(|e| Err(BrokerError::Storage(format!("append task failed: {e}"))))
    }
}

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
    /// The partitions' directories.
    logs: LogManager,
    broker_defaults: BTreeMap<String, String>,
    image: ArcSwap<MetadataImage>,
    partitions: ArcSwap<PartitionMap>,
    /// Serializes publishers (there is one, the metadata publisher, but a copy-on-write map
    /// must never have two).
    publishing: Mutex<()>,
    /// This broker's `node.id`: it holds the partitions whose replicas name it.
    node_id: i32,
    /// The follower fetchers, once replication is started ([`ReplicaManager::start_replication`]).
    fetchers: OnceLock<fetcher::FetcherManager>,
    /// ISR shrinks and expansions of partitions led here that the controller committed.
    isr_shrinks: std::sync::atomic::AtomicU64,
    isr_expands: std::sync::atomic::AtomicU64,
    /// Wakes the ISR sender ([`isr::run_isr_sender`]) when a leader proposes a change.
    isr_wake: Arc<tokio::sync::Notify>,
    /// KIP-73 replication throttles: what this broker sends as a leader to replicas outside
    /// the ISR, and what it fetches as a follower while outside the ISR. Limits follow the
    /// metadata (see [`quota`]).
    pub leader_quota: Arc<quota::ReplicationQuota>,
    pub follower_quota: Arc<quota::ReplicationQuota>,
    /// How this broker connects to the others (the inter-broker listener's TLS and SASL);
    /// `None`: PLAINTEXT.
    inter_broker: Option<Arc<strata_security::client::ClientSecurity>>,
}

impl ReplicaManager {
    /// A replica manager keeping every partition in the one directory `data_dir`.
    pub fn new(data_dir: PathBuf, broker_defaults: BTreeMap<String, String>) -> Self {
        Self::build(LogManager::single(data_dir), broker_defaults)
    }

    /// A replica manager spreading partitions over `log_dirs` (which must exist), each
    /// partition opened where it is (see [`LogManager::open`]).
    pub fn with_log_dirs(
        log_dirs: Vec<PathBuf>,
        broker_defaults: BTreeMap<String, String>,
    ) -> Result<Self, BrokerError> {
        Ok(Self::build(LogManager::open(log_dirs)?, broker_defaults))
    }

    fn build(logs: LogManager, broker_defaults: BTreeMap<String, String>) -> Self {
        Self {
            logs,
            broker_defaults,
            image: ArcSwap::from_pointee(MetadataImage::empty()),
            partitions: ArcSwap::from_pointee(HashMap::new()),
            publishing: Mutex::new(()),
            node_id: 1,
            fetchers: OnceLock::new(),
            isr_wake: Arc::default(),
            isr_shrinks: Default::default(),
            isr_expands: Default::default(),
            leader_quota: Arc::default(),
            follower_quota: Arc::default(),
            inter_broker: None,
        }
    }

    /// Sets how this broker connects to the others (see [`Self::inter_broker_security`]).
    pub fn with_inter_broker_security(
        mut self,
        security: Option<Arc<strata_security::client::ClientSecurity>>,
    ) -> Self {
        self.inter_broker = security;
        self
    }

    /// The TLS and SASL this broker's connections to other brokers use (followers' fetches,
    /// transaction markers and verifications); `None`: PLAINTEXT.
    pub fn inter_broker_security(&self) -> Option<Arc<strata_security::client::ClientSecurity>> {
        self.inter_broker.clone()
    }

    /// Starts replication on `runtime`: the follower fetchers (`fetch` settings), the task that
    /// sends ISR changes to `controller`, and the ISR shrink check every half
    /// `replica.lag.time.max.ms` (`lag_ms`), all until `shutdown`. Call before the first
    /// metadata is published, so that followers start fetching at once. Without it (tests,
    /// tools) partitions are served as led by this broker only.
    pub fn start_replication(
        self: &Arc<Self>,
        controller: Arc<dyn strata_metadata::channel::ControllerChannel>,
        fetch: fetcher::FetchSettings,
        lag_ms: i64,
        runtime: &tokio::runtime::Handle,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let manager =
            fetcher::FetcherManager::new(self.node_id, fetch, runtime.clone(), Arc::downgrade(self), shutdown.clone());
        if self.fetchers.set(manager).is_err() {
            return; // started already
        }
        self.update_throttle_rates(&self.image());
        runtime.spawn(isr::run_isr_sender(self.clone(), controller, self.isr_wake.clone(), shutdown.clone()));
        let weak = Arc::downgrade(self);
        let every = std::time::Duration::from_millis((lag_ms / 2).max(1) as u64);
        let mut shutdown = shutdown;
        runtime.spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = shutdown.changed() => return,
                }
                let Some(rm) = weak.upgrade() else { return };
                rm.maybe_shrink_isrs(now_ms(), lag_ms);
            }
        });
    }

    /// Proposes ISR shrinks for every partition this broker leads whose followers lag more
    /// than `lag_ms`.
    pub fn maybe_shrink_isrs(&self, now_ms: i64, lag_ms: i64) {
        let mut any = false;
        for p in self.all_partitions() {
            any |= p.maybe_shrink_isr(now_ms, lag_ms);
        }
        if any {
            self.isr_wake.notify_one();
        }
    }

    /// A leader proposed an ISR change: the sender sends it now.
    pub fn isr_change_proposed(&self) {
        self.isr_wake.notify_one();
    }

    /// How many partitions this broker fetches as a follower, from how many leaders.
    pub fn followed(&self) -> (usize, usize) {
        self.fetchers.get().map_or((0, 0), fetcher::FetcherManager::fetched)
    }

    /// Sets this broker's `node.id` (1 unless set): which replicas in the metadata are its own.
    /// This broker's id (`node.id`).
    pub fn node_id(&self) -> i32 {
        self.node_id
    }

    pub fn with_node_id(mut self, node_id: i32) -> Self {
        self.node_id = node_id;
        self
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
            let image = self.image();
            let known = image.partition(topic, index).cloned();
            match known {
                // Another broker holds it: the client's metadata is stale.
                Some(p) if !p.replicas.contains(&self.node_id) => {
                    BrokerError::NotLeaderOrFollower(format!("{topic}-{index} (its leader is broker {})", p.leader))
                }
                Some(_) => BrokerError::Storage(format!(
                    "{topic}-{index} is offline: its log could not be opened (see the broker's log)"
                )),
                None => BrokerError::UnknownTopicOrPartition,
            }
        })
    }

    /// The partition, if this broker leads it (Kafka's `getPartitionOrException` with
    /// `localLogWithEpochOrThrow`): NOT_LEADER_OR_FOLLOWER when another broker leads it or none
    /// does; with `current_leader_epoch` >= 0 (KIP-320: Fetch v9+, ListOffsets v4+,
    /// OffsetForLeaderEpoch v2+), FENCED_LEADER_EPOCH when it is older than the partition's
    /// epoch and UNKNOWN_LEADER_EPOCH when newer.
    pub fn leader_partition(
        &self,
        topic: &str,
        index: i32,
        current_leader_epoch: i32,
    ) -> Result<Arc<Partition>, BrokerError> {
        self.partition_for_read(topic, index, current_leader_epoch, false)
    }

    /// As [`leader_partition`](Self::leader_partition), but with `from_follower` a partition
    /// this broker follows is readable too: a consumer's Fetch v11+ may read from any replica
    /// (KIP-392), up to that replica's high watermark.
    pub fn partition_for_read(
        &self,
        topic: &str,
        index: i32,
        current_leader_epoch: i32,
        from_follower: bool,
    ) -> Result<Arc<Partition>, BrokerError> {
        let partition = self.get(topic, index)?;
        let image = self.image();
        let Some(p) = image.partition(topic, index) else {
            return Err(BrokerError::UnknownTopicOrPartition);
        };
        let name = || format!("{topic}-{index}");
        if current_leader_epoch >= 0 && current_leader_epoch < p.leader_epoch {
            return Err(BrokerError::FencedLeaderEpoch {
                partition: name(),
                requested: current_leader_epoch,
                current: p.leader_epoch,
            });
        }
        if current_leader_epoch > p.leader_epoch {
            return Err(BrokerError::UnknownLeaderEpoch {
                partition: name(),
                requested: current_leader_epoch,
                current: p.leader_epoch,
            });
        }
        let follows = from_follower && p.leader >= 0 && partition.role() == replication::Role::Follower;
        if p.leader != self.node_id && !follows {
            return Err(BrokerError::NotLeaderOrFollower(format!("{} (its leader is broker {})", name(), p.leader)));
        }
        Ok(partition)
    }

    pub fn all_partitions(&self) -> Vec<Arc<Partition>> {
        self.partitions.load().values().flat_map(|parts| parts.values().cloned()).collect()
    }

    pub fn settings_for(&self, image: &MetadataImage, topic: &str) -> TopicSettings {
        TopicSettings::resolve(image.configs(&ConfigResource::Topic(topic.to_string())), &self.broker_defaults)
    }

    /// (shrinks, expansions) of the ISRs of partitions led here that the controller
    /// committed since start (Kafka's IsrShrinksPerSec and IsrExpandsPerSec).
    pub fn isr_changes(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.isr_shrinks.load(Relaxed), self.isr_expands.load(Relaxed))
    }

    /// Counts a committed ISR change: an expansion when `joining`, else a shrink.
    pub(crate) fn count_isr_change(&self, joining: bool) {
        let counter = if joining { &self.isr_expands } else { &self.isr_shrinks };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// What the log cleaner did since start.
    pub fn cleaner_metrics(&self) -> strata_log::cleaner::CleanerMetrics {
        self.logs.cleaner_metrics()
    }

    /// The data directories, in configured order.
    pub fn log_dirs(&self) -> &[PathBuf] {
        self.logs.log_dirs()
    }

    /// Which of [`ReplicaManager::log_dirs`] holds `topic`-`index`, if it is placed here.
    pub fn log_dir_of(&self, topic: &str, index: i32) -> Option<usize> {
        self.logs.log_dir_of(topic, index)
    }

    fn open_partition(
        &self,
        image: &MetadataImage,
        topic: &str,
        topic_id: Uuid,
        index: i32,
    ) -> Result<Arc<Partition>, BrokerError> {
        let settings = self.settings_for(image, topic);
        let log =
            self.logs.open_log(topic, index, topic_id, settings.log.clone(), now_ms(), |id| image.was_deleted(id))?;
        let partition = Partition::new(topic.to_string(), topic_id, index, log, settings)?;
        if let Some(hw) = self.logs.take_restored_high_watermark(topic, index) {
            partition.restore_high_watermark(hw);
        }
        Ok(Arc::new(partition))
    }

    /// Removes the partition directories of topics a committed record deleted (left by a crash
    /// between the deletion and the removal of the files). A directory whose topic the metadata
    /// does not know at all is kept, with a warning: missing metadata never removes data.
    pub fn remove_deleted_topics_data(&self) {
        // Not while a publish creates partition directories.
        let _publishing = self.publishing.lock().unwrap_or_else(PoisonError::into_inner);
        let image = self.image();
        let hosted: std::collections::HashSet<String> = self
            .partitions
            .load()
            .iter()
            .flat_map(|(t, parts)| parts.keys().map(move |p| partition_dir_name(t, *p)))
            .collect();
        self.logs.remove_deleted_topics_data(|name| hosted.contains(name), |id| image.was_deleted(id));
    }

    /// Forgets, in every partition, the idempotent producers idle longer than
    /// `producer.id.expiration.ms` (run every `producer.id.expiration.check.interval.ms`).
    pub fn remove_expired_producers(&self, now_ms: i64) {
        let removed: usize = self.all_partitions().iter().map(|p| p.remove_expired_producers(now_ms)).sum();
        if removed > 0 {
            tracing::debug!(producers = removed, "expired idle producer ids");
        }
    }

    /// Appends each entry's records to its partition as its leader (Kafka's
    /// `ReplicaManager.appendRecords`), results in the order of `entries`:
    /// - NOT_LEADER_OR_FOLLOWER unless this broker leads the partition; from a client
    ///   ([`AppendOrigin::Client`]), INVALID_TOPIC_EXCEPTION for an internal topic;
    /// - acks=all (-1) first checks the ISR against `min.insync.replicas`
    ///   (NOT_ENOUGH_REPLICAS, nothing appended), then, once every entry is appended, waits
    ///   until the high watermark passes each (parked on the partition as Kafka's
    ///   `DelayedProduce`): NOT_ENOUGH_REPLICAS_AFTER_APPEND if the ISR shrank below the
    ///   minimum meanwhile, NOT_LEADER_OR_FOLLOWER if leadership moved, REQUEST_TIMED_OUT after
    ///   `timeout_ms`;
    /// - acks 0 and 1 are answered once appended.
    ///
    /// Appends that may fsync, decompress or recompress run off the async workers.
    pub async fn append_records(
        &self,
        acks: i16,
        timeout_ms: i32,
        origin: AppendOrigin,
        entries: Vec<AppendEntry>,
    ) -> Vec<Result<AppendResult, BrokerError>> {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(timeout_ms.max(0) as u64);
        let image = self.image();
        let mut appended = Vec::with_capacity(entries.len());
        for e in entries {
            let result = match origin {
                AppendOrigin::Client if e.topic == crate::groups::OFFSETS_TOPIC => {
                    Err(BrokerError::InvalidTopic(format!("Cannot append to internal topic {}", e.topic)))
                }
                _ => match self.leader_partition(&e.topic, e.index, -1) {
                    Ok(partition) => {
                        let in_sync = image.partition(&e.topic, e.index).map_or(0, |x| x.isr.len());
                        match partition.check_min_isr(acks, in_sync) {
                            Ok(()) => append_off_worker(partition.clone(), e.records, e.verification)
                                .await
                                .map(|r| (r, partition)),
                            Err(err) => Err(err),
                        }
                    }
                    Err(err) => Err(err),
                },
            };
            appended.push(result);
        }
        let mut out = Vec::with_capacity(appended.len());
        for result in appended {
            out.push(match result {
                Ok((r, partition)) if acks == -1 => {
                    partition.await_committed(&r, deadline, timeout_ms).await.map(|()| r)
                }
                Ok((r, _)) => Ok(r),
                Err(e) => Err(e),
            });
        }
        out
    }

    /// Writes every data directory's `replication-offset-checkpoint` ([`HW_CHECKPOINT_FILE`])
    /// with the high watermarks of the partitions it holds (Kafka's
    /// `ReplicaManager.checkpointHighWatermarks`). A restarted replica starts from them instead
    /// of its log start. Waits on the disk.
    pub fn checkpoint_high_watermarks(&self) {
        // A partition without a registration applied yet has its log end as high watermark,
        // which may hold uncommitted records: it is left out (its checkpointed value stays).
        self.logs.checkpoint_high_watermarks(
            self.all_partitions()
                .iter()
                .filter(|p| p.role() != replication::Role::Unassigned)
                .map(|p| (p.topic.clone(), p.index, p.high_watermark())),
        );
    }

    /// Starts the log manager's background work over this broker's partitions (retention,
    /// time-based flush, the cleaner; see [`LogManager::startup`]) until [`Self::close_all`].
    pub fn start_log_maintenance(
        self: &Arc<Self>,
        config: strata_log::maintenance::MaintenanceConfig,
    ) -> Result<(), BrokerError> {
        let me: Arc<dyn strata_log::maintenance::ManagedLogs> = self.clone();
        Ok(self.logs.startup(Arc::downgrade(&me), config)?)
    }

    /// The broker epoch of this broker's last clean shutdown, -1 after a crash (see
    /// [`LogManager::previous_broker_epoch`]).
    pub fn previous_broker_epoch(&self) -> i64 {
        self.logs.previous_broker_epoch()
    }

    /// Flushes and closes every log (graceful shutdown), several at a time: closing is mostly
    /// waiting for fsyncs. The log manager's background work stops first (the cleaners after
    /// the group of segments each is writing), then the high watermarks are checkpointed.
    /// When every log closed, the shutdown is recorded as clean at `broker_epoch` (if given),
    /// so the next registration does not count as an unclean shutdown (KIP-966).
    pub fn close_all(&self, broker_epoch: Option<i64>) {
        self.logs.shutdown();
        self.checkpoint_high_watermarks();
        let partitions = self.all_partitions();
        let failed = parallel_map(&partitions, |p| match p.close() {
            Ok(()) => false,
            Err(e) => {
                tracing::error!(topic = %p.topic, partition = p.index, error = %e, "closing log failed");
                true
            }
        });
        if let (Some(epoch), false) = (broker_epoch, failed.contains(&true)) {
            self.logs.mark_clean_shutdown(epoch);
        }
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

/// Every partition this broker holds, for the log manager's background work (retention,
/// flush, the cleaner, which skips logs that are not compacted).
impl strata_log::maintenance::ManagedLogs for ReplicaManager {
    fn managed_logs(&self) -> Vec<Arc<dyn strata_log::maintenance::ManagedLog>> {
        self.all_partitions().into_iter().map(|p| p as Arc<dyn strata_log::maintenance::ManagedLog>).collect()
    }
}

impl ReplicaManager {
    /// Sets the replication throttle limits from `leader.replication.throttled.rate` and
    /// `follower.replication.throttled.rate`: this broker's dynamic value, else the cluster
    /// default, else the config file's, else none.
    fn update_throttle_rates(&self, image: &MetadataImage) {
        for (key, quota) in [
            ("leader.replication.throttled.rate", &self.leader_quota),
            ("follower.replication.throttled.rate", &self.follower_quota),
        ] {
            let rate = [ConfigResource::Broker(self.node_id), ConfigResource::Broker(-1)]
                .iter()
                .find_map(|r| image.configs(r).and_then(|c| c.get(key)))
                .or_else(|| self.broker_defaults.get(key))
                .and_then(|v| v.trim().parse::<i64>().ok())
                .filter(|r| *r != i64::MAX) // Kafka's "no limit"
                .map(|r| u64::try_from(r).unwrap_or(0));
            if quota.set_limit(rate) {
                tracing::info!(config = key, bytes_per_second = ?rate, "replication throttle set");
            }
        }
    }
}

impl MetadataPublisher for ReplicaManager {
    fn publish(&self, image: &Arc<MetadataImage>, delta: &MetadataDelta) {
        let _publishing = self.publishing.lock().unwrap_or_else(PoisonError::into_inner);
        // What the delta means for this broker's replicas (Kafka's localChanges): replicas it
        // no longer holds are deleted, replicas it newly holds are opened.
        let local = delta.local_changes(self.node_id);
        if !local.deletes.is_empty() {
            let mut map = PartitionMap::clone(&self.partitions.load());
            let mut removed = Vec::new();
            for (name, id, index) in &local.deletes {
                let Some(parts) = map.get_mut(name) else { continue };
                if parts.get(index).is_some_and(|p| p.topic_id == *id) {
                    removed.extend(parts.remove(index));
                }
                if parts.is_empty() {
                    map.remove(name);
                }
            }
            self.partitions.store(Arc::new(map));
            for p in removed {
                if let Some(fetchers) = self.fetchers.get() {
                    fetchers.unfollow(&p.topic, p.index);
                }
                match p.delete() {
                    Ok(()) => self.logs.forget(&p.topic, p.index),
                    Err(e) => {
                        tracing::error!(topic = %p.topic, partition = p.index, error = %e, "cannot delete the log of a removed replica")
                    }
                }
            }
        }
        let new_replicas: Vec<(String, Uuid, i32)> = local
            .leaders
            .iter()
            .chain(&local.followers)
            .filter(|l| l.is_new)
            .map(|l| (l.topic.clone(), l.topic_id, l.partition.partition))
            .collect();
        let opened = parallel_map(&new_replicas, |(name, id, index)| {
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
        // Leadership (Kafka's makeLeader / makeFollower): a partition this broker now leads
        // starts its leader epoch at its log end (durably, off the async workers: this runs on
        // the metadata loader) and stamps it on what it appends, and stops fetching; one it
        // follows stops stamping and fetches from its leader (after truncating, in a new epoch).
        let partitions = self.partitions.load();
        let find = |l: &strata_metadata::image::LocalPartition| {
            partitions.get(&l.topic).and_then(|parts| parts.get(&l.partition.partition)).cloned().map(|p| {
                let a = &l.partition;
                let assignment = replication::Assignment {
                    leader: a.leader,
                    leader_epoch: a.leader_epoch,
                    partition_epoch: a.partition_epoch,
                    replicas: a.replicas.clone(),
                    isr: a.isr.clone(),
                };
                (p, assignment)
            })
        };
        let changed: Vec<(Arc<Partition>, replication::Assignment)> =
            local.leaders.iter().chain(&local.followers).filter_map(find).collect();
        let node_id = self.node_id;
        for (p, a, result) in parallel_map(&changed, |(p, a)| (p, a, p.apply_assignment(node_id, a.clone(), now_ms())))
        {
            if let Err(e) = result {
                tracing::error!(topic = %p.topic, partition = p.index, error = %e, "cannot apply the partition's new registration");
                continue;
            }
            if let Some(fetchers) = self.fetchers.get() {
                if a.leader != node_id && a.leader >= 0 {
                    fetchers.follow(p.clone(), a.leader, a.leader_epoch);
                } else {
                    fetchers.unfollow(&p.topic, p.index);
                }
            }
        }
        for resource in &delta.changed_configs {
            match resource {
                ConfigResource::Topic(name) if image.topic(name).is_some() => {
                    let settings = self.settings_for(image, name);
                    for p in self.all_partitions().into_iter().filter(|p| &p.topic == name) {
                        p.update_settings(settings.clone());
                    }
                }
                ConfigResource::Broker(id) if *id == self.node_id || *id == -1 => self.update_throttle_rates(image),
                _ => {}
            }
        }
        // Last: a request that finds a partition in the image finds its log open (a reader
        // polling the image for a new topic, as the group coordinator does, must not see it
        // before its partitions exist here).
        self.image.store(image.clone());
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::path::Path;
    use strata_metadata::MetadataRecord;

    /// Publishes topics (name, partitions) created on one broker, returning the image.
    fn create(rm: &ReplicaManager, image: &MetadataImage, topics: &[(&str, i32)]) -> Arc<MetadataImage> {
        let mut records = Vec::new();
        for (name, partitions) in topics {
            let topic_id = Uuid::new_v4();
            records.push(MetadataRecord::TopicCreated { name: name.to_string(), topic_id });
            for partition in 0..*partitions {
                records.push(MetadataRecord::PartitionCreated {
                    topic_id,
                    partition,
                    replicas: vec![1],
                    leader: 1,
                    leader_epoch: 0,
                });
            }
        }
        let (next, delta) = image.apply(&records).unwrap();
        let next = Arc::new(next);
        rm.publish(&next, &delta);
        next
    }

    fn held(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// A broker opens only its own replicas, answers NOT_LEADER_OR_FOLLOWER for partitions
    /// another broker holds, and deletes a replica that moved away (local changes).
    #[test]
    fn only_local_replicas_are_opened_and_others_are_not_led_here() {
        let root = tempfile::tempdir().unwrap();
        let rm =
            ReplicaManager::with_log_dirs(vec![root.path().to_path_buf()], BTreeMap::new()).unwrap().with_node_id(1);
        let id = Uuid::new_v4();
        let (image, delta) = MetadataImage::empty()
            .apply(&[
                MetadataRecord::TopicCreated { name: "t".into(), topic_id: id },
                MetadataRecord::PartitionCreated {
                    topic_id: id,
                    partition: 0,
                    replicas: vec![1],
                    leader: 1,
                    leader_epoch: 0,
                },
                MetadataRecord::PartitionCreated {
                    topic_id: id,
                    partition: 1,
                    replicas: vec![2],
                    leader: 2,
                    leader_epoch: 0,
                },
            ])
            .unwrap();
        rm.publish(&Arc::new(image.clone()), &delta);
        assert!(rm.get("t", 0).is_ok());
        assert!(matches!(rm.get("t", 1), Err(BrokerError::NotLeaderOrFollower(_))));
        assert!(matches!(rm.get("t", 2), Err(BrokerError::UnknownTopicOrPartition)));
        assert_eq!(held(root.path()), vec!["t-0".to_string()]);
        // Partition 0 moves to broker 2: its replica here goes.
        let (image, delta) = image
            .apply(&[MetadataRecord::PartitionChange {
                topic_id: id,
                partition: 0,
                leader: Some(2),
                isr: Some(vec![2]),
                replicas: Some(vec![2]),
                reassignment: None,
                elr: None,
                last_known_elr: None,
            }])
            .unwrap();
        rm.publish(&Arc::new(image), &delta);
        assert!(matches!(rm.get("t", 0), Err(BrokerError::NotLeaderOrFollower(_))));
        assert!(held(root.path()).is_empty());
    }

    #[test]
    fn partitions_spread_over_the_log_dirs_and_are_found_where_they_are() {
        let root = tempfile::tempdir().unwrap();
        let dirs: Vec<PathBuf> = ["a", "b", "c"].iter().map(|d| root.path().join(d)).collect();
        for d in &dirs {
            std::fs::create_dir(d).unwrap();
        }
        let rm = ReplicaManager::with_log_dirs(dirs.clone(), BTreeMap::new()).unwrap();
        let image = create(&rm, &MetadataImage::empty(), &[("t", 6)]);
        // Six new partitions over three empty directories: two each.
        let counts: Vec<usize> = dirs.iter().map(|d| held(d).len()).collect();
        assert_eq!(counts, vec![2, 2, 2]);
        // A partition moved to another directory while the broker is down is found there.
        let moved = dirs.iter().find(|d| held(d).contains(&"t-0".to_string())).unwrap().clone();
        let target = dirs.iter().find(|d| **d != moved).unwrap().clone();
        rm.close_all(None);
        drop(rm);
        std::fs::rename(moved.join("t-0"), target.join("t-0")).unwrap();
        let rm = ReplicaManager::with_log_dirs(dirs.clone(), BTreeMap::new()).unwrap();
        let (replayed, delta) = MetadataImage::empty().apply(&image_records(&image)).unwrap();
        rm.publish(&Arc::new(replayed), &delta);
        assert_eq!(rm.all_partitions().len(), 6);
        assert!(held(&target).contains(&"t-0".to_string()));
        assert!(!held(&moved).contains(&"t-0".to_string()), "not created again in its old directory");
        // A new topic fills the directory holding the fewest partitions first.
        let _ = create(&rm, &rm.image(), &[("u", 1)]);
        assert!(held(&moved).contains(&"u-0".to_string()));
    }

    /// Records that rebuild `image`'s topics (a metadata replay at start).
    fn image_records(image: &MetadataImage) -> Vec<MetadataRecord> {
        let mut records = Vec::new();
        for topic in image.topics() {
            records.push(MetadataRecord::TopicCreated { name: topic.name.clone(), topic_id: topic.id });
            for partition in 0..topic.partitions.len() as i32 {
                records.push(MetadataRecord::PartitionCreated {
                    topic_id: topic.id,
                    partition,
                    replicas: vec![1],
                    leader: 1,
                    leader_epoch: 0,
                });
            }
        }
        records
    }

    /// The high watermarks go to each data directory's replication-offset-checkpoint and come
    /// back when a new replica manager opens the directory.
    #[test]
    fn high_watermarks_are_checkpointed_per_data_directory() {
        let root = tempfile::tempdir().unwrap();
        let rm =
            ReplicaManager::with_log_dirs(vec![root.path().to_path_buf()], BTreeMap::new()).unwrap().with_node_id(1);
        let _ = create(&rm, &MetadataImage::empty(), &[("t", 2)]);
        rm.checkpoint_high_watermarks();
        let read =
            strata_log::offset_checkpoint::read(&strata_log::storage::FsStorage, root.path(), HW_CHECKPOINT_FILE, "");
        assert_eq!(read.into_iter().collect::<Vec<_>>(), vec![("t-0".to_string(), 0), ("t-1".to_string(), 0)]);
        rm.close_all(None);
        let again = ReplicaManager::with_log_dirs(vec![root.path().to_path_buf()], BTreeMap::new()).unwrap();
        assert_eq!(again.logs.take_restored_high_watermark("t", 1), Some(0));
        assert_eq!(again.logs.take_restored_high_watermark("t", 1), None, "taken once");
    }

    #[test]
    fn a_partition_in_two_log_dirs_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let dirs: Vec<PathBuf> = ["a", "b"].iter().map(|d| root.path().join(d)).collect();
        for d in &dirs {
            std::fs::create_dir_all(d.join("t-0")).unwrap();
        }
        std::fs::create_dir_all(dirs[0].join(METADATA_DIR)).unwrap();
        std::fs::create_dir_all(dirs[1].join(METADATA_DIR)).unwrap();
        let e = ReplicaManager::with_log_dirs(dirs.clone(), BTreeMap::new()).err().unwrap().to_string();
        assert!(e.contains("t-0 is in two data directories"), "{e}");
        std::fs::remove_dir(dirs[1].join("t-0")).unwrap();
        // The metadata log's directory is not a partition's.
        ReplicaManager::with_log_dirs(dirs, BTreeMap::new()).unwrap();
    }
}
