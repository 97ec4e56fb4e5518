//! Fetch: read from each partition up to the limits, long-polling until
//! `min_bytes` are there or `max_wait_ms` has passed.
//!
//! Fetch sessions (KIP-227): Strata answers every fetch in full and never
//! creates a session (session id 0), which KIP-227 allows; a client that
//! names a session id gets FETCH_SESSION_ID_NOT_FOUND and falls back to full
//! fetches.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use strata_protocol::kafka_protocol::messages::fetch_response::{
    FetchableTopicResponse, LeaderIdAndEpoch, NodeEndpoint, PartitionData,
};
use strata_protocol::kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse};
use strata_protocol::response::{record_marker, MARKER_LEN};
use strata_protocol::ResponseError;
use tokio::sync::Notify;
use tokio::time::Instant;

use strata_log::FileRange;

use crate::error::BrokerError;
use crate::replica::quota::ReplicationQuota;
use crate::replica::watchers::Watch;
use crate::replica::{Partition, ReadBound};
use crate::Broker;
use strata_protocol::batch::Compression;

/// Longest a fetch may wait, whatever the client asks.
const MAX_WAIT_CAP: Duration = Duration::from_secs(60);
const READ_COMMITTED: i8 = 1;

struct Wanted {
    partition: Result<Arc<Partition>, BrokerError>,
    /// With an error about leadership: the leader and epoch this broker knows (KIP-951's
    /// `current_leader` hint, v12+), so the client goes there without a Metadata round trip.
    current_leader: Option<(i32, i32)>,
    index: i32,
    offset: i64,
    max_bytes: usize,
    /// KIP-392: the replica the consumer should fetch this partition from instead (the
    /// partition is then answered without records).
    preferred_read_replica: Option<i32>,
    /// KIP-73, for a follower's fetch: `Some(in_sync)` when the partition's replication is
    /// throttled on this leader (then an out-of-sync follower gets nothing while the leader's
    /// replication rate is over `leader.replication.throttled.rate`).
    throttle: Option<bool>,
}

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
pub async fn handle(broker: &Arc<Broker>, request: FetchRequest, version: i16) -> (FetchResponse, SplicedRecords) {
    let failed = |e: ResponseError| (FetchResponse::default().with_error_code(e.code()), Vec::new());
    if request.session_id != 0 {
        return failed(ResponseError::FetchSessionIdNotFound);
    }
    if request.session_epoch != 0 && request.session_epoch != -1 {
        return failed(ResponseError::InvalidFetchSessionEpoch);
    }
    let image = broker.replicas.image();
    // A follower's fetch names its broker id (v15+ in ReplicaState): it reads up to the log
    // end, and its position counts for the high watermark and the ISR.
    let replica_id = if version >= 15 { request.replica_state.replica_id.0 } else { request.replica_id.0 };
    let follower = replica_id >= 0;
    let eligible = follower && image.brokers.get(&replica_id).is_some_and(|b| !b.fenced);
    let from_any_replica = !follower && version >= 11;
    // KIP-392: with Kafka's rack-aware `replica.selector.class`, a consumer that names its
    // `client.rack` (v11+) is sent to an in-sync replica in its rack.
    let rack_aware = (from_any_replica && broker.config.rack_aware_replica_selector())
        .then_some(request.rack_id.as_str())
        .filter(|r| !r.is_empty());
    let mut isr_change = false;
    let mut topics = Vec::with_capacity(request.topics.len());
    for t in &request.topics {
        let name = if version >= 13 {
            image.topic_by_id(&t.topic_id).map(|x| x.name.clone())
        } else {
            Some(t.topic.to_string())
        };
        // Fetch supports zstd from v10: older fetchers of a topic whose compression.type is
        // zstd get UNSUPPORTED_COMPRESSION_TYPE, as from Kafka.
        let zstd_topic = version < 10
            && name
                .as_ref()
                .is_some_and(|n| broker.replicas.settings_for(&image, n).compression == Some(Compression::Zstd));
        let parts: Vec<Wanted> = t
            .partitions
            .iter()
            .map(|p| {
                // KIP-320: the consumer's view of the leader epoch, from v9.
                let epoch = if version >= 9 { p.current_leader_epoch } else { -1 };
                let partition = match &name {
                    _ if zstd_topic => Err(BrokerError::UnsupportedCompressionType(
                        "fetch requests below v10 cannot read this topic's zstd batches",
                    )),
                    // A follower fetches from the leader; a consumer's v11+ fetch may read
                    // from any replica (KIP-392).
                    Some(n) => {
                        broker.replicas.partition_for_read(n, p.partition, epoch, from_any_replica).and_then(|part| {
                            if follower {
                                isr_change |= part.follower_fetched(
                                    replica_id,
                                    p.fetch_offset,
                                    p.log_start_offset,
                                    eligible,
                                    crate::replica::now_ms(),
                                )?;
                            }
                            Ok(part)
                        })
                    }
                    None => Err(BrokerError::UnknownTopicId),
                };
                let current_leader = match (&partition, &name) {
                    (
                        Err(
                            BrokerError::NotLeaderOrFollower(_)
                            | BrokerError::FencedLeaderEpoch { .. }
                            | BrokerError::UnknownLeaderEpoch { .. },
                        ),
                        Some(n),
                    ) => super::leader_hint(&image, n, p.partition),
                    _ => None,
                };
                let preferred_read_replica = match (&partition, rack_aware) {
                    (Ok(part), Some(rack)) => part.preferred_read_replica(broker.node_id, rack, p.fetch_offset, |id| {
                        image.brokers.get(&id).and_then(|b| b.rack.clone())
                    }),
                    _ => None,
                };
                let throttle = match &partition {
                    Ok(part) if follower => part.replication_throttle(true, broker.node_id, replica_id),
                    _ => None,
                };
                Wanted {
                    partition,
                    current_leader,
                    index: p.partition,
                    offset: p.fetch_offset,
                    max_bytes: p.partition_max_bytes.max(0) as usize,
                    preferred_read_replica,
                    throttle,
                }
            })
            .collect();
        topics.push((t, parts));
    }
    if isr_change {
        broker.replicas.isr_change_proposed();
    }
    let bound = if follower { ReadBound::LogEnd } else { ReadBound::HighWatermark };
    let wait = Duration::from_millis(request.max_wait_ms.max(0) as u64).min(MAX_WAIT_CAP);
    let mut deadline = Instant::now() + wait;
    let mut shutdown = broker.shutdown.clone();
    let min_bytes = request.min_bytes.max(0) as usize;
    let read_committed = request.isolation_level == READ_COMMITTED;
    // Parked the way Kafka's fetch purgatory parks a DelayedFetch: one watch per distinct
    // partition (a request may name one many times), held until this request completes,
    // times out or is dropped with its connection. Watching before the first read means an
    // append between a read and the wait still wakes us.
    let waiter = Arc::new(Notify::new());
    let _watches: Vec<Watch> = if Instant::now() < deadline {
        let mut seen = HashSet::new();
        topics
            .iter()
            .flat_map(|(_, parts)| parts.iter())
            .filter_map(|w| w.partition.as_ref().ok())
            .filter(|p| seen.insert(Arc::as_ptr(p)))
            .map(|p| p.watch(&waiter))
            .collect()
    } else {
        Vec::new()
    };
    loop {
        let may_wait = Instant::now() < deadline;
        let (responses, spliced, bytes, answer_now) = read_all(
            &topics,
            request.max_bytes.max(0) as usize,
            version,
            read_committed,
            bound,
            &broker.replicas.leader_quota,
        );
        if !may_wait || bytes >= min_bytes.max(1) || answer_now {
            // KIP-951 (v16+): the endpoints of the leaders named in `current_leader` hints.
            let hinted =
                topics.iter().flat_map(|(_, parts)| parts.iter().filter_map(|w| w.current_leader.map(|l| l.0)));
            let endpoints = if version >= 16 {
                super::hinted_endpoints(&image, hinted)
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
            return (FetchResponse::default().with_responses(responses).with_node_endpoints(endpoints), spliced);
        }
        if *shutdown.borrow_and_update() {
            deadline = Instant::now();
            continue;
        }
        tokio::select! {
            _ = waiter.notified() => {}
            _ = tokio::time::sleep_until(deadline) => {}
            _ = shutdown.changed() => deadline = Instant::now(),
        }
    }
}

/// Varies the placeholders from one response to the next.
static NONCE: AtomicU64 = AtomicU64::new(0x05EE_D0F5_7A7A);

fn read_all(
    topics: &[(&strata_protocol::kafka_protocol::messages::fetch_request::FetchTopic, Vec<Wanted>)],
    max_bytes: usize,
    version: i16,
    read_committed: bool,
    bound: ReadBound,
    leader_quota: &ReplicationQuota,
) -> (Vec<FetchableTopicResponse>, SplicedRecords, usize, bool) {
    let now = crate::replica::now_ms();
    let mut total = 0usize;
    let mut answer_now = false;
    let nonce = NONCE.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
    let mut spliced = Vec::new();
    let mut out = Vec::with_capacity(topics.len());
    for (t, parts) in topics {
        let mut partitions = Vec::with_capacity(parts.len());
        for w in parts {
            let base = PartitionData::default()
                .with_partition_index(w.index)
                .with_aborted_transactions(if read_committed { Some(Vec::new()) } else { None });
            let data = match &w.partition {
                Err(e) => {
                    answer_now = true;
                    let base = match w.current_leader {
                        Some((leader, epoch)) => base.with_current_leader(
                            LeaderIdAndEpoch::default().with_leader_id(BrokerId(leader)).with_leader_epoch(epoch),
                        ),
                        None => base,
                    };
                    base.with_error_code(e.code_i16()).with_high_watermark(-1).with_records(Some(Bytes::new()))
                }
                Ok(p) if w.preferred_read_replica.is_some() => {
                    // Kafka answers at once, without records, so the consumer moves over.
                    answer_now = true;
                    base.with_preferred_read_replica(BrokerId(w.preferred_read_replica.unwrap_or(-1)))
                        .with_high_watermark(p.high_watermark())
                        .with_last_stable_offset(p.high_watermark())
                        .with_log_start_offset(p.log_start_offset())
                        .with_records(Some(Bytes::new()))
                }
                Ok(p) if w.throttle == Some(false) && leader_quota.exceeded(now) => {
                    // Throttled (KIP-73): nothing for an out-of-sync follower this time.
                    base.with_high_watermark(p.high_watermark())
                        .with_last_stable_offset(p.high_watermark())
                        .with_log_start_offset(p.log_start_offset())
                        .with_records(Some(Bytes::new()))
                }
                Ok(p) => {
                    let budget = max_bytes.saturating_sub(total).min(w.max_bytes);
                    // KIP-74: the first data of the response may exceed the
                    // limits by one batch, so a big batch can always be read.
                    let result = if budget == 0 && total > 0 {
                        Ok(None)
                    } else {
                        // Batches read for the first time are CRC-checked from the file: that
                        // read waits on the disk, so it runs off the async worker.
                        match p.read_cached(w.offset, budget.max(1), bound) {
                            Ok(None) => {
                                crate::blocking::off_worker(|| p.read_to(w.offset, budget.max(1), bound)).map(Some)
                            }
                            other => other,
                        }
                    };
                    match result {
                        Ok(Some(r)) => {
                            total += r.records.len();
                            if w.throttle.is_some() {
                                leader_quota.record(r.records.len() as u64, now);
                            }
                            // A non-empty record set is encoded as a placeholder, and the
                            // connection writes the records in its place.
                            let records = if r.records.is_empty() {
                                Bytes::new()
                            } else {
                                let marker = record_marker(nonce, spliced.len() as u32);
                                spliced.push((marker, FetchedRecords { bytes: r.records, file_range: r.file_range }));
                                Bytes::copy_from_slice(&marker)
                            };
                            base.with_high_watermark(r.high_watermark)
                                .with_last_stable_offset(r.high_watermark)
                                .with_log_start_offset(r.log_start_offset)
                                .with_records(Some(records))
                        }
                        Ok(None) => base
                            .with_high_watermark(p.high_watermark())
                            .with_last_stable_offset(p.high_watermark())
                            .with_log_start_offset(p.log_start_offset())
                            .with_records(Some(Bytes::new())),
                        Err(e) => {
                            answer_now = true;
                            match e {
                                BrokerError::OffsetOutOfRange { .. } => {}
                                BrokerError::CorruptMessage(_) | BrokerError::Storage(_) => tracing::error!(
                                    topic = %p.topic, partition = p.index, offset = w.offset, error = %e,
                                    "fetch failed: the partition's data on disk is damaged or unreadable"
                                ),
                                _ => {
                                    tracing::warn!(topic = %p.topic, partition = p.index, offset = w.offset, error = %e, "fetch failed")
                                }
                            }
                            base.with_error_code(e.code_i16())
                                .with_high_watermark(p.high_watermark())
                                .with_last_stable_offset(p.high_watermark())
                                .with_log_start_offset(p.log_start_offset())
                                .with_records(Some(Bytes::new()))
                        }
                    }
                }
            };
            partitions.push(data);
        }
        let topic = FetchableTopicResponse::default().with_partitions(partitions);
        out.push(if version >= 13 { topic.with_topic_id(t.topic_id) } else { topic.with_topic(t.topic.clone()) });
    }
    (out, spliced, total, answer_now)
}
