//! `strata cluster`: brokers (DescribeCluster), the metadata quorum (DescribeQuorum, as
//! kafka-metadata-quorum.sh describe --status/--replication) and log directories
//! (DescribeLogDirs, as kafka-log-dirs.sh --describe).

use kafka_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic;
use kafka_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
use kafka_protocol::messages::{DescribeClusterRequest, DescribeLogDirsRequest, DescribeQuorumRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use serde_json::{json, Value};

use crate::conn::Cluster;
use crate::error::{check, CliError};
use crate::output::{or_dash, Report, Table};
use crate::time_arg::format_time_ms;
use crate::Common;

#[derive(clap::Subcommand, Debug)]
pub enum ClusterCommand {
    /// The cluster id, the active controller and the brokers.
    Describe,
    /// The metadata quorum: leader, epoch, high watermark, and each voter's and observer's
    /// log end offset and lag.
    Quorum,
    /// Log directories of each broker (or --broker): their partitions and sizes.
    LogDirs {
        /// Only this broker. Repeatable.
        #[arg(long, value_name = "ID")]
        broker: Vec<i32>,
        /// Only these topics. Repeatable.
        #[arg(long, value_name = "TOPIC")]
        topic: Vec<String>,
    },
}

pub async fn run(common: &Common, command: ClusterCommand) -> Result<(), CliError> {
    let cluster = Cluster::connect(&common.connect).await?;
    let report = match command {
        ClusterCommand::Describe => describe(&cluster).await?,
        ClusterCommand::Quorum => quorum(&cluster).await?,
        ClusterCommand::LogDirs { broker, topic } => log_dirs(&cluster, &broker, &topic).await?,
    };
    report.print(common.format);
    Ok(())
}

pub(crate) async fn describe(cluster: &Cluster) -> Result<Report, CliError> {
    // v2 lists fenced brokers too, marked (the field does not exist before).
    let version = cluster.version_for::<DescribeClusterRequest>(cluster.bootstrap()).await?;
    let req = DescribeClusterRequest::default().with_include_fenced_brokers(version >= 2);
    let answer = cluster.send(&req).await?;
    check(answer.error_code, || "describing the cluster".to_string(), answer.error_message.as_deref())?;
    let mut brokers = answer.brokers.clone();
    brokers.sort_by_key(|b| b.broker_id.0);
    let mut table = Table::new(&["BROKER", "HOST", "PORT", "RACK", "FENCED", "CONTROLLER"]);
    // A KRaft broker answers DescribeCluster with some broker as "controller" (clients cannot
    // reach controllers); the metadata quorum's leader is the active controller.
    let controller = match quorum(cluster).await {
        Ok(q) => q.json["leader_id"].as_i64().and_then(|l| i32::try_from(l).ok()).unwrap_or(answer.controller_id.0),
        Err(_) => answer.controller_id.0,
    };
    let mut out = Vec::new();
    for b in &brokers {
        let rack = b.rack.as_ref().map(|r| r.to_string());
        table.row(vec![
            b.broker_id.0.to_string(),
            b.host.to_string(),
            b.port.to_string(),
            or_dash(rack.clone()),
            b.is_fenced.to_string(),
            (b.broker_id.0 == controller).to_string(),
        ]);
        out.push(json!({ "id": b.broker_id.0, "host": b.host.to_string(), "port": b.port, "rack": rack, "fenced": b.is_fenced }));
    }
    Ok(Report::new(json!({ "cluster_id": answer.cluster_id.to_string(), "controller_id": controller, "brokers": out }))
        .line(format!("Cluster id: {}", answer.cluster_id))
        .line(format!("Controller: {controller}"))
        .table(table))
}

pub(crate) async fn quorum(cluster: &Cluster) -> Result<Report, CliError> {
    let req = DescribeQuorumRequest::default().with_topics(vec![TopicData::default()
        .with_topic_name(TopicName(StrBytes::from_static_str("__cluster_metadata")))
        .with_partitions(vec![PartitionData::default().with_partition_index(0)])]);
    let answer = cluster.send(&req).await?;
    check(answer.error_code, || "describing the metadata quorum".to_string(), answer.error_message.as_deref())?;
    let p = answer
        .topics
        .first()
        .and_then(|t| t.partitions.first())
        .ok_or_else(|| CliError::Failed("DescribeQuorum answered without the metadata partition".into()))?;
    check(p.error_code, || "describing the metadata quorum".to_string(), p.error_message.as_deref())?;
    let leader_end =
        p.current_voters.iter().find(|v| v.replica_id == p.leader_id).map_or(p.high_watermark, |v| v.log_end_offset);
    let mut table = Table::new(&["NODE", "STATUS", "LOG-END-OFFSET", "LAG", "LAST-FETCH", "LAST-CAUGHT-UP"]);
    let mut replicas = Vec::new();
    let mut max_lag = 0i64;
    for (status, list) in [("Voter", &p.current_voters), ("Observer", &p.observers)] {
        for r in list {
            let lag = (leader_end - r.log_end_offset).max(0);
            if status == "Voter" {
                max_lag = max_lag.max(lag);
            }
            let role = if r.replica_id == p.leader_id {
                "Leader"
            } else if status == "Voter" {
                "Follower"
            } else {
                "Observer"
            };
            let time = |t: i64| (t >= 0).then(|| format_time_ms(t));
            table.row(vec![
                r.replica_id.0.to_string(),
                role.to_string(),
                r.log_end_offset.to_string(),
                lag.to_string(),
                or_dash(time(r.last_fetch_timestamp)),
                or_dash(time(r.last_caught_up_timestamp)),
            ]);
            replicas.push(json!({
                "node_id": r.replica_id.0, "status": role, "log_end_offset": r.log_end_offset, "lag": lag,
                "last_fetch_timestamp": r.last_fetch_timestamp, "last_caught_up_timestamp": r.last_caught_up_timestamp,
            }));
        }
    }
    let voters: Vec<i32> = p.current_voters.iter().map(|v| v.replica_id.0).collect();
    let observers: Vec<i32> = p.observers.iter().map(|v| v.replica_id.0).collect();
    Ok(Report::new(json!({
        "leader_id": p.leader_id.0, "leader_epoch": p.leader_epoch, "high_watermark": p.high_watermark,
        "max_follower_lag": max_lag, "voters": voters, "observers": observers, "replicas": replicas,
    }))
    .line(format!("LeaderId:        {}", p.leader_id.0))
    .line(format!("LeaderEpoch:     {}", p.leader_epoch))
    .line(format!("HighWatermark:   {}", p.high_watermark))
    .line(format!("MaxFollowerLag:  {max_lag}"))
    .line(format!("CurrentVoters:   {voters:?}"))
    .line(format!("CurrentObservers: {observers:?}"))
    .table(table))
}

pub(crate) async fn log_dirs(cluster: &Cluster, brokers: &[i32], topics: &[String]) -> Result<Report, CliError> {
    let ids: Vec<i32> =
        if brokers.is_empty() { cluster.live_brokers().await?.keys().copied().collect() } else { brokers.to_vec() };
    let filter = if topics.is_empty() {
        None
    } else {
        let (_, counts) = crate::offsets::leaders(cluster, topics).await?;
        Some(
            counts
                .into_iter()
                .map(|(t, n)| {
                    DescribableLogDirTopic::default()
                        .with_topic(TopicName(StrBytes::from_string(t)))
                        .with_partitions((0..n).collect())
                })
                .collect(),
        )
    };
    let mut table = Table::new(&["BROKER", "LOG-DIR", "TOPIC", "PARTITION", "SIZE", "OFFSET-LAG"]);
    let mut out = Vec::new();
    for id in ids {
        let answer = cluster.send_to_broker(id, &DescribeLogDirsRequest::default().with_topics(filter.clone())).await?;
        check(answer.error_code, || format!("describing the log dirs of broker {id}"), None)?;
        let mut dirs = Vec::new();
        for d in answer.results {
            let mut parts = Vec::new();
            let mut total = 0i64;
            for t in &d.topics {
                for p in &t.partitions {
                    total += p.partition_size;
                    table.row(vec![
                        id.to_string(),
                        d.log_dir.to_string(),
                        t.name.0.to_string(),
                        p.partition_index.to_string(),
                        p.partition_size.to_string(),
                        p.offset_lag.to_string(),
                    ]);
                    parts.push(json!({ "topic": t.name.0.to_string(), "partition": p.partition_index, "size": p.partition_size, "offset_lag": p.offset_lag, "is_future": p.is_future_key }));
                }
            }
            dirs.push(json!({
                "log_dir": d.log_dir.to_string(), "error": (d.error_code != 0).then(|| crate::conn::error_json(d.error_code, None)),
                "partitions_size": total, "total_bytes": (d.total_bytes >= 0).then_some(d.total_bytes),
                "usable_bytes": (d.usable_bytes >= 0).then_some(d.usable_bytes), "partitions": parts,
            }));
        }
        out.push(json!({ "broker": id, "log_dirs": dirs }));
    }
    Ok(Report::new(Value::Array(out)).table(table))
}
