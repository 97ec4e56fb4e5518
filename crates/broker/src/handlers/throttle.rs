//! Setting a response's `throttle_time_ms` (KIP-219): the time the client is held back for
//! going over a quota. Responses without the field (the SASL ones, DescribeQuorum,
//! WriteTxnMarkers) carry nothing; their connection is muted all the same.

use strata_protocol::kafka_protocol::messages::*;

/// A response body whose throttle time can be set.
pub trait Throttled {
    /// Sets `throttle_time_ms` (ms, at most `i32::MAX`) where the response has it.
    fn set_throttle_ms(&mut self, ms: i32);
}

macro_rules! with_field {
    ($($t:ty),* $(,)?) => {$(
        impl Throttled for $t {
            fn set_throttle_ms(&mut self, ms: i32) {
                self.throttle_time_ms = ms;
            }
        }
    )*};
}

macro_rules! without_field {
    ($($t:ty),* $(,)?) => {$(
        impl Throttled for $t {
            fn set_throttle_ms(&mut self, _: i32) {}
        }
    )*};
}

with_field!(
    ProduceResponse,
    FetchResponse,
    ListOffsetsResponse,
    MetadataResponse,
    OffsetCommitResponse,
    OffsetFetchResponse,
    FindCoordinatorResponse,
    JoinGroupResponse,
    HeartbeatResponse,
    LeaveGroupResponse,
    SyncGroupResponse,
    DescribeGroupsResponse,
    ListGroupsResponse,
    ApiVersionsResponse,
    CreateTopicsResponse,
    DeleteTopicsResponse,
    DeleteRecordsResponse,
    InitProducerIdResponse,
    OffsetForLeaderEpochResponse,
    AddPartitionsToTxnResponse,
    AddOffsetsToTxnResponse,
    EndTxnResponse,
    TxnOffsetCommitResponse,
    DescribeAclsResponse,
    CreateAclsResponse,
    DeleteAclsResponse,
    DescribeConfigsResponse,
    AlterConfigsResponse,
    DescribeLogDirsResponse,
    CreatePartitionsResponse,
    DeleteGroupsResponse,
    ElectLeadersResponse,
    IncrementalAlterConfigsResponse,
    AlterPartitionReassignmentsResponse,
    ListPartitionReassignmentsResponse,
    OffsetDeleteResponse,
    DescribeClientQuotasResponse,
    AlterClientQuotasResponse,
    DescribeUserScramCredentialsResponse,
    AlterUserScramCredentialsResponse,
    DescribeClusterResponse,
    DescribeProducersResponse,
    DescribeTransactionsResponse,
    ListTransactionsResponse,
    ConsumerGroupHeartbeatResponse,
    ConsumerGroupDescribeResponse,
    DescribeTopicPartitionsResponse,
);

without_field!(SaslHandshakeResponse, SaslAuthenticateResponse, DescribeQuorumResponse, WriteTxnMarkersResponse);
