//! The driver of the group coordinator: one `strata_group` shard per
//! `__consumer_offsets` partition, its records made durable in that
//! partition's log before any response they justify is sent.
//!
//! - **Load**: at start every shard replays the records of its partition.
//! - **Requests**: the handler locks the shard, calls it, appends the
//!   returned records to the partition, unlocks, then sends the response and
//!   every parked response the call completed. A parked request (classic
//!   JoinGroup or SyncGroup) waits on a oneshot channel keyed by its token.
//! - **Time**: a task calls `tick` on shards whose deadline has come
//!   (sessions, rebalance timeouts, offset retention), woken early whenever a
//!   call may have moved a deadline.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use strata_group::{
    CoordinatorResult, GroupConfig, GroupCoordinatorShard, GroupRecord, RequestContext, RequestToken, ResponseKind,
    TopicMetadata,
};
use strata_metadata::channel::CreateTopicSpec;
use strata_metadata::{MetadataDelta, MetadataImage, MetadataPublisher};
use strata_protocol::kafka_protocol::records::Compression;
use strata_protocol::records::encode_key_values;
use tokio::sync::{oneshot, Notify};
use uuid::Uuid;

use crate::config::BrokerConfig;
use crate::replica::{now_ms, AppendResult, Partition, ReplicaManager, Verification};
use crate::BrokerError;

/// The internal topic holding group state and committed offsets.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Tombstones per batch when deleting the offsets of deleted topics: about 100 bytes each, so
/// a batch stays far below the partition's `max.message.bytes` (16 MiB).
const TOMBSTONES_PER_BATCH: usize = 10_000;

/// Reads per load step while replaying a partition.
const LOAD_READ_BYTES: usize = 8 * 1024 * 1024;

/// The group coordinator's settings from the broker config.
pub fn group_config(c: &BrokerConfig) -> GroupConfig {
    let d = GroupConfig::default();
    GroupConfig {
        initial_rebalance_delay_ms: c.number("group.initial.rebalance.delay.ms"),
        min_session_timeout_ms: c.number("group.min.session.timeout.ms") as i32,
        max_session_timeout_ms: c.number("group.max.session.timeout.ms") as i32,
        max_group_size: c.number("group.max.size") as usize,
        offsets_retention_ms: c.number("offsets.retention.minutes") * 60_000,
        offsets_retention_check_interval_ms: c.number("offsets.retention.check.interval.ms"),
        offset_metadata_max_bytes: c.number("offset.metadata.max.bytes") as usize,
        consumer_session_timeout_ms: c.number("group.consumer.session.timeout.ms") as i32,
        consumer_heartbeat_interval_ms: c.number("group.consumer.heartbeat.interval.ms") as i32,
        consumer_max_size: c.number("group.consumer.max.size") as usize,
        consumer_assignors: c
            .get("group.consumer.assignors")
            .map(|v| v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect())
            .filter(|v: &Vec<String>| !v.is_empty())
            .unwrap_or(d.consumer_assignors.clone()),
        ..d
    }
}

/// What a shard call gave: an answer now, a wait for a parked one, or a
/// failure to make its records durable (the caller answers NOT_COORDINATOR,
/// so the client looks the coordinator up again and retries).
pub enum Outcome<T> {
    Now(T),
    Parked(oneshot::Receiver<ResponseKind>),
    NotDurable,
}

/// All shards of this broker.
pub struct GroupCoordinator {
    shards: Vec<Mutex<GroupCoordinatorShard>>,
    /// Which shards hold their partition's groups: those of the partitions this broker led
    /// when they were loaded. The others are empty (see [`MetadataPublisher::publish`]).
    loaded: Mutex<Vec<bool>>,
    replicas: Arc<ReplicaManager>,
    waiters: Mutex<HashMap<RequestToken, oneshot::Sender<ResponseKind>>>,
    next_token: AtomicU64,
    deadlines_moved: Notify,
}

/// Topic metadata for the KIP-848 assignors, from a metadata image.
pub struct ImageTopics(pub Arc<MetadataImage>);

