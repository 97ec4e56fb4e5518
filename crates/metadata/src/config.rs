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
}

/// Where a resolved value came from (Kafka's `ConfigSource` numbering).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigSource {
    TopicConfig = 1,
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
    /// Allowed values for string/list types (empty: anything).
    pub choices: &'static [&'static str],
    pub doc: &'static str,
}

macro_rules! def {
    ($name:literal, $ty:ident, $default:expr, $syn:expr, $min:expr, $choices:expr, $doc:literal) => {
        TopicConfigDef {
            name: $name,
            ty: ConfigType::$ty,
            default: $default,
            broker_synonym: $syn,
            min: $min,
            choices: $choices,
            doc: $doc,
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
        "compression.type",
        String,
        "producer",
        Some("compression.type"),
        None,
        &["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"],
        "Codec for stored batches; 'producer' keeps the producer's."
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
        "index.interval.bytes",
        Int,
        "4096",
        Some("log.index.interval.bytes"),
        Some(0),
        &[],
        "Bytes between offset index entries."
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
        ConfigType::String => {
            if !def.choices.is_empty() && !def.choices.contains(&value.trim()) {
                return bad(&format!("must be one of {}", def.choices.join(", ")));
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

/// One config of a topic with its effective value and origin.
#[derive(Debug, Clone)]
pub struct ResolvedConfig {
    pub def: &'static TopicConfigDef,
    pub value: String,
    pub source: ConfigSource,
}

/// The effective value of every topic config: the topic's own setting, else the
/// broker's static setting of the synonym, else Kafka's default.
pub fn resolve_topic_configs(
    overrides: Option<&BTreeMap<String, String>>,
    broker_static: &BTreeMap<String, String>,
) -> Vec<ResolvedConfig> {
    TOPIC_CONFIGS
        .iter()
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
