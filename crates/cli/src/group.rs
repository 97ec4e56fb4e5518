//! `strata group`: kafka-consumer-groups.sh's list, describe (offsets, lag and members),
//! reset-offsets, delete and delete-offsets.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Buf;
use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
use kafka_protocol::messages::offset_delete_request::{OffsetDeleteRequestPartition, OffsetDeleteRequestTopic};
use kafka_protocol::messages::{
    ConsumerGroupDescribeRequest, ConsumerProtocolAssignment, DeleteGroupsRequest, DescribeGroupsRequest, GroupId,
    ListGroupsRequest, OffsetCommitRequest, OffsetDeleteRequest, OffsetFetchRequest, TopicName,
};
use kafka_protocol::protocol::{Decodable, StrBytes};
use serde_json::{json, Value};

use crate::conn::Cluster;
use crate::error::{check, CliError};
use crate::offsets::{list_offsets, Tp, EARLIEST, LATEST};
use crate::output::{or_dash, Report, Table};
use crate::time_arg::parse_time_ms;
use crate::Common;

#[derive(clap::Subcommand, Debug)]
pub enum GroupCommand {
    /// List the groups of every broker.
    List,
    /// Committed offsets, log-end offsets and lag per partition, with the member that owns
    /// each partition; --members and --state add the members and the group's state.
    Describe {
        #[arg(required = true)]
        groups: Vec<String>,
        /// Also list the members and their assignments.
        #[arg(long)]
        members: bool,
        /// Also show the group's state, protocol and coordinator.
        #[arg(long)]
        state: bool,
    },
    /// Move an inactive group's committed offsets; prints the plan, and commits it only with
    /// --execute.
    ResetOffsets {
        group: String,
        /// TOPIC or TOPIC:P,P,... Repeatable.
        #[arg(long, value_name = "TOPIC[:P,...]", required_unless_present = "all_topics")]
        topic: Vec<String>,
        /// Every topic the group has committed offsets for.
        #[arg(long, conflicts_with = "topic")]
        all_topics: bool,
        #[command(flatten)]
        to: ResetTo,
        /// Commit the new offsets (without it, only show them).
        #[arg(long)]
        execute: bool,
        /// Only show the new offsets (the default).
        #[arg(long, conflicts_with = "execute")]
        dry_run: bool,
    },
    /// Delete groups that have no members (their committed offsets go with them).
    Delete {
        #[arg(required = true)]
        groups: Vec<String>,
    },
    /// Delete a group's committed offsets of some topics.
    DeleteOffsets {
        group: String,
        /// TOPIC or TOPIC:P,P,... Repeatable.
        #[arg(long, value_name = "TOPIC[:P,...]", required = true)]
        topic: Vec<String>,
    },
}

/// Where `reset-offsets` moves each partition (exactly one).
#[derive(clap::Args, Debug)]
#[group(required = true, multiple = false)]
pub struct ResetTo {
    /// The log start offset.
    #[arg(long)]
    to_earliest: bool,
    /// The log end offset.
    #[arg(long)]
    to_latest: bool,
    /// The first offset at or after this time (YYYY-MM-DDTHH:MM:SS[.sss][Z|+HH:MM], or epoch ms).
    #[arg(long, value_name = "TIME")]
    to_datetime: Option<String>,
    /// This offset (kept within the log's bounds).
    #[arg(long, value_name = "N")]
    to_offset: Option<i64>,
    /// The committed offset plus N (N may be negative; kept within the log's bounds).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    shift_by: Option<i64>,
    /// The committed offset (re-commits it, e.g. before deleting others).
    #[arg(long)]
    to_current: bool,
}

pub async fn run(common: &Common, command: GroupCommand) -> Result<(), CliError> {
    let cluster = Cluster::connect(&common.connect).await?;
    let report = match command {
        GroupCommand::List => list(&cluster).await?,
        GroupCommand::Describe { groups, members, state } => {
            let mut report = Report::new(Value::Null);
            let mut out = Vec::new();
            for g in &groups {
                let (json, blocks) = describe(&cluster, g, members, state).await?;
                out.push(json);
                report.blocks.extend(blocks);
            }
            report.json = Value::Array(out);
            report
        }
        GroupCommand::ResetOffsets { group, topic, all_topics, to, execute, dry_run: _ } => {
            reset_offsets(&cluster, &group, &topic, all_topics, &to, execute).await?
        }
        GroupCommand::Delete { groups } => {
            let mut report = Report::new(json!({ "deleted": groups }));
            for g in &groups {
                let coordinator = cluster.coordinator(g, 0).await?;
                let req =
                    DeleteGroupsRequest::default().with_groups_names(vec![GroupId(StrBytes::from_string(g.clone()))]);
                let answer = cluster.send_to(&coordinator, &req).await?;
                for r in &answer.results {
                    check(r.error_code, || format!("deleting group {g}"), None)?;
                }
                report = report.line(format!("Deleted group {g}"));
            }
            report
        }
        GroupCommand::DeleteOffsets { group, topic } => delete_offsets(&cluster, &group, &topic).await?,
    };
    report.print(common.format);
    Ok(())
}