impl TopicMetadata for ImageTopics {
    fn partitions(&self, topic: &str) -> Option<(Uuid, i32)> {
        self.0.topic(topic).map(|t| (t.id, t.partitions.len() as i32))
    }
    fn by_id(&self, id: Uuid) -> Option<(String, i32)> {
        self.0.topic_by_id(&id).map(|t| (t.name.clone(), t.partitions.len() as i32))
    }
    fn for_each_topic(&self, f: &mut dyn FnMut(&str)) {
        self.0.topics().for_each(|t| f(&t.name));
    }
    fn version(&self) -> u64 {
        self.0.records_applied
    }
}

impl GroupCoordinator {
    /// A coordinator with no shards, for a controller-only node (it serves no clients, and so
    /// no groups): every group request there would be NOT_COORDINATOR.
    pub fn without_shards(replicas: Arc<ReplicaManager>) -> Arc<Self> {
        Arc::new(Self {
            shards: Vec::new(),
            loaded: Mutex::default(),
            replicas,
            waiters: Mutex::new(HashMap::new()),
            next_token: AtomicU64::new(1),
            deadlines_moved: Notify::new(),
        })
    }

    /// Creates `__consumer_offsets` if it does not exist, then loads every shard from its
    /// partition. Like Kafka, the topic is created only once `offsets.topic.replication.factor`
    /// brokers are registered: until then a task tries again every second, and FindCoordinator
    /// answers COORDINATOR_NOT_AVAILABLE.
    pub async fn start(
        config: &BrokerConfig,
        controller: Arc<dyn strata_metadata::channel::ControllerChannel>,
        replicas: Arc<ReplicaManager>,
    ) -> Result<Arc<Self>, BrokerError> {
        let spec = CreateTopicSpec {
            name: OFFSETS_TOPIC.to_string(),
            num_partitions: config.number("offsets.topic.num.partitions") as i32,
            replication_factor: config.offsets_topic_replication_factor(),
            assignments: Vec::new(),
            configs: [
                ("cleanup.policy".to_string(), "compact".to_string()),
                ("segment.bytes".to_string(), config.number("offsets.topic.segment.bytes").to_string()),
                ("max.message.bytes".to_string(), (16 * 1024 * 1024).to_string()),
            ]
            .into_iter()
            .collect(),
        };
        if replicas.image().topic(OFFSETS_TOPIC).is_none() {
            match create_offsets_topic(controller.as_ref(), &replicas, &spec).await {
                Ok(()) => {}
                Err(e) if e.error == strata_protocol::ResponseError::InvalidReplicationFactor => {
                    tracing::warn!(reason = %e.message,
                        "{OFFSETS_TOPIC} waits for enough brokers (offsets.topic.replication.factor); groups are unavailable until then");
                    let (controller, replicas, spec) = (controller.clone(), replicas.clone(), spec.clone());
                    tokio::spawn(async move {
                        while replicas.image().topic(OFFSETS_TOPIC).is_none() {
                            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                            match create_offsets_topic(controller.as_ref(), &replicas, &spec).await {
                                Ok(()) => tracing::info!("{OFFSETS_TOPIC} created"),
                                Err(e) if e.error == strata_protocol::ResponseError::InvalidReplicationFactor => {}
                                Err(e) => tracing::warn!(error = %e.message, "cannot create {OFFSETS_TOPIC} yet"),
                            }
                        }
                    });
                }
                Err(e) => return Err(BrokerError::Storage(format!("cannot create {OFFSETS_TOPIC}: {}", e.message))),
            }
        }
        let image = replicas.image();
        // Until the topic exists, its shards are empty (as its partitions will be).
        let partitions = image.topic(OFFSETS_TOPIC).map_or(spec.num_partitions.max(0) as usize, |t| t.partitions.len());
        let group_config = group_config(config);
        let mut shards = Vec::with_capacity(partitions);
        let mut loaded = Vec::with_capacity(partitions);
        let started = std::time::Instant::now();
        let mut replayed = 0usize;
        crate::blocking::off_worker(|| {
            for index in 0..partitions {
                let mut shard = GroupCoordinatorShard::new(group_config.clone());
                // In a cluster, other brokers lead some partitions: their groups live there. A
                // replica this broker only follows stays empty (its log takes only what the
                // leader sends); it is loaded if this broker comes to lead it.
                let local = image
                    .topic(OFFSETS_TOPIC)
                    .and_then(|t| t.partitions.get(index))
                    .is_some_and(|p| p.leader == replicas.node_id());
                if local {
                    replayed += load(&replicas, index as i32, &mut shard)?;
                }
                shards.push(Mutex::new(shard));
                loaded.push(local);
            }
            Ok::<(), BrokerError>(())
        })?;
        tracing::info!(
            partitions,
            records = replayed,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "group coordinator loaded"
        );
        let coordinator = Arc::new(Self {
            shards,
            loaded: Mutex::new(loaded),
            replicas,
            waiters: Mutex::new(HashMap::new()),
            next_token: AtomicU64::new(1),
            deadlines_moved: Notify::new(),
        });
        // Offsets of topics deleted while the broker was down, or just before it stopped
        // (between the deletion's metadata record and its offset tombstones).
        coordinator.delete_offsets_of_topics(&|t| image.topic(t).is_none());
        Ok(coordinator)
    }

