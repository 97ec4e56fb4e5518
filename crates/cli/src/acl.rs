//! `strata acl`: kafka-acls.sh's add, list and remove, as create, list and delete.

use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
use kafka_protocol::messages::{CreateAclsRequest, DeleteAclsRequest, DescribeAclsRequest};
use kafka_protocol::protocol::StrBytes;
use serde_json::{json, Value};

use crate::conn::Cluster;
use crate::error::{check, CliError};
use crate::output::{Report, Table};
use crate::Common;

#[derive(clap::Subcommand, Debug)]
pub enum AclCommand {
    /// Add ACLs: each principal x host x operation on each resource.
    Create(AclArgs),
    /// List the ACLs that match (all without filters).
    List(AclArgs),
    /// Delete the ACLs that match.
    Delete(AclArgs),
}

/// kafka-acls.sh's flags.
#[derive(clap::Args, Debug)]
pub struct AclArgs {
    /// Principals allowed, e.g. User:alice. Repeatable.
    #[arg(long, value_name = "PRINCIPAL")]
    allow_principal: Vec<String>,
    /// Principals denied. Repeatable.
    #[arg(long, value_name = "PRINCIPAL")]
    deny_principal: Vec<String>,
    /// Hosts the allow principals may come from (default *).
    #[arg(long, value_name = "HOST")]
    allow_host: Vec<String>,
    /// Hosts the deny principals are denied from (default *).
    #[arg(long, value_name = "HOST")]
    deny_host: Vec<String>,
    /// Read, Write, Create, Delete, Alter, Describe, ClusterAction, DescribeConfigs,
    /// AlterConfigs, IdempotentWrite, CreateTokens, DescribeTokens, All. Repeatable.
    #[arg(long, value_name = "OPERATION")]
    operation: Vec<String>,
    /// A topic (`*` for all). Repeatable.
    #[arg(long, value_name = "TOPIC")]
    topic: Vec<String>,
    /// A consumer group (`*` for all). Repeatable.
    #[arg(long, value_name = "GROUP")]
    group: Vec<String>,
    /// The cluster.
    #[arg(long)]
    cluster: bool,
    /// A transactional id (`*` for all). Repeatable.
    #[arg(long, value_name = "ID")]
    transactional_id: Vec<String>,
    /// A delegation token id. Repeatable.
    #[arg(long, value_name = "ID")]
    delegation_token: Vec<String>,
    /// literal or prefixed (create); literal, prefixed, any or match (list, delete). Default
    /// literal when a resource is named, else any.
    #[arg(long, value_name = "TYPE")]
    resource_pattern_type: Option<String>,
    /// list/delete: only ACLs of this principal.
    #[arg(long, value_name = "PRINCIPAL")]
    principal: Option<String>,
    /// Convenience for producers: Write, Describe and Create on the topics (and
    /// IdempotentWrite on the cluster with --idempotent).
    #[arg(long)]
    producer: bool,
    /// With --producer.
    #[arg(long)]
    idempotent: bool,
    /// Convenience for consumers: Read and Describe on the topics, Read on the groups.
    #[arg(long)]
    consumer: bool,
}

const RESOURCE_TYPES: [(&str, i8); 7] = [
    ("Any", 1),
    ("Topic", 2),
    ("Group", 3),
    ("Cluster", 4),
    ("TransactionalId", 5),
    ("DelegationToken", 6),
    ("User", 7),
];
const OPERATIONS: [(&str, i8); 14] = [
    ("Any", 1),
    ("All", 2),
    ("Read", 3),
    ("Write", 4),
    ("Create", 5),
    ("Delete", 6),
    ("Alter", 7),
    ("Describe", 8),
    ("ClusterAction", 9),
    ("DescribeConfigs", 10),
    ("AlterConfigs", 11),
    ("IdempotentWrite", 12),
    ("CreateTokens", 13),
    ("DescribeTokens", 14),
];
const PATTERNS: [(&str, i8); 4] = [("Any", 1), ("Match", 2), ("Literal", 3), ("Prefixed", 4)];
const PERMISSIONS: [(&str, i8); 3] = [("Any", 1), ("Deny", 2), ("Allow", 3)];

