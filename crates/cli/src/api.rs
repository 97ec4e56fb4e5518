//! The admin commands' findings as JSON values (the documents `--format json` prints), for
//! programs that embed the client: the broker's web console reads the cluster through these,
//! over the Kafka protocol, as any admin client would.

use serde_json::Value;

use crate::conn::Cluster;
use crate::error::CliError;
pub use crate::records::{BrowseFrom, BytesFormat};

/// `strata cluster describe`: cluster id, controller id, brokers (id, host, port, rack, fenced).
pub async fn cluster(c: &Cluster) -> Result<Value, CliError> {
    Ok(crate::cluster::describe(c).await?.json)
}

/// `strata cluster quorum`: leader, epoch, high watermark, voters and observers with lag.
pub async fn quorum(c: &Cluster) -> Result<Value, CliError> {
    Ok(crate::cluster::quorum(c).await?.json)
}

/// `strata cluster log-dirs`: per broker, its log dirs and partition sizes.
pub async fn log_dirs(c: &Cluster) -> Result<Value, CliError> {
    Ok(crate::cluster::log_dirs(c, &[], &[]).await?.json)
}

/// `strata topic list`: name, topic id, partitions, replication factor, internal.
pub async fn topics(c: &Cluster) -> Result<Value, CliError> {
    Ok(crate::topic::list(c, false).await?.json)
}

/// `strata topic describe NAME`: the topic's partitions (leader, replicas, ISR) and configs.
pub async fn topic(c: &Cluster, name: &str) -> Result<Value, CliError> {
    let json = crate::topic::describe(c, &[name.to_string()], false, false).await?.json;
    Ok(json.as_array().and_then(|a| a.first()).cloned().unwrap_or(Value::Null))
}

/// `strata topic describe` of every topic, in one Metadata and one DescribeConfigs request:
/// the documents [`topic`] gives, one per topic.
pub async fn all_topics(c: &Cluster) -> Result<Vec<Value>, CliError> {
    let json = crate::topic::describe(c, &[], false, false).await?.json;
    Ok(json.as_array().cloned().unwrap_or_default())
}

/// `strata group list`: group, state, type, protocol type.
pub async fn groups(c: &Cluster) -> Result<Value, CliError> {
    Ok(crate::group::list(c).await?.json)
}

/// `strata group describe NAME`: state, members, and per partition the committed offset,
/// log-end offset and lag.
pub async fn group(c: &Cluster, name: &str) -> Result<Value, CliError> {
    Ok(crate::group::describe(c, name, true, true).await?.0)
}

/// Up to `limit` records of a partition (see [`crate::records::browse`]).
pub async fn messages(
    c: &Cluster,
    topic: &str,
    partition: i32,
    from: BrowseFrom,
    limit: usize,
    format: BytesFormat,
) -> Result<Vec<Value>, CliError> {
    crate::records::browse(c, topic, partition, from, limit, format).await
}
