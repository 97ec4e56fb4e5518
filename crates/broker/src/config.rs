//! Broker configuration: Kafka's config names, types and defaults.
//!
//! Every key Strata accepts is in [`BROKER_CONFIGS`]; anything else is refused
//! at start with a message naming the key. `docs/configuration.md` lists the
//! same table.

use std::collections::BTreeMap;
use std::path::PathBuf;

use strata_log::LogConfig;
use strata_metadata::config::resolve_topic_configs;
use strata_protocol::batch::Compression;
use strata_protocol::records::CompressionLevels;

/// Value type of a broker config key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Int,
    Long,
    Bool,
    Str,
}

/// One broker config key.
#[derive(Debug, Clone, Copy)]
pub struct BrokerConfigDef {
    pub name: &'static str,
    pub kind: Kind,
    /// `None`: unset unless given (another key or a fallback supplies the value).
    pub default: Option<&'static str>,
    pub min: Option<i64>,
    pub doc: &'static str,
}

macro_rules! key {
    ($name:literal, $kind:ident, $default:expr, $min:expr, $doc:literal) => {
        BrokerConfigDef { name: $name, kind: Kind::$kind, default: $default, min: $min, doc: $doc }
    };
}

/// Kafka's `replica.selector.class` that sends consumers to a replica in their rack (KIP-392).
pub const RACK_AWARE_SELECTOR: &str = "org.apache.kafka.common.replica.RackAwareReplicaSelector";
/// Kafka's `replica.selector.class` that keeps consumers on the leader (its default behaviour).
pub const LEADER_SELECTOR: &str = "org.apache.kafka.common.replica.LeaderSelector";

/// `producer.id.expiration.ms` when not set: one day, as in Kafka.
pub const DEFAULT_PRODUCER_ID_EXPIRATION_MS: i64 = 86_400_000;

