//! One module per Kafka API; [`handle`] dispatches in one `match`.
//!
//! Handlers take the decoded request and return the response body; they
//! never fail as a whole: per-topic and per-partition errors go in the
//! response, as Kafka does.

pub(crate) mod acls;
mod admin_configs;
mod api_versions;
mod client_quotas;
mod create_partitions;
mod create_topics;
mod delete_records;
mod delete_topics;
mod describe_cluster;
mod describe_log_dirs;
mod describe_producers;
mod describe_quorum;
mod describe_topic_partitions;
mod elect_leaders;
mod errors;
mod fetch;
mod groups;
mod init_producer_id;
mod list_offsets;
mod metadata;
mod offset_for_leader_epoch;
mod produce;
mod reassignments;
mod sasl;
mod scram;
mod throttle;
mod transactions;
mod write_txn_markers;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use strata_protocol::kafka_protocol::messages::{
    AlterPartitionReassignmentsResponse, DescribeLogDirsResponse, DescribeQuorumResponse,
    DescribeUserScramCredentialsResponse, ElectLeadersResponse, ListPartitionReassignmentsResponse, RequestKind,
    TopicName,
};
use strata_protocol::kafka_protocol::protocol::StrBytes;
use strata_protocol::request::Request;
use strata_protocol::response::{encode_response, splice_records, Chunk};
use strata_protocol::{ApiKey, ProtocolError};

use crate::quotas::{ClientQuotas, QuotaKind, RequestQuota};
use crate::Broker;
use errors::ErrorCodes;
use strata_security::acl::Operation;
use throttle::Throttled;

pub use fetch::FetchedRecords;

/// A piece of a response frame to write: encoded bytes or fetched records.
pub type OutChunk = Chunk<FetchedRecords>;

/// Why a connection must close after a request.
#[derive(Debug, thiserror::Error)]
pub enum Close {
    /// The response cannot be encoded, or the API is not served.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// An acks=0 produce failed for some partition (logged with the details).
    #[error("an acks=0 produce failed")]
    AcksZeroProduceFailed,
}

