//! The API keys Strata serves and the version range of each.
//!
//! This table is the single source of truth: ApiVersions advertises it, the
//! connection refuses anything outside it, and `docs/compatibility.md`
//! describes it. A key not listed here is not advertised, and a request for
//! it closes the connection with a log line (Apache Kafka does the same).

use crate::ApiKey;

/// One served API key and its inclusive version range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiRange {
    pub key: ApiKey,
    pub min: i16,
    pub max: i16,
}

/// Versions a request may be *decoded* at may start above the advertised
/// minimum: Produce v0–v2 are advertised because librdkafka refuses to send
/// compressed batches to a broker whose Produce range does not start at 0
/// (KAFKA-18659), yet they carry message formats v0/v1, which Strata rejects.
pub const PRODUCE_MIN_DECODABLE: i16 = 3;

/// Every API key Strata answers, with the versions it answers.
pub const SUPPORTED: &[ApiRange] = &[
    ApiRange { key: ApiKey::Produce, min: 0, max: 13 },
    ApiRange { key: ApiKey::Fetch, min: 4, max: 17 },
    ApiRange { key: ApiKey::ListOffsets, min: 1, max: 10 },
    ApiRange { key: ApiKey::OffsetForLeaderEpoch, min: 2, max: 4 },
    ApiRange { key: ApiKey::Metadata, min: 0, max: 13 },
    ApiRange { key: ApiKey::ApiVersions, min: 0, max: 4 },
    ApiRange { key: ApiKey::CreateTopics, min: 2, max: 7 },
    ApiRange { key: ApiKey::DeleteTopics, min: 1, max: 6 },
    ApiRange { key: ApiKey::DeleteRecords, min: 0, max: 2 },
    ApiRange { key: ApiKey::InitProducerId, min: 0, max: 5 },
    ApiRange { key: ApiKey::AddPartitionsToTxn, min: 0, max: 5 },
    ApiRange { key: ApiKey::AddOffsetsToTxn, min: 0, max: 4 },
    ApiRange { key: ApiKey::EndTxn, min: 0, max: 5 },
    // Sent by transaction coordinators to partition leaders (v0 was removed in Kafka 4.0).
    ApiRange { key: ApiKey::WriteTxnMarkers, min: 1, max: 1 },
    ApiRange { key: ApiKey::DescribeTransactions, min: 0, max: 0 },
    ApiRange { key: ApiKey::ListTransactions, min: 0, max: 1 },
    ApiRange { key: ApiKey::DescribeProducers, min: 0, max: 0 },
    ApiRange { key: ApiKey::DescribeConfigs, min: 1, max: 4 },
    ApiRange { key: ApiKey::AlterConfigs, min: 0, max: 2 },
    ApiRange { key: ApiKey::CreatePartitions, min: 0, max: 3 },
    ApiRange { key: ApiKey::IncrementalAlterConfigs, min: 0, max: 1 },
    ApiRange { key: ApiKey::DescribeCluster, min: 0, max: 2 },
    ApiRange { key: ApiKey::DescribeQuorum, min: 0, max: 2 },
    ApiRange { key: ApiKey::DescribeLogDirs, min: 1, max: 4 },
    ApiRange { key: ApiKey::ElectLeaders, min: 0, max: 2 },
    ApiRange { key: ApiKey::AlterPartitionReassignments, min: 0, max: 1 },
    ApiRange { key: ApiKey::ListPartitionReassignments, min: 0, max: 0 },
    ApiRange { key: ApiKey::FindCoordinator, min: 0, max: 6 },
    ApiRange { key: ApiKey::JoinGroup, min: 0, max: 9 },
    ApiRange { key: ApiKey::SyncGroup, min: 0, max: 5 },
    ApiRange { key: ApiKey::Heartbeat, min: 0, max: 4 },
    ApiRange { key: ApiKey::LeaveGroup, min: 0, max: 5 },
    ApiRange { key: ApiKey::OffsetCommit, min: 2, max: 9 },
    ApiRange { key: ApiKey::OffsetFetch, min: 1, max: 9 },
    ApiRange { key: ApiKey::TxnOffsetCommit, min: 0, max: 5 },
    ApiRange { key: ApiKey::OffsetDelete, min: 0, max: 0 },
    ApiRange { key: ApiKey::DescribeGroups, min: 0, max: 6 },
    ApiRange { key: ApiKey::ListGroups, min: 0, max: 5 },
    ApiRange { key: ApiKey::DeleteGroups, min: 0, max: 2 },
    ApiRange { key: ApiKey::ConsumerGroupHeartbeat, min: 0, max: 1 },
    ApiRange { key: ApiKey::ConsumerGroupDescribe, min: 0, max: 1 },
    ApiRange { key: ApiKey::DescribeTopicPartitions, min: 0, max: 0 },
    // On SASL listeners the connection runs them before any other request; elsewhere they
    // are answered ILLEGAL_SASL_STATE (as Kafka on a PLAINTEXT or SSL listener).
    ApiRange { key: ApiKey::SaslHandshake, min: 0, max: 1 },
    ApiRange { key: ApiKey::SaslAuthenticate, min: 0, max: 2 },
    ApiRange { key: ApiKey::DescribeUserScramCredentials, min: 0, max: 0 },
    ApiRange { key: ApiKey::DescribeAcls, min: 1, max: 3 },
    ApiRange { key: ApiKey::CreateAcls, min: 1, max: 3 },
    ApiRange { key: ApiKey::DeleteAcls, min: 1, max: 3 },
    ApiRange { key: ApiKey::AlterUserScramCredentials, min: 0, max: 0 },
    ApiRange { key: ApiKey::DescribeClientQuotas, min: 0, max: 1 },
    ApiRange { key: ApiKey::AlterClientQuotas, min: 0, max: 1 },
];