/// Every broker config key, with Kafka's default where Strata keeps it.
pub const BROKER_CONFIGS: &[BrokerConfigDef] = &[
    key!("node.id", Int, Some("1"), Some(0), "This node's id in the cluster."),
    key!("process.roles", Str, Some("broker,controller"), None, "This node's roles: broker, controller, or both (comma-separated)."),
    key!("controller.quorum.voters", Str, None, None, "The controller quorum, as ID@HOST:PORT,...; unset: this node alone (the single-node default)."),
    key!("controller.listener.names", Str, Some("CONTROLLER"), None, "Name of the listener controllers use among themselves."),
    key!("inter.broker.listener.name", Str, Some("PLAINTEXT"), None, "Name of the listener brokers use among themselves: replication, transaction markers and verifications connect to the other brokers' endpoints of this listener, with its TLS and SASL."),
    key!("security.inter.broker.protocol", Str, None, None, "Kafka's older form of inter.broker.listener.name: the listener named after this protocol (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL). Not with inter.broker.listener.name."),
    key!("sasl.mechanism.inter.broker.protocol", Str, Some("GSSAPI"), None, "SASL mechanism brokers log in to each other with on a SASL inter-broker listener: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (Kafka's default GSSAPI is not served). The username and password are the options of that listener's JAAS entry for the mechanism."),
    key!("ssl.endpoint.identification.algorithm", Str, Some("https"), None, "How a broker connecting to another over TLS checks its certificate's name: https (the name or address connected to must be in the certificate), or empty to check the chain only."),
    key!("broker.rack", Str, None, None, "Rack of this broker, reported in Metadata."),
    key!("broker.session.timeout.ms", Int, Some("9000"), Some(1), "A broker of a quorum that sends the active controller no heartbeat for this long is fenced: it leads no partition until it heartbeats again."),
    key!("broker.heartbeat.interval.ms", Int, Some("2000"), Some(1), "How often a broker of a quorum heartbeats to the active controller."),
    key!("metadata.log.max.record.bytes.between.snapshots", Long, Some("20971520"), Some(1), "Bytes of metadata records a controller applies between two snapshots of the metadata image (the Raft log behind a snapshot is dropped)."),
    key!("log.dirs", Str, None, None, "Data directories, comma-separated (set by --data-dir); each new partition goes to the one holding the fewest. Unset: log.dir."),
    key!("log.dir", Str, Some("./data"), None, "The data directory when log.dirs is not set (also a comma-separated list)."),
    key!("metadata.log.dir", Str, None, None, "Directory of the metadata log (__cluster_metadata-0); unset: the first of log.dirs."),
    key!("listeners", Str, Some("PLAINTEXT://127.0.0.1:9092"), None, "Listeners, as PLAINTEXT://HOST:PORT (set by --listen) and, on a controller of a quorum, CONTROLLER://HOST:PORT; an empty HOST binds every interface."),
    key!("advertised.listeners", Str, None, None, "Address clients are told to connect to, as PLAINTEXT://HOST:PORT (set by --advertise); defaults to the listener, which then must not be 0.0.0.0."),
    key!("listener.security.protocol.map", Str, Some("PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL"), None, "Security protocol of each listener name, as NAME:PROTOCOL,... (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL); a controller listener not named is PLAINTEXT."),
    key!("ssl.keystore.type", Str, Some("PEM"), None, "Format of the keystore: PEM (the only one Strata reads; Kafka's default is JKS). Per listener: listener.name.NAME.ssl.keystore.type."),
    key!("ssl.keystore.location", Str, None, None, "PEM file holding the listener's private key and its certificate chain (SSL and SASL_SSL listeners). Checked for changes every few seconds: a new certificate is used without a restart."),
    key!("ssl.keystore.key", Str, None, None, "The private key as inline PEM text (with ssl.keystore.certificate.chain, instead of ssl.keystore.location)."),
    key!("ssl.keystore.certificate.chain", Str, None, None, "The certificate chain as inline PEM text (with ssl.keystore.key)."),
    key!("ssl.key.password", Str, None, None, "Password of an encrypted PKCS#8 private key (BEGIN ENCRYPTED PRIVATE KEY)."),
    key!("ssl.truststore.type", Str, Some("PEM"), None, "Format of the truststore: PEM (the only one Strata reads)."),
    key!("ssl.truststore.location", Str, None, None, "PEM file of the CA certificates client certificates must chain to (ssl.client.auth)."),
    key!("ssl.truststore.certificates", Str, None, None, "The truststore's CA certificates as inline PEM text."),
    key!("ssl.client.auth", Str, Some("none"), None, "Client certificates: none, requested (verified if given; without one the client is User:ANONYMOUS) or required."),
    key!("ssl.enabled.protocols", Str, Some("TLSv1.2,TLSv1.3"), None, "TLS versions accepted: TLSv1.2 and/or TLSv1.3."),
    key!("ssl.principal.mapping.rules", Str, Some("DEFAULT"), None, "How a client certificate's subject (RFC 2253, e.g. CN=alice,OU=eng,O=Acme) becomes the principal's name: DEFAULT and RULE:pattern/replacement/[LU], as in Kafka."),
    key!("sasl.enabled.mechanisms", Str, Some("PLAIN,SCRAM-SHA-256,SCRAM-SHA-512"), None, "SASL mechanisms of SASL_PLAINTEXT and SASL_SSL listeners: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER (Kafka's default is GSSAPI, which Strata does not serve). PLAIN's users come from listener.name.NAME.plain.sasl.jaas.config (user_NAME=\"PASSWORD\" options); OAUTHBEARER needs sasl.oauthbearer.jwks.endpoint.url."),
    key!("authorizer.class.name", Str, None, None, "org.apache.kafka.metadata.authorizer.StandardAuthorizer turns authorization on: every request is checked against the ACLs in the metadata log (CreateAcls, DescribeAcls, DeleteAcls). Unset or empty: no authorization."),
    key!("super.users", Str, None, None, "Principals allowed everything, as User:NAME;User:NAME."),
    key!("allow.everyone.if.no.acl.found", Bool, Some("false"), None, "With an authorizer: whether a resource that no ACL covers is open to everyone (false: only super users may use it)."),
    key!("java.security.auth.login.config", Str, None, None, "A JAAS file (the JVM property Kafka reads it from; also taken from KAFKA_OPTS=-Djava.security.auth.login.config=PATH): a listener without a MECHANISM.sasl.jaas.config key uses the entry of that mechanism's login module in its LISTENER.KafkaServer section, else in KafkaServer. Read at start."),
    key!("sasl.oauthbearer.jwks.endpoint.url", Str, None, None, "OAUTHBEARER (KIP-768): the JWKS whose keys sign the access tokens: the provider's https:// (or http://) endpoint, or a file: URL (file:///etc/strata/jwks.json). Fetched at start, then refreshed. A private CA for https goes in the OAUTHBEARER sasl.jaas.config options ssl.truststore.location or ssl.truststore.certificates (PEM). Required when OAUTHBEARER is enabled."),
    key!("sasl.oauthbearer.jwks.endpoint.refresh.ms", Long, Some("3600000"), Some(0), "OAUTHBEARER: the JWKS is fetched (HTTP) or re-read (file, also whenever it changes) at least this often."),
    key!("sasl.oauthbearer.jwks.endpoint.retry.backoff.ms", Long, Some("100"), Some(0), "OAUTHBEARER: the first wait after a failed HTTP JWKS fetch, doubled at each failure."),
    key!("sasl.oauthbearer.jwks.endpoint.retry.backoff.max.ms", Long, Some("10000"), Some(0), "OAUTHBEARER: retries of a failed HTTP JWKS fetch stop once their waits add up past this; the next try is the next refresh."),
    key!("sasl.oauthbearer.expected.audience", Str, None, None, "OAUTHBEARER: comma-separated audiences; a token's aud must name one of them. Unset: a token carrying aud is refused (as Kafka's jose4j)."),
    key!("sasl.oauthbearer.expected.issuer", Str, None, None, "OAUTHBEARER: a token's iss must equal this."),
    key!("sasl.oauthbearer.sub.claim.name", Str, Some("sub"), None, "OAUTHBEARER: the claim naming the principal (User:NAME)."),
    key!("sasl.oauthbearer.scope.claim.name", Str, Some("scope"), None, "OAUTHBEARER: the claim holding the token's scopes (a space-separated string or an array of strings)."),
    key!("sasl.oauthbearer.clock.skew.seconds", Int, Some("30"), Some(0), "OAUTHBEARER: tolerance for exp, nbf and iat, in seconds."),
    key!("sasl.server.max.receive.size", Int, Some("524288"), Some(1), "Largest request frame a SASL listener reads before the client has authenticated; a bigger one closes the connection."),
    key!("connection.failed.authentication.delay.ms", Int, Some("100"), Some(0), "KIP-306: a failed SASL login is answered, and its connection closed, after this delay (slows password guessing)."),
    key!("connections.max.reauth.ms", Long, Some("0"), Some(0), "KIP-368: a SASL session lasts at most this long; the client must re-authenticate before, or its connection is closed. 0: no limit."),
    key!("socket.request.max.bytes", Int, Some("104857600"), Some(1024), "Largest request frame accepted; checked before allocating."),
    key!("queued.max.request.bytes", Long, Some("268435456"), Some(1048576), "Bytes of requests read but not yet answered, over all connections (at most 2305843009213693951). Kafka's default is unbounded; Strata bounds it."),
    key!("max.connections", Int, Some("65536"), Some(1), "Concurrent client connections; more wait in the accept queue."),
    key!("quota.window.num", Int, Some("11"), Some(1), "Samples kept for client quota rates (KIP-13); the rate is measured over this many windows of quota.window.size.seconds."),
    key!("quota.window.size.seconds", Int, Some("1"), Some(1), "Length of one client quota sample window, in seconds."),
    key!("connections.max.idle.ms", Long, Some("600000"), Some(1), "Close connections idle this long."),
    key!("console.enable", Bool, Some("false"), None, "Serve the web console at / of http.listener: cluster, brokers, topics, consumer groups with lag charts, a message browser and the quorum. It reads the cluster with this node's inter-broker credentials: whoever reaches http.listener reads everything. See docs/operations.md."),
    key!("console.lag.sample.ms", Long, Some("5000"), Some(100), "How often the web console records each consumer group's total lag for its lag charts (the last 720 samples are kept)."),
    key!("http.listener", Str, None, None, "HOST:PORT of the operator's HTTP listener (off when unset): GET /metrics (Prometheus, OpenMetrics text), /health and /ready. See docs/metrics.md."),
    key!("logger.format", Str, Some("text"), None, "How the broker writes its log to stderr: text (a readable line per event) or json (one JSON object per line with timestamp, level, target, message and the event's fields, for log shippers). The environment variable STRATA_LOG_FORMAT overrides it; STRATA_LOG sets the levels."),
    key!("logger.slow.request.threshold.ms", Long, Some("5000"), Some(0), "A request that takes longer than this, from the handler starting to its response being ready, is logged at warn with its API, version, client id, address and principal; 0 logs none. A fetch's own max_wait_ms is not counted, and JoinGroup and SyncGroup, which wait for a rebalance by design, are never logged."),
    key!("auto.create.topics.enable", Bool, Some("true"), None, "Create unknown topics named in Metadata requests."),
    key!("num.partitions", Int, Some("1"), Some(1), "Partitions of auto-created topics and of CreateTopics with -1."),
    key!("default.replication.factor", Int, Some("1"), Some(1), "Replication factor of auto-created topics."),
    key!("min.insync.replicas", Int, Some("1"), Some(1), "Default min.insync.replicas of topics."),
    key!("auto.leader.rebalance.enable", Bool, Some("true"), None, "The active controller makes preferred replicas lead again when a broker's leadership imbalance exceeds leader.imbalance.per.broker.percentage."),
    key!("leader.imbalance.check.interval.seconds", Long, Some("300"), Some(1), "How often the active controller checks the leadership balance."),
    key!("leader.imbalance.per.broker.percentage", Int, Some("10"), Some(0), "A broker's share of its preferred partitions led elsewhere that triggers a rebalance."),
    key!("replica.fetch.wait.max.ms", Int, Some("500"), Some(0), "Longest a follower's fetch waits at the leader for new records."),
    key!("replica.fetch.min.bytes", Int, Some("1"), Some(1), "Bytes a follower's fetch waits for at the leader (up to replica.fetch.wait.max.ms)."),
    key!("replica.fetch.max.bytes", Int, Some("1048576"), Some(0), "Bytes a follower fetches per partition per request (at least one batch)."),
    key!("replica.fetch.response.max.bytes", Int, Some("10485760"), Some(0), "Bytes a follower fetches per request over all partitions (at least one batch)."),
    key!("replica.fetch.backoff.ms", Int, Some("1000"), Some(0), "How long a follower waits after a failed fetch before the next."),
    key!("replica.lag.time.max.ms", Long, Some("30000"), Some(1), "A follower that has not caught up with the leader's log end for this long leaves the ISR."),
    key!("leader.replication.throttled.rate", Long, Some("9223372036854775807"), Some(0), "Bytes per second a leader sends, over all its throttled replicas (leader.replication.throttled.replicas of their topics) outside the ISR (KIP-73). Dynamic: set it per broker or as the cluster default with kafka-configs.sh --entity-type brokers."),
    key!("follower.replication.throttled.rate", Long, Some("9223372036854775807"), Some(0), "Bytes per second a follower fetches for its throttled replicas (follower.replication.throttled.replicas of their topics) while they are outside the ISR (KIP-73). Dynamic, as leader.replication.throttled.rate."),
    key!("replica.high.watermark.checkpoint.interval.ms", Long, Some("5000"), Some(1), "How often each data directory's replication-offset-checkpoint file records its partitions' high watermarks (also written at shutdown)."),
    key!("replica.selector.class", Str, None, None, "How a leader picks the replica a consumer should fetch from (KIP-392): unset or org.apache.kafka.common.replica.LeaderSelector, the leader; org.apache.kafka.common.replica.RackAwareReplicaSelector, the most caught-up in-sync replica in the consumer's client.rack."),
    key!("replica.socket.timeout.ms", Int, Some("30000"), Some(1), "Longest a follower waits for a leader's answer beyond replica.fetch.wait.max.ms."),
    key!("message.max.bytes", Int, Some("1048588"), Some(0), "Largest record batch accepted (topic: max.message.bytes)."),
    key!("log.segment.bytes", Int, Some("1073741824"), Some(1024), "Segment size at which a new segment is rolled (topic: segment.bytes)."),
    key!("log.roll.ms", Long, None, Some(1), "Segment age at which a new segment is rolled (topic: segment.ms)."),
    key!("log.roll.hours", Int, Some("168"), Some(1), "As log.roll.ms, in hours; log.roll.ms wins."),
    key!("log.retention.ms", Long, None, Some(-1), "How long segments are kept; -1 forever (topic: retention.ms)."),
    key!("log.retention.minutes", Int, None, Some(-1), "As log.retention.ms, in minutes."),
    key!("log.retention.hours", Int, Some("168"), Some(-1), "As log.retention.ms, in hours; ms, then minutes, win."),
    key!("log.retention.bytes", Long, Some("-1"), Some(-1), "Size per partition above which old segments are deleted (topic: retention.bytes)."),
    key!("log.retention.check.interval.ms", Long, Some("300000"), Some(1), "How often retention is enforced."),
    key!("log.flush.interval.messages", Long, Some("9223372036854775807"), Some(1), "Fsync a partition after this many records (topic: flush.messages)."),
    key!("log.flush.interval.ms", Long, None, Some(0), "Fsync a partition when its unflushed data is this old (topic: flush.ms)."),
    key!("log.flush.scheduler.interval.ms", Long, Some("9223372036854775807"), Some(1), "How often the time-based flush policy is checked."),
    key!("log.index.interval.bytes", Int, Some("4096"), Some(0), "Bytes between offset index entries (topic: index.interval.bytes)."),
    key!("log.index.size.max.bytes", Int, Some("10485760"), Some(4096), "Size of a segment's offset index (topic: segment.index.bytes)."),
    key!("log.message.timestamp.type", Str, Some("CreateTime"), None, "CreateTime or LogAppendTime (topic: message.timestamp.type)."),
    key!("log.message.timestamp.before.max.ms", Long, Some("9223372036854775807"), Some(0), "Oldest CreateTime accepted, relative to now."),
    key!("log.message.timestamp.after.max.ms", Long, Some("9223372036854775807"), Some(0), "Newest CreateTime accepted, relative to now."),
    key!("log.cleanup.policy", Str, Some("delete"), None, "Default cleanup.policy of topics."),
    key!("log.cleaner.enable", Bool, Some("true"), None, "Run the log cleaner, which compacts topics whose cleanup.policy contains compact."),
    key!("log.cleaner.threads", Int, Some("1"), Some(1), "Log cleaner threads."),
    key!("log.cleaner.backoff.ms", Long, Some("15000"), Some(0), "How long a cleaner thread sleeps when no log needs cleaning."),
    key!("log.cleaner.dedupe.buffer.size", Long, Some("134217728"), Some(1024), "Memory for the cleaners' key maps, shared by all threads (32 bytes per key)."),
    key!("log.cleaner.io.buffer.size", Int, Some("524288"), Some(0), "Accepted for compatibility; the cleaner reads memory-mapped segments."),
    key!("log.cleaner.io.max.bytes.per.second", Str, Some("1.7976931348623157E308"), None, "Bytes per second all cleaner threads together may read and write."),
    key!("log.cleaner.min.cleanable.ratio", Str, Some("0.5"), None, "Default min.cleanable.dirty.ratio of topics."),
    key!("log.cleaner.delete.retention.ms", Long, Some("86400000"), Some(0), "Default delete.retention.ms of topics."),
    key!("log.cleaner.min.compaction.lag.ms", Long, Some("0"), Some(0), "Default min.compaction.lag.ms of topics."),
    key!("log.cleaner.max.compaction.lag.ms", Long, Some("9223372036854775807"), Some(1), "Default max.compaction.lag.ms of topics."),
    key!("compression.type", Str, Some("producer"), None, "Default compression.type of topics."),
    key!("compression.gzip.level", Int, Some("-1"), Some(-1), "Default compression.gzip.level of topics (-1, or 1-9)."),
    key!("compression.lz4.level", Int, Some("9"), Some(1), "Default compression.lz4.level of topics (1-17)."),
    key!("compression.zstd.level", Int, Some("3"), Some(-131072), "Default compression.zstd.level of topics (-131072 to 22)."),
    key!("unclean.leader.election.enable", Bool, Some("false"), None, "Default unclean.leader.election.enable of topics."),
    key!("producer.id.expiration.ms", Int, Some("86400000"), Some(1), "Forget an idempotent producer whose last batch is this old (its sequence state goes)."),
    key!("producer.id.expiration.check.interval.ms", Int, Some("600000"), Some(1), "How often expired producer ids are removed."),
    key!("offsets.topic.num.partitions", Int, Some("50"), Some(1), "Partitions of __consumer_offsets (fixed once the topic exists)."),
    key!("offsets.topic.replication.factor", Int, Some("3"), Some(1), "Replication factor of __consumer_offsets, created once this many brokers are registered; 1 on a single node (no controller.quorum.voters) unless set."),
    key!("offsets.topic.segment.bytes", Int, Some("104857600"), Some(1024), "Segment size of __consumer_offsets."),
    key!("transaction.state.log.num.partitions", Int, Some("50"), Some(1), "Partitions of __transaction_state (fixed once the topic exists)."),
    key!("transaction.state.log.replication.factor", Int, Some("3"), Some(1), "Replication factor of __transaction_state, created at the first transactional request once this many brokers are registered; 1 on a single node (no controller.quorum.voters) unless set."),
    key!("transaction.state.log.min.isr", Int, Some("2"), Some(1), "min.insync.replicas of __transaction_state (at most its replication factor)."),
    key!("transaction.state.log.segment.bytes", Int, Some("104857600"), Some(1024), "Segment size of __transaction_state."),
    key!("transaction.max.timeout.ms", Int, Some("900000"), Some(1), "The longest transaction.timeout.ms a transactional producer may ask for (InitProducerId answers INVALID_TRANSACTION_TIMEOUT above it)."),
    key!("transactional.id.expiration.ms", Int, Some("604800000"), Some(1), "A transactional id with no transaction open and no request for this long is removed."),
    key!("transaction.abort.timed.out.transaction.cleanup.interval.ms", Int, Some("10000"), Some(1), "How often the coordinator aborts transactions open longer than their timeout."),
    key!("transaction.remove.expired.transaction.cleanup.interval.ms", Int, Some("3600000"), Some(1), "How often the coordinator removes expired transactional ids."),
    key!("transaction.partition.verification.enable", Bool, Some("true"), None, "KIP-890: a partition leader asks the transaction coordinator before a transactional batch opens a transaction in the partition, and refuses it (INVALID_TXN_STATE) if the partition is not in the transaction."),
    key!("offsets.retention.minutes", Int, Some("10080"), Some(1), "How long committed offsets of an empty group are kept."),
    key!("offsets.retention.check.interval.ms", Long, Some("600000"), Some(1), "How often expired offsets are removed."),
    key!("offset.metadata.max.bytes", Int, Some("4096"), Some(0), "Largest metadata string of a committed offset."),
    key!("group.initial.rebalance.delay.ms", Int, Some("3000"), Some(0), "How long the first rebalance of an empty classic group waits for more members."),
    key!("group.min.session.timeout.ms", Int, Some("6000"), Some(1), "Smallest session timeout a classic member may ask for."),
    key!("group.max.session.timeout.ms", Int, Some("1800000"), Some(1), "Largest session timeout a classic member may ask for."),
    key!("group.max.size", Int, Some("2147483647"), Some(1), "Most members of a classic group."),
    key!("group.consumer.session.timeout.ms", Int, Some("45000"), Some(1), "Session timeout of KIP-848 consumer group members."),
    key!("group.consumer.heartbeat.interval.ms", Int, Some("5000"), Some(1), "Heartbeat interval given to KIP-848 consumer group members."),
    key!("group.consumer.max.size", Int, Some("2147483647"), Some(1), "Most members of a KIP-848 consumer group."),
    key!("group.consumer.assignors", Str, Some("uniform,range"), None, "Server-side assignors of KIP-848 groups; the first is the default."),
];

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("unknown config key '{0}' (see docs/configuration.md for the keys Strata accepts)")]
    UnknownKey(String),
    #[error("invalid value '{value}' for config key '{key}': {reason}")]
    BadValue { key: String, value: String, reason: String },
}

