//! Shared fixtures for Strata's benchmarks: record batches and requests built
//! with the `kafka-protocol` crate, as clients would send them.

use bytes::{Bytes, BytesMut};
use strata_protocol::kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use strata_protocol::kafka_protocol::messages::{ApiKey, ProduceRequest, RequestHeader, TopicName};
use strata_protocol::kafka_protocol::protocol::{Encodable, StrBytes};
use strata_protocol::kafka_protocol::records::Compression;
use strata_protocol::records::encode_key_values;

/// One RecordBatch v2 of `count` records of `value_size` bytes each.
pub fn batch(count: usize, value_size: usize, compression: Compression) -> Bytes {
    let value = Bytes::from(vec![b'x'; value_size]);
    let entries = (0..count).map(|i| (Some(Bytes::from(format!("key-{i}"))), Some(value.clone())));
    encode_key_values(entries, 1_700_000_000_000, compression)
        .unwrap_or_else(|e| panic!("encoding a benchmark batch: {e}"))
}

/// One RecordBatch v2 of `count` records of `value_size` bytes of text-like data: words from a
/// small vocabulary in a seeded pseudo-random order, which compresses about as well as JSON
/// or log lines do (2-4x), unlike [`batch`]'s repeated byte.
pub fn text_batch(count: usize, value_size: usize, compression: Compression) -> Bytes {
    const WORDS: &[&str] = &[
        "order",
        "id",
        "user",
        "amount",
        "status",
        "shipped",
        "pending",
        "2026-11-30T01:05:41Z",
        "eu-west",
        "price",
        "sku",
        "quantity",
        "\"",
        ":",
        ",",
        "{",
        "}",
        "true",
        "false",
        "null",
        "Strata",
        "kafka",
    ];
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let entries = (0..count).map(|i| {
        let mut value = Vec::with_capacity(value_size + 32);
        while value.len() < value_size {
            let n = next();
            value.extend_from_slice(WORDS[(n % WORDS.len() as u64) as usize].as_bytes());
            value.extend_from_slice((n >> 40).to_string().as_bytes());
        }
        value.truncate(value_size);
        (Some(Bytes::from(format!("key-{i}"))), Some(Bytes::from(value)))
    });
    encode_key_values(entries, 1_700_000_000_000, compression)
        .unwrap_or_else(|e| panic!("encoding a benchmark batch: {e}"))
}

/// A whole Produce v9 request frame body (header + body) carrying `batch`
/// for `partitions` partitions of one topic.
pub fn produce_frame(batch: &Bytes, partitions: i32) -> Bytes {
    let version = 9;
    let header = RequestHeader::default()
        .with_request_api_key(ApiKey::Produce as i16)
        .with_request_api_version(version)
        .with_correlation_id(1)
        .with_client_id(Some(StrBytes::from_static_str("bench")));
    let body = ProduceRequest::default().with_acks(-1).with_timeout_ms(30_000).with_topic_data(vec![
        TopicProduceData::default().with_name(TopicName(StrBytes::from_static_str("bench"))).with_partition_data(
            (0..partitions)
                .map(|p| PartitionProduceData::default().with_index(p).with_records(Some(batch.clone())))
                .collect(),
        ),
    ]);
    let mut buf = BytesMut::new();
    header
        .encode(&mut buf, ApiKey::Produce.request_header_version(version))
        .unwrap_or_else(|e| panic!("encoding a benchmark header: {e}"));
    body.encode(&mut buf, version).unwrap_or_else(|e| panic!("encoding a benchmark request: {e}"));
    buf.freeze()
}
