//! Fetch: parse the request, let `ReplicaManager::fetch_messages` read (long-polling until
//! `min_bytes` are there or `max_wait_ms` has passed), render the response.
//!
//! Fetch sessions (KIP-227): Strata answers every fetch in full and never
//! creates a session (session id 0), which KIP-227 allows; a client that
//! names a session id gets FETCH_SESSION_ID_NOT_FOUND and falls back to full
//! fetches.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use strata_log::FileRange;
use strata_protocol::kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, LeaderIdAndEpoch, NodeEndpoint, PartitionData,
};
use strata_protocol::kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse, ProducerId};
use strata_protocol::response::{record_marker, MARKER_LEN};
use strata_protocol::ResponseError;

use crate::error::BrokerError;
use crate::replica::fetch::{FetchParams, FetchPartition, FetchedPartition};
use crate::Broker;
use strata_protocol::batch::Compression;

const READ_COMMITTED: i8 = 1;

/// A partition's fetched records: their mapped bytes, and where they lie in
/// their segment file, so the connection can send them with `sendfile(2)`.
#[derive(Debug)]
pub struct FetchedRecords {
    pub bytes: Bytes,
    pub file_range: Option<FileRange>,
}

impl AsRef<[u8]> for FetchedRecords {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

/// Record sets of a response, each with the placeholder that stands for it
/// in the encoded body (see `strata_protocol::response::splice_records`).
pub type SplicedRecords = Vec<([u8; MARKER_LEN], FetchedRecords)>;

/// The response body, whose non-empty record sets are placeholders, and the
/// record slices to write in their place: records go from the mmapped
/// segment to the socket without being copied into a buffer.
/// Authorization (Kafka's `KafkaApis.handleFetchRequest`): a follower's fetch needs
/// CLUSTER_ACTION on the cluster, a consumer's READ on each topic; what is refused gets
/// TOPIC_AUTHORIZATION_FAILED per partition.
/// `quota_max_bytes`: the most a client's `consumer_byte_rate` lets one response hold
/// (Kafka's `getMaxValueInQuotaWindow`), bounding the request's `max_bytes`.
pub async fn handle(
    broker: &Arc<Broker>,
    request: FetchRequest,
    version: i16,
    session: &crate::net::Session,
    quota_max_bytes: Option<i64>,
) -> (FetchResponse, SplicedRecords, Vec<(String, u64)>) {
    use strata_security::acl::{Operation, ResourceType};
    let listener: &str = &session.listener;
    let failed = |e: ResponseError| (FetchResponse::default().with_error_code(e.code()), Vec::new(), Vec::new());
    if request.session_id != 0 {
        return failed(ResponseError::FetchSessionIdNotFound);
    }
    if request.session_epoch != 0 && request.session_epoch != -1 {
        return failed(ResponseError::InvalidFetchSessionEpoch);
    }
    let image = broker.replicas.image();
    let replica_id = if version >= 15 { request.replica_state.replica_id.0 } else { request.replica_id.0 };
    let from_any_replica = replica_id < 0 && version >= 11;
    // KIP-392: with Kafka's rack-aware `replica.selector.class`, a consumer that names its
    // `client.rack` (v11+) is sent to an in-sync replica in its rack.
    let rack_aware = (from_any_replica && broker.config.rack_aware_replica_selector())
        .then(|| request.rack_id.to_string())
        .filter(|r| !r.is_empty());
    let params = FetchParams {
        replica_id,
        max_wait: Duration::from_millis(request.max_wait_ms.max(0) as u64),
        // (min_bytes no more than max_bytes, which a quota may have lowered: KafkaApis.)
        min_bytes: (request.min_bytes.max(0) as usize)
            .min(i64::from(request.max_bytes).min(quota_max_bytes.unwrap_or(i64::MAX)).max(0) as usize),
        max_bytes: i64::from(request.max_bytes).min(quota_max_bytes.unwrap_or(i64::MAX)).max(0) as usize,
        from_any_replica,
        rack_aware,
        read_committed: replica_id < 0 && request.isolation_level == READ_COMMITTED,
    };
    let follower_denied = replica_id >= 0 && !broker.authz.cluster(session, Operation::ClusterAction);
    let mut wanted = Vec::new();
    // Each partition's topic, as an index into `names` (for BytesOut).
    let mut names = Vec::with_capacity(request.topics.len());
    let mut topic_of = Vec::new();
    for t in &request.topics {
        let name = if version >= 13 {
            image.topic_by_id(&t.topic_id).map(|x| x.name.clone())
        } else {
            Some(t.topic.to_string())
        };
        let denied = follower_denied
            || (replica_id < 0
                && name
                    .as_deref()
                    .is_some_and(|n| !broker.authz.allowed(session, Operation::Read, ResourceType::Topic, n)));
        // Fetch supports zstd from v10: older fetchers of a topic whose compression.type is
        // zstd get UNSUPPORTED_COMPRESSION_TYPE, as from Kafka.
        let zstd_topic = version < 10
            && name
                .as_ref()
                .is_some_and(|n| broker.replicas.settings_for(&image, n).compression == Some(Compression::Zstd));
        for p in &t.partitions {
            let topic = match &name {
                _ if denied => Err(BrokerError::TopicAuthorizationFailed),
                _ if zstd_topic => Err(BrokerError::UnsupportedCompressionType(
                    "fetch requests below v10 cannot read this topic's zstd batches",
                )),
                Some(n) => Ok(n.clone()),
                None => Err(BrokerError::UnknownTopicId),
            };
            topic_of.push(names.len());
            wanted.push(FetchPartition {
                topic,
                index: p.partition,
                fetch_offset: p.fetch_offset,
                // KIP-320: the consumer's view of the leader epoch, from v9.
                current_leader_epoch: if version >= 9 { p.current_leader_epoch } else { -1 },
                log_start_offset: p.log_start_offset,
                max_bytes: p.partition_max_bytes.max(0) as usize,
            });
        }
        names.push(name);
    }
    let fetched = broker.replicas.fetch_messages(&params, wanted, broker.shutdown.clone()).await;
    let mut bytes_out = vec![0u64; names.len()];
    if replica_id < 0 {
        for (f, t) in fetched.iter().zip(&topic_of) {
            if let (FetchedPartition::Data { read: Some(r), .. }, Some(sum)) = (f, bytes_out.get_mut(*t)) {
                *sum += r.records.len() as u64;
            }
        }
    }
    let out = names.into_iter().zip(bytes_out).filter_map(|(n, b)| Some((n?, b)).filter(|(_, b)| *b > 0)).collect();
    let (response, spliced) = render(&request, version, &image, fetched, listener);
    (response, spliced, out)
}

/// Whether `request` is a follower's (it names its broker id; v15+ in ReplicaState).
pub fn from_follower(request: &FetchRequest, version: i16) -> bool {
    let replica_id = if version >= 15 { request.replica_state.replica_id.0 } else { request.replica_id.0 };
    replica_id >= 0
}

/// The answer to a fetch throttled by a client quota: no data, its top-level error, no fetch
/// session (Kafka's `FetchContext.getThrottledResponse`); the caller sets the throttle time.
pub fn throttled(answered: &FetchResponse) -> FetchResponse {
    FetchResponse::default().with_error_code(answered.error_code)
}

/// Varies the placeholders from one response to the next.
static NONCE: AtomicU64 = AtomicU64::new(0x05EE_D0F5_7A7A);

/// The response for `fetched` (one per partition of `request`, in order): non-empty record
/// sets become placeholders, spliced with their records by the connection.
fn render(
    request: &FetchRequest,
    version: i16,
    image: &strata_metadata::MetadataImage,
    fetched: Vec<FetchedPartition>,
    listener: &str,
) -> (FetchResponse, SplicedRecords) {
    let read_committed = request.isolation_level == READ_COMMITTED;
    let nonce = NONCE.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
    let mut spliced = Vec::new();
    let mut hinted = Vec::new();
    let mut fetched = fetched.into_iter();
    let mut out = Vec::with_capacity(request.topics.len());
    for t in &request.topics {
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in &t.partitions {
            let base = PartitionData::default()
                .with_partition_index(p.partition)
                .with_aborted_transactions(if read_committed { Some(Vec::new()) } else { None });
            let with_offsets = |base: PartitionData, hw: i64, start: i64| {
                base.with_high_watermark(hw).with_last_stable_offset(hw).with_log_start_offset(start)
            };
            let data = match fetched.next() {
                Some(FetchedPartition::Data { read, high_watermark, last_stable_offset, log_start_offset }) => {
                    // A non-empty record set is encoded as a placeholder, and the connection
                    // writes the records in its place.
                    let (records, aborted) = match read {
                        Some(r) if !r.records.is_empty() => {
                            let marker = record_marker(nonce, spliced.len() as u32);
                            spliced.push((marker, FetchedRecords { bytes: r.records, file_range: r.file_range }));
                            (Bytes::copy_from_slice(&marker), r.aborted)
                        }
                        _ => (Bytes::new(), Vec::new()),
                    };
                    let base = match read_committed {
                        true => base.with_aborted_transactions(Some(
                            aborted
                                .iter()
                                .map(|t| {
                                    AbortedTransaction::default()
                                        .with_producer_id(ProducerId(t.producer_id))
                                        .with_first_offset(t.first_offset)
                                })
                                .collect(),
                        )),
                        false => base,
                    };
                    with_offsets(base, high_watermark, log_start_offset)
                        .with_last_stable_offset(last_stable_offset)
                        .with_records(Some(records))
                }
                Some(FetchedPartition::PreferredReplica { replica, high_watermark, log_start_offset }) => {
                    with_offsets(base, high_watermark, log_start_offset)
                        .with_preferred_read_replica(BrokerId(replica))
                        .with_records(Some(Bytes::new()))
                }
                Some(FetchedPartition::Error { code, current_leader, offsets }) => {
                    let base = match current_leader {
                        Some((leader, epoch)) => {
                            hinted.push(leader);
                            base.with_current_leader(
                                LeaderIdAndEpoch::default().with_leader_id(BrokerId(leader)).with_leader_epoch(epoch),
                            )
                        }
                        None => base,
                    };
                    let base = match offsets {
                        Some((hw, start)) => with_offsets(base, hw, start),
                        None => base.with_high_watermark(-1),
                    };
                    base.with_error_code(code).with_records(Some(Bytes::new()))
                }
                None => base.with_error_code(ResponseError::UnknownServerError.code()).with_high_watermark(-1),
            };
            partitions.push(data);
        }
        let topic = FetchableTopicResponse::default().with_partitions(partitions);
        out.push(if version >= 13 { topic.with_topic_id(t.topic_id) } else { topic.with_topic(t.topic.clone()) });
    }
    // KIP-951 (v16+): the endpoints of the leaders named in `current_leader` hints.
    let endpoints = if version >= 16 {
        super::hinted_endpoints(image, hinted, listener)
            .into_iter()
            .map(|(id, host, port, rack)| {
                NodeEndpoint::default()
                    .with_node_id(BrokerId(id))
                    .with_host(super::str_bytes(host))
                    .with_port(port)
                    .with_rack(rack.map(super::str_bytes))
            })
            .collect()
    } else {
        Vec::new()
    };
    (FetchResponse::default().with_responses(out).with_node_endpoints(endpoints), spliced)
}
