//! The driver of the transaction coordinator: one `strata_txn` shard per
//! `__transaction_state` partition this broker leads, its records made durable in that
//! partition before any answer they justify is sent (docs/design/transaction-coordinator.md).
//!
//! - **Topic**: `__transaction_state` is created at the first transactional request
//!   (FindCoordinator or InitProducerId with a transactional id), as Kafka does; until it
//!   exists and has a leader, those requests answer COORDINATOR_NOT_AVAILABLE.
//! - **Load**: a shard exists exactly while this broker leads its partition; its coordinator
//!   epoch is the partition's leader epoch. When the broker comes to lead one, the shard
//!   replays the partition (requests answer COORDINATOR_LOAD_IN_PROGRESS meanwhile), then
//!   resends the markers of decided transactions once its log is committed.
//! - **Requests**: the handler locks the shard, calls it, appends the record it returns (still
//!   locked, so records reach the log in the order the shard made them), unlocks, waits until
//!   the ISR has the record, then completes the transition and answers.
//! - **Markers**: see [`markers`].
//! - **Time**: a task ticks the shards (timed-out transactions, expired ids).

pub mod markers;
pub mod verify;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use strata_metadata::channel::{ControllerChannel, CreateTopicSpec};
use strata_metadata::{MetadataDelta, MetadataImage, MetadataPublisher};
use strata_protocol::kafka_protocol::records::Compression;
use strata_protocol::records::encode_key_values;
use strata_protocol::ResponseError;
use strata_txn::{
    Append, AppendId, Completed, Identity, MarkerWork, Step, TxnConfig, TxnCoordinatorShard, TxnError, TxnRecord,
};

use crate::config::BrokerConfig;
use crate::groups::GroupCoordinator;
use crate::producer_ids::ProducerIdManager;
use crate::replica::{now_ms, AppendResult, Partition, ReplicaManager};
use crate::BrokerError;

/// The internal topic holding the state of transactional ids.
pub const TRANSACTION_STATE_TOPIC: &str = "__transaction_state";

/// Reads per load step while replaying a partition (Kafka's
/// `transaction.state.log.load.buffer.size`).
const LOAD_READ_BYTES: usize = 5 * 1024 * 1024;

/// How long a record of the coordinator may wait for the ISR before the request answers
/// COORDINATOR_NOT_AVAILABLE (the client retries; the record stays in the shard's log and
/// takes effect only if a later load finds it).
const APPEND_TIMEOUT_MS: i32 = 10_000;

/// How long a request that finds its transactional id busy waits for it (see
/// [`TxnCoordinator::run`]).
const CONCURRENT_WAIT: Duration = Duration::from_millis(100);

/// The coordinator's settings from the broker config.
pub fn txn_config(c: &BrokerConfig) -> TxnConfig {
    TxnConfig {
        max_timeout_ms: c.number("transaction.max.timeout.ms") as i32,
        id_expiration_ms: c.number("transactional.id.expiration.ms"),
        abort_interval_ms: c.number("transaction.abort.timed.out.transaction.cleanup.interval.ms"),
        expire_interval_ms: c.number("transaction.remove.expired.transaction.cleanup.interval.ms"),
        ..TxnConfig::default()
    }
}

/// One loaded (or loading) shard: the partition this broker leads, at one leader epoch.
pub struct Slot {
    pub partition: i32,
    /// The leader epoch of the partition when this broker came to lead it.
    pub coordinator_epoch: i32,
    shard: Mutex<TxnCoordinatorShard>,
    loaded: AtomicBool,
    /// Woken whenever a transition completes (a record committed, or failed), for requests
    /// waiting out CONCURRENT_TRANSACTIONS.
    settled: tokio::sync::Notify,
}

