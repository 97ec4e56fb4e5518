//! Encoding a response: size prefix, response header, body.

use bytes::{BufMut, BytesMut};
use kafka_protocol::messages::api_versions_response::{ApiVersion, ApiVersionsResponse};
use kafka_protocol::messages::ResponseHeader;
use kafka_protocol::protocol::Encodable;

use crate::versions::SUPPORTED;
use crate::{ApiKey, ProtocolError, ResponseError};

/// Appends one whole response frame for `body` to `out`.
///
/// ApiVersions responses always use header v0 (no tagged fields), whatever
/// their version, so that a client can read them before it knows what the
/// broker supports.
pub fn encode_response<M: Encodable>(
    out: &mut BytesMut,
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &M,
) -> Result<(), ProtocolError> {
    let err = |e: anyhow::Error| ProtocolError::Encode {
        api_key,
        version,
        reason: e.to_string(),
    };
    let header_version = if api_key == ApiKey::ApiVersions {
        0
    } else {
        api_key.response_header_version(version)
    };
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let size = header.compute_size(header_version).map_err(err)?
        + body.compute_size(version).map_err(err)?;
    let size_prefix = i32::try_from(size).map_err(|_| ProtocolError::Encode {
        api_key,
        version,
        reason: format!("response of {size} bytes exceeds the frame limit"),
    })?;
    out.reserve(4 + size);
    out.put_i32(size_prefix);
    header.encode(out, header_version).map_err(err)?;
    body.encode(out, version).map_err(err)?;
    Ok(())
}

/// The ApiVersions body listing every served key and range.
pub fn api_versions_body(error: Option<ResponseError>) -> ApiVersionsResponse {
    let keys = SUPPORTED
        .iter()
        .map(|r| {
            ApiVersion::default()
                .with_api_key(r.key as i16)
                .with_min_version(r.min)
                .with_max_version(r.max)
        })
        .collect();
    ApiVersionsResponse::default()
        .with_error_code(error.map_or(0, |e| e.code()))
        .with_api_keys(keys)
}

/// KIP-511: the answer to an ApiVersions request at a version above ours —
/// v0 format, UNSUPPORTED_VERSION, and only ApiVersions' own range.
pub fn encode_unsupported_api_versions(
    out: &mut BytesMut,
    correlation_id: i32,
) -> Result<(), ProtocolError> {
    let range =
        crate::versions::supported_range(ApiKey::ApiVersions).map_or((0, 0), |r| (r.min, r.max));
    let body = ApiVersionsResponse::default()
        .with_error_code(ResponseError::UnsupportedVersion.code())
        .with_api_keys(vec![ApiVersion::default()
            .with_api_key(ApiKey::ApiVersions as i16)
            .with_min_version(range.0)
            .with_max_version(range.1)]);
    encode_response(out, ApiKey::ApiVersions, 0, correlation_id, &body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::{decode_request, Decoded};
    use bytes::{Buf, Bytes};
    use kafka_protocol::messages::{ApiVersionsRequest, RequestHeader};
    use kafka_protocol::protocol::{Decodable, StrBytes};

    fn request_frame(version: i16, correlation_id: i32) -> Bytes {
        let header = RequestHeader::default()
            .with_request_api_key(ApiKey::ApiVersions as i16)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("t")));
        let mut buf = BytesMut::new();
        header
            .encode(
                &mut buf,
                ApiKey::ApiVersions.request_header_version(version),
            )
            .unwrap();
        ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("x"))
            .with_client_software_version(StrBytes::from_static_str("1"))
            .encode(&mut buf, version)
            .unwrap();
        buf.freeze()
    }

    #[test]
    fn api_versions_v3_uses_header_v0_and_no_default_tags() {
        let mut out = BytesMut::new();
        encode_response(
            &mut out,
            ApiKey::ApiVersions,
            3,
            7,
            &api_versions_body(None),
        )
        .unwrap();
        let mut b = out.freeze();
        let len = b.get_i32() as usize;
        assert_eq!(len, b.len());
        assert_eq!(b.get_i32(), 7); // correlation id, then directly the body
        let body = ApiVersionsResponse::decode(&mut b.clone(), 3).unwrap();
        assert_eq!(body.error_code, 0);
        assert_eq!(body.api_keys.len(), SUPPORTED.len());
        // The body ends with throttle_time_ms and an empty tag section (one 0 byte):
        // no FinalizedFeaturesEpoch = -1 tag that old librdkafka mis-parses.
        assert_eq!(*b.last().unwrap(), 0);
        assert!(body.finalized_features_epoch == -1 && body.supported_features.is_empty());
    }

    #[test]
    fn kip_511_answer_for_a_too_new_api_versions() {
        let frame = request_frame(4, 9);
        assert!(matches!(
            decode_request(frame).unwrap(),
            Decoded::Request(_)
        ));
        let mut raw = BytesMut::from(&request_frame(4, 9)[..]);
        raw[2..4].copy_from_slice(&99i16.to_be_bytes());
        let Decoded::UnsupportedApiVersions {
            correlation_id,
            version,
        } = decode_request(raw.freeze()).unwrap()
        else {
            panic!("expected the KIP-511 path");
        };
        assert_eq!((correlation_id, version), (9, 99));
        let mut out = BytesMut::new();
        encode_unsupported_api_versions(&mut out, correlation_id).unwrap();
        let mut b = out.freeze();
        b.advance(8);
        let body = ApiVersionsResponse::decode(&mut b, 0).unwrap();
        assert_eq!(body.error_code, 35);
        assert_eq!(body.api_keys.len(), 1);
        assert_eq!(body.api_keys[0].max_version, 4);
    }

    #[test]
    fn unknown_keys_and_short_frames_are_errors() {
        let mut raw = BytesMut::from(&request_frame(3, 1)[..]);
        raw[0..2].copy_from_slice(&999i16.to_be_bytes());
        assert!(matches!(
            decode_request(raw.freeze()),
            Err(ProtocolError::UnknownApiKey { api_key: 999 })
        ));
        assert!(matches!(
            decode_request(Bytes::from_static(&[0, 18, 0])),
            Err(ProtocolError::ShortHeader { .. })
        ));
    }
}