/// Handles one request, appending its encoded response frame to `out` as
/// chunks to write in order (nothing for an acks=0 produce), and returns the time the
/// connection must then stay muted for going over a client quota (zero mostly; the same
/// time is in the response's `throttle_time_ms`). An error means the connection must be
/// closed.
pub async fn handle(
    broker: &Arc<Broker>,
    request: Request,
    session: &crate::net::Session,
    quota: &RequestQuota<'_>,
    out: &mut Vec<OutChunk>,
) -> Result<Duration, Close> {
    let peer = session.client_host.as_str();
    let (key, version, cid) = (request.api_key, request.version, request.correlation_id());
    let started = Instant::now();
    // What a request may spend waiting by design, not counted as slow: a fetch's long poll.
    let (may_wait, follower) = match &request.body {
        RequestKind::Fetch(f) => {
            (Duration::from_millis(u64::try_from(f.max_wait_ms).unwrap_or(0)), fetch::from_follower(f, version))
        }
        _ => (Duration::ZERO, false),
    };
    let client_id = request.client_id().to_string();
    let client = (client_id.as_str(), peer);
    // Client quotas: looked at only when some are set (and never for exempt requests).
    let image = broker.replicas.image();
    // WriteTxnMarkers is broker-to-broker: exempt, as Kafka's sendResponseExemptThrottle.
    let quotas_on = !quota.exempt && key != ApiKey::WriteTxnMarkers && ClientQuotas::any(&image);
    let user = session.principal.name.as_str();
    let mut throttle = Duration::ZERO;
    // request_percentage: the handler's time so far, in percent-seconds of one thread.
    let request_time = || {
        if quotas_on {
            let used = quota.clock.spent().as_secs_f64() * 100.0;
            broker.quotas.record(&image, QuotaKind::Request, user, &client_id, used)
        } else {
            Duration::ZERO
        }
    };
    macro_rules! respond {
        ($body:expr) => {{
            let mut body = $body;
            if quotas_on {
                throttle = throttle.max(request_time());
                body.set_throttle_ms(throttle_ms(throttle));
            }
            count_errors(broker, key, follower, &body);
            let mut buf = BytesMut::new();
            let result = encode_response(&mut buf, key, version, cid, &body);
            out.push(Chunk::Encoded(buf.freeze()));
            result.map_err(Close::from)
        }};
    }
    // Cluster-level rights of whole requests (Kafka's `KafkaApis`): refused with
    // CLUSTER_AUTHORIZATION_FAILED, nothing done.
    let cluster_denied = |op: Operation| !broker.authz.cluster(session, op);
    const CLUSTER_DENIED: i16 = 31;
    let result = match request.body {
        RequestKind::DescribeLogDirs(_) if cluster_denied(Operation::Describe) => {
            respond!(DescribeLogDirsResponse::default().with_error_code(CLUSTER_DENIED))
        }
        RequestKind::DescribeQuorum(_) if cluster_denied(Operation::Describe) => {
            respond!(DescribeQuorumResponse::default().with_error_code(CLUSTER_DENIED))
        }
        RequestKind::ElectLeaders(_) if cluster_denied(Operation::Alter) => {
            respond!(ElectLeadersResponse::default().with_error_code(CLUSTER_DENIED))
        }
        RequestKind::AlterPartitionReassignments(_) if cluster_denied(Operation::Alter) => {
            respond!(AlterPartitionReassignmentsResponse::default().with_error_code(CLUSTER_DENIED))
        }
        RequestKind::ListPartitionReassignments(_) if cluster_denied(Operation::Describe) => {
            respond!(ListPartitionReassignmentsResponse::default().with_error_code(CLUSTER_DENIED))
        }
        RequestKind::DescribeUserScramCredentials(_) if cluster_denied(Operation::Describe) => {
            respond!(DescribeUserScramCredentialsResponse::default().with_error_code(CLUSTER_DENIED))
        }
        RequestKind::AlterUserScramCredentials(r) if cluster_denied(Operation::Alter) => {
            respond!(scram::refuse_alter(&r, CLUSTER_DENIED))
        }
        // Kafka 3.8+ also accepts ALTER (an admin aborting a hanging transaction, KIP-664).
        RequestKind::WriteTxnMarkers(r)
            if cluster_denied(Operation::ClusterAction) && cluster_denied(Operation::Alter) =>
        {
            respond!(write_txn_markers::refuse(&r, CLUSTER_DENIED))
        }
        RequestKind::ApiVersions(r) => respond!(api_versions::handle(r, version)),
        RequestKind::Metadata(r) => respond!(metadata::handle(broker, r, version, session).await),
        RequestKind::Produce(r) => {
            if quotas_on {
                throttle = broker.quotas.record(&image, QuotaKind::Produce, user, &client_id, quota.frame_len as f64);
            }
            let _waiting = (r.acks == -1).then(|| broker.metrics.waiting("Produce"));
            match produce::handle(broker, r, version, session).await {
                produce::Outcome::Respond(body) => respond!(body),
                produce::Outcome::Silent => {
                    // acks=0: no response to carry the throttle time; the mute alone holds
                    // the producer back.
                    throttle = throttle.max(request_time());
                    Ok(())
                }
                produce::Outcome::Close(failed) => {
                    tracing::info!(client_id, peer, correlation_id = cid, %failed,
                    "closing the connection: an acks=0 produce failed (the producer learns of it no other way)");
                    Err(Close::AcksZeroProduceFailed)
                }
            }
        }
        RequestKind::Fetch(r) => {
            // Followers' fetches are replication, which client quotas never throttle.
            let quotas_on = quotas_on && !follower;
            let max_bytes = if quotas_on { broker.quotas.max_fetch_bytes(&image, user, &client_id) } else { None };
            let waiting = (r.max_wait_ms > 0 && r.min_bytes > 0).then(|| broker.metrics.waiting("Fetch"));
            let (mut body, mut records, bytes_out) = fetch::handle(broker, r, version, session, max_bytes).await;
            drop(waiting);
            if quotas_on {
                // Kafka's handleFetchRequest: the response's size counts against
                // consumer_byte_rate; a fetch over either quota is answered empty (its bytes
                // taken back) with the larger throttle time.
                let size = records.iter().map(|(_, r)| r.bytes.len()).sum::<usize>() as f64;
                let bytes_throttle = broker.quotas.record(&image, QuotaKind::Fetch, user, &client_id, size);
                throttle = bytes_throttle.max(request_time());
                if !throttle.is_zero() {
                    broker.quotas.unrecord(&image, QuotaKind::Fetch, user, &client_id, size);
                    body = fetch::throttled(&body);
                    records.clear();
                }
                body.set_throttle_ms(throttle_ms(throttle));
            }
            if !records.is_empty() {
                // BytesOut: what goes to consumers (not a fetch a quota emptied).
                for (topic, bytes) in &bytes_out {
                    broker.metrics.bytes_out(topic, *bytes);
                }
            }
            count_errors(broker, key, follower, &body);
            let mut buf = BytesMut::new();
            encode_response(&mut buf, key, version, cid, &body)?;
            let chunks = splice_records(buf, version >= 12, records).map_err(|reason| ProtocolError::Encode {
                api_key: key,
                version,
                reason,
            })?;
            out.extend(chunks);
            Ok(())
        }
        RequestKind::DescribeClientQuotas(r) => respond!(client_quotas::describe(broker, r, session)),
        RequestKind::AlterClientQuotas(r) => respond!(client_quotas::alter(broker, r, session).await),
        RequestKind::ListOffsets(r) => respond!(list_offsets::handle(broker, r, version, session).await),
        RequestKind::OffsetForLeaderEpoch(r) => respond!(offset_for_leader_epoch::handle(broker, r, version, session)),
        RequestKind::CreateTopics(r) => respond!(create_topics::handle(broker, r, version, session).await),
        RequestKind::DeleteTopics(r) => respond!(delete_topics::handle(broker, r, version, session).await),
        RequestKind::CreatePartitions(r) => respond!(create_partitions::handle(broker, r, session).await),
        // Moves the log start: a checkpoint fsync and segment deletions.
        RequestKind::DeleteRecords(r) => respond!(delete_records::handle(broker, r, session).await),
        RequestKind::InitProducerId(r) => respond!(init_producer_id::handle(broker, r, version, session).await),
        RequestKind::AddPartitionsToTxn(r) => {
            respond!(transactions::add_partitions_to_txn(broker, r, version, session).await)
        }
        RequestKind::AddOffsetsToTxn(r) => {
            respond!(transactions::add_offsets_to_txn(broker, r, version, session).await)
        }
        RequestKind::EndTxn(r) => respond!(transactions::end_txn(broker, r, version, session).await),
        RequestKind::WriteTxnMarkers(r) => respond!(write_txn_markers::handle(broker, r).await),
        RequestKind::DescribeTransactions(r) => respond!(transactions::describe_transactions(broker, r, session)),
        RequestKind::ListTransactions(r) => respond!(transactions::list_transactions(broker, r, session)),
        RequestKind::DescribeProducers(r) => respond!(describe_producers::handle(broker, r, session)),
        RequestKind::DescribeConfigs(r) => respond!(admin_configs::describe(broker, r, version, session)),
        RequestKind::AlterConfigs(r) => respond!(admin_configs::alter(broker, r, session).await),
        RequestKind::IncrementalAlterConfigs(r) => {
            respond!(admin_configs::incremental_alter(broker, r, session).await)
        }
        RequestKind::DescribeCluster(r) => respond!(describe_cluster::handle(broker, r, session)),
        // statvfs and the partitions' sizes: brief, but on the disk.
        RequestKind::DescribeLogDirs(r) => {
            respond!(crate::blocking::off_worker(|| describe_log_dirs::handle(broker, r)))
        }
        RequestKind::DescribeQuorum(r) => respond!(describe_quorum::handle(broker, r, version)),
        RequestKind::ElectLeaders(r) => respond!(elect_leaders::handle(broker, r, version).await),
        RequestKind::DescribeTopicPartitions(r) => respond!(describe_topic_partitions::handle(broker, r, session)),
        RequestKind::AlterPartitionReassignments(r) => respond!(reassignments::alter(broker, r, version).await),
        RequestKind::ListPartitionReassignments(r) => respond!(reassignments::list(broker, r).await),
        RequestKind::FindCoordinator(r) => respond!(groups::find_coordinator(broker, r, version, session)),
        RequestKind::JoinGroup(r) => respond!(groups::join_group(broker, r, version, client, session).await),
        RequestKind::SyncGroup(r) => respond!(groups::sync_group(broker, r, version, client, session).await),
        RequestKind::Heartbeat(r) => respond!(groups::heartbeat(broker, r, version, client, session).await),
        RequestKind::LeaveGroup(r) => respond!(groups::leave_group(broker, r, version, client, session).await),
        RequestKind::OffsetCommit(r) => respond!(groups::offset_commit(broker, r, version, client, session).await),
        RequestKind::TxnOffsetCommit(r) => {
            respond!(groups::txn_offset_commit(broker, r, version, client, session).await)
        }
        RequestKind::OffsetFetch(r) => respond!(groups::offset_fetch(broker, r, version, client, session).await),
        RequestKind::OffsetDelete(r) => respond!(groups::offset_delete(broker, r, version, client, session).await),
        RequestKind::DescribeGroups(r) => respond!(groups::describe_groups(broker, r, version, client, session).await),
        RequestKind::ListGroups(r) => respond!(groups::list_groups(broker, r, version, client, session)),
        RequestKind::DeleteGroups(r) => respond!(groups::delete_groups(broker, r, version, client, session).await),
        RequestKind::ConsumerGroupHeartbeat(r) => {
            respond!(groups::consumer_group_heartbeat(broker, r, version, client, session).await)
        }
        RequestKind::ConsumerGroupDescribe(r) => {
            respond!(groups::consumer_group_describe(broker, r, version, client, session).await)
        }
        RequestKind::SaslHandshake(r) => respond!(sasl::handshake(&r)),
        RequestKind::SaslAuthenticate(r) => respond!(sasl::authenticate(&r)),
        RequestKind::DescribeAcls(r) => respond!(acls::describe(broker, r, session)),
        RequestKind::CreateAcls(r) => respond!(acls::create(broker, r, session).await),
        RequestKind::DeleteAcls(r) => respond!(acls::delete(broker, r, session).await),
        RequestKind::DescribeUserScramCredentials(r) => respond!(scram::describe(broker, r)),
        RequestKind::AlterUserScramCredentials(r) => respond!(scram::alter(broker, r).await),
        // The versions table admits only the keys above; anything else is a
        // mismatch between it and this match.
        _ => Err(ProtocolError::UnsupportedVersion { api_key: key, version, min: 0, max: -1 }.into()),
    };
    let elapsed = started.elapsed();
    broker.metrics.request(key, version, follower, elapsed);
    if let Some(threshold) = broker.slow_request_threshold {
        // JoinGroup and SyncGroup wait for the rest of the group (up to the rebalance timeout).
        if elapsed > threshold + may_wait && !matches!(key, ApiKey::JoinGroup | ApiKey::SyncGroup) {
            tracing::warn!(api = ?key, version, client_id, peer, principal = %session.principal, correlation_id = cid,
                elapsed_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
                threshold_ms = u64::try_from(threshold.as_millis()).unwrap_or(u64::MAX), "slow request");
        }
    }
    result.map(|()| throttle)
}