fn name_of(table: &[(&str, i8)], code: i8) -> String {
    table.iter().find(|(_, c)| *c == code).map_or_else(|| format!("Unknown({code})"), |(n, _)| n.to_string())
}

fn code_of(table: &[(&str, i8)], what: &str, name: &str) -> Result<i8, CliError> {
    let key: String = name.chars().filter(|c| *c != '_' && *c != '-').collect::<String>().to_ascii_lowercase();
    table.iter().find(|(n, _)| n.to_ascii_lowercase() == key).map(|(_, c)| *c).ok_or_else(|| {
        CliError::Usage(format!(
            "unknown {what} '{name}' (one of {})",
            table.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
        ))
    })
}

/// One ACL binding.
#[derive(Clone)]
struct Binding {
    resource_type: i8,
    resource_name: String,
    pattern: i8,
    principal: String,
    host: String,
    operation: i8,
    permission: i8,
}

impl Binding {
    fn json(&self) -> Value {
        json!({
            "resource_type": name_of(&RESOURCE_TYPES, self.resource_type), "resource_name": self.resource_name,
            "pattern_type": name_of(&PATTERNS, self.pattern), "principal": self.principal, "host": self.host,
            "operation": name_of(&OPERATIONS, self.operation), "permission": name_of(&PERMISSIONS, self.permission),
        })
    }

    fn row(&self) -> Vec<String> {
        vec![
            name_of(&RESOURCE_TYPES, self.resource_type),
            self.resource_name.clone(),
            name_of(&PATTERNS, self.pattern),
            self.principal.clone(),
            self.host.clone(),
            name_of(&OPERATIONS, self.operation),
            name_of(&PERMISSIONS, self.permission),
        ]
    }
}

/// The bindings, sorted and each once (several filters may match one binding), as a report.
fn report(mut bindings: Vec<Binding>, verb: &str) -> Report {
    bindings.sort_by_key(Binding::row);
    bindings.dedup_by(|a, b| a.row() == b.row());
    let mut table =
        Table::new(&["RESOURCE-TYPE", "RESOURCE-NAME", "PATTERN-TYPE", "PRINCIPAL", "HOST", "OPERATION", "PERMISSION"]);
    for b in &bindings {
        table.row(b.row());
    }
    Report::new(Value::Array(bindings.iter().map(Binding::json).collect()))
        .line(format!("{verb} {} ACL(s)", bindings.len()))
        .table(table)
}

impl AclArgs {
    /// The named resources: (type, name).
    fn resources(&self) -> Vec<(i8, String)> {
        let mut out = Vec::new();
        out.extend(self.topic.iter().map(|t| (2, t.clone())));
        out.extend(self.group.iter().map(|g| (3, g.clone())));
        if self.cluster || (self.producer && self.idempotent) {
            out.push((4, "kafka-cluster".to_string()));
        }
        out.extend(self.transactional_id.iter().map(|t| (5, t.clone())));
        out.extend(self.delegation_token.iter().map(|t| (6, t.clone())));
        out
    }

    fn pattern(&self, default: i8) -> Result<i8, CliError> {
        self.resource_pattern_type.as_deref().map_or(Ok(default), |p| code_of(&PATTERNS, "pattern type", p))
    }

    /// The operations asked for on a resource of `resource_type`.
    fn operations(&self, resource_type: i8) -> Result<Vec<i8>, CliError> {
        let mut ops: Vec<i8> =
            self.operation.iter().map(|o| code_of(&OPERATIONS, "operation", o)).collect::<Result<_, _>>()?;
        if self.producer {
            match resource_type {
                2 => ops.extend([4, 8, 5]),
                4 => ops.push(12),
                5 => ops.extend([4, 8]),
                _ => {}
            }
        }
        if self.consumer {
            match resource_type {
                2 => ops.extend([3, 8]),
                3 => ops.push(3),
                _ => {}
            }
        }
        ops.sort_unstable();
        ops.dedup();
        Ok(ops)
    }

