//! `strata produce` and `strata consume`: a console producer and consumer (as
//! kafka-console-producer.sh and kafka-console-consumer.sh) that speak to partition leaders
//! directly: Produce and Fetch, record batches v2 through kafka-protocol's codec.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{BrokerId, FetchRequest, ProduceRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use serde_json::{json, Value};
use strata_protocol::batch::{BatchHeader, Compression, TimestampType};
use strata_protocol::records::filter::{encode_batch, parse_records, records_section_within, Header, NewRecord};

use crate::conn::Cluster;
use crate::error::CliError;
use crate::offsets::{leaders, list_offsets, Tp, EARLIEST, LATEST};
use crate::output::{Format, Progress, Report, Table};
use crate::time_arg::parse_time_ms;
use crate::Common;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputFormat {
    /// One record per line: the value, or KEY<SEP>VALUE with --key-separator.
    Text,
    /// One JSON object per line: {"key": ..., "value": ..., "headers": {...}, "partition": N}.
    Json,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

#[derive(clap::Args, Debug)]
pub struct ProduceArgs {
    topic: String,
    /// Write every record to this partition (default: by key hash as Kafka's default
    /// partitioner, records without a key spread batch by batch).
    #[arg(long)]
    partition: Option<i32>,
    /// The key of every record.
    #[arg(long)]
    key: Option<String>,
    /// A header of every record, NAME=VALUE. Repeatable.
    #[arg(long = "header", value_name = "NAME=VALUE")]
    headers: Vec<String>,
    /// Record values (without it, one record per line of standard input). Repeatable.
    #[arg(long = "value")]
    values: Vec<String>,
    /// Input lines are KEY<SEP>VALUE (kafka-console-producer's parse.key / key.separator).
    #[arg(long, value_name = "SEP")]
    key_separator: Option<String>,
    /// What standard input holds.
    #[arg(long, value_enum, default_value_t = InputFormat::Text)]
    input_format: InputFormat,
    /// all (the default, acks=-1) or 1.
    #[arg(long, default_value = "all", value_parser = ["all", "-1", "1"])]
    acks: String,
    #[arg(long, value_enum, default_value_t = Codec::None)]
    compression: Codec,
    /// Records per batch (and per partition per request).
    #[arg(long, default_value_t = 500)]
    batch_records: usize,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BytesFormat {
    /// UTF-8 text (invalid bytes replaced).
    Text,
    /// A JSON value when the bytes parse as JSON, else text.
    Json,
    Hex,
    Base64,
}

#[derive(clap::Args, Debug)]
pub struct ConsumeArgs {
    topic: String,
    /// Only these partitions. Repeatable.
    #[arg(long)]
    partition: Vec<i32>,
    /// Where to start: earliest, latest (the default, as Kafka's console consumer) or an
    /// offset (with one --partition).
    #[arg(long, default_value = "latest")]
    offset: String,
    /// Start at the log start (as --offset earliest).
    #[arg(long, conflicts_with_all = ["offset", "from_timestamp"])]
    from_beginning: bool,
    /// Start at the first record at or after this time (YYYY-MM-DDTHH:MM:SS[.sss][Z], or epoch ms).
    #[arg(long, value_name = "TIME", conflicts_with = "offset")]
    from_timestamp: Option<String>,
    /// Stop after this many records.
    #[arg(long, value_name = "N")]
    max_messages: Option<u64>,
    /// Stop when no record came for this long (milliseconds).
    #[arg(long, value_name = "MS")]
    timeout_ms: Option<u64>,
    /// Stop once every partition is read up to where its log ended when the command started.
    #[arg(long)]
    until_end: bool,
    /// How keys, values and header values are shown.
    #[arg(long, value_enum, default_value_t = BytesFormat::Text)]
    value_format: BytesFormat,
    /// Text output: show the key before the value.
    #[arg(long)]
    print_key: bool,
    /// Text output: show the headers.
    #[arg(long)]
    print_headers: bool,
    /// Text output: show partition and offset.
    #[arg(long)]
    print_offset: bool,
    /// Text output: show the record's timestamp.
    #[arg(long)]
    print_timestamp: bool,
    /// Text output: between the fields.
    #[arg(long, default_value = "\t")]
    separator: String,
    /// read_uncommitted (the default) or read_committed (aborted transactions left out).
    #[arg(long, default_value = "read_uncommitted", value_parser = ["read_uncommitted", "read_committed"])]
    isolation_level: String,
}

/// Kafka's murmur2 (`Utils.murmur2`), for the default partitioner's key hash.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h: u32 = SEED ^ (len as u32);
    let chunks = data.chunks_exact(4);
    let tail = chunks.remainder();
    for c in chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    match tail.len() {
        3 => {
            h ^= u32::from(tail[2]) << 16;
            h ^= u32::from(tail[1]) << 8;
            h ^= u32::from(tail[0]);
            h = h.wrapping_mul(M);
        }
        2 => {
            h ^= u32::from(tail[1]) << 8;
            h ^= u32::from(tail[0]);
            h = h.wrapping_mul(M);
        }
        1 => {
            h ^= u32::from(tail[0]);
            h = h.wrapping_mul(M);
        }
        _ => {}
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition of `key` among `count`, as Kafka's `BuiltInPartitioner.partitionForKey`.
fn partition_for_key(key: &[u8], count: i32) -> i32 {
    (murmur2(key) & 0x7fff_ffff) % count.max(1)
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Record headers in order: (key, value; `None` for a null value). Kafka's headers are a
/// list, so a key may repeat.
type Headers = Vec<(Bytes, Option<Bytes>)>;

/// One record to send.
#[derive(Clone)]
struct Outgoing {
    partition: Option<i32>,
    key: Option<Bytes>,
    value: Option<Bytes>,
    headers: Headers,
}

fn parse_header(h: &str) -> Result<(Bytes, Option<Bytes>), CliError> {
    let (k, v) = h.split_once('=').ok_or_else(|| CliError::Usage(format!("--header {h}: expected NAME=VALUE")))?;
    Ok((Bytes::from(k.to_string()), Some(Bytes::from(v.to_string()))))
}

fn json_bytes(v: &Value) -> Option<Bytes> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(Bytes::from(s.clone())),
        other => Some(Bytes::from(other.to_string())),
    }
}

impl ProduceArgs {
    fn record(&self, line: &str, headers: &Headers) -> Result<Outgoing, CliError> {
        let mut r = Outgoing {
            partition: self.partition,
            key: self.key.clone().map(Bytes::from),
            value: Some(Bytes::from(line.to_string())),
            headers: headers.clone(),
        };
        match self.input_format {
            InputFormat::Text => {
                if let Some(sep) = &self.key_separator {
                    let (k, v) = line
                        .split_once(sep.as_str())
                        .ok_or_else(|| CliError::Failed(format!("line '{line}' has no key separator '{sep}'")))?;
                    r.key = Some(Bytes::from(k.to_string()));
                    r.value = Some(Bytes::from(v.to_string()));
                }
            }
            InputFormat::Json => {
                let v: Value = serde_json::from_str(line)
                    .map_err(|e| CliError::Failed(format!("line '{line}' is not JSON: {e}")))?;
                let obj =
                    v.as_object().ok_or_else(|| CliError::Failed(format!("line '{line}' is not a JSON object")))?;
                if let Some(k) = obj.get("key") {
                    r.key = json_bytes(k);
                }
                r.value = obj.get("value").and_then(json_bytes);
                if let Some(p) = obj.get("partition").and_then(Value::as_i64) {
                    r.partition =
                        Some(i32::try_from(p).map_err(|_| CliError::Failed(format!("partition {p} is out of range")))?);
                }
                match obj.get("headers") {
                    None | Some(Value::Null) => {}
                    Some(Value::Object(h)) => {
                        for (k, v) in h {
                            r.headers.push((Bytes::from(k.clone()), json_bytes(v)));
                        }
                    }
                    // [["key", "value"], ...], as the consumer's JSON shows headers.
                    Some(Value::Array(pairs)) => {
                        for pair in pairs {
                            match pair.as_array().map(Vec::as_slice) {
                                Some([Value::String(k), v]) => r.headers.push((Bytes::from(k.clone()), json_bytes(v))),
                                _ => {
                                    return Err(CliError::Failed(format!(
                                        "line '{line}': headers are {{\"k\": \"v\"}} or [[\"k\", \"v\"], ...]"
                                    )))
                                }
                            }
                        }
                    }
                    Some(_) => {
                        return Err(CliError::Failed(format!(
                            "line '{line}': headers are {{\"k\": \"v\"}} or [[\"k\", \"v\"], ...]"
                        )))
                    }
                }
            }
        }
        Ok(r)
    }
}

/// What the producer tracks per partition for its report.
#[derive(Default)]
struct Written {
    records: u64,
    first: Option<i64>,
    last: Option<i64>,
}

struct Producer<'a> {
    cluster: &'a Cluster,
    topic: String,
    acks: i16,
    compression: Compression,
    leaders: HashMap<Tp, i32>,
    partitions: i32,
    next_keyless: i32,
    written: BTreeMap<i32, Written>,
}

impl Producer<'_> {
    async fn refresh(&mut self) -> Result<(), CliError> {
        let (leaders, counts) = leaders(self.cluster, std::slice::from_ref(&self.topic)).await?;
        self.leaders = leaders;
        self.partitions = counts.get(&self.topic).copied().unwrap_or(0);
        Ok(())
    }

    /// Sends one chunk of records, retrying leader changes within the timeout.
    async fn send(&mut self, chunk: Vec<Outgoing>) -> Result<(), CliError> {
        let ts = now_ms();
        let keyless = self.next_keyless;
        self.next_keyless = (self.next_keyless + 1) % self.partitions.max(1);
        let mut by_partition: BTreeMap<i32, Vec<Outgoing>> = BTreeMap::new();
        for r in chunk {
            let p = match (r.partition, &r.key) {
                (Some(p), _) => p,
                (None, Some(k)) => partition_for_key(k, self.partitions),
                (None, None) => keyless,
            };
            if p < 0 || p >= self.partitions {
                return Err(CliError::kafka(3, format!("producing to {}-{p}", self.topic), Some("no such partition")));
            }
            by_partition.entry(p).or_default().push(r);
        }
        let deadline = tokio::time::Instant::now() + self.cluster.timeout;
        while !by_partition.is_empty() {
            let mut by_leader: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
            for p in by_partition.keys() {
                let leader = self.leaders.get(&(self.topic.clone(), *p)).copied().unwrap_or(-1);
                by_leader.entry(leader).or_default().push(*p);
            }
            let mut retry = false;
            for (leader, parts) in by_leader {
                if leader < 0 {
                    retry = true;
                    continue;
                }
                let mut data = Vec::new();
                for p in &parts {
                    let batch = encode(&by_partition[p], ts, self.compression)?;
                    data.push(PartitionProduceData::default().with_index(*p).with_records(Some(batch)));
                }
                let timeout_ms = i32::try_from(self.cluster.timeout.as_millis()).unwrap_or(i32::MAX);
                let req =
                    ProduceRequest::default().with_acks(self.acks).with_timeout_ms(timeout_ms).with_topic_data(vec![
                        TopicProduceData::default()
                            .with_name(TopicName(StrBytes::from_string(self.topic.clone())))
                            .with_partition_data(data),
                    ]);
                let answer = self.cluster.send_to_broker(leader, &req).await?;
                for t in answer.responses {
                    for p in t.partition_responses {
                        match p.error_code {
                            0 => {
                                if let Some(sent) = by_partition.remove(&p.index) {
                                    let w = self.written.entry(p.index).or_default();
                                    w.records += sent.len() as u64;
                                    w.first.get_or_insert(p.base_offset);
                                    w.last = Some(p.base_offset + sent.len() as i64 - 1);
                                }
                            }
                            // Leadership moved, the topic is new, or too few replicas are in
                            // sync: nothing was appended, so sending again cannot duplicate.
                            // (REQUEST_TIMED_OUT and NOT_ENOUGH_REPLICAS_AFTER_APPEND come after
                            // the append: without idempotence a retry would write twice.)
                            3 | 5 | 6 | 19 | 74 | 75 => retry = true,
                            code => {
                                return Err(CliError::kafka(
                                    code,
                                    format!("producing to {}-{}", self.topic, p.index),
                                    p.error_message.as_deref(),
                                ))
                            }
                        }
                    }
                }
            }
            if !by_partition.is_empty() {
                if !retry {
                    return Err(CliError::Failed(format!(
                        "the leaders' answers left out partitions {:?} of {}",
                        by_partition.keys().collect::<Vec<_>>(),
                        self.topic
                    )));
                }
                if tokio::time::Instant::now() >= deadline {
                    return Err(CliError::Failed(format!(
                        "partitions {:?} of {} took no records within {:?}",
                        by_partition.keys().collect::<Vec<_>>(),
                        self.topic,
                        self.cluster.timeout
                    )));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                self.refresh().await?;
            }
        }
        Ok(())
    }
}

pub async fn produce(common: &Common, args: ProduceArgs) -> Result<(), CliError> {
    if args.batch_records == 0 {
        return Err(CliError::Usage("--batch-records must be at least 1".into()));
    }
    let cluster = Cluster::connect(&common.connect).await?;
    let headers: Headers = args.headers.iter().map(|h| parse_header(h)).collect::<Result<_, _>>()?;
    let compression = match args.compression {
        Codec::None => Compression::None,
        Codec::Gzip => Compression::Gzip,
        Codec::Snappy => Compression::Snappy,
        Codec::Lz4 => Compression::Lz4,
        Codec::Zstd => Compression::Zstd,
    };
    let mut producer = Producer {
        cluster: &cluster,
        topic: args.topic.clone(),
        acks: if args.acks == "1" { 1 } else { -1 },
        compression,
        leaders: HashMap::new(),
        partitions: 0,
        next_keyless: 0,
        written: BTreeMap::new(),
    };
    producer.refresh().await.map_err(|e| match e {
        CliError::Kafka { code: 3, context, .. } => CliError::kafka(
            3,
            context,
            Some("no such topic (the CLI does not create topics on use: strata topic create)"),
        ),
        other => other,
    })?;
    producer.next_keyless = i32::try_from(now_ms() % i64::from(producer.partitions.max(1))).unwrap_or(0);
    let mut progress = Progress::new("produced");
    let mut total = 0u64;
    if !args.values.is_empty() {
        let chunk = args.values.iter().map(|v| args.record(v, &headers)).collect::<Result<Vec<_>, _>>()?;
        total += chunk.len() as u64;
        for part in chunk.chunks(args.batch_records.max(1)).map(<[Outgoing]>::to_vec) {
            producer.send(part).await?;
        }
    } else {
        let stdin = std::io::stdin();
        let mut lines = stdin.lock().lines();
        loop {
            let mut chunk = Vec::new();
            for line in lines.by_ref() {
                let line = line.map_err(|e| CliError::Failed(format!("reading standard input: {e}")))?;
                if args.input_format == InputFormat::Json && line.trim().is_empty() {
                    continue;
                }
                chunk.push(args.record(&line, &headers)?);
                if chunk.len() >= args.batch_records {
                    break;
                }
            }
            if chunk.is_empty() {
                break;
            }
            total += chunk.len() as u64;
            producer.send(chunk).await?;
            progress.update(total, None);
        }
    }
    progress.finish();
    let mut table = Table::new(&["PARTITION", "RECORDS", "FIRST-OFFSET", "LAST-OFFSET"]);
    let mut parts = serde_json::Map::new();
    for (p, w) in &producer.written {
        table.row(vec![
            p.to_string(),
            w.records.to_string(),
            crate::output::or_dash(w.first),
            crate::output::or_dash(w.last),
        ]);
        parts.insert(p.to_string(), json!({ "records": w.records, "first_offset": w.first, "last_offset": w.last }));
    }
    Report::new(json!({ "topic": args.topic, "records": total, "partitions": parts }))
        .line(format!("Produced {total} record{} to {}", if total == 1 { "" } else { "s" }, args.topic))
        .table(table)
        .print(common.format);
    Ok(())
}

/// One batch of `records`, all stamped `timestamp` (CreateTime).
fn encode(records: &[Outgoing], timestamp: i64, codec: Compression) -> Result<Bytes, CliError> {
    let headers: Vec<Vec<Header<'_>>> =
        records.iter().map(|r| r.headers.iter().map(|(k, v)| (&k[..], v.as_deref())).collect()).collect();
    let new: Vec<NewRecord<'_>> = records
        .iter()
        .zip(&headers)
        .map(|(r, h)| NewRecord { timestamp, key: r.key.as_deref(), value: r.value.as_deref(), headers: h })
        .collect();
    encode_batch(&new, codec).map(Bytes::from).map_err(|e| CliError::Failed(format!("encoding a batch: {e}")))
}

/// Bytes as `--value-format` shows them in JSON.
fn show_json(bytes: &Option<Bytes>, format: BytesFormat) -> Value {
    let Some(b) = bytes else { return Value::Null };
    match format {
        BytesFormat::Text => Value::String(String::from_utf8_lossy(b).into_owned()),
        BytesFormat::Json => {
            serde_json::from_slice(b).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(b).into_owned()))
        }
        BytesFormat::Hex => Value::String(b.iter().map(|x| format!("{x:02x}")).collect()),
        BytesFormat::Base64 => Value::String(base64::engine::general_purpose::STANDARD.encode(b)),
    }
}

