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
    let err = |e: anyhow::Error| ProtocolError::Encode { api_key, version, reason: e.to_string() };
    let header_version = if api_key == ApiKey::ApiVersions { 0 } else { api_key.response_header_version(version) };
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let size = header.compute_size(header_version).map_err(err)? + body.compute_size(version).map_err(err)?;
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
    api_versions_of(SUPPORTED, error)
}

/// The ApiVersions body of a CONTROLLER listener (see [`crate::versions::CONTROLLER_SUPPORTED`]).
pub fn controller_api_versions_body() -> ApiVersionsResponse {
    api_versions_of(crate::versions::CONTROLLER_SUPPORTED, None)
}

fn api_versions_of(table: &[crate::versions::ApiRange], error: Option<ResponseError>) -> ApiVersionsResponse {
    let keys = table
        .iter()
        .map(|r| ApiVersion::default().with_api_key(r.key as i16).with_min_version(r.min).with_max_version(r.max))
        .collect();
    ApiVersionsResponse::default().with_error_code(error.map_or(0, |e| e.code())).with_api_keys(keys)
}

/// KIP-511: the answer to an ApiVersions request at a version above ours —
/// v0 format, UNSUPPORTED_VERSION, and only ApiVersions' own range.
pub fn encode_unsupported_api_versions(out: &mut BytesMut, correlation_id: i32) -> Result<(), ProtocolError> {
    let range = crate::versions::supported_range(ApiKey::ApiVersions).map_or((0, 0), |r| (r.min, r.max));
    let body =
        ApiVersionsResponse::default().with_error_code(ResponseError::UnsupportedVersion.code()).with_api_keys(vec![
            ApiVersion::default()
                .with_api_key(ApiKey::ApiVersions as i16)
                .with_min_version(range.0)
                .with_max_version(range.1),
        ]);
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
        header.encode(&mut buf, ApiKey::ApiVersions.request_header_version(version)).unwrap();
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
        encode_response(&mut out, ApiKey::ApiVersions, 3, 7, &api_versions_body(None)).unwrap();
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
        assert!(matches!(decode_request(frame).unwrap(), Decoded::Request(_)));
        let mut raw = BytesMut::from(&request_frame(4, 9)[..]);
        raw[2..4].copy_from_slice(&99i16.to_be_bytes());
        let Decoded::UnsupportedApiVersions { correlation_id, version } = decode_request(raw.freeze()).unwrap() else {
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
        assert!(matches!(decode_request(raw.freeze()), Err(ProtocolError::UnknownApiKey { api_key: 999 })));
        assert!(matches!(decode_request(Bytes::from_static(&[0, 18, 0])), Err(ProtocolError::ShortHeader { .. })));
    }
}

/// Length of the placeholder that stands for a record set while a response
/// is encoded (see [`splice_records`]).
pub const MARKER_LEN: usize = 16;

/// A placeholder for the `index`-th record set of a response: unlikely to
/// occur by chance (it carries a per-response random `nonce`).
pub fn record_marker(nonce: u64, index: u32) -> [u8; MARKER_LEN] {
    let mut m = [0u8; MARKER_LEN];
    m[0..4].copy_from_slice(&0xFEED_5EA1u32.to_be_bytes());
    m[4..8].copy_from_slice(&index.to_be_bytes());
    m[8..16].copy_from_slice(&nonce.to_be_bytes());
    m
}

/// A piece of an encoded response frame, in writing order: encoded bytes, or a record set to
/// write as it is (the caller decides how: from memory, or from its file with `sendfile`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Chunk<R> {
    Encoded(bytes::Bytes),
    Records(R),
}

impl<R: AsRef<[u8]>> Chunk<R> {
    /// The chunk's bytes.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Chunk::Encoded(b) => b,
            Chunk::Records(r) => r.as_ref(),
        }
    }
}

