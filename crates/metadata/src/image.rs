//! `MetadataImage`: the state after applying a prefix of the metadata log, and
//! `MetadataDelta`: what one batch of records changed (Kafka's `MetadataImage` and
//! `MetadataDelta`).
//!
//! An image is persistent: [`MetadataImage::apply`] builds the next one sharing every map node
//! and every topic the records did not touch (imbl's structurally shared maps), so the cost of
//! a change is proportional to what changed, not to the cluster's size.

use std::collections::BTreeMap;
use std::sync::Arc;

use imbl::{HashMap as PHashMap, HashSet as PHashSet, OrdMap};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::record::{ConfigResource, MetadataRecord, Reassignment};
use crate::MetadataError;

/// One partition's placement (Kafka's `PartitionRegistration`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionImage {
    pub partition: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    /// The leader's broker id; -1 when no replica can lead.
    pub leader: i32,
    /// Goes up by one at every change of leader.
    pub leader_epoch: i32,
    /// Goes up by one at every change of the registration (Kafka's partition epoch).
    pub partition_epoch: i32,
    /// The reassignment in progress, if any (default: none).
    #[serde(default)]
    pub reassignment: Reassignment,
    /// Eligible leader replicas (KIP-966): replicas that left the ISR while it was below
    /// `min.insync.replicas`, and so hold every record acknowledged with acks=all. When the
    /// ISR is empty, one of them may lead (its ISR is then itself). Empty while the ISR has
    /// `min.insync.replicas` members.
    #[serde(default)]
    pub elr: Vec<i32>,
    /// KIP-966's `lastKnownElr` as Kafka keeps it by default ("balanced" recovery): the
    /// leader the partition had when its ISR became empty, while neither the ISR nor the ELR
    /// has a member that may lead. It leads again when it returns even after an unclean
    /// shutdown, since no replica is known to hold more. Empty once the partition has a leader.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub last_known_elr: Vec<i32>,
}

impl PartitionImage {
    /// The replicas the partition keeps once its reassignment completes (all of them when
    /// none is in progress), in preference order.
    pub fn target_replicas(&self) -> Vec<i32> {
        self.replicas.iter().copied().filter(|r| !self.reassignment.removing.contains(r)).collect()
    }
}

/// One topic: its durable id and its partitions, indexed by partition number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicImage {
    pub name: String,
    pub id: Uuid,
    /// Invariant: `partitions[i].partition == i`.
    pub partitions: Vec<PartitionImage>,
}

/// A registered broker's endpoint and state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerImage {
    pub broker_id: i32,
    pub host: String,
    pub port: u16,
    pub rack: Option<String>,
    /// The registration's epoch.
    pub epoch: i64,
    /// A fenced broker leads no partition (it stopped heartbeating, or has not caught up).
    pub fenced: bool,
    /// The incarnation (process start) that registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incarnation_id: Option<Uuid>,
    /// Every listener the broker registered, the inter-broker one (`host`, `port`) first.
    /// Empty for a registration of before named listeners: `host`/`port` serve every listener.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<Endpoint>,
}

/// One listener of a registered broker (Kafka's `BrokerEndpoint`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// Upper-case listener name, e.g. `PLAINTEXT`, `SASL_SSL`, `INTERNAL`.
    pub name: String,
    pub host: String,
    pub port: u16,
    /// Kafka's id of the security protocol: 0 PLAINTEXT, 1 SSL, 2 SASL_PLAINTEXT, 3 SASL_SSL.
    pub security_protocol: i16,
}

impl BrokerImage {
    /// Where clients of listener `name` reach this broker, or `None` when the broker has no
    /// such listener (Kafka then leaves the broker out of a Metadata answer on that listener).
    pub fn endpoint(&self, name: &str) -> Option<(&str, u16)> {
        if self.listeners.is_empty() {
            return Some((self.host.as_str(), self.port));
        }
        self.listeners.iter().find(|l| l.name == name).map(|l| (l.host.as_str(), l.port))
    }
}