/// The broker's static configuration: every key's effective value.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Keys the operator set explicitly (config file, flags).
    explicit: BTreeMap<String, String>,
}

/// Whether `name` holds a secret (Kafka's PASSWORD type): DescribeConfigs gives no value and
/// logs show `[hidden]`. Listener-prefixed forms included.
pub fn is_sensitive(name: &str) -> bool {
    let base = crate::listeners::listener_key_base(name).unwrap_or(name);
    matches!(
        base,
        "ssl.key.password" | "ssl.keystore.key" | "ssl.keystore.certificate.chain" | "ssl.truststore.certificates"
    ) || base.ends_with("sasl.jaas.config")
}

fn def(name: &str) -> Option<&'static BrokerConfigDef> {
    BROKER_CONFIGS.iter().find(|d| d.name == name)
}

fn check(def: &BrokerConfigDef, value: &str) -> Result<(), String> {
    let v = value.trim();
    let n = match def.kind {
        Kind::Int => Some(v.parse::<i32>().map(i64::from).map_err(|_| "expected a 32-bit integer".to_string())?),
        Kind::Long => Some(v.parse::<i64>().map_err(|_| "expected an integer".to_string())?),
        Kind::Bool => {
            v.parse::<bool>().map_err(|_| "expected true or false".to_string())?;
            None
        }
        Kind::Str => None,
    };
    if let (Some(n), Some(min)) = (n, def.min) {
        if n < min {
            return Err(format!("must be at least {min}"));
        }
    }
    match def.name {
        "log.cleaner.io.max.bytes.per.second" if !v.parse::<f64>().is_ok_and(|r| r > 0.0) => {
            Err("must be a positive number".into())
        }
        "log.cleaner.min.cleanable.ratio" if !v.parse::<f64>().is_ok_and(|r| (0.0..=1.0).contains(&r)) => {
            Err("must be a number from 0 to 1".into())
        }
        "authorizer.class.name" if !v.is_empty() && v != crate::authz::STANDARD_AUTHORIZER => {
            Err(format!("the only authorizer is {}", crate::authz::STANDARD_AUTHORIZER))
        }
        "super.users" => strata_security::acl::Authorizer::parse_super_users(v).map(|_| ()).map_err(|e| e.to_string()),
        "ssl.client.auth" if !matches!(v.to_ascii_lowercase().as_str(), "none" | "requested" | "required") => {
            Err("must be none, requested or required".into())
        }
        "log.message.timestamp.type" if !matches!(v, "CreateTime" | "LogAppendTime") => {
            Err("must be CreateTime or LogAppendTime".into())
        }
        "compression.type" if !matches!(v, "producer" | "uncompressed" | "gzip" | "snappy" | "lz4" | "zstd") => {
            Err("must be producer, uncompressed, gzip, snappy, lz4 or zstd".into())
        }
        "compression.gzip.level" if !(v == "-1" || (1..=9).contains(&n.unwrap_or(0))) => {
            Err("must be -1 or 1-9".into())
        }
        "compression.lz4.level" if n.unwrap_or(0) > 17 => Err("must be at most 17".into()),
        "compression.zstd.level" if n.unwrap_or(0) > 22 => Err("must be at most 22".into()),
        // Whether a listener for clients is needed depends on process.roles (checked after).
        "listeners" | "advertised.listeners" => parse_listeners(v).map(|_| ()),
        "process.roles" => parse_roles(v).map(|_| ()),
        "controller.quorum.voters" => parse_voters(v).map(|_| ()),
        "log.dirs" | "log.dir" => parse_dirs(v).map(|_| ()),
        "metadata.log.dir" if v.is_empty() => Err("must name a directory".into()),
        "replica.selector.class" if v != RACK_AWARE_SELECTOR && v != LEADER_SELECTOR => {
            Err(format!("must be {LEADER_SELECTOR} or {RACK_AWARE_SELECTOR}"))
        }
        // The budget is a semaphore's permits; tokio's semaphore holds at most this many (more
        // would panic when the listener starts).
        "queued.max.request.bytes" if n.unwrap_or(0) > MAX_QUEUED_REQUEST_BYTES => {
            Err(format!("must be at most {MAX_QUEUED_REQUEST_BYTES}"))
        }
        _ => Ok(()),
    }
}

