//! `strata config`: kafka-configs.sh's describe and alter for topics and brokers, and the
//! DescribeConfigs / IncrementalAlterConfigs calls the topic commands share.

use std::collections::BTreeMap;

use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig};
use kafka_protocol::messages::{DescribeConfigsRequest, IncrementalAlterConfigsRequest};
use kafka_protocol::protocol::StrBytes;
use serde_json::{json, Value};

use crate::conn::Cluster;
use crate::error::{check, CliError};
use crate::output::{Report, Table};
use crate::Common;

/// Kafka's `ConfigResource.Type` codes.
pub const TOPIC: i8 = 2;
pub const BROKER: i8 = 4;

#[derive(clap::Subcommand, Debug)]
pub enum ConfigCommand {
    /// Show an entity's configs: those set dynamically, or all with --all.
    Describe {
        #[command(flatten)]
        entity: Entity,
        /// Every config with its value and source, defaults included.
        #[arg(long)]
        all: bool,
    },
    /// Set or remove an entity's dynamic configs.
    Alter {
        #[command(flatten)]
        entity: Entity,
        /// Configs to set: 'k1=v1,k2=[v2,v3]' (a bracketed value holds commas). Repeatable.
        #[arg(long, value_name = "K=V,...")]
        add_config: Vec<String>,
        /// Configs to remove: 'k1,k2'. Repeatable.
        #[arg(long, value_name = "K,...")]
        delete_config: Vec<String>,
    },
}

/// Which entity: `--topic T`, `--broker N`, `--broker-defaults`, or kafka-configs.sh's
/// `--entity-type topics|brokers` with `--entity-name` / `--entity-default`.
#[derive(clap::Args, Debug)]
pub struct Entity {
    #[arg(long, value_name = "TOPIC", conflicts_with_all = ["broker", "broker_defaults", "entity_type"])]
    topic: Option<String>,
    #[arg(long, value_name = "ID", conflicts_with_all = ["broker_defaults", "entity_type"])]
    broker: Option<i32>,
    /// The cluster-wide broker defaults.
    #[arg(long, conflicts_with = "entity_type")]
    broker_defaults: bool,
    #[arg(long, value_name = "topics|brokers")]
    entity_type: Option<String>,
    #[arg(long, value_name = "NAME", requires = "entity_type")]
    entity_name: Option<String>,
    #[arg(long, requires = "entity_type", conflicts_with = "entity_name")]
    entity_default: bool,
}

impl Entity {
    /// (resource type, names); an empty name list means every entity of the type.
    fn resolve(&self) -> Result<(i8, Vec<String>), CliError> {
        if let Some(t) = &self.topic {
            return Ok((TOPIC, vec![t.clone()]));
        }
        if let Some(b) = self.broker {
            return Ok((BROKER, vec![b.to_string()]));
        }
        if self.broker_defaults {
            return Ok((BROKER, vec![String::new()]));
        }
        let Some(kind) = &self.entity_type else {
            return Err(CliError::Usage(
                "name the entity: --topic, --broker, --broker-defaults or --entity-type".into(),
            ));
        };
        let kind = match kind.as_str() {
            "topics" | "topic" => TOPIC,
            "brokers" | "broker" => BROKER,
            other => {
                return Err(CliError::Usage(format!(
                    "--entity-type {other}: this command handles topics and brokers (users and clients: `strata user`, `strata quota`)"
                )))
            }
        };
        if self.entity_default {
            if kind == TOPIC {
                return Err(CliError::Usage("topics have no --entity-default (set broker defaults)".into()));
            }
            return Ok((kind, vec![String::new()]));
        }
        Ok((kind, self.entity_name.iter().cloned().collect()))
    }
}

/// Kafka's `ConfigSource`, as DescribeConfigs codes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigSource {
    Unknown,
    DynamicTopic,
    DynamicBroker,
    DynamicDefaultBroker,
    StaticBroker,
    Default,
    Other(i8),
}

impl ConfigSource {
    fn from_code(code: i8) -> Self {
        match code {
            0 => Self::Unknown,
            1 => Self::DynamicTopic,
            2 => Self::DynamicBroker,
            3 => Self::DynamicDefaultBroker,
            4 => Self::StaticBroker,
            5 => Self::Default,
            c => Self::Other(c),
        }
    }

