//! The single-node controller: decisions applied through the local metadata
//! log, one change at a time.
//!
//! One thread owns the metadata log and the publishers (KRaft's `QuorumController` event
//! queue, single-threaded): every change runs there in order — decide, append and fsync,
//! apply, publish (publishers create and delete partition logs), answer — so no tokio worker
//! ever waits on the metadata log's fsync or on a publisher's disk work. The async API sends a
//! job to the thread and awaits its answer; [`LocalController::image`] reads the last
//! committed image without waiting.

use std::ops::Range;
use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use arc_swap::ArcSwap;
use strata_metadata::channel::{ApiError, BoxFuture, ControllerChannel, CreateTopicResult, CreateTopicSpec};
use strata_metadata::{MetadataImage, MetadataPublisher, MetadataRecord};
use strata_protocol::ResponseError;
use tokio::sync::oneshot;

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

/// What the controller thread owns.
struct State {
    image: Arc<MetadataImage>,
    log: MetadataLog,
    publishers: Vec<Arc<dyn MetadataPublisher>>,
}

/// Work for the controller thread.
type Job = Box<dyn FnOnce(&mut State) + Send>;

/// A one-voter controller whose log is a local file, owned by its own thread (see the module
/// docs). Dropping it finishes the queued changes and stops the thread.
pub struct LocalController {
    config: ControllerConfig,
    /// The last committed image, for readers.
    image: Arc<ArcSwap<MetadataImage>>,
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
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
            boot.push(MetadataRecord::ClusterCreated { cluster_id: strata_log::data_dir::random_id() });
        }
        let me = MetadataRecord::BrokerRegistered {
            broker_id: config.node_id,
            host: config.advertised_host.clone(),
            port: config.advertised_port,
            rack: config.rack.clone(),
            // The registration's epoch is the index of its record in the metadata log.
            epoch: image.records_applied as i64 + boot.len() as i64,
            fenced: false,
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
        let image = Arc::new(image);
        let shared = Arc::new(ArcSwap::new(image.clone()));
        let (tx, rx) = mpsc::channel::<Job>();
        let mut state = State { image, log, publishers: Vec::new() };
        let thread = std::thread::Builder::new()
            .name("strata-controller".into())
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    // A panic here would leave the metadata half-applied and every later
                    // request unanswered; like Kafka's fatal fault handler for the controller,
                    // stop the process instead, so it restarts from the durable metadata log.
                    let run = std::panic::AssertUnwindSafe(|| job(&mut state));
                    if std::panic::catch_unwind(run).is_err() {
                        tracing::error!("a metadata job panicked on the controller thread; stopping the broker");
                        std::process::abort();
                    }
                }
            })
            .map_err(|source| ControllerError::Io { path: dir.to_path_buf(), source })?;
        Ok(Self { config, image: shared, jobs: Mutex::new(Some(tx)), thread: Mutex::new(Some(thread)) })
    }

    /// Formats a node's metadata log for cluster `cluster_id` (as `kafka-storage format`
    /// writes the bootstrap metadata): creates it in `dir` holding the record that fixes the
    /// cluster id. Refuses ([`ControllerError::Identity`]) a log that already holds records.
    pub fn format(dir: &Path, cluster_id: &str) -> Result<(), ControllerError> {
        let (mut log, records) = MetadataLog::open(dir)?;
        if !records.is_empty() {
            return Err(ControllerError::Identity(format!(
                "the metadata log in {} already holds {} records: this node is formatted",
                dir.display(),
                records.len()
            )));
        }
        log.append(&[MetadataRecord::ClusterCreated { cluster_id: cluster_id.to_owned() }])
    }

    /// The last committed image.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.image.load_full()
    }

    /// Queues `job` on the controller thread; false if the thread is gone.
    fn submit(&self, job: Job) -> bool {
        let jobs = self.jobs.lock().unwrap_or_else(PoisonError::into_inner);
        jobs.as_ref().is_some_and(|tx| tx.send(job).is_ok())
    }

    /// Adds a publisher and immediately publishes the current image to it with a delta that
    /// creates everything that exists; returns once that publish is done (it opens every
    /// partition's log, so call it at start, not from a request).
    pub fn register_publisher(&self, publisher: Arc<dyn MetadataPublisher>) {
        let (done_tx, done_rx) = mpsc::channel();
        let queued = self.submit(Box::new(move |state: &mut State| {
            let delta = strata_metadata::MetadataDelta::everything_in(&state.image);
            publisher.publish(&state.image, &delta);
            state.publishers.push(publisher);
            let _ = done_tx.send(());
        }));
        if queued && done_rx.recv().is_err() {
            tracing::error!("the controller thread stopped while registering a publisher");
        }
    }

    /// Runs one decision on the controller thread and commits its records: append and fsync
    /// to the metadata log, apply, publish; then answers.
    fn commit<T: Send + 'static>(
        &self,
        decide: impl FnOnce(&MetadataImage) -> (Vec<MetadataRecord>, T) + Send + 'static,
    ) -> impl std::future::Future<Output = Result<T, ApiError>> + Send + 'static {
        let (tx, rx) = oneshot::channel();
        let shared = self.image.clone();
        let queued = self.submit(Box::new(move |state: &mut State| {
            let _ = tx.send(commit_on_thread(state, &shared, decide));
        }));
        async move {
            if !queued {
                return Err(stopped());
            }
            rx.await.unwrap_or_else(|_| Err(stopped()))
        }
    }
}