    /// Deletes every group's committed offsets of the topics for which `deleted` holds (see
    /// [`GroupCoordinatorShard::delete_offsets_of_topics`]), as tombstones in batches of at most
    /// [`TOMBSTONES_PER_BATCH`] (each is independent, so splitting them loses no atomicity).
    ///
    /// If a shard's partition cannot be written, the shard is reloaded from its log and keeps
    /// what was not written; the broker's next start deletes it, as long as no topic of that
    /// name exists then (a topic created again meanwhile would inherit those offsets).
    pub fn delete_offsets_of_topics(&self, deleted: &dyn Fn(&str) -> bool) {
        for (index, shard) in self.shards.iter().enumerate() {
            if !self.coordinates(index) {
                continue;
            }
            let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            let result = shard.delete_offsets_of_topics(deleted);
            for chunk in result.records.chunks(TOMBSTONES_PER_BATCH) {
                if self.persist(index, &mut shard, chunk, None, now_ms()).is_err() {
                    tracing::error!(
                        partition = index,
                        "the offsets of deleted topics could not all be deleted; the rest go at the next start"
                    );
                    break;
                }
            }
        }
    }

    pub fn num_partitions(&self) -> i32 {
        self.shards.len() as i32
    }

    /// The shard coordinating `group_id`.
    pub fn shard_for(&self, group_id: &str) -> usize {
        strata_group::partition_for(group_id, self.num_partitions()) as usize
    }

    pub fn context(&self, api_version: i16, client_id: &str, client_host: &str) -> RequestContext {
        let token = RequestToken(self.next_token.fetch_add(1, Ordering::Relaxed));
        RequestContext { token, api_version, client_id: client_id.to_string(), client_host: client_host.to_string() }
    }

    /// Calls shard `index` with `f`, makes its records durable, sends the
    /// responses it completed, and returns this request's own outcome.
    pub async fn call<T>(
        &self,
        index: usize,
        ctx: &RequestContext,
        f: impl FnOnce(&mut GroupCoordinatorShard, i64) -> CoordinatorResult<T>,
    ) -> Outcome<T> {
        self.call_as(index, ctx, None, f).await
    }

    /// [`Self::call`] for a call whose records belong to a producer's transaction
    /// (TxnOffsetCommit): they are written as one transactional batch of `producer` (id,
    /// epoch), which the partition's producer state fences (INVALID_PRODUCER_EPOCH for an
    /// older epoch: `Err` then, with nothing written and the shard reloaded).
    pub async fn call_txn<T>(
        &self,
        index: usize,
        ctx: &RequestContext,
        producer: (i64, i16),
        verification: Verification,
        f: impl FnOnce(&mut GroupCoordinatorShard, i64) -> CoordinatorResult<T>,
    ) -> Outcome<T> {
        self.call_as(index, ctx, Some((producer.0, producer.1, verification)), f).await
    }

