//! strata-loadgen: produce, then consume, a fixed number of records through librdkafka and
//! report throughput, produce latency percentiles and, given the broker's pid, what the broker
//! spent (CPU seconds per GB, peak RSS) — see docs/benchmarks.md for how the figures there were
//! taken.
//!
//! Latency is measured per record, from the moment it is handed to librdkafka to its delivery
//! report (so it includes linger and queueing in the client, as a user sees it). Throughput is
//! records (and record payload bytes) divided by the time from the first send until the last
//! delivery report. With `--mock` the same run goes against librdkafka's in-process mock cluster,
//! the client-side ceiling a broker is compared with.

use std::fs;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};

#[derive(Parser, Debug, Clone)]
#[command(about = "Produce then consume records through librdkafka; report throughput, latency and broker cost")]
struct Args {
    /// Broker to connect to (ignored with --mock).
    #[arg(long, default_value = "127.0.0.1:9092")]
    bootstrap_servers: String,
    /// Topic; created with --partitions if it does not exist.
    #[arg(long, default_value = "loadgen")]
    topic: String,
    #[arg(long, default_value_t = 8)]
    partitions: i32,
    /// Record value size in bytes (records have no key).
    #[arg(long, default_value_t = 1024)]
    record_size: usize,
    /// Records to produce, in total over all producers.
    #[arg(long, default_value_t = 1_000_000)]
    records: u64,
    /// Producer clients, each on its own thread.
    #[arg(long, default_value_t = 1)]
    producers: u32,
    /// Consumer clients reading everything back after the produce phase (0: no consume phase).
    #[arg(long, default_value_t = 1)]
    consumers: u32,
    /// acks: 0, 1 or all.
    #[arg(long, default_value = "1")]
    acks: String,
    #[arg(long, default_value_t = 5)]
    linger_ms: u64,
    /// librdkafka batch.size (bytes per partition batch).
    #[arg(long, default_value_t = 1_000_000)]
    batch_size: u64,
    /// none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value = "none")]
    compression: String,
    /// Total produce rate in records per second (0: as fast as possible).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// The broker's process id: its CPU time and peak RSS are read from /proc.
    #[arg(long)]
    broker_pid: Option<u32>,
    /// Run against librdkafka's in-process mock cluster (one broker) instead of --bootstrap-servers.
    #[arg(long)]
    mock: bool,
    /// Extra librdkafka properties for every client, as key=value (repeatable).
    #[arg(short = 'X', value_name = "KEY=VALUE")]
    extra: Vec<String>,
    /// Transactional produce: every producer commits a transaction every this many records
    /// (its own transactional.id; 0: no transactions).
    #[arg(long, default_value_t = 0)]
    transaction_records: u64,
    /// Also print the results as one JSON object.
    #[arg(long)]
    json: bool,
    /// Instead of a Kafka workload: copy this many MB through a loopback TCP connection with
    /// plain 1 MiB reads and writes, and print the rate (the machine's ceiling for any broker).
    #[arg(long, value_name = "MB")]
    tcp_ceiling: Option<u64>,
}

type Fail = Box<dyn std::error::Error + Send + Sync>;

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        eprintln!("loadgen: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), Fail> {
    if let Some(mb) = args.tcp_ceiling {
        return tcp_ceiling(mb);
    }
    if args.partitions < 1 || args.record_size == 0 || args.producers == 0 || args.records == 0 {
        return Err("--partitions, --record-size, --producers and --records must be positive".into());
    }
    // The mock cluster lives as long as this function: every client below connects to it.
    let mock = if args.mock { Some(MockCluster::new(1)?) } else { None };
    let bootstrap = match &mock {
        Some(m) => m.bootstrap_servers(),
        None => args.bootstrap_servers.clone(),
    };
    match &mock {
        // The mock broker has no CreateTopics; its own API makes the topic.
        Some(m) => m.create_topic(&args.topic, args.partitions, 1)?,
        None => create_topic(args, &bootstrap)?,
    }
    warm_up(args, &bootstrap)?;

    let broker = args.broker_pid.map(ProcStat::new);
    let before = broker.as_ref().map(ProcStat::cpu).transpose()?;
    let client_before = ProcStat::own().cpu_seconds()?;
    let produced = produce_phase(args, &bootstrap)?;
    let client_produce_cpu = ProcStat::own().cpu_seconds()? - client_before;
    let after_produce = broker.as_ref().map(ProcStat::cpu).transpose()?;

    let consumed = if args.consumers > 0 { Some(consume_phase(args, &bootstrap)?) } else { None };
    let after_consume = broker.as_ref().map(ProcStat::cpu).transpose()?;
    let peak_rss = broker.as_ref().map(ProcStat::peak_rss_bytes).transpose()?;
    let anon_rss = broker.as_ref().map(ProcStat::anon_rss_bytes).transpose()?;

    let report = Report {
        args: args.clone(),
        produced,
        consumed,
        client_produce_cpu,
        broker_produce_cpu: before.zip(after_produce).map(|(a, b)| b - a),
        broker_consume_cpu: after_produce.zip(after_consume).map(|(a, b)| b - a),
        broker_peak_rss: peak_rss,
        broker_anon_rss: anon_rss,
    };
    report.print();
    Ok(())
}

