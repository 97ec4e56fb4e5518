//! `strata topic`: kafka-topics.sh's create, list, describe, alter and delete.

use std::collections::BTreeMap;
use std::time::Duration;

use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{
    CreatableReplicaAssignment, CreatableTopic, CreatableTopicConfig,
};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::{
    BrokerId, CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest, MetadataResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use serde_json::{json, Value};

use crate::configs::{self, parse_pairs, ConfigSource};
use crate::conn::Cluster;
use crate::error::{check, CliError};
use crate::output::{ids, Report, Table};
use crate::Common;

#[derive(clap::Subcommand, Debug)]
pub enum TopicCommand {
    /// Create a topic.
    Create {
        name: String,
        /// Number of partitions (default: the broker's num.partitions).
        #[arg(long)]
        partitions: Option<i32>,
        /// Replicas per partition (default: the broker's default.replication.factor).
        #[arg(long)]
        replication_factor: Option<i16>,
        /// A topic config, NAME=VALUE. Repeatable; a comma-separated list works too.
        #[arg(long = "config", value_name = "NAME=VALUE")]
        config: Vec<String>,
        /// Replicas of each partition, as kafka-topics.sh: `1:2,2:3` (partition 0 on brokers 1
        /// and 2, partition 1 on 2 and 3). Excludes --partitions and --replication-factor.
        #[arg(long, value_name = "B:B,B:B")]
        replica_assignment: Option<String>,
        /// Succeed when the topic exists already.
        #[arg(long)]
        if_not_exists: bool,
        /// Ask the controller to check the request without creating anything.
        #[arg(long)]
        validate_only: bool,
    },
    /// List topics.
    List {
        /// Leave out internal topics.
        #[arg(long)]
        exclude_internal: bool,
    },
    /// Describe topics: partitions, leaders, replicas, ISR and the topic's configs.
    Describe {
        /// Topics to describe (default: all).
        names: Vec<String>,
        /// Only partitions whose ISR is smaller than their replica set.
        #[arg(long)]
        under_replicated_partitions: bool,
        /// Only partitions without a leader.
        #[arg(long)]
        unavailable_partitions: bool,
    },
    /// Change a topic: more partitions, set or delete configs.
    Alter {
        name: String,
        /// The new number of partitions (only grows).
        #[arg(long)]
        partitions: Option<i32>,
        /// Sets a topic config, NAME=VALUE. Repeatable.
        #[arg(long = "config", value_name = "NAME=VALUE")]
        config: Vec<String>,
        /// Removes a topic config (back to the broker's default). Repeatable.
        #[arg(long, value_name = "NAME")]
        delete_config: Vec<String>,
    },
    /// Grow a topic to N partitions (as kafka-topics.sh --alter --partitions N).
    AddPartitions {
        name: String,
        #[arg(long)]
        partitions: i32,
    },
    /// Delete topics and wait until the cluster no longer lists them.
    Delete {
        #[arg(required = true)]
        names: Vec<String>,
        /// Succeed when a topic does not exist.
        #[arg(long)]
        if_exists: bool,
    },
}

pub async fn run(common: &Common, command: TopicCommand) -> Result<(), CliError> {
    // Argument mistakes are found before any connection (exit 2 even when the cluster is down).
    match &command {
        TopicCommand::Create { partitions, replication_factor, replica_assignment: Some(_), .. }
            if partitions.is_some() || replication_factor.is_some() =>
        {
            return Err(CliError::Usage("--replica-assignment excludes --partitions and --replication-factor".into()));
        }
        TopicCommand::Alter { partitions: None, config, delete_config, .. }
            if config.is_empty() && delete_config.is_empty() =>
        {
            return Err(CliError::Usage("topic alter needs --partitions, --config or --delete-config".into()));
        }
        TopicCommand::Create { config, .. } | TopicCommand::Alter { config, .. } => {
            parse_pairs(config)?;
        }
        _ => {}
    }
    let cluster = Cluster::connect(&common.connect).await?;
    let report = match command {
        TopicCommand::Create {
            name,
            partitions,
            replication_factor,
            config,
            replica_assignment,
            if_not_exists,
            validate_only,
        } => {
            create(
                &cluster,
                &name,
                partitions,
                replication_factor,
                &config,
                replica_assignment.as_deref(),
                if_not_exists,
                validate_only,
            )
            .await?
        }
        TopicCommand::List { exclude_internal } => list(&cluster, exclude_internal).await?,
        TopicCommand::Describe { names, under_replicated_partitions, unavailable_partitions } => {
            describe(&cluster, &names, under_replicated_partitions, unavailable_partitions).await?
        }
        TopicCommand::Alter { name, partitions, config, delete_config } => {
            if partitions.is_none() && config.is_empty() && delete_config.is_empty() {
                return Err(CliError::Usage("topic alter needs --partitions, --config or --delete-config".into()));
            }
            let mut done = Vec::new();
            if let Some(n) = partitions {
                add_partitions(&cluster, &name, n).await?;
                done.push(format!("partitions={n}"));
            }
            if !config.is_empty() || !delete_config.is_empty() {
                let set = parse_pairs(&config)?;
                configs::alter(&cluster, configs::TOPIC, &name, &set, &delete_config).await?;
                done.extend(set.iter().map(|(k, v)| format!("{k}={v}")));
                done.extend(delete_config.iter().map(|k| format!("-{k}")));
            }
            Report::new(json!({ "topic": name, "altered": done }))
                .line(format!("Altered topic {name}: {}", done.join(", ")))
        }
        TopicCommand::AddPartitions { name, partitions } => {
            add_partitions(&cluster, &name, partitions).await?;
            Report::new(json!({ "topic": name, "partitions": partitions }))
                .line(format!("Topic {name} now has {partitions} partitions"))
        }
        TopicCommand::Delete { names, if_exists } => delete(&cluster, &names, if_exists).await?,
    };
    report.print(common.format);
    Ok(())
}

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

#[allow(clippy::too_many_arguments)]
async fn create(
    cluster: &Cluster,
    name: &str,
    partitions: Option<i32>,
    replication_factor: Option<i16>,
    config: &[String],
    replica_assignment: Option<&str>,
    if_not_exists: bool,
    validate_only: bool,
) -> Result<Report, CliError> {
    let mut topic = CreatableTopic::default()
        .with_name(topic_name(name))
        .with_num_partitions(partitions.unwrap_or(-1))
        .with_replication_factor(replication_factor.unwrap_or(-1))
        .with_configs(
            parse_pairs(config)?
                .into_iter()
                .map(|(k, v)| {
                    CreatableTopicConfig::default()
                        .with_name(StrBytes::from_string(k))
                        .with_value(Some(StrBytes::from_string(v)))
                })
                .collect(),
        );
    if let Some(assignment) = replica_assignment {
        if partitions.is_some() || replication_factor.is_some() {
            return Err(CliError::Usage("--replica-assignment excludes --partitions and --replication-factor".into()));
        }
        let mut assignments = Vec::new();
        for (i, part) in assignment.split(',').enumerate() {
            let brokers = part
                .split(':')
                .map(|b| b.trim().parse::<i32>().map(BrokerId))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| CliError::Usage(format!("--replica-assignment: '{part}' is not BROKER:BROKER...")))?;
            assignments
                .push(CreatableReplicaAssignment::default().with_partition_index(i as i32).with_broker_ids(brokers));
        }
        topic = topic.with_num_partitions(-1).with_replication_factor(-1).with_assignments(assignments);
    }
    let timeout_ms = i32::try_from(cluster.timeout.as_millis()).unwrap_or(i32::MAX);
    let req = CreateTopicsRequest::default()
        .with_topics(vec![topic])
        .with_timeout_ms(timeout_ms)
        .with_validate_only(validate_only);
    let answer = cluster.send(&req).await?;
    let result =
        answer.topics.first().ok_or_else(|| CliError::Failed("CreateTopics answered without the topic".into()))?;
    if result.error_code == 36 && if_not_exists {
        return Ok(Report::new(json!({ "topic": name, "created": false })).line(format!("Topic {name} exists already")));
    }
    check(result.error_code, || format!("creating topic {name}"), result.error_message.as_deref())?;
    if !validate_only {
        wait_for_leaders(cluster, name, 1).await?;
    }
    let verb = if validate_only { "would be created" } else { "created" };
    Ok(Report::new(json!({
        "topic": name,
        "topic_id": (!result.topic_id.is_nil()).then(|| result.topic_id.to_string()),
        "partitions": result.num_partitions,
        "replication_factor": result.replication_factor,
        "created": !validate_only,
    }))
    .line(format!(
        "Topic {name} {verb}: {} partitions, replication factor {}",
        result.num_partitions, result.replication_factor
    )))
}