impl Slot {
    fn lock(&self) -> std::sync::MutexGuard<'_, TxnCoordinatorShard> {
        self.shard.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The transaction coordinator of this broker. See the module docs.
pub struct TxnCoordinator {
    config: TxnConfig,
    topic_spec: CreateTopicSpec,
    replicas: Arc<ReplicaManager>,
    controller: Arc<dyn ControllerChannel>,
    pub(crate) producer_ids: Arc<ProducerIdManager>,
    /// Markers for `__consumer_offsets` go through the group coordinator.
    pub(crate) groups: Arc<GroupCoordinator>,
    slots: Mutex<HashMap<i32, Arc<Slot>>>,
    creating: AtomicBool,
    pub(crate) markers: markers::MarkerClients,
    pub(crate) verifiers: markers::MarkerClients,
    runtime: tokio::runtime::Handle,
    /// This coordinator, for the metadata publisher (which gets `&self`).
    this: std::sync::Weak<TxnCoordinator>,
}

impl TxnCoordinator {
    /// The coordinator, with the shards of the partitions this broker leads already loading.
    /// Call from within the runtime.
    pub fn start(
        config: &BrokerConfig,
        controller: Arc<dyn ControllerChannel>,
        replicas: Arc<ReplicaManager>,
        groups: Arc<GroupCoordinator>,
        producer_ids: Arc<ProducerIdManager>,
    ) -> Arc<Self> {
        let rf = config.transaction_state_replication_factor();
        let min_isr = config.number("transaction.state.log.min.isr").min(i64::from(rf)).max(1);
        let topic_spec = CreateTopicSpec {
            name: TRANSACTION_STATE_TOPIC.to_string(),
            num_partitions: config.number("transaction.state.log.num.partitions") as i32,
            replication_factor: rf,
            assignments: Vec::new(),
            configs: [
                ("cleanup.policy".to_string(), "compact".to_string()),
                ("compression.type".to_string(), "uncompressed".to_string()),
                ("unclean.leader.election.enable".to_string(), "false".to_string()),
                ("min.insync.replicas".to_string(), min_isr.to_string()),
                ("segment.bytes".to_string(), config.number("transaction.state.log.segment.bytes").to_string()),
            ]
            .into_iter()
            .collect(),
        };
        let coordinator = Arc::new_cyclic(|this| Self {
            config: txn_config(config),
            topic_spec,
            markers: markers::MarkerClients::new(replicas.node_id(), "txn-markers", replicas.inter_broker_security()),
            verifiers: markers::MarkerClients::new(replicas.node_id(), "txn-verify", replicas.inter_broker_security()),
            replicas,
            controller,
            producer_ids,
            groups,
            slots: Mutex::new(HashMap::new()),
            creating: AtomicBool::new(false),
            runtime: tokio::runtime::Handle::current(),
            this: this.clone(),
        });
        let image = coordinator.replicas.image();
        if let Some(topic) = image.topic(TRANSACTION_STATE_TOPIC) {
            for p in &topic.partitions {
                if p.leader == coordinator.replicas.node_id() {
                    coordinator.elect(p.partition, p.leader_epoch);
                }
            }
        }
        coordinator
    }

    /// The partition of `__transaction_state` that coordinates `transactional_id` (Kafka's
    /// `partitionFor`), and the number of partitions; `None` while the topic does not exist.
    pub fn partition_for(&self, image: &MetadataImage, transactional_id: &str) -> Option<i32> {
        let n = image.topic(TRANSACTION_STATE_TOPIC)?.partitions.len() as i32;
        Some(strata_group::partition_for(transactional_id, n))
    }

    /// Starts creating `__transaction_state` if it does not exist (one attempt at a time).
    pub fn ensure_topic(self: &Arc<Self>) {
        if self.replicas.image().topic(TRANSACTION_STATE_TOPIC).is_some() || self.creating.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let this = self.clone();
        self.runtime.spawn(async move {
            for r in this.controller.create_topics(vec![this.topic_spec.clone()], false).await {
                match r.result {
                    Ok(_) => tracing::info!("{TRANSACTION_STATE_TOPIC} created"),
                    Err(e) if e.error == ResponseError::TopicAlreadyExists => {}
                    Err(e) => tracing::warn!(error = %e.message,
                        "cannot create {TRANSACTION_STATE_TOPIC} yet (transaction.state.log.replication.factor brokers needed)"),
                }
            }
            this.creating.store(false, Ordering::Release);
        });
    }

