//! Request frames: `decode_request` and `FrameDecoder` on untrusted bytes.

use bytes::{Bytes, BytesMut};
use strata_protocol::frame::FrameDecoder;
use strata_protocol::kafka_protocol::messages::{RequestHeader, RequestKind};
use strata_protocol::kafka_protocol::protocol::{Encodable, StrBytes};
use strata_protocol::request::{decode_request, peek_prefix, Decoded};
use strata_protocol::versions::{min_decodable, supported_range, SUPPORTED};
use strata_protocol::{ApiKey, ProtocolError};

use crate::Input;

/// Cap handed to the frame decoder: small, so the "capped before allocating" property bites.
const MAX_FRAME: usize = 1 << 16;

/// `data` is one frame body (what follows the size prefix).
///
/// Asserts: no panic; a decoded request agrees with the header prefix and lies within the
/// served version range; the KIP-511 answer is given only for ApiVersions above its range; a
/// Produce request's record sets can be walked batch by batch (header and CRC, as the produce
/// path does). Then feeds the same bytes to [`frame_stream`].
pub fn request_frame(data: &[u8]) {
    let _ = check_request(Bytes::copy_from_slice(data));
    frame_stream(data);
}

/// `data` is a byte stream as it arrives on a connection: frames are cut with `FrameDecoder`
/// and each is decoded as a request.
///
/// Asserts: a frame has exactly the announced size, that many bytes (plus the prefix) leave
/// the buffer, half a frame consumes nothing and reserves no more than the cap allows, and an
/// error is the one `peek_size` predicts.
pub fn frame_stream(data: &[u8]) {
    let mut dec = FrameDecoder::new(MAX_FRAME);
    let mut buf = BytesMut::from(data);
    loop {
        let before = buf.len();
        let peeked = dec.peek_size(&buf);
        match dec.decode(&mut buf) {
            Ok(Some(frame)) => {
                let size = match peeked {
                    Ok(Some(s)) => s,
                    other => panic!("decode gave a frame but peek_size said {other:?}"),
                };
                assert!(size > 0 && size <= MAX_FRAME);
                assert_eq!(frame.len(), size);
                assert_eq!(buf.len(), before - 4 - size);
                let _ = check_request(frame);
            }
            Ok(None) => {
                assert_eq!(buf.len(), before, "half a frame must not be consumed");
                assert!(
                    buf.capacity() <= 2 * data.len().max(MAX_FRAME + 4),
                    "reserved {} bytes for a frame capped at {MAX_FRAME}",
                    buf.capacity()
                );
                break;
            }
            Err(e) => {
                assert_eq!(peeked, Err(e));
                break;
            }
        }
    }
}

/// Decodes one frame and checks the result against the frame's prefix; returns the decode error.
pub fn check_request(frame: Bytes) -> Option<ProtocolError> {
    let prefix = peek_prefix(&frame);
    match decode_request(frame) {
        Ok(Decoded::Request(r)) => {
            let p = prefix.expect("a decoded request has a header prefix");
            assert_eq!(r.api_key as i16, p.api_key);
            assert_eq!(r.version, p.version);
            assert_eq!(r.correlation_id(), p.correlation_id);
            assert_eq!(r.header.request_api_key, p.api_key);
            assert_eq!(r.header.request_api_version, p.version);
            let range = supported_range(r.api_key).expect("decoded an API Strata does not serve");
            assert!(min_decodable(range) <= r.version && r.version <= range.max);
            let _ = r.client_id();
            if let RequestKind::Produce(produce) = &r.body {
                for topic in &produce.topic_data {
                    for part in &topic.partition_data {
                        if let Some(records) = &part.records {
                            crate::batch::walk_headers(records);
                        }
                    }
                }
            }
            None
        }
        Ok(Decoded::UnsupportedApiVersions { correlation_id, version }) => {
            let p = prefix.expect("a decoded request has a header prefix");
            assert_eq!(p.api_key, ApiKey::ApiVersions as i16);
            assert_eq!(correlation_id, p.correlation_id);
            let range = supported_range(ApiKey::ApiVersions).expect("ApiVersions is served");
            assert!(version > range.max);
            None
        }
        Err(e) => {
            // Error messages are logged by the broker: rendering one must not panic either.
            let _ = e.to_string();
            Some(e)
        }
    }
}

/// Structure-aware input: the first 4 bytes pick an API key served per [`SUPPORTED`] and a
/// version in its decodable range, then a valid request header for that key and version is
/// written, and the rest of the input is the body. Every served (key, version) pair is
/// reachable, and the fuzzer spends no time discovering header encodings.
///
/// The first u16 is the API key itself when Strata serves it, else an index into `SUPPORTED`
/// (modulo its length); the second is the version itself when in range, else an offset into
/// the range. So seeds (which carry real keys and versions) stay meaningful when the table
/// grows or is reordered.
pub fn keyed_frame(data: &[u8]) {
    let mut input = Input::new(data);
    let (raw_key, raw_version) = (input.u16(), input.u16());
    let range = SUPPORTED
        .iter()
        .find(|r| r.key as i16 as u16 == raw_key)
        .copied()
        .unwrap_or(SUPPORTED[usize::from(raw_key) % SUPPORTED.len()]);
    let lo = min_decodable(range);
    let version = match i16::try_from(raw_version) {
        Ok(v) if (lo..=range.max).contains(&v) => v,
        _ => lo + (raw_version % u16::try_from(range.max - lo + 1).unwrap_or(1)) as i16,
    };
    let body = input.rest();

    let header = RequestHeader::default()
        .with_request_api_key(range.key as i16)
        .with_request_api_version(version)
        .with_correlation_id(0x0102_0304)
        .with_client_id(Some(StrBytes::from_static_str("fuzz")));
    let mut frame = BytesMut::with_capacity(32 + body.len());
    header.encode(&mut frame, range.key.request_header_version(version)).expect("a default request header encodes");
    frame.extend_from_slice(body);
    // A header built from a served (key, version) is never refused as unsupported.
    if let Some(e) = check_request(frame.freeze()) {
        assert!(matches!(e, ProtocolError::Malformed { .. }), "{e}");
    }
}
