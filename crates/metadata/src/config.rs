//! Topic config keys: names, types, defaults, the broker setting each falls
//! back to, and validation. Names and defaults are Apache Kafka's, so that
//! admin tools and operators see what they expect.

use std::collections::BTreeMap;

/// The type of a config value, as DescribeConfigs v3+ reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigType {
    Boolean = 1,
    String = 2,
    Int = 3,
    Long = 5,
    Double = 6,
    List = 7,
    Password = 9,
}

/// Where a resolved value came from (Kafka's `ConfigSource` numbering).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigSource {
    TopicConfig = 1,
    DynamicBrokerConfig = 2,
    DynamicDefaultBrokerConfig = 3,
    StaticBrokerConfig = 4,
    DefaultConfig = 5,
}

/// One topic config key.
#[derive(Debug, Clone, Copy)]
pub struct TopicConfigDef {
    pub name: &'static str,
    pub ty: ConfigType,
    pub default: &'static str,
    /// The broker-wide setting that provides the default, if any.
    pub broker_synonym: Option<&'static str>,
    /// Smallest allowed value for numeric types.
    pub min: Option<i64>,
    /// Largest allowed value for numeric types.
    pub max: Option<i64>,
    /// Allowed values for string/list types (empty: anything).
    pub choices: &'static [&'static str],
    pub doc: &'static str,
    /// Kafka 3.x keys that Kafka 4 removed: accepted (tools written for 3.x set them), with a
    /// log line saying what becomes of them, and only described when set.
    pub deprecated: Option<&'static str>,
}

macro_rules! def {
    ($name:literal, $ty:ident, $default:expr, $syn:expr, $min:expr, $choices:expr, $doc:literal) => {
        def!($name, $ty, $default, $syn, $min, None, $choices, None, $doc)
    };
    ($name:literal, $ty:ident, $default:expr, $syn:expr, $min:expr, $max:expr, $choices:expr, $deprecated:expr, $doc:literal) => {
        TopicConfigDef {
            name: $name,
            ty: ConfigType::$ty,
            default: $default,
            broker_synonym: $syn,
            min: $min,
            max: $max,
            choices: $choices,
            doc: $doc,
            deprecated: $deprecated,
        }
    };
}

