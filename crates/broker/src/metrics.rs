//! The broker's Prometheus metrics (issue #17), served on `/metrics` of `http.listener` in the
//! OpenMetrics text format (`prometheus-client`).
//!
//! Names are Kafka's JMX names mapped the way the Prometheus JMX exporter's Kafka rules map
//! them: `kafka_<domain>_<type>_<name>`, lower case, counters ending in `_total` and times in
//! seconds. docs/metrics.md lists every family with its Kafka MBean.
//!
//! Counters move as requests are served (atomics; a label set is looked up in a read-locked
//! map). Point-in-time gauges (partition counts, log sizes, the process's CPU, memory and
//! files) are read when scraped, by [`BrokerMetrics::encode`], which reads `/proc` and walks
//! every partition: call it off the async workers.

use std::sync::atomic::AtomicU64;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use strata_protocol::ApiKey;

use crate::replica::ReplicaManager;

/// `request` and `version` of Kafka's `RequestMetrics` (`kafka.network:type=RequestMetrics,
/// name=RequestsPerSec,request=Produce,version=9`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub request: &'static str,
    pub version: i16,
}

/// A request name and a Kafka error name (`NOT_LEADER_OR_FOLLOWER`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub request: &'static str,
    pub error: String,
}

/// `request` alone (the time histograms; Kafka's `TotalTimeMs` has no version).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestName {
    pub request: &'static str,
}

/// `topic` of Kafka's `BrokerTopicMetrics`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabels {
    pub topic: String,
}

/// `topic` and `partition` of Kafka's `kafka.log:type=Log,name=Size`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    pub topic: String,
    pub partition: i32,
}

/// A delayed operation kind, as Kafka's purgatories are named (`Produce`, `Fetch`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PurgatoryLabels {
    pub delayedoperation: &'static str,
}

/// A data directory.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LogDirLabels {
    pub logdir: String,
}

/// A group's partition, as kafka_exporter labels consumer group figures.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GroupPartitionLabels {
    pub consumergroup: String,
    pub topic: String,
    pub partition: i32,
}

/// `listener` of Kafka's `socket-server-metrics` `connection-count`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    pub listener: String,
}

type TimeHistogram = Family<RequestName, Histogram, fn() -> Histogram>;

/// The metadata quorum as this node sees it (the server reads it from its Raft node; the
/// broker crate does not know the controller's types).
#[derive(Debug, Clone, Copy, Default)]
pub struct QuorumFigures {
    /// The leader's node id, -1 when unknown.
    pub leader_id: i64,
    /// The Raft term (Kafka's epoch).
    pub epoch: u64,
    /// Whether this node is the active controller.
    pub active: bool,
    /// Whether this node is a voter of the quorum (a controller).
    pub voter: bool,
    /// The committed index (Kafka's high watermark of the metadata log).
    pub high_watermark: u64,
    /// The last index in this node's metadata log.
    pub log_end_offset: u64,
    /// The last index applied to this node's metadata image.
    pub applied: u64,
}

/// Request times from 0.5 ms to about 33 s, doubling (17 buckets and +Inf).
fn time_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 17))
}

/// Every metric family the broker exports, and the registry that encodes them.
pub struct BrokerMetrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_time: TimeHistogram,
    errors: Family<ErrorLabels, Counter>,
    bytes_in: Family<TopicLabels, Counter>,
    messages_in: Family<TopicLabels, Counter>,
    bytes_out: Family<TopicLabels, Counter>,
    connections: Family<ListenerLabels, Gauge>,
    // Read at scrape time.
    partitions: Gauge,
    leaders: Gauge,
    under_replicated: Gauge,
    under_min_isr: Gauge,
    log_size: Family<PartitionLabels, Gauge>,
    offline: Gauge,
    group_offset: Family<GroupPartitionLabels, Gauge>,
    group_lag: Family<GroupPartitionLabels, Gauge>,
    quorum: QuorumGauges,
    ops: OperationFigures,
    cpu_seconds: Counter<f64, AtomicU64>,
    resident_memory: Gauge,
    open_fds: Gauge,
    /// The CPU time already added to `cpu_seconds` (a counter only moves up by deltas).
    cpu_counted: Mutex<f64>,
    /// The topics of the metadata image at the last scrape: a topic gone since has its
    /// per-topic series removed (as Kafka's `BrokerTopicStats.removeMetrics` on deletion).
    topics_seen: Mutex<std::collections::HashSet<String>>,
    /// One scrape at a time: a scrape clears and refills the point-in-time families.
    scraping: Mutex<()>,
}