/// The cluster's metadata after applying records up to some point. Immutable:
/// share it as `Arc<MetadataImage>`; [`apply`](Self::apply) builds a new one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataImage {
    /// Number of records applied so far (the next record's index).
    pub records_applied: u64,
    pub cluster_id: Option<String>,
    pub brokers: OrdMap<i32, BrokerImage>,
    topics: OrdMap<String, Arc<TopicImage>>,
    topic_names: PHashMap<Uuid, String>,
    /// Names of topics holding '.' or '_', by their name with '.' read as '_' (Kafka's
    /// `topicsWithCollisionChars`): such names collide in metric names.
    collision_names: PHashMap<String, Vec<String>>,
    /// Ids of every topic a committed record deleted: their data may be removed from disk
    /// (and only theirs: data whose topic the image does not know is kept).
    deleted_topic_ids: PHashSet<Uuid>,
    /// (A list of pairs in a snapshot: JSON keys are strings.)
    #[serde(with = "pairs")]
    configs: OrdMap<ConfigResource, BTreeMap<String, String>>,
    /// The first producer id not yet handed out.
    pub next_producer_id: i64,
    /// CONTROLLER endpoints of the controllers that joined at run time, by id (host, port);
    /// the initial ones are in `controller.quorum.voters`.
    #[serde(default)]
    pub controllers: OrdMap<i32, (String, u16)>,
    /// SCRAM credentials by user, one per mechanism.
    #[serde(default)]
    pub scram_credentials: OrdMap<String, Vec<ScramCredentialImage>>,
    /// ACL bindings by id.
    #[serde(default)]
    pub acls: OrdMap<Uuid, AclImage>,
    /// Client quotas (KIP-55, KIP-546) by entity: quota key to value (bytes/s for the byte
    /// rates, percent of one thread for `request_percentage`).
    #[serde(default, with = "pairs")]
    pub client_quotas: OrdMap<QuotaEntity, BTreeMap<String, QuotaValue>>,
}

/// A client quota entity: (entity type, entity name) pairs sorted by type, types `client-id`,
/// `ip` and `user`, a `None` name meaning the type's default (Kafka's `ClientQuotaEntity`).
pub type QuotaEntity = Vec<(String, Option<String>)>;

/// A quota's value. The controller admits only finite values above 0, so equality is
/// bitwise (which lets records and images be `Eq`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(transparent)]
pub struct QuotaValue(pub f64);

impl PartialEq for QuotaValue {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}

impl Eq for QuotaValue {}

/// One ACL binding, with Kafka's numeric ids (`AclResourceType`, `PatternType`,
/// `AclOperation`, `AclPermissionType`); `strata_security::acl` gives them meaning.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AclImage {
    pub resource_type: i8,
    pub name: String,
    pub pattern_type: i8,
    /// `User:alice`, or `User:*`.
    pub principal: String,
    /// An address, or `*`.
    pub host: String,
    pub operation: i8,
    pub permission: i8,
}

/// One user's SCRAM credential for one mechanism (what Kafka stores; never the password).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScramCredentialImage {
    /// 1 SCRAM-SHA-256, 2 SCRAM-SHA-512 (Kafka's `ScramMechanism` ids).
    pub mechanism: i8,
    pub salt: Vec<u8>,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
    pub iterations: i32,
}

/// What one `apply` changed, for publishers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetadataDelta {
    /// (name, id) of every topic deleted.
    pub deleted_topics: Vec<(String, Uuid)>,
    /// Resources whose config changed.
    pub changed_configs: Vec<ConfigResource>,
    /// Every partition whose registration changed, by (topic id, partition), with what it
    /// was before the records and after them.
    pub changed_partitions: BTreeMap<(Uuid, i32), PartitionDelta>,
    /// Every broker whose registration or fencing changed.
    pub changed_brokers: BTreeMap<i32, BrokerDelta>,
}

/// One partition's change: `before` is `None` for a partition created by the records,
/// `after` is `None` for one deleted with its topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionDelta {
    pub topic: String,
    pub before: Option<PartitionImage>,
    pub after: Option<PartitionImage>,
}

/// One broker's change (`before` is `None` at its first registration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerDelta {
    pub before: Option<BrokerImage>,
    pub after: Option<BrokerImage>,
}

/// One partition a broker holds a replica of, after a delta.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalPartition {
    pub topic: String,
    pub topic_id: Uuid,
    pub partition: PartitionImage,
    /// Whether the broker held no replica of it before the delta (open its log).
    pub is_new: bool,
}

/// What a delta means for one broker's replicas (Kafka's `LocalReplicaChanges`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalReplicaChanges {
    /// Partitions this broker now leads, whose registration changed.
    pub leaders: Vec<LocalPartition>,
    /// Partitions this broker now follows, whose registration changed.
    pub followers: Vec<LocalPartition>,
    /// (topic, topic id, partition) of replicas this broker no longer holds: their topic was
    /// deleted, or the replica moved away.
    pub deletes: Vec<(String, Uuid, i32)>,
}

