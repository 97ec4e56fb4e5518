//! ApiVersions: what Strata serves. The body comes from the versions table.

use strata_protocol::kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse};
use strata_protocol::response::api_versions_body;
use strata_protocol::ResponseError;

pub fn handle(request: ApiVersionsRequest, version: i16) -> ApiVersionsResponse {
    // v3+ carries the client's software name and version; Kafka rejects
    // values outside [a-zA-Z0-9.-] with INVALID_REQUEST.
    let valid = |s: &str| s.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
    if version >= 3 && (!valid(&request.client_software_name) || !valid(&request.client_software_version)) {
        return api_versions_body(Some(ResponseError::InvalidRequest));
    }
    api_versions_body(None)
}