    /// The shard coordinating `transactional_id`: NOT_COORDINATOR if another broker leads its
    /// partition, COORDINATOR_LOAD_IN_PROGRESS while it loads, COORDINATOR_NOT_AVAILABLE while
    /// the topic does not exist (its creation is started).
    pub fn lookup(self: &Arc<Self>, transactional_id: &str) -> Result<Arc<Slot>, ResponseError> {
        let image = self.replicas.image();
        let Some(partition) = self.partition_for(&image, transactional_id) else {
            self.ensure_topic();
            return Err(ResponseError::CoordinatorNotAvailable);
        };
        let leader = image
            .topic(TRANSACTION_STATE_TOPIC)
            .and_then(|t| t.partitions.get(partition as usize))
            .map(|p| (p.leader, p.leader_epoch));
        match leader {
            Some((l, epoch)) if l == self.replicas.node_id() => {
                let slot = self.slots.lock().unwrap_or_else(PoisonError::into_inner).get(&partition).cloned();
                match slot {
                    Some(s) if s.coordinator_epoch == epoch && s.loaded.load(Ordering::Acquire) => Ok(s),
                    _ => Err(ResponseError::CoordinatorLoadInProgress),
                }
            }
            Some((-1, _)) | None => Err(ResponseError::CoordinatorNotAvailable),
            Some(_) => Err(ResponseError::NotCoordinator),
        }
    }

    /// Whether `slot` is still the shard of its partition (not unloaded or reloaded since).
    pub(crate) fn is_current(&self, slot: &Arc<Slot>) -> bool {
        self.slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&slot.partition)
            .is_some_and(|s| Arc::ptr_eq(s, slot))
    }

    /// Runs a request on the shard of `transactional_id` to its answer: looks the shard up,
    /// calls `f`, makes the record durable, completes the transition, starts its markers.
    ///
    /// A request that finds the transactional id busy (CONCURRENT_TRANSACTIONS: typically the
    /// previous transaction's markers, still being written when the producer starts the next
    /// one) waits up to [`CONCURRENT_WAIT`] for the transition in flight to finish and is tried
    /// again, rather than send the client into its retry backoff (100 ms in librdkafka).
    pub async fn run(
        self: &Arc<Self>,
        transactional_id: &str,
        f: impl Fn(&mut TxnCoordinatorShard, &mut dyn strata_txn::ProducerIdSource, i64) -> Step<Identity>,
    ) -> Result<Identity, ResponseError> {
        // The shard takes producer ids without waiting: have some at hand first.
        if let Err(e) = self.producer_ids.ensure(self.controller.as_ref()).await {
            tracing::warn!(error = %e.message, "cannot lease producer ids");
        }
        let started = tokio::time::Instant::now();
        loop {
            let slot = self.lookup(transactional_id)?;
            let settled = slot.settled.notified();
            tokio::pin!(settled);
            settled.as_mut().enable();
            let step = {
                let mut shard = slot.lock();
                let now = now_ms();
                let mut ids = &*self.producer_ids;
                match f(&mut shard, &mut ids, now) {
                    Step::Done(r) => Err(r),
                    Step::Append(append) => Ok((append.id, self.append(&slot, &shard, &append, now))),
                }
            };
            let (id, appended) = match step {
                Err(Err(ResponseError::ConcurrentTransactions)) if started.elapsed() < CONCURRENT_WAIT => {
                    let left = CONCURRENT_WAIT.saturating_sub(started.elapsed());
                    let _ = tokio::time::timeout(left, settled).await;
                    continue;
                }
                Err(r) => return r,
                Ok(a) => a,
            };
            let done = self.settle(&slot, id, appended).await;
            self.start_markers(&slot, done.markers);
            return done.answer.unwrap_or(Err(ResponseError::NotCoordinator));
        }
    }

    /// Reads the shard of `transactional_id` without changing it.
    pub fn read<T>(
        self: &Arc<Self>,
        transactional_id: &str,
        f: impl FnOnce(&TxnCoordinatorShard) -> Result<T, ResponseError>,
    ) -> Result<T, ResponseError> {
        let slot = self.lookup(transactional_id)?;
        let shard = slot.lock();
        f(&shard)
    }

    /// Runs `f` on every loaded shard (ListTransactions); `Err` if one is still loading.
    pub fn each_shard<T>(&self, mut f: impl FnMut(&TxnCoordinatorShard) -> T) -> Result<Vec<T>, ResponseError> {
        let slots: Vec<Arc<Slot>> =
            self.slots.lock().unwrap_or_else(PoisonError::into_inner).values().cloned().collect();
        let mut out = Vec::with_capacity(slots.len());
        for slot in slots {
            if !slot.loaded.load(Ordering::Acquire) {
                return Err(ResponseError::CoordinatorLoadInProgress);
            }
            out.push(f(&slot.lock()));
        }
        Ok(out)
    }

