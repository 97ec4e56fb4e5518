//! Micro-benchmarks of the produce and fetch hot paths:
//! request decode, response encode (with record splicing), batch validation
//! with offset assignment, log append, log read and index lookup.
//!
//! Run: `cargo bench -p strata-benches` (results in target/criterion).

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use strata_benches::{batch, produce_frame, text_batch};
use strata_broker::config::TopicSettings;
use strata_broker::replica::Partition;
use strata_log::{Log, LogConfig};
use strata_protocol::kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use strata_protocol::kafka_protocol::messages::{ApiKey, FetchResponse, TopicName};
use strata_protocol::kafka_protocol::protocol::StrBytes;
use strata_protocol::kafka_protocol::records::Compression;
use strata_protocol::request::decode_request;
use strata_protocol::response::{encode_response, record_marker, splice_records};

fn request_decode(c: &mut Criterion) {
    let b = batch(100, 1024, Compression::None);
    let frame = produce_frame(&b, 8);
    let mut g = c.benchmark_group("request_decode");
    g.throughput(Throughput::Bytes(frame.len() as u64));
    g.bench_function("produce_8x100x1KiB", |bench| bench.iter(|| decode_request(black_box(frame.clone()))));
    g.finish();
}

fn fetch_encode(c: &mut Criterion) {
    let records: Vec<Bytes> = (0..8).map(|_| batch(100, 1024, Compression::None)).collect();
    let total: usize = records.iter().map(Bytes::len).sum();
    let response = |recs: Vec<Bytes>| {
        FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
            .with_topic(TopicName(StrBytes::from_static_str("bench")))
            .with_partitions(
                recs.into_iter()
                    .enumerate()
                    .map(|(i, r)| PartitionData::default().with_partition_index(i as i32).with_records(Some(r)))
                    .collect(),
            )])
    };
    let mut g = c.benchmark_group("fetch_encode");
    g.throughput(Throughput::Bytes(total as u64));
    g.bench_function("copying_encoder_8x100KiB", |bench| {
        bench.iter(|| {
            let mut out = BytesMut::new();
            encode_response(&mut out, ApiKey::Fetch, 12, 1, &response(records.clone()))
                .unwrap_or_else(|e| panic!("{e}"));
            out
        })
    });
    g.bench_function("spliced_8x100KiB", |bench| {
        bench.iter(|| {
            let markers: Vec<_> = (0..records.len() as u32).map(|i| record_marker(7, i)).collect();
            let body = response(markers.iter().map(|m| Bytes::copy_from_slice(m)).collect());
            let mut out = BytesMut::new();
            encode_response(&mut out, ApiKey::Fetch, 12, 1, &body).unwrap_or_else(|e| panic!("{e}"));
            splice_records(out, true, markers.into_iter().zip(records.iter().cloned()).collect())
                .unwrap_or_else(|e| panic!("{e}"))
        })
    });
    g.finish();
}

const APPENDS: usize = 64;

/// Every codec a producer may send, by the name the benchmark ids use.
const CODECS: [(&str, Compression); 5] = [
    ("none", Compression::None),
    ("gzip", Compression::Gzip),
    ("snappy", Compression::Snappy),
    ("lz4", Compression::Lz4),
    ("zstd", Compression::Zstd),
];

fn validate_and_append(c: &mut Criterion) {
    let settings = TopicSettings::resolve(None, &Default::default());
    let mut g = c.benchmark_group("partition_append");
    for (name, compression) in CODECS {
        let b = text_batch(100, 1024, compression);
        // Each iteration appends the batch APPENDS times; throughput counts the bytes as sent.
        g.throughput(Throughput::Bytes((APPENDS * b.len()) as u64));
        g.bench_function(format!("in_memory_{APPENDS}x_100x1KiB_{name}"), |bench| {
            bench.iter_batched(
                || {
                    let log = Log::open_in_memory(settings.log.clone(), 0);
                    Partition::new("bench".into(), uuid::Uuid::nil(), 0, log, settings.clone())
                        .unwrap_or_else(|e| panic!("{e}"))
                },
                |p| {
                    for _ in 0..APPENDS {
                        p.append(&b, 1_700_000_000_000).unwrap_or_else(|e| panic!("{e}"));
                    }
                    p
                },
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

/// Produce-time validation alone (no append): the batch header checks plus, since issue #10,
/// Kafka's per-record checks. Throughput counts the bytes as sent.
fn produce_validation(c: &mut Criterion) {
    let settings = TopicSettings::resolve(None, &Default::default());
    let mut g = c.benchmark_group("produce_validation");
    for (name, compression) in CODECS {
        let b = text_batch(100, 1024, compression);
        g.throughput(Throughput::Bytes(b.len() as u64));
        g.bench_function(format!("100x1KiB_{name}"), |bench| {
            bench.iter(|| {
                strata_broker::replica::validate::prepare_batch(black_box(&b), &settings, 1_700_000_000_000)
                    .unwrap_or_else(|e| panic!("{e}"))
            })
        });
    }
    g.finish();
}

fn log_on_disk(c: &mut Criterion) {
    let b = batch(100, 1024, Compression::None);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = LogConfig { segment_bytes: 256 * 1024 * 1024, ..LogConfig::default() };
    let mut log = Log::open(dir.path(), config, 0).unwrap_or_else(|e| panic!("{e}"));
    let mut g = c.benchmark_group("log");
    g.throughput(Throughput::Bytes(b.len() as u64));
    g.bench_function("append_100x1KiB_page_cache", |bench| {
        bench.iter(|| {
            let mut copy = BytesMut::from(&b[..]);
            log.append(&mut copy, 0).unwrap_or_else(|e| panic!("{e}"))
        })
    });
    let end = log.log_end_offset();
    g.bench_function("read_1MiB_at_random_offset", |bench| {
        let mut i: i64 = 0;
        bench.iter(|| {
            i = (i + 7919) % end.max(1);
            log.read(black_box(i), 1 << 20, end).unwrap_or_else(|e| panic!("{e}"))
        })
    });
    g.bench_function("offset_for_timestamp", |bench| {
        bench.iter(|| log.offset_for_timestamp(black_box(1_700_000_000_000)).unwrap_or_else(|e| panic!("{e}")))
    });
    g.finish();
}

criterion_group!(benches, request_decode, fetch_encode, validate_and_append, produce_validation, log_on_disk);
criterion_main!(benches);