/// Bytes as `--value-format` shows them in text output.
fn show_text(bytes: &Option<Bytes>, format: BytesFormat) -> String {
    match (bytes, show_json(bytes, format)) {
        (None, _) => "null".to_string(),
        (_, Value::String(s)) => s,
        (_, other) => other.to_string(),
    }
}

/// The complete batches of a fetched partition's records (a fetch may end in part of one).
fn complete_batches(mut records: Bytes) -> Vec<Bytes> {
    let mut out = Vec::new();
    while records.len() >= 12 {
        let len = i32::from_be_bytes([records[8], records[9], records[10], records[11]]);
        let Some(total) = usize::try_from(len).ok().and_then(|l| l.checked_add(12)) else { break };
        if records.len() < total || len < 49 {
            break;
        }
        out.push(records.split_to(total));
    }
    out
}

/// One partition being read.
struct Reading {
    offset: i64,
    end: Option<i64>,
}

pub async fn consume(common: &Common, args: ConsumeArgs) -> Result<(), CliError> {
    let cluster = Cluster::connect(&common.connect).await?;
    let isolation: i8 = if args.isolation_level == "read_committed" { 1 } else { 0 };
    let topic = args.topic.clone();
    let (mut leader_of, counts) = leaders(&cluster, std::slice::from_ref(&topic)).await?;
    let count = counts.get(&topic).copied().unwrap_or(0);
    let partitions: Vec<i32> = if args.partition.is_empty() { (0..count).collect() } else { args.partition.clone() };
    if let Some(p) = partitions.iter().find(|p| **p < 0 || **p >= count) {
        return Err(CliError::kafka(3, format!("consuming {topic}-{p}"), Some("no such partition")));
    }
    let start: i64 = if args.from_beginning {
        EARLIEST
    } else if let Some(t) = &args.from_timestamp {
        parse_time_ms(t)?
    } else {
        match args.offset.as_str() {
            "earliest" | "beginning" => EARLIEST,
            "latest" | "end" => LATEST,
            n => {
                let n: i64 =
                    n.parse().map_err(|_| CliError::Usage(format!("--offset {n}: earliest, latest or a number")))?;
                if partitions.len() != 1 {
                    return Err(CliError::Usage("--offset N needs one --partition".into()));
                }
                if n < 0 {
                    return Err(CliError::Usage("--offset N must not be negative".into()));
                }
                -(n + 3) // marker for an explicit offset, resolved below
            }
        }
    };
    let wanted: BTreeMap<Tp, i64> = partitions.iter().map(|p| ((topic.clone(), *p), start.max(EARLIEST))).collect();
    let mut reading: BTreeMap<i32, Reading> = BTreeMap::new();
    let starts = if start < EARLIEST { BTreeMap::new() } else { list_offsets(&cluster, &wanted, isolation).await? };
    let ends =
        list_offsets(&cluster, &partitions.iter().map(|p| ((topic.clone(), *p), LATEST)).collect(), isolation).await?;
    for p in &partitions {
        let end = ends.get(&(topic.clone(), *p)).copied().flatten();
        let offset = if start < EARLIEST {
            -(start + 3)
        } else {
            starts.get(&(topic.clone(), *p)).copied().flatten().or(end).unwrap_or(0)
        };
        reading.insert(*p, Reading { offset, end: if args.until_end { end } else { None } });
    }
    let mut shown = 0u64;
    let mut last_record = tokio::time::Instant::now();
    let idle = args.timeout_ms.map(Duration::from_millis);
    let stdout = std::io::stdout();
    let mut progress = Progress::new("consumed");
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    let mut round = 0usize;
    'outer: loop {
        if args.max_messages.is_some_and(|m| shown >= m) {
            break;
        }
        if args.until_end && reading.values().all(|r| r.end.is_some_and(|e| r.offset >= e)) {
            break;
        }
        if idle.is_some_and(|i| last_record.elapsed() >= i) {
            break;
        }
        let mut by_leader: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
        for (p, r) in &reading {
            if r.end.is_some_and(|e| r.offset >= e) {
                continue;
            }
            by_leader.entry(leader_of.get(&(topic.clone(), *p)).copied().unwrap_or(-1)).or_default().push(*p);
        }
        let mut refresh = by_leader.contains_key(&-1);
        round = round.wrapping_add(1);
        for (leader, mut parts) in by_leader.into_iter().filter(|(l, _)| *l >= 0) {
            // A different partition first each round: a broker may exceed partition_max_bytes
            // only for the first partition with data (KIP-74), so a large batch elsewhere
            // waits at most a few rounds (Kafka's fetch sessions move served partitions last).
            let len = parts.len();
            parts.rotate_left(round % len.max(1));
            let max_wait = idle.map_or(500, |i| i.as_millis().min(500) as i32);
            let req = FetchRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_max_wait_ms(max_wait)
                .with_min_bytes(1)
                .with_max_bytes(32 << 20)
                .with_isolation_level(isolation)
                .with_session_id(0)
                .with_session_epoch(-1)
                .with_topics(vec![FetchTopic::default()
                    .with_topic(TopicName(StrBytes::from_string(topic.clone())))
                    .with_partitions(
                        parts
                            .iter()
                            .map(|p| {
                                FetchPartition::default()
                                    .with_partition(*p)
                                    .with_current_leader_epoch(-1)
                                    .with_fetch_offset(reading[p].offset)
                                    .with_log_start_offset(-1)
                                    .with_partition_max_bytes(1 << 20)
                            })
                            .collect(),
                    )]);
            let fetched = tokio::select! {
                answer = cluster.send_to_broker(leader, &req) => answer?,
                _ = &mut interrupted => break 'outer,
            };
            if fetched.error_code != 0 {
                return Err(CliError::kafka(fetched.error_code, format!("fetching from broker {leader}"), None));
            }
            for t in fetched.responses {
                for pd in t.partitions {
                    let p = pd.partition_index;
                    match pd.error_code {
                        0 => {}
                        1 => {
                            // Out of range: below the log start (retention passed us) reads on
                            // from the log start; past the end goes to the end, as Kafka's
                            // console consumer (auto.offset.reset=latest).
                            let tp = (topic.clone(), p);
                            let lo =
                                list_offsets(&cluster, &BTreeMap::from([(tp.clone(), EARLIEST)]), isolation).await?;
                            let hi = list_offsets(&cluster, &BTreeMap::from([(tp.clone(), LATEST)]), isolation).await?;
                            if let Some(r) = reading.get_mut(&p) {
                                let start = lo.get(&tp).copied().flatten().unwrap_or(0);
                                let end = hi.get(&tp).copied().flatten().unwrap_or(start);
                                r.offset = if r.offset < start { start } else { end };
                            }
                            continue;
                        }
                        3 | 5 | 6 | 74 | 75 => {
                            refresh = true;
                            continue;
                        }
                        code => return Err(CliError::kafka(code, format!("fetching {topic}-{p}"), None)),
                    }
                    let Some(r) = reading.get_mut(&p) else { continue };
                    let mut aborted: Vec<(i64, i64)> = pd
                        .aborted_transactions
                        .unwrap_or_default()
                        .iter()
                        .map(|a| (a.first_offset, a.producer_id.0))
                        .collect();
                    aborted.sort_unstable();
                    let mut aborted = aborted.into_iter().peekable();
                    let mut aborting: HashSet<i64> = HashSet::new();
                    let mut out = stdout.lock();
                    for batch in complete_batches(pd.records.unwrap_or_default()) {
                        let base = i64::from_be_bytes(batch[0..8].try_into().unwrap_or([0; 8]));
                        let last_delta = i32::from_be_bytes(batch[23..27].try_into().unwrap_or([0; 4]));
                        let attributes = i16::from_be_bytes(batch[21..23].try_into().unwrap_or([0; 2]));
                        let producer_id = i64::from_be_bytes(batch[43..51].try_into().unwrap_or([0; 8]));
                        let next = base + i64::from(last_delta) + 1;
                        let transactional = attributes & 0x10 != 0;
                        let control = attributes & 0x20 != 0;
                        while let Some((first, pid)) = aborted.peek().copied() {
                            if first > base {
                                break;
                            }
                            aborting.insert(pid);
                            aborted.next();
                        }
                        if control {
                            aborting.remove(&producer_id);
                            r.offset = r.offset.max(next);
                            continue;
                        }
                        if transactional && isolation == 1 && aborting.contains(&producer_id) {
                            r.offset = r.offset.max(next);
                            continue;
                        }
                        let records = decode(&batch, CONSUME_BATCH_LIMIT).map_err(|e| {
                            CliError::Failed(format!("decoding a batch of {topic}-{p} at offset {base}: {e}"))
                        })?;
                        for rec in records {
                            if rec.offset < r.offset {
                                continue;
                            }
                            if args.max_messages.is_some_and(|m| shown >= m) {
                                break;
                            }
                            match print_record(&mut out, common.format, &args, &topic, p, &rec) {
                                Ok(()) => {}
                                // The reader went away (`| head`): done.
                                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => break 'outer,
                                Err(e) => return Err(CliError::Failed(format!("writing to standard output: {e}"))),
                            }
                            shown += 1;
                            last_record = tokio::time::Instant::now();
                        }
                        r.offset = r.offset.max(next);
                    }
                    let _ = out.flush();
                }
            }
            progress.update(shown, args.max_messages);
        }
        if refresh {
            tokio::time::sleep(Duration::from_millis(200)).await;
            leader_of = leaders(&cluster, std::slice::from_ref(&topic)).await?.0;
        }
    }
    progress.finish();
    Ok(())
}

