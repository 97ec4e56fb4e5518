//! Controller decisions: pure functions from the current image and a request
//! to the records that carry it out and the answer for the client. Nothing
//! here does I/O; an empty record list means nothing changes.

use std::collections::BTreeMap;

use strata_metadata::channel::{
    ApiError, ConfigOp, CreateTopicResult, CreateTopicSpec, CreatedTopic, DeleteTopicResult, TopicRef,
};
use strata_metadata::config::{validate_dynamic_broker_config, validate_topic_config, DYNAMIC_BROKER_CONFIGS};
use strata_metadata::{ConfigResource, MetadataImage, MetadataRecord};

use strata_protocol::ResponseError;
use uuid::Uuid;

use crate::partition_change::{change_record, settle, Election, ElectionDefaults, Proposed, Settled};

/// Cluster-wide defaults the decisions need.
#[derive(Debug, Clone)]
pub struct Defaults {
    pub num_partitions: i32,
    pub default_replication_factor: i16,
    /// The broker defaults of `unclean.leader.election.enable` and `min.insync.replicas` (a
    /// topic's own setting wins).
    pub election: ElectionDefaults,
}

/// Largest partition count one request may create (guards memory and disk).
pub const MAX_PARTITIONS_PER_TOPIC: i32 = 100_000;

/// Kafka's topic name rule, as an INVALID_TOPIC_EXCEPTION.
pub fn validate_topic_name(name: &str) -> Result<(), ApiError> {
    strata_metadata::check_topic_name(name).map_err(|m| ApiError::new(ResponseError::InvalidTopicException, m))
}

/// The brokers that may take new replicas: registered and not fenced.
fn eligible_brokers(image: &MetadataImage) -> Vec<crate::placement::Candidate> {
    image
        .brokers
        .values()
        .filter(|b| !b.fenced)
        .map(|b| crate::placement::Candidate { id: b.broker_id, rack: b.rack.clone() })
        .collect()
}

/// Refuses a replication factor the cluster cannot give (Kafka's message).
fn check_replication_factor(image: &MetadataImage, rf: i16) -> Result<(), ApiError> {
    let brokers = eligible_brokers(image).len();
    if rf as usize > brokers {
        return Err(ApiError::new(
            ResponseError::InvalidReplicationFactor,
            format!("Unable to replicate the partition {rf} time(s): The target replication factor of {rf} cannot be reached because only {brokers} broker(s) are registered."),
        ));
    }
    Ok(())
}

fn partition_records(
    image: &MetadataImage,
    topic_id: Uuid,
    range: std::ops::Range<i32>,
    assignment: &BTreeMap<i32, Vec<i32>>,
    rf: i16,
) -> Vec<MetadataRecord> {
    // Where a topic's leaders start in the broker list comes from its id (random), so topics
    // do not all lead from the same broker, and the decision stays a function of its inputs.
    let start = (topic_id.as_u128() % 1_000_003) as usize;
    let count = range.end - range.start;
    let placed = crate::placement::place(&eligible_brokers(image), range.start, count, rf.max(1) as usize, start);
    range
        .zip(placed)
        .map(|(p, auto)| {
            let replicas = assignment.get(&p).cloned().unwrap_or(auto);
            MetadataRecord::PartitionCreated {
                topic_id,
                partition: p,
                leader: replicas.first().copied().unwrap_or(-1),
                replicas,
                leader_epoch: 0,
            }
        })
        .collect()
}

/// CreateTopics. Each topic succeeds or fails on its own.
pub fn create_topics(
    image: &MetadataImage,
    defaults: &Defaults,
    specs: Vec<CreateTopicSpec>,
    validate_only: bool,
) -> (Vec<MetadataRecord>, Vec<CreateTopicResult>) {
    let mut records = Vec::new();
    let mut results = Vec::new();
    for spec in specs {
        let name = spec.name.clone();
        let result = plan_topic(image, defaults, spec).map(|(recs, created)| {
            if !validate_only {
                records.extend(recs);
            }
            created
        });
        results.push(CreateTopicResult { name, result });
    }
    (records, results)
}

fn collision(name: &str, existing: &str) -> ApiError {
    ApiError::new(
        ResponseError::InvalidTopicException,
        format!("Topic '{name}' collides with existing topic: {existing}"),
    )
}

/// Kafka's checks of one partition's manual replica list (`ReplicationControlManager.
/// validateManualPartitionAssignment`): not empty, registered brokers, each broker once, and
/// as many replicas as the topic's other partitions have.
fn validate_replicas(image: &MetadataImage, replicas: &[i32], rf: Option<usize>) -> Result<(), ApiError> {
    let bad = |m: String| Err(ApiError::new(ResponseError::InvalidReplicaAssignment, m));
    if replicas.is_empty() {
        return bad("The manual partition assignment includes an empty replica list.".into());
    }
    let mut sorted = replicas.to_vec();
    sorted.sort_unstable();
    for (i, b) in sorted.iter().enumerate() {
        if !image.brokers.contains_key(b) {
            return bad(format!(
                "The manual partition assignment includes broker {b}, but no such broker is registered."
            ));
        }
        if i > 0 && sorted[i - 1] == *b {
            return bad(format!("The manual partition assignment includes the broker {b} more than once."));
        }
    }
    match rf {
        Some(rf) if rf != replicas.len() => bad(format!(
            "The manual partition assignment includes a partition with {} replica(s), but this is not consistent with previous partitions, which have {rf} replica(s).",
            replicas.len()
        )),
        _ => Ok(()),
    }
}

/// Logs what becomes of a Kafka 3.x topic config that Kafka 4 removed.
fn note_deprecated(resource: &str, key: &str) {
    if let Some(reason) = strata_metadata::config::topic_config(key).and_then(|d| d.deprecated) {
        tracing::info!(topic = resource, config = key, "topic config {key} is {reason}");
    }
}

fn plan_topic(
    image: &MetadataImage,
    defaults: &Defaults,
    spec: CreateTopicSpec,
) -> Result<(Vec<MetadataRecord>, CreatedTopic), ApiError> {
    validate_topic_name(&spec.name)?;
    if image.topic(&spec.name).is_some() {
        return Err(ApiError::new(ResponseError::TopicAlreadyExists, format!("Topic '{}' already exists.", spec.name)));
    }
    if let Some(existing) = image.colliding_topic(&spec.name) {
        return Err(collision(&spec.name, existing));
    }
    let (num_partitions, rf, assignment) = if spec.assignments.is_empty() {
        let n = if spec.num_partitions == -1 { defaults.num_partitions } else { spec.num_partitions };
        let rf =
            if spec.replication_factor == -1 { defaults.default_replication_factor } else { spec.replication_factor };
        if n <= 0 || n > MAX_PARTITIONS_PER_TOPIC {
            return Err(ApiError::new(
                ResponseError::InvalidPartitions,
                format!("Number of partitions must be between 1 and {MAX_PARTITIONS_PER_TOPIC}, got {n}."),
            ));
        }
        if rf <= 0 {
            return Err(ApiError::new(
                ResponseError::InvalidReplicationFactor,
                "Replication factor must be larger than 0.",
            ));
        }
        check_replication_factor(image, rf)?;
        (n, rf, BTreeMap::new())
    } else {
        if spec.num_partitions != -1 || spec.replication_factor != -1 {
            return Err(ApiError::new(ResponseError::InvalidRequest, "Both numPartitions or replicationFactor and replicasAssignments were set. Both cannot be used at the same time."));
        }
        let mut assignment: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
        let mut rf = None;
        for (partition, replicas) in &spec.assignments {
            if assignment.insert(*partition, replicas.clone()).is_some() {
                return Err(ApiError::new(
                    ResponseError::InvalidReplicaAssignment,
                    format!("Found multiple manual partition assignments for partition {partition}"),
                ));
            }
            validate_replicas(image, replicas, rf)?;
            rf = Some(replicas.len());
        }
        let n = assignment.len() as i32;
        if let Some(p) = assignment.keys().copied().zip(0..n).find(|(p, i)| p != i).map(|(p, _)| p) {
            return Err(ApiError::new(
                ResponseError::InvalidReplicaAssignment,
                format!("The manual partition assignment includes the partition id {p}, but partitions must be numbered consecutively from 0."),
            ));
        }
        let rf = i16::try_from(rf.unwrap_or(0)).unwrap_or(i16::MAX);
        (n, rf, assignment)
    };
    for (k, v) in &spec.configs {
        validate_topic_config(k, v).map_err(|m| ApiError::new(ResponseError::InvalidConfig, m))?;
    }
    for k in spec.configs.keys() {
        note_deprecated(&spec.name, k);
    }
    let topic_id = new_topic_id(image, &spec.name);
    let mut records = vec![MetadataRecord::TopicCreated { name: spec.name.clone(), topic_id }];
    records.extend(partition_records(image, topic_id, 0..num_partitions, &assignment, rf));
    for (k, v) in &spec.configs {
        records.push(MetadataRecord::ConfigSet {
            resource: ConfigResource::Topic(spec.name.clone()),
            name: k.clone(),
            value: Some(v.clone()),
        });
    }
    Ok((records, CreatedTopic { topic_id, num_partitions, replication_factor: rf, configs: spec.configs }))
}

