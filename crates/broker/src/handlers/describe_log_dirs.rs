//! DescribeLogDirs (key 35, KIP-113; v4 adds the volume's total and usable bytes, KIP-827):
//! every data directory of this broker with the partitions it holds and their sizes, as
//! `kafka-log-dirs.sh --describe` and `Admin.describeLogDirs` read them.
//!
//! `topics` null asks for every partition; a list narrows the answer to those partitions (a
//! directory holding none of them is still listed). `offset_lag` is 0: every replica here is
//! its partition's only one, and so its leader. No partition is a future replica (no
//! reassignment between directories yet).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use strata_protocol::kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use strata_protocol::kafka_protocol::messages::{DescribeLogDirsRequest, DescribeLogDirsResponse, TopicName};
use strata_protocol::kafka_protocol::protocol::StrBytes;
use strata_protocol::ResponseError;

use crate::Broker;

pub fn handle(broker: &Arc<Broker>, request: DescribeLogDirsRequest) -> DescribeLogDirsResponse {
    let wanted = |topic: &str, index: i32| match &request.topics {
        None => true,
        Some(ts) => ts.iter().any(|t| t.topic.as_str() == topic && t.partitions.contains(&index)),
    };
    let dirs = broker.replicas.log_dirs();
    // dir index -> topic -> partitions
    let mut held: Vec<BTreeMap<String, Vec<DescribeLogDirsPartition>>> = vec![BTreeMap::new(); dirs.len()];
    for p in broker.replicas.all_partitions() {
        if !wanted(&p.topic, p.index) {
            continue;
        }
        let Some(dir) = broker.replicas.log_dir_of(&p.topic, p.index) else { continue };
        let Some(topics) = held.get_mut(dir) else { continue };
        topics.entry(p.topic.clone()).or_default().push(
            DescribeLogDirsPartition::default()
                .with_partition_index(p.index)
                .with_partition_size(i64::try_from(p.size_bytes()).unwrap_or(i64::MAX))
                .with_offset_lag(0)
                .with_is_future_key(false),
        );
    }
    let results = dirs
        .iter()
        .zip(held)
        .map(|(dir, topics)| {
            let topics = topics
                .into_iter()
                .map(|(name, mut partitions)| {
                    partitions.sort_by_key(|p| p.partition_index);
                    DescribeLogDirsTopic::default()
                        .with_name(TopicName(StrBytes::from_string(name)))
                        .with_partitions(partitions)
                })
                .collect();
            let (total, usable, error) = match volume_bytes(dir) {
                Some((t, u)) => (t, u, 0),
                // A directory that cannot be examined is reported as Kafka reports an offline one.
                None => (-1, -1, ResponseError::KafkaStorageError.code()),
            };
            DescribeLogDirsResult::default()
                .with_error_code(error)
                .with_log_dir(StrBytes::from_string(dir.display().to_string()))
                .with_topics(topics)
                .with_total_bytes(total)
                .with_usable_bytes(usable)
        })
        .collect();
    DescribeLogDirsResponse::default().with_results(results)
}

/// The size of the volume holding `dir` and the bytes an unprivileged writer may still use.
fn volume_bytes(dir: &Path) -> Option<(i64, i64)> {
    let st = rustix::fs::statvfs(dir).ok()?;
    let block = st.f_frsize.max(1);
    let total = i64::try_from(st.f_blocks.saturating_mul(block)).unwrap_or(i64::MAX);
    let usable = i64::try_from(st.f_bavail.saturating_mul(block)).unwrap_or(i64::MAX);
    Some((total, usable))
}