/// One of a node's `process.roles`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Broker,
    Controller,
}

/// Parses `process.roles` as Kafka does: `broker`, `controller` or both, comma-separated, each
/// once.
pub fn parse_roles(value: &str) -> Result<Vec<Role>, String> {
    let mut roles = Vec::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let role = match entry {
            "broker" => Role::Broker,
            "controller" => Role::Controller,
            other => return Err(format!("unknown role '{other}': the roles are broker and controller")),
        };
        if roles.contains(&role) {
            return Err(format!("lists the role {entry} twice"));
        }
        roles.push(role);
    }
    if roles.is_empty() {
        return Err("must name broker, controller, or both".into());
    }
    Ok(roles)
}

/// One voter of `controller.quorum.voters`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Voter {
    pub id: i32,
    pub host: String,
    pub port: u16,
}

/// Parses `controller.quorum.voters`, `ID@HOST:PORT,...` as in Kafka (KIP-595), each id once.
pub fn parse_voters(value: &str) -> Result<Vec<Voter>, String> {
    let mut voters: Vec<Voter> = Vec::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (id, addr) = entry.split_once('@').ok_or_else(|| format!("'{entry}' is not ID@HOST:PORT"))?;
        let id =
            id.trim().parse::<i32>().ok().filter(|i| *i >= 0).ok_or_else(|| format!("bad voter id in '{entry}'"))?;
        let (host, port) = addr.rsplit_once(':').ok_or_else(|| format!("'{entry}' is not ID@HOST:PORT"))?;
        let port = port.parse::<u16>().map_err(|_| format!("bad port in '{entry}'"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("no host in '{entry}'"));
        }
        if voters.iter().any(|v| v.id == id) {
            return Err(format!("lists voter {id} twice"));
        }
        voters.push(Voter { id, host: host.to_string(), port });
    }
    if voters.is_empty() {
        return Err("must name at least one voter, as ID@HOST:PORT".into());
    }
    Ok(voters)
}

/// Largest `queued.max.request.bytes`: the most permits a tokio semaphore holds.
const MAX_QUEUED_REQUEST_BYTES: i64 = tokio::sync::Semaphore::MAX_PERMITS as i64;

/// Parses a comma-separated list of directories as Kafka does (`log.dirs`): entries are trimmed,
/// empty ones dropped; at least one must remain and none may be listed twice.
pub fn parse_dirs(value: &str) -> Result<Vec<PathBuf>, String> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let dir = PathBuf::from(entry);
        let same = |d: &PathBuf| normalize(d) == normalize(&dir);
        if let Some(first) = dirs.iter().find(|d| same(d)) {
            return Err(format!("lists the directory {} twice ({} and {entry})", dir.display(), first.display()));
        }
        dirs.push(dir);
    }
    if dirs.is_empty() {
        return Err("must name at least one directory".into());
    }
    Ok(dirs)
}

/// A path without `.` components and trailing separators, for spotting a directory listed twice
/// (the broker compares canonical paths again once the directories exist).
fn normalize(path: &std::path::Path) -> Vec<std::path::Component<'_>> {
    path.components().filter(|c| !matches!(c, std::path::Component::CurDir)).collect()
}