/// A client configuration: `bootstrap`, then `defaults`, then every `-X key=value` (which win).
fn client_config(args: &Args, bootstrap: &str, defaults: &[(&str, String)]) -> Result<ClientConfig, Fail> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap);
    for (k, v) in defaults {
        c.set(*k, v);
    }
    for kv in &args.extra {
        let (k, v) = kv.split_once('=').ok_or_else(|| format!("-X {kv}: expected key=value"))?;
        c.set(k, v);
    }
    Ok(c)
}

fn create_topic(args: &Args, bootstrap: &str) -> Result<(), Fail> {
    let admin: AdminClient<DefaultClientContext> = client_config(args, bootstrap, &[])?.create()?;
    let topic = NewTopic::new(&args.topic, args.partitions, TopicReplication::Fixed(1));
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = futures_executor::block_on(admin.create_topics([&topic], &opts))?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => return Err(format!("creating topic {name}: {code}").into()),
        }
    }
    // Wait until the topic's partitions are in the metadata.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let md = admin.inner().fetch_metadata(Some(&args.topic), Duration::from_secs(5))?;
        let n = md.topics().first().map_or(0, |t| t.partitions().len());
        if n > 0 {
            if n as i32 != args.partitions {
                eprintln!("loadgen: topic {} exists with {n} partitions (asked for {})", args.topic, args.partitions);
            }
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("topic {} did not appear in the metadata", args.topic).into());
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Sends a few records through a throwaway producer so connections and metadata exist before
/// anything is timed.
fn warm_up(args: &Args, bootstrap: &str) -> Result<(), Fail> {
    let producer: BaseProducer = producer_config(args, bootstrap)?.create()?;
    let payload = vec![0u8; args.record_size];
    for p in 0..args.partitions {
        send_blocking(&producer, BaseRecord::<(), [u8]>::to(&args.topic).partition(p).payload(&payload))?;
    }
    producer.flush(Duration::from_secs(30))?;
    Ok(())
}

fn producer_config(args: &Args, bootstrap: &str) -> Result<ClientConfig, Fail> {
    client_config(
        args,
        bootstrap,
        &[
            ("acks", args.acks.clone()),
            ("linger.ms", args.linger_ms.to_string()),
            ("batch.size", args.batch_size.to_string()),
            ("compression.codec", args.compression.clone()),
            ("queue.buffering.max.kbytes", "1048576".to_owned()),
            ("queue.buffering.max.messages", "1000000".to_owned()),
        ],
    )
}

/// Sends one record, waiting for room in librdkafka's queue when it is full.
fn send_blocking<'a, C: ProducerContext>(
    producer: &BaseProducer<C>,
    mut record: BaseRecord<'a, (), [u8], C::DeliveryOpaque>,
) -> Result<(), Fail> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                producer.poll(Duration::from_millis(1));
            }
            Err((e, _)) => return Err(e.into()),
        }
    }
}

/// Per-producer delivery bookkeeping; delivery reports run on the thread that polls.
struct DeliveryStats {
    epoch: Instant,
    latency_us: Mutex<Histogram<u64>>,
    delivered: AtomicU64,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
    last_delivery_ns: AtomicU64,
}

/// The producer's context: shares its [`DeliveryStats`] with the thread that reports them.
struct Deliveries(Arc<DeliveryStats>);