impl MetadataDelta {
    /// (topic name, topic id, partition) of every partition the records created (and did not
    /// delete again).
    pub fn created_partitions(&self) -> impl Iterator<Item = (&str, Uuid, i32)> + '_ {
        self.changed_partitions
            .iter()
            .filter(|(_, c)| c.before.is_none() && c.after.is_some())
            .map(|((id, p), c)| (c.topic.as_str(), *id, *p))
    }

    /// The delta from the empty image to `image`: everything in it, as created (what a
    /// publisher registered after start is told first).
    pub fn everything_in(image: &MetadataImage) -> MetadataDelta {
        let mut delta = MetadataDelta::default();
        for t in image.topics() {
            for p in &t.partitions {
                delta.partition_changed(&t.name, t.id, None, Some(p));
            }
        }
        for b in image.brokers.values() {
            delta.broker_changed(None, b);
        }
        delta.changed_configs = image.configs.keys().cloned().collect();
        delta
    }

    /// What changed from `old` to `new` (used when a snapshot replaces an image, so the records
    /// in between are not at hand): every partition, broker and config that differs, and every
    /// topic of `old` that `new` does not hold under the same id.
    pub fn between(old: &MetadataImage, new: &MetadataImage) -> MetadataDelta {
        let mut delta = MetadataDelta::default();
        for topic in old.topics.values() {
            let kept = new.topic_by_id(&topic.id).filter(|t| t.name == topic.name);
            for p in &topic.partitions {
                let after = kept.and_then(|t| t.partitions.get(p.partition as usize));
                if after != Some(p) {
                    delta.partition_changed(&topic.name, topic.id, Some(p), after);
                }
            }
            if kept.is_none() {
                delta.deleted_topics.push((topic.name.clone(), topic.id));
            }
        }
        for topic in new.topics.values() {
            let before = old.topic_by_id(&topic.id).filter(|t| t.name == topic.name);
            for p in &topic.partitions {
                if before.and_then(|t| t.partitions.get(p.partition as usize)).is_none() {
                    delta.partition_changed(&topic.name, topic.id, None, Some(p));
                }
            }
        }
        for b in new.brokers.values() {
            let before = old.brokers.get(&b.broker_id);
            if before != Some(b) {
                delta.broker_changed(before, b);
            }
        }
        let resources: std::collections::BTreeSet<&ConfigResource> =
            old.configs.keys().chain(new.configs.keys()).collect();
        delta.changed_configs =
            resources.into_iter().filter(|r| old.configs.get(*r) != new.configs.get(*r)).cloned().collect();
        delta
    }

    /// What the delta means for the replicas of broker `broker_id` (Kafka's
    /// `TopicsDelta.localChanges`): which it must lead, follow or delete.
    pub fn local_changes(&self, broker_id: i32) -> LocalReplicaChanges {
        let mut out = LocalReplicaChanges::default();
        for ((topic_id, index), change) in &self.changed_partitions {
            let held_before = change.before.as_ref().is_some_and(|p| p.replicas.contains(&broker_id));
            match &change.after {
                Some(after) if after.replicas.contains(&broker_id) => {
                    let local = LocalPartition {
                        topic: change.topic.clone(),
                        topic_id: *topic_id,
                        partition: after.clone(),
                        is_new: !held_before,
                    };
                    if after.leader == broker_id {
                        out.leaders.push(local);
                    } else {
                        out.followers.push(local);
                    }
                }
                _ if held_before => out.deletes.push((change.topic.clone(), *topic_id, *index)),
                _ => {}
            }
        }
        out
    }

    fn partition_changed(
        &mut self,
        topic: &str,
        topic_id: Uuid,
        before: Option<&PartitionImage>,
        after: Option<&PartitionImage>,
    ) {
        let key = (topic_id, after.or(before).map_or(0, |p| p.partition));
        let change = self.changed_partitions.entry(key).or_insert_with(|| PartitionDelta {
            topic: topic.to_string(),
            before: before.cloned(),
            after: None,
        });
        change.after = after.cloned();
        if change.before.is_none() && change.after.is_none() {
            // Created and deleted within the same records: nothing to tell.
            self.changed_partitions.remove(&key);
        }
    }

    fn broker_changed(&mut self, before: Option<&BrokerImage>, after: &BrokerImage) {
        let change = self
            .changed_brokers
            .entry(after.broker_id)
            .or_insert_with(|| BrokerDelta { before: before.cloned(), after: None });
        change.after = Some(after.clone());
    }
}

/// A map as a list of `(key, value)` pairs, for keys JSON cannot use as object keys.
mod pairs {
    use imbl::OrdMap;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<K, V, S>(map: &OrdMap<K, V>, s: S) -> Result<S::Ok, S::Error>
    where
        K: Serialize + Ord + Clone,
        V: Serialize + Clone,
        S: Serializer,
    {
        s.collect_seq(map.iter())
    }

    pub fn deserialize<'de, K, V, D>(d: D) -> Result<OrdMap<K, V>, D::Error>
    where
        K: Deserialize<'de> + Ord + Clone,
        V: Deserialize<'de> + Clone,
        D: Deserializer<'de>,
    {
        Ok(Vec::<(K, V)>::deserialize(d)?.into_iter().collect())
    }
}

/// Version byte of [`MetadataImage::to_snapshot`]'s encoding.
const SNAPSHOT_VERSION: u8 = 1;