/// Kafka's DelayedOperationPurgatory, ReplicaManager ISR-change, LogCleaner and per-directory
/// log size figures.
struct OperationFigures {
    /// Requests waiting now: acks=all produces for their replicas, fetches for min_bytes.
    purgatory: Family<PurgatoryLabels, Gauge>,
    produce_waiting: Gauge,
    fetch_waiting: Gauge,
    isr_shrinks: Counter,
    isr_expands: Counter,
    cleanings: Counter,
    failed_cleanings: Counter,
    recopy_percent: Gauge,
    last_clean_seconds: Gauge<f64, AtomicU64>,
    max_dirty_percent: Gauge,
    log_dir_size: Family<LogDirLabels, Gauge>,
}

impl OperationFigures {
    fn register(r: &mut Registry) -> Self {
        let purgatory = Family::<PurgatoryLabels, Gauge>::default();
        r.register(
            "kafka_server_delayedoperationpurgatory_purgatorysize",
            "Requests waiting: acks=all produces for their in-sync replicas (Produce), fetches with max_wait_ms for min_bytes (Fetch) (DelayedOperationPurgatory PurgatorySize)",
            purgatory.clone(),
        );
        let counter = |r: &mut Registry, name: &str, help: &str| {
            let c = Counter::default();
            r.register(name, help, c.clone());
            c
        };
        let isr_shrinks = counter(r, "kafka_server_replicamanager_isrshrinks", "ISR shrinks of partitions this broker leads, committed by the controller (ReplicaManager IsrShrinksPerSec)");
        let isr_expands = counter(r, "kafka_server_replicamanager_isrexpands", "ISR expansions of partitions this broker leads, committed by the controller (ReplicaManager IsrExpandsPerSec)");
        let cleanings = counter(r, "kafka_log_logcleaner_cleanings", "Log cleanings (compactions) finished");
        let gauge = |r: &mut Registry, name: &str, help: &str| {
            let g = Gauge::default();
            r.register(name, help, g.clone());
            g
        };
        let failed_cleanings = counter(r, "kafka_log_logcleaner_failed_cleanings", "Cleanings that failed since start; the cleaner leaves each such partition alone until a restart (Kafka's uncleanable-partitions-count counts those partitions)");
        let recopy_percent = gauge(
            r,
            "kafka_log_logcleaner_cleaner_recopy_percent",
            "Bytes written by the cleanings over bytes read, in percent (LogCleaner cleaner-recopy-percent)",
        );
        let max_dirty_percent = gauge(r, "kafka_log_logcleanermanager_max_dirty_percent", "The largest dirty ratio of a compacted log at the cleaner's last pick, in percent (LogCleanerManager max-dirty-percent)");
        let last_clean_seconds = Gauge::<f64, AtomicU64>::default();
        r.register_with_unit(
            "kafka_log_logcleaner_last_clean_time",
            "Duration of the last cleaning (LogCleaner max-clean-time-secs is the largest of recent ones)",
            Unit::Seconds,
            last_clean_seconds.clone(),
        );
        let log_dir_size = Family::<LogDirLabels, Gauge>::default();
        r.register_with_unit(
            "kafka_log_logdir_size",
            "Bytes of the partitions' logs in each data directory",
            Unit::Bytes,
            log_dir_size.clone(),
        );
        let produce_waiting = purgatory.get_or_create(&PurgatoryLabels { delayedoperation: "Produce" }).clone();
        let fetch_waiting = purgatory.get_or_create(&PurgatoryLabels { delayedoperation: "Fetch" }).clone();
        Self {
            purgatory,
            produce_waiting,
            fetch_waiting,
            isr_shrinks,
            isr_expands,
            cleanings,
            failed_cleanings,
            recopy_percent,
            last_clean_seconds,
            max_dirty_percent,
            log_dir_size,
        }
    }
}

