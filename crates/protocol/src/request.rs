//! Turning one frame into a request header and a typed body.

use bytes::Bytes;
use kafka_protocol::messages::{RequestHeader, RequestKind};
use kafka_protocol::protocol::Decodable;

use crate::versions::{min_decodable, supported_range};
use crate::{ApiKey, ProtocolError};

/// A decoded request.
#[derive(Debug)]
pub struct Request {
    pub api_key: ApiKey,
    pub version: i16,
    pub header: RequestHeader,
    pub body: RequestKind,
}

impl Request {
    pub fn correlation_id(&self) -> i32 {
        self.header.correlation_id
    }

    pub fn client_id(&self) -> &str {
        self.header.client_id.as_deref().unwrap_or("")
    }
}

/// What a frame turned out to be.
#[derive(Debug)]
pub enum Decoded {
    /// A request Strata serves, at a version it serves.
    Request(Box<Request>),
    /// ApiVersions at a version above what Strata serves. KIP-511: answer in
    /// the v0 format with UNSUPPORTED_VERSION and ApiVersions' own range, so the
    /// client can retry at a version both sides know.
    UnsupportedApiVersions { correlation_id: i32, version: i16 },
}

/// The fixed prefix every request header version shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderPrefix {
    pub api_key: i16,
    pub version: i16,
    pub correlation_id: i32,
}

/// Reads api key, version and correlation id without consuming the frame.
pub fn peek_prefix(frame: &[u8]) -> Result<HeaderPrefix, ProtocolError> {
    if frame.len() < 8 {
        return Err(ProtocolError::ShortHeader { len: frame.len() });
    }
    Ok(HeaderPrefix {
        api_key: i16::from_be_bytes([frame[0], frame[1]]),
        version: i16::from_be_bytes([frame[2], frame[3]]),
        correlation_id: i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]),
    })
}

/// Decodes one request frame (the bytes after the size prefix). Record sets in
/// the body stay slices of `frame`: nothing is copied.
pub fn decode_request(mut frame: Bytes) -> Result<Decoded, ProtocolError> {
    let prefix = peek_prefix(&frame)?;
    let api_key =
        ApiKey::try_from(prefix.api_key).map_err(|_| ProtocolError::UnknownApiKey { api_key: prefix.api_key })?;
    let version = prefix.version;
    let Some(range) = supported_range(api_key) else {
        return Err(ProtocolError::UnsupportedVersion { api_key, version, min: 0, max: -1 });
    };
    if version < min_decodable(range) || version > range.max {
        if api_key == ApiKey::ApiVersions && version > range.max {
            return Ok(Decoded::UnsupportedApiVersions { correlation_id: prefix.correlation_id, version });
        }
        return Err(ProtocolError::UnsupportedVersion { api_key, version, min: range.min, max: range.max });
    }
    let malformed = |e: anyhow::Error| ProtocolError::Malformed { api_key, version, reason: format!("{e:#}") };
    let header_version = api_key.request_header_version(version);
    let header = RequestHeader::decode(&mut frame, header_version).map_err(malformed)?;
    let body = RequestKind::decode(api_key, &mut frame, version).map_err(malformed)?;
    // Bytes after the body are ignored, as Apache Kafka does: some clients
    // send them (librdkafka's Metadata v12 carries 3 extra bytes).
    Ok(Decoded::Request(Box::new(Request { api_key, version, header, body })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn malformed_reason(frame: &'static [u8]) -> String {
        match decode_request(Bytes::from_static(frame)) {
            Err(ProtocolError::Malformed { reason, .. }) => reason,
            other => panic!("expected Malformed, got {other:?}"),
        }
    }

    /// An array count larger than the bytes left is malformed before anything is allocated
    /// (the patched kafka-protocol in vendor/; 0.18.0 as released reserves `count` elements).
    /// Under a strict overcommit policy the unpatched decode aborts the process here.
    #[test]
    fn array_counts_beyond_the_frame_are_malformed() {
        // Metadata v0: header (key 3, version 0, correlation 1, client id ""), topics: 2^31-1.
        let reason = malformed_reason(b"\x00\x03\x00\x00\x00\x00\x00\x01\x00\x00\x7f\xff\xff\xff");
        assert!(reason.contains("2147483647"), "{reason}");
        // Metadata v12 (flexible): client id "", no header tags, compact topics ~2^32.
        let reason = malformed_reason(b"\x00\x03\x00\x0c\x00\x00\x00\x01\x00\x00\x00\xff\xff\xff\xff\x0f");
        assert!(reason.contains("4294967294"), "{reason}");
    }
}