    async fn call_as<T>(
        &self,
        index: usize,
        ctx: &RequestContext,
        producer: Option<(i64, i16, Verification)>,
        f: impl FnOnce(&mut GroupCoordinatorShard, i64) -> CoordinatorResult<T>,
    ) -> Outcome<T> {
        // Only the leader of the group's offsets partition coordinates it; elsewhere the
        // client is told NOT_COORDINATOR and looks the coordinator up again.
        // Its shard is loaded just after the metadata says so (the publisher after this one):
        // until then the client retries, rather than meet an empty group.
        if !self.coordinates(index) {
            return Outcome::NotDurable;
        }
        let (tx, rx) = oneshot::channel();
        self.waiters.lock().unwrap_or_else(PoisonError::into_inner).insert(ctx.token, tx);
        let (result, appended) = match self.shards.get(index) {
            Some(shard) => {
                let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
                let now = now_ms();
                let result = f(&mut shard, now);
                match self.persist(index, &mut shard, &result.records, producer, now) {
                    Ok(appended) => (result, appended),
                    Err(()) => {
                        drop(shard);
                        self.waiters.lock().unwrap_or_else(PoisonError::into_inner).remove(&ctx.token);
                        return Outcome::NotDurable;
                    }
                }
            }
            None => (CoordinatorResult { records: Vec::new(), response: None, completions: Vec::new() }, None),
        };
        // The shard is unlocked while the records replicate: its other requests, and the
        // metadata loader (which loads and unloads shards), never wait for the followers.
        if !committed(index, appended).await {
            let mut waiters = self.waiters.lock().unwrap_or_else(PoisonError::into_inner);
            waiters.remove(&ctx.token);
            for (token, _) in &result.completions {
                waiters.remove(token);
            }
            return Outcome::NotDurable;
        }
        self.deliver(result.completions);
        self.deadlines_moved.notify_one();
        match result.response {
            Some(r) => {
                self.waiters.lock().unwrap_or_else(PoisonError::into_inner).remove(&ctx.token);
                Outcome::Now(r)
            }
            None => Outcome::Parked(rx),
        }
    }

    /// Runs `f` on every shard (ListGroups).
    pub fn each_shard<T>(&self, mut f: impl FnMut(&mut GroupCoordinatorShard, i64) -> T) -> Vec<T> {
        self.shards.iter().map(|s| f(&mut s.lock().unwrap_or_else(PoisonError::into_inner), now_ms())).collect()
    }

    fn deliver(&self, completions: Vec<(RequestToken, ResponseKind)>) {
        if completions.is_empty() {
            return;
        }
        let mut waiters = self.waiters.lock().unwrap_or_else(PoisonError::into_inner);
        for (token, response) in completions {
            if let Some(tx) = waiters.remove(&token) {
                // The client may have gone away; nothing to do then.
                let _ = tx.send(response);
            }
        }
    }

    /// Appends records to the shard's partition. Called with the shard locked,
    /// so records reach the log in the order the shard produced them. Returns the append
    /// (none for no records), for [`Self::committed`] to wait on once the shard is unlocked.
    ///
    /// If the append fails, the shard's memory is ahead of its log: it is
    /// rebuilt from the log, and every request parked in it is dropped (its
    /// client is answered NOT_COORDINATOR and retries).
    fn persist(
        &self,
        index: usize,
        shard: &mut GroupCoordinatorShard,
        records: &[GroupRecord],
        producer: Option<(i64, i16, Verification)>,
        now: i64,
    ) -> Result<Option<(Arc<Partition>, AppendResult)>, ()> {
        if records.is_empty() {
            return Ok(None);
        }
        // The append may wait on the disk (an fsync with flush.messages=1, a roll): not on an
        // async worker. The shard stays locked meanwhile, so its records keep their order.
        let result = crate::blocking::off_worker(|| {
            let partition = self.replicas.get(OFFSETS_TOPIC, index as i32)?;
            match producer {
                None => write_records(&partition, records, now),
                Some((id, epoch, verification)) => {
                    write_transactional_records(&partition, records, (id, epoch), verification, now)
                }
            }
            .map(|a| (partition, a))
        });
        let e = match result {
            Ok(appended) => return Ok(Some(appended)),
            Err(e) => e,
        };
        tracing::error!(partition = index, error = %e, "cannot write group records to {OFFSETS_TOPIC}; reloading the shard");
        let parked = shard.parked_tokens();
        let mut fresh = GroupCoordinatorShard::new(shard.config().clone());
        if let Err(e) = load(&self.replicas, index as i32, &mut fresh) {
            tracing::error!(partition = index, error = %e, "cannot reload the group coordinator shard");
        }
        *shard = fresh;
        let mut waiters = self.waiters.lock().unwrap_or_else(PoisonError::into_inner);
        for token in parked {
            waiters.remove(&token);
        }
        Err(())
    }