    /// Appends `append`'s records to the slot's partition. Called with the shard locked.
    fn append(&self, slot: &Slot, shard: &TxnCoordinatorShard, append: &Append, now: i64) -> Appended {
        let version = shard.config().value_version();
        crate::blocking::off_worker(|| {
            let partition = self.replicas.get(TRANSACTION_STATE_TOPIC, slot.partition)?;
            let batch = encode_batch(&append.records, version, now)?;
            partition.append(&batch, now).map(|a| (partition, a))
        })
        .map_err(|e| e.code())
    }

    /// Waits until the ISR has an append, then completes it in the shard.
    async fn settle(&self, slot: &Arc<Slot>, id: AppendId, appended: Appended) -> Completed {
        let outcome = match appended {
            Ok((partition, result)) => {
                let deadline = tokio::time::Instant::now() + Duration::from_millis(APPEND_TIMEOUT_MS as u64);
                partition.await_committed(&result, deadline, APPEND_TIMEOUT_MS).await.map_err(|e| e.code())
            }
            Err(e) => Err(e),
        };
        if let Err(e) = &outcome {
            tracing::info!(partition = slot.partition, error = ?e, "a {TRANSACTION_STATE_TOPIC} record did not commit");
        }
        if !self.is_current(slot) {
            return Completed { answer: Some(Err(ResponseError::NotCoordinator)), markers: Vec::new() };
        }
        let done = slot.lock().complete_append(id, outcome);
        slot.settled.notify_waiters();
        done
    }

    /// Starts writing the markers of decided transactions.
    fn start_markers(self: &Arc<Self>, slot: &Arc<Slot>, work: Vec<MarkerWork>) {
        for w in work {
            let (this, slot) = (self.clone(), slot.clone());
            self.runtime.spawn(async move { this.write_markers(slot, w).await });
        }
    }