impl MetadataImage {
    /// The image as the bytes of a metadata snapshot (Kafka's `.checkpoint` files hold the
    /// records that rebuild an image; here it is the image itself): a version byte, then JSON.
    /// [`from_snapshot`](Self::from_snapshot) gives back an equal image.
    pub fn to_snapshot(&self) -> Vec<u8> {
        let mut out = vec![SNAPSHOT_VERSION];
        // Maps of plain keys and values into a Vec: serialization cannot fail.
        if let Err(e) = serde_json::to_writer(&mut out, self) {
            unreachable!("metadata image serialization failed: {e}");
        }
        out
    }

    /// Parses bytes written by [`to_snapshot`](Self::to_snapshot).
    pub fn from_snapshot(bytes: &[u8]) -> Result<Self, MetadataError> {
        match bytes.split_first() {
            Some((&SNAPSHOT_VERSION, json)) => {
                serde_json::from_slice(json).map_err(|e| MetadataError::Decode(format!("metadata snapshot: {e}")))
            }
            Some((v, _)) => Err(MetadataError::Decode(format!(
                "unknown metadata snapshot version {v} (this build reads {SNAPSHOT_VERSION})"
            ))),
            None => Err(MetadataError::Decode("empty metadata snapshot".into())),
        }
    }

    /// The image of an empty log.
    pub fn empty() -> Self {
        Self::default()
    }

    pub fn topic(&self, name: &str) -> Option<&Arc<TopicImage>> {
        self.topics.get(name)
    }

    /// Partition `index` of topic `name`, if both exist (a negative index never does).
    pub fn partition(&self, name: &str, index: i32) -> Option<&PartitionImage> {
        self.topic(name)?.partitions.get(usize::try_from(index).ok()?)
    }

    pub fn topic_by_id(&self, id: &Uuid) -> Option<&Arc<TopicImage>> {
        self.topic_names.get(id).and_then(|n| self.topics.get(n))
    }

    pub fn topics(&self) -> impl Iterator<Item = &Arc<TopicImage>> {
        self.topics.values()
    }

    /// Whether a committed record deleted the topic with id `id`.
    pub fn was_deleted(&self, id: &Uuid) -> bool {
        self.deleted_topic_ids.contains(id)
    }

    /// An existing topic other than `name` whose name equals `name` once '.' and '_' are
    /// taken as the same character ("a.b" and "a_b"): Kafka refuses to create `name` then.
    pub fn colliding_topic(&self, name: &str) -> Option<&str> {
        if !crate::has_collision_chars(name) {
            return None;
        }
        self.collision_names
            .get(&crate::unify_collision_chars(name))?
            .iter()
            .find(|other| other.as_str() != name)
            .map(String::as_str)
    }

    /// The explicitly set configs of a resource (not the defaults).
    pub fn configs(&self, resource: &ConfigResource) -> Option<&BTreeMap<String, String>> {
        self.configs.get(resource)
    }

    /// Applies `records` in order, returning the new image and what changed.
    /// A record that contradicts the image (a partition of an unknown topic, a
    /// second topic with the same name) is an error: the log is inconsistent.
    pub fn apply(&self, records: &[MetadataRecord]) -> Result<(Self, MetadataDelta), MetadataError> {
        let mut next = self.clone();
        let mut delta = MetadataDelta::default();
        for record in records {
            next.apply_one(record, &mut delta)?;
            next.records_applied += 1;
        }
        Ok((next, delta))
    }