/// Counts the response's error codes (NONE left out) in `ErrorsPerSec`, one update per
/// distinct code; nothing is allocated when the response holds no error.
fn count_errors(broker: &Broker, key: ApiKey, follower: bool, body: &impl ErrorCodes) {
    let mut codes: Vec<(i16, u64)> = Vec::new();
    body.error_codes(&mut |code| {
        if code != 0 {
            match codes.iter_mut().find(|(c, _)| *c == code) {
                Some((_, n)) => *n += 1,
                None => codes.push((code, 1)),
            }
        }
    });
    for (code, n) in codes {
        broker.metrics.errors(key, follower, code, n);
    }
}

/// A throttle time as `throttle_time_ms`.
fn throttle_ms(t: Duration) -> i32 {
    i32::try_from(t.as_millis()).unwrap_or(i32::MAX)
}

/// The items that occur more than once in `items` (Kafka answers INVALID_REQUEST for each
/// resource an admin request names twice, and changes nothing for it).
pub(crate) fn duplicates<T: Eq + std::hash::Hash + Clone>(items: impl IntoIterator<Item = T>) -> HashSet<T> {
    let mut seen = HashSet::new();
    items.into_iter().filter(|i| !seen.insert(i.clone())).collect()
}

pub(crate) fn topic_name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