/// Every topic config Strata accepts, in name order.
pub const TOPIC_CONFIGS: &[TopicConfigDef] = &[
    def!(
        "cleanup.policy",
        List,
        "delete",
        Some("log.cleanup.policy"),
        None,
        &["delete", "compact"],
        "Retention policy: delete old segments, or compact by key."
    ),
    def!(
        "compression.gzip.level",
        Int,
        "-1",
        Some("compression.gzip.level"),
        Some(-1),
        Some(9),
        &[],
        None,
        "Gzip level (1-9, -1: the codec's default, 6) of batches the broker compresses (KIP-390)."
    ),
    def!(
        "compression.lz4.level",
        Int,
        "9",
        Some("compression.lz4.level"),
        Some(1),
        Some(17),
        &[],
        None,
        "LZ4 level (1-17) of batches the broker compresses (KIP-390)."
    ),
    def!(
        "compression.type",
        String,
        "producer",
        Some("compression.type"),
        None,
        &["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"],
        "Codec for stored batches; 'producer' keeps the producer's, any other value makes the broker recompress batches that arrive in another codec."
    ),
    def!(
        "compression.zstd.level",
        Int,
        "3",
        Some("compression.zstd.level"),
        Some(-131072),
        Some(22),
        &[],
        None,
        "Zstandard level (-131072 to 22) of batches the broker compresses (KIP-390)."
    ),
    def!(
        "delete.retention.ms",
        Long,
        "86400000",
        Some("log.cleaner.delete.retention.ms"),
        Some(0),
        &[],
        "How long delete tombstones are kept on compacted topics."
    ),
    def!(
        "file.delete.delay.ms",
        Long,
        "60000",
        Some("log.segment.delete.delay.ms"),
        Some(0),
        &[],
        "Delay before a deleted segment's file is removed."
    ),
    def!(
        "flush.messages",
        Long,
        "9223372036854775807",
        Some("log.flush.interval.messages"),
        Some(1),
        &[],
        "Fsync after this many messages."
    ),
    def!(
        "flush.ms",
        Long,
        "9223372036854775807",
        Some("log.flush.interval.ms"),
        Some(0),
        &[],
        "Fsync when the oldest unflushed message is this old."
    ),
    def!(
        "follower.replication.throttled.replicas",
        List,
        "",
        None,
        None,
        &[],
        "Replicas whose fetching is throttled on the follower side (KIP-73): * or partition:broker pairs."
    ),
    def!(
        "index.interval.bytes",
        Int,
        "4096",
        Some("log.index.interval.bytes"),
        Some(0),
        &[],
        "Bytes between offset index entries."
    ),
    def!(
        "leader.replication.throttled.replicas",
        List,
        "",
        None,
        None,
        &[],
        "Replicas whose replication is throttled on the leader side (KIP-73): * or partition:broker pairs."
    ),
    def!(
        "max.compaction.lag.ms",
        Long,
        "9223372036854775807",
        Some("log.cleaner.max.compaction.lag.ms"),
        Some(1),
        &[],
        "Longest a message stays uncompacted."
    ),
    def!(
        "max.message.bytes",
        Int,
        "1048588",
        Some("message.max.bytes"),
        Some(0),
        &[],
        "Largest record batch accepted."
    ),
    def!(
        "message.downconversion.enable",
        Boolean,
        "true",
        None,
        None,
        None,
        &[],
        Some("accepted and ignored: Strata stores and serves only RecordBatch v2 and never down-converts (Kafka 4 removed the key)"),
        "Kafka 3.x: down-convert for old consumers. Accepted and ignored."
    ),
    def!(
        "message.format.version",
        String,
        "3.0-IV1",
        None,
        None,
        None,
        &[],
        Some("accepted and ignored: Strata always stores RecordBatch v2, as Kafka 3.0+ does (Kafka 4 removed the key)"),
        "Kafka 3.x: message format of stored batches. Accepted and ignored."
    ),
    def!(
        "message.timestamp.after.max.ms",
        Long,
        "9223372036854775807",
        Some("log.message.timestamp.after.max.ms"),
        Some(0),
        &[],
        "How far in the future a CreateTime timestamp may be."
    ),
    def!(
        "message.timestamp.before.max.ms",
        Long,
        "9223372036854775807",
        Some("log.message.timestamp.before.max.ms"),
        Some(0),
        &[],
        "How far in the past a CreateTime timestamp may be."
    ),
    def!(
        "message.timestamp.difference.max.ms",
        Long,
        "9223372036854775807",
        None,
        Some(0),
        None,
        &[],
        Some("deprecated (Kafka 4 removed it): it bounds CreateTime timestamps in both directions where message.timestamp.before.max.ms and message.timestamp.after.max.ms are not set"),
        "Kafka 3.x: largest difference between a CreateTime timestamp and the broker's clock; the before/after keys win."
    ),
    def!(
        "message.timestamp.type",
        String,
        "CreateTime",
        Some("log.message.timestamp.type"),
        None,
        &["CreateTime", "LogAppendTime"],
        "Whether record timestamps are the producer's or the broker's."
    ),
    def!(
        "min.cleanable.dirty.ratio",
        Double,
        "0.5",
        Some("log.cleaner.min.cleanable.ratio"),
        None,
        &[],
        "Dirty ratio that triggers compaction."
    ),
    def!(
        "min.compaction.lag.ms",
        Long,
        "0",
        Some("log.cleaner.min.compaction.lag.ms"),
        Some(0),
        &[],
        "Shortest a message stays uncompacted."
    ),
    def!(
        "min.insync.replicas",
        Int,
        "1",
        Some("min.insync.replicas"),
        Some(1),
        &[],
        "Replicas that must acknowledge an acks=all write."
    ),
    def!("preallocate", Boolean, "false", Some("log.preallocate"), None, &[], "Preallocate segment files."),
    def!(
        "retention.bytes",
        Long,
        "-1",
        Some("log.retention.bytes"),
        Some(-1),
        &[],
        "Largest a partition grows before old segments are deleted (-1: no limit)."
    ),
    def!(
        "retention.ms",
        Long,
        "604800000",
        Some("log.retention.ms"),
        Some(-1),
        &[],
        "How long segments are kept (-1: forever)."
    ),
    def!(
        "segment.bytes",
        Int,
        "1073741824",
        Some("log.segment.bytes"),
        Some(1024),
        &[],
        "Segment file size at which a new segment is rolled."
    ),
    def!(
        "segment.index.bytes",
        Int,
        "10485760",
        Some("log.index.size.max.bytes"),
        Some(4096),
        &[],
        "Size of a segment's offset index."
    ),
    def!(
        "segment.jitter.ms",
        Long,
        "0",
        Some("log.roll.jitter.ms"),
        Some(0),
        &[],
        "Random jitter subtracted from segment.ms."
    ),
    def!("segment.ms", Long, "604800000", Some("log.roll.ms"), Some(1), &[], "Age at which a segment is rolled."),
    def!(
        "unclean.leader.election.enable",
        Boolean,
        "false",
        Some("unclean.leader.election.enable"),
        None,
        &[],
        "Allow an out-of-sync replica to become leader."
    ),
];