/// What a node's CONTROLLER listener answers (its ApiVersions lists these, as a KRaft
/// controller's does, so admin clients bootstrapped with `bootstrap.controllers` find
/// DescribeQuorum, DescribeCluster, AddRaftVoter and RemoveRaftVoter there).
pub const CONTROLLER_SUPPORTED: &[ApiRange] = &[
    ApiRange { key: ApiKey::CreateTopics, min: 2, max: 7 },
    ApiRange { key: ApiKey::ApiVersions, min: 0, max: 4 },
    ApiRange { key: ApiKey::DescribeQuorum, min: 0, max: 2 },
    ApiRange { key: ApiKey::Envelope, min: 0, max: 0 },
    ApiRange { key: ApiKey::DescribeCluster, min: 0, max: 2 },
    ApiRange { key: ApiKey::BrokerRegistration, min: 0, max: 4 },
    ApiRange { key: ApiKey::BrokerHeartbeat, min: 0, max: 1 },
    ApiRange { key: ApiKey::AllocateProducerIds, min: 0, max: 0 },
    ApiRange { key: ApiKey::AlterPartition, min: 2, max: 3 },
    ApiRange { key: ApiKey::AddRaftVoter, min: 0, max: 0 },
    ApiRange { key: ApiKey::RemoveRaftVoter, min: 0, max: 0 },
];

/// The served range for `key`, if Strata serves it at all.
pub fn supported_range(key: ApiKey) -> Option<ApiRange> {
    SUPPORTED.iter().copied().find(|r| r.key == key)
}

/// The lowest version Strata can decode for `key` (see [`PRODUCE_MIN_DECODABLE`]).
pub fn min_decodable(range: ApiRange) -> i16 {
    if range.key == ApiKey::Produce {
        PRODUCE_MIN_DECODABLE.max(range.min)
    } else {
        range.min
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_range_is_within_what_the_codec_can_decode() {
        for r in SUPPORTED {
            let codec = r.key.valid_versions();
            assert!(min_decodable(*r) >= codec.min, "{:?}", r.key);
            assert!(r.max <= codec.max, "{:?}", r.key);
            assert!(r.min <= r.max);
        }
    }
}

#[cfg(test)]
mod doc_tests {
    use super::*;

    /// The rows of a docs table must state exactly `table`'s keys and ranges.
    fn check_table(section: &str, table: &[ApiRange], what: &str) {
        for r in table {
            let range = if r.min == r.max { format!("{}", r.min) } else { format!("{}–{}", r.min, r.max) };
            let row = format!("| {} | {:?} | {} |", r.key as i16, r.key, range);
            assert!(section.contains(&row), "{what} lacks the row starting {row}");
        }
        let rows = section
            .lines()
            .filter(|l| l.starts_with("| ") && l.chars().nth(2).is_some_and(|c| c.is_ascii_digit()))
            .count();
        assert_eq!(rows, table.len(), "{what} lists keys that are not served");
    }

    /// docs/compatibility.md must state exactly the served ranges, on the client listener and
    /// on the CONTROLLER listener.
    #[test]
    fn compatibility_doc_matches_the_table() {
        let doc = include_str!("../../../docs/compatibility.md");
        let served = doc.split("## Not served yet").next().unwrap_or_default();
        check_table(served, SUPPORTED, "docs/compatibility.md");
        let controller = doc.split("## On the CONTROLLER listener").nth(1).unwrap_or_default();
        let controller = controller.split("\n## ").next().unwrap_or_default();
        check_table(controller, CONTROLLER_SUPPORTED, "the CONTROLLER listener section");
    }
}