/// KIP-951: the leader and leader epoch the metadata gives `topic`-`index`, sent with a
/// NOT_LEADER_OR_FOLLOWER or FENCED_LEADER_EPOCH answer so the client goes there without a
/// Metadata round trip (leader -1 when it has none that is live).
pub(crate) fn leader_hint(image: &strata_metadata::MetadataImage, topic: &str, index: i32) -> Option<(i32, i32)> {
    let p = image.partition(topic, index)?;
    let live = image.brokers.get(&p.leader).is_some_and(|b| !b.fenced);
    Some((if live { p.leader } else { -1 }, p.leader_epoch))
}

/// KIP-951: the live brokers among `ids` (host, port, rack), for a response's `node_endpoints`.
/// Each with its endpoint of `listener`, the one the client came in on.
pub(crate) fn hinted_endpoints(
    image: &strata_metadata::MetadataImage,
    ids: impl IntoIterator<Item = i32>,
    listener: &str,
) -> Vec<(i32, String, i32, Option<String>)> {
    let mut seen = std::collections::BTreeSet::new();
    ids.into_iter()
        .filter(|id| seen.insert(*id))
        .filter_map(|id| image.brokers.get(&id).filter(|b| !b.fenced))
        .filter_map(|b| {
            let (host, port) = b.endpoint(listener)?;
            Some((b.broker_id, host.to_string(), i32::from(port), b.rack.clone()))
        })
        .collect()
}