    fn apply_one(&mut self, record: &MetadataRecord, delta: &mut MetadataDelta) -> Result<(), MetadataError> {
        match record {
            MetadataRecord::ClusterCreated { cluster_id } => {
                if self.cluster_id.is_some() {
                    return Err(MetadataError::Inconsistent("cluster created twice".into()));
                }
                self.cluster_id = Some(cluster_id.clone());
            }
            MetadataRecord::BrokerRegistered {
                broker_id,
                host,
                port,
                rack,
                epoch,
                fenced,
                incarnation_id,
                listeners,
            } => {
                let after = BrokerImage {
                    broker_id: *broker_id,
                    host: host.clone(),
                    port: *port,
                    rack: rack.clone(),
                    epoch: *epoch,
                    fenced: *fenced,
                    incarnation_id: *incarnation_id,
                    listeners: listeners.clone(),
                };
                let before = self.brokers.insert(*broker_id, after.clone());
                delta.broker_changed(before.as_ref(), &after);
            }
            MetadataRecord::BrokerFenced { broker_id } | MetadataRecord::BrokerUnfenced { broker_id } => {
                let fenced = matches!(record, MetadataRecord::BrokerFenced { .. });
                let before = self
                    .brokers
                    .get(broker_id)
                    .cloned()
                    .ok_or_else(|| MetadataError::Inconsistent(format!("fencing unknown broker {broker_id}")))?;
                let after = BrokerImage { fenced, ..before.clone() };
                self.brokers.insert(*broker_id, after.clone());
                delta.broker_changed(Some(&before), &after);
            }
            MetadataRecord::TopicCreated { name, topic_id } => {
                if self.topics.contains_key(name) || self.topic_names.contains_key(topic_id) {
                    return Err(MetadataError::Inconsistent(format!("topic {name} ({topic_id}) created twice")));
                }
                self.topic_names.insert(*topic_id, name.clone());
                if crate::has_collision_chars(name) {
                    self.collision_names.entry(crate::unify_collision_chars(name)).or_default().push(name.clone());
                }
                self.topics.insert(
                    name.clone(),
                    Arc::new(TopicImage { name: name.clone(), id: *topic_id, partitions: Vec::new() }),
                );
            }
            MetadataRecord::PartitionCreated { topic_id, partition, replicas, leader, leader_epoch } => {
                let name = self
                    .topic_names
                    .get(topic_id)
                    .cloned()
                    .ok_or_else(|| MetadataError::Inconsistent(format!("partition of unknown topic {topic_id}")))?;
                let topic = self
                    .topics
                    .get_mut(&name)
                    .ok_or_else(|| MetadataError::Inconsistent(format!("topic {name} missing")))?;
                let topic = Arc::make_mut(topic);
                if usize::try_from(*partition).ok() != Some(topic.partitions.len()) {
                    return Err(MetadataError::Inconsistent(format!(
                        "partition {partition} of {name} out of sequence ({} exist)",
                        topic.partitions.len()
                    )));
                }
                let created = PartitionImage {
                    partition: *partition,
                    replicas: replicas.clone(),
                    isr: replicas.clone(),
                    leader: *leader,
                    leader_epoch: *leader_epoch,
                    partition_epoch: 0,
                    reassignment: Reassignment::default(),
                    elr: Vec::new(),
                    last_known_elr: Vec::new(),
                };
                topic.partitions.push(created.clone());
                delta.partition_changed(&name, *topic_id, None, Some(&created));
            }
            MetadataRecord::PartitionChange {
                topic_id,
                partition,
                leader,
                isr,
                replicas,
                reassignment,
                elr,
                last_known_elr,
            } => {
                let name = self.topic_names.get(topic_id).cloned().ok_or_else(|| {
                    MetadataError::Inconsistent(format!("change to a partition of unknown topic {topic_id}"))
                })?;
                let topic = self
                    .topics
                    .get_mut(&name)
                    .ok_or_else(|| MetadataError::Inconsistent(format!("topic {name} missing")))?;
                let topic = Arc::make_mut(topic);
                let current =
                    usize::try_from(*partition).ok().and_then(|i| topic.partitions.get_mut(i)).ok_or_else(|| {
                        MetadataError::Inconsistent(format!("change to unknown partition {name}-{partition}"))
                    })?;
                let before = current.clone();
                // A new leader, or replicas removed (Kafka's
                // `triggerLeaderEpochBumpForReplicaReassignmentIfNeeded`: a removed replica's
                // late requests are fenced by the epoch), start a new leader epoch.
                let mut new_epoch = false;
                if let Some(replicas) = replicas {
                    new_epoch |= current.replicas.iter().any(|r| !replicas.contains(r));
                    current.replicas = replicas.clone();
                }
                if let Some(isr) = isr {
                    current.isr = isr.clone();
                }
                if let Some(r) = reassignment {
                    current.reassignment = r.clone();
                }
                if let Some(elr) = elr {
                    current.elr = elr.clone();
                }
                if let Some(last) = last_known_elr {
                    current.last_known_elr = last.clone();
                }
                if let Some(leader) = leader {
                    new_epoch |= *leader != current.leader;
                    current.leader = *leader;
                }
                if new_epoch {
                    current.leader_epoch += 1;
                }
                current.partition_epoch += 1;
                let after = current.clone();
                delta.partition_changed(&name, *topic_id, Some(&before), Some(&after));
            }
            MetadataRecord::TopicDeleted { topic_id } => {
                let name = self
                    .topic_names
                    .remove(topic_id)
                    .ok_or_else(|| MetadataError::Inconsistent(format!("deleting unknown topic {topic_id}")))?;
                if let Some(topic) = self.topics.remove(&name) {
                    for p in &topic.partitions {
                        delta.partition_changed(&name, *topic_id, Some(p), None);
                    }
                }
                if crate::has_collision_chars(&name) {
                    let key = crate::unify_collision_chars(&name);
                    if let Some(names) = self.collision_names.get_mut(&key) {
                        names.retain(|n| *n != name);
                        if names.is_empty() {
                            self.collision_names.remove(&key);
                        }
                    }
                }
                let resource = ConfigResource::Topic(name.clone());
                if self.configs.remove(&resource).is_some() {
                    delta.changed_configs.push(resource);
                }
                self.deleted_topic_ids.insert(*topic_id);
                delta.deleted_topics.push((name, *topic_id));
            }
            MetadataRecord::ConfigSet { resource, name, value } => {
                let entry = self.configs.entry(resource.clone()).or_default();
                match value {
                    Some(v) => {
                        entry.insert(name.clone(), v.clone());
                    }
                    None => {
                        entry.remove(name);
                    }
                }
                if entry.is_empty() {
                    self.configs.remove(resource);
                }
                if !delta.changed_configs.contains(resource) {
                    delta.changed_configs.push(resource.clone());
                }
            }
            MetadataRecord::ControllerRegistered { controller_id, host, port } => {
                self.controllers.insert(*controller_id, (host.clone(), *port));
            }
            MetadataRecord::ScramCredentialSet { name, mechanism, salt, stored_key, server_key, iterations } => {
                let mut list = self.scram_credentials.get(name).cloned().unwrap_or_default();
                list.retain(|c| c.mechanism != *mechanism);
                list.push(ScramCredentialImage {
                    mechanism: *mechanism,
                    salt: salt.clone(),
                    stored_key: stored_key.clone(),
                    server_key: server_key.clone(),
                    iterations: *iterations,
                });
                list.sort_by_key(|c| c.mechanism);
                self.scram_credentials.insert(name.clone(), list);
            }
            MetadataRecord::ScramCredentialRemoved { name, mechanism } => {
                let mut list = self.scram_credentials.get(name).cloned().unwrap_or_default();
                list.retain(|c| c.mechanism != *mechanism);
                if list.is_empty() {
                    self.scram_credentials.remove(name);
                } else {
                    self.scram_credentials.insert(name.clone(), list);
                }
            }
            MetadataRecord::AclCreated { id, acl } => {
                self.acls.insert(*id, acl.clone());
            }
            MetadataRecord::AclRemoved { id } => {
                self.acls.remove(id);
            }
            MetadataRecord::ClientQuotaSet { entity, key, value } => {
                let mut quotas = self.client_quotas.get(entity).cloned().unwrap_or_default();
                match value {
                    Some(v) => {
                        quotas.insert(key.clone(), *v);
                    }
                    None => {
                        quotas.remove(key);
                    }
                }
                if quotas.is_empty() {
                    self.client_quotas.remove(entity);
                } else {
                    self.client_quotas.insert(entity.clone(), quotas);
                }
            }
            MetadataRecord::ProducerIdsAllocated { next_producer_id, .. } => {
                if *next_producer_id < self.next_producer_id {
                    return Err(MetadataError::Inconsistent("producer ids moved backwards".into()));
                }
                self.next_producer_id = *next_producer_id;
            }
        }
        Ok(())
    }
}