impl std::ops::Deref for Deliveries {
    type Target = DeliveryStats;
    fn deref(&self) -> &DeliveryStats {
        &self.0
    }
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    /// Nanoseconds since `epoch` when the record was sent.
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, sent_ns: usize) {
        let now_ns = self.epoch.elapsed().as_nanos() as u64;
        match result {
            Ok(_) => {
                let us = now_ns.saturating_sub(sent_ns as u64) / 1000;
                if let Ok(mut h) = self.latency_us.lock() {
                    h.saturating_record(us.max(1));
                }
                self.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut first) = self.first_error.lock() {
                    first.get_or_insert_with(|| e.to_string());
                }
            }
        }
        self.last_delivery_ns.fetch_max(now_ns, Ordering::Relaxed);
    }
}

struct Produced {
    records: u64,
    failed: u64,
    first_error: Option<String>,
    seconds: f64,
    latency_us: Histogram<u64>,
}

/// How far ahead of its schedule a paced producer may run before it waits.
const PACING_SLACK: Duration = Duration::from_millis(1);

fn produce_phase(args: &Args, bootstrap: &str) -> Result<Produced, Fail> {
    let epoch = Instant::now();
    let per_rate = if args.rate > 0.0 { args.rate / f64::from(args.producers) } else { 0.0 };
    let mut handles = Vec::new();
    for i in 0..args.producers {
        let n = args.records / u64::from(args.producers)
            + u64::from(u64::from(i) < args.records % u64::from(args.producers));
        let mut config = producer_config(args, bootstrap)?;
        let txn_every = args.transaction_records;
        if txn_every > 0 {
            config.set("transactional.id", format!("loadgen-{}-{i}", std::process::id()));
        }
        let topic = args.topic.clone();
        let size = args.record_size;
        handles.push(thread::spawn(move || -> Result<Arc<DeliveryStats>, String> {
            let stats = Arc::new(DeliveryStats {
                epoch,
                latency_us: Mutex::new(Histogram::new_with_bounds(1, 3_600_000_000, 3).map_err(|e| e.to_string())?),
                delivered: AtomicU64::new(0),
                failed: AtomicU64::new(0),
                first_error: Mutex::new(None),
                last_delivery_ns: AtomicU64::new(0),
            });
            let producer: BaseProducer<Deliveries> =
                config.create_with_context(Deliveries(stats.clone())).map_err(|e| e.to_string())?;
            let payload = pseudo_random_bytes(size, u64::from(i) + 1);
            let txn_timeout = Duration::from_secs(60);
            if txn_every > 0 {
                producer.init_transactions(txn_timeout).map_err(|e| e.to_string())?;
                producer.begin_transaction().map_err(|e| e.to_string())?;
            }
            let start = Instant::now();
            for k in 0..n {
                if txn_every > 0 && k > 0 && k % txn_every == 0 {
                    producer.commit_transaction(txn_timeout).map_err(|e| e.to_string())?;
                    producer.begin_transaction().map_err(|e| e.to_string())?;
                }
                if per_rate > 0.0 {
                    // Pace in bursts: wait only when at least PACING_SLACK ahead of schedule (as
                    // Kafka's ProducerPerformance throttler does), not before every record;
                    // a sleep per record (every 6 us at 160k/s) costs the client a core.
                    let due = start + Duration::from_secs_f64(k as f64 / per_rate);
                    let now = Instant::now();
                    if due > now + PACING_SLACK {
                        producer.poll(due - now);
                        thread::sleep(due.saturating_duration_since(Instant::now()));
                    }
                }
                let sent_ns = epoch.elapsed().as_nanos() as usize;
                let record = BaseRecord::<(), [u8], usize>::with_opaque_to(&topic, sent_ns).payload(&payload);
                send_blocking(&producer, record).map_err(|e| e.to_string())?;
                if k % 64 == 0 {
                    producer.poll(Duration::ZERO);
                }
            }
            if txn_every > 0 {
                producer.commit_transaction(Duration::from_secs(300)).map_err(|e| e.to_string())?;
            }
            producer.flush(Duration::from_secs(300)).map_err(|e| e.to_string())?;
            Ok(stats)
        }));
    }
    let mut out = Produced {
        records: 0,
        failed: 0,
        first_error: None,
        seconds: 0.0,
        latency_us: Histogram::new_with_bounds(1, 3_600_000_000, 3)?,
    };
    let mut last_ns = 0;
    for h in handles {
        let d = h.join().map_err(|_| "a producer thread panicked")??;
        out.records += d.delivered.load(Ordering::Relaxed);
        out.failed += d.failed.load(Ordering::Relaxed);
        if out.first_error.is_none() {
            out.first_error = d.first_error.lock().map_err(|e| e.to_string())?.clone();
        }
        out.latency_us.add(&*d.latency_us.lock().map_err(|e| e.to_string())?)?;
        last_ns = last_ns.max(d.last_delivery_ns.load(Ordering::Relaxed));
    }
    out.seconds = last_ns as f64 / 1e9;
    Ok(out)
}

