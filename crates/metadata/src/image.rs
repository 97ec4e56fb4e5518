//! `MetadataImage`: the state after applying a prefix of the metadata log.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use uuid::Uuid;

use crate::record::{ConfigResource, MetadataRecord};
use crate::MetadataError;

/// One partition's placement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionImage {
    pub partition: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub leader: i32,
    pub leader_epoch: i32,
}

/// One topic: its durable id and its partitions, indexed by partition number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicImage {
    pub name: String,
    pub id: Uuid,
    /// Invariant: `partitions[i].partition == i`.
    pub partitions: Vec<PartitionImage>,
}

/// A registered broker's endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerImage {
    pub broker_id: i32,
    pub host: String,
    pub port: u16,
    pub rack: Option<String>,
}

/// The cluster's metadata after applying records up to some point. Immutable:
/// share it as `Arc<MetadataImage>`; [`apply`](Self::apply) builds a new one.
#[derive(Debug, Clone, Default)]
pub struct MetadataImage {
    /// Number of records applied so far (the next record's index).
    pub records_applied: u64,
    pub cluster_id: Option<String>,
    pub brokers: BTreeMap<i32, BrokerImage>,
    topics: BTreeMap<String, Arc<TopicImage>>,
    topic_names: HashMap<Uuid, String>,
    /// Names of topics holding '.' or '_', by their name with '.' read as '_' (Kafka's
    /// `topicsWithCollisionChars`): such names collide in metric names.
    collision_names: HashMap<String, Vec<String>>,
    /// Ids of every topic a committed record deleted: their data may be removed from disk
    /// (and only theirs: data whose topic the image does not know is kept).
    deleted_topic_ids: HashSet<Uuid>,
    configs: BTreeMap<ConfigResource, BTreeMap<String, String>>,
    /// The first producer id not yet handed out.
    pub next_producer_id: i64,
}

/// What one `apply` changed, for publishers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetadataDelta {
    /// (topic name, topic id, partition) for every partition created.
    pub created_partitions: Vec<(String, Uuid, i32)>,
    /// (name, id) of every topic deleted.
    pub deleted_topics: Vec<(String, Uuid)>,
    /// Resources whose config changed.
    pub changed_configs: Vec<ConfigResource>,
}

impl MetadataImage {
    /// The image of an empty log.
    pub fn empty() -> Self {
        Self::default()
    }

    pub fn topic(&self, name: &str) -> Option<&Arc<TopicImage>> {
        self.topics.get(name)
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
            MetadataRecord::BrokerRegistered { broker_id, host, port, rack } => {
                self.brokers.insert(
                    *broker_id,
                    BrokerImage { broker_id: *broker_id, host: host.clone(), port: *port, rack: rack.clone() },
                );
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
                topic.partitions.push(PartitionImage {
                    partition: *partition,
                    replicas: replicas.clone(),
                    isr: replicas.clone(),
                    leader: *leader,
                    leader_epoch: *leader_epoch,
                });
                delta.created_partitions.push((name, *topic_id, *partition));
            }
            MetadataRecord::TopicDeleted { topic_id } => {
                let name = self
                    .topic_names
                    .remove(topic_id)
                    .ok_or_else(|| MetadataError::Inconsistent(format!("deleting unknown topic {topic_id}")))?;
                self.topics.remove(&name);
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
                delta.created_partitions.retain(|(_, id, _)| id != topic_id);
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
        assert_eq!(delta.created_partitions.len(), 2);
        assert_eq!(img.configs(&t).unwrap()["retention.ms"], "5");
        let (img2, delta) = img.apply(&[MetadataRecord::TopicDeleted { topic_id: id }]).unwrap();
        assert!(img2.topic("t").is_none() && img2.configs(&t).is_none());
        assert!(img2.was_deleted(&id) && !img.was_deleted(&id));
        assert_eq!(delta.deleted_topics, vec![("t".to_string(), id)]);
        // The old image is untouched.
        assert!(img.topic("t").is_some());
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
}