    /// Kafka's name of the source (`DYNAMIC_TOPIC_CONFIG`, ...).
    pub fn name(self) -> String {
        match self {
            Self::Unknown => "UNKNOWN".into(),
            Self::DynamicTopic => "DYNAMIC_TOPIC_CONFIG".into(),
            Self::DynamicBroker => "DYNAMIC_BROKER_CONFIG".into(),
            Self::DynamicDefaultBroker => "DYNAMIC_DEFAULT_BROKER_CONFIG".into(),
            Self::StaticBroker => "STATIC_BROKER_CONFIG".into(),
            Self::Default => "DEFAULT_CONFIG".into(),
            Self::Other(c) => format!("SOURCE_{c}"),
        }
    }

    fn dynamic(self) -> bool {
        matches!(self, Self::DynamicTopic | Self::DynamicBroker | Self::DynamicDefaultBroker)
    }
}

/// One config entry as DescribeConfigs gives it.
pub struct ConfigEntry {
    pub name: String,
    pub value: Option<String>,
    pub source: ConfigSource,
    pub sensitive: bool,
    pub read_only: bool,
}

/// `name=value` pairs of `--config` / `--add-config` arguments: each may hold several,
/// comma-separated, and a value in brackets (`[a,b]`) keeps its commas (kafka-configs.sh's
/// syntax).
pub fn parse_pairs(args: &[String]) -> Result<Vec<(String, String)>, CliError> {
    let mut out = Vec::new();
    for arg in args {
        let mut depth = 0usize;
        let mut start = 0;
        let mut pieces = Vec::new();
        for (i, c) in arg.char_indices() {
            match c {
                '[' => depth += 1,
                ']' => depth = depth.saturating_sub(1),
                ',' if depth == 0 => {
                    pieces.push(&arg[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        pieces.push(&arg[start..]);
        for piece in pieces.into_iter().map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) =
                piece.split_once('=').ok_or_else(|| CliError::Usage(format!("'{piece}' is not NAME=VALUE")))?;
            let v = v.trim();
            let v = v.strip_prefix('[').and_then(|v| v.strip_suffix(']')).unwrap_or(v);
            out.push((k.trim().to_string(), v.to_string()));
        }
    }
    Ok(out)
}

/// The configs of `names` of resource type `kind` (an empty `names` is refused by the caller).
/// Broker resources are asked of that broker (its static configs are its own); the rest of
/// any broker.
pub async fn describe(
    cluster: &Cluster,
    kind: i8,
    names: &[String],
    synonyms: bool,
) -> Result<Vec<(String, Vec<ConfigEntry>)>, CliError> {
    let mut out = Vec::new();
    if names.is_empty() {
        return Ok(out);
    }
    let resources = |names: &[String]| {
        DescribeConfigsRequest::default().with_include_synonyms(synonyms).with_resources(
            names
                .iter()
                .map(|n| {
                    DescribeConfigsResource::default()
                        .with_resource_type(kind)
                        .with_resource_name(StrBytes::from_string(n.clone()))
                        .with_configuration_keys(None)
                })
                .collect(),
        )
    };
    let mut answers = Vec::new();
    if kind == BROKER {
        for n in names {
            let req = resources(std::slice::from_ref(n));
            answers.push(match n.parse::<i32>() {
                Ok(id) => cluster.send_to_broker(id, &req).await?,
                Err(_) => cluster.send(&req).await?,
            });
        }
    } else {
        answers.push(cluster.send(&resources(names)).await?);
    }
    for answer in answers {
        for r in answer.results {
            let name = r.resource_name.to_string();
            check(r.error_code, || format!("describing the configs of {name}"), r.error_message.as_deref())?;
            let mut entries: Vec<ConfigEntry> = r
                .configs
                .into_iter()
                .map(|c| ConfigEntry {
                    name: c.name.to_string(),
                    value: c.value.map(|v| v.to_string()),
                    source: ConfigSource::from_code(c.config_source),
                    sensitive: c.is_sensitive,
                    read_only: c.read_only,
                })
                .collect();
            entries.sort_by(|a, b| a.name.cmp(&b.name));
            out.push((name, entries));
        }
    }
    Ok(out)
}

/// Sets `set` and removes `delete` on one resource (IncrementalAlterConfigs).
pub async fn alter(
    cluster: &Cluster,
    kind: i8,
    name: &str,
    set: &[(String, String)],
    delete: &[String],
) -> Result<(), CliError> {
    let mut configs: Vec<AlterableConfig> = set
        .iter()
        .map(|(k, v)| {
            AlterableConfig::default()
                .with_name(StrBytes::from_string(k.clone()))
                .with_config_operation(0)
                .with_value(Some(StrBytes::from_string(v.clone())))
        })
        .collect();
    for k in delete.iter().flat_map(|d| d.split(',')).map(str::trim).filter(|k| !k.is_empty()) {
        configs
            .push(AlterableConfig::default().with_name(StrBytes::from_string(k.to_string())).with_config_operation(1));
    }
    let req = IncrementalAlterConfigsRequest::default().with_resources(vec![AlterConfigsResource::default()
        .with_resource_type(kind)
        .with_resource_name(StrBytes::from_string(name.to_string()))
        .with_configs(configs)]);
    let answer = match name.parse::<i32>() {
        Ok(id) if kind == BROKER => cluster.send_to_broker(id, &req).await?,
        _ => cluster.send(&req).await?,
    };
    for r in &answer.responses {
        check(
            r.error_code,
            || format!("altering the configs of {}", entity_label(kind, name)),
            r.error_message.as_deref(),
        )?;
    }
    Ok(())
}

fn entity_label(kind: i8, name: &str) -> String {
    match (kind, name) {
        (BROKER, "") => "broker defaults".into(),
        (BROKER, n) => format!("broker {n}"),
        (_, n) => format!("topic {n}"),
    }
}

pub async fn run(common: &Common, command: ConfigCommand) -> Result<(), CliError> {
    let cluster = Cluster::connect(&common.connect).await?;
    let report = match command {
        ConfigCommand::Describe { entity, all } => {
            let (kind, mut names) = entity.resolve()?;
            if names.is_empty() {
                names = if kind == TOPIC {
                    let md = cluster.metadata(None).await?;
                    let mut n: Vec<String> =
                        md.topics.iter().filter_map(|t| t.name.as_ref().map(|n| n.0.to_string())).collect();
                    n.sort();
                    n
                } else {
                    cluster.live_brokers().await?.keys().map(|id| id.to_string()).collect()
                };
            }
            let described = describe(&cluster, kind, &names, false).await?;
            let mut table = Table::new(&["ENTITY", "NAME", "VALUE", "SOURCE", "SENSITIVE", "READ-ONLY"]);
            let mut out = Vec::new();
            for (name, entries) in described {
                let mut configs = Vec::new();
                for e in entries.into_iter().filter(|e| all || e.source.dynamic()) {
                    let shown = if e.sensitive { None } else { e.value.clone() };
                    table.row(vec![
                        entity_label(kind, &name),
                        e.name.clone(),
                        shown.clone().unwrap_or_else(|| if e.sensitive { "[hidden]".into() } else { "null".into() }),
                        e.source.name(),
                        e.sensitive.to_string(),
                        e.read_only.to_string(),
                    ]);
                    configs.push(json!({
                        "name": e.name, "value": shown, "source": e.source.name(),
                        "sensitive": e.sensitive, "read_only": e.read_only,
                    }));
                }
                out.push(json!({ "entity_type": if kind == TOPIC { "topics" } else { "brokers" }, "entity_name": name, "configs": configs }));
            }
            Report::new(Value::Array(out)).table(table)
        }
        ConfigCommand::Alter { entity, add_config, delete_config } => {
            let (kind, names) = entity.resolve()?;
            let [name] = names.as_slice() else {
                return Err(CliError::Usage("alter one entity: give --entity-name or --entity-default".into()));
            };
            if add_config.is_empty() && delete_config.is_empty() {
                return Err(CliError::Usage("config alter needs --add-config or --delete-config".into()));
            }
            let set = parse_pairs(&add_config)?;
            alter(&cluster, kind, name, &set, &delete_config).await?;
            let label = entity_label(kind, name);
            let set_json: BTreeMap<_, _> = set.iter().cloned().collect();
            Report::new(json!({ "entity": label, "set": set_json, "deleted": delete_config }))
                .line(format!("Completed updating config for {label}."))
        }
    };
    report.print(common.format);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_pairs_follow_kafka_configs_syntax() {
        let got = parse_pairs(&["a=1,b=[x,y], c = 3".into(), "d=e=f".into()]).unwrap();
        let want = [("a", "1"), ("b", "x,y"), ("c", "3"), ("d", "e=f")];
        assert_eq!(got, want.map(|(k, v)| (k.to_string(), v.to_string())));
        assert!(parse_pairs(&["novalue".into()]).is_err());
    }
}