/// The largest decompressed batch the consumer reads (Kafka's default message.max.bytes is
/// 1 MiB compressed; 256 MiB leaves room for any sane compression ratio).
const CONSUME_BATCH_LIMIT: u64 = 256 << 20;
/// The largest decompressed batch [`browse`] reads (it runs inside the broker for the console).
const BROWSE_BATCH_LIMIT: u64 = 16 << 20;

/// Where [`browse`] starts reading a partition.
#[derive(Debug, Clone, Copy)]
pub enum BrowseFrom {
    /// This offset (the log start if it is below it).
    Offset(i64),
    /// The first record at or after this time (milliseconds since the epoch).
    Timestamp(i64),
    /// The log start.
    Earliest,
    /// The last N records before the log end.
    Last(i64),
}

/// Up to `limit` records of one partition from `from`, as JSON objects (the consumer's
/// `--format json` lines: offset, timestamp, key, value, headers, shown as `format` says),
/// read from the leader up to the log end as it was when the call started. For the web
/// console's message browser.
pub async fn browse(
    cluster: &Cluster,
    topic: &str,
    partition: i32,
    from: BrowseFrom,
    limit: usize,
    format: BytesFormat,
) -> Result<Vec<Value>, CliError> {
    let tp = (topic.to_string(), partition);
    let at = |ts: i64| BTreeMap::from([(tp.clone(), ts)]);
    let end = list_offsets(cluster, &at(LATEST), 0).await?.get(&tp).copied().flatten().unwrap_or(0);
    let start = list_offsets(cluster, &at(EARLIEST), 0).await?.get(&tp).copied().flatten().unwrap_or(0);
    let mut offset = match from {
        BrowseFrom::Offset(o) => o.max(start),
        BrowseFrom::Earliest => start,
        BrowseFrom::Last(n) => (end - n.max(0)).max(start),
        BrowseFrom::Timestamp(ms) => {
            list_offsets(cluster, &at(ms), 0).await?.get(&tp).copied().flatten().unwrap_or(end)
        }
    };
    let mut out = Vec::new();
    let mut rounds = 0;
    while offset < end && out.len() < limit && rounds < 20 {
        rounds += 1;
        let (leaders, _) = leaders(cluster, std::slice::from_ref(&tp.0)).await?;
        let leader = leaders.get(&tp).copied().unwrap_or(-1);
        if leader < 0 {
            return Err(CliError::kafka(
                5,
                format!("reading {topic}-{partition}"),
                Some("the partition has no leader"),
            ));
        }
        let req = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(0)
            .with_min_bytes(0)
            .with_max_bytes(4 << 20)
            .with_session_id(0)
            .with_session_epoch(-1)
            .with_topics(vec![FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_string(tp.0.clone())))
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(partition)
                    .with_current_leader_epoch(-1)
                    .with_fetch_offset(offset)
                    .with_log_start_offset(-1)
                    .with_partition_max_bytes(1 << 20)])]);
        let answer = cluster.send_to_broker(leader, &req).await?;
        let Some(pd) = answer.responses.into_iter().flat_map(|t| t.partitions).find(|p| p.partition_index == partition)
        else {
            break;
        };
        if pd.error_code != 0 {
            return Err(CliError::kafka(
                pd.error_code,
                format!("reading {topic}-{partition} at offset {offset}"),
                None,
            ));
        }
        let before = offset;
        for batch in complete_batches(pd.records.unwrap_or_default()) {
            let base = i64::from_be_bytes(batch[0..8].try_into().unwrap_or([0; 8]));
            let last_delta = i32::from_be_bytes(batch[23..27].try_into().unwrap_or([0; 4]));
            let attributes = i16::from_be_bytes(batch[21..23].try_into().unwrap_or([0; 2]));
            let next = base + i64::from(last_delta) + 1;
            if attributes & 0x20 == 0 {
                let records = decode(&batch, BROWSE_BATCH_LIMIT).map_err(|e| {
                    CliError::Failed(format!("decoding a batch of {topic}-{partition} at offset {base}: {e}"))
                })?;
                for rec in records.iter().filter(|r| r.offset >= offset) {
                    if out.len() >= limit {
                        break;
                    }
                    out.push(record_json(topic, partition, rec, format));
                }
            }
            offset = offset.max(next);
        }
        if offset == before {
            break;
        }
    }
    Ok(out)
}

