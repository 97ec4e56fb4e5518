//! Transaction markers (Kafka's `TransactionMarkerChannelManager`): once a transaction is
//! decided, a COMMIT or ABORT marker goes to every partition of it, through WriteTxnMarkers to
//! the partition's leader (in-process when that is this broker), retried until written; then
//! the CompleteCommit/CompleteAbort record ends the transaction.
//!
//! Results per partition, as Kafka's completion handler treats them:
//! - NONE: done;
//! - UNKNOWN_TOPIC_OR_PARTITION, NOT_LEADER_OR_FOLLOWER, NOT_ENOUGH_REPLICAS(_AFTER_APPEND),
//!   REQUEST_TIMED_OUT, KAFKA_STORAGE_ERROR, a failed request: retried at the current leader;
//! - INVALID_PRODUCER_EPOCH, TRANSACTION_COORDINATOR_FENCED: a newer producer or coordinator
//!   owns the transaction; this coordinator stops;
//! - a partition with no leader at all (its topic deleted): done.
//!
//! Retries have no limit: a transaction whose partition leader is down stays decided and
//! pending (its other partitions' readers already see the result) until the marker lands.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use strata_client::KafkaClient;
use strata_protocol::kafka_protocol::messages::write_txn_markers_request::{WritableTxnMarker, WritableTxnMarkerTopic};
use strata_protocol::kafka_protocol::messages::{ProducerId, TopicName, WriteTxnMarkersRequest};
use strata_protocol::kafka_protocol::protocol::StrBytes;
use strata_protocol::records::control::EndTxnMarker;
use strata_protocol::ResponseError;
use strata_txn::MarkerWork;

use super::{Slot, TxnCoordinator, TRANSACTION_STATE_TOPIC};
use crate::groups::{GroupCoordinator, OFFSETS_TOPIC};
use crate::replica::{now_ms, AppendResult, Partition, ReplicaManager};

/// How long a marker may wait for the ISR of its partition.
const MARKER_TIMEOUT_MS: i32 = 30_000;

/// Backoff between rounds of retries (Kafka re-enqueues at once and its sender wakes up
/// shortly after; 10–100 ms is as good).
const RETRY_BACKOFF: Duration = Duration::from_millis(50);

/// One client per destination broker (one request in flight on each): for WriteTxnMarkers,
/// and a second set for KIP-890 verifications, so that neither waits for the other.
pub struct MarkerClients {
    node_id: i32,
    purpose: &'static str,
    /// The inter-broker listener's TLS and SASL (`None`: PLAINTEXT).
    security: Option<Arc<strata_security::client::ClientSecurity>>,
    clients: Mutex<HashMap<(i32, String), Arc<KafkaClient>>>,
}

impl MarkerClients {
    pub fn new(
        node_id: i32,
        purpose: &'static str,
        security: Option<Arc<strata_security::client::ClientSecurity>>,
    ) -> Self {
        Self { node_id, purpose, security, clients: Mutex::new(HashMap::new()) }
    }

    pub(crate) fn client(&self, broker: i32, address: String) -> Arc<KafkaClient> {
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        clients.retain(|(b, a), _| *b != broker || *a == address);
        clients
            .entry((broker, address.clone()))
            .or_insert_with(|| {
                let id = format!("strata-{}-{}", self.purpose, self.node_id);
                Arc::new(KafkaClient::with_security(address, id, self.security.clone()))
            })
            .clone()
    }
}

/// What to do with a partition after one attempt.
enum Outcome {
    Done,
    Retry,
    /// A newer producer epoch or coordinator owns the transaction.
    Stop,
}

/// A partition's result: `Ok` once its marker is committed.
pub type MarkerResult = Result<(), ResponseError>;

fn classify(result: MarkerResult) -> Outcome {
    use ResponseError::*;
    let Err(code) = result else { return Outcome::Done };
    match code {
        UnsupportedForMessageFormat | UnsupportedVersion => Outcome::Done,
        InvalidProducerEpoch | TransactionCoordinatorFenced => Outcome::Stop,
        UnknownTopicOrPartition
        | NotLeaderOrFollower
        | NotEnoughReplicas
        | NotEnoughReplicasAfterAppend
        | RequestTimedOut
        | KafkaStorageError => Outcome::Retry,
        other => {
            tracing::error!(error = ?other, "unexpected answer to a transaction marker; retrying");
            Outcome::Retry
        }
    }
}