/// Counts a waiting request in the purgatory gauge while it lives.
pub struct Waiting<'a> {
    gauge: Gauge,
    _metrics: std::marker::PhantomData<&'a ()>,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// Moves `counter` up to `total`, a count kept elsewhere (counters only move by increments).
fn mirror(counter: &Counter, total: u64) {
    let seen = counter.get();
    if total > seen {
        counter.inc_by(total - seen);
    }
}

/// Kafka's `raft-metrics` and `KafkaController` figures.
struct QuorumGauges {
    leader: Gauge,
    epoch: Gauge,
    high_watermark: Gauge,
    log_end_offset: Gauge,
    applied: Gauge,
    active: Gauge,
}

impl QuorumGauges {
    fn register(r: &mut Registry) -> Self {
        let mut gauge = |name: &str, help: &str| {
            let g = Gauge::default();
            r.register(name, help, g.clone());
            g
        };
        Self {
            leader: gauge(
                "kafka_server_raftmetrics_current_leader",
                "The metadata quorum's leader, -1 when unknown (raft-metrics current-leader)",
            ),
            epoch: gauge(
                "kafka_server_raftmetrics_current_epoch",
                "The metadata quorum's epoch (Raft term; raft-metrics current-epoch)",
            ),
            high_watermark: gauge(
                "kafka_server_raftmetrics_high_watermark",
                "The committed offset of the metadata log (raft-metrics high-watermark)",
            ),
            log_end_offset: gauge(
                "kafka_server_raftmetrics_log_end_offset",
                "The end of this node's metadata log (raft-metrics log-end-offset)",
            ),
            applied: gauge(
                "kafka_server_brokermetadatametrics_last_applied_record_offset",
                "The last metadata log offset applied to this node's image (commit lag = high watermark - this)",
            ),
            active: gauge(
                "kafka_controller_kafkacontroller_activecontrollercount",
                "1 on the active controller, else 0 (KafkaController ActiveControllerCount)",
            ),
        }
    }
}

impl std::fmt::Debug for BrokerMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerMetrics").finish_non_exhaustive()
    }
}

