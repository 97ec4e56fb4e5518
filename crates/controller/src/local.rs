//! The single-node controller: decisions applied through the local metadata
//! log, one change at a time.

use std::ops::Range;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use strata_metadata::channel::{
    ApiError, BoxFuture, ConfigOp, ControllerChannel, CreateTopicResult, CreateTopicSpec, DeleteTopicResult, TopicRef,
};
use strata_metadata::{ConfigResource, MetadataImage, MetadataPublisher, MetadataRecord};
use strata_protocol::ResponseError;

use crate::decisions::{self, Defaults};
use crate::metadata_log::MetadataLog;
use crate::ControllerError;

/// What the controller needs to know about this node and the cluster defaults.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    pub node_id: i32,
    pub advertised_host: String,
    pub advertised_port: u16,
    pub rack: Option<String>,
    pub defaults: Defaults,
}

struct State {
    image: Arc<MetadataImage>,
    log: MetadataLog,
}

/// A one-voter controller whose log is a local file. Changes are serialized
/// by one mutex: decide, append + fsync, apply, publish, answer.
pub struct LocalController {
    config: ControllerConfig,
    state: Mutex<State>,
    publishers: Mutex<Vec<Arc<dyn MetadataPublisher>>>,
}

impl LocalController {
    /// Opens the metadata log in `dir`, replays it, and on first start writes
    /// the cluster id; (re-)registers this node if its endpoint changed.
    ///
    /// `cluster_id` is the cluster the data directory belongs to (its `meta.properties`), if
    /// known: a log that holds no cluster, or another, is refused ([`ControllerError::Identity`])
    /// rather than replayed, so a lost or foreign metadata log never makes the broker start a
    /// new cluster over existing data. So is a log whose registered brokers do not include
    /// this node's id (the node id changed).
    pub fn open(dir: &Path, config: ControllerConfig, cluster_id: Option<&str>) -> Result<Self, ControllerError> {
        let (mut log, records) = MetadataLog::open(dir)?;
        let (mut image, _) = MetadataImage::empty().apply(&records)?;
        let log_path = dir.join("metadata.log");
        match (cluster_id, image.cluster_id.as_deref()) {
            (Some(expected), None) => {
                return Err(ControllerError::Identity(format!(
                    "the metadata log {} is missing or empty, but the data directory belongs to cluster {expected} (meta.properties); refusing to start a new cluster over its data: restore the metadata log",
                    log_path.display()
                )))
            }
            (Some(expected), Some(found)) if expected != found => {
                return Err(ControllerError::Identity(format!(
                    "the metadata log {} belongs to cluster {found}, but the data directory to cluster {expected} (meta.properties); refusing to start",
                    log_path.display()
                )))
            }
            _ => {}
        }
        if !image.brokers.is_empty() && !image.brokers.contains_key(&config.node_id) {
            let stored: Vec<String> = image.brokers.keys().map(i32::to_string).collect();
            return Err(ControllerError::Identity(format!(
                "node.id {} does not match the stored {} (registered in {}); start with that node id, or give this node its own data directory",
                config.node_id,
                stored.join(", "),
                log_path.display()
            )));
        }
        let mut boot = Vec::new();
        if image.cluster_id.is_none() {
            boot.push(MetadataRecord::ClusterCreated { cluster_id: new_cluster_id() });
        }
        let me = MetadataRecord::BrokerRegistered {
            broker_id: config.node_id,
            host: config.advertised_host.clone(),
            port: config.advertised_port,
            rack: config.rack.clone(),
        };
        let registered = image.brokers.get(&config.node_id).is_some_and(|b| {
            b.host == config.advertised_host && b.port == config.advertised_port && b.rack == config.rack
        });
        if !registered {
            boot.push(me);
        }
        if !boot.is_empty() {
            log.append(&boot)?;
            image = image.apply(&boot)?.0;
        }
        tracing::info!(
            cluster_id = image.cluster_id.as_deref().unwrap_or(""),
            records = image.records_applied,
            "metadata log loaded"
        );
        Ok(Self {
            config,
            state: Mutex::new(State { image: Arc::new(image), log }),
            publishers: Mutex::new(Vec::new()),
        })
    }

    /// The current image.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).image.clone()
    }

    /// Adds a publisher and immediately publishes the current image to it
    /// with a delta that creates everything that exists.
    pub fn register_publisher(&self, publisher: Arc<dyn MetadataPublisher>) {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let mut delta = strata_metadata::MetadataDelta::default();
        for t in state.image.topics() {
            for p in &t.partitions {
                delta.created_partitions.push((t.name.clone(), t.id, p.partition));
            }
        }
        publisher.publish(&state.image, &delta);
        self.publishers.lock().unwrap_or_else(PoisonError::into_inner).push(publisher);
    }

    /// Runs one decision under the lock and commits its records.
    fn commit<T>(&self, decide: impl FnOnce(&MetadataImage) -> (Vec<MetadataRecord>, T)) -> Result<T, ApiError> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let (records, answer) = decide(&state.image);
        if records.is_empty() {
            return Ok(answer);
        }
        let (image, delta) = state.image.apply(&records).map_err(internal)?;
        state.log.append(&records).map_err(|e| {
            tracing::error!(error = %e, "cannot write the metadata log");
            ApiError::new(ResponseError::KafkaStorageError, e.to_string())
        })?;
        let image = Arc::new(image);
        state.image = image.clone();
        for p in self.publishers.lock().unwrap_or_else(PoisonError::into_inner).iter() {
            p.publish(&image, &delta);
        }
        Ok(answer)
    }
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(ResponseError::UnknownServerError, e.to_string())
}