impl TxnCoordinator {
    /// Writes every marker of `work`, then the record that completes the transaction. Stops
    /// when the slot is unloaded (its next owner resends from its own load).
    pub(crate) async fn write_markers(self: Arc<Self>, slot: Arc<Slot>, work: MarkerWork) {
        let mut remaining: Vec<(String, i32)> =
            work.partitions.iter().flat_map(|(t, ps)| ps.iter().map(move |p| (t.clone(), *p))).collect();
        while !remaining.is_empty() {
            if !self.is_current(&slot) {
                return;
            }
            let image = self.replicas.image();
            let mut by_leader: BTreeMap<i32, Vec<(String, i32)>> = BTreeMap::new();
            for (topic, p) in remaining.drain(..) {
                let leader = image.topic(&topic).and_then(|t| t.partitions.get(p as usize)).map(|p| p.leader);
                match leader {
                    // Deleted with its topic: nothing left to mark.
                    None => {}
                    Some(l) => by_leader.entry(l).or_default().push((topic, p)),
                }
            }
            let mut tasks = tokio::task::JoinSet::new();
            for (leader, partitions) in by_leader {
                let address =
                    image.brokers.get(&leader).filter(|b| !b.fenced).map(|b| format!("{}:{}", b.host, b.port));
                let (this, work) = (self.clone(), work.clone());
                tasks.spawn(async move {
                    let results = if leader == this.replicas.node_id() {
                        write_local(&this.replicas, &this.groups, &work, &partitions).await
                    } else if let Some(address) = address {
                        this.write_remote(leader, address, &work, &partitions).await
                    } else {
                        // No live leader right now: the metadata will move it on.
                        partitions.iter().map(|_| Err(ResponseError::NotLeaderOrFollower)).collect()
                    };
                    partitions.into_iter().zip(results).collect::<Vec<_>>()
                });
            }
            while let Some(joined) = tasks.join_next().await {
                let Ok(results) = joined else { continue };
                for (partition, result) in results {
                    match classify(result) {
                        Outcome::Done => {}
                        Outcome::Retry => remaining.push(partition),
                        Outcome::Stop => {
                            tracing::error!(
                                transactional_id = %work.transactional_id,
                                topic = %partition.0, partition = partition.1, error = ?result,
                                "a transaction marker was refused by a newer producer or coordinator; not completing it"
                            );
                            return;
                        }
                    }
                }
            }
            if !remaining.is_empty() {
                tokio::time::sleep(RETRY_BACKOFF).await;
            }
        }
        // Every marker is written: complete the transaction.
        loop {
            if !self.is_current(&slot) {
                return;
            }
            let (id, appended) = {
                let mut shard = slot.lock();
                let now = now_ms();
                let Some(append) = shard.markers_written(&work.transactional_id, work.coordinator_epoch, now) else {
                    return;
                };
                (append.id, self.append(&slot, &shard, &append, now))
            };
            let outcome = match appended {
                Ok((partition, result)) => {
                    let deadline = tokio::time::Instant::now() + Duration::from_millis(MARKER_TIMEOUT_MS as u64);
                    partition.await_committed(&result, deadline, MARKER_TIMEOUT_MS).await.map_err(|e| e.code())
                }
                Err(e) => Err(e),
            };
            if !self.is_current(&slot) {
                return;
            }
            match outcome {
                Ok(()) => {
                    slot.lock().complete_append(id, Ok(()));
                    slot.settled.notify_waiters();
                    return;
                }
                Err(e) => {
                    tracing::info!(partition = slot.partition, error = ?e,
                        "cannot complete a transaction in {TRANSACTION_STATE_TOPIC} yet; retrying");
                    slot.lock().complete_failed(&work.transactional_id, id);
                    tokio::time::sleep(RETRY_BACKOFF * 4).await;
                }
            }
        }
    }