/// The broker configs that can be set at run time (Kafka's `DynamicConfig.Broker`, the part
/// Strata applies): on one broker (`ConfigResource::Broker(id)`) or as the cluster default
/// (`ConfigResource::Broker(-1)`, Kafka's empty broker name), the broker's own value first.
pub const DYNAMIC_BROKER_CONFIGS: &[&str] =
    &["follower.replication.throttled.rate", "leader.replication.throttled.rate"];

/// Checks a value of a dynamic broker config (a rate in bytes per second, at least 0).
pub fn validate_dynamic_broker_config(name: &str, value: &str) -> Result<(), String> {
    if !DYNAMIC_BROKER_CONFIGS.contains(&name) {
        return Err(format!("{name} cannot be updated dynamically"));
    }
    match value.trim().parse::<i64>() {
        Ok(n) if n >= 0 => Ok(()),
        _ => Err(format!(
            "Invalid value {value} for configuration {name}: must be a number of bytes per second, at least 0"
        )),
    }
}

/// The definition of a topic config key.
pub fn topic_config(name: &str) -> Option<&'static TopicConfigDef> {
    TOPIC_CONFIGS.iter().find(|d| d.name == name)
}

/// Checks a value for a topic config key; the error says what is wrong.
pub fn validate_topic_config(name: &str, value: &str) -> Result<(), String> {
    let def = topic_config(name).ok_or_else(|| format!("Unknown topic config name: {name}"))?;
    let bad = |why: &str| Err(format!("Invalid value {value} for configuration {name}: {why}"));
    match def.ty {
        ConfigType::Int | ConfigType::Long => {
            let parsed = if def.ty == ConfigType::Int {
                value.trim().parse::<i32>().map(i64::from).ok()
            } else {
                value.trim().parse::<i64>().ok()
            };
            let Some(n) = parsed else {
                return bad("not a number of the right size");
            };
            if let Some(min) = def.min {
                if n < min {
                    return bad(&format!("must be at least {min}"));
                }
            }
            if let Some(max) = def.max {
                if n > max {
                    return bad(&format!("must be at most {max}"));
                }
            }
            // Kafka's GzipCompression level validator: Deflater's levels, 0 excluded.
            if name == "compression.gzip.level" && n == 0 {
                return bad("must be -1 (the codec's default) or 1 to 9");
            }
        }
        ConfigType::Double => {
            if !value.trim().parse::<f64>().is_ok_and(|v| (0.0..=1.0).contains(&v)) {
                return bad("must be a number between 0 and 1");
            }
        }
        ConfigType::Boolean => {
            if !matches!(value.trim().to_ascii_lowercase().as_str(), "true" | "false") {
                return bad("must be true or false");
            }
        }
        ConfigType::String | ConfigType::Password => {
            if !def.choices.is_empty() && !def.choices.contains(&value.trim()) {
                return bad(&format!("must be one of {}", def.choices.join(", ")));
            }
            if name == "message.format.version" && !is_version_string(value.trim()) {
                return bad("must be a Kafka version such as 2.8 or 3.0-IV1");
            }
        }
        ConfigType::List if name.ends_with(".replication.throttled.replicas") => {
            // Kafka's ThrottledReplicaListValidator: empty, `*`, or partition:broker pairs.
            let items: Vec<&str> = value.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
            let pair = |i: &str| {
                i.split_once(':')
                    .is_some_and(|(p, b)| p.trim().parse::<u32>().is_ok() && b.trim().parse::<u32>().is_ok())
            };
            if !(items == ["*"] || items.iter().all(|i| pair(i))) {
                return bad("must be * or a list of partition:broker pairs");
            }
        }
        ConfigType::List => {
            let items: Vec<&str> = value.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
            if items.is_empty() || items.iter().any(|i| !def.choices.contains(i)) {
                return bad(&format!("must be a list of {}", def.choices.join(", ")));
            }
        }
    }
    Ok(())
}