    /// Whether this broker coordinates the groups of shard `index`: it leads the offsets
    /// partition and has loaded its groups. Elsewhere requests get NOT_COORDINATOR.
    pub fn coordinates(&self, index: usize) -> bool {
        self.leads(index) && self.is_loaded(index)
    }

    /// Whether shard `index` holds its partition's groups (see `loaded`).
    fn is_loaded(&self, index: usize) -> bool {
        self.loaded.lock().unwrap_or_else(PoisonError::into_inner).get(index).copied().unwrap_or(false)
    }

    /// Whether this broker leads `__consumer_offsets` partition `index` (always, on one node).
    fn leads(&self, index: usize) -> bool {
        let image = self.replicas.image();
        image
            .topic(OFFSETS_TOPIC)
            .and_then(|t| t.partitions.get(index))
            .is_some_and(|p| p.leader == self.replicas.node_id())
    }

    /// Replaces shard `index` by one loaded from its partition (`load`) or by an empty one;
    /// requests parked in the old shard are answered NOT_COORDINATOR.
    fn replace_shard(&self, index: usize, load_it: bool) {
        let Some(shard) = self.shards.get(index) else { return };
        let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
        let parked = shard.parked_tokens();
        let mut fresh = GroupCoordinatorShard::new(shard.config().clone());
        if load_it {
            match load(&self.replicas, index as i32, &mut fresh) {
                Ok(records) => {
                    tracing::info!(partition = index, records, "loaded the group coordinator shard (now its leader)")
                }
                Err(e) => tracing::error!(partition = index, error = %e, "cannot load the group coordinator shard"),
            }
        } else {
            tracing::info!(partition = index, "unloaded the group coordinator shard (no longer its leader)");
        }
        *shard = fresh;
        if let Some(flag) = self.loaded.lock().unwrap_or_else(PoisonError::into_inner).get_mut(index) {
            *flag = load_it;
        }
        drop(shard);
        let mut waiters = self.waiters.lock().unwrap_or_else(PoisonError::into_inner);
        for token in parked {
            waiters.remove(&token);
        }
    }

    /// Writes a transaction marker to `__consumer_offsets` partition `index` for the group
    /// coordinator (WriteTxnMarkers): appended in order with the shard's own records, then
    /// applied to the shard, so the producer's pending offsets become committed or vanish.
    /// Waits until the ISR has it. NOT_LEADER_OR_FOLLOWER while this broker does not
    /// coordinate the partition (the transaction coordinator retries).
    pub async fn write_txn_marker(
        &self,
        index: usize,
        producer_id: i64,
        producer_epoch: i16,
        marker: strata_protocol::records::control::EndTxnMarker,
    ) -> Result<(), strata_protocol::ResponseError> {
        let not_here = strata_protocol::ResponseError::NotLeaderOrFollower;
        if !self.coordinates(index) {
            return Err(not_here);
        }
        let Some(shard) = self.shards.get(index) else { return Err(not_here) };
        let appended = {
            let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            let now = now_ms();
            let appended = crate::blocking::off_worker(|| {
                let partition = self.replicas.get(OFFSETS_TOPIC, index as i32)?;
                partition.append_txn_marker(producer_id, producer_epoch, marker, now).map(|a| (partition, a))
            })
            .map_err(|e| e.code())?;
            shard.replay_end_txn_marker(producer_id, marker.commit);
            appended
        };
        let (partition, result) = appended;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(30_000);
        partition.await_committed(&result, deadline, 30_000).await.map_err(|e| e.code())
    }