    /// WriteTxnMarkers to another broker; one result per partition.
    async fn write_remote(
        &self,
        leader: i32,
        address: String,
        work: &MarkerWork,
        partitions: &[(String, i32)],
    ) -> Vec<MarkerResult> {
        let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for (t, p) in partitions {
            topics.entry(t.as_str()).or_default().push(*p);
        }
        let marker = WritableTxnMarker::default()
            .with_producer_id(ProducerId(work.producer_id))
            .with_producer_epoch(work.producer_epoch)
            .with_transaction_result(work.commit)
            .with_coordinator_epoch(work.coordinator_epoch)
            .with_topics(
                topics
                    .into_iter()
                    .map(|(t, ps)| {
                        WritableTxnMarkerTopic::default()
                            .with_name(TopicName(StrBytes::from_string(t.to_string())))
                            .with_partition_indexes(ps)
                    })
                    .collect(),
            );
        let request = WriteTxnMarkersRequest::default().with_markers(vec![marker]);
        let client = self.markers.client(leader, address);
        let response = match client.call(1, &request).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(leader, error = %e, "WriteTxnMarkers failed; retrying");
                return partitions.iter().map(|_| Err(ResponseError::NotLeaderOrFollower)).collect();
            }
        };
        let mut codes: HashMap<(String, i32), i16> = HashMap::new();
        for m in response.markers {
            for t in m.topics {
                for p in t.partitions {
                    codes.insert((t.name.0.to_string(), p.partition_index), p.error_code);
                }
            }
        }
        partitions
            .iter()
            .map(|k| match codes.get(k) {
                Some(c) => match ResponseError::try_from_code(*c) {
                    None => Ok(()),
                    Some(e) => Err(e),
                },
                None => Err(ResponseError::NotLeaderOrFollower),
            })
            .collect()
    }
}

/// Writes the marker of `work` to each of `partitions` this broker leads, and waits for the
/// ISR (WriteTxnMarkers on the partition leader); one result per partition.
pub async fn write_local(
    replicas: &Arc<ReplicaManager>,
    groups: &GroupCoordinator,
    work: &MarkerWork,
    partitions: &[(String, i32)],
) -> Vec<MarkerResult> {
    let marker = EndTxnMarker { commit: work.commit, coordinator_epoch: work.coordinator_epoch };
    write_marker(replicas, groups, work.producer_id, work.producer_epoch, marker, partitions).await
}

/// Appends `marker` of `producer_id` at `producer_epoch` to each of `partitions` and waits
/// until each is committed, at most [`MARKER_TIMEOUT_MS`]; one result per partition.
///
/// Markers for `__consumer_offsets` go through the group coordinator, which applies them to
/// the offsets the transaction committed there.
pub async fn write_marker(
    replicas: &Arc<ReplicaManager>,
    groups: &GroupCoordinator,
    producer_id: i64,
    producer_epoch: i16,
    marker: EndTxnMarker,
    partitions: &[(String, i32)],
) -> Vec<MarkerResult> {
    let now = now_ms();
    enum Written {
        Log(Result<(Arc<Partition>, AppendResult), ResponseError>),
        Offsets(usize),
    }
    let appended: Vec<Written> = crate::blocking::off_worker(|| {
        partitions
            .iter()
            .map(|(topic, index)| {
                if topic == OFFSETS_TOPIC {
                    return Written::Offsets(*index as usize);
                }
                Written::Log(
                    replicas
                        .get(topic, *index)
                        .and_then(|p| p.append_txn_marker(producer_id, producer_epoch, marker, now).map(|a| (p, a)))
                        .map_err(|e| e.code()),
                )
            })
            .collect()
    });
    let deadline = tokio::time::Instant::now() + Duration::from_millis(MARKER_TIMEOUT_MS as u64);
    let mut out = Vec::with_capacity(appended.len());
    for a in appended {
        out.push(match a {
            Written::Log(Ok((partition, result))) => {
                partition.await_committed(&result, deadline, MARKER_TIMEOUT_MS).await.map_err(|e| e.code())
            }
            Written::Log(Err(e)) => Err(e),
            Written::Offsets(index) => groups.write_txn_marker(index, producer_id, producer_epoch, marker).await,
        });
    }
    out
}