/// A record read back.
struct Rec {
    offset: i64,
    timestamp: i64,
    log_append_time: bool,
    key: Option<Bytes>,
    value: Option<Bytes>,
    headers: Headers,
}

/// The records of one whole data batch (v2; compressed or not), headers kept in order with
/// repeated keys (Strata's own record parser: a map would keep one value per key). A batch
/// whose records decompress to more than `limit` bytes is an error, not a memory spike.
fn decode(batch: &[u8], limit: u64) -> Result<Vec<Rec>, String> {
    let header = BatchHeader::parse(batch).map_err(|e| e.to_string())?;
    let section = records_section_within(batch, limit)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("its records decompress to more than {limit} bytes"))?;
    let raw = parse_records(&section, header.records_count).map_err(|e| e.to_string())?;
    let log_append_time = header.timestamp_type() == TimestampType::LogAppendTime;
    let copy = |b: Option<&[u8]>| b.map(Bytes::copy_from_slice);
    raw.iter()
        .map(|r| {
            let headers = r.headers().map_err(|e| e.to_string())?;
            Ok(Rec {
                offset: r.offset(header.base_offset),
                timestamp: if log_append_time {
                    header.max_timestamp
                } else {
                    header.base_timestamp.saturating_add(r.timestamp_delta)
                },
                log_append_time,
                key: copy(r.key),
                value: copy(r.value),
                headers: headers.into_iter().map(|(k, v)| (Bytes::copy_from_slice(k), copy(v))).collect(),
            })
        })
        .collect()
}