/// Copies `mb` MB from one thread to another over 127.0.0.1 and prints MB/s.
fn tcp_ceiling(mb: u64) -> Result<(), Fail> {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let total = mb * 1_000_000;
    let reader = thread::spawn(move || -> Result<u64, String> {
        let (mut sock, _) = listener.accept().map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0u64;
        loop {
            match sock.read(&mut buf) {
                Ok(0) => return Ok(got),
                Ok(n) => got += n as u64,
                Err(e) => return Err(e.to_string()),
            }
        }
    });
    let mut sock = std::net::TcpStream::connect(addr)?;
    let buf = pseudo_random_bytes(1 << 20, 7);
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < total {
        let n = (total - sent).min(buf.len() as u64) as usize;
        sock.write_all(&buf[..n])?;
        sent += n as u64;
    }
    drop(sock);
    let got = reader.join().map_err(|_| "reader thread panicked")??;
    let secs = start.elapsed().as_secs_f64();
    println!("tcp loopback: {:.0} MB in {secs:.3} s = {:.0} MB/s", got as f64 / MB, got as f64 / MB / secs);
    Ok(())
}

/// Incompressible-looking bytes (xorshift), so codecs do real work and `none` is not flattered.
fn pseudo_random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

struct Consumed {
    records: u64,
    bytes: u64,
    seconds: f64,
}

/// Every consumer reads its share of the partitions from the start to the high watermark seen
/// before it started (assigned partitions, no group).
fn consume_phase(args: &Args, bootstrap: &str) -> Result<Consumed, Fail> {
    let probe: BaseConsumer = consumer_config(args, bootstrap)?.create()?;
    let mut ends = Vec::new();
    for p in 0..args.partitions {
        let (low, high) = probe.fetch_watermarks(&args.topic, p, Duration::from_secs(10))?;
        ends.push((p, low, high));
    }
    drop(probe);
    let start = Instant::now();
    let mut handles = Vec::new();
    for c in 0..args.consumers {
        let mine: Vec<(i32, i64, i64)> =
            ends.iter().copied().filter(|(p, _, _)| (*p as u32) % args.consumers == c).collect();
        let config = consumer_config(args, bootstrap)?;
        let topic = args.topic.clone();
        handles.push(thread::spawn(move || -> Result<(u64, u64), String> {
            let consumer: BaseConsumer = config.create().map_err(|e| e.to_string())?;
            let mut tpl = TopicPartitionList::new();
            let mut remaining = 0u64;
            let mut end_of = std::collections::HashMap::new();
            for (p, low, high) in &mine {
                if high > low {
                    tpl.add_partition_offset(&topic, *p, Offset::Offset(*low)).map_err(|e| e.to_string())?;
                    remaining += 1;
                    end_of.insert(*p, *high);
                }
            }
            if remaining == 0 {
                return Ok((0, 0));
            }
            consumer.assign(&tpl).map_err(|e| e.to_string())?;
            let (mut records, mut bytes) = (0u64, 0u64);
            let deadline = Instant::now() + Duration::from_secs(600);
            while remaining > 0 {
                if Instant::now() > deadline {
                    return Err("consume phase did not finish in 600 s".to_owned());
                }
                match consumer.poll(Duration::from_millis(100)) {
                    None => {}
                    Some(Err(e)) => return Err(e.to_string()),
                    Some(Ok(m)) => {
                        records += 1;
                        bytes += m.payload_len() as u64;
                        if let Some(end) = end_of.get(&m.partition()) {
                            if m.offset() + 1 == *end {
                                remaining -= 1;
                            }
                        }
                    }
                }
            }
            Ok((records, bytes))
        }));
    }
    let mut out = Consumed { records: 0, bytes: 0, seconds: 0.0 };
    for h in handles {
        let (r, b) = h.join().map_err(|_| "a consumer thread panicked")??;
        out.records += r;
        out.bytes += b;
    }
    out.seconds = start.elapsed().as_secs_f64();
    Ok(out)
}