/// One entry of `listeners`: `NAME://HOST:PORT` (a bare `HOST:PORT` is PLAINTEXT). The name
/// is upper-cased, as Kafka does; its security protocol comes from
/// `listener.security.protocol.map` (see [`crate::listeners`]).
fn parse_listener_entry(entry: &str) -> Result<(String, String, u16), String> {
    let entry = entry.trim();
    let (name, addr) = match entry.split_once("://") {
        None => ("PLAINTEXT".to_string(), entry),
        Some((name, addr)) => {
            let name = name.trim().to_ascii_uppercase();
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                return Err(format!("bad listener name '{name}' (letters, digits, '_' and '-')"));
            }
            (name, addr)
        }
    };
    let (host, port) = addr.rsplit_once(':').ok_or("expected HOST:PORT")?;
    let port = port.parse::<u16>().map_err(|_| format!("bad port '{port}'"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Ok((name, host.to_string(), port))
}

/// Every listener of `listeners` / `advertised.listeners` as (name, host, port), each name once.
pub fn parse_listeners(value: &str) -> Result<Vec<(String, String, u16)>, String> {
    let mut out: Vec<(String, String, u16)> = Vec::new();
    for entry in value.split(',').filter(|e| !e.trim().is_empty()) {
        let l = parse_listener_entry(entry)?;
        if out.iter().any(|o| o.0 == l.0) {
            return Err(format!("listener {} is named twice", l.0));
        }
        out.push(l);
    }
    Ok(out)
}

/// The client (PLAINTEXT) listener of `listeners` / `advertised.listeners`: host and port.
pub fn parse_listener(value: &str) -> Result<(String, u16), String> {
    parse_listeners(value)?
        .into_iter()
        .find(|l| l.0 != "CONTROLLER")
        .map(|(_, h, p)| (h, p))
        .ok_or_else(|| "no listener for clients (e.g. PLAINTEXT://HOST:PORT)".to_string())
}

/// The CONTROLLER listener of `listeners`, if there is one.
pub fn parse_controller_listener(value: &str) -> Result<Option<(String, u16)>, String> {
    Ok(parse_listeners(value)?.into_iter().find(|l| l.0 == "CONTROLLER").map(|(_, h, p)| (h, p)))
}

impl BrokerConfig {
    /// Builds the configuration from explicitly set keys, refusing unknown keys
    /// and bad values.
    pub fn from_map(explicit: BTreeMap<String, String>) -> Result<Self, ConfigError> {
        for (k, v) in &explicit {
            // listener.name.NAME.KEY: the rules of KEY (a JAAS entry is checked when read).
            let base = crate::listeners::listener_key_base(k).unwrap_or(k);
            let Some(d) = def(base) else {
                // Only as listener.name.NAME.MECHANISM.sasl.jaas.config (and the OAUTHBEARER
                // callback handler), as in Kafka.
                if crate::listeners::PREFIXED_ONLY_KEYS.contains(&base) && base != k {
                    continue;
                }
                return Err(ConfigError::UnknownKey(k.clone()));
            };
            check(d, v).map_err(|reason| ConfigError::BadValue { key: k.clone(), value: v.clone(), reason })?;
        }
        let config = Self { explicit };
        config.check_quorum()?;
        // A controller-only node has no listener for clients.
        if config.process_roles().contains(&Role::Broker) {
            config.check_advertised()?;
        }
        Ok(config)
    }

    /// Kafka's rules for roles and voters: a node with the controller role must be one of
    /// `controller.quorum.voters`; a broker-only or controller-only node needs voters to find
    /// the quorum.
    fn check_quorum(&self) -> Result<(), ConfigError> {
        let roles = self.process_roles();
        let voters = self.quorum_voters();
        let bad = |key: &str, reason: String| ConfigError::BadValue {
            key: key.into(),
            value: self.get(key).unwrap_or_default().into(),
            reason,
        };
        if voters.is_empty() && roles.len() < 2 {
            return Err(bad(
                "process.roles",
                "a node that is not both broker and controller needs controller.quorum.voters to find the quorum"
                    .into(),
            ));
        }
        if roles == [Role::Broker] && voters.iter().any(|v| v.id == self.node_id()) {
            return Err(bad(
                "controller.quorum.voters",
                format!("node.id {} is a voter, but process.roles is broker only (add the controller role, or give the broker another id)", self.node_id()),
            ));
        }
        if !voters.is_empty() && roles.contains(&Role::Controller) && !voters.iter().any(|v| v.id == self.node_id()) {
            return Err(bad(
                "controller.quorum.voters",
                format!("node.id {} has the controller role but is not one of the voters", self.node_id()),
            ));
        }
        Ok(())
    }

    /// `process.roles` (validated at start).
    pub fn process_roles(&self) -> Vec<Role> {
        parse_roles(self.get("process.roles").unwrap_or("broker,controller")).unwrap_or_default()
    }

    /// `controller.quorum.voters`; empty in the single-node default (this node is the quorum).
    pub fn quorum_voters(&self) -> Vec<Voter> {
        self.get("controller.quorum.voters").and_then(|v| parse_voters(v).ok()).unwrap_or_default()
    }

    /// Kafka's rules for listeners: each has a security protocol, the advertised address is
    /// not the nonroutable meta-address 0.0.0.0 (nor `::`), the inter-broker listener exists.
    fn check_advertised(&self) -> Result<(), ConfigError> {
        let bad = |(key, reason): (&str, String)| ConfigError::BadValue {
            key: key.into(),
            value: self.get(key).unwrap_or_default().into(),
            reason,
        };
        let specs = crate::listeners::client_listeners(self).map_err(bad)?;
        crate::listeners::inter_broker_listener(self, &specs).map_err(bad)?;
        Ok(())
    }

    /// `key` for listener `name`: `listener.name.NAME.KEY` (name lower-cased, as Kafka writes
    /// it) when set, else `KEY`.
    pub fn listener_get(&self, name: &str, key: &str) -> Option<String> {
        let prefixed = format!("listener.name.{}.{key}", name.to_ascii_lowercase());
        self.explicit.get(&prefixed).cloned().or_else(|| self.get(key).map(str::to_string))
    }

    /// The effective value of `name`, if it has one.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.explicit.get(name).map(String::as_str).or_else(|| def(name).and_then(|d| d.default))
    }

    /// Whether the operator set `name`.
    pub fn is_explicit(&self, name: &str) -> bool {
        self.explicit.contains_key(name)
    }

    fn num(&self, name: &str) -> Option<i64> {
        self.get(name).and_then(|v| v.trim().parse().ok())
    }

    fn num_or(&self, name: &str, fallback: i64) -> i64 {
        self.num(name).unwrap_or(fallback)
    }

    fn flag(&self, name: &str) -> bool {
        self.get(name).is_some_and(|v| v.trim() == "true")
    }

    /// `quota.window.num` and `quota.window.size.seconds` (as milliseconds).
    pub fn quota_window(&self) -> (u32, u64) {
        let samples = u32::try_from(self.num_or("quota.window.num", 11)).unwrap_or(11).max(1);
        let seconds = u64::try_from(self.num_or("quota.window.size.seconds", 1)).unwrap_or(1).max(1);
        (samples, seconds.saturating_mul(1000))
    }

    pub fn node_id(&self) -> i32 {
        self.num_or("node.id", 1) as i32
    }
    /// The data directories, in order: `log.dirs`, else `log.dir` (Kafka's precedence). Never
    /// empty (validated at start).
    pub fn log_dirs(&self) -> Vec<PathBuf> {
        let value = self.explicit.get("log.dirs").map(String::as_str).or_else(|| self.get("log.dir"));
        parse_dirs(value.unwrap_or("./data")).unwrap_or_else(|_| vec![PathBuf::from("./data")])
    }
    /// The directory that holds the metadata log: `metadata.log.dir`, else the first data
    /// directory (as in Kafka).
    pub fn metadata_log_dir(&self) -> PathBuf {
        match self.get("metadata.log.dir") {
            Some(d) => PathBuf::from(d.trim()),
            None => self.log_dirs().into_iter().next().unwrap_or_else(|| PathBuf::from("./data")),
        }
    }
    /// The inter-broker listener's address to bind (an empty host binds every interface).
    pub fn listen_addr(&self) -> Result<(String, u16), String> {
        self.inter_broker_listener().map(|l| l.bind)
    }
    /// The listeners for clients and brokers (not the controllers'), validated at start.
    pub fn client_listeners(&self) -> Result<Vec<crate::listeners::ListenerSpec>, String> {
        crate::listeners::client_listeners(self).map_err(|(k, e)| format!("{k}: {e}"))
    }
    /// The listener brokers reach this one on (see [`crate::listeners::inter_broker_listener`]).
    pub fn inter_broker_listener(&self) -> Result<crate::listeners::ListenerSpec, String> {
        let specs = self.client_listeners()?;
        crate::listeners::inter_broker_listener(self, &specs).map_err(|(k, e)| format!("{k}: {e}"))
    }
    /// Where this node's controller listens (the CONTROLLER listener of `listeners`), if it has one.
    pub fn controller_listen_addr(&self) -> Result<Option<(String, u16)>, String> {
        parse_controller_listener(self.get("listeners").unwrap_or("127.0.0.1:9092"))
    }
    /// The inter-broker listener's advertised address: what the broker registers as its
    /// host and port. An empty host is this machine's host name, as in Kafka; a wildcard host
    /// was refused at start.
    pub fn advertised(&self) -> Result<(String, u16), String> {
        self.inter_broker_listener().map(|l| l.advertised)
    }
    /// The keys whose value differs from the default, with their values, in name order: what
    /// the start-up log shows.
    pub fn non_default(&self) -> Vec<(&str, &str)> {
        self.explicit
            .iter()
            .filter(|(k, v)| def(k).and_then(|d| d.default) != Some(v.as_str()))
            .map(|(k, v)| (k.as_str(), if is_sensitive(k) { "[hidden]" } else { v.as_str() }))
            .collect()
    }
    pub fn rack(&self) -> Option<String> {
        self.get("broker.rack").map(str::to_string)
    }
    /// Whether `replica.selector.class` is Kafka's rack-aware selector (KIP-392): leaders then
    /// point consumers that give a `client.rack` to an in-sync replica in that rack.
    pub fn rack_aware_replica_selector(&self) -> bool {
        self.get("replica.selector.class").is_some_and(|v| v.trim() == RACK_AWARE_SELECTOR)
    }
    pub fn socket_request_max_bytes(&self) -> usize {
        self.num_or("socket.request.max.bytes", 104_857_600) as usize
    }
    pub fn queued_max_request_bytes(&self) -> usize {
        self.num_or("queued.max.request.bytes", 268_435_456) as usize
    }
    pub fn max_connections(&self) -> usize {
        self.num_or("max.connections", 65536) as usize
    }
    /// `logger.slow.request.threshold.ms`; `None` when 0 (no slow-request log lines).
    pub fn slow_request_threshold(&self) -> Option<std::time::Duration> {
        let ms = self.num_or("logger.slow.request.threshold.ms", 5000);
        (ms > 0).then(|| std::time::Duration::from_millis(ms as u64))
    }
    pub fn connections_max_idle_ms(&self) -> u64 {
        self.num_or("connections.max.idle.ms", 600_000) as u64
    }
    pub fn auto_create_topics(&self) -> bool {
        self.flag("auto.create.topics.enable")
    }
    pub fn num_partitions(&self) -> i32 {
        self.num_or("num.partitions", 1) as i32
    }
    pub fn default_replication_factor(&self) -> i16 {
        self.num_or("default.replication.factor", 1) as i16
    }
    pub fn retention_check_interval_ms(&self) -> u64 {
        self.num_or("log.retention.check.interval.ms", 300_000) as u64
    }
    /// `producer.id.expiration.check.interval.ms`: how often idle producers are forgotten.
    pub fn producer_id_expiration_check_interval_ms(&self) -> u64 {
        self.num_or("producer.id.expiration.check.interval.ms", 600_000) as u64
    }
    /// A numeric key's effective value (0 if unset or unparsable; keys are
    /// validated at start, so only keys without a default can be unset).
    pub fn number(&self, name: &str) -> i64 {
        self.num_or(name, 0)
    }
    /// `offsets.topic.replication.factor`: as set, else Kafka's 3 in a cluster and 1 on a single
    /// node (no `controller.quorum.voters`), which could never have three.
    pub fn offsets_topic_replication_factor(&self) -> i16 {
        if self.is_explicit("offsets.topic.replication.factor") || !self.quorum_voters().is_empty() {
            self.number("offsets.topic.replication.factor") as i16
        } else {
            1
        }
    }
    /// `transaction.state.log.replication.factor`, with the same single-node rule as
    /// [`Self::offsets_topic_replication_factor`].
    pub fn transaction_state_replication_factor(&self) -> i16 {
        if self.is_explicit("transaction.state.log.replication.factor") || !self.quorum_voters().is_empty() {
            self.number("transaction.state.log.replication.factor") as i16
        } else {
            1
        }
    }
    pub fn flush_scheduler_interval_ms(&self) -> u64 {
        self.num_or("log.flush.scheduler.interval.ms", i64::MAX) as u64
    }
    /// The `log.cleaner.*` settings of the cleaner threads.
    pub fn cleaner(&self) -> strata_log::cleaner::CleanerConfig {
        let defaults = strata_log::cleaner::CleanerConfig::default();
        strata_log::cleaner::CleanerConfig {
            enabled: self.get("log.cleaner.enable").is_none_or(|v| v.trim() == "true"),
            threads: self.num_or("log.cleaner.threads", 1).clamp(1, 64) as usize,
            dedupe_buffer_size: self
                .num_or("log.cleaner.dedupe.buffer.size", defaults.dedupe_buffer_size as i64)
                .max(1024) as u64,
            io_max_bytes_per_second: self
                .get("log.cleaner.io.max.bytes.per.second")
                .and_then(|v| v.trim().parse::<f64>().ok())
                .filter(|r| *r > 0.0)
                .unwrap_or(defaults.io_max_bytes_per_second),
            backoff_ms: self.num_or("log.cleaner.backoff.ms", 15_000).max(0) as u64,
        }
    }

    /// The broker-level values behind topic config defaults, under the broker
    /// key names that topic configs name as synonyms (hours and minutes
    /// variants folded into the ms keys, as Kafka does).
    pub fn topic_defaults(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for d in BROKER_CONFIGS {
            if self.is_explicit(d.name) {
                if let Some(v) = self.get(d.name) {
                    out.insert(d.name.to_string(), v.to_string());
                }
            }
        }
        let retention = self
            .num("log.retention.ms")
            .or_else(|| self.num("log.retention.minutes").map(|m| if m < 0 { -1 } else { m * 60_000 }))
            .or_else(|| {
                if self.is_explicit("log.retention.hours") {
                    self.num("log.retention.hours").map(|h| if h < 0 { -1 } else { h * 3_600_000 })
                } else {
                    None
                }
            });
        if let Some(r) = retention {
            out.insert("log.retention.ms".into(), r.to_string());
        }
        let roll = self.num("log.roll.ms").or_else(|| {
            if self.is_explicit("log.roll.hours") {
                self.num("log.roll.hours").map(|h| h * 3_600_000)
            } else {
                None
            }
        });
        if let Some(r) = roll {
            out.insert("log.roll.ms".into(), r.to_string());
        }
        if let Some(f) = self.num("log.flush.interval.ms") {
            out.insert("log.flush.interval.ms".into(), f.to_string());
        }
        out.remove("log.retention.minutes");
        out.remove("log.retention.hours");
        out.remove("log.roll.hours");
        out
    }

    /// Every key with its effective value, for DescribeConfigs on the broker.
    pub fn describe(&self) -> Vec<(&'static BrokerConfigDef, Option<String>, bool)> {
        BROKER_CONFIGS.iter().map(|d| (d, self.get(d.name).map(str::to_string), !self.is_explicit(d.name))).collect()
    }
}