    /// Ticks due shards until shutdown.
    pub async fn run_timers(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        loop {
            let now = now_ms();
            let mut next = now + 1_000;
            for (index, shard) in self.shards.iter().enumerate() {
                // Only the leader's shard has state (and only the leader may write).
                if !self.coordinates(index) {
                    continue;
                }
                let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
                if shard.next_deadline().is_some_and(|d| d <= now) {
                    let result = shard.tick(now);
                    let appended = self.persist(index, &mut shard, &result.records, None, now);
                    drop(shard);
                    // The responses wait for the ISR on their own task: one shard whose
                    // followers are slow holds up no other shard's timers.
                    let this = self.clone();
                    tokio::spawn(async move {
                        let durable = match appended {
                            Ok(a) => committed(index, a).await,
                            Err(()) => false,
                        };
                        if durable {
                            this.deliver(result.completions);
                        } else {
                            let mut waiters = this.waiters.lock().unwrap_or_else(PoisonError::into_inner);
                            for (token, _) in &result.completions {
                                waiters.remove(token);
                            }
                        }
                    });
                    continue;
                }
                if let Some(d) = shard.next_deadline() {
                    next = next.min(d);
                }
            }
            let wait = Duration::from_millis((next - now_ms()).clamp(1, 1_000) as u64);
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(wait) => {}
                _ = self.deadlines_moved.notified() => {}
            }
        }
    }
}

/// Deleting a topic deletes its committed offsets in every group (Kafka's
/// `onPartitionsDeleted`), so that a topic created again under the same name starts with none.
impl MetadataPublisher for GroupCoordinator {
    fn publish(&self, _image: &Arc<MetadataImage>, delta: &MetadataDelta) {
        // Leadership of offsets partitions moved (KRaft's coordinator `onElection` /
        // `onResignation`): load the shards this broker now leads, unload those it stopped
        // leading.
        let me = self.replicas.node_id();
        for ((_, index), change) in delta.changed_partitions.iter().filter(|(_, c)| c.topic == OFFSETS_TOPIC) {
            // A shard holds its groups exactly while this broker leads the partition: loaded
            // when it comes to lead it (also when that happened between `start` and the first
            // publish, or when the topic is created here), emptied when it stops.
            let leads = change.after.as_ref().is_some_and(|p| p.leader == me);
            let index = *index as usize;
            let loaded = self.loaded.lock().unwrap_or_else(PoisonError::into_inner).get(index).copied();
            if loaded.is_some_and(|l| l != leads) {
                self.replace_shard(index, leads);
            }
        }
        if delta.deleted_topics.is_empty() {
            return;
        }
        let names: Vec<&str> = delta.deleted_topics.iter().map(|(name, _)| name.as_str()).collect();
        self.delete_offsets_of_topics(&|t| names.contains(&t));
    }
}

/// Replays partition `index` into `shard`; returns the number of records.
fn load(replicas: &ReplicaManager, index: i32, shard: &mut GroupCoordinatorShard) -> Result<usize, BrokerError> {
    let partition = replicas.get(OFFSETS_TOPIC, index)?;
    load_shard(&partition, shard)
}