/// A new topic's id, derived from the image and the name so that the decision stays a pure
/// function (a replayed simulation makes the same ids). Unique: the image's record count grows
/// with every committed change, and an id some topic has is drawn again. As Kafka's
/// `Uuid.randomUuid`, never the nil id, nor the metadata topic's `AAAAAAAAAAAAAAAAAAAAAQ`, nor
/// one whose base64 form starts with '-' (it would read as a command-line flag).
pub fn new_topic_id(image: &MetadataImage, name: &str) -> Uuid {
    use std::hash::{Hash, Hasher};
    for attempt in 0u64.. {
        let half = |salt: u64| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (image.cluster_id.as_deref(), image.records_applied, name, attempt, salt).hash(&mut h);
            h.finish()
        };
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&half(1).to_be_bytes());
        bytes[8..].copy_from_slice(&half(2).to_be_bytes());
        // The version and variant bits of a random (v4) UUID.
        bytes[6] = (bytes[6] & 0x0f) | 0x40;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        let id = Uuid::from_bytes(bytes);
        // Base64 of the first byte starts with '-' when its top six bits are 62 (URL-safe alphabet).
        let dash = bytes[0] >> 2 == 62;
        if !id.is_nil() && id != Uuid::from_u128(1) && !dash && image.topic_by_id(&id).is_none() {
            return id;
        }
    }
    unreachable!("the id space is not exhausted")
}

/// DeleteTopics.
pub fn delete_topics(image: &MetadataImage, topics: Vec<TopicRef>) -> (Vec<MetadataRecord>, Vec<DeleteTopicResult>) {
    let mut records = Vec::new();
    let mut results = Vec::new();
    for t in topics {
        let found = match &t {
            TopicRef::Name(n) => image.topic(n),
            TopicRef::Id(id) => image.topic_by_id(id),
        };
        match found {
            Some(topic) if !records.contains(&MetadataRecord::TopicDeleted { topic_id: topic.id }) => {
                records.push(MetadataRecord::TopicDeleted { topic_id: topic.id });
                results.push(DeleteTopicResult { name: Some(topic.name.clone()), topic_id: topic.id, result: Ok(()) });
            }
            _ => {
                let (name, id, error) = match t {
                    TopicRef::Name(n) => (Some(n), Uuid::nil(), ResponseError::UnknownTopicOrPartition),
                    TopicRef::Id(id) => (None, id, ResponseError::UnknownTopicId),
                };
                results.push(DeleteTopicResult {
                    name,
                    topic_id: id,
                    result: Err(ApiError::new(error, "This server does not host this topic.")),
                });
            }
        }
    }
    (records, results)
}

/// CreatePartitions for one topic: grows it to `total` partitions, placed by `assignments`
/// (one replica list per new partition) when given.
pub fn create_partitions(
    image: &MetadataImage,
    topic: &str,
    total: i32,
    assignments: Option<&[Vec<i32>]>,
) -> Result<Vec<MetadataRecord>, ApiError> {
    let t = image.topic(topic).ok_or_else(|| {
        ApiError::new(ResponseError::UnknownTopicOrPartition, format!("The topic '{topic}' does not exist."))
    })?;
    let current = t.partitions.len() as i32;
    if total < current {
        return Err(ApiError::new(
            ResponseError::InvalidPartitions,
            format!("Topic currently has {current} partitions, which is higher than the requested {total}."),
        ));
    }
    if total == current {
        return Err(ApiError::new(
            ResponseError::InvalidPartitions,
            format!("Topic already has {current} partitions."),
        ));
    }
    if total > MAX_PARTITIONS_PER_TOPIC {
        return Err(ApiError::new(
            ResponseError::InvalidPartitions,
            format!("A topic may have at most {MAX_PARTITIONS_PER_TOPIC} partitions."),
        ));
    }
    let rf = t.partitions.first().map_or(1, |p| p.replicas.len());
    let mut assignment = BTreeMap::new();
    if let Some(assignments) = assignments {
        let additional = total - current;
        if assignments.len() as i32 != additional {
            return Err(ApiError::new(
                ResponseError::InvalidReplicaAssignment,
                format!(
                    "Attempted to add {additional} additional partition(s), but only {} assignment(s) were specified.",
                    assignments.len()
                ),
            ));
        }
        for (partition, replicas) in (current..total).zip(assignments) {
            validate_replicas(image, replicas, Some(rf))?;
            assignment.insert(partition, replicas.clone());
        }
    }
    Ok(partition_records(image, t.id, current..total, &assignment, i16::try_from(rf).unwrap_or(i16::MAX)))
}

/// AlterConfigs / IncrementalAlterConfigs on one resource.
pub fn alter_configs(
    image: &MetadataImage,
    resource: &ConfigResource,
    ops: &[ConfigOp],
    replace: bool,
) -> Result<Vec<MetadataRecord>, ApiError> {
    match resource {
        ConfigResource::Topic(name) => {
            if image.topic(name).is_none() {
                return Err(ApiError::new(
                    ResponseError::UnknownTopicOrPartition,
                    format!("Topic {name} does not exist."),
                ));
            }
        }
        ConfigResource::Broker(_) => {
            // Only the dynamic broker configs Strata applies at run time (Kafka's
            // DynamicConfig.Broker); the rest are static, set in the config file.
            let fixed: Vec<&str> = ops
                .iter()
                .map(|op| match op {
                    ConfigOp::Set(k, _) | ConfigOp::Delete(k) => k.as_str(),
                })
                .filter(|k| !DYNAMIC_BROKER_CONFIGS.contains(k))
                .collect();
            if !fixed.is_empty() {
                return Err(ApiError::new(
                    ResponseError::InvalidRequest,
                    format!(
                        "Cannot update these configs dynamically: {fixed:?} (dynamic broker configs: {})",
                        DYNAMIC_BROKER_CONFIGS.join(", ")
                    ),
                ));
            }
        }
    }
    let mut records = Vec::new();
    let mut touched = Vec::new();
    for op in ops {
        match op {
            ConfigOp::Set(k, v) => {
                match resource {
                    ConfigResource::Topic(_) => validate_topic_config(k, v),
                    ConfigResource::Broker(_) => validate_dynamic_broker_config(k, v),
                }
                .map_err(|m| ApiError::new(ResponseError::InvalidConfig, m))?;
                if let ConfigResource::Topic(name) = resource {
                    note_deprecated(name, k);
                }
                touched.push(k.clone());
                records.push(MetadataRecord::ConfigSet {
                    resource: resource.clone(),
                    name: k.clone(),
                    value: Some(v.clone()),
                });
            }
            ConfigOp::Delete(k) => {
                if matches!(resource, ConfigResource::Topic(_)) && strata_metadata::config::topic_config(k).is_none() {
                    return Err(ApiError::new(ResponseError::InvalidConfig, format!("Unknown topic config name: {k}")));
                }
                touched.push(k.clone());
                records.push(MetadataRecord::ConfigSet { resource: resource.clone(), name: k.clone(), value: None });
            }
        }
    }
    if replace {
        if let Some(current) = image.configs(resource) {
            for k in current.keys().filter(|k| !touched.contains(k)) {
                records.push(MetadataRecord::ConfigSet { resource: resource.clone(), name: k.clone(), value: None });
            }
        }
    }
    Ok(records)
}

/// CreatePartitions as a commit: the records unless `validate_only`, and the outcome.
pub fn create_partitions_request(
    image: &MetadataImage,
    topic: &str,
    total_count: i32,
    assignments: Option<&[Vec<i32>]>,
    validate_only: bool,
) -> (Vec<MetadataRecord>, Result<(), ApiError>) {
    match create_partitions(image, topic, total_count, assignments) {
        Ok(_) if validate_only => (Vec::new(), Ok(())),
        Ok(records) => (records, Ok(())),
        Err(e) => (Vec::new(), Err(e)),
    }
}

/// AlterConfigs / IncrementalAlterConfigs as a commit: the records unless `validate_only`, and
/// the outcome.
pub fn alter_configs_request(
    image: &MetadataImage,
    resource: &ConfigResource,
    ops: &[ConfigOp],
    replace: bool,
    validate_only: bool,
) -> (Vec<MetadataRecord>, Result<(), ApiError>) {
    match alter_configs(image, resource, ops, replace) {
        Ok(_) if validate_only => (Vec::new(), Ok(())),
        Ok(records) => (records, Ok(())),
        Err(e) => (Vec::new(), Err(e)),
    }
}

/// AllocateProducerIds: the next `count` producer ids (at least one) for `broker_id`.
pub fn allocate_producer_ids(
    image: &MetadataImage,
    broker_id: i32,
    count: i64,
) -> (Vec<MetadataRecord>, std::ops::Range<i64>) {
    let start = image.next_producer_id;
    let end = start.saturating_add(count.max(1));
    (vec![MetadataRecord::ProducerIdsAllocated { broker_id, next_producer_id: end }], start..end)
}