/// This machine's host name (what Kafka advertises for a listener without a host).
pub(crate) fn host_name() -> String {
    let uname = rustix::system::uname();
    let name = uname.nodename().to_string_lossy().into_owned();
    if name.is_empty() {
        "localhost".to_string()
    } else {
        name
    }
}

/// The effective settings of one topic, resolved from its own configs, the
/// broker's and Kafka's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicSettings {
    pub log: LogConfig,
    pub max_message_bytes: usize,
    pub log_append_time: bool,
    pub timestamp_before_max_ms: i64,
    pub timestamp_after_max_ms: i64,
    pub compacted: bool,
    /// `min.insync.replicas`: in-sync replicas an acks=all produce needs.
    pub min_insync_replicas: usize,
    /// `compression.type`: the codec batches are stored in; `None` keeps the producer's.
    pub compression: Option<Compression>,
    /// `compression.{gzip,lz4,zstd}.level`, for batches the broker recompresses.
    pub compression_levels: CompressionLevels,
    /// `producer.id.expiration.ms` (a broker config): how long an idle producer's state is kept.
    pub producer_id_expiration_ms: i64,
    /// `leader.replication.throttled.replicas` (KIP-73).
    pub leader_throttled: ThrottledReplicas,
    /// `follower.replication.throttled.replicas` (KIP-73).
    pub follower_throttled: ThrottledReplicas,
}