impl Default for BrokerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl BrokerMetrics {
    pub fn new() -> Self {
        let mut r = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        r.register(
            "kafka_network_requestmetrics_requests",
            "Requests served, by API and version (Kafka's RequestMetrics RequestsPerSec)",
            requests.clone(),
        );
        let request_time: TimeHistogram = Family::new_with_constructor(time_histogram);
        r.register_with_unit(
            "kafka_network_requestmetrics_totaltime",
            "Time from a request's decoding to its response being ready, by API (Kafka's RequestMetrics TotalTimeMs; a fetch's long poll included)",
            Unit::Seconds,
            request_time.clone(),
        );
        let errors = Family::<ErrorLabels, Counter>::default();
        r.register(
            "kafka_network_requestmetrics_errors",
            "Error codes in responses, by API and Kafka error name; NONE not counted (Kafka's RequestMetrics ErrorsPerSec, for Produce, Fetch, ListOffsets, Metadata, the group and transaction-coordinator APIs, CreateTopics, DeleteTopics and ApiVersions)",
            errors.clone(),
        );
        let bytes_in = Family::<TopicLabels, Counter>::default();
        r.register(
            "kafka_server_brokertopicmetrics_bytesin",
            "Record batch bytes appended by clients' produce requests, by topic (BrokerTopicMetrics BytesInPerSec)",
            bytes_in.clone(),
        );
        let messages_in = Family::<TopicLabels, Counter>::default();
        r.register(
            "kafka_server_brokertopicmetrics_messagesin",
            "Records appended by clients' produce requests, by topic (BrokerTopicMetrics MessagesInPerSec)",
            messages_in.clone(),
        );
        let bytes_out = Family::<TopicLabels, Counter>::default();
        r.register(
            "kafka_server_brokertopicmetrics_bytesout",
            "Record bytes sent to consumers, by topic; followers' fetches not counted (BrokerTopicMetrics BytesOutPerSec)",
            bytes_out.clone(),
        );
        let connections = Family::<ListenerLabels, Gauge>::default();
        r.register(
            "kafka_server_socketservermetrics_connection_count",
            "Open client connections, by listener (socket-server-metrics connection-count)",
            connections.clone(),
        );
        let partitions = Gauge::default();
        r.register(
            "kafka_server_replicamanager_partitioncount",
            "Partitions with a replica on this broker (ReplicaManager PartitionCount)",
            partitions.clone(),
        );
        let leaders = Gauge::default();
        r.register(
            "kafka_server_replicamanager_leadercount",
            "Partitions this broker leads (ReplicaManager LeaderCount)",
            leaders.clone(),
        );
        let under_replicated = Gauge::default();
        r.register(
            "kafka_server_replicamanager_underreplicatedpartitions",
            "Partitions this broker leads whose ISR is smaller than their replica set (ReplicaManager UnderReplicatedPartitions)",
            under_replicated.clone(),
        );
        let under_min_isr = Gauge::default();
        r.register(
            "kafka_server_replicamanager_underminisrpartitioncount",
            "Partitions this broker leads whose ISR is below min.insync.replicas (ReplicaManager UnderMinIsrPartitionCount)",
            under_min_isr.clone(),
        );
        let log_size = Family::<PartitionLabels, Gauge>::default();
        r.register_with_unit(
            "kafka_log_log_size",
            "Bytes of a partition's log on this broker (kafka.log Log Size)",
            Unit::Bytes,
            log_size.clone(),
        );
        let offline = Gauge::default();
        r.register(
            "kafka_controller_kafkacontroller_offlinepartitionscount",
            "Partitions without a leader, counted by each controller from its metadata image (0 on broker-only nodes; KafkaController OfflinePartitionsCount)",
            offline.clone(),
        );
        let group_offset = Family::<GroupPartitionLabels, Gauge>::default();
        r.register(
            "kafka_consumergroup_current_offset",
            "A group's committed offset, for the groups this broker coordinates (kafka_exporter's name)",
            group_offset.clone(),
        );
        let group_lag = Family::<GroupPartitionLabels, Gauge>::default();
        r.register(
            "kafka_consumergroup_lag",
            "The partition's high watermark minus the group's committed offset (0 when ahead), where this broker holds a replica of the partition (kafka_exporter's name)",
            group_lag.clone(),
        );
        let quorum = QuorumGauges::register(&mut r);
        let ops = OperationFigures::register(&mut r);
        let cpu_seconds = Counter::<f64, AtomicU64>::default();
        r.register_with_unit("process_cpu", "CPU time used by the process", Unit::Seconds, cpu_seconds.clone());
        let resident_memory = Gauge::default();
        r.register_with_unit(
            "process_resident_memory",
            "Resident memory of the process",
            Unit::Bytes,
            resident_memory.clone(),
        );
        let open_fds = Gauge::default();
        r.register("process_open_fds", "Open file descriptors of the process", open_fds.clone());
        Self {
            registry: r,
            requests,
            request_time,
            errors,
            bytes_in,
            messages_in,
            bytes_out,
            connections,
            partitions,
            leaders,
            under_replicated,
            under_min_isr,
            log_size,
            offline,
            group_offset,
            group_lag,
            quorum,
            ops,
            cpu_seconds,
            resident_memory,
            open_fds,
            cpu_counted: Mutex::new(0.0),
            topics_seen: Mutex::new(std::collections::HashSet::new()),
            scraping: Mutex::new(()),
        }
    }

    /// One request of `api` `version` served in `elapsed`; a fetch is `FetchFollower` when a
    /// replica sent it (`follower`), else `FetchConsumer`, as Kafka's RequestMetrics name them.
    pub fn request(&self, api: ApiKey, version: i16, follower: bool, elapsed: Duration) {
        let request = request_name(api, follower);
        self.requests.get_or_create(&RequestLabels { request, version }).inc();
        self.request_time.get_or_create(&RequestName { request }).observe(elapsed.as_secs_f64());
    }