/// Creates `__consumer_offsets` (another broker may have first) and waits until this broker's
/// metadata has it.
async fn create_offsets_topic(
    controller: &dyn strata_metadata::channel::ControllerChannel,
    replicas: &ReplicaManager,
    spec: &CreateTopicSpec,
) -> Result<(), strata_metadata::channel::ApiError> {
    for r in controller.create_topics(vec![spec.clone()], false).await {
        match r.result {
            Err(e) if e.error == strata_protocol::ResponseError::TopicAlreadyExists => {}
            Err(e) => return Err(e),
            Ok(_) => {}
        }
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while replicas.image().topic(OFFSETS_TOPIC).is_none() {
        if std::time::Instant::now() > deadline {
            return Err(strata_metadata::channel::ApiError::new(
                strata_protocol::ResponseError::CoordinatorNotAvailable,
                format!("{OFFSETS_TOPIC} was created but never reached this broker's metadata"),
            ));
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    Ok(())
}

/// How long group records may wait for the ISR (Kafka's `offsets.commit.timeout.ms` default).
const OFFSETS_COMMIT_TIMEOUT_MS: i32 = 5_000;

/// Writes `records` to the shard's `__consumer_offsets` partition as one batch. Returns once
/// the partition's flush policy is satisfied: with `flush.messages=1`, once they are fsynced.
/// Waits on the disk: call it off the async workers. The coordinator then waits for the ISR
/// (`committed`) before it answers.
pub fn write_records(partition: &Partition, records: &[GroupRecord], now: i64) -> Result<AppendResult, BrokerError> {
    partition.append(&encode_batch(records, now)?, now)
}

/// Writes `records` as one transactional batch of producer `producer_id` at `producer_epoch`
/// (TxnOffsetCommit), through the producer state's epoch check. Waits on the disk.
pub fn write_transactional_records(
    partition: &Partition,
    records: &[GroupRecord],
    (producer_id, producer_epoch): (i64, i16),
    verification: Verification,
    now: i64,
) -> Result<AppendResult, BrokerError> {
    let entries = records.iter().map(|r| {
        let (key, value) = r.encode();
        (Some(key), value)
    });
    let batch = strata_protocol::records::encode_transactional_key_values(entries, now, producer_id, producer_epoch)
        .map_err(|e| BrokerError::Storage(format!("cannot encode group records: {e}")))?;
    partition.append_from_coordinator(&batch, now, verification)
}

/// Waits, as Kafka's coordinator appends with acks=all, until the ISR has `appended` (the high
/// watermark passes it), so that no response it justifies is sent for records a new leader
/// might not have; `offsets.commit.timeout.ms` at most. Never with a shard locked. Whether
/// they were replicated: what was appended stays in the shard either way (a failure means the
/// leadership moved or the followers are behind, and the client retries).
async fn committed(index: usize, appended: Option<(Arc<Partition>, AppendResult)>) -> bool {
    let Some((partition, appended)) = appended else { return true };
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(OFFSETS_COMMIT_TIMEOUT_MS as u64);
    match partition.await_committed(&appended, deadline, OFFSETS_COMMIT_TIMEOUT_MS).await {
        Ok(()) => true,
        Err(e) => {
            tracing::info!(partition = index, error = %e, "group records not replicated; the client retries");
            false
        }
    }
}

/// Replays a `__consumer_offsets` partition into `shard` (group state and committed offsets,
/// as [`write_records`] wrote them); returns the number of records.
pub fn load_shard(partition: &Partition, shard: &mut GroupCoordinatorShard) -> Result<usize, BrokerError> {
    let index = partition.index;
    let mut count = 0;
    crate::replica::replay::replay_log(partition, LOAD_READ_BYTES, |r| {
        if r.control {
            // A transaction marker (key: version, type 0 abort / 1 commit): decides the
            // offsets its producer committed in the transaction.
            if let Some(k) = r.key.as_deref().filter(|k| k.len() >= 4) {
                shard.replay_end_txn_marker(r.producer_id, k[2..4] == [0, 1]);
            }
            return Ok(());
        }
        let Some(key) = r.key.as_deref() else { return Ok(()) };
        match GroupRecord::decode(key, r.value.as_deref()) {
            Ok(record) if r.transactional => shard.replay_transactional(&record, r.producer_id),
            Ok(record) => shard.replay(&record),
            Err(e) => {
                tracing::warn!(partition = index, offset = r.offset, error = %e, "skipping an unreadable group record");
                return Ok(());
            }
        }
        count += 1;
        Ok(())
    })?;
    Ok(count)
}

/// One uncompressed batch holding `records` as key/value pairs.
fn encode_batch(records: &[GroupRecord], now: i64) -> Result<Bytes, BrokerError> {
    let entries = records.iter().map(|r| {
        let (key, value) = r.encode();
        (Some(key), value)
    });
    encode_key_values(entries, now, Compression::None)
        .map_err(|e| BrokerError::Storage(format!("cannot encode group records: {e}")))
}