/// The answer to a DeleteTopics whose commit failed with `e`: every topic fails with it.
pub fn delete_topics_failed(topics: Vec<TopicRef>, e: &ApiError) -> Vec<DeleteTopicResult> {
    topics
        .into_iter()
        .map(|t| match t {
            TopicRef::Name(n) => {
                DeleteTopicResult { name: Some(n), topic_id: uuid::Uuid::nil(), result: Err(e.clone()) }
            }
            TopicRef::Id(id) => DeleteTopicResult { name: None, topic_id: id, result: Err(e.clone()) },
        })
        .collect()
}

/// Fences `broker_id` (its session expired, it shuts down, or it came back as a new
/// incarnation): it leads nothing and is in no ISR any more (Kafka's
/// `ReplicationControlManager.handleBrokerFenced`). Each partition that holds it in its ISR
/// settles without it ([`partition_change::settle`]): where that leaves fewer than
/// `min.insync.replicas` in sync it joins the eligible leader replicas (KIP-966), and a
/// partition it led gets the first live member of its new ISR, in replica order, or, with an
/// empty ISR, of its ELR; none: no leader (-1), and clients see LEADER_NOT_AVAILABLE until an
/// eligible replica returns. With `unclean.leader.election.enable` (the topic's, else the
/// default) such a partition gets its first live replica instead, with an ISR of that one
/// replica (Kafka's unclean election: records only the others had are gone). No records
/// when it is fenced already.
pub fn fence_broker(image: &MetadataImage, broker_id: i32, defaults: &ElectionDefaults) -> Vec<MetadataRecord> {
    match image.brokers.get(&broker_id) {
        Some(b) if !b.fenced => {}
        _ => return Vec::new(),
    }
    let mut records = vec![MetadataRecord::BrokerFenced { broker_id }];
    let Ok((fenced, _)) = image.apply(&records) else { return Vec::new() };
    for topic in fenced.topics() {
        for p in topic.partitions.iter().filter(|p| p.leader == broker_id || p.isr.contains(&broker_id)) {
            let isr: Vec<i32> = p.isr.iter().copied().filter(|id| *id != broker_id).collect();
            let settled = settle(&fenced, &topic.name, p, Proposed::isr(p, isr), Election::AsConfigured, defaults);
            records.extend(change_record(topic.id, p, &settled));
        }
    }
    records
}

/// Unfences `broker_id` (it heartbeats again and has caught up with the metadata): it leads
/// again every partition that has no leader and where it is eligible (in the ISR, or in the
/// ELR of an empty ISR), or, with unclean election allowed, any it is a replica of. No records
/// when it is not fenced.
pub fn unfence_broker(image: &MetadataImage, broker_id: i32, defaults: &ElectionDefaults) -> Vec<MetadataRecord> {
    match image.brokers.get(&broker_id) {
        Some(b) if b.fenced => {}
        _ => return Vec::new(),
    }
    let mut records = vec![MetadataRecord::BrokerUnfenced { broker_id }];
    if let Ok((unfenced, _)) = image.apply(&records) {
        records.extend(lead_leaderless(&unfenced, broker_id, defaults));
    }
    records
}

/// Elections for the partitions without a leader that `broker_id` (live in `image`) is a
/// replica of.
fn lead_leaderless(image: &MetadataImage, broker_id: i32, defaults: &ElectionDefaults) -> Vec<MetadataRecord> {
    let mut records = Vec::new();
    for topic in image.topics() {
        for p in topic.partitions.iter().filter(|p| p.leader == -1 && p.replicas.contains(&broker_id)) {
            let settled = settle(image, &topic.name, p, Proposed::as_is(p), Election::AsConfigured, defaults);
            records.extend(change_record(topic.id, p, &settled));
        }
    }
    records
}

/// What a broker registers with (Kafka's BrokerRegistrationRequest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerRegistration {
    pub broker_id: i32,
    /// Its client listener.
    pub host: String,
    pub port: u16,
    /// `broker.rack`.
    pub rack: Option<String>,
    /// New at every start of the broker process; a retry by the same process carries the same.
    pub incarnation_id: Uuid,
    /// The broker epoch of its last clean shutdown, -1 when it did not shut down cleanly.
    pub previous_broker_epoch: i64,
    /// Every listener (clients connect to the one they know by name); `host`/`port` are the
    /// inter-broker listener's. Empty: `host`/`port` serve every listener.
    pub listeners: Vec<strata_metadata::image::Endpoint>,
}

impl BrokerRegistration {
    /// A registration of `broker_id` at `h:<port>` (tests): a new incarnation, after a crash.
    pub fn test(broker_id: i32, port: u16) -> Self {
        Self {
            broker_id,
            host: "h".into(),
            port,
            rack: None,
            incarnation_id: Uuid::new_v4(),
            previous_broker_epoch: -1,
            listeners: Vec::new(),
        }
    }
}

/// BrokerRegistration (KRaft's `ClusterControlManager.registerBroker`): every registration is a
/// new incarnation of the broker, with a new broker epoch (the index of its registration
/// record in the metadata log), and starts fenced; a heartbeat unfences it once its metadata
/// holds that record (it has caught up, see the controller's heartbeat handling), and only
/// then does it lead. An earlier incarnation still unfenced (killed, or a power cut, faster
/// than its session expired) is fenced first, so its partitions pass through a new leader
/// epoch: clients and replicas that saw records the old incarnation may have lost validate
/// their positions (KIP-101/320) instead of reading new records at reused (epoch, offset)
/// pairs.
///
/// `previous_broker_epoch` is the epoch the broker had when it last shut down cleanly (-1
/// after a crash). When it is not the registered epoch the broker leaves every ELR, as in
/// Kafka's `handleBrokerUncleanShutdown` (KIP-966): it may have lost records it had not
/// fsynced. Returns the records and the new broker epoch.
pub fn register_broker(
    image: &MetadataImage,
    registration: BrokerRegistration,
    defaults: &ElectionDefaults,
) -> (Vec<MetadataRecord>, i64) {
    let BrokerRegistration { broker_id, host, port, rack, incarnation_id, previous_broker_epoch, listeners } =
        registration;
    if let Some(b) = image.brokers.get(&broker_id) {
        if b.incarnation_id == Some(incarnation_id) {
            // The same process again (its first attempt was committed but not answered):
            // the same registration, and the same answer.
            return (Vec::new(), b.epoch);
        }
    }
    let mut records = fence_broker(image, broker_id, defaults);
    let mut current = match image.apply(&records) {
        Ok((fenced, _)) => fenced,
        Err(_) => {
            records.clear();
            image.clone()
        }
    };
    if image.brokers.get(&broker_id).is_some_and(|b| b.epoch != previous_broker_epoch) {
        let unclean = leave_eligible_replicas(&current, broker_id, defaults);
        if let Ok((after, _)) = current.apply(&unclean) {
            if !unclean.is_empty() {
                tracing::info!(
                    broker = broker_id,
                    previous_broker_epoch,
                    partitions = unclean.len(),
                    "a broker that shut down uncleanly registers: it leaves the eligible leader replicas (KIP-966)"
                );
            }
            records.extend(unclean);
            current = after;
        }
    }
    drop(current);
    let epoch = image.records_applied as i64 + records.len() as i64;
    records.push(MetadataRecord::BrokerRegistered {
        broker_id,
        host,
        port,
        rack,
        epoch,
        fenced: true,
        incarnation_id: Some(incarnation_id),
        listeners,
    });
    (records, epoch)
}

/// Takes `broker_id` (fenced in `image`) out of every ISR and ELR it is in, as a replica that
/// shut down uncleanly.
fn leave_eligible_replicas(image: &MetadataImage, broker_id: i32, defaults: &ElectionDefaults) -> Vec<MetadataRecord> {
    let mut records = Vec::new();
    for topic in image.topics() {
        for p in topic.partitions.iter().filter(|p| p.isr.contains(&broker_id) || p.elr.contains(&broker_id)) {
            let isr: Vec<i32> = p.isr.iter().copied().filter(|id| *id != broker_id).collect();
            let proposed = Proposed { unclean_shutdown: vec![broker_id], ..Proposed::isr(p, isr) };
            let settled = settle(image, &topic.name, p, proposed, Election::AsConfigured, defaults);
            records.extend(change_record(topic.id, p, &settled));
        }
    }
    records
}

pub use strata_metadata::channel::{ElectionResult, ElectionType, IsrChange, IsrOutcome};