    /// The bindings to create.
    fn creations(&self) -> Result<Vec<Binding>, CliError> {
        let pattern = self.pattern(3)?;
        if !matches!(pattern, 3 | 4) {
            return Err(CliError::Usage("ACLs are created with --resource-pattern-type literal or prefixed".into()));
        }
        let resources = self.resources();
        if resources.is_empty() {
            return Err(CliError::Usage(
                "name a resource: --topic, --group, --cluster, --transactional-id or --delegation-token".into(),
            ));
        }
        if self.allow_principal.is_empty() && self.deny_principal.is_empty() {
            return Err(CliError::Usage("name who: --allow-principal or --deny-principal".into()));
        }
        let hosts = |h: &[String]| if h.is_empty() { vec!["*".to_string()] } else { h.to_vec() };
        let mut out = Vec::new();
        for (rtype, rname) in &resources {
            let ops = self.operations(*rtype)?;
            if ops.is_empty() {
                return Err(CliError::Usage("name the operations: --operation (or --producer / --consumer)".into()));
            }
            for (permission, principals, hosts) in
                [(3, &self.allow_principal, hosts(&self.allow_host)), (2, &self.deny_principal, hosts(&self.deny_host))]
            {
                for principal in principals {
                    for host in &hosts {
                        for op in &ops {
                            out.push(Binding {
                                resource_type: *rtype,
                                resource_name: rname.clone(),
                                pattern: if *rtype == 4 { 3 } else { pattern },
                                principal: principal.clone(),
                                host: host.clone(),
                                operation: *op,
                                permission,
                            });
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// The filters for list and delete: one per named resource (or one for all).
    /// The filters for list and delete: one per resource (or any resource) x principal x
    /// host x operation named, as kafka-acls.sh builds them. `--allow-principal` matches ALLOW
    /// bindings of that principal (from `--allow-host`s, any host without), `--deny-principal`
    /// DENY ones, `--principal` either.
    fn filters(&self) -> Result<Vec<DeleteAclsFilter>, CliError> {
        let resources = self.resources();
        let pattern = self.pattern(if resources.is_empty() { 1 } else { 3 })?;
        let hosts = |h: &[String]| -> Vec<Option<String>> {
            if h.is_empty() {
                vec![None]
            } else {
                h.iter().cloned().map(Some).collect()
            }
        };
        // (principal, host, permission)
        let mut who: Vec<(Option<String>, Option<String>, i8)> = Vec::new();
        for p in &self.allow_principal {
            who.extend(hosts(&self.allow_host).into_iter().map(|h| (Some(p.clone()), h, 3)));
        }
        for p in &self.deny_principal {
            who.extend(hosts(&self.deny_host).into_iter().map(|h| (Some(p.clone()), h, 2)));
        }
        if let Some(p) = &self.principal {
            who.push((Some(p.clone()), None, 1));
        }
        if who.is_empty() {
            who.push((None, None, 1));
        }
        let ops = |rtype: i8| -> Result<Vec<i8>, CliError> {
            let ops = self.operations(rtype)?;
            Ok(if ops.is_empty() { vec![1] } else { ops })
        };
        let make = |rtype: i8,
                    name: Option<String>,
                    op: i8,
                    (principal, host, permission): &(Option<String>, Option<String>, i8)| {
            DeleteAclsFilter::default()
                .with_resource_type_filter(rtype)
                .with_resource_name_filter(name.map(StrBytes::from_string))
                .with_pattern_type_filter(if rtype == 4 && pattern != 1 { 3 } else { pattern })
                .with_principal_filter(principal.clone().map(StrBytes::from_string))
                .with_host_filter(host.clone().map(StrBytes::from_string))
                .with_operation(op)
                .with_permission_type(*permission)
        };
        let mut targets: Vec<(i8, Option<String>)> = resources.into_iter().map(|(t, n)| (t, Some(n))).collect();
        if targets.is_empty() {
            targets.push((1, None));
        }
        let mut out = Vec::new();
        for (rtype, name) in targets {
            for op in ops(rtype)? {
                for w in &who {
                    out.push(make(rtype, name.clone(), op, w));
                }
            }
        }
        Ok(out)
    }
}

pub async fn run(common: &Common, command: AclCommand) -> Result<(), CliError> {
    // Argument mistakes are found before any connection (exit 2 even when the cluster is down).
    let bindings = match &command {
        AclCommand::Create(args) => args.creations()?,
        AclCommand::List(args) => {
            args.filters()?;
            Vec::new()
        }
        AclCommand::Delete(args) => {
            // As kafka-acls.sh --remove: a resource must be named (no cluster-wide wipe by
            // accident); --principal alone narrows to one principal's ACLs.
            if args.resources().is_empty() && args.principal.is_none() {
                return Err(CliError::Usage(
                    "acl delete needs a resource (--topic, --group, --cluster, ...) or --principal".into(),
                ));
            }
            args.filters()?;
            Vec::new()
        }
    };
    let cluster = Cluster::connect(&common.connect).await?;
    let report = match command {
        AclCommand::Create(_) => {
            let req = CreateAclsRequest::default().with_creations(
                bindings
                    .iter()
                    .map(|b| {
                        AclCreation::default()
                            .with_resource_type(b.resource_type)
                            .with_resource_name(StrBytes::from_string(b.resource_name.clone()))
                            .with_resource_pattern_type(b.pattern)
                            .with_principal(StrBytes::from_string(b.principal.clone()))
                            .with_host(StrBytes::from_string(b.host.clone()))
                            .with_operation(b.operation)
                            .with_permission_type(b.permission)
                    })
                    .collect(),
            );
            let answer = cluster.send(&req).await?;
            for r in &answer.results {
                check(r.error_code, || "creating ACLs".to_string(), r.error_message.as_deref())?;
            }
            report(bindings, "Created")
        }
        AclCommand::List(args) => {
            let mut found = Vec::new();
            for f in args.filters()? {
                let req = DescribeAclsRequest::default()
                    .with_resource_type_filter(f.resource_type_filter)
                    .with_resource_name_filter(f.resource_name_filter)
                    .with_pattern_type_filter(f.pattern_type_filter)
                    .with_principal_filter(f.principal_filter)
                    .with_host_filter(f.host_filter)
                    .with_operation(f.operation)
                    .with_permission_type(f.permission_type);
                let answer = cluster.send(&req).await?;
                check(answer.error_code, || "listing ACLs".to_string(), answer.error_message.as_deref())?;
                for r in answer.resources {
                    for a in r.acls {
                        found.push(Binding {
                            resource_type: r.resource_type,
                            resource_name: r.resource_name.to_string(),
                            pattern: r.pattern_type,
                            principal: a.principal.to_string(),
                            host: a.host.to_string(),
                            operation: a.operation,
                            permission: a.permission_type,
                        });
                    }
                }
            }
            report(found, "Found")
        }
        AclCommand::Delete(args) => {
            let req = DeleteAclsRequest::default().with_filters(args.filters()?);
            let answer = cluster.send(&req).await?;
            let mut deleted = Vec::new();
            for r in answer.filter_results {
                check(r.error_code, || "deleting ACLs".to_string(), r.error_message.as_deref())?;
                for a in r.matching_acls {
                    check(a.error_code, || "deleting an ACL".to_string(), a.error_message.as_deref())?;
                    deleted.push(Binding {
                        resource_type: a.resource_type,
                        resource_name: a.resource_name.to_string(),
                        pattern: a.pattern_type,
                        principal: a.principal.to_string(),
                        host: a.host.to_string(),
                        operation: a.operation,
                        permission: a.permission_type,
                    });
                }
            }
            report(deleted, "Deleted")
        }
    };
    report.print(common.format);
    Ok(())
}