    /// `count` times error `code` in responses to `api` (`follower` as for [`Self::request`]).
    pub fn errors(&self, api: ApiKey, follower: bool, code: i16, count: u64) {
        let request = request_name(api, follower);
        let labels = ErrorLabels { request, error: strata_protocol::error::error_name(code) };
        self.errors.get_or_create(&labels).inc_by(count);
    }

    /// A client's batches appended to `topic`: `bytes` of batches holding `messages` records.
    pub fn bytes_in(&self, topic: &TopicLabels, bytes: u64, messages: u64) {
        self.bytes_in.get_or_create(topic).inc_by(bytes);
        self.messages_in.get_or_create(topic).inc_by(messages);
    }

    /// `bytes` of `topic`'s records sent to a consumer.
    pub fn bytes_out(&self, topic: &str, bytes: u64) {
        self.bytes_out.get_or_create(&TopicLabels { topic: topic.to_string() }).inc_by(bytes);
    }

    /// A request of `operation` (`Produce` or `Fetch`) that may wait, counted in the purgatory
    /// gauge until the returned guard drops.
    pub fn waiting(&self, operation: &'static str) -> Waiting<'_> {
        // The two purgatories' gauges are looked up once, not per request (hot path).
        let gauge = match operation {
            "Produce" => self.ops.produce_waiting.clone(),
            "Fetch" => self.ops.fetch_waiting.clone(),
            other => self.ops.purgatory.get_or_create(&PurgatoryLabels { delayedoperation: other }).clone(),
        };
        gauge.inc();
        Waiting { gauge, _metrics: std::marker::PhantomData }
    }

    /// A connection on `listener` opened (`+1`) or closed (`-1`).
    pub fn connection(&self, listener: &str, delta: i64) {
        self.connections.get_or_create(&ListenerLabels { listener: listener.to_string() }).inc_by(delta);
    }

    /// The OpenMetrics text of every family, the point-in-time ones read now from `replicas`
    /// and `/proc/self`. Blocks on `/proc`: call it off the async workers.
    /// `quorum` is this node's view of the metadata quorum, when it has one.
    pub fn encode(
        &self,
        broker: Option<&crate::Broker>,
        quorum: Option<QuorumFigures>,
    ) -> Result<String, std::fmt::Error> {
        let _one_at_a_time = self.scraping.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let replicas = broker.map(|b| b.replicas.as_ref());
        if let Some(q) = quorum {
            let g = &self.quorum;
            g.leader.set(q.leader_id);
            g.epoch.set(i64::try_from(q.epoch).unwrap_or(i64::MAX));
            g.high_watermark.set(i64::try_from(q.high_watermark).unwrap_or(i64::MAX));
            g.log_end_offset.set(i64::try_from(q.log_end_offset).unwrap_or(i64::MAX));
            g.applied.set(i64::try_from(q.applied).unwrap_or(i64::MAX));
            g.active.set(i64::from(q.active));
        }
        if let Some(replicas) = replicas {
            self.read_partitions(replicas);
            // Kafka's controller counts offline partitions; only the active one reports them.
            let offline = match quorum {
                Some(q) if q.active => {
                    replicas.image().topics().flat_map(|t| t.partitions.iter()).filter(|p| p.leader < 0).count()
                }
                _ => 0,
            };
            self.offline.set(i64::try_from(offline).unwrap_or(i64::MAX));
        }
        if let Some(broker) = broker {
            self.read_groups(broker);
            self.forget_deleted_topics(broker);
        }
        self.read_process();
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }

    fn read_partitions(&self, replicas: &ReplicaManager) {
        let (mut count, mut leaders, mut under, mut under_min) = (0, 0, 0, 0);
        let image = replicas.image();
        self.log_size.clear();
        for p in replicas.all_partitions() {
            count += 1;
            if let Some(a) = p.assignment() {
                if a.leader == replicas.node_id() {
                    leaders += 1;
                    // Kafka's Partition: replicas being added by a reassignment do not count,
                    // and the minimum ISR is never above the replication factor.
                    let adding = image
                        .topic(&p.topic)
                        .and_then(|t| t.partitions.get(usize::try_from(p.index).unwrap_or(usize::MAX)))
                        .map_or(0, |r| r.reassignment.adding.len());
                    let factor = a.replicas.len().saturating_sub(adding);
                    under += i64::from(a.isr.len() < factor);
                    under_min += i64::from(a.isr.len() < p.min_insync_replicas().min(factor));
                }
            }
            let size = i64::try_from(p.size_bytes()).unwrap_or(i64::MAX);
            self.log_size.get_or_create(&PartitionLabels { topic: p.topic.clone(), partition: p.index }).set(size);
        }
        let dirs = replicas.log_dirs();
        let mut dir_sizes = vec![0i64; dirs.len()];
        for p in replicas.all_partitions() {
            if let Some(size) = replicas.log_dir_of(&p.topic, p.index).and_then(|d| dir_sizes.get_mut(d)) {
                *size = size.saturating_add(i64::try_from(p.size_bytes()).unwrap_or(i64::MAX));
            }
        }
        for (dir, size) in dirs.iter().zip(dir_sizes) {
            self.ops.log_dir_size.get_or_create(&LogDirLabels { logdir: dir.display().to_string() }).set(size);
        }
        let (shrinks, expands) = replicas.isr_changes();
        mirror(&self.ops.isr_shrinks, shrinks);
        mirror(&self.ops.isr_expands, expands);
        let cleaner = replicas.cleaner_metrics();
        mirror(&self.ops.cleanings, cleaner.cleanings);
        mirror(&self.ops.failed_cleanings, cleaner.failures);
        self.ops.max_dirty_percent.set(i64::try_from(cleaner.max_dirty_percent).unwrap_or(i64::MAX));
        self.ops.last_clean_seconds.set(cleaner.last_duration_ms as f64 / 1000.0);
        if cleaner.bytes_before > 0 {
            let percent = cleaner.bytes_after as f64 * 100.0 / cleaner.bytes_before as f64;
            self.ops.recopy_percent.set(percent.round() as i64);
        }
        self.partitions.set(count);
        self.leaders.set(leaders);
        self.under_replicated.set(under);
        self.under_min_isr.set(under_min);
    }

    /// The committed offsets of the groups this broker coordinates, and their lag against
    /// the high watermark of the partition's replica here (none: no lag figure).
    fn read_groups(&self, broker: &crate::Broker) {
        self.group_offset.clear();
        self.group_lag.clear();
        let committed = broker.groups.each_shard(|shard, _| shard.committed_offsets());
        let partitions: std::collections::HashMap<(String, i32), i64> =
            broker.replicas.all_partitions().iter().map(|p| ((p.topic.clone(), p.index), p.high_watermark())).collect();
        for (group, topic, partition, offset) in committed.into_iter().flatten() {
            let high_watermark = partitions.get(&(topic.clone(), partition)).copied();
            let labels = GroupPartitionLabels { consumergroup: group, topic, partition };
            self.group_offset.get_or_create(&labels).set(offset);
            if let Some(hw) = high_watermark {
                self.group_lag.get_or_create(&labels).set((hw - offset).max(0));
            }
        }
    }

    /// Removes the per-topic series of topics deleted since the last scrape. (A topic created
    /// and deleted between two scrapes keeps its series until the process restarts: bounded
    /// by topic creations, which are authorized.)
    fn forget_deleted_topics(&self, broker: &crate::Broker) {
        let now: std::collections::HashSet<String> = broker.replicas.image().topics().map(|t| t.name.clone()).collect();
        let mut seen = self.topics_seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for gone in seen.difference(&now) {
            let labels = TopicLabels { topic: gone.clone() };
            self.bytes_in.remove(&labels);
            self.messages_in.remove(&labels);
            self.bytes_out.remove(&labels);
        }
        *seen = now;
    }

    fn read_process(&self) {
        if let Some(process) = ProcessStats::read() {
            let mut counted = self.cpu_counted.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if process.cpu_seconds > *counted {
                self.cpu_seconds.inc_by(process.cpu_seconds - *counted);
                *counted = process.cpu_seconds;
            }
            self.resident_memory.set(process.resident_bytes);
            self.open_fds.set(process.open_fds);
        }
    }

    #[cfg(test)]
    pub(crate) fn requests_of(&self, api: ApiKey, version: i16) -> u64 {
        self.requests.get_or_create(&RequestLabels { request: api_name(api), version }).get()
    }
}

/// One open connection in `connection_count`, for as long as it lives.
pub struct ConnectionGauge {
    metrics: std::sync::Arc<BrokerMetrics>,
    listener: String,
}

impl ConnectionGauge {
    pub fn open(metrics: std::sync::Arc<BrokerMetrics>, listener: &str) -> Self {
        metrics.connection(listener, 1);
        Self { metrics, listener: listener.to_string() }
    }
}

impl Drop for ConnectionGauge {
    fn drop(&mut self) {
        self.metrics.connection(&self.listener, -1);
    }
}

/// Kafka's name of an API (`Produce`, `Fetch`, `ApiVersions`, ...), as its metrics' `request`
/// label writes it.
/// Kafka's RequestMetrics name of a request: `FetchFollower` / `FetchConsumer` for fetches by
/// replicas and by clients, else the API's name.
fn request_name(api: ApiKey, follower: bool) -> &'static str {
    match api {
        ApiKey::Fetch if follower => "FetchFollower",
        ApiKey::Fetch => "FetchConsumer",
        _ => api_name(api),
    }
}