/// Replaces placeholder record sets in an encoded response frame by the real
/// record sets without copying them: returns the frame as chunks (encoded
/// bytes, then a record set, then encoded bytes, …) for a vectored write,
/// with the size prefix and each record length fixed up.
///
/// `frame` is a whole frame from [`encode_response`] whose body holds, in
/// encoding order, a placeholder from [`record_marker`] (as a RECORDS field:
/// an `i32` length when `flexible` is false, an unsigned-varint length + 1
/// when true) for each entry of `records`.
pub fn splice_records<R: AsRef<[u8]>>(
    frame: BytesMut,
    flexible: bool,
    records: Vec<([u8; MARKER_LEN], R)>,
) -> Result<Vec<Chunk<R>>, String> {
    let frame = frame.freeze();
    let mut chunks = Vec::with_capacity(records.len() * 2 + 1);
    let mut pos = 4; // after the size prefix
    let mut extra: i64 = 0;
    let mut head = BytesMut::new();
    for (marker, real) in records {
        let found = frame[pos..]
            .windows(MARKER_LEN)
            .position(|w| w == marker)
            .map(|i| pos + i)
            .ok_or("record placeholder not found in the encoded response")?;
        let old_prefix = if flexible { 1 } else { 4 };
        if found < pos + old_prefix {
            return Err("record placeholder without its length prefix".into());
        }
        head.extend_from_slice(&frame[pos..found - old_prefix]);
        let len = real.as_ref().len();
        if flexible {
            put_unsigned_varint(&mut head, (len as u64) + 1);
        } else {
            head.put_i32(i32::try_from(len).map_err(|_| "record set too large")?);
        }
        let new_prefix = if flexible { varint_len((len as u64) + 1) } else { 4 };
        extra += new_prefix as i64 - old_prefix as i64 + len as i64 - MARKER_LEN as i64;
        chunks.push(Chunk::Encoded(std::mem::take(&mut head).freeze()));
        if len > 0 {
            chunks.push(Chunk::Records(real));
        }
        pos = found + MARKER_LEN;
    }
    let size = i64::from(i32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]])) + extra;
    let size = i32::try_from(size).map_err(|_| "response too large for one frame")?;
    let mut first = BytesMut::with_capacity(4 + chunks.first().map_or(frame.len() - pos, |c| c.bytes().len()));
    first.put_i32(size);
    match chunks.first_mut() {
        Some(Chunk::Encoded(head)) => {
            first.extend_from_slice(head);
            *head = first.freeze();
            chunks.push(Chunk::Encoded(frame.slice(pos..)));
        }
        _ => {
            // No record sets: the frame as it is after the new size.
            first.extend_from_slice(&frame[pos..]);
            chunks.push(Chunk::Encoded(first.freeze()));
        }
    }
    Ok(chunks)
}

fn put_unsigned_varint(buf: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

#[cfg(test)]
mod splice_tests {
    use super::*;
    use bytes::Buf;
    use bytes::Bytes;
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::messages::FetchResponse;
    use kafka_protocol::protocol::Decodable;

    fn response(records: Vec<Bytes>) -> FetchResponse {
        FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
            .with_topic(crate::kafka_protocol::messages::TopicName(
                kafka_protocol::protocol::StrBytes::from_static_str("t"),
            ))
            .with_partitions(
                records
                    .into_iter()
                    .enumerate()
                    .map(|(i, r)| PartitionData::default().with_partition_index(i as i32).with_records(Some(r)))
                    .collect(),
            )])
    }

    #[test]
    fn spliced_response_equals_a_plainly_encoded_one() {
        let real: Vec<Bytes> =
            vec![Bytes::from(vec![1u8; 300]), Bytes::new(), Bytes::from(vec![2u8; 5]), Bytes::from(vec![3u8; 70_000])];
        for version in [4i16, 11, 12, 16] {
            let mut plain = BytesMut::new();
            encode_response(&mut plain, ApiKey::Fetch, version, 5, &response(real.clone())).unwrap();
            let markers: Vec<_> = (0..real.len() as u32).map(|i| record_marker(42, i)).collect();
            let mut with_markers = BytesMut::new();
            let body = response(markers.iter().map(|m| Bytes::copy_from_slice(m)).collect());
            encode_response(&mut with_markers, ApiKey::Fetch, version, 5, &body).unwrap();
            let chunks =
                splice_records(with_markers, version >= 12, markers.into_iter().zip(real.clone()).collect()).unwrap();
            let joined: Vec<u8> = chunks.iter().flat_map(|c| c.bytes().iter().copied()).collect();
            let spliced: Vec<&Bytes> = chunks
                .iter()
                .filter_map(|c| match c {
                    Chunk::Records(r) => Some(r),
                    Chunk::Encoded(_) => None,
                })
                .collect();
            assert_eq!(spliced.len(), 3, "the empty record set is not a chunk");
            assert!(
                spliced.iter().zip([&real[0], &real[2], &real[3]]).all(|(a, b)| a.as_ptr() == b.as_ptr()),
                "not copied"
            );
            assert_eq!(joined, plain.to_vec(), "v{version}");
            let mut b = Bytes::from(joined);
            b.advance(4 + 4 + usize::from(version >= 12));
            let decoded = FetchResponse::decode(&mut b, version).unwrap();
            assert_eq!(decoded.responses[0].partitions[3].records.as_ref().unwrap().len(), 70_000);
        }
    }

    #[test]
    fn a_response_without_record_sets_is_one_chunk() {
        let mut plain = BytesMut::new();
        encode_response(&mut plain, ApiKey::Fetch, 12, 5, &response(vec![Bytes::new()])).unwrap();
        let chunks = splice_records::<Bytes>(plain.clone(), true, Vec::new()).unwrap();
        assert_eq!(chunks, vec![Chunk::Encoded(plain.freeze())]);
    }
}