fn consumer_config(args: &Args, bootstrap: &str) -> Result<ClientConfig, Fail> {
    client_config(
        args,
        bootstrap,
        &[
            ("group.id", "strata-loadgen".to_owned()),
            ("enable.auto.commit", "false".to_owned()),
            ("enable.partition.eof", "false".to_owned()),
        ],
    )
}

/// CPU time and memory of a process, from /proc.
struct ProcStat {
    dir: String,
}

impl ProcStat {
    fn new(pid: u32) -> ProcStat {
        ProcStat { dir: format!("/proc/{pid}") }
    }

    fn own() -> ProcStat {
        ProcStat { dir: "/proc/self".to_owned() }
    }

    /// User plus system CPU seconds so far.
    fn cpu_seconds(&self) -> Result<f64, Fail> {
        self.cpu().map(|c| c.user + c.system)
    }

    /// User and system CPU seconds so far (fields 14 and 15 of `stat`, in clock ticks).
    fn cpu(&self) -> Result<Cpu, Fail> {
        let stat = fs::read_to_string(format!("{}/stat", self.dir))?;
        // The command name (field 2) may hold spaces; the fields after it are plain.
        let after = stat.rsplit_once(')').map(|(_, rest)| rest).ok_or("unreadable /proc stat")?;
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks =
            |i: usize| -> Result<f64, Fail> { Ok(fields.get(i).ok_or("short /proc stat")?.parse::<u64>()? as f64) };
        // `after` starts at field 3 (state), so utime (14) is index 11 and stime (15) index 12.
        Ok(Cpu { user: ticks(11)? / clock_ticks_per_second(), system: ticks(12)? / clock_ticks_per_second() })
    }

    /// Anonymous resident memory now (`RssAnon`: the heap, not the mapped segment files).
    fn anon_rss_bytes(&self) -> Result<u64, Fail> {
        self.status_kb("RssAnon:").map(|kb| kb * 1024)
    }

    fn status_kb(&self, key: &str) -> Result<u64, Fail> {
        let status = fs::read_to_string(format!("{}/status", self.dir))?;
        let line = status.lines().find(|l| l.starts_with(key)).ok_or_else(|| format!("no {key} in /proc status"))?;
        Ok(line.split_whitespace().nth(1).ok_or("bad /proc status line")?.parse()?)
    }

    /// Peak resident set size (`VmHWM`; counts the pages of mapped segment files that were
    /// read, which are page cache the kernel can drop at any time).
    fn peak_rss_bytes(&self) -> Result<u64, Fail> {
        self.status_kb("VmHWM:").map(|kb| kb * 1024)
    }
}

#[derive(Clone, Copy, Debug)]
struct Cpu {
    user: f64,
    system: f64,
}

impl std::ops::Sub for Cpu {
    type Output = Cpu;
    fn sub(self, o: Cpu) -> Cpu {
        Cpu { user: self.user - o.user, system: self.system - o.system }
    }
}

impl Cpu {
    fn total(self) -> f64 {
        self.user + self.system
    }
}

/// `sysconf(_SC_CLK_TCK)`: 100 on every Linux configuration this tool runs on; `getconf` is
/// asked so that a different kernel build is not silently mismeasured.
fn clock_ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

struct Report {
    args: Args,
    produced: Produced,
    consumed: Option<Consumed>,
    client_produce_cpu: f64,
    broker_produce_cpu: Option<Cpu>,
    broker_consume_cpu: Option<Cpu>,
    broker_peak_rss: Option<u64>,
    broker_anon_rss: Option<u64>,
}

const MB: f64 = 1_000_000.0;
const GB: f64 = 1_000_000_000.0;