fn api_name(api: ApiKey) -> &'static str {
    use ApiKey::*;
    match api {
        Produce => "Produce",
        Fetch => "Fetch",
        ListOffsets => "ListOffsets",
        Metadata => "Metadata",
        OffsetCommit => "OffsetCommit",
        OffsetFetch => "OffsetFetch",
        FindCoordinator => "FindCoordinator",
        JoinGroup => "JoinGroup",
        Heartbeat => "Heartbeat",
        LeaveGroup => "LeaveGroup",
        SyncGroup => "SyncGroup",
        DescribeGroups => "DescribeGroups",
        ListGroups => "ListGroups",
        SaslHandshake => "SaslHandshake",
        ApiVersions => "ApiVersions",
        CreateTopics => "CreateTopics",
        DeleteTopics => "DeleteTopics",
        DeleteRecords => "DeleteRecords",
        InitProducerId => "InitProducerId",
        OffsetForLeaderEpoch => "OffsetForLeaderEpoch",
        AddPartitionsToTxn => "AddPartitionsToTxn",
        AddOffsetsToTxn => "AddOffsetsToTxn",
        EndTxn => "EndTxn",
        WriteTxnMarkers => "WriteTxnMarkers",
        TxnOffsetCommit => "TxnOffsetCommit",
        DescribeAcls => "DescribeAcls",
        CreateAcls => "CreateAcls",
        DeleteAcls => "DeleteAcls",
        DescribeConfigs => "DescribeConfigs",
        AlterConfigs => "AlterConfigs",
        DescribeLogDirs => "DescribeLogDirs",
        SaslAuthenticate => "SaslAuthenticate",
        CreatePartitions => "CreatePartitions",
        DeleteGroups => "DeleteGroups",
        ElectLeaders => "ElectLeaders",
        IncrementalAlterConfigs => "IncrementalAlterConfigs",
        AlterPartitionReassignments => "AlterPartitionReassignments",
        ListPartitionReassignments => "ListPartitionReassignments",
        OffsetDelete => "OffsetDelete",
        DescribeClientQuotas => "DescribeClientQuotas",
        AlterClientQuotas => "AlterClientQuotas",
        DescribeUserScramCredentials => "DescribeUserScramCredentials",
        AlterUserScramCredentials => "AlterUserScramCredentials",
        DescribeCluster => "DescribeCluster",
        DescribeProducers => "DescribeProducers",
        DescribeTransactions => "DescribeTransactions",
        ListTransactions => "ListTransactions",
        ConsumerGroupHeartbeat => "ConsumerGroupHeartbeat",
        ConsumerGroupDescribe => "ConsumerGroupDescribe",
        DescribeTopicPartitions => "DescribeTopicPartitions",
        DescribeQuorum => "DescribeQuorum",
        Envelope => "Envelope",
        _ => "Other",
    }
}

