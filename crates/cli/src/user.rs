//! `strata user`: SCRAM credentials (AlterUserScramCredentials, DescribeUserScramCredentials),
//! as `kafka-configs.sh --entity-type users --alter --add-config 'SCRAM-SHA-512=[...]'`.
//! The password never leaves this process: the salted password is computed here (RFC 5802's
//! Hi) and only it and the salt are sent, as Kafka's Admin client does.

use bytes::Bytes;
use kafka_protocol::messages::alter_user_scram_credentials_request::{
    ScramCredentialDeletion, ScramCredentialUpsertion,
};
use kafka_protocol::messages::describe_user_scram_credentials_request::UserName;
use kafka_protocol::messages::{AlterUserScramCredentialsRequest, DescribeUserScramCredentialsRequest};
use kafka_protocol::protocol::StrBytes;
use serde_json::{json, Value};
use strata_security::sasl::Mechanism;
use strata_security::scram;

use crate::conn::Cluster;
use crate::error::{check, CliError};
use crate::output::{Report, Table};
use crate::Common;

#[derive(clap::Subcommand, Debug)]
pub enum UserCommand {
    /// Create a SCRAM user, or change its password.
    #[command(alias = "alter")]
    Create {
        name: String,
        /// The password (or --password-file).
        #[arg(long, conflicts_with = "password_file", required_unless_present = "password_file")]
        password: Option<String>,
        /// A file whose first line is the password (keeps it out of the process list).
        #[arg(long, value_name = "FILE")]
        password_file: Option<std::path::PathBuf>,
        /// SCRAM-SHA-256 or SCRAM-SHA-512.
        #[arg(long, default_value = "SCRAM-SHA-512")]
        mechanism: String,
        /// PBKDF2 iterations (Kafka's bounds: 4096 to 16384).
        #[arg(long, default_value_t = 4096)]
        iterations: u32,
    },
    /// List SCRAM users and their mechanisms (all, or the named ones).
    List { names: Vec<String> },
    /// Delete a user's SCRAM credentials (all its mechanisms, or the one named).
    Delete {
        name: String,
        #[arg(long)]
        mechanism: Option<String>,
    },
}

fn mechanism(name: &str) -> Result<Mechanism, CliError> {
    Mechanism::parse(&name.to_ascii_uppercase())
        .filter(|m| m.scram_type().is_some())
        .ok_or_else(|| CliError::Usage(format!("--mechanism {name}: SCRAM-SHA-256 or SCRAM-SHA-512")))
}

fn mechanism_name(code: i8) -> &'static str {
    match code {
        1 => "SCRAM-SHA-256",
        2 => "SCRAM-SHA-512",
        _ => "UNKNOWN",
    }
}

/// (user, [(mechanism code, iterations)]) of `names` (all when empty).
async fn describe(cluster: &Cluster, names: &[String]) -> Result<Vec<(String, Vec<(i8, i32)>)>, CliError> {
    let users = (!names.is_empty())
        .then(|| names.iter().map(|n| UserName::default().with_name(StrBytes::from_string(n.clone()))).collect());
    let answer = cluster.send(&DescribeUserScramCredentialsRequest::default().with_users(users)).await?;
    check(answer.error_code, || "describing SCRAM users".to_string(), answer.error_message.as_deref())?;
    let mut out = Vec::new();
    for r in answer.results {
        check(r.error_code, || format!("describing user {}", r.user), r.error_message.as_deref())?;
        out.push((r.user.to_string(), r.credential_infos.iter().map(|c| (c.mechanism, c.iterations)).collect()));
    }
    out.sort();
    Ok(out)
}

pub async fn run(common: &Common, command: UserCommand) -> Result<(), CliError> {
    let cluster = Cluster::connect(&common.connect).await?;
    let report = match command {
        UserCommand::Create { name, password, password_file, mechanism: m, iterations } => {
            let m = mechanism(&m)?;
            if !scram::valid_iterations(i32::try_from(iterations).unwrap_or(i32::MAX)) {
                return Err(CliError::Usage(format!("--iterations {iterations}: Kafka takes 4096 to 16384")));
            }
            let password = match (password, password_file) {
                (Some(p), _) => p,
                (None, Some(f)) => std::fs::read_to_string(&f)
                    .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", f.display())))?
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_string(),
                (None, None) => return Err(CliError::Usage("give --password or --password-file".into())),
            };
            let (salt, salted) =
                scram::salt_password(m, &password, iterations).map_err(|e| CliError::Failed(e.to_string()))?;
            let req =
                AlterUserScramCredentialsRequest::default().with_upsertions(vec![ScramCredentialUpsertion::default()
                    .with_name(StrBytes::from_string(name.clone()))
                    .with_mechanism(m.scram_type().unwrap_or(2))
                    .with_iterations(i32::try_from(iterations).unwrap_or(i32::MAX))
                    .with_salt(Bytes::from(salt))
                    .with_salted_password(Bytes::from(salted))]);
            let answer = cluster.send(&req).await?;
            for r in &answer.results {
                check(
                    r.error_code,
                    || format!("setting the {} credential of {name}", m.name()),
                    r.error_message.as_deref(),
                )?;
            }
            Report::new(json!({ "user": name, "mechanism": m.name(), "iterations": iterations }))
                .line(format!("Set the {} credential of user {name}", m.name()))
        }
        UserCommand::List { names } => {
            let users = describe(&cluster, &names).await?;
            let mut table = Table::new(&["USER", "MECHANISM", "ITERATIONS"]);
            let mut out = Vec::new();
            for (user, creds) in &users {
                for (m, i) in creds {
                    table.row(vec![user.clone(), mechanism_name(*m).into(), i.to_string()]);
                }
                out.push(json!({ "user": user, "credentials": creds.iter().map(|(m, i)| json!({ "mechanism": mechanism_name(*m), "iterations": i })).collect::<Vec<_>>() }));
            }
            Report::new(Value::Array(out)).table(table)
        }
        UserCommand::Delete { name, mechanism: m } => {
            let codes: Vec<i8> = match m {
                Some(m) => vec![mechanism(&m)?.scram_type().unwrap_or(2)],
                None => describe(&cluster, std::slice::from_ref(&name))
                    .await?
                    .into_iter()
                    .flat_map(|(_, c)| c.into_iter().map(|(m, _)| m))
                    .collect(),
            };
            if codes.is_empty() {
                return Err(CliError::kafka(
                    91,
                    format!("deleting user {name}"),
                    Some("the user has no SCRAM credentials"),
                ));
            }
            let req = AlterUserScramCredentialsRequest::default().with_deletions(
                codes
                    .iter()
                    .map(|c| {
                        ScramCredentialDeletion::default()
                            .with_name(StrBytes::from_string(name.clone()))
                            .with_mechanism(*c)
                    })
                    .collect(),
            );
            let answer = cluster.send(&req).await?;
            for r in &answer.results {
                check(r.error_code, || format!("deleting the credentials of {name}"), r.error_message.as_deref())?;
            }
            let names: Vec<&str> = codes.iter().map(|c| mechanism_name(*c)).collect();
            Report::new(json!({ "user": name, "deleted": names }))
                .line(format!("Deleted the {} credential(s) of user {name}", names.join(", ")))
        }
    };
    report.print(common.format);
    Ok(())
}
