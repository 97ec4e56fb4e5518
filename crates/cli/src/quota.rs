//! `strata quota`: client quotas (DescribeClientQuotas, AlterClientQuotas), as
//! `kafka-configs.sh --entity-type users|clients`.

use kafka_protocol::messages::alter_client_quotas_request::{
    EntityData as AlterEntity, EntryData as AlterEntry, OpData,
};
use kafka_protocol::messages::describe_client_quotas_request::ComponentData;
use kafka_protocol::messages::{AlterClientQuotasRequest, DescribeClientQuotasRequest};
use kafka_protocol::protocol::StrBytes;
use serde_json::{json, Value};

use crate::configs::parse_pairs;
use crate::conn::Cluster;
use crate::error::{check, CliError};
use crate::output::{Report, Table};
use crate::Common;

#[derive(clap::Subcommand, Debug)]
pub enum QuotaCommand {
    /// Show quotas (all, or those of the named entities).
    Describe {
        #[command(flatten)]
        entity: QuotaEntity,
    },
    /// Set or remove quotas of one entity: producer_byte_rate, consumer_byte_rate,
    /// request_percentage, controller_mutation_rate.
    Alter {
        #[command(flatten)]
        entity: QuotaEntity,
        /// 'producer_byte_rate=1048576,consumer_byte_rate=2097152'. Repeatable.
        #[arg(long, value_name = "K=V,...")]
        add_config: Vec<String>,
        /// 'producer_byte_rate,consumer_byte_rate'. Repeatable.
        #[arg(long, value_name = "K,...")]
        delete_config: Vec<String>,
    },
}

#[derive(clap::Args, Debug)]
pub struct QuotaEntity {
    /// A user principal's name.
    #[arg(long, conflicts_with = "user_defaults")]
    user: Option<String>,
    /// The default of every user.
    #[arg(long)]
    user_defaults: bool,
    /// A client id.
    #[arg(long, conflicts_with = "client_defaults")]
    client_id: Option<String>,
    /// The default of every client id.
    #[arg(long)]
    client_defaults: bool,
}

impl QuotaEntity {
    /// (entity type, name; `None` is the default entity).
    fn parts(&self) -> Vec<(&'static str, Option<String>)> {
        let mut out = Vec::new();
        if let Some(u) = &self.user {
            out.push(("user", Some(u.clone())));
        } else if self.user_defaults {
            out.push(("user", None));
        }
        if let Some(c) = &self.client_id {
            out.push(("client-id", Some(c.clone())));
        } else if self.client_defaults {
            out.push(("client-id", None));
        }
        out
    }
}

/// An entity: (entity type, name; `None` for the default), e.g. [("user", Some("alice"))].
type Entity = Vec<(String, Option<String>)>;

fn entity_label(parts: &[(String, Option<String>)]) -> String {
    parts.iter().map(|(t, n)| format!("{t}={}", n.as_deref().unwrap_or("<default>"))).collect::<Vec<_>>().join(",")
}

pub async fn run(common: &Common, command: QuotaCommand) -> Result<(), CliError> {
    let cluster = Cluster::connect(&common.connect).await?;
    let report = match command {
        QuotaCommand::Describe { entity } => {
            let components = entity
                .parts()
                .into_iter()
                .map(|(t, n)| {
                    ComponentData::default()
                        .with_entity_type(StrBytes::from_static_str(t))
                        .with_match_type(if n.is_some() { 0 } else { 1 })
                        .with_match(n.map(StrBytes::from_string))
                })
                .collect();
            let answer = cluster
                .send(&DescribeClientQuotasRequest::default().with_components(components).with_strict(false))
                .await?;
            check(answer.error_code, || "describing client quotas".to_string(), answer.error_message.as_deref())?;
            let mut table = Table::new(&["ENTITY", "QUOTA", "VALUE"]);
            let mut out = Vec::new();
            let mut entries: Vec<(Entity, Vec<(String, f64)>)> = answer
                .entries
                .unwrap_or_default()
                .into_iter()
                .map(|e| {
                    (
                        e.entity
                            .iter()
                            .map(|d| (d.entity_type.to_string(), d.entity_name.as_ref().map(|n| n.to_string())))
                            .collect(),
                        e.values.iter().map(|v| (v.key.to_string(), v.value)).collect(),
                    )
                })
                .collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            for (entity, values) in &entries {
                let label = entity_label(entity);
                for (k, v) in values {
                    table.row(vec![label.clone(), k.clone(), v.to_string()]);
                }
                let e: serde_json::Map<String, Value> = entity.iter().map(|(t, n)| (t.clone(), json!(n))).collect();
                let q: serde_json::Map<String, Value> = values.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
                out.push(json!({ "entity": e, "quotas": q }));
            }
            Report::new(Value::Array(out)).table(table)
        }
        QuotaCommand::Alter { entity, add_config, delete_config } => {
            let parts = entity.parts();
            if parts.is_empty() {
                return Err(CliError::Usage(
                    "name the entity: --user, --user-defaults, --client-id or --client-defaults".into(),
                ));
            }
            let mut ops = Vec::new();
            for (k, v) in parse_pairs(&add_config)? {
                let value: f64 =
                    v.parse().map_err(|_| CliError::Usage(format!("{k}={v}: the value must be a number")))?;
                ops.push(OpData::default().with_key(StrBytes::from_string(k)).with_value(value));
            }
            for k in delete_config.iter().flat_map(|d| d.split(',')).map(str::trim).filter(|k| !k.is_empty()) {
                ops.push(OpData::default().with_key(StrBytes::from_string(k.to_string())).with_remove(true));
            }
            if ops.is_empty() {
                return Err(CliError::Usage("quota alter needs --add-config or --delete-config".into()));
            }
            let entry = AlterEntry::default()
                .with_entity(
                    parts
                        .iter()
                        .map(|(t, n)| {
                            AlterEntity::default()
                                .with_entity_type(StrBytes::from_static_str(t))
                                .with_entity_name(n.clone().map(StrBytes::from_string))
                        })
                        .collect(),
                )
                .with_ops(ops);
            let answer = cluster.send(&AlterClientQuotasRequest::default().with_entries(vec![entry])).await?;
            let label = entity_label(&parts.iter().map(|(t, n)| (t.to_string(), n.clone())).collect::<Vec<_>>());
            for e in &answer.entries {
                check(e.error_code, || format!("altering the quotas of {label}"), e.error_message.as_deref())?;
            }
            Report::new(json!({ "entity": label, "altered": true }))
                .line(format!("Completed updating quotas for {label}."))
        }
    };
    report.print(common.format);
    Ok(())
}