pub(crate) async fn list(cluster: &Cluster) -> Result<Report, CliError> {
    let mut groups = BTreeMap::new();
    for id in cluster.live_brokers().await?.into_keys() {
        let answer = cluster.send_to_broker(id, &ListGroupsRequest::default()).await?;
        check(answer.error_code, || format!("listing the groups of broker {id}"), None)?;
        for g in answer.groups {
            groups.insert(
                g.group_id.0.to_string(),
                (g.group_state.to_string(), g.group_type.to_string(), g.protocol_type.to_string()),
            );
        }
    }
    let mut table = Table::new(&["GROUP", "STATE", "TYPE", "PROTOCOL-TYPE"]);
    let mut out = Vec::new();
    for (name, (state, kind, protocol_type)) in &groups {
        table.row(vec![
            name.clone(),
            or_dash(Some(state).filter(|s| !s.is_empty())),
            or_dash(Some(kind).filter(|s| !s.is_empty())),
            protocol_type.clone(),
        ]);
        out.push(json!({ "group": name, "state": state, "type": kind, "protocol_type": protocol_type }));
    }
    Ok(Report::new(Value::Array(out)).table(table))
}

/// A member as the group commands show it.
struct Member {
    member_id: String,
    instance_id: Option<String>,
    client_id: String,
    host: String,
    assignment: Vec<Tp>,
}

/// A group's state and members: classic groups through DescribeGroups, KIP-848 consumer
/// groups (which DescribeGroups reports as not found or Dead) through ConsumerGroupDescribe.
struct GroupInfo {
    state: String,
    kind: &'static str,
    protocol_type: String,
    protocol: String,
    members: Vec<Member>,
}

async fn group_info(cluster: &Cluster, coordinator: &str, group: &str) -> Result<GroupInfo, CliError> {
    let gid = GroupId(StrBytes::from_string(group.to_string()));
    let answer = cluster.send_to(coordinator, &DescribeGroupsRequest::default().with_groups(vec![gid.clone()])).await?;
    let d = answer
        .groups
        .into_iter()
        .next()
        .ok_or_else(|| CliError::Failed("DescribeGroups answered without the group".into()))?;
    let classic_found = d.error_code == 0 && d.group_state.as_str() != "Dead";
    if !classic_found {
        let req = ConsumerGroupDescribeRequest::default().with_group_ids(vec![gid]);
        if let Ok(answer) = cluster.send_to(coordinator, &req).await {
            if let Some(c) = answer.groups.into_iter().next().filter(|c| c.error_code == 0) {
                return Ok(GroupInfo {
                    state: c.group_state.to_string(),
                    kind: "consumer",
                    protocol_type: "consumer".into(),
                    protocol: c.assignor_name.to_string(),
                    members: c
                        .members
                        .into_iter()
                        .map(|m| Member {
                            member_id: m.member_id.to_string(),
                            instance_id: m.instance_id.map(|s| s.to_string()),
                            client_id: m.client_id.to_string(),
                            host: m.client_host.to_string(),
                            assignment: m
                                .assignment
                                .topic_partitions
                                .iter()
                                .flat_map(|t| t.partitions.iter().map(move |p| (t.topic_name.0.to_string(), *p)))
                                .collect(),
                        })
                        .collect(),
                });
            }
        }
        if d.error_code != 0 && d.error_code != 69 {
            check(d.error_code, || format!("describing group {group}"), d.error_message.as_deref())?;
        }
        return Ok(GroupInfo {
            state: "Dead".into(),
            kind: "classic",
            protocol_type: String::new(),
            protocol: String::new(),
            members: Vec::new(),
        });
    }
    let consumer = d.protocol_type.as_str() == "consumer";
    Ok(GroupInfo {
        state: d.group_state.to_string(),
        kind: "classic",
        protocol_type: d.protocol_type.to_string(),
        protocol: d.protocol_data.to_string(),
        members: d
            .members
            .into_iter()
            .map(|m| Member {
                member_id: m.member_id.to_string(),
                instance_id: m.group_instance_id.map(|s| s.to_string()),
                client_id: m.client_id.to_string(),
                host: m.client_host.to_string(),
                assignment: if consumer { decode_assignment(m.member_assignment) } else { Vec::new() },
            })
            .collect(),
    })
}