impl TopicSettings {
    pub fn resolve(overrides: Option<&BTreeMap<String, String>>, broker_defaults: &BTreeMap<String, String>) -> Self {
        let resolved = resolve_topic_configs(overrides, broker_defaults);
        let get = |n: &str| resolved.iter().find(|c| c.def.name == n).map(|c| c.value.clone()).unwrap_or_default();
        let num = |n: &str, fallback: i64| get(n).trim().parse::<i64>().unwrap_or(fallback);
        let defaults = LogConfig::default();
        let max_message_bytes = num("max.message.bytes", 1_048_588).max(0) as usize;
        let policies = get("cleanup.policy");
        let policy = |p: &str| policies.split(',').any(|x| x.trim() == p);
        let log = LogConfig {
            cleanup_delete: policy("delete"),
            cleanup_compact: policy("compact"),
            delete_retention_ms: num("delete.retention.ms", defaults.delete_retention_ms).max(0),
            min_compaction_lag_ms: num("min.compaction.lag.ms", 0).max(0),
            max_compaction_lag_ms: num("max.compaction.lag.ms", i64::MAX).max(1),
            min_cleanable_dirty_ratio: get("min.cleanable.dirty.ratio")
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|r| (0.0..=1.0).contains(r))
                .unwrap_or(defaults.min_cleanable_dirty_ratio),
            segment_bytes: num("segment.bytes", defaults.segment_bytes as i64).max(1) as u64,
            segment_ms: num("segment.ms", defaults.segment_ms),
            retention_ms: num("retention.ms", defaults.retention_ms),
            retention_bytes: num("retention.bytes", -1),
            // Kafka's "never" is Long.MAX_VALUE; the log's is u64::MAX.
            flush_interval_messages: match num("flush.messages", i64::MAX) {
                i64::MAX => u64::MAX,
                n => n.max(1) as u64,
            },
            flush_interval_ms: num("flush.ms", i64::MAX),
            index_interval_bytes: num("index.interval.bytes", 4096).clamp(0, u32::MAX as i64) as u32,
            segment_index_bytes: num("segment.index.bytes", 10 * 1024 * 1024).clamp(4096, u32::MAX as i64) as u32,
            max_message_bytes: max_message_bytes.min(u32::MAX as usize) as u32,
        };
        // Kafka 3.x's deprecated `message.timestamp.difference.max.ms` bounds both directions
        // where the newer keys are left at their defaults (Kafka's LogConfig does the same).
        let difference = num("message.timestamp.difference.max.ms", i64::MAX);
        let window = |n: &str| match num(n, i64::MAX) {
            i64::MAX => difference,
            v => v,
        };
        Self {
            log,
            max_message_bytes,
            log_append_time: get("message.timestamp.type") == "LogAppendTime",
            timestamp_before_max_ms: window("message.timestamp.before.max.ms"),
            timestamp_after_max_ms: window("message.timestamp.after.max.ms"),
            compacted: policy("compact"),
            min_insync_replicas: num("min.insync.replicas", 1).max(1) as usize,
            producer_id_expiration_ms: broker_defaults
                .get("producer.id.expiration.ms")
                .and_then(|v| v.trim().parse::<i64>().ok())
                .unwrap_or(DEFAULT_PRODUCER_ID_EXPIRATION_MS)
                .max(1),
            compression: match get("compression.type").trim() {
                "uncompressed" => Some(Compression::None),
                "gzip" => Some(Compression::Gzip),
                "snappy" => Some(Compression::Snappy),
                "lz4" => Some(Compression::Lz4),
                "zstd" => Some(Compression::Zstd),
                _ => None,
            },
            compression_levels: CompressionLevels {
                gzip: u32::try_from(num("compression.gzip.level", -1)).ok(),
                lz4: u32::try_from(num("compression.lz4.level", 9)).ok(),
                zstd: i32::try_from(num("compression.zstd.level", 3)).ok(),
            },
            leader_throttled: ThrottledReplicas::parse(&get("leader.replication.throttled.replicas")),
            follower_throttled: ThrottledReplicas::parse(&get("follower.replication.throttled.replicas")),
        }
    }
}

/// A topic's `leader.replication.throttled.replicas` or `follower.replication.throttled.replicas`
/// (KIP-73): the replicas, as (partition, broker), whose replication traffic counts against
/// that side's `*.replication.throttled.rate`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ThrottledReplicas {
    #[default]
    None,
    /// `*`: every replica of the topic.
    All,
    Listed(Vec<(i32, i32)>),
}

impl ThrottledReplicas {
    /// Parses `*` or `partition:broker,...`; pairs that do not parse are ignored (the
    /// controller validated the value).
    pub fn parse(value: &str) -> Self {
        let items: Vec<&str> = value.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
        if items.is_empty() {
            return Self::None;
        }
        if items == ["*"] {
            return Self::All;
        }
        Self::Listed(
            items
                .iter()
                .filter_map(|i| i.split_once(':'))
                .filter_map(|(p, b)| Some((p.trim().parse().ok()?, b.trim().parse().ok()?)))
                .collect(),
        )
    }

