//! `strata`'s admin subcommands: an operator's client for any Kafka-protocol cluster (Strata or
//! Apache Kafka), after Kafka's `kafka-topics.sh`, `kafka-consumer-groups.sh`,
//! `kafka-configs.sh`, `kafka-acls.sh`, `kafka-metadata-quorum.sh`, `kafka-log-dirs.sh` and the
//! console producer and consumer.
//!
//! Every subcommand takes `--bootstrap-server HOST:PORT[,HOST:PORT...]` (default
//! 127.0.0.1:9092), `--command-config FILE` (Kafka client properties: `security.protocol`,
//! `sasl.mechanism`, `sasl.jaas.config`, `ssl.truststore.location`, ...) and `--format
//! table|json`. Requests are `kafka-protocol` messages at the highest version both sides speak
//! (ApiVersions first), sent where Kafka's Admin client sends them: group requests to the
//! group's coordinator, ListOffsets, Produce and Fetch to partition leaders, DescribeLogDirs
//! to each broker, the rest to any broker.
//!
//! Exit codes ([`ExitCode`]): 0 done; 1 the cluster refused (a Kafka error, printed with its
//! name); 2 bad arguments; 3 the cluster could not be reached.

mod acl;
pub mod api;
mod cluster;
mod configs;
mod conn;
mod error;
mod group;
mod offsets;
mod output;
mod quota;
mod records;
mod time_arg;
mod topic;
mod user;

pub use conn::{Cluster, ConnectArgs};
pub use error::CliError;
pub use output::{write_stdout, Format};
pub use time_arg::{format_time_ms, parse_time_ms};

use std::process::ExitCode;

/// The admin subcommands, as `strata <command> ...`.
#[derive(clap::Subcommand, Debug)]
pub enum AdminCommand {
    /// Create, list, describe, alter and delete topics (as kafka-topics.sh).
    Topic {
        #[command(flatten)]
        common: Common,
        #[command(subcommand)]
        command: topic::TopicCommand,
    },
    /// List, describe (offsets, lag, members), reset offsets of and delete consumer groups (as
    /// kafka-consumer-groups.sh).
    Group {
        #[command(flatten)]
        common: Common,
        #[command(subcommand)]
        command: group::GroupCommand,
    },
    /// Describe and alter topic and broker configs (as kafka-configs.sh).
    Config {
        #[command(flatten)]
        common: Common,
        #[command(subcommand)]
        command: configs::ConfigCommand,
    },
    /// Create, list and delete ACLs (as kafka-acls.sh).
    Acl {
        #[command(flatten)]
        common: Common,
        #[command(subcommand)]
        command: acl::AclCommand,
    },
    /// SCRAM users: create or change a password, list, delete (as kafka-configs.sh
    /// --entity-type users --alter --add-config 'SCRAM-SHA-512=[password=...]').
    User {
        #[command(flatten)]
        common: Common,
        #[command(subcommand)]
        command: user::UserCommand,
    },
    /// Client quotas per user and client id (as kafka-configs.sh --entity-type users|clients).
    Quota {
        #[command(flatten)]
        common: Common,
        #[command(subcommand)]
        command: quota::QuotaCommand,
    },
    /// Brokers, the controller quorum and log directories (as kafka-metadata-quorum.sh and
    /// kafka-log-dirs.sh).
    Cluster {
        #[command(flatten)]
        common: Common,
        #[command(subcommand)]
        command: cluster::ClusterCommand,
    },
    /// Write records to a topic from arguments or standard input (as kafka-console-producer.sh).
    Produce {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        args: records::ProduceArgs,
    },
    /// Read records of a topic from an offset or a time (as kafka-console-consumer.sh).
    Consume {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        args: records::ConsumeArgs,
    },
}

/// The flags every admin subcommand takes (before or after the subcommand's name).
#[derive(clap::Args, Debug, Clone)]
pub struct Common {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Output: aligned tables for people, or JSON for scripts.
    #[arg(long, value_enum, default_value_t = Format::Table, global = true)]
    pub format: Format,
}

/// Runs an admin subcommand to completion and gives the process's exit code; what it found
/// goes to standard output, errors to standard error.
pub fn run(command: AdminCommand) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("strata: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

async fn dispatch(command: AdminCommand) -> Result<(), CliError> {
    match command {
        AdminCommand::Topic { common, command } => topic::run(&common, command).await,
        AdminCommand::Group { common, command } => group::run(&common, command).await,
        AdminCommand::Config { common, command } => configs::run(&common, command).await,
        AdminCommand::Acl { common, command } => acl::run(&common, command).await,
        AdminCommand::User { common, command } => user::run(&common, command).await,
        AdminCommand::Quota { common, command } => quota::run(&common, command).await,
        AdminCommand::Cluster { common, command } => cluster::run(&common, command).await,
        AdminCommand::Produce { common, args } => records::produce(&common, args).await,
        AdminCommand::Consume { common, args } => records::consume(&common, args).await,
    }
}