/// ElectLeaders (key 43, KIP-460), as Kafka's `ReplicationControlManager.electLeaders`:
/// - preferred: the first replica leads if it is live and in the ISR; ELECTION_NOT_NEEDED when
///   it leads already, PREFERRED_LEADER_NOT_AVAILABLE when it cannot;
/// - unclean: a partition without a live leader gets the first live ISR member, else the first
///   live replica (its ISR becomes that replica alone: records only the ISR had are lost);
///   ELECTION_NOT_NEEDED when it has a leader, ELIGIBLE_LEADERS_NOT_AVAILABLE when no replica
///   is live.
///
/// An unknown partition is UNKNOWN_TOPIC_OR_PARTITION. With `partitions` `None` every partition
/// is considered and those that needed no election are left out of the results.
pub fn elect_leaders(
    image: &MetadataImage,
    election: ElectionType,
    partitions: Option<&[(String, i32)]>,
    defaults: &ElectionDefaults,
) -> (Vec<MetadataRecord>, Vec<ElectionResult>) {
    let all: Vec<(String, i32)>;
    let wanted = match partitions {
        Some(p) => p,
        None => {
            all =
                image.topics().flat_map(|t| (0..t.partitions.len() as i32).map(move |i| (t.name.clone(), i))).collect();
            &all
        }
    };
    let live = |id: &i32| image.brokers.get(id).is_some_and(|b| !b.fenced);
    let not_needed = |m: &str| ApiError::new(ResponseError::ElectionNotNeeded, m.to_string());
    let mut records = Vec::new();
    let mut results = Vec::new();
    for (topic, index) in wanted {
        let found = image
            .topic(topic)
            .and_then(|t| usize::try_from(*index).ok().and_then(|i| t.partitions.get(i)).map(|p| (t.id, p)));
        let result = match found {
            None => {
                Err(ApiError::new(ResponseError::UnknownTopicOrPartition, format!("{topic}-{index} does not exist")))
            }
            Some((topic_id, p)) => match election {
                ElectionType::Preferred => match p.replicas.first() {
                    Some(pref) if *pref == p.leader => Err(not_needed("the preferred replica leads already")),
                    Some(pref) if live(pref) && p.isr.contains(pref) => {
                        let settled = Settled { leader: *pref, ..Settled::from(p) };
                        records.extend(change_record(topic_id, p, &settled));
                        Ok(())
                    }
                    _ => Err(ApiError::new(
                        ResponseError::PreferredLeaderNotAvailable,
                        format!("the preferred replica of {topic}-{index} is not live or not in the ISR"),
                    )),
                },
                ElectionType::Unclean if p.leader >= 0 && live(&p.leader) => {
                    Err(not_needed("the partition has a leader"))
                }
                ElectionType::Unclean => {
                    let settled = settle(image, topic, p, Proposed::as_is(p), Election::Unclean, defaults);
                    if settled.leader < 0 {
                        Err(ApiError::new(
                            ResponseError::EligibleLeadersNotAvailable,
                            format!("no replica of {topic}-{index} is live"),
                        ))
                    } else {
                        records.extend(change_record(topic_id, p, &settled));
                        Ok(())
                    }
                }
            },
        };
        let skip = partitions.is_none() && matches!(&result, Err(e) if e.error == ResponseError::ElectionNotNeeded);
        if !skip {
            results.push((topic.clone(), *index, result));
        }
    }
    (records, results)
}

/// The preferred-leader elections Kafka's controller makes on its own when
/// `auto.leader.rebalance.enable` is on (checked every `leader.imbalance.check.interval.seconds`):
/// for each broker whose share of the partitions it is preferred for but does not lead exceeds
/// `imbalance_percentage`, those partitions go back to it (where it is live and in the ISR).
pub fn rebalance_leaders(image: &MetadataImage, imbalance_percentage: u32) -> Vec<MetadataRecord> {
    let mut preferred: BTreeMap<i32, Vec<(Uuid, i32, bool)>> = BTreeMap::new();
    for t in image.topics() {
        for p in &t.partitions {
            if let Some(pref) = p.replicas.first() {
                let eligible = image.brokers.get(pref).is_some_and(|b| !b.fenced) && p.isr.contains(pref);
                if p.leader != *pref {
                    preferred.entry(*pref).or_default().push((t.id, p.partition, eligible));
                } else {
                    preferred.entry(*pref).or_default();
                }
            }
        }
    }
    let mut counts: BTreeMap<i32, usize> = BTreeMap::new();
    for t in image.topics() {
        for p in &t.partitions {
            if let Some(pref) = p.replicas.first() {
                *counts.entry(*pref).or_default() += 1;
            }
        }
    }
    let mut records = Vec::new();
    for (broker, moved) in preferred {
        let total = counts.get(&broker).copied().unwrap_or(0);
        if total == 0 || moved.len() * 100 <= total * imbalance_percentage as usize {
            continue;
        }
        for (topic_id, partition, eligible) in moved {
            if eligible {
                records.push(MetadataRecord::PartitionChange {
                    topic_id,
                    partition,
                    leader: Some(broker),
                    isr: None,
                    replicas: None,
                    reassignment: None,
                    elr: None,
                    last_known_elr: None,
                });
            }
        }
    }
    records
}

/// AlterPartition, as Kafka's `ReplicationControlManager.alterPartition` decides it: the
/// sender must be a registered broker at `broker_epoch` (else STALE_BROKER_EPOCH for the whole
/// request). Each partition on its own: UNKNOWN_TOPIC_ID / UNKNOWN_TOPIC_OR_PARTITION;
/// NOT_CONTROLLER when the change is based on newer epochs than this image has (this
/// controller is behind: the leader finds the current one); FENCED_LEADER_EPOCH for an older
/// leader epoch; INVALID_REQUEST from a broker that does not lead it, or for an ISR that is not
/// a set of its replicas holding the leader; INVALID_UPDATE_VERSION for an older partition
/// epoch (a stale change, KIP-497's guard); INELIGIBLE_REPLICA when a new member is not
/// registered, is fenced, or was seen at another broker epoch. An accepted change is one
/// PartitionChange record (the partition epoch goes up, the leader epoch stays).
pub fn alter_partition(
    image: &MetadataImage,
    broker_id: i32,
    broker_epoch: i64,
    changes: &[IsrChange],
    defaults: &ElectionDefaults,
) -> Result<(Vec<MetadataRecord>, Vec<IsrOutcome>), ApiError> {
    match image.brokers.get(&broker_id) {
        Some(b) if b.epoch == broker_epoch => {}
        _ => {
            return Err(ApiError::new(
                ResponseError::StaleBrokerEpoch,
                format!("broker {broker_id} is not registered at epoch {broker_epoch}"),
            ))
        }
    }
    let mut records = Vec::new();
    let mut outcomes = Vec::with_capacity(changes.len());
    for c in changes {
        let Some(topic) = image.topic_by_id(&c.topic_id) else {
            outcomes.push(IsrOutcome::Refused(ResponseError::UnknownTopicId));
            continue;
        };
        let Some(p) = usize::try_from(c.partition).ok().and_then(|i| topic.partitions.get(i)) else {
            outcomes.push(IsrOutcome::Refused(ResponseError::UnknownTopicOrPartition));
            continue;
        };
        let ids: Vec<i32> = c.new_isr.iter().map(|(id, _)| *id).collect();
        let mut unique = ids.clone();
        unique.sort_unstable();
        unique.dedup();
        let eligible = |(id, epoch): &(i32, i64)| {
            image.brokers.get(id).is_some_and(|b| !b.fenced && (*epoch < 0 || b.epoch == *epoch))
        };
        let refused = if c.leader_epoch > p.leader_epoch || c.partition_epoch > p.partition_epoch {
            Some(ResponseError::NotController)
        } else if c.leader_epoch < p.leader_epoch {
            Some(ResponseError::FencedLeaderEpoch)
        } else if broker_id != p.leader {
            Some(ResponseError::InvalidRequest)
        } else if c.partition_epoch < p.partition_epoch {
            Some(ResponseError::InvalidUpdateVersion)
        } else if unique.len() != ids.len() || ids.iter().any(|id| !p.replicas.contains(id)) || !ids.contains(&p.leader)
        {
            Some(ResponseError::InvalidRequest)
        } else if !c.new_isr.iter().all(eligible) {
            Some(ResponseError::IneligibleReplica)
        } else {
            None
        };
        if let Some(e) = refused {
            outcomes.push(IsrOutcome::Refused(e));
            continue;
        }
        // The new ISR may complete a reassignment in progress (and move a leaving leader).
        let settled = settle(image, &topic.name, p, Proposed::isr(p, ids), Election::Clean, defaults);
        let (mut leader_epoch, mut partition_epoch) = (p.leader_epoch, p.partition_epoch);
        if let Some(record) = change_record(c.topic_id, p, &settled) {
            if !settled.reassignment.is_ongoing() && p.reassignment.is_ongoing() {
                tracing::info!(topic = %topic.name, partition = c.partition, replicas = ?settled.replicas,
                    leader = settled.leader, "partition reassignment completed");
            }
            records.push(record);
            partition_epoch += 1;
            if settled.leader != p.leader || p.replicas.iter().any(|r| !settled.replicas.contains(r)) {
                leader_epoch += 1; // as the image applies the record
            }
        }
        outcomes.push(IsrOutcome::Altered { leader: settled.leader, leader_epoch, isr: settled.isr, partition_epoch });
    }
    Ok((records, outcomes))
}