    /// Whether the replica of `partition` on `broker` is throttled.
    pub fn contains(&self, partition: i32, broker: i32) -> bool {
        match self {
            Self::None => false,
            Self::All => true,
            Self::Listed(pairs) => pairs.contains(&(partition, broker)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(pairs: &[(&str, &str)]) -> Result<BrokerConfig, ConfigError> {
        BrokerConfig::from_map(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    #[test]
    fn throttled_replica_lists_parse_as_kafka_writes_them() {
        assert_eq!(ThrottledReplicas::parse(""), ThrottledReplicas::None);
        assert!(ThrottledReplicas::parse(" * ").contains(7, 3));
        let listed = ThrottledReplicas::parse("0:1, 0:2,1:3");
        assert!(listed.contains(0, 2) && listed.contains(1, 3));
        assert!(!listed.contains(1, 1) && !ThrottledReplicas::None.contains(0, 1));
        use strata_metadata::config::validate_topic_config as check;
        for ok in ["", "*", "0:1,1:2"] {
            assert!(check("leader.replication.throttled.replicas", ok).is_ok(), "{ok:?}");
        }
        for bad in ["*,0:1", "0", "a:b", "0:1:2"] {
            assert!(check("follower.replication.throttled.replicas", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        assert_eq!(cfg(&[("log.segmnt.bytes", "1")]).unwrap_err(), ConfigError::UnknownKey("log.segmnt.bytes".into()));
        let e = cfg(&[("num.partitions", "zero")]).unwrap_err().to_string();
        assert!(e.contains("num.partitions") && e.contains("zero"), "{e}");
        assert!(cfg(&[("num.partitions", "0")]).is_err());
        assert!(cfg(&[("listeners", "PLAINTEXT://0.0.0.0:x")]).is_err());
    }

    #[test]
    fn defaults_and_fallbacks() {
        let c = cfg(&[]).unwrap();
        assert_eq!(c.listen_addr().unwrap(), ("127.0.0.1".to_string(), 9092));
        assert!(c.auto_create_topics());
        assert!(c.topic_defaults().is_empty());
        // Kafka's default flush.messages (Long.MAX_VALUE) is "never": no append waits on an fsync.
        let defaults = TopicSettings::resolve(None, &c.topic_defaults());
        assert_eq!(defaults.log.flush_interval_messages, u64::MAX);
        assert_eq!(defaults.producer_id_expiration_ms, DEFAULT_PRODUCER_ID_EXPIRATION_MS);
        let c = cfg(&[
            ("log.retention.hours", "1"),
            ("listeners", "PLAINTEXT://0.0.0.0:9093"),
            ("advertised.listeners", "PLAINTEXT://broker1:9093"),
            ("log.flush.interval.messages", "1"),
        ])
        .unwrap();
        assert_eq!(c.topic_defaults()["log.retention.ms"], "3600000");
        assert_eq!(c.advertised().unwrap(), ("broker1".to_string(), 9093));
        let s = TopicSettings::resolve(None, &c.topic_defaults());
        assert_eq!(s.log.retention_ms, 3_600_000);
        assert_eq!(s.log.flush_interval_messages, 1);
        let mut o = BTreeMap::new();
        o.insert("retention.ms".to_string(), "5".to_string());
        assert_eq!(TopicSettings::resolve(Some(&o), &c.topic_defaults()).log.retention_ms, 5);
    }

    #[test]
    fn log_dirs_are_a_comma_separated_list() {
        let c = cfg(&[]).unwrap();
        assert_eq!(c.log_dirs(), vec![PathBuf::from("./data")]);
        assert_eq!(c.metadata_log_dir(), PathBuf::from("./data"));
        let c = cfg(&[("log.dirs", " /a, /b ,,/c")]).unwrap();
        assert_eq!(c.log_dirs(), ["/a", "/b", "/c"].map(PathBuf::from));
        assert_eq!(c.metadata_log_dir(), PathBuf::from("/a"));
        let c = cfg(&[("log.dirs", "/a,/b"), ("metadata.log.dir", "/m")]).unwrap();
        assert_eq!(c.metadata_log_dir(), PathBuf::from("/m"));
        // log.dirs wins over log.dir, which is used alone otherwise.
        let c = cfg(&[("log.dir", "/x,/y")]).unwrap();
        assert_eq!(c.log_dirs(), ["/x", "/y"].map(PathBuf::from));
        let c = cfg(&[("log.dir", "/x"), ("log.dirs", "/z")]).unwrap();
        assert_eq!(c.log_dirs(), [PathBuf::from("/z")]);
        for (value, reason) in [(" , ", "at least one"), ("/a,/b,/a/", "twice"), ("data,./data", "twice")] {
            let e = cfg(&[("log.dirs", value)]).unwrap_err().to_string();
            assert!(e.contains("'log.dirs'") && e.contains(reason), "{value}: {e}");
        }
    }

    #[test]
    fn values_that_would_panic_later_are_refused_naming_the_key() {
        let max = tokio::sync::Semaphore::MAX_PERMITS;
        cfg(&[("queued.max.request.bytes", &max.to_string())]).unwrap();
        let e = cfg(&[("queued.max.request.bytes", "9223372036854775807")]).unwrap_err().to_string();
        assert!(e.contains("'queued.max.request.bytes'") && e.contains(&format!("at most {max}")), "{e}");
    }

    #[test]
    fn listeners_without_a_security_protocol_are_refused() {
        for (value, says) in [
            ("INTERNAL://h:1", "no security protocol is defined for listener INTERNAL"),
            ("PLAINTEXT://a:1,PLAINTEXT://b:2", "listener PLAINTEXT is named twice"),
            ("CONTROLLER://a:1", "no listener for clients"),
            ("BAD NAME://a:1", "bad listener name"),
        ] {
            let e = cfg(&[("listeners", value)]).unwrap_err().to_string();
            assert!(e.contains("'listeners'") && e.contains(says), "{value}: {e}");
        }
        // A controller-only node has no listener for clients; a broker-only one is no voter.
        let voters = ("controller.quorum.voters", "1@h:2,2@h:3");
        let c = cfg(&[("listeners", "CONTROLLER://h:2"), ("process.roles", "controller"), voters]).unwrap();
        assert_eq!(c.controller_listen_addr().unwrap(), Some(("h".to_string(), 2)));
        let e = cfg(&[("process.roles", "broker"), voters]).unwrap_err().to_string();
        assert!(e.contains("node.id 1 is a voter, but process.roles is broker only"), "{e}");
        assert!(cfg(&[("process.roles", "broker"), voters, ("node.id", "4")]).is_ok());
        let c = cfg(&[("listeners", "plaintext://h:1")]).unwrap();
        assert_eq!(c.listen_addr().unwrap(), ("h".to_string(), 1));
        assert_eq!(c.controller_listen_addr().unwrap(), None);
        let c = cfg(&[("listeners", "CONTROLLER://h:2, PLAINTEXT://h:1")]).unwrap();
        assert_eq!(c.listen_addr().unwrap(), ("h".to_string(), 1));
        assert_eq!(c.controller_listen_addr().unwrap(), Some(("h".to_string(), 2)));
    }

    #[test]
    fn a_wildcard_listener_needs_an_advertised_address() {
        for host in ["0.0.0.0", "[::]"] {
            let listener = format!("PLAINTEXT://{host}:9092");
            let e = cfg(&[("listeners", listener.as_str())]).unwrap_err().to_string();
            assert!(
                e.contains("'listeners'") && e.contains("advertised.listeners") && e.contains("nonroutable"),
                "{e}"
            );
            let e = cfg(&[("advertised.listeners", listener.as_str())]).unwrap_err().to_string();
            assert!(e.contains("'advertised.listeners'") && e.contains("nonroutable"), "{e}");
            cfg(&[("listeners", listener.as_str()), ("advertised.listeners", "PLAINTEXT://broker1:9092")]).unwrap();
        }
        // An empty host binds every interface and advertises this machine's name, as in Kafka.
        let c = cfg(&[("listeners", "PLAINTEXT://:9092")]).unwrap();
        assert_eq!(c.listen_addr().unwrap(), ("0.0.0.0".to_string(), 9092));
        let (host, port) = c.advertised().unwrap();
        assert!(!host.is_empty() && host != "0.0.0.0" && port == 9092, "{host}");
    }

    #[test]
    fn non_default_lists_what_differs_from_the_defaults() {
        let c = cfg(&[("num.partitions", "3"), ("log.dirs", "/d"), ("node.id", "1")]).unwrap();
        assert_eq!(c.non_default(), vec![("log.dirs", "/d"), ("num.partitions", "3")]);
    }
}

#[cfg(test)]
mod quorum_tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Result<BrokerConfig, ConfigError> {
        BrokerConfig::from_map(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    #[test]
    fn roles_and_voters_parse_as_kafka_writes_them() {
        assert_eq!(parse_roles("broker, controller"), Ok(vec![Role::Broker, Role::Controller]));
        assert!(parse_roles("broker,broker").is_err());
        assert!(parse_roles("leader").is_err());
        assert!(parse_roles(" ").is_err());
        let v = parse_voters("1@127.0.0.1:9093, 2@[::1]:9093,3@c.example:9093").unwrap();
        assert_eq!(v[1], Voter { id: 2, host: "::1".into(), port: 9093 });
        for bad in ["1@h", "x@h:1", "1@:9", "1@h:1,1@g:2", "", "1@h:99999", "-1@h:1"] {
            assert!(parse_voters(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_controller_must_be_a_voter_and_a_single_role_needs_voters() {
        assert!(config(&[]).is_ok(), "the single-node default");
        assert!(config(&[("process.roles", "broker")]).is_err());
        assert!(config(&[("process.roles", "broker"), ("controller.quorum.voters", "2@h:9093")]).is_ok());
        assert!(config(&[("node.id", "1"), ("controller.quorum.voters", "2@h:9093")]).is_err());
        let c = config(&[("node.id", "2"), ("controller.quorum.voters", "2@h:9093,3@h:9094")]).unwrap();
        assert_eq!(c.quorum_voters().len(), 2);
        assert_eq!(c.process_roles(), vec![Role::Broker, Role::Controller]);
    }
}

#[cfg(test)]
mod doc_tests {
    /// docs/configuration.md must list every key Strata accepts.
    #[test]
    fn configuration_doc_lists_every_key() {
        let doc = include_str!("../../../docs/configuration.md");
        for d in super::BROKER_CONFIGS {
            assert!(doc.contains(&format!("`{}`", d.name)), "docs/configuration.md misses broker key {}", d.name);
        }
        for d in strata_metadata::config::TOPIC_CONFIGS {
            assert!(doc.contains(&format!("`{}`", d.name)), "docs/configuration.md misses topic key {}", d.name);
        }
    }
}