/// Told of every new image, in log order. Implementations must be quick and
/// must not call back into the controller.
pub trait MetadataPublisher: Send + Sync {
    fn publish(&self, image: &Arc<MetadataImage>, delta: &MetadataDelta);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_configure_delete() {
        let id = Uuid::new_v4();
        let t = ConfigResource::Topic("t".into());
        let (img, delta) = MetadataImage::empty()
            .apply(&[
                MetadataRecord::ClusterCreated { cluster_id: "c".into() },
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
                    replicas: vec![1],
                    leader: 1,
                    leader_epoch: 0,
                },
                MetadataRecord::ConfigSet { resource: t.clone(), name: "retention.ms".into(), value: Some("5".into()) },
            ])
            .unwrap();
        assert_eq!(img.records_applied, 5);
        assert_eq!(img.topic_by_id(&id).unwrap().partitions.len(), 2);
        assert_eq!(delta.created_partitions().count(), 2);
        assert_eq!(img.configs(&t).unwrap()["retention.ms"], "5");
        let (img2, delta) = img.apply(&[MetadataRecord::TopicDeleted { topic_id: id }]).unwrap();
        assert!(img2.topic("t").is_none() && img2.configs(&t).is_none());
        assert!(img2.was_deleted(&id) && !img.was_deleted(&id));
        assert_eq!(delta.deleted_topics, vec![("t".to_string(), id)]);
        // The old image is untouched.
        assert!(img.topic("t").is_some());
    }

    /// A snapshot gives back an equal image, and the delta between two images is the one the
    /// records between them made (what a broker is told when it installs a snapshot).
    #[test]
    fn snapshots_round_trip_and_deltas_between_images_match_the_records() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let base = [
            MetadataRecord::ClusterCreated { cluster_id: "c".into() },
            MetadataRecord::BrokerRegistered {
                broker_id: 1,
                host: "h".into(),
                port: 1,
                rack: Some("r".into()),
                epoch: 1,
                fenced: false,
                incarnation_id: None,
                listeners: Vec::new(),
            },
            MetadataRecord::TopicCreated { name: "a.b".into(), topic_id: a },
            MetadataRecord::PartitionCreated {
                topic_id: a,
                partition: 0,
                replicas: vec![1],
                leader: 1,
                leader_epoch: 0,
            },
            MetadataRecord::ConfigSet {
                resource: ConfigResource::Topic("a.b".into()),
                name: "cleanup.policy".into(),
                value: Some("compact".into()),
            },
            MetadataRecord::ConfigSet {
                resource: ConfigResource::Broker(1),
                name: "x".into(),
                value: Some("1".into()),
            },
            MetadataRecord::ProducerIdsAllocated { broker_id: 1, next_producer_id: 77 },
            MetadataRecord::ControllerRegistered { controller_id: 4, host: "h4".into(), port: 9093 },
        ];
        let (old, _) = MetadataImage::empty().apply(&base).unwrap();
        let back = MetadataImage::from_snapshot(&old.to_snapshot()).unwrap();
        assert_eq!(back, old);
        assert_eq!(back.colliding_topic("a_b"), Some("a.b"));
        assert!(MetadataImage::from_snapshot(&[9]).is_err());
        assert!(MetadataImage::from_snapshot(&[]).is_err());

        let later = [
            MetadataRecord::TopicDeleted { topic_id: a },
            MetadataRecord::TopicCreated { name: "b".into(), topic_id: b },
            MetadataRecord::PartitionCreated {
                topic_id: b,
                partition: 0,
                replicas: vec![1],
                leader: 1,
                leader_epoch: 0,
            },
            MetadataRecord::BrokerFenced { broker_id: 1 },
            MetadataRecord::ConfigSet {
                resource: ConfigResource::Broker(1),
                name: "x".into(),
                value: Some("2".into()),
            },
        ];
        let (new, by_records) = old.apply(&later).unwrap();
        let between = MetadataDelta::between(&old, &new);
        assert_eq!(between.changed_partitions, by_records.changed_partitions);
        assert_eq!(between.changed_brokers, by_records.changed_brokers);
        assert_eq!(between.deleted_topics, by_records.deleted_topics);
        let mut configs = by_records.changed_configs.clone();
        configs.sort();
        configs.dedup();
        assert_eq!(between.changed_configs, configs);
        assert_eq!(MetadataDelta::between(&new, &new), MetadataDelta::default());
    }

    #[test]
    fn names_that_differ_in_dot_and_underscore_collide() {
        let id = Uuid::new_v4();
        let (img, _) =
            MetadataImage::empty().apply(&[MetadataRecord::TopicCreated { name: "a.b".into(), topic_id: id }]).unwrap();
        assert_eq!(img.colliding_topic("a_b"), Some("a.b"));
        assert_eq!(img.colliding_topic("a.b"), None, "a topic does not collide with itself");
        assert_eq!(img.colliding_topic("ab"), None);
        let (img, _) = img.apply(&[MetadataRecord::TopicDeleted { topic_id: id }]).unwrap();
        assert_eq!(img.colliding_topic("a_b"), None);
    }

    #[test]
    fn inconsistent_records_are_refused() {
        let id = Uuid::new_v4();
        let img = MetadataImage::empty();
        assert!(img
            .apply(&[MetadataRecord::PartitionCreated {
                topic_id: id,
                partition: 0,
                replicas: vec![1],
                leader: 1,
                leader_epoch: 0
            }])
            .is_err());
        let (img, _) = img.apply(&[MetadataRecord::TopicCreated { name: "t".into(), topic_id: id }]).unwrap();
        assert!(img.apply(&[MetadataRecord::TopicCreated { name: "t".into(), topic_id: Uuid::new_v4() }]).is_err());
        assert!(img
            .apply(&[MetadataRecord::PartitionCreated {
                topic_id: id,
                partition: 3,
                replicas: vec![1],
                leader: 1,
                leader_epoch: 0
            }])
            .is_err());
    }

    fn two_topics() -> (MetadataImage, Uuid, Uuid) {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let mut records = vec![
            MetadataRecord::TopicCreated { name: "a".into(), topic_id: a },
            MetadataRecord::TopicCreated { name: "b".into(), topic_id: b },
        ];
        for (id, leaders) in [(a, [1, 2, 3]), (b, [2, 3, 1])] {
            for (partition, leader) in leaders.into_iter().enumerate() {
                records.push(MetadataRecord::PartitionCreated {
                    topic_id: id,
                    partition: partition as i32,
                    replicas: vec![leader],
                    leader,
                    leader_epoch: 0,
                });
            }
        }
        (MetadataImage::empty().apply(&records).unwrap().0, a, b)
    }

    /// Kafka's `localChanges`: each broker learns which partitions it leads, follows or must
    /// delete, and whether it held them before.
    #[test]
    fn local_changes_tell_each_broker_what_to_lead_follow_and_delete() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let (img, delta) = MetadataImage::empty()
            .apply(&[
                MetadataRecord::TopicCreated { name: "a".into(), topic_id: a },
                MetadataRecord::PartitionCreated {
                    topic_id: a,
                    partition: 0,
                    replicas: vec![1, 2],
                    leader: 1,
                    leader_epoch: 0,
                },
                MetadataRecord::TopicCreated { name: "b".into(), topic_id: b },
                MetadataRecord::PartitionCreated {
                    topic_id: b,
                    partition: 0,
                    replicas: vec![2],
                    leader: 2,
                    leader_epoch: 0,
                },
            ])
            .unwrap();
        let one = delta.local_changes(1);
        assert_eq!((one.leaders.len(), one.followers.len(), one.deletes.len()), (1, 0, 0));
        assert!(one.leaders[0].is_new);
        let two = delta.local_changes(2);
        assert_eq!((two.leaders.len(), two.followers.len()), (1, 1));
        assert_eq!(two.followers[0].topic, "a");

        // Leadership of a-0 moves to 2, its replicas shrink to [2]; b is deleted.
        let (img2, delta) = img
            .apply(&[
                MetadataRecord::PartitionChange {
                    topic_id: a,
                    partition: 0,
                    leader: Some(2),
                    isr: Some(vec![2]),
                    replicas: Some(vec![2]),
                    reassignment: None,
                    elr: None,
                    last_known_elr: None,
                },
                MetadataRecord::TopicDeleted { topic_id: b },
            ])
            .unwrap();
        let p = &img2.topic("a").unwrap().partitions[0];
        assert_eq!((p.leader, p.leader_epoch, p.partition_epoch, p.isr.clone()), (2, 1, 1, vec![2]));
        assert_eq!(delta.local_changes(1).deletes, vec![("a".to_string(), a, 0)]);
        let two = delta.local_changes(2);
        assert_eq!(two.leaders.len(), 1);
        assert!(!two.leaders[0].is_new, "broker 2 held a-0 already");
        assert_eq!(two.deletes, vec![("b".to_string(), b, 0)]);
        assert!(delta.local_changes(3).leaders.is_empty() && delta.local_changes(3).deletes.is_empty());
        // An ISR-only change keeps the leader epoch and bumps the partition epoch.
        let (img3, _) = img2
            .apply(&[MetadataRecord::PartitionChange {
                topic_id: a,
                partition: 0,
                leader: None,
                isr: Some(vec![2]),
                replicas: None,
                reassignment: None,
                elr: None,
                last_known_elr: None,
            }])
            .unwrap();
        let p = &img3.topic("a").unwrap().partitions[0];
        assert_eq!((p.leader_epoch, p.partition_epoch), (1, 2));
        assert!(img3
            .apply(&[MetadataRecord::PartitionChange {
                topic_id: a,
                partition: 9,
                leader: None,
                isr: None,
                replicas: None,
                reassignment: None,
                elr: None,
                last_known_elr: None,
            }])
            .is_err());
    }

    #[test]
    fn brokers_register_fence_and_unfence() {
        let register = MetadataRecord::BrokerRegistered {
            broker_id: 4,
            host: "h".into(),
            port: 9092,
            rack: Some("r1".into()),
            epoch: 7,
            fenced: true,
            incarnation_id: None,
            listeners: Vec::new(),
        };
        let (img, delta) = MetadataImage::empty().apply(&[register]).unwrap();
        assert!(img.brokers[&4].fenced);
        assert!(delta.changed_brokers[&4].before.is_none());
        let (img, delta) = img.apply(&[MetadataRecord::BrokerUnfenced { broker_id: 4 }]).unwrap();
        assert!(!img.brokers[&4].fenced);
        assert_eq!(delta.changed_brokers[&4].before.as_ref().map(|b| b.fenced), Some(true));
        assert!(img.apply(&[MetadataRecord::BrokerFenced { broker_id: 5 }]).is_err());
    }

    /// A new image shares every topic the records did not touch with the one before.
    #[test]
    fn images_share_what_did_not_change() {
        let (img, a, b) = two_topics();
        let (next, _) = img
            .apply(&[MetadataRecord::PartitionChange {
                topic_id: a,
                partition: 1,
                leader: Some(3),
                isr: None,
                replicas: Some(vec![2, 3]),
                reassignment: None,
                elr: None,
                last_known_elr: None,
            }])
            .unwrap();
        assert!(Arc::ptr_eq(img.topic_by_id(&b).unwrap(), next.topic_by_id(&b).unwrap()));
        assert!(!Arc::ptr_eq(img.topic_by_id(&a).unwrap(), next.topic_by_id(&a).unwrap()));
        assert_eq!(img.topic_by_id(&a).unwrap().partitions[1].leader, 2, "the old image is untouched");
    }

    /// Records written before the fencing and epoch fields existed still decode.
    #[test]
    fn older_broker_records_decode() {
        let old = br#"{"type":"BrokerRegistered","broker_id":1,"host":"h","port":9092}"#;
        let mut bytes = vec![1u8];
        bytes.extend_from_slice(old);
        let r = MetadataRecord::decode(&bytes).unwrap();
        assert_eq!(
            r,
            MetadataRecord::BrokerRegistered {
                broker_id: 1,
                host: "h".into(),
                port: 9092,
                rack: None,
                epoch: 0,
                fenced: false,
                incarnation_id: None,
                listeners: Vec::new()
            }
        );
    }
}