/// What `/proc/self` says of this process.
struct ProcessStats {
    cpu_seconds: f64,
    resident_bytes: i64,
    open_fds: i64,
}

impl ProcessStats {
    /// `None` where `/proc` cannot be read (not Linux).
    fn read() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // After the command name (which may hold spaces, in parentheses), utime and stime are
        // the 12th and 13th fields, in clock ticks: USER_HZ, which Linux fixes at 100 for user
        // space on every architecture (what sysconf(_SC_CLK_TCK) answers).
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
        const USER_HZ: f64 = 100.0;
        let cpu_seconds = (ticks(11)? + ticks(12)?) as f64 / USER_HZ;
        // VmRSS is in kB whatever the page size.
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let rss_kb = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok())?;
        let open_fds = std::fs::read_dir("/proc/self/fd").map(|d| d.count() as i64).unwrap_or(0);
        Some(Self { cpu_seconds, resident_bytes: rss_kb.saturating_mul(1024), open_fds })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_histograms_encode_as_openmetrics() {
        let m = BrokerMetrics::new();
        m.request(ApiKey::Produce, 9, false, Duration::from_millis(3));
        m.request(ApiKey::Produce, 9, false, Duration::from_millis(40));
        m.request(ApiKey::Fetch, 16, true, Duration::from_millis(500));
        m.bytes_in(&TopicLabels { topic: "orders".into() }, 1000, 10);
        m.bytes_out("orders", 600);
        m.connection("PLAINTEXT", 1);
        assert_eq!(m.requests_of(ApiKey::Produce, 9), 2);
        let quorum = QuorumFigures {
            leader_id: 1,
            epoch: 3,
            active: true,
            voter: true,
            high_watermark: 40,
            log_end_offset: 41,
            applied: 40,
        };
        let text = m.encode(None, Some(quorum)).unwrap_or_else(|e| panic!("{e}"));
        for line in [
            "kafka_network_requestmetrics_requests_total{request=\"Produce\",version=\"9\"} 2",
            "kafka_network_requestmetrics_totaltime_seconds_count{request=\"Produce\"} 2",
            "kafka_server_brokertopicmetrics_bytesin_total{topic=\"orders\"} 1000",
            "kafka_server_brokertopicmetrics_messagesin_total{topic=\"orders\"} 10",
            "kafka_server_brokertopicmetrics_bytesout_total{topic=\"orders\"} 600",
            "kafka_server_socketservermetrics_connection_count{listener=\"PLAINTEXT\"} 1",
            "kafka_network_requestmetrics_requests_total{request=\"FetchFollower\",version=\"16\"} 1",
            "kafka_server_raftmetrics_current_leader 1",
            "kafka_server_raftmetrics_current_epoch 3",
            "kafka_server_raftmetrics_high_watermark 40",
            "kafka_server_raftmetrics_log_end_offset 41",
            "kafka_controller_kafkacontroller_activecontrollercount 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        assert!(
            text.contains("kafka_network_requestmetrics_totaltime_seconds_bucket{le=\"0.004\",request=\"Produce\"} 1"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
        // The process's own figures, from /proc.
        let cpu = text.lines().find(|l| l.starts_with("process_cpu_seconds_total ")).unwrap_or_default();
        assert!(cpu.split(' ').nth(1).and_then(|v| v.parse::<f64>().ok()).is_some(), "{text}");
        assert!(text.lines().any(|l| l.starts_with("process_open_fds ") && l != "process_open_fds 0"), "{text}");
    }
}