/// Waits until the bootstrap broker's metadata shows `name` with at least `partitions`
/// partitions, each with a leader, so that a script can produce right after `topic create` or
/// `add-partitions`.
async fn wait_for_leaders(cluster: &Cluster, name: &str, partitions: usize) -> Result<(), CliError> {
    let deadline = tokio::time::Instant::now() + cluster.timeout;
    loop {
        let md = cluster.metadata(Some(&[name.to_string()])).await?;
        let ready = md.topics.iter().any(|t| {
            t.error_code == 0
                && t.partitions.len() >= partitions.max(1)
                && t.partitions.iter().all(|p| p.leader_id.0 >= 0)
        });
        if ready {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(CliError::Failed(format!(
                "topic {name} was created but has no leaders after {:?}",
                cluster.timeout
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(crate) async fn list(cluster: &Cluster, exclude_internal: bool) -> Result<Report, CliError> {
    let md = cluster.metadata(None).await?;
    let mut topics: Vec<_> = md
        .topics
        .iter()
        .filter(|t| t.error_code == 0 && !(exclude_internal && t.is_internal))
        .filter_map(|t| t.name.as_ref().map(|n| (n.0.to_string(), t)))
        .collect();
    topics.sort_by(|a, b| a.0.cmp(&b.0));
    let mut table = Table::new(&["TOPIC", "PARTITIONS", "REPLICATION-FACTOR", "INTERNAL"]);
    let mut out = Vec::new();
    for (name, t) in &topics {
        let rf = t.partitions.iter().map(|p| p.replica_nodes.len()).max().unwrap_or(0);
        table.row(vec![name.clone(), t.partitions.len().to_string(), rf.to_string(), t.is_internal.to_string()]);
        out.push(json!({ "name": name, "topic_id": t.topic_id.to_string(), "partitions": t.partitions.len(), "replication_factor": rf, "internal": t.is_internal }));
    }
    Ok(Report::new(Value::Array(out)).table(table))
}

/// The topics `names` (all when empty) from Metadata, sorted; an unknown name is an error.
pub async fn topics_metadata(cluster: &Cluster, names: &[String]) -> Result<MetadataResponse, CliError> {
    let md = cluster.metadata(if names.is_empty() { None } else { Some(names) }).await?;
    for t in &md.topics {
        let name = t.name.as_ref().map_or_else(String::new, |n| n.0.to_string());
        check(t.error_code, || format!("looking up topic {name}"), None)?;
    }
    Ok(md)
}

pub(crate) async fn describe(
    cluster: &Cluster,
    names: &[String],
    under_replicated: bool,
    unavailable: bool,
) -> Result<Report, CliError> {
    let mut md = topics_metadata(cluster, names).await?;
    md.topics.sort_by(|a, b| a.name.cmp(&b.name));
    let topic_names: Vec<String> = md.topics.iter().filter_map(|t| t.name.as_ref().map(|n| n.0.to_string())).collect();
    let mut dynamic: BTreeMap<String, BTreeMap<String, Option<String>>> = BTreeMap::new();
    for (name, entries) in configs::describe(cluster, configs::TOPIC, &topic_names, false).await? {
        let set = entries
            .into_iter()
            .filter(|e| e.source == ConfigSource::DynamicTopic)
            .map(|e| (e.name, if e.sensitive { None } else { e.value }))
            .collect();
        dynamic.insert(name, set);
    }
    let mut report = Report::new(Value::Null);
    let mut out = Vec::new();
    let filtered = under_replicated || unavailable;
    let mut parts = Table::new(&["TOPIC", "PARTITION", "LEADER", "LEADER-EPOCH", "REPLICAS", "ISR", "OFFLINE"]);
    let mut summary = Table::new(&["TOPIC", "TOPIC-ID", "PARTITIONS", "REPLICATION-FACTOR", "CONFIGS"]);
    for t in &md.topics {
        let Some(name) = t.name.as_ref().map(|n| n.0.to_string()) else { continue };
        let mut partitions = t.partitions.clone();
        partitions.sort_by_key(|p| p.partition_index);
        let rf = partitions.iter().map(|p| p.replica_nodes.len()).max().unwrap_or(0);
        let configs = dynamic.remove(&name).unwrap_or_default();
        let config_text: Vec<String> =
            configs.iter().map(|(k, v)| format!("{k}={}", v.as_deref().unwrap_or("[hidden]"))).collect();
        let mut pjson = Vec::new();
        for p in &partitions {
            let replicas: Vec<i32> = p.replica_nodes.iter().map(|b| b.0).collect();
            let isr: Vec<i32> = p.isr_nodes.iter().map(|b| b.0).collect();
            let offline: Vec<i32> = p.offline_replicas.iter().map(|b| b.0).collect();
            let keep =
                !filtered || (under_replicated && isr.len() < replicas.len()) || (unavailable && p.leader_id.0 < 0);
            if !keep {
                continue;
            }
            parts.row(vec![
                name.clone(),
                p.partition_index.to_string(),
                if p.leader_id.0 < 0 { "none".into() } else { p.leader_id.0.to_string() },
                p.leader_epoch.to_string(),
                ids(&replicas),
                ids(&isr),
                ids(&offline),
            ]);
            pjson.push(json!({
                "partition": p.partition_index,
                "leader": (p.leader_id.0 >= 0).then_some(p.leader_id.0),
                "leader_epoch": p.leader_epoch,
                "replicas": replicas,
                "isr": isr,
                "offline_replicas": offline,
            }));
        }
        if filtered && pjson.is_empty() {
            continue;
        }
        summary.row(vec![
            name.clone(),
            t.topic_id.to_string(),
            partitions.len().to_string(),
            rf.to_string(),
            config_text.join(","),
        ]);
        out.push(json!({
            "name": name,
            "topic_id": t.topic_id.to_string(),
            "internal": t.is_internal,
            "partition_count": partitions.len(),
            "replication_factor": rf,
            "configs": configs,
            "partitions": pjson,
        }));
    }
    report.json = Value::Array(out);
    Ok(report.table(summary).table(parts))
}

async fn add_partitions(cluster: &Cluster, name: &str, count: i32) -> Result<(), CliError> {
    let timeout_ms = i32::try_from(cluster.timeout.as_millis()).unwrap_or(i32::MAX);
    let req = CreatePartitionsRequest::default()
        // No assignments (None, not an empty list): the controller places the new partitions.
        .with_topics(vec![CreatePartitionsTopic::default()
            .with_name(topic_name(name))
            .with_count(count)
            .with_assignments(None)])
        .with_timeout_ms(timeout_ms);
    let answer = cluster.send(&req).await?;
    for r in &answer.results {
        check(r.error_code, || format!("growing topic {name} to {count} partitions"), r.error_message.as_deref())?;
    }
    wait_for_leaders(cluster, name, usize::try_from(count).unwrap_or(0)).await
}

async fn delete(cluster: &Cluster, names: &[String], if_exists: bool) -> Result<Report, CliError> {
    let timeout_ms = i32::try_from(cluster.timeout.as_millis()).unwrap_or(i32::MAX);
    let req = DeleteTopicsRequest::default()
        .with_topics(names.iter().map(|n| DeleteTopicState::default().with_name(Some(topic_name(n)))).collect())
        .with_timeout_ms(timeout_ms);
    let answer = cluster.send(&req).await?;
    let mut deleted = Vec::new();
    let mut missing = Vec::new();
    for r in &answer.responses {
        let name = r.name.as_ref().map_or_else(String::new, |n| n.0.to_string());
        if r.error_code == 3 && if_exists {
            missing.push(name);
            continue;
        }
        check(r.error_code, || format!("deleting topic {name}"), r.error_message.as_deref())?;
        deleted.push(name);
    }
    // Wait until the bootstrap broker no longer lists them (a re-create right after works).
    let deadline = tokio::time::Instant::now() + cluster.timeout;
    loop {
        let md = cluster.metadata(Some(&deleted)).await?;
        if md.topics.iter().all(|t| t.error_code == 3) {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(CliError::Failed(format!("topics {deleted:?} are still listed after {:?}", cluster.timeout)));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut report = Report::new(json!({ "deleted": deleted, "missing": missing }));
    for n in &deleted {
        report = report.line(format!("Deleted topic {n}"));
    }
    for n in &missing {
        report = report.line(format!("Topic {n} does not exist"));
    }
    Ok(report)
}