/// The partitions of a consumer-protocol assignment (version prefix, then the schema).
fn decode_assignment(mut bytes: bytes::Bytes) -> Vec<Tp> {
    if bytes.remaining() < 2 {
        return Vec::new();
    }
    let version = bytes.get_i16().clamp(0, 3);
    match ConsumerProtocolAssignment::decode(&mut bytes, version) {
        Ok(a) => a
            .assigned_partitions
            .iter()
            .flat_map(|t| t.partitions.iter().map(move |p| (t.topic.0.to_string(), *p)))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// The group's committed offsets (`None` topics: all of them).
async fn committed(cluster: &Cluster, coordinator: &str, group: &str) -> Result<BTreeMap<Tp, i64>, CliError> {
    let req = OffsetFetchRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
        .with_topics(None);
    let answer = cluster.send_to(coordinator, &req).await?;
    check(answer.error_code, || format!("fetching the offsets of group {group}"), None)?;
    let mut out = BTreeMap::new();
    for t in answer.topics {
        for p in t.partitions {
            check(
                p.error_code,
                || format!("fetching the offset of group {group} for {}-{}", t.name.0, p.partition_index),
                None,
            )?;
            if p.committed_offset >= 0 {
                out.insert((t.name.0.to_string(), p.partition_index), p.committed_offset);
            }
        }
    }
    Ok(out)
}

pub(crate) async fn describe(
    cluster: &Cluster,
    group: &str,
    members: bool,
    state: bool,
) -> Result<(Value, Vec<crate::output::Block>), CliError> {
    use crate::output::Block;
    let coordinator = cluster.coordinator(group, 0).await?;
    let info = group_info(cluster, &coordinator, group).await?;
    let offsets = committed(cluster, &coordinator, group).await?;
    if info.state == "Dead" && info.members.is_empty() && offsets.is_empty() {
        return Err(CliError::kafka(69, format!("describing group {group}"), Some("the group does not exist")));
    }
    let mut owner: BTreeMap<Tp, usize> = BTreeMap::new();
    for (i, m) in info.members.iter().enumerate() {
        for tp in &m.assignment {
            owner.insert(tp.clone(), i);
        }
    }
    let partitions: BTreeSet<Tp> = offsets.keys().chain(owner.keys()).cloned().collect();
    let wanted: BTreeMap<Tp, i64> = partitions.iter().map(|tp| (tp.clone(), LATEST)).collect();
    let ends = list_offsets(cluster, &wanted, 0).await?;
    let mut table = Table::new(&[
        "GROUP",
        "TOPIC",
        "PARTITION",
        "CURRENT-OFFSET",
        "LOG-END-OFFSET",
        "LAG",
        "CONSUMER-ID",
        "HOST",
        "CLIENT-ID",
    ]);
    let mut rows = Vec::new();
    for tp in &partitions {
        let current = offsets.get(tp).copied();
        let end = ends.get(tp).copied().flatten();
        let lag = match (current, end) {
            (Some(c), Some(e)) => Some((e - c).max(0)),
            _ => None,
        };
        let m = owner.get(tp).map(|i| &info.members[*i]);
        table.row(vec![
            group.to_string(),
            tp.0.clone(),
            tp.1.to_string(),
            or_dash(current),
            or_dash(end),
            or_dash(lag),
            or_dash(m.map(|m| m.member_id.clone())),
            or_dash(m.map(|m| m.host.clone())),
            or_dash(m.map(|m| m.client_id.clone())),
        ]);
        rows.push(json!({
            "topic": tp.0, "partition": tp.1, "current_offset": current, "log_end_offset": end, "lag": lag,
            "member_id": m.map(|m| m.member_id.clone()), "host": m.map(|m| m.host.clone()), "client_id": m.map(|m| m.client_id.clone()),
        }));
    }
    let total_lag: i64 = rows.iter().filter_map(|r| r["lag"].as_i64()).sum();
    let member_json: Vec<Value> = info
        .members
        .iter()
        .map(|m| {
            json!({
                "member_id": m.member_id, "group_instance_id": m.instance_id, "client_id": m.client_id, "host": m.host,
                "assignment": m.assignment.iter().map(|(t, p)| json!({ "topic": t, "partition": p })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let json = json!({
        "group": group, "state": info.state, "type": info.kind, "protocol_type": info.protocol_type,
        "protocol": info.protocol, "coordinator": coordinator, "total_lag": total_lag,
        "members": member_json, "offsets": rows,
    });
    let mut blocks = Vec::new();
    if state {
        let mut t = Table::new(&["GROUP", "COORDINATOR", "ASSIGNMENT-STRATEGY", "STATE", "#MEMBERS"]);
        t.row(vec![
            group.to_string(),
            coordinator.clone(),
            or_dash(Some(&info.protocol).filter(|p| !p.is_empty())),
            info.state.clone(),
            info.members.len().to_string(),
        ]);
        blocks.push(Block::Table(t));
    }
    if info.members.is_empty() {
        blocks.push(Block::Line(format!("Consumer group '{group}' has no active members.")));
    }
    if members && !info.members.is_empty() {
        let mut t = Table::new(&[
            "GROUP",
            "CONSUMER-ID",
            "GROUP-INSTANCE-ID",
            "HOST",
            "CLIENT-ID",
            "#PARTITIONS",
            "ASSIGNMENT",
        ]);
        for m in &info.members {
            let assignment: Vec<String> = m.assignment.iter().map(|(t, p)| format!("{t}-{p}")).collect();
            t.row(vec![
                group.to_string(),
                m.member_id.clone(),
                or_dash(m.instance_id.clone()),
                m.host.clone(),
                m.client_id.clone(),
                m.assignment.len().to_string(),
                assignment.join(","),
            ]);
        }
        blocks.push(Block::Table(t));
    }
    if !table.is_empty() || !members {
        blocks.push(Block::Table(table));
    }
    Ok((json, blocks))
}

/// `TOPIC` or `TOPIC:P,P` arguments as (topic, partitions; empty for all).
fn topic_specs(args: &[String]) -> Result<Vec<(String, Vec<i32>)>, CliError> {
    args.iter()
        .map(|a| match a.split_once(':') {
            None => Ok((a.clone(), Vec::new())),
            Some((t, ps)) => {
                let ps = ps
                    .split(',')
                    .map(|p| p.trim().parse::<i32>())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|_| CliError::Usage(format!("--topic {a}: expected TOPIC:PARTITION,PARTITION...")))?;
                Ok((t.to_string(), ps))
            }
        })
        .collect()
}

async fn reset_offsets(
    cluster: &Cluster,
    group: &str,
    topics: &[String],
    all_topics: bool,
    to: &ResetTo,
    execute: bool,
) -> Result<Report, CliError> {
    let coordinator = cluster.coordinator(group, 0).await?;
    let info = group_info(cluster, &coordinator, group).await?;
    if !matches!(info.state.as_str(), "Empty" | "Dead") {
        return Err(CliError::Failed(format!(
            "Assignments can only be reset if the group '{group}' is inactive, but the current state is {}.",
            info.state
        )));
    }
    let current = committed(cluster, &coordinator, group).await?;
    if info.state == "Dead" && current.is_empty() {
        eprintln!("Warning: group '{group}' does not exist{}", if execute { "; committing creates it" } else { "" });
    }
    let mut partitions: BTreeSet<Tp> = BTreeSet::new();
    if all_topics {
        partitions.extend(current.keys().cloned());
    } else {
        let specs = topic_specs(topics)?;
        let names: Vec<String> = specs.iter().map(|(t, _)| t.clone()).collect();
        let (_, counts) = crate::offsets::leaders(cluster, &names).await?;
        for (t, ps) in specs {
            let count = counts.get(&t).copied().unwrap_or(0);
            if ps.is_empty() {
                partitions.extend((0..count).map(|p| (t.clone(), p)));
            }
            for p in ps {
                if p < 0 || p >= count {
                    return Err(CliError::kafka(3, format!("resetting {t}-{p}"), Some("no such partition")));
                }
                partitions.insert((t.clone(), p));
            }
        }
    }
    let at = |ts: i64| partitions.iter().map(|tp| (tp.clone(), ts)).collect::<BTreeMap<_, _>>();
    let earliest = list_offsets(cluster, &at(EARLIEST), 0).await?;
    let latest = list_offsets(cluster, &at(LATEST), 0).await?;
    let bounds = |tp: &Tp| {
        let lo = earliest.get(tp).copied().flatten().unwrap_or(0);
        let hi = latest.get(tp).copied().flatten().unwrap_or(lo);
        (lo, hi)
    };
    let mut targets: BTreeMap<Tp, i64> = BTreeMap::new();
    if let Some(time) = &to.to_datetime {
        let ms = parse_time_ms(time)?;
        let found = list_offsets(cluster, &at(ms), 0).await?;
        for tp in &partitions {
            // No record that recent: the log end, as Kafka's tool does.
            targets.insert(tp.clone(), found.get(tp).copied().flatten().unwrap_or(bounds(tp).1));
        }
    } else {
        for tp in &partitions {
            let (lo, hi) = bounds(tp);
            let now = current.get(tp).copied();
            let target = if to.to_earliest {
                lo
            } else if to.to_latest {
                hi
            } else if let Some(n) = to.to_offset {
                n.clamp(lo, hi)
            } else if let Some(n) = to.shift_by {
                // As Kafka's tool: shifting needs a committed offset to shift from.
                let Some(c) = now else {
                    return Err(CliError::Failed(format!(
                        "cannot shift the offset of {}-{}: group {group} has no committed offset there",
                        tp.0, tp.1
                    )));
                };
                c.saturating_add(n).clamp(lo, hi)
            } else {
                // --to-current with nothing committed: the log end, as Kafka's tool.
                now.unwrap_or(hi)
            };
            targets.insert(tp.clone(), target);
        }
    }
    if execute && !targets.is_empty() {
        let mut by_topic: BTreeMap<String, Vec<OffsetCommitRequestPartition>> = BTreeMap::new();
        for ((t, p), o) in &targets {
            by_topic.entry(t.clone()).or_default().push(
                OffsetCommitRequestPartition::default()
                    .with_partition_index(*p)
                    .with_committed_offset(*o)
                    .with_committed_leader_epoch(-1),
            );
        }
        let req = OffsetCommitRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
            .with_generation_id_or_member_epoch(-1)
            .with_member_id(StrBytes::default())
            .with_topics(
                by_topic
                    .into_iter()
                    .map(|(t, ps)| {
                        OffsetCommitRequestTopic::default()
                            .with_name(TopicName(StrBytes::from_string(t)))
                            .with_partitions(ps)
                    })
                    .collect(),
            );
        let answer = cluster.send_to(&coordinator, &req).await?;
        for t in &answer.topics {
            for p in &t.partitions {
                check(
                    p.error_code,
                    || format!("committing the offset of group {group} for {}-{}", t.name.0, p.partition_index),
                    None,
                )?;
            }
        }
    }
    let mut table = Table::new(&["GROUP", "TOPIC", "PARTITION", "NEW-OFFSET"]);
    let mut rows = Vec::new();
    for ((t, p), o) in &targets {
        table.row(vec![group.to_string(), t.clone(), p.to_string(), o.to_string()]);
        rows.push(
            json!({ "topic": t, "partition": p, "previous_offset": current.get(&(t.clone(), *p)), "new_offset": o }),
        );
    }
    let mut report = Report::new(json!({ "group": group, "executed": execute, "offsets": rows })).table(table);
    if !execute {
        report = report.line("(dry run: nothing was committed; add --execute to commit these offsets)");
    }
    Ok(report)
}

async fn delete_offsets(cluster: &Cluster, group: &str, topics: &[String]) -> Result<Report, CliError> {
    let coordinator = cluster.coordinator(group, 0).await?;
    let specs = topic_specs(topics)?;
    let names: Vec<String> = specs.iter().map(|(t, _)| t.clone()).collect();
    let (_, counts) = crate::offsets::leaders(cluster, &names).await?;
    let req =
        OffsetDeleteRequest::default().with_group_id(GroupId(StrBytes::from_string(group.to_string()))).with_topics(
            specs
                .iter()
                .map(|(t, ps)| {
                    let ps: Vec<i32> =
                        if ps.is_empty() { (0..counts.get(t).copied().unwrap_or(0)).collect() } else { ps.clone() };
                    OffsetDeleteRequestTopic::default()
                        .with_name(TopicName(StrBytes::from_string(t.clone())))
                        .with_partitions(
                            ps.into_iter()
                                .map(|p| OffsetDeleteRequestPartition::default().with_partition_index(p))
                                .collect(),
                        )
                })
                .collect(),
        );
    let answer = cluster.send_to(&coordinator, &req).await?;
    check(answer.error_code, || format!("deleting offsets of group {group}"), None)?;
    let mut deleted = Vec::new();
    for t in &answer.topics {
        for p in &t.partitions {
            check(
                p.error_code,
                || format!("deleting the offset of group {group} for {}-{}", t.name.0, p.partition_index),
                None,
            )?;
            deleted.push(json!({ "topic": t.name.0.to_string(), "partition": p.partition_index }));
        }
    }
    let n = deleted.len();
    Ok(Report::new(json!({ "group": group, "deleted": deleted }))
        .line(format!("Deleted {n} committed offsets of group {group}")))
}