/// AlterUserScramCredentials (Kafka's `ScramControlManager.alterCredentials`): each user is
/// refused as a whole when named twice in the request (DUPLICATE_RESOURCE), with an empty name
/// or an iteration count outside 4096..=16384 (UNACCEPTABLE_CREDENTIAL), an unknown mechanism
/// (UNSUPPORTED_SASL_MECHANISM), or the deletion of a credential it does not have
/// (RESOURCE_NOT_FOUND); the other users' changes are all applied.
pub fn alter_scram_credentials(
    image: &MetadataImage,
    changes: &[strata_metadata::channel::ScramChange],
) -> (Vec<MetadataRecord>, Vec<strata_metadata::channel::ScramResult>) {
    use strata_security::sasl::Mechanism;
    let mut order: Vec<&str> = Vec::new();
    for c in changes {
        if !order.contains(&c.name.as_str()) {
            order.push(&c.name);
        }
    }
    let mut records = Vec::new();
    let mut results = Vec::new();
    for name in order {
        let mine: Vec<_> = changes.iter().filter(|c| c.name == name).collect();
        let refuse = |error: ResponseError, message: String| (name.to_string(), Err(ApiError::new(error, message)));
        if mine.len() > 1 {
            // Kafka refuses a user named more than once in one request.
            results.push(refuse(
                ResponseError::DuplicateResource,
                format!("Cannot alter the credentials of user {name} more than once in one request"),
            ));
            continue;
        }
        let c = mine[0];
        if name.is_empty() {
            results.push(refuse(ResponseError::UnacceptableCredential, "Username must not be empty".into()));
            continue;
        }
        let mechanism = match c.mechanism {
            1 => Mechanism::ScramSha256,
            2 => Mechanism::ScramSha512,
            other => {
                results
                    .push(refuse(ResponseError::UnsupportedSaslMechanism, format!("Unknown SCRAM mechanism {other}")));
                continue;
            }
        };
        match &c.upsert {
            None => {
                let has =
                    image.scram_credentials.get(name).is_some_and(|l| l.iter().any(|x| x.mechanism == c.mechanism));
                if !has {
                    results.push(refuse(
                        ResponseError::ResourceNotFound,
                        format!("Attempt to delete a user credential that does not exist: {name} {}", mechanism.name()),
                    ));
                    continue;
                }
                records.push(MetadataRecord::ScramCredentialRemoved { name: name.to_string(), mechanism: c.mechanism });
            }
            Some(u) => {
                if u.salt.is_empty() || u.salted_password.is_empty() {
                    results.push(refuse(
                        ResponseError::UnacceptableCredential,
                        "The salt and the salted password must not be empty".into(),
                    ));
                    continue;
                }
                if !strata_security::scram::valid_iterations(u.iterations) {
                    results.push(refuse(
                        ResponseError::UnacceptableCredential,
                        format!(
                            "Iterations {} must be from {} to {}",
                            u.iterations,
                            strata_security::scram::MIN_ITERATIONS,
                            strata_security::scram::MAX_ITERATIONS
                        ),
                    ));
                    continue;
                }
                let credential = match strata_security::scram::from_salted_password(
                    mechanism,
                    &u.salted_password,
                    &u.salt,
                    u.iterations as u32,
                ) {
                    Ok(c) => c,
                    Err(e) => {
                        results.push(refuse(ResponseError::UnacceptableCredential, e.to_string()));
                        continue;
                    }
                };
                records.push(MetadataRecord::ScramCredentialSet {
                    name: name.to_string(),
                    mechanism: c.mechanism,
                    salt: credential.salt,
                    stored_key: credential.stored_key,
                    server_key: credential.server_key,
                    iterations: u.iterations,
                });
            }
        }
        results.push((name.to_string(), Ok(())));
    }
    (records, results)
}

/// CreateAcls (Kafka's `AclControlManager.createAcls`): each binding is checked
/// (INVALID_REQUEST with Kafka's reason) and written once; one that exists already succeeds.
pub fn create_acls(
    image: &MetadataImage,
    acls: &[strata_metadata::image::AclImage],
) -> (Vec<MetadataRecord>, Vec<Result<(), ApiError>>) {
    let mut records = Vec::new();
    let mut results = Vec::new();
    let mut added: Vec<&strata_metadata::image::AclImage> = Vec::new();
    for acl in acls {
        let checked = acl_binding(acl);
        if let Err(reason) = checked {
            results.push(Err(ApiError::new(ResponseError::InvalidRequest, reason)));
            continue;
        }
        if !image.acls.values().any(|a| a == acl) && !added.contains(&acl) {
            added.push(acl);
            records.push(MetadataRecord::AclCreated { id: Uuid::new_v4(), acl: acl.clone() });
        }
        results.push(Ok(()));
    }
    (records, results)
}

/// A stored binding as the authorizer reads it; `Err` names an id it does not know.
fn acl_binding(acl: &strata_metadata::image::AclImage) -> Result<strata_security::acl::AclBinding, String> {
    strata_security::acl::AclBinding::from_ids(
        acl.resource_type,
        &acl.name,
        acl.pattern_type,
        &acl.principal,
        &acl.host,
        acl.operation,
        acl.permission,
    )
}