/// Per-partition answers grouped by topic, topics in the order they first appear (how the
/// controller's per-partition outcomes become a response's topic entries).
pub(crate) fn by_topic<P>(items: impl IntoIterator<Item = (String, P)>) -> Vec<(String, Vec<P>)> {
    let mut out: Vec<(String, Vec<P>)> = Vec::new();
    for (topic, item) in items {
        match out.iter_mut().find(|(t, _)| *t == topic) {
            Some((_, items)) => items.push(item),
            None => out.push((topic, vec![item])),
        }
    }
    out
}

pub(crate) fn str_bytes(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

/// The authorized-operations value Kafka sends when they were not asked for.
pub(crate) const AUTHORIZED_OPERATIONS_OMITTED: i32 = i32::MIN;

/// The ACL operations Kafka reports as authorized operations on a topic.
pub(crate) const TOPIC_OPERATIONS: [Operation; 8] = [
    Operation::Read,
    Operation::Write,
    Operation::Create,
    Operation::Delete,
    Operation::Alter,
    Operation::Describe,
    Operation::DescribeConfigs,
    Operation::AlterConfigs,
];
/// The same for the cluster resource.
pub(crate) const CLUSTER_OPERATIONS: [Operation; 7] = [
    Operation::Create,
    Operation::Alter,
    Operation::Describe,
    Operation::ClusterAction,
    Operation::DescribeConfigs,
    Operation::AlterConfigs,
    Operation::IdempotentWrite,
];
/// The same for a group.
pub(crate) const GROUP_OPERATIONS: [Operation; 3] = [Operation::Read, Operation::Delete, Operation::Describe];