/// A record as the consumer's JSON output shows it; `headers` is a list of [key, value]
/// pairs, in order (a key may repeat).
fn record_json(topic: &str, partition: i32, rec: &Rec, vf: BytesFormat) -> Value {
    let headers: Vec<Value> =
        rec.headers.iter().map(|(k, v)| json!([String::from_utf8_lossy(k), show_json(v, vf)])).collect();
    json!({
        "topic": topic, "partition": partition, "offset": rec.offset, "timestamp": rec.timestamp,
        "timestamp_type": if rec.log_append_time { "LogAppendTime" } else { "CreateTime" },
        "key": show_json(&rec.key, vf), "value": show_json(&rec.value, vf), "headers": headers,
    })
}

fn print_record(
    out: &mut impl Write,
    format: Format,
    args: &ConsumeArgs,
    topic: &str,
    partition: i32,
    rec: &Rec,
) -> std::io::Result<()> {
    let vf = args.value_format;
    match format {
        Format::Json => writeln!(out, "{}", record_json(topic, partition, rec, vf)),
        Format::Table => {
            let mut fields = Vec::new();
            if args.print_timestamp {
                fields.push(format!("{}", rec.timestamp));
            }
            if args.print_offset {
                fields.push(format!("{partition}:{}", rec.offset));
            }
            if args.print_key {
                fields.push(show_text(&rec.key, vf));
            }
            if args.print_headers {
                let h: Vec<String> = rec
                    .headers
                    .iter()
                    .map(|(k, v)| format!("{}:{}", String::from_utf8_lossy(k), show_text(v, vf)))
                    .collect();
                fields.push(if h.is_empty() { "NO_HEADERS".into() } else { h.join(",") });
            }
            fields.push(show_text(&rec.value, vf));
            writeln!(out, "{}", fields.join(&args.separator))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    #[test]
    fn murmur2_matches_kafka() {
        // Values from Kafka's UtilsTest.testMurmur2.
        assert_eq!(murmur2(b"21"), -973932308);
        assert_eq!(murmur2(b"foobar"), -790332482);
        assert_eq!(murmur2(b"a-little-bit-long-string"), -985981536);
        assert_eq!(murmur2(b"a-little-bit-longer-string"), -1486304829);
        assert_eq!(murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8"), -58897971);
        assert_eq!(murmur2(b"abc"), 479470107);
    }

    #[test]
    fn a_fetch_ending_in_part_of_a_batch_yields_the_whole_ones() {
        let out = |v: &'static [u8]| Outgoing {
            partition: None,
            key: None,
            value: Some(Bytes::from_static(v)),
            headers: vec![(Bytes::from_static(b"h"), Some(Bytes::from_static(b"1"))), (Bytes::from_static(b"h"), None)],
        };
        let first = encode(&[out(b"a"), out(b"b")], 7, Compression::None).unwrap();
        let second = encode(&[out(b"c")], 8, Compression::Zstd).unwrap();
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&first);
        let one = buf.len();
        buf.extend_from_slice(&second);
        let all = buf.freeze();
        let batches = complete_batches(all.clone());
        let decoded = decode(&batches[0], CONSUME_BATCH_LIMIT).unwrap();
        assert_eq!(decoded.iter().map(|r| (r.offset, r.timestamp)).collect::<Vec<_>>(), [(0, 7), (1, 7)]);
        assert_eq!(decoded[1].headers, out(b"b").headers, "a repeated header key keeps both values");
        assert_eq!(decode(&batches[1], CONSUME_BATCH_LIMIT).unwrap()[0].value.as_deref(), Some(&b"c"[..]));
        assert_eq!(complete_batches(all.clone()).len(), 2);
        assert_eq!(complete_batches(all.slice(..all.len() - 1)).len(), 1);
        assert_eq!(complete_batches(all.slice(..one)).len(), 1);
        assert!(complete_batches(all.slice(..11)).is_empty());
    }
}