    /// Loads the shard of `partition`, led by this broker since `leader_epoch`.
    fn elect(self: &Arc<Self>, partition: i32, leader_epoch: i32) {
        let slot = Arc::new(Slot {
            partition,
            coordinator_epoch: leader_epoch,
            shard: Mutex::new(TxnCoordinatorShard::new(self.config.clone(), leader_epoch)),
            loaded: AtomicBool::new(false),
            settled: tokio::sync::Notify::new(),
        });
        {
            let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
            if slots.get(&partition).is_some_and(|s| s.coordinator_epoch == leader_epoch) {
                return;
            }
            slots.insert(partition, slot.clone());
        }
        let this = self.clone();
        self.runtime.spawn(async move {
            let started = std::time::Instant::now();
            // A load that fails (a damaged record, a disk error) is tried again while this
            // broker still leads the partition; meanwhile its ids answer
            // COORDINATOR_LOAD_IN_PROGRESS.
            let loaded_to = loop {
                let load = {
                    let (this, slot) = (this.clone(), slot.clone());
                    tokio::task::spawn_blocking(move || {
                        // Each attempt starts from an empty shard.
                        *slot.lock() = TxnCoordinatorShard::new(this.config.clone(), slot.coordinator_epoch);
                        this.load(&slot)
                    })
                    .await
                };
                match load {
                    Ok(Ok((records, end))) => {
                        tracing::info!(
                            partition,
                            coordinator_epoch = leader_epoch,
                            records,
                            elapsed_ms = started.elapsed().as_millis() as u64,
                            "loaded the transaction coordinator shard"
                        );
                        break end;
                    }
                    Ok(Err(e)) => {
                        tracing::error!(partition, error = %e, "cannot load the transaction coordinator shard; retrying")
                    }
                    Err(e) => tracing::error!(partition, error = %e, "the transaction coordinator load panicked; retrying"),
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                if !this.is_current(&slot) {
                    return;
                }
            };
            let work = {
                let mut shard = slot.lock();
                let work = shard.on_loaded();
                slot.loaded.store(true, Ordering::Release);
                work
            };
            if work.is_empty() {
                return;
            }
            // Markers only for decisions the ISR has: a new leader's uncommitted tail could
            // still vanish, and a marker sent for it could tear the transaction.
            if let Ok(p) = this.replicas.get(TRANSACTION_STATE_TOPIC, partition) {
                while this.is_current(&slot) && p.high_watermark() < loaded_to {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            if this.is_current(&slot) {
                this.start_markers(&slot, work);
            }
        });
    }

    /// Replays the slot's partition into its shard; returns the records read and the log end.
    fn load(&self, slot: &Slot) -> Result<(usize, i64), BrokerError> {
        let partition = self.replicas.get(TRANSACTION_STATE_TOPIC, slot.partition)?;
        let mut shard = slot.lock();
        let count = replay_partition(&partition, &mut shard)?;
        Ok((count, partition.log_end_offset()))
    }

    /// Ticks every loaded shard until shutdown: aborts timed-out transactions, removes expired
    /// ids.
    pub async fn run_timers(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        loop {
            let _ = self.producer_ids.ensure(self.controller.as_ref()).await;
            let slots: Vec<Arc<Slot>> =
                self.slots.lock().unwrap_or_else(PoisonError::into_inner).values().cloned().collect();
            for slot in slots {
                if !slot.loaded.load(Ordering::Acquire) {
                    continue;
                }
                let now = now_ms();
                let mut shard = slot.lock();
                if shard.next_deadline() > now {
                    continue;
                }
                let mut ids = &*self.producer_ids;
                let appends = shard.tick(now, &mut ids);
                let appended: Vec<(AppendId, Appended)> =
                    appends.iter().map(|a| (a.id, self.append(&slot, &shard, a, now))).collect();
                drop(shard);
                for (id, appended) in appended {
                    let (this, slot) = (self.clone(), slot.clone());
                    self.runtime.spawn(async move {
                        let done = this.settle(&slot, id, appended).await;
                        this.start_markers(&slot, done.markers);
                    });
                }
            }
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(Duration::from_millis(1_000)) => {}
            }
        }
    }
}

/// A record appended locally (not yet committed), or the append's error.
pub(crate) type Appended = Result<(Arc<Partition>, AppendResult), ResponseError>;

/// Leadership of `__transaction_state` partitions moved (Kafka's `onElection` /
/// `onResignation`): load the shards this broker now leads, drop those it stopped leading.
impl MetadataPublisher for TxnCoordinator {
    fn publish(&self, _image: &Arc<MetadataImage>, delta: &MetadataDelta) {
        let me = self.replicas.node_id();
        for ((_, index), change) in delta.changed_partitions.iter().filter(|(_, c)| c.topic == TRANSACTION_STATE_TOPIC)
        {
            match change.after.as_ref() {
                Some(p) if p.leader == me => {
                    if let Some(this) = self.this.upgrade() {
                        this.elect(*index, p.leader_epoch);
                    }
                }
                _ => {
                    if self.slots.lock().unwrap_or_else(PoisonError::into_inner).remove(index).is_some() {
                        tracing::info!(
                            partition = index,
                            "unloaded the transaction coordinator shard (no longer its leader)"
                        );
                    }
                }
            }
        }
    }
}

/// Replays a `__transaction_state` partition into `shard` from its log start to its log end
/// (a leader never truncates its own log); returns the number of records.
pub fn replay_partition(partition: &Partition, shard: &mut TxnCoordinatorShard) -> Result<usize, BrokerError> {
    let index = partition.index;
    let mut count = 0;
    crate::replica::replay::replay_log(partition, LOAD_READ_BYTES, |r| {
        let Some(key) = r.key.as_deref().filter(|_| !r.control) else { return Ok(()) };
        match TxnRecord::decode(key, r.value.as_deref()) {
            Ok(record) => {
                shard.replay(&record);
                count += 1;
                Ok(())
            }
            Err(TxnError::UnknownKeyVersion(v)) => {
                tracing::warn!(
                    partition = index,
                    offset = r.offset,
                    version = v,
                    "skipping a record with an unknown key version"
                );
                Ok(())
            }
            Err(e) => {
                Err(BrokerError::Storage(format!("{TRANSACTION_STATE_TOPIC}-{index} at offset {}: {e}", r.offset)))
            }
        }
    })?;
    Ok(count)
}

/// One uncompressed batch holding `records`.
fn encode_batch(records: &[TxnRecord], value_version: i16, now: i64) -> Result<Bytes, BrokerError> {
    let entries = records.iter().map(|r| {
        let (key, value) = r.encode(value_version);
        (Some(key), value)
    });
    encode_key_values(entries, now, Compression::None)
        .map_err(|e| BrokerError::Storage(format!("cannot encode {TRANSACTION_STATE_TOPIC} records: {e}")))
}