/// DeleteAcls (Kafka's `AclControlManager.deleteAcls`): per filter, every binding it matches
/// is removed (a binding two filters match is removed once and reported by both).
pub fn delete_acls(
    image: &MetadataImage,
    filters: &[strata_metadata::channel::AclFilterSpec],
) -> (Vec<MetadataRecord>, Vec<strata_metadata::channel::AclDeleteResult>) {
    let mut records = Vec::new();
    let mut removed = std::collections::BTreeSet::new();
    let mut results = Vec::new();
    for f in filters {
        let filter = match strata_security::acl::AclFilter::from_ids(
            f.resource_type,
            f.name.as_deref(),
            f.pattern_type,
            f.principal.as_deref(),
            f.host.as_deref(),
            f.operation,
            f.permission,
        ) {
            Ok(filter) => filter,
            Err(reason) => {
                results.push(Err(ApiError::new(ResponseError::InvalidRequest, reason)));
                continue;
            }
        };
        let mut matched = Vec::new();
        for (id, acl) in image.acls.iter() {
            let binding = acl_binding(acl);
            if binding.is_ok_and(|b| filter.matches(&b)) {
                matched.push(acl.clone());
                if removed.insert(*id) {
                    records.push(MetadataRecord::AclRemoved { id: *id });
                }
            }
        }
        results.push(Ok(matched));
    }
    (records, results)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An image with brokers `ids` registered (host "h", port = id), none fenced.
    fn image_with_brokers(ids: &[i32]) -> MetadataImage {
        let records: Vec<MetadataRecord> = ids
            .iter()
            .map(|id| MetadataRecord::BrokerRegistered {
                broker_id: *id,
                host: "h".into(),
                port: *id as u16,
                rack: None,
                epoch: 0,
                fenced: false,
                incarnation_id: None,
                listeners: Vec::new(),
            })
            .collect();
        MetadataImage::empty().apply(&records).unwrap().0
    }

    fn image_with_broker() -> MetadataImage {
        MetadataImage::empty()
            .apply(&[MetadataRecord::BrokerRegistered {
                broker_id: 1,
                host: "h".into(),
                port: 1,
                rack: None,
                epoch: 0,
                fenced: false,
                incarnation_id: None,
                listeners: Vec::new(),
            }])
            .unwrap()
            .0
    }

    const D: Defaults = Defaults {
        num_partitions: 3,
        default_replication_factor: 1,
        election: ElectionDefaults { unclean_leader_election: false, min_insync_replicas: 1 },
    };

    /// KIP-497: only the leader, at the current epochs, with an ISR of eligible replicas
    /// that holds it, changes the ISR; a stale change (older partition epoch) is refused.
    #[test]
    fn alter_partition_follows_kafka() {
        let reg = |id: i32| MetadataRecord::BrokerRegistered {
            broker_id: id,
            host: "h".into(),
            port: id as u16,
            rack: None,
            epoch: 10 + i64::from(id),
            fenced: false,
            incarnation_id: None,
            listeners: Vec::new(),
        };
        let image = MetadataImage::empty().apply(&[reg(1), reg(2), reg(3)]).unwrap().0;
        let topic_id = Uuid::from_u128(7);
        let image = image
            .apply(&[
                MetadataRecord::TopicCreated { name: "t".into(), topic_id },
                MetadataRecord::PartitionCreated {
                    topic_id,
                    partition: 0,
                    replicas: vec![1, 2, 3],
                    leader: 1,
                    leader_epoch: 0,
                },
            ])
            .unwrap()
            .0;
        let p = image.topic("t").unwrap().partitions[0].clone();
        let change = |isr: &[(i32, i64)]| IsrChange {
            topic_id,
            partition: 0,
            leader_epoch: p.leader_epoch,
            partition_epoch: p.partition_epoch,
            new_isr: isr.to_vec(),
        };
        // Shrink to the leader and broker 2.
        let (records, out) = alter_partition(&image, 1, 11, &[change(&[(1, 11), (2, -1)])], &D.election).unwrap();
        let after = image.apply(&records).unwrap().0;
        let q = &after.topic("t").unwrap().partitions[0];
        assert_eq!(q.isr, vec![1, 2]);
        assert_eq!(
            out,
            vec![IsrOutcome::Altered {
                leader: 1,
                leader_epoch: p.leader_epoch,
                isr: vec![1, 2],
                partition_epoch: q.partition_epoch
            }]
        );
        assert_eq!(q.partition_epoch, p.partition_epoch + 1);
        // The same change again, based on the old partition epoch: stale.
        let (r, out) = alter_partition(&after, 1, 11, &[change(&[(1, 11)])], &D.election).unwrap();
        assert!(r.is_empty());
        assert_eq!(out, vec![IsrOutcome::Refused(ResponseError::InvalidUpdateVersion)]);
        let refused = |img: &MetadataImage, broker: i32, epoch: i64, c: IsrChange| {
            alter_partition(img, broker, epoch, &[c], &D.election).map(|(_, o)| o)
        };
        assert_eq!(refused(&image, 1, 99, change(&[(1, 11)])).unwrap_err().error, ResponseError::StaleBrokerEpoch);
        let not_leader = refused(&image, 2, 12, change(&[(1, 11), (2, 12)])).unwrap();
        assert_eq!(not_leader, vec![IsrOutcome::Refused(ResponseError::InvalidRequest)]);
        let without_leader = refused(&image, 1, 11, change(&[(2, 12)])).unwrap();
        assert_eq!(without_leader, vec![IsrOutcome::Refused(ResponseError::InvalidRequest)]);
        let stale_member = refused(&image, 1, 11, change(&[(1, 11), (3, 5)])).unwrap();
        assert_eq!(stale_member, vec![IsrOutcome::Refused(ResponseError::IneligibleReplica)]);
        let older_leader = refused(&image, 1, 11, IsrChange { leader_epoch: p.leader_epoch - 1, ..change(&[(1, 11)]) });
        assert_eq!(older_leader.unwrap(), vec![IsrOutcome::Refused(ResponseError::FencedLeaderEpoch)]);
        let newer = refused(&image, 1, 11, IsrChange { partition_epoch: p.partition_epoch + 1, ..change(&[(1, 11)]) });
        assert_eq!(newer.unwrap(), vec![IsrOutcome::Refused(ResponseError::NotController)]);
        let unknown = refused(&image, 1, 11, IsrChange { topic_id: Uuid::from_u128(8), ..change(&[(1, 11)]) });
        assert_eq!(unknown.unwrap(), vec![IsrOutcome::Refused(ResponseError::UnknownTopicId)]);
    }

    /// KIP-101: a broker that comes back without having been fenced (a kill faster than its
    /// session) still starts a new leader epoch on its partitions, so positions read from its
    /// previous incarnation are validated, never silently reused.
    #[test]
    fn a_new_incarnation_starts_new_leader_epochs() {
        let image = image_with_broker();
        let spec = CreateTopicSpec {
            name: "t".into(),
            num_partitions: 2,
            replication_factor: 1,
            assignments: Vec::new(),
            configs: Default::default(),
        };
        let (records, _) = create_topics(&image, &D, vec![spec], false);
        let image = image.apply(&records).unwrap().0;
        let epochs = |img: &MetadataImage| {
            img.topic("t").unwrap().partitions.iter().map(|p| (p.leader, p.leader_epoch)).collect::<Vec<_>>()
        };
        let before = epochs(&image);
        let old_epoch = image.brokers[&1].epoch;
        let clean = BrokerRegistration { previous_broker_epoch: old_epoch, ..BrokerRegistration::test(1, 1) };
        let (records, epoch) = register_broker(&image, clean.clone(), &D.election);
        let registered = image.apply(&records).unwrap().0;
        // A new incarnation: a new broker epoch, the index of its registration record, and
        // fenced until a heartbeat says it has caught up.
        assert!(epoch > old_epoch && registered.brokers[&1].epoch == epoch && registered.brokers[&1].fenced);
        assert_eq!(epoch, registered.records_applied as i64 - 1, "the registration is the batch's last record");
        // The same incarnation retrying: nothing new, the same epoch.
        assert_eq!(register_broker(&registered, clean, &D.election), (Vec::new(), epoch));
        assert!(epochs(&registered).iter().all(|(l, _)| *l == -1));
        let after = registered.apply(&unfence_broker(&registered, 1, &D.election)).unwrap().0;
        for ((l0, e0), (l1, e1)) in before.iter().zip(epochs(&after)) {
            assert_eq!((*l0, l1), (1, 1));
            assert!(e1 > *e0, "epoch {e0} -> {e1}");
        }
    }

    #[test]
    fn topic_ids_are_a_function_of_the_image_and_never_repeat() {
        let mut image = image_with_broker();
        let first = new_topic_id(&image, "t");
        assert_eq!(first, new_topic_id(&image, "t"), "the same decision makes the same id");
        assert_ne!(first, new_topic_id(&image, "u"));
        let mut seen = std::collections::HashSet::new();
        for i in 0..2000 {
            let name = if i % 2 == 0 { "t".to_string() } else { format!("t{i}") };
            let id = new_topic_id(&image, &name);
            assert!(seen.insert(id), "id {id} given twice");
            assert_eq!(id.get_version_num(), 4);
            let spec = CreateTopicSpec {
                name: format!("x{i}"),
                num_partitions: 1,
                replication_factor: 1,
                assignments: Vec::new(),
                configs: Default::default(),
            };
            let (records, results) = create_topics(&image, &D, vec![spec], false);
            assert!(results[0].result.is_ok());
            image = image.apply(&records).unwrap().0;
        }
    }

    /// KRaft's fencing with a replication factor of 1: a fenced broker's partitions have no
    /// leader (-1) until it is unfenced (or registers again), then it leads them again.
    #[test]
    fn fencing_takes_leadership_away_and_unfencing_gives_it_back() {
        let img = image_with_brokers(&[1, 2]);
        let spec = CreateTopicSpec { name: "t".into(), num_partitions: 4, replication_factor: 1, ..Default::default() };
        let (records, _) = create_topics(&img, &D, vec![spec], false);
        let img = img.apply(&records).unwrap().0;
        let led_by =
            |img: &MetadataImage, id: i32| img.topic("t").unwrap().partitions.iter().filter(|p| p.leader == id).count();
        assert_eq!((led_by(&img, 1), led_by(&img, 2)), (2, 2));

        let fenced = img.apply(&fence_broker(&img, 2, &D.election)).unwrap().0;
        assert!(fenced.brokers[&2].fenced);
        assert_eq!((led_by(&fenced, 1), led_by(&fenced, 2), led_by(&fenced, -1)), (2, 0, 2));
        assert!(fence_broker(&fenced, 2, &D.election).is_empty(), "fencing twice writes nothing");
        // New topics avoid the fenced broker.
        let spec = CreateTopicSpec { name: "u".into(), num_partitions: 2, replication_factor: 1, ..Default::default() };
        let (records, _) = create_topics(&fenced, &D, vec![spec], false);
        let with_u = fenced.apply(&records).unwrap().0;
        assert!(with_u.topic("u").unwrap().partitions.iter().all(|p| p.leader == 1));

        let back = with_u.apply(&unfence_broker(&with_u, 2, &D.election)).unwrap().0;
        assert!(!back.brokers[&2].fenced);
        assert_eq!((led_by(&back, 1), led_by(&back, 2), led_by(&back, -1)), (2, 2, 0));
        assert!(unfence_broker(&back, 2, &D.election).is_empty());
        // Registering again keeps it fenced: a heartbeat unfences it once it has caught up.
        let (records, _) = register_broker(&fenced, BrokerRegistration::test(2, 2), &D.election);
        let again = fenced.apply(&records).unwrap().0;
        assert!(again.brokers[&2].fenced);
        assert_eq!(led_by(&again, 2), 0);
        let again = again.apply(&unfence_broker(&again, 2, &D.election)).unwrap().0;
        assert_eq!(led_by(&again, 2), 2);
    }

    /// Replication factor 3: fencing takes a broker out of every ISR and elects in replica
    /// order from what remains; the last ISR member leaves too but stays eligible (KIP-966:
    /// the partition waits for it); unclean election, when a topic allows it, elects any live
    /// replica instead.
    #[test]
    fn fencing_elects_from_the_isr_and_the_last_member_stays_eligible() {
        let img = image_with_brokers(&[1, 2, 3]);
        let spec = CreateTopicSpec { name: "t".into(), num_partitions: 1, replication_factor: 3, ..Default::default() };
        let (records, _) = create_topics(&img, &D, vec![spec], false);
        let img = img.apply(&records).unwrap().0;
        let part = |img: &MetadataImage| img.topic("t").unwrap().partitions[0].clone();
        let p = part(&img);
        assert_eq!((p.isr.len(), p.replicas.len()), (3, 3));
        let (first, second, third) = (p.replicas[0], p.replicas[1], p.replicas[2]);
        assert_eq!(p.leader, first);

        let img = img.apply(&fence_broker(&img, first, &D.election)).unwrap().0;
        let p = part(&img);
        assert_eq!((p.leader, p.isr.clone(), p.leader_epoch), (second, vec![second, third], 1));
        // A follower fenced: out of the ISR, the leader stays (same leader epoch).
        let img = img.apply(&fence_broker(&img, third, &D.election)).unwrap().0;
        let p = part(&img);
        assert_eq!((p.leader, p.isr.clone(), p.leader_epoch), (second, vec![second], 1));
        // The last ISR member fenced: the ISR is empty, it is the eligible leader replica.
        let img = img.apply(&fence_broker(&img, second, &D.election)).unwrap().0;
        let p = part(&img);
        assert_eq!((p.leader, p.isr.clone(), p.elr.clone()), (-1, vec![], vec![second]));
        // An out-of-sync replica returning does not lead...
        let back = img.apply(&unfence_broker(&img, first, &D.election)).unwrap().0;
        assert_eq!(part(&back).leader, -1);
        // ...unless the topic allows unclean election.
        let unclean = img
            .apply(&[MetadataRecord::ConfigSet {
                resource: ConfigResource::Topic("t".into()),
                name: "unclean.leader.election.enable".into(),
                value: Some("true".into()),
            }])
            .unwrap()
            .0;
        let back = unclean.apply(&unfence_broker(&unclean, first, &D.election)).unwrap().0;
        assert_eq!((part(&back).leader, part(&back).isr), (first, vec![first]));
        // The last ISR member returning leads again.
        let back = img.apply(&unfence_broker(&img, second, &D.election)).unwrap().0;
        assert_eq!((part(&back).leader, part(&back).isr), (second, vec![second]));
    }

    /// KIP-966 after unclean shutdowns (Kafka's `handleBrokerUncleanShutdown` and the "balanced"
    /// last known leader): a broker back from a crash leaves every ELR, one back from a clean
    /// shutdown stays eligible; when no eligible replica is left, the last leader leads again.
    #[test]
    fn unclean_shutdown_leaves_the_elr_and_the_last_known_leader_recovers() {
        let img = image_with_brokers(&[1, 2, 3]);
        let spec = CreateTopicSpec { name: "t".into(), num_partitions: 1, replication_factor: 3, ..Default::default() };
        let img = img.apply(&create_topics(&img, &D, vec![spec], false).0).unwrap().0;
        let min_isr_2 = MetadataRecord::ConfigSet {
            resource: ConfigResource::Topic("t".into()),
            name: "min.insync.replicas".into(),
            value: Some("2".into()),
        };
        let mut img = img.apply(&[min_isr_2]).unwrap().0;
        let part = |img: &MetadataImage| img.topic("t").unwrap().partitions[0].clone();
        let (a, b, c) = (part(&img).replicas[0], part(&img).replicas[1], part(&img).replicas[2]);
        for id in [a, b, c] {
            img = img.apply(&fence_broker(&img, id, &D.election)).unwrap().0;
        }
        let p = part(&img);
        assert_eq!(
            (p.leader, p.isr.clone(), p.elr.clone(), p.last_known_elr.clone()),
            (-1, vec![], vec![b, c], vec![c])
        );
        let register = |img: &MetadataImage, id: i32, previous: i64| {
            let registration =
                BrokerRegistration { previous_broker_epoch: previous, ..BrokerRegistration::test(id, id as u16) };
            img.apply(&register_broker(img, registration, &D.election).0).unwrap().0
        };
        let unfence = |img: &MetadataImage, id: i32| img.apply(&unfence_broker(img, id, &D.election)).unwrap().0;

        // Back from a clean shutdown (the epoch it had): still eligible, it leads.
        let clean = unfence(&register(&img, c, img.brokers[&c].epoch), c);
        let p = part(&clean);
        assert_eq!((p.leader, p.isr.clone(), p.last_known_elr.clone()), (c, vec![c], vec![]));

        // Back from a crash: out of the ELR; the other ELR member leads once it returns.
        let crashed = unfence(&register(&img, c, -1), c);
        assert_eq!((part(&crashed).leader, part(&crashed).elr.clone()), (-1, vec![b]));
        let p = part(&unfence(&crashed, b));
        assert_eq!((p.leader, p.isr.clone()), (b, vec![b]));

        // Both crashed: no eligible replica is left; the last known leader leads when it
        // returns, not another replica.
        let both = register(&register(&img, b, -1), c, -1);
        assert_eq!((part(&both).elr.clone(), part(&both).last_known_elr.clone()), (vec![], vec![c]));
        let only_b = unfence(&unfence(&both, a), b);
        assert_eq!(part(&only_b).leader, -1, "{:?}", part(&only_b));
        let p = part(&unfence(&only_b, c));
        assert_eq!((p.leader, p.isr.clone(), p.last_known_elr.clone()), (c, vec![c], vec![]));

        // A registration from before last known leaders (an empty ISR, one ELR member, none
        // recorded): that member crashing leaves it the last known leader, not none.
        let single = image_with_brokers(&[1]);
        let spec = CreateTopicSpec { name: "t".into(), num_partitions: 1, replication_factor: 1, ..Default::default() };
        let single = single.apply(&create_topics(&single, &D, vec![spec], false).0).unwrap().0;
        let mut old = single.apply(&fence_broker(&single, 1, &D.election)).unwrap().0;
        let topic_id = old.topic("t").unwrap().id;
        old = old
            .apply(&[MetadataRecord::PartitionChange {
                topic_id,
                partition: 0,
                leader: None,
                isr: None,
                replicas: None,
                reassignment: None,
                elr: None,
                last_known_elr: Some(vec![]),
            }])
            .unwrap()
            .0;
        assert_eq!((part(&old).elr.clone(), part(&old).last_known_elr.clone()), (vec![1], vec![]));
        let back = unfence(&register(&old, 1, -1), 1);
        assert_eq!((part(&back).leader, part(&back).isr.clone()), (1, vec![1]));
    }

    #[test]
    fn preferred_and_unclean_elections_and_the_rebalance() {
        let img = image_with_brokers(&[1, 2, 3]);
        let spec = CreateTopicSpec { name: "t".into(), num_partitions: 3, replication_factor: 3, ..Default::default() };
        let img = img.apply(&create_topics(&img, &D, vec![spec], false).0).unwrap().0;
        let part = |img: &MetadataImage, i: usize| img.topic("t").unwrap().partitions[i].clone();
        let t0 = ("t".to_string(), 0);
        // Nothing to do while preferred replicas lead.
        let (records, results) =
            elect_leaders(&img, ElectionType::Preferred, Some(std::slice::from_ref(&t0)), &D.election);
        assert!(records.is_empty());
        assert_eq!(results[0].2.as_ref().unwrap_err().error, ResponseError::ElectionNotNeeded);
        assert!(rebalance_leaders(&img, 10).is_empty());
        // The preferred replica of partition 0 is fenced and comes back: it is in no ISR.
        let pref = part(&img, 0).replicas[0];
        let fenced = img.apply(&fence_broker(&img, pref, &D.election)).unwrap().0;
        let (records, results) =
            elect_leaders(&fenced, ElectionType::Preferred, Some(std::slice::from_ref(&t0)), &D.election);
        assert!(records.is_empty());
        assert_eq!(results[0].2.as_ref().unwrap_err().error, ResponseError::PreferredLeaderNotAvailable);
        let back = fenced.apply(&unfence_broker(&fenced, pref, &D.election)).unwrap().0;
        let mut isr = part(&back, 0).isr;
        isr.push(pref);
        let back = back
            .apply(&[MetadataRecord::PartitionChange {
                topic_id: back.topic("t").unwrap().id,
                partition: 0,
                leader: None,
                isr: Some(isr),
                replicas: None,
                reassignment: None,
                elr: None,
                last_known_elr: None,
            }])
            .unwrap()
            .0;
        // In the ISR again: a preferred election (or the rebalance) gives it its partition back.
        assert_eq!(rebalance_leaders(&back, 10).len(), 1);
        assert!(rebalance_leaders(&back, 100).is_empty(), "one of one moved is not above 100%");
        let (records, results) = elect_leaders(&back, ElectionType::Preferred, None, &D.election);
        assert_eq!(results.len(), 1, "with no list, only the partitions elected are answered: {results:?}");
        let elected = back.apply(&records).unwrap().0;
        assert_eq!(part(&elected, 0).leader, pref);
        // Unclean: not needed with a leader; unknown partitions are named.
        let (_, results) =
            elect_leaders(&elected, ElectionType::Unclean, Some(&[t0, ("t".to_string(), 9)]), &D.election);
        assert_eq!(results[0].2.as_ref().unwrap_err().error, ResponseError::ElectionNotNeeded);
        assert_eq!(results[1].2.as_ref().unwrap_err().error, ResponseError::UnknownTopicOrPartition);
    }

    #[test]
    fn create_topics_validates_and_uses_defaults() {
        let img = image_with_broker();
        let spec = |name: &str, n: i32, rf: i16| CreateTopicSpec {
            name: name.into(),
            num_partitions: n,
            replication_factor: rf,
            ..Default::default()
        };
        let (records, results) = create_topics(
            &img,
            &D,
            vec![spec("a", -1, -1), spec("b", 0, 1), spec("c", 1, 3), spec("bad/name", 1, 1)],
            false,
        );
        assert_eq!(results[0].result.as_ref().unwrap().num_partitions, 3);
        assert_eq!(results[1].result.as_ref().unwrap_err().error, ResponseError::InvalidPartitions);
        assert_eq!(results[2].result.as_ref().unwrap_err().error, ResponseError::InvalidReplicationFactor);
        assert_eq!(results[3].result.as_ref().unwrap_err().error, ResponseError::InvalidTopicException);
        assert_eq!(records.len(), 4);
        let (img, _) = img.apply(&records).unwrap();
        let (recs, res) = create_topics(&img, &D, vec![spec("a", 1, 1)], false);
        assert!(recs.is_empty());
        assert_eq!(res[0].result.as_ref().unwrap_err().error, ResponseError::TopicAlreadyExists);
        let (recs, res) = create_topics(&img, &D, vec![spec("z", 2, 1)], true);
        assert!(recs.is_empty() && res[0].result.is_ok());
    }

    #[test]
    fn colliding_names_and_bad_assignments_are_refused() {
        let img = image_with_broker();
        let spec = |name: &str| CreateTopicSpec {
            name: name.into(),
            num_partitions: 1,
            replication_factor: 1,
            ..Default::default()
        };
        let (records, _) = create_topics(&img, &D, vec![spec("a.b")], false);
        let (img, _) = img.apply(&records).unwrap();
        let (recs, res) = create_topics(&img, &D, vec![spec("a_b"), spec("x.y"), spec("x_y")], false);
        let e = res[0].result.as_ref().unwrap_err();
        assert_eq!(
            (e.error, e.message.as_str()),
            (ResponseError::InvalidTopicException, "Topic 'a_b' collides with existing topic: a.b")
        );
        // As Kafka's controller: names are checked against existing topics only, so two
        // colliding names in one request are both created.
        assert!(res[1].result.is_ok() && res[2].result.is_ok());
        assert_eq!(recs.len(), 4);
        let assigned = |replicas: Vec<Vec<i32>>| CreateTopicSpec {
            name: "m".into(),
            num_partitions: -1,
            replication_factor: -1,
            assignments: replicas.into_iter().enumerate().map(|(i, r)| (i as i32, r)).collect(),
            ..Default::default()
        };
        for bad in [vec![vec![1, 1]], vec![vec![]], vec![vec![9]], vec![vec![1], vec![]]] {
            let (recs, res) = create_topics(&img, &D, vec![assigned(bad.clone())], false);
            assert!(recs.is_empty(), "{bad:?}");
            assert_eq!(res[0].result.as_ref().unwrap_err().error, ResponseError::InvalidReplicaAssignment, "{bad:?}");
        }
        let (recs, _) = create_topics(&img, &D, vec![spec("t")], false);
        let (img, _) = img.apply(&recs).unwrap();
        for bad in [vec![vec![1, 1]], vec![vec![1], vec![1]], vec![vec![7]]] {
            let e = create_partitions(&img, "t", 2, Some(&bad)).unwrap_err();
            assert_eq!(e.error, ResponseError::InvalidReplicaAssignment, "{bad:?}");
        }
        let recs = create_partitions(&img, "t", 2, Some(&[vec![1]])).unwrap();
        assert_eq!(recs.len(), 1);
    }

    #[test]
    fn partitions_and_configs() {
        let img = image_with_broker();
        let (records, _) = create_topics(
            &img,
            &D,
            vec![CreateTopicSpec { name: "t".into(), num_partitions: 2, replication_factor: 1, ..Default::default() }],
            false,
        );
        let (img, _) = img.apply(&records).unwrap();
        assert_eq!(create_partitions(&img, "t", 1, None).unwrap_err().error, ResponseError::InvalidPartitions);
        let recs = create_partitions(&img, "t", 5, None).unwrap();
        let (img, delta) = img.apply(&recs).unwrap();
        assert_eq!(img.topic("t").unwrap().partitions.len(), 5);
        assert_eq!(delta.created_partitions().count(), 3);
        let r = ConfigResource::Topic("t".into());
        assert_eq!(
            alter_configs(&img, &r, &[ConfigOp::Set("retention.ms".into(), "x".into())], false).unwrap_err().error,
            ResponseError::InvalidConfig
        );
        let recs = alter_configs(&img, &r, &[ConfigOp::Set("retention.ms".into(), "5".into())], false).unwrap();
        let (img, _) = img.apply(&recs).unwrap();
        let recs = alter_configs(&img, &r, &[ConfigOp::Set("segment.ms".into(), "5000".into())], true).unwrap();
        let (img, _) = img.apply(&recs).unwrap();
        assert_eq!(img.configs(&r).unwrap().keys().collect::<Vec<_>>(), vec!["segment.ms"]);
        let (recs, res) = delete_topics(&img, vec![TopicRef::Name("t".into()), TopicRef::Name("nope".into())]);
        assert_eq!(recs.len(), 1);
        assert_eq!(res[1].result.as_ref().unwrap_err().error, ResponseError::UnknownTopicOrPartition);
    }

    #[test]
    fn scram_credentials_are_set_removed_and_refused_per_user() {
        use strata_metadata::channel::{ScramChange, ScramUpsert};
        let upsert = |name: &str, mechanism: i8, iterations: i32| ScramChange {
            name: name.into(),
            mechanism,
            upsert: Some(ScramUpsert { salt: b"salt".to_vec(), salted_password: vec![7; 32], iterations }),
        };
        let delete = |name: &str, mechanism: i8| ScramChange { name: name.into(), mechanism, upsert: None };
        let image = MetadataImage::empty();
        let changes = vec![
            upsert("alice", 1, 4096),
            upsert("bob", 2, 100),
            upsert("carol", 3, 4096),
            delete("dave", 1),
            upsert("erin", 1, 4096),
            delete("erin", 2),
            upsert("", 1, 4096),
        ];
        let (records, results) = alter_scram_credentials(&image, &changes);
        let codes: Vec<(String, Option<ResponseError>)> =
            results.iter().map(|(n, r)| (n.clone(), r.as_ref().err().map(|e| e.error))).collect();
        assert_eq!(
            codes,
            vec![
                ("alice".to_string(), None),
                ("bob".to_string(), Some(ResponseError::UnacceptableCredential)),
                ("carol".to_string(), Some(ResponseError::UnsupportedSaslMechanism)),
                ("dave".to_string(), Some(ResponseError::ResourceNotFound)),
                ("erin".to_string(), Some(ResponseError::DuplicateResource)),
                (String::new(), Some(ResponseError::UnacceptableCredential)),
            ]
        );
        assert_eq!(records.len(), 1, "only alice's credential is written");
        let (after, _) = image.apply(&records).unwrap_or_else(|e| panic!("{e}"));
        let stored = &after.scram_credentials["alice"][0];
        assert_eq!((stored.mechanism, stored.iterations, stored.salt.as_slice()), (1, 4096, &b"salt"[..]));
        assert_eq!(stored.stored_key.len(), 32);
        let (records, results) = alter_scram_credentials(&after, &[delete("alice", 1)]);
        assert!(results[0].1.is_ok());
        let (after, _) = after.apply(&records).unwrap_or_else(|e| panic!("{e}"));
        assert!(after.scram_credentials.is_empty());
    }

    #[test]
    fn acls_are_created_once_and_deleted_by_filter() {
        use strata_metadata::channel::AclFilterSpec;
        use strata_metadata::image::AclImage;
        let acl = |name: &str, pattern: i8, op: i8| AclImage {
            resource_type: 2,
            name: name.into(),
            pattern_type: pattern,
            principal: "User:alice".into(),
            host: "*".into(),
            operation: op,
            permission: 3,
        };
        let image = MetadataImage::empty();
        let bad_cluster = AclImage { resource_type: 4, name: "other".into(), ..acl("x", 3, 3) };
        let bad_principal = AclImage { principal: "alice".into(), ..acl("x", 3, 3) };
        let any_op = acl("x", 3, 1);
        let wanted =
            [acl("orders", 3, 4), acl("orders-", 4, 3), acl("orders", 3, 4), bad_cluster, bad_principal, any_op];
        let (records, results) = create_acls(&image, &wanted);
        let ok: Vec<bool> = results.iter().map(Result::is_ok).collect();
        assert_eq!(ok, [true, true, true, false, false, false]);
        assert!(results[3]
            .as_ref()
            .err()
            .is_some_and(|e| e.error == ResponseError::InvalidRequest && e.message.contains("kafka-cluster")));
        assert_eq!(records.len(), 2, "the repeated binding is written once");
        let (image, _) = image.apply(&records).unwrap_or_else(|e| panic!("{e}"));
        let (again, _) = create_acls(&image, &[acl("orders", 3, 4)]);
        assert!(again.is_empty(), "an existing binding is not written twice");
        // MATCH on topic "orders-1" finds the prefixed binding only; ANY on everything finds both.
        let filter = |name: Option<&str>, pattern: i8| AclFilterSpec {
            resource_type: 2,
            name: name.map(str::to_string),
            pattern_type: pattern,
            principal: None,
            host: None,
            operation: 1,
            permission: 1,
        };
        let (records, results) = delete_acls(
            &image,
            &[filter(Some("orders-1"), 2), filter(None, 1), AclFilterSpec { pattern_type: 0, ..filter(None, 1) }],
        );
        assert_eq!(results[0].as_ref().map(Vec::len).ok(), Some(1));
        assert_eq!(results[1].as_ref().map(Vec::len).ok(), Some(2));
        assert!(results[2].is_err(), "UNKNOWN pattern type is refused");
        assert_eq!(records.len(), 2, "each binding removed once");
        let (image, _) = image.apply(&records).unwrap_or_else(|e| panic!("{e}"));
        assert!(image.acls.is_empty());
    }
}