impl Drop for LocalController {
    fn drop(&mut self) {
        // Closing the queue ends the thread once the changes already queued are done.
        self.jobs.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(t) = self.thread.lock().unwrap_or_else(PoisonError::into_inner).take() {
            let _ = t.join();
        }
    }
}

/// One change, on the controller thread.
fn commit_on_thread<T>(
    state: &mut State,
    shared: &ArcSwap<MetadataImage>,
    decide: impl FnOnce(&MetadataImage) -> (Vec<MetadataRecord>, T),
) -> Result<T, ApiError> {
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
    shared.store(image.clone());
    for p in &state.publishers {
        p.publish(&image, &delta);
    }
    Ok(answer)
}

fn stopped() -> ApiError {
    ApiError::new(ResponseError::UnknownServerError, "the controller thread has stopped".to_owned())
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(ResponseError::UnknownServerError, e.to_string())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl ControllerChannel for LocalController {
    fn create_topics(
        &self,
        topics: Vec<CreateTopicSpec>,
        validate_only: bool,
    ) -> BoxFuture<'_, Vec<CreateTopicResult>> {
        let names: Vec<String> = topics.iter().map(|t| t.name.clone()).collect();
        let defaults = self.config.defaults.clone();
        let commit = self.commit(move |img| decisions::create_topics(img, &defaults, topics, validate_only));
        Box::pin(async move {
            match commit.await {
                Ok(results) => results,
                Err(e) => names.into_iter().map(|name| CreateTopicResult { name, result: Err(e.clone()) }).collect(),
            }
        })
    }

    crate::decided_channel_methods!();

    /// One voter, this node, leading since it started: its log end is the committed end.
    fn describe_quorum(&self) -> Option<strata_metadata::channel::QuorumDescription> {
        let end = self.image().records_applied as i64;
        let id = self.config.node_id;
        Some(strata_metadata::channel::QuorumDescription {
            leader_id: id,
            leader_epoch: 1,
            high_watermark: end,
            voters: vec![strata_metadata::channel::QuorumReplica {
                id,
                log_end_offset: end,
                last_caught_up_ms: now_ms(),
            }],
            endpoints: Vec::new(),
        })
    }

    fn allocate_producer_ids(&self, broker_id: i32, count: i64) -> BoxFuture<'_, Result<Range<i64>, ApiError>> {
        let commit = self.commit(move |img| decisions::allocate_producer_ids(img, broker_id, count));
        Box::pin(commit)
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

    /// A publisher that takes its time (ReplicaManager creating logs, deleting directories):
    /// the commit waits for it on the controller thread, and the async worker that awaits the
    /// commit keeps running other tasks meanwhile.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_slow_commit_does_not_stall_the_async_worker() {
        struct Slow;
        impl MetadataPublisher for Slow {
            fn publish(&self, _: &Arc<MetadataImage>, delta: &strata_metadata::MetadataDelta) {
                if delta.created_partitions().next().is_some() {
                    std::thread::sleep(std::time::Duration::from_millis(500));
                }
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let c = Arc::new(LocalController::open(dir.path(), config(), None).unwrap());
        c.register_publisher(Arc::new(Slow));
        let ticks = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let ticker = {
            let ticks = ticks.clone();
            tokio::spawn(async move {
                loop {
                    ticks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            })
        };
        tokio::task::yield_now().await;
        let before = ticks.load(std::sync::atomic::Ordering::Relaxed);
        let spec = CreateTopicSpec { name: "t".into(), num_partitions: 1, replication_factor: 1, ..Default::default() };
        // On the worker (a test body runs on its own thread, not on one).
        let on_worker = {
            let c = c.clone();
            tokio::spawn(async move { c.create_topics(vec![spec], false).await })
        };
        let r = on_worker.await.unwrap();
        assert!(r[0].result.is_ok());
        let during = ticks.load(std::sync::atomic::Ordering::Relaxed) - before;
        ticker.abort();
        // 500 ms at one tick per 10 ms: dozens, where a blocked worker manages none.
        assert!(during >= 10, "the only async worker was held up by the commit ({during} ticks in 500 ms)");
        assert!(c.image().topic("t").is_some());
    }
}
