//! The error codes a response carries, for Kafka's `ErrorsPerSec` metric
//! (`kafka_network_requestmetrics_errors_total{request, error}`; Kafka's
//! `AbstractResponse.errorCounts`). Every response reports every code it holds: per
//! partition, per topic or resource, and top level.

use strata_protocol::kafka_protocol::messages::*;

/// A response body whose error codes can be listed; every response type served implements
/// it (a new API cannot be added without saying where its errors are).
pub trait ErrorCodes {
    /// Calls `f` with each error code of the response, `0` (NONE) included.
    fn error_codes(&self, f: &mut dyn FnMut(i16));
}

/// `impl ErrorCodes for T` from a body over `self` (`r`) and the callback (`f`).
macro_rules! codes {
    ($($t:ty => |$r:ident, $f:ident| $body:expr;)*) => {$(
        impl ErrorCodes for $t {
            fn error_codes(&self, $f: &mut dyn FnMut(i16)) {
                let $r = self;
                $body
            }
        }
    )*};
}

codes! {
    JoinGroupResponse => |r, f| f(r.error_code);
    HeartbeatResponse => |r, f| f(r.error_code);
    SyncGroupResponse => |r, f| f(r.error_code);
    ListGroupsResponse => |r, f| f(r.error_code);
    ApiVersionsResponse => |r, f| f(r.error_code);
    InitProducerIdResponse => |r, f| f(r.error_code);
    AddOffsetsToTxnResponse => |r, f| f(r.error_code);
    EndTxnResponse => |r, f| f(r.error_code);
    ConsumerGroupHeartbeatResponse => |r, f| f(r.error_code);
    SaslHandshakeResponse => |r, f| f(r.error_code);
    SaslAuthenticateResponse => |r, f| f(r.error_code);
    DescribeAclsResponse => |r, f| f(r.error_code);
    ListPartitionReassignmentsResponse => |r, f| f(r.error_code);
    DescribeClientQuotasResponse => |r, f| f(r.error_code);
    DescribeClusterResponse => |r, f| f(r.error_code);
    ListTransactionsResponse => |r, f| f(r.error_code);
    ProduceResponse => |r, f| r.responses.iter().flat_map(|t| &t.partition_responses).for_each(|p| f(p.error_code));
    FetchResponse => |r, f| {
        if r.error_code != 0 {
            f(r.error_code);
        }
        r.responses.iter().flat_map(|t| &t.partitions).for_each(|p| f(p.error_code));
    };
    ListOffsetsResponse => |r, f| r.topics.iter().flat_map(|t| &t.partitions).for_each(|p| f(p.error_code));
    MetadataResponse => |r, f| {
        for t in &r.topics {
            f(t.error_code);
            t.partitions.iter().for_each(|p| f(p.error_code));
        }
    };
    OffsetCommitResponse => |r, f| r.topics.iter().flat_map(|t| &t.partitions).for_each(|p| f(p.error_code));
    OffsetFetchResponse => |r, f| {
        f(r.error_code);
        r.topics.iter().flat_map(|t| &t.partitions).for_each(|p| f(p.error_code));
        for g in &r.groups {
            f(g.error_code);
            g.topics.iter().flat_map(|t| &t.partitions).for_each(|p| f(p.error_code));
        }
    };
    FindCoordinatorResponse => |r, f| {
        if r.coordinators.is_empty() {
            f(r.error_code);
        }
        r.coordinators.iter().for_each(|c| f(c.error_code));
    };
    LeaveGroupResponse => |r, f| {
        f(r.error_code);
        r.members.iter().for_each(|m| f(m.error_code));
    };
    DescribeGroupsResponse => |r, f| r.groups.iter().for_each(|g| f(g.error_code));
    CreateTopicsResponse => |r, f| r.topics.iter().for_each(|t| f(t.error_code));
    DeleteTopicsResponse => |r, f| r.responses.iter().for_each(|t| f(t.error_code));
    DeleteRecordsResponse => |r, f| r.topics.iter().flat_map(|t| &t.partitions).for_each(|p| f(p.error_code));
    OffsetForLeaderEpochResponse => |r, f| r.topics.iter().flat_map(|t| &t.partitions).for_each(|p| f(p.error_code));
    TxnOffsetCommitResponse => |r, f| r.topics.iter().flat_map(|t| &t.partitions).for_each(|p| f(p.error_code));
    AddPartitionsToTxnResponse => |r, f| {
        if r.error_code != 0 {
            f(r.error_code);
        }
        r.results_by_transaction
            .iter()
            .flat_map(|t| &t.topic_results)
            .chain(&r.results_by_topic_v3_and_below)
            .flat_map(|t| &t.results_by_partition)
            .for_each(|p| f(p.partition_error_code));
    };
    CreateAclsResponse => |r, f| r.results.iter().for_each(|x| f(x.error_code));
    DeleteAclsResponse => |r, f| r.filter_results.iter().for_each(|x| f(x.error_code));
    DescribeConfigsResponse => |r, f| r.results.iter().for_each(|x| f(x.error_code));
    AlterConfigsResponse => |r, f| r.responses.iter().for_each(|x| f(x.error_code));
    IncrementalAlterConfigsResponse => |r, f| r.responses.iter().for_each(|x| f(x.error_code));
    DescribeLogDirsResponse => |r, f| {
        if r.error_code != 0 {
            f(r.error_code);
        }
        r.results.iter().for_each(|d| f(d.error_code));
    };
    CreatePartitionsResponse => |r, f| r.results.iter().for_each(|x| f(x.error_code));
    DeleteGroupsResponse => |r, f| r.results.iter().for_each(|x| f(x.error_code));
    ElectLeadersResponse => |r, f| {
        f(r.error_code);
        r.replica_election_results.iter().flat_map(|t| &t.partition_result).for_each(|p| f(p.error_code));
    };
    AlterPartitionReassignmentsResponse => |r, f| {
        f(r.error_code);
        r.responses.iter().flat_map(|t| &t.partitions).for_each(|p| f(p.error_code));
    };
    OffsetDeleteResponse => |r, f| {
        f(r.error_code);
        r.topics.iter().flat_map(|t| &t.partitions).for_each(|p| f(p.error_code));
    };
    AlterClientQuotasResponse => |r, f| r.entries.iter().for_each(|e| f(e.error_code));
    DescribeUserScramCredentialsResponse => |r, f| {
        f(r.error_code);
        r.results.iter().for_each(|x| f(x.error_code));
    };
    AlterUserScramCredentialsResponse => |r, f| r.results.iter().for_each(|x| f(x.error_code));
    DescribeProducersResponse => |r, f| r.topics.iter().flat_map(|t| &t.partitions).for_each(|p| f(p.error_code));
    DescribeTransactionsResponse => |r, f| r.transaction_states.iter().for_each(|t| f(t.error_code));
    ConsumerGroupDescribeResponse => |r, f| r.groups.iter().for_each(|g| f(g.error_code));
    DescribeTopicPartitionsResponse => |r, f| {
        for t in &r.topics {
            f(t.error_code);
            t.partitions.iter().for_each(|p| f(p.error_code));
        }
    };
    DescribeQuorumResponse => |r, f| {
        f(r.error_code);
        r.topics.iter().flat_map(|t| &t.partitions).for_each(|p| f(p.error_code));
    };
    WriteTxnMarkersResponse => |r, f| {
        r.markers.iter().flat_map(|m| &m.topics).flat_map(|t| &t.partitions).for_each(|p| f(p.error_code));
    };
}
