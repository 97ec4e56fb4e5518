//! ApiVersions: what Strata serves. The body comes from the versions table; from v3 it also
//! carries the features Strata supports and has finalized (KIP-584), today
//! `transaction.version` at level 2, which makes Kafka 4 clients use transactions V2
//! (KIP-890 part 2: Produce v12, TxnOffsetCommit v5, EndTxn v5 with an epoch bump at every
//! commit and abort).

use strata_protocol::kafka_protocol::messages::api_versions_response::{FinalizedFeatureKey, SupportedFeatureKey};
use strata_protocol::kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse};
use strata_protocol::kafka_protocol::protocol::StrBytes;
use strata_protocol::response::api_versions_body;
use strata_protocol::ResponseError;

/// `transaction.version`: supported 0–2, finalized at 2 (a new Kafka 4.0 cluster's level).
pub const TRANSACTION_VERSION: i16 = 2;

/// The epoch of the finalized features. They never change at run time yet, so every broker
/// answers the same epoch (clients keep the features of the highest epoch they saw).
const FINALIZED_FEATURES_EPOCH: i64 = 1;

pub fn handle(request: ApiVersionsRequest, version: i16) -> ApiVersionsResponse {
    // v3+ carries the client's software name and version; Kafka rejects
    // values outside [a-zA-Z0-9.-] with INVALID_REQUEST.
    let valid = |s: &str| s.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
    if version >= 3 && (!valid(&request.client_software_name) || !valid(&request.client_software_version)) {
        return api_versions_body(Some(ResponseError::InvalidRequest));
    }
    let body = api_versions_body(None);
    if version < 3 || skips_tags_badly(&request.client_software_name, &request.client_software_version) {
        return body;
    }
    let name = || StrBytes::from_static_str("transaction.version");
    body.with_supported_features(vec![SupportedFeatureKey::default()
        .with_name(name())
        .with_min_version(0)
        .with_max_version(TRANSACTION_VERSION)])
        .with_finalized_features_epoch(FINALIZED_FEATURES_EPOCH)
        .with_finalized_features(vec![FinalizedFeatureKey::default()
            .with_name(name())
            .with_min_version_level(TRANSACTION_VERSION)
            .with_max_version_level(TRANSACTION_VERSION)])
}

/// librdkafka before 2.2 mis-skips tagged fields in ApiVersions responses
/// (shared COMPATIBILITY-NOTES: kcat on Debian 12 links 2.0.2); it uses no feature, so it gets
/// none.
fn skips_tags_badly(software: &str, version: &str) -> bool {
    if software != "librdkafka" {
        return false;
    }
    let mut parts = version.split(['.', '-']).map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) < (2, 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_from_v3_except_for_old_librdkafka() {
        let req = |name: &str, v: &str| {
            ApiVersionsRequest::default()
                .with_client_software_name(StrBytes::from_string(name.into()))
                .with_client_software_version(StrBytes::from_string(v.into()))
        };
        let tv = |r: &ApiVersionsResponse| r.finalized_features.first().map(|f| f.max_version_level);
        assert_eq!(tv(&handle(req("apache-kafka-java", "4.1.1"), 3)), Some(2));
        assert_eq!(tv(&handle(req("librdkafka", "2.16.1"), 4)), Some(2));
        assert_eq!(tv(&handle(req("librdkafka", "2.0.2"), 3)), None);
        assert_eq!(tv(&handle(req("apache-kafka-java", "4.1.1"), 2)), None, "no tagged fields below v3");
    }
}