/// A Kafka release or metadata version as `message.format.version` takes it: `0.10.0`,
/// `0.10.0.1`, `2.8`, `3.0-IV1`.
fn is_version_string(v: &str) -> bool {
    let (release, iv) = match v.split_once("-IV") {
        Some((r, iv)) => (r, Some(iv)),
        None => (v, None),
    };
    let parts: Vec<&str> = release.split('.').collect();
    (2..=4).contains(&parts.len())
        && parts.iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        && iv.is_none_or(|iv| !iv.is_empty() && iv.bytes().all(|b| b.is_ascii_digit()))
}

/// One config of a topic with its effective value and origin.
#[derive(Debug, Clone)]
pub struct ResolvedConfig {
    pub def: &'static TopicConfigDef,
    pub value: String,
    pub source: ConfigSource,
}

/// The effective value of every topic config: the topic's own setting, else the
/// broker's static setting of the synonym, else Kafka's default.
///
/// Deprecated keys ([`TopicConfigDef::deprecated`]) are listed only when the topic sets them.
pub fn resolve_topic_configs(
    overrides: Option<&BTreeMap<String, String>>,
    broker_static: &BTreeMap<String, String>,
) -> Vec<ResolvedConfig> {
    TOPIC_CONFIGS
        .iter()
        .filter(|def| def.deprecated.is_none() || overrides.is_some_and(|o| o.contains_key(def.name)))
        .map(|def| {
            if let Some(v) = overrides.and_then(|o| o.get(def.name)) {
                ResolvedConfig { def, value: v.clone(), source: ConfigSource::TopicConfig }
            } else if let Some(v) = def.broker_synonym.and_then(|s| broker_static.get(s)) {
                ResolvedConfig { def, value: v.clone(), source: ConfigSource::StaticBrokerConfig }
            } else {
                ResolvedConfig { def, value: def.default.to_string(), source: ConfigSource::DefaultConfig }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_problem() {
        assert!(validate_topic_config("retention.ms", "-1").is_ok());
        assert!(validate_topic_config("retention.ms", "-2").unwrap_err().contains("at least -1"));
        assert!(validate_topic_config("segment.bytes", "99999999999").is_err());
        assert!(validate_topic_config("cleanup.policy", "compact,delete").is_ok());
        assert!(validate_topic_config("cleanup.policy", "forever").is_err());
        assert!(validate_topic_config("no.such", "1").unwrap_err().contains("Unknown"));
        assert!(validate_topic_config("message.timestamp.type", "LogAppendTime").is_ok());
        assert!(validate_topic_config("compression.gzip.level", "0").is_err(), "Deflater has no level 0 in Kafka");
        assert!(validate_topic_config("compression.gzip.level", "-1").is_ok());
        assert!(validate_topic_config("compression.zstd.level", "23").is_err());
        assert!(validate_topic_config("message.format.version", "0.10.0").is_ok());
        assert!(validate_topic_config("message.format.version", "yesterday").is_err());
    }

    #[test]
    fn resolution_prefers_topic_then_broker_then_default() {
        let mut o = BTreeMap::new();
        o.insert("retention.ms".to_string(), "1".to_string());
        let mut b = BTreeMap::new();
        b.insert("log.segment.bytes".to_string(), "2048".to_string());
        let r = resolve_topic_configs(Some(&o), &b);
        let get = |n: &str| r.iter().find(|c| c.def.name == n).unwrap().clone();
        assert_eq!((get("retention.ms").value.as_str(), get("retention.ms").source), ("1", ConfigSource::TopicConfig));
        assert_eq!(get("segment.bytes").source, ConfigSource::StaticBrokerConfig);
        assert_eq!(get("cleanup.policy").source, ConfigSource::DefaultConfig);
        assert!(TOPIC_CONFIGS.windows(2).all(|w| w[0].name < w[1].name));
        for d in TOPIC_CONFIGS {
            assert!(validate_topic_config(d.name, d.default).is_ok(), "{}", d.name);
        }
    }
}