impl Report {
    fn print(&self) {
        let a = &self.args;
        let p = &self.produced;
        let bytes = p.records as f64 * a.record_size as f64;
        let target = if a.mock { "librdkafka mock cluster".to_owned() } else { a.bootstrap_servers.clone() };
        println!(
            "workload: {} records x {} B, {} partitions, {} producer(s), acks={}, linger.ms={}, batch.size={}, compression={}, rate={}{} -> {}",
            a.records,
            a.record_size,
            a.partitions,
            a.producers,
            a.acks,
            a.linger_ms,
            a.batch_size,
            a.compression,
            if a.rate > 0.0 { format!("{}/s", a.rate) } else { "max".to_owned() },
            if a.transaction_records > 0 {
                format!(", transactions of {} records", a.transaction_records)
            } else {
                String::new()
            },
            target
        );
        let h = &p.latency_us;
        println!(
            "produce: {} records in {:.3} s = {:.0} records/s, {:.1} MB/s; latency us p50 {} p99 {} p99.9 {} max {}; failed {}{}",
            p.records,
            p.seconds,
            p.records as f64 / p.seconds,
            bytes / MB / p.seconds,
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.max(),
            p.failed,
            p.first_error.as_ref().map(|e| format!(" (first: {e})")).unwrap_or_default()
        );
        println!("client: {:.2} CPU s for the produce phase", self.client_produce_cpu);
        if let Some(c) = &self.consumed {
            println!(
                "consume: {} records, {:.1} MB in {:.3} s = {:.0} records/s, {:.1} MB/s",
                c.records,
                c.bytes as f64 / MB,
                c.seconds,
                c.records as f64 / c.seconds,
                c.bytes as f64 / MB / c.seconds
            );
        }
        let per_gb = |cpu: Cpu, bytes: f64| {
            format!(
                "{:.2} CPU s = {:.3} CPU s/GB (user {:.3}, system {:.3})",
                cpu.total(),
                cpu.total() / (bytes / GB),
                cpu.user / (bytes / GB),
                cpu.system / (bytes / GB)
            )
        };
        if let Some(cpu) = self.broker_produce_cpu {
            println!("broker: produce {}", per_gb(cpu, bytes));
        }
        if let (Some(cpu), Some(c)) = (self.broker_consume_cpu, &self.consumed) {
            println!("broker: consume {}", per_gb(cpu, c.bytes as f64));
        }
        if let (Some(peak), Some(anon)) = (self.broker_peak_rss, self.broker_anon_rss) {
            println!(
                "broker: peak RSS {:.1} MB (with mapped segment pages); anonymous RSS at the end {:.1} MB",
                peak as f64 / MB,
                anon as f64 / MB
            );
        }
        if a.json {
            let j = serde_json::json!({
                "records": a.records, "record_size": a.record_size, "partitions": a.partitions,
                "producers": a.producers, "consumers": a.consumers, "acks": a.acks,
                "linger_ms": a.linger_ms, "batch_size": a.batch_size, "compression": a.compression,
                "rate": a.rate, "mock": a.mock,
                "produce_records": p.records, "produce_failed": p.failed, "produce_seconds": p.seconds,
                "produce_records_per_s": p.records as f64 / p.seconds,
                "produce_mb_per_s": bytes / MB / p.seconds,
                "latency_us_p50": h.value_at_quantile(0.5), "latency_us_p99": h.value_at_quantile(0.99),
                "latency_us_p999": h.value_at_quantile(0.999), "latency_us_max": h.max(),
                "client_produce_cpu_s": self.client_produce_cpu,
                "consume_records": self.consumed.as_ref().map(|c| c.records),
                "consume_mb_per_s": self.consumed.as_ref().map(|c| c.bytes as f64 / MB / c.seconds),
                "broker_produce_cpu_s_per_gb": self.broker_produce_cpu.map(|c| c.total() / (bytes / GB)),
                "broker_produce_user_s_per_gb": self.broker_produce_cpu.map(|c| c.user / (bytes / GB)),
                "broker_consume_cpu_s_per_gb": self.broker_consume_cpu.zip(self.consumed.as_ref())
                    .map(|(c, k)| c.total() / (k.bytes as f64 / GB)),
                "broker_peak_rss_bytes": self.broker_peak_rss,
                "broker_anon_rss_bytes": self.broker_anon_rss,
            });
            println!("{j}");
        }
    }
}