/// A cluster id as Kafka makes them: a random UUID in URL-safe base64, 22 chars.
fn new_cluster_id() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bits = uuid::Uuid::new_v4().as_u128();
    (0..22).map(|i| ALPHABET[((bits >> (i * 6)) & 63) as usize] as char).collect()
}

impl ControllerChannel for LocalController {
    fn create_topics(
        &self,
        topics: Vec<CreateTopicSpec>,
        validate_only: bool,
    ) -> BoxFuture<'_, Vec<CreateTopicResult>> {
        Box::pin(async move {
            let names: Vec<String> = topics.iter().map(|t| t.name.clone()).collect();
            match self.commit(|img| decisions::create_topics(img, &self.config.defaults, topics, validate_only)) {
                Ok(results) => results,
                Err(e) => names.into_iter().map(|name| CreateTopicResult { name, result: Err(e.clone()) }).collect(),
            }
        })
    }

    fn delete_topics(&self, topics: Vec<TopicRef>) -> BoxFuture<'_, Vec<DeleteTopicResult>> {
        Box::pin(async move {
            let refs = topics.clone();
            match self.commit(|img| decisions::delete_topics(img, topics)) {
                Ok(results) => results,
                Err(e) => refs
                    .into_iter()
                    .map(|t| match t {
                        TopicRef::Name(n) => {
                            DeleteTopicResult { name: Some(n), topic_id: uuid::Uuid::nil(), result: Err(e.clone()) }
                        }
                        TopicRef::Id(id) => DeleteTopicResult { name: None, topic_id: id, result: Err(e.clone()) },
                    })
                    .collect(),
            }
        })
    }

    fn create_partitions(
        &self,
        topic: String,
        total_count: i32,
        assignments: Option<Vec<Vec<i32>>>,
        validate_only: bool,
    ) -> BoxFuture<'_, Result<(), ApiError>> {
        Box::pin(async move {
            self.commit(|img| match decisions::create_partitions(img, &topic, total_count, assignments.as_deref()) {
                Ok(_) if validate_only => (Vec::new(), Ok(())),
                Ok(records) => (records, Ok(())),
                Err(e) => (Vec::new(), Err(e)),
            })?
        })
    }

    fn alter_configs(
        &self,
        resource: ConfigResource,
        ops: Vec<ConfigOp>,
        replace: bool,
        validate_only: bool,
    ) -> BoxFuture<'_, Result<(), ApiError>> {
        Box::pin(async move {
            self.commit(|img| match decisions::alter_configs(img, &resource, &ops, replace) {
                Ok(_) if validate_only => (Vec::new(), Ok(())),
                Ok(records) => (records, Ok(())),
                Err(e) => (Vec::new(), Err(e)),
            })?
        })
    }

    fn allocate_producer_ids(&self, broker_id: i32, count: i64) -> BoxFuture<'_, Result<Range<i64>, ApiError>> {
        Box::pin(async move {
            self.commit(|img| {
                let start = img.next_producer_id;
                let end = start.saturating_add(count.max(1));
                (vec![MetadataRecord::ProducerIdsAllocated { broker_id, next_producer_id: end }], start..end)
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ControllerConfig {
        ControllerConfig {
            node_id: 1,
            advertised_host: "localhost".into(),
            advertised_port: 9092,
            rack: None,
            defaults: Defaults { num_partitions: 2, default_replication_factor: 1 },
        }
    }

    #[tokio::test]
    async fn metadata_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (cluster_id, topic_id) = {
            let c = LocalController::open(dir.path(), config(), None).unwrap();
            let r = c
                .create_topics(
                    vec![CreateTopicSpec {
                        name: "t".into(),
                        num_partitions: -1,
                        replication_factor: -1,
                        ..Default::default()
                    }],
                    false,
                )
                .await;
            let ids = c.allocate_producer_ids(1, 1000).await.unwrap();
            assert_eq!(ids, 0..1000);
            (c.image().cluster_id.clone().unwrap(), r[0].result.as_ref().unwrap().topic_id)
        };
        let c = LocalController::open(dir.path(), config(), None).unwrap();
        let img = c.image();
        assert_eq!(img.cluster_id.as_deref(), Some(cluster_id.as_str()));
        assert_eq!(cluster_id.len(), 22);
        assert_eq!(img.topic("t").unwrap().id, topic_id);
        assert_eq!(img.topic("t").unwrap().partitions.len(), 2);
        assert_eq!(c.allocate_producer_ids(1, 10).await.unwrap(), 1000..1010);
        // Re-opening with the same endpoint writes nothing new.
        let before = img.records_applied;
        drop(c);
        let c = LocalController::open(dir.path(), config(), Some(&cluster_id)).unwrap();
        assert_eq!(c.image().records_applied, before + 1);
        drop(c);
        // Another cluster's id, or another node id, is refused.
        assert!(matches!(
            LocalController::open(dir.path(), config(), Some("other")),
            Err(ControllerError::Identity(_))
        ));
        let other_node = ControllerConfig { node_id: 2, ..config() };
        let e = LocalController::open(dir.path(), other_node, None).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.starts_with("node.id 2 does not match the stored 1"), "{e}");
        // A missing log where meta.properties names a cluster: refused, nothing created.
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(
            LocalController::open(empty.path(), config(), Some("abc")),
            Err(ControllerError::Identity(_))
        ));
    }
}
