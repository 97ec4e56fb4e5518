//! `strata`: the Strata broker binary.
//!
//! `strata server` runs a node (broker plus controller). With no flags it keeps data in
//! `./data`, listens on 127.0.0.1:9092 and is a one-voter metadata quorum of its own; with
//! `controller.quorum.voters` it is one node of a cluster.
//! SIGTERM, SIGINT and SIGHUP shut it down cleanly. `STRATA_LOG` sets the log
//! filter (`info` by default).

mod console;
mod controller_listener;
mod http;
mod settings;

#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use strata_broker::config::Role;
use strata_broker::groups::GroupCoordinator;
use strata_broker::net::{self, Limits};
use strata_broker::replica::{now_ms, METADATA_DIR};
use strata_broker::{Broker, ReplicaManager};
use strata_controller::decisions::Defaults;
use strata_controller::quorum::{QuorumController, QuorumControllerConfig, VoterEndpoint};
use strata_controller::raft::QuorumConfig;
use strata_log::data_dir::DataDirs;
use strata_metadata::channel::ControllerChannel;
use tokio::sync::watch;
use tracing_subscriber::EnvFilter;

#[derive(Parser, Debug)]
#[command(name = "strata", version, about = "Strata: a Kafka-compatible log broker")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a broker node.
    Server(settings::ServerArgs),
    /// Format this node's data directories for a cluster (as `kafka-storage format`): writes
    /// meta.properties (cluster id, node id, directory id) and the bootstrap metadata. Takes
    /// the same config flags as `server`. A node of a multi-node cluster must be formatted
    /// before its first start; the single-node default formats itself.
    Format(FormatArgs),
    /// Print a new random cluster id (as `kafka-storage random-uuid`).
    RandomUuid,
    /// Change the controller quorum's membership at run time (as `kafka-metadata-quorum.sh
    /// add-controller` / `remove-controller`, KIP-853).
    #[command(subcommand)]
    Quorum(QuorumCommand),
    #[command(flatten)]
    Admin(strata_cli::AdminCommand),
    /// Print a shell completion script: `strata completion bash > /etc/bash_completion.d/strata`.
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand, Debug)]
enum QuorumCommand {
    /// Make a running controller (formatted with --no-initial-controllers) a voter: it is added
    /// as a learner, catches up with the metadata log, then becomes a voter.
    AddVoter {
        /// CONTROLLER listeners of the current quorum, HOST:PORT[,HOST:PORT...]; the active
        /// controller is found among them.
        #[arg(long, value_name = "HOST:PORT,...")]
        bootstrap_controller: String,
        /// The new voter's node.id.
        #[arg(long)]
        controller_id: i32,
        /// The new voter's CONTROLLER listener, HOST:PORT.
        #[arg(long, value_name = "HOST:PORT")]
        controller_listener: String,
    },
    /// Remove a voter from the quorum.
    RemoveVoter {
        #[arg(long, value_name = "HOST:PORT,...")]
        bootstrap_controller: String,
        #[arg(long)]
        controller_id: i32,
    },
}

#[derive(clap::Args, Debug)]
struct FormatArgs {
    #[command(flatten)]
    server: settings::ServerArgs,
    /// The cluster id, e.g. from `strata random-uuid` (22 characters of URL-safe base64).
    #[arg(long, short = 't', value_name = "ID")]
    cluster_id: String,
    /// Leave directories that are already formatted for this cluster as they are.
    #[arg(long, short = 'g')]
    ignore_formatted: bool,
    /// This controller joins an existing quorum later (`strata quorum add-voter`): its Raft
    /// log starts without members instead of with `controller.quorum.voters`.
    #[arg(long)]
    no_initial_controllers: bool,
    /// A SCRAM user to create with the cluster, as `kafka-storage format --add-scram`:
    /// 'SCRAM-SHA-256=[name=alice,password=alice-secret]' (iterations=N optional). Repeatable.
    #[arg(long = "add-scram", short = 'S', value_name = "MECHANISM=[name=NAME,password=PASSWORD]")]
    add_scram: Vec<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let strata_log = std::env::var_os("STRATA_LOG").map(|v| v.to_string_lossy().into_owned());
    let (filter, bad_filter) = log_filter(strata_log.as_deref());
    // The server's configuration may ask for JSON log lines: read it before logging starts.
    let loaded = match &cli.command {
        Command::Server(args) => Some(settings::load(args)),
        _ => None,
    };
    let format_env = std::env::var("STRATA_LOG_FORMAT").ok();
    let configured = loaded.as_ref().and_then(|c| c.as_ref().ok()).and_then(|c| c.get("logger.format"));
    let json = match log_format(format_env.as_deref().or(configured)) {
        Ok(json) => json,
        Err(e) => {
            eprintln!("strata: {e}");
            return ExitCode::from(2);
        }
    };
    let logger = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        logger.json().flatten_event(true).with_current_span(false).with_span_list(false).init();
    } else {
        logger.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init();
    }
    if let Some(problem) = bad_filter {
        tracing::warn!(STRATA_LOG = %strata_log.as_deref().unwrap_or_default(), %problem, "invalid STRATA_LOG; logging at info");
    }
    let args = match cli.command {
        Command::Server(args) => args,
        Command::RandomUuid => {
            println!("{}", strata_log::data_dir::random_id());
            return ExitCode::SUCCESS;
        }
        Command::Quorum(cmd) => return quorum_command(cmd),
        Command::Admin(cmd) => return strata_cli::run(cmd),
        Command::Completion { shell } => {
            use clap::CommandFactory;
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "strata", &mut script);
            strata_cli::write_stdout(&script);
            return ExitCode::SUCCESS;
        }
        Command::Format(format) => {
            return match settings::load(&format.server).and_then(|c| {
                format_node(
                    &c,
                    &format.cluster_id,
                    format.ignore_formatted,
                    format.no_initial_controllers,
                    &format.add_scram,
                )
            }) {
                Ok(message) => {
                    println!("{message}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("strata format: {e:#}");
                    ExitCode::FAILURE
                }
            };
        }
    };
    let config = match loaded {
        Some(Ok(c)) => c,
        Some(Err(e)) => {
            eprintln!("strata: {e:#}");
            return ExitCode::from(2);
        }
        // Not reached: `loaded` is read for the server command.
        None => return ExitCode::FAILURE,
    };
    // As Apache Kafka's image runs `kafka-storage format --ignore-formatted -t $CLUSTER_ID`:
    // a container's first start formats its volume, later starts keep the data.
    if args.env_prefix.is_some() {
        if let Some(id) = std::env::var("CLUSTER_ID").ok().filter(|id| !id.trim().is_empty()) {
            match format_node(&config, id.trim(), true, false, &[]) {
                Ok(message) => tracing::info!(cluster_id = %id.trim(), "CLUSTER_ID set: {message}"),
                Err(e) => {
                    eprintln!("strata: formatting with CLUSTER_ID={id}: {e:#}");
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    let config_file = args.config.as_ref().map_or_else(
        || "(none)".to_owned(),
        |f| std::fs::canonicalize(f).unwrap_or_else(|_| f.clone()).display().to_string(),
    );
    let settings: Vec<String> = config.non_default().iter().map(|(k, v)| format!("{k}={v}")).collect();
    tracing::info!(version = %env!("CARGO_PKG_VERSION"), %config_file, non_default = %settings.join(" "), "starting strata");
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("strata: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("strata: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Whether log lines are JSON: `STRATA_LOG_FORMAT`, else `logger.format` (`text`, the
/// default, or `json`, any case).
fn log_format(value: Option<&str>) -> Result<bool, String> {
    match value.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
        None | Some("") | Some("text") => Ok(false),
        Some("json") => Ok(true),
        Some(other) => Err(format!("logger.format (or STRATA_LOG_FORMAT) is {other:?}: expected text or json")),
    }
}

/// The log filter `STRATA_LOG` asks for, and what is wrong with it if it cannot be used. Unset or
/// empty is `info`. A value `EnvFilter` refuses, or a bare word that is not a level (which
/// `EnvFilter` would take for a target, silencing every other line), falls back to `info`.
fn log_filter(value: Option<&str>) -> (EnvFilter, Option<String>) {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    let fallback = || EnvFilter::new("info");
    let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return (fallback(), None);
    };
    for directive in value.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        if !directive.contains('=') && !LEVELS.contains(&directive.to_ascii_lowercase().as_str()) {
            let problem = format!(
                "'{directive}' is not a level (off, error, warn, info, debug, trace); write TARGET=LEVEL for one target"
            );
            return (fallback(), Some(problem));
        }
    }
    match EnvFilter::try_new(value) {
        Ok(filter) => (filter, None),
        Err(e) => (fallback(), Some(e.to_string())),
    }
}

/// `strata format`: checks the cluster id, then writes the bootstrap metadata log and
/// `meta.properties` in every data directory. Refuses directories already formatted (for
/// another cluster, always).
fn format_node(
    config: &strata_broker::BrokerConfig,
    cluster_id: &str,
    ignore_formatted: bool,
    joining: bool,
    add_scram: &[String],
) -> anyhow::Result<String> {
    let mut bootstrap_records = Vec::new();
    for arg in add_scram {
        let (mechanism, name, c) = strata_security::scram::parse_add_scram(arg).map_err(anyhow::Error::msg)?;
        bootstrap_records.push(strata_metadata::MetadataRecord::ScramCredentialSet {
            name,
            mechanism: mechanism.scram_type().unwrap_or(1),
            salt: c.salt,
            stored_key: c.stored_key,
            server_key: c.server_key,
            iterations: i32::try_from(c.iterations).unwrap_or(i32::MAX),
        });
    }
    if !bootstrap_records.is_empty() && (joining || !config.process_roles().contains(&Role::Controller)) {
        anyhow::bail!("--add-scram goes to the initial controllers' format (this node starts no metadata log)");
    }
    let valid =
        cluster_id.len() == 22 && cluster_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !valid {
        anyhow::bail!(
            "cluster id '{cluster_id}' is not 22 characters of URL-safe base64 (make one with `strata random-uuid`)"
        );
    }
    let log_dirs = config.log_dirs();
    let metadata_dir = config.metadata_log_dir();
    let mut data_dirs = DataDirs::open(&log_dirs, &metadata_dir)?;
    match data_dirs.cluster_id()? {
        Some(found) if found != cluster_id => {
            anyhow::bail!("the data directories are already formatted for cluster {found}")
        }
        Some(_) if !ignore_formatted => anyhow::bail!(
            "the data directories are already formatted for cluster {cluster_id} (--ignore-formatted leaves them as they are)"
        ),
        _ => {}
    }
    data_dirs.check_node_id(config.node_id())?;
    let was_formatted = data_dirs.cluster_id()?.is_some();
    let metadata_log = metadata_dir.join(METADATA_DIR);
    let storage = strata_log::storage::FsStorage;
    // A metadata log of an earlier build counts as formatted: the first start migrates it.
    let legacy = metadata_log.join(strata_controller::bootstrap::LEGACY_LOG).exists();
    if legacy || strata_controller::raft::RaftStore::exists(&storage, &metadata_log)? {
        if !ignore_formatted {
            anyhow::bail!("{} already holds a metadata log", metadata_log.display());
        }
        tracing::info!(dir = %metadata_log.display(), "metadata log already formatted; left as it is");
    } else if !config.process_roles().contains(&Role::Controller) {
        // A broker-only node learns the whole metadata log from the controllers.
        std::fs::create_dir_all(&metadata_log).with_context(|| format!("cannot create {}", metadata_log.display()))?;
    } else if joining {
        std::fs::create_dir_all(&metadata_log).with_context(|| format!("cannot create {}", metadata_log.display()))?;
        let marker = metadata_log.join(JOINING_MARKER);
        std::fs::write(&marker, b"").with_context(|| format!("cannot write {}", marker.display()))?;
    } else {
        let voters: Vec<u64> = initial_voters(config).iter().map(|v| v.id as u64).collect();
        strata_controller::bootstrap::format(&storage, &metadata_log, &voters, cluster_id, &bootstrap_records)
            .context("cannot write the bootstrap metadata")?;
    }
    data_dirs.write_missing(cluster_id, config.node_id())?;
    let dirs: Vec<String> = data_dirs.paths().map(|p| p.display().to_string()).collect();
    if was_formatted {
        return Ok(format!(
            "{} already formatted for cluster {cluster_id}, node {}; kept as it is",
            dirs.join(","),
            config.node_id()
        ));
    }
    Ok(format!("Formatted {} for cluster {cluster_id}, node {}", dirs.join(","), config.node_id()))
}

async fn run(config: strata_broker::BrokerConfig) -> anyhow::Result<()> {
    // Registered first: a stop signal that arrives while the node starts (a client may already
    // be served) is kept and stops it cleanly once it is up, instead of killing it.
    let signals = StopSignals::install();
    warn_about_trust(&config);
    let log_dirs = config.log_dirs();
    let metadata_dir = config.metadata_log_dir();
    // Held until the process ends: a second broker on any of these directories is refused.
    let mut data_dirs = DataDirs::open(&log_dirs, &metadata_dir)?;
    data_dirs.check_node_id(config.node_id())?;
    let voters = config.quorum_voters();
    let roles = config.process_roles();
    let (is_broker, is_controller) = (roles.contains(&Role::Broker), roles.contains(&Role::Controller));
    // A node of a configured quorum never formats itself: an empty directory there is a lost
    // disk or a mistake, not a new cluster (Kafka refuses too).
    if !voters.is_empty() && data_dirs.cluster_id()?.is_none() {
        anyhow::bail!(
            "the data directories ({}) are not formatted: a node with controller.quorum.voters must be formatted first, with `strata format --cluster-id ID` and the same config (in a container started with --env-prefix: set CLUSTER_ID)",
            data_dirs.paths().map(|p| p.display().to_string()).collect::<Vec<_>>().join(",")
        );
    }
    check_metadata_log_location(&data_dirs, &metadata_dir)?;
    let cluster_id = data_dirs.cluster_id()?.map(str::to_owned);
    // The listeners for clients and brokers (a controller-only node has none), each with its
    // TLS and SASL read now: a bad keystore or JAAS entry stops the start here.
    let credentials = Arc::new(strata_broker::listeners::ImageCredentials::default());
    let mut inter_broker_security = None;
    let mut console_cluster = None;
    let client_listeners = if is_broker {
        let inter = config.inter_broker_listener().map_err(anyhow::Error::msg)?;
        let mut bound = Vec::new();
        for mut spec in config.client_listeners().map_err(anyhow::Error::msg)? {
            let (socket, local) = net::bind(&spec.bind).await.with_context(|| {
                format!("cannot listen on {}:{} (listener {})", spec.bind.0, spec.bind.1, spec.name)
            })?;
            // With port 0 the advertised port is the one the OS picked.
            if spec.advertised.1 == 0 {
                spec.advertised.1 = local.port();
            }
            let store: Arc<dyn strata_security::sasl::CredentialStore> = credentials.clone();
            let listener =
                strata_broker::listeners::Listener::build(&config, spec, store).map_err(anyhow::Error::msg)?;
            bound.push((socket, local, Arc::new(listener)));
        }
        // The inter-broker listener first: its address is the broker's registered host and port.
        bound.sort_by_key(|(_, _, l)| l.spec.name != inter.name);
        // How this broker connects to the others: the inter-broker listener's TLS and SASL
        // login. A node of the single-node default (no controller.quorum.voters) has no other
        // broker to reach.
        if config.is_explicit("controller.quorum.voters") {
            inter_broker_security =
                strata_broker::listeners::inter_broker_client_security(&config, &inter).map_err(anyhow::Error::msg)?;
        }
        if config.get("console.enable").is_some_and(|v| v.trim() == "true") {
            // The console reads the cluster as a client of this node's inter-broker listener.
            let security =
                strata_broker::listeners::inter_broker_client_security(&config, &inter).map_err(anyhow::Error::msg)?;
            if let Some((_, _, l)) = bound.first() {
                let addr = format!("{}:{}", l.spec.advertised.0, l.spec.advertised.1);
                let cluster = strata_cli::Cluster::new(addr, security, Duration::from_secs(10));
                console_cluster = Some(cluster);
            }
        }
        Some(bound)
    } else {
        None
    };
    let quorum_voters = initial_voters(&config);
    let defaults = Defaults {
        num_partitions: config.num_partitions(),
        default_replication_factor: config.default_replication_factor(),
        election: strata_controller::partition_change::ElectionDefaults {
            unclean_leader_election: config.get("unclean.leader.election.enable").is_some_and(|v| v.trim() == "true"),
            min_insync_replicas: usize::try_from(config.number("min.insync.replicas")).unwrap_or(1).max(1),
        },
    };
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    // The operator's HTTP listener (/metrics, /health, /ready) comes up before the logs load,
    // so that /health answers (and /ready says not yet) while the node starts.
    let metrics = Arc::new(strata_broker::metrics::BrokerMetrics::new());
    let http_state = Arc::new(http::HttpState::new(metrics.clone()));
    if let Some(cluster) = console_cluster {
        let _ = http_state.console.set(Arc::new(console::Console::new(cluster)));
    }
    if let Some(value) = config.get("http.listener") {
        let (host, port) = http::parse_listener(value).map_err(anyhow::Error::msg)?;
        let socket = tokio::net::TcpListener::bind((host.as_str(), port))
            .await
            .with_context(|| format!("cannot listen on http.listener={value}"))?;
        let console = if http_state.console.get().is_some() { " and the web console at /" } else { "" };
        tracing::info!(listen = %socket.local_addr()?, "http.listener: serving /metrics, /health, /ready{console}");
        tokio::spawn(http::serve(socket, http_state.clone(), shutdown_rx.clone()));
    }
    if inter_broker_security.is_some() {
        tokio::spawn(watch_tls_files("inter-broker", None, inter_broker_security.clone(), shutdown_rx.clone()));
    }
    // Set once the broker exists: the controller listener hands forwarded requests to it.
    let broker_cell: Arc<std::sync::OnceLock<Arc<Broker>>> = Arc::default();

    let metadata_log = metadata_dir.join(METADATA_DIR);
    // A broker-only node is never a voter: like a joining controller, its Raft store starts
    // empty and the active controller adds it (as a learner) when it registers.
    let joining = metadata_log.join(JOINING_MARKER).exists() || !is_controller;
    let storage: Arc<dyn strata_log::storage::Storage> = Arc::new(strata_log::storage::FsStorage);
    let initial: Vec<u64> = if joining { Vec::new() } else { quorum_voters.iter().map(|v| v.id as u64).collect() };
    let cluster_id = strata_controller::bootstrap::prepare(
        &storage,
        &metadata_log,
        &strata_controller::bootstrap::Node {
            node_id: config.node_id(),
            voters: &initial,
            cluster_id: cluster_id.as_deref(),
            joining,
            may_self_format: voters.is_empty(),
        },
    )
    .context("cannot open the metadata log")?;
    // Before anything else can fail: a store formatted here is never left without the
    // meta.properties that says whose it is.
    data_dirs.write_missing(&cluster_id, config.node_id())?;
    let quorum = start_quorum(
        &config,
        &quorum_voters,
        !voters.is_empty(),
        joining,
        &cluster_id,
        defaults,
        &metadata_log,
        broker_cell.clone(),
        shutdown_rx.clone(),
    )
    .await?;
    let _ = http_state.quorum.set(quorum.clone());
    // Opening the log manager reads (and removes) the record of a clean shutdown, which the
    // registration passes on (KIP-966).
    let replicas = Arc::new(
        ReplicaManager::with_log_dirs(log_dirs.clone(), config.topic_defaults())?
            .with_node_id(config.node_id())
            .with_inter_broker_security(inter_broker_security),
    );
    credentials.attach(replicas.clone());
    // A broker registers a new incarnation, fenced, and waits until its metadata holds that
    // registration: what it loads and serves from then on is at least as new as the
    // cluster's metadata when it registered, never what its own log had before it stopped.
    let broker_epoch = match &client_listeners {
        Some(listeners) => {
            let endpoints: Vec<strata_metadata::image::Endpoint> = listeners
                .iter()
                .map(|(_, _, l)| strata_metadata::image::Endpoint {
                    name: l.spec.name.clone(),
                    host: l.spec.advertised.0.clone(),
                    port: l.spec.advertised.1,
                    security_protocol: l.spec.protocol.id(),
                })
                .collect();
            Some(
                register_with_quorum(
                    &quorum,
                    config.node_id(),
                    endpoints,
                    config.rack(),
                    replicas.previous_broker_epoch(),
                )
                .await,
            )
        }
        None => None,
    };
    let controller: Arc<dyn ControllerChannel> = quorum.clone();
    if is_broker {
        let ms = |key: &str| std::time::Duration::from_millis(config.number(key).max(0) as u64);
        let fetch = strata_broker::replica::fetcher::FetchSettings {
            wait_max_ms: config.number("replica.fetch.wait.max.ms") as i32,
            min_bytes: config.number("replica.fetch.min.bytes") as i32,
            max_bytes: config.number("replica.fetch.max.bytes") as i32,
            response_max_bytes: config.number("replica.fetch.response.max.bytes") as i32,
            backoff: ms("replica.fetch.backoff.ms"),
            socket_timeout: ms("replica.socket.timeout.ms"),
        };
        replicas.start_replication(
            controller.clone(),
            fetch,
            config.number("replica.lag.time.max.ms"),
            &tokio::runtime::Handle::current(),
            shutdown_rx.clone(),
        );
    }
    let started = std::time::Instant::now();
    // Opening every log (and starting leader epochs) happens on the metadata loader; removing
    // deleted topics' directories waits on the disk too: neither holds an async worker, so
    // the heartbeats go on meanwhile.
    quorum.register_publisher(replicas.clone()).await;
    {
        let replicas = replicas.clone();
        tokio::task::spawn_blocking(move || replicas.remove_deleted_topics_data())
            .await
            .context("removing the data of deleted topics")?;
    }
    tracing::info!(
        partitions = replicas.all_partitions().len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "logs loaded"
    );
    // Then the controller unfences it (Kafka's broker waits for this before it serves), and
    // it leads partitions again.
    let heartbeats = match broker_epoch {
        Some(epoch) => {
            wait_until_unfenced(&quorum, config.node_id(), epoch).await;
            let every = Duration::from_millis(config.number("broker.heartbeat.interval.ms").max(1) as u64);
            Some(tokio::spawn(heartbeat_loop(quorum.clone(), config.node_id(), epoch, every, shutdown_rx.clone())))
        }
        None => None,
    };

    let limits = Limits::from_config(&config);
    let hw_checkpoint_every =
        Duration::from_millis(config.number("replica.high.watermark.checkpoint.interval.ms").max(1) as u64);
    let producer_expiry_every = config.producer_id_expiration_check_interval_ms();
    let groups = if is_broker {
        let groups = GroupCoordinator::start(&config, controller.clone(), replicas.clone())
            .await
            .context("cannot start the group coordinator")?;
        quorum.register_publisher(groups.clone()).await;
        tokio::spawn(groups.clone().run_timers(shutdown_rx.clone()));
        groups
    } else {
        GroupCoordinator::without_shards(replicas.clone())
    };
    let producer_ids = Arc::new(strata_broker::producer_ids::ProducerIdManager::new(config.node_id()));
    let txn = strata_broker::txn::TxnCoordinator::start(
        &config,
        controller.clone(),
        replicas.clone(),
        groups.clone(),
        producer_ids.clone(),
    );
    if is_broker {
        quorum.register_publisher(txn.clone()).await;
        tokio::spawn(txn.clone().run_timers(shutdown_rx.clone()));
    }
    replicas
        .start_log_maintenance(strata_log::maintenance::MaintenanceConfig {
            retention_check_interval: Duration::from_millis(config.retention_check_interval_ms()),
            flush_scheduler_interval: Duration::from_millis(config.flush_scheduler_interval_ms()),
            cleaner: config.cleaner(),
        })
        .context("cannot start the log maintenance threads")?;
    let broker = Arc::new(
        Broker::new(config, controller.clone(), replicas.clone(), groups, txn, producer_ids, shutdown_rx.clone())
            .with_metrics(metrics),
    );
    let _ = broker_cell.set(broker.clone());
    let _ = http_state.broker.set(broker.clone());
    // The lag sampler feeds the console's charts: only where http.listener serves them.
    if let Some(console) = http_state.console.get().filter(|_| broker.config.get("http.listener").is_some()) {
        let every = Duration::from_millis(
            u64::try_from(broker.config.number("console.lag.sample.ms")).unwrap_or(5000).max(100),
        );
        tokio::spawn(console.clone().sample_lag(every, shutdown_rx.clone()));
    }

    spawn_periodic(shutdown_rx.clone(), Duration::from_millis(producer_expiry_every), {
        let replicas = replicas.clone();
        move || replicas.remove_expired_producers(now_ms())
    });
    // After the first publish: every partition has its registration, so none is checkpointed
    // with the log end it was opened with.
    spawn_periodic(shutdown_rx.clone(), hw_checkpoint_every, {
        let replicas = replicas.clone();
        move || replicas.checkpoint_high_watermarks()
    });

    let log_dirs: Vec<String> = log_dirs.iter().map(|d| d.display().to_string()).collect();
    let roles: Vec<&str> = roles.iter().map(|r| if *r == Role::Broker { "broker" } else { "controller" }).collect();
    signals.serving();
    let servers = match client_listeners {
        Some(listeners) => {
            let shared = net::SharedLimits::new(&limits);
            let mut servers = Vec::new();
            for (socket, local, listener) in listeners {
                tracing::info!(listen = %local, listener = %listener.spec.name, protocol = listener.spec.protocol.name(),
                    advertised = %format!("{}:{}", listener.spec.advertised.0, listener.spec.advertised.1), "listening");
                if listener.tls.is_some() || listener.sasl.is_some() {
                    tokio::spawn(net::watch_security_files(listener.clone(), shutdown_rx.clone()));
                }
                servers.push(tokio::spawn(net::serve(
                    socket,
                    listener,
                    broker.clone(),
                    limits,
                    shared.clone(),
                    shutdown_rx.clone(),
                )));
            }
            tracing::info!(node_id = broker.node_id, roles = %roles.join(","),
                log_dirs = %log_dirs.join(","), metadata_log_dir = %metadata_dir.display(), "strata is serving");
            servers
        }
        None => {
            tracing::info!(node_id = broker.node_id, roles = %roles.join(","),
                metadata_log_dir = %metadata_dir.display(), "strata is serving (controller only: no listener for clients)");
            Vec::new()
        }
    };
    http_state.ready.store(true, std::sync::atomic::Ordering::Relaxed);
    let signal = signals.wait().await;
    http_state.ready.store(false, std::sync::atomic::Ordering::Relaxed);
    tracing::info!(%signal, "shutting down: no new connections, finishing requests in flight");
    let _ = shutdown_tx.send(true);
    for server in servers {
        let _ = server.await;
    }
    if let Some(heartbeats) = heartbeats {
        // The controlled shutdown: leadership leaves this broker before its logs close.
        let _ = heartbeats.await;
    }
    let closing = std::time::Instant::now();
    // The log maintenance stops (the cleaners after the group of segments each is writing)
    // before the logs close.
    tokio::task::spawn_blocking(move || replicas.close_all(broker_epoch)).await.context("closing logs")?;
    tracing::info!(elapsed_ms = closing.elapsed().as_millis() as u64, "logs flushed and closed; bye");
    Ok(())
}

/// In the metadata directory of a controller formatted with `--no-initial-controllers`.
const JOINING_MARKER: &str = "raft.joining";

/// `strata quorum ...`: a KIP-853 request to the active controller among `bootstrap`.
fn quorum_command(cmd: QuorumCommand) -> ExitCode {
    use kafka_protocol::messages::add_raft_voter_request::Listener;
    use kafka_protocol::messages::{AddRaftVoterRequest, RemoveRaftVoterRequest};
    use kafka_protocol::protocol::StrBytes;
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("strata quorum: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result: Result<String, String> = runtime.block_on(async {
        let (bootstrap, id) = match &cmd {
            QuorumCommand::AddVoter { bootstrap_controller, controller_id, .. }
            | QuorumCommand::RemoveVoter { bootstrap_controller, controller_id } => {
                (bootstrap_controller, *controller_id)
            }
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let mut last = String::from("no controller answered");
        loop {
            for addr in bootstrap.split(',').map(str::trim).filter(|a| !a.is_empty()) {
                let client = strata_client::KafkaClient::new(addr.to_owned(), "strata-quorum".into());
                let answer = match &cmd {
                    QuorumCommand::AddVoter { controller_listener, .. } => {
                        let Some((host, port)) = controller_listener.rsplit_once(':') else {
                            return Err(format!("--controller-listener {controller_listener} is not HOST:PORT"));
                        };
                        let Ok(port) = port.parse::<u16>() else {
                            return Err(format!("bad port in --controller-listener {controller_listener}"));
                        };
                        let req = AddRaftVoterRequest::default()
                            .with_timeout_ms(30_000)
                            .with_voter_id(id)
                            .with_listeners(vec![Listener::default()
                                .with_name(StrBytes::from_static_str("CONTROLLER"))
                                .with_host(StrBytes::from_string(host.to_owned()))
                                .with_port(port)]);
                        client.call(0, &req).await.map(|r| (r.error_code, r.error_message.map(|m| m.to_string())))
                    }
                    QuorumCommand::RemoveVoter { .. } => {
                        let req = RemoveRaftVoterRequest::default().with_voter_id(id);
                        client.call(0, &req).await.map(|r| (r.error_code, r.error_message.map(|m| m.to_string())))
                    }
                };
                match answer {
                    Ok((0, _)) => {
                        return Ok(match &cmd {
                            QuorumCommand::AddVoter { .. } => format!("controller {id} is a voter"),
                            QuorumCommand::RemoveVoter { .. } => format!("controller {id} was removed from the quorum"),
                        })
                    }
                    // NOT_CONTROLLER: another of the bootstrap controllers is active.
                    Ok((41, msg)) => last = msg.unwrap_or_else(|| format!("{addr} is not the active controller")),
                    Ok((code, msg)) => {
                        return Err(format!("{addr} answered error {code}: {}", msg.unwrap_or_default()));
                    }
                    Err(e) => last = format!("{addr}: {e}"),
                }
            }
            if std::time::Instant::now() > deadline {
                return Err(last);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    match result {
        Ok(message) => {
            println!("{message}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("strata quorum: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The initial controllers: `controller.quorum.voters`, or this node alone (the single-node
/// default; its endpoint is the CONTROLLER listener if there is one, else none: port 0).
fn initial_voters(config: &strata_broker::BrokerConfig) -> Vec<strata_broker::config::Voter> {
    let voters = config.quorum_voters();
    if !voters.is_empty() {
        return voters;
    }
    let (host, port) = config.controller_listen_addr().ok().flatten().unwrap_or_default();
    vec![strata_broker::config::Voter { id: config.node_id(), host, port }]
}

/// Starts this node's member of the metadata quorum and its CONTROLLER listener (the
/// listener named CONTROLLER in `listeners`, else this node's entry of
/// `controller.quorum.voters`).
#[allow(clippy::too_many_arguments)]
async fn start_quorum(
    config: &strata_broker::BrokerConfig,
    voters: &[strata_broker::config::Voter],
    configured: bool,
    joining: bool,
    cluster_id: &str,
    defaults: Defaults,
    dir: &Path,
    broker: Arc<std::sync::OnceLock<Arc<Broker>>>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<Arc<QuorumController>> {
    // The single-node default has no CONTROLLER listener unless `listeners` names one; a
    // broker-only node has none (it dials the controllers, see the Raft transport).
    let me = voters.iter().find(|v| v.id == config.node_id());
    let addr = match (config.controller_listen_addr().map_err(anyhow::Error::msg)?, me) {
        (_, None) => None,
        (Some(a), Some(_)) => Some(a),
        (None, Some(me)) if configured => Some((me.host.clone(), me.port)),
        (None, Some(_)) => None,
    };
    let listener = match addr {
        Some(addr) => Some(
            net::bind(&addr)
                .await
                .with_context(|| format!("cannot listen on the controller listener {}:{}", addr.0, addr.1))?,
        ),
        None => None,
    };
    let (controller_tls, controller_client) = controller_listener_security(config)?;
    if controller_tls.is_some() || controller_client.is_some() {
        tokio::spawn(watch_tls_files(
            "CONTROLLER",
            controller_tls.clone(),
            controller_client.clone(),
            shutdown.clone(),
        ));
    }
    let mut quorum = QuorumConfig::new(config.node_id() as u64);
    quorum.snapshot_bytes = config.number("metadata.log.max.record.bytes.between.snapshots").max(1) as u64;
    let q = QuorumController::start(
        dir,
        QuorumControllerConfig {
            node_id: config.node_id(),
            voters: voters.iter().map(|v| VoterEndpoint { id: v.id, host: v.host.clone(), port: v.port }).collect(),
            cluster_id: cluster_id.to_owned(),
            defaults,
            quorum,
            tick: Duration::from_millis(100),
            session_timeout: Duration::from_millis(config.number("broker.session.timeout.ms").max(1) as u64),
            joining,
            leader_rebalance: config.get("auto.leader.rebalance.enable").is_some_and(|v| v.trim() == "true").then(
                || {
                    (
                        Duration::from_secs(config.number("leader.imbalance.check.interval.seconds").max(1) as u64),
                        config.number("leader.imbalance.per.broker.percentage").clamp(0, 100) as u32,
                    )
                },
            ),
            controller_security: controller_client,
        },
        &tokio::runtime::Handle::current(),
    )
    .context("cannot start the metadata quorum")?;
    match listener {
        Some((listener, local)) => {
            let authorizer = config.get("authorizer.class.name").is_some_and(|v| !v.trim().is_empty());
            let super_users = authorizer
                .then(|| strata_security::acl::Authorizer::parse_super_users(config.get("super.users").unwrap_or("")))
                .transpose()
                .map_err(|e| anyhow::anyhow!("super.users: {e}"))?;
            let security = controller_listener::ControllerSecurity { tls: controller_tls, super_users };
            tokio::spawn(controller_listener::serve(listener, q.clone(), broker, security, shutdown));
            tracing::info!(listen = %local, voters = voters.len(), "controller listening; waiting for the metadata quorum");
        }
        None if me.is_some() => tracing::info!("a one-voter metadata quorum (no CONTROLLER listener)"),
        None => {
            tracing::info!(voters = voters.len(), "observing the metadata quorum (broker only: no CONTROLLER listener)")
        }
    }
    Ok(q)
}

/// Re-reads, every few seconds off the async workers, the certificate files of this node's
/// own TLS that the client listeners' watchers do not cover: the CONTROLLER listener's server
/// side, and the client side of its connections to other nodes (`what` names them in the
/// log). A file that does not load keeps the previous configuration.
async fn watch_tls_files(
    what: &'static str,
    server: Option<Arc<strata_security::tls::TlsListener>>,
    client: Option<Arc<strata_security::client::ClientSecurity>>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
        let (server, client) = (server.clone(), client.clone());
        let reloaded = tokio::task::spawn_blocking(move || {
            (server.map(|s| s.reload_if_changed()), client.map(|c| c.reload_if_changed()))
        })
        .await
        .unwrap_or((None, None));
        for (side, result) in [("server", reloaded.0), ("client", reloaded.1)] {
            match result {
                Some(Ok(true)) => tracing::info!(what, side, "TLS files changed: new connections use the new ones"),
                Some(Err(e)) => {
                    tracing::warn!(what, side, error = %e, "TLS files changed but do not load; keeping the previous ones")
                }
                _ => {}
            }
        }
    }
}

/// The CONTROLLER listener's TLS: the server side, and the client side nodes dial it with.
type ControllerListenerSecurity =
    (Option<Arc<strata_security::tls::TlsListener>>, Option<Arc<strata_security::client::ClientSecurity>>);

/// The CONTROLLER listener's security, from its protocol in `listener.security.protocol.map`
/// (PLAINTEXT when it is not named) and its `listener.name.NAME.ssl.*` keys: the server side
/// (for a node with the listener) and the client side every node dials controllers with (Raft
/// peers, brokers). SSL only: SASL on this listener is refused at start.
fn controller_listener_security(config: &strata_broker::BrokerConfig) -> anyhow::Result<ControllerListenerSecurity> {
    use strata_security::SecurityProtocol;
    let names = strata_broker::listeners::controller_listener_names(config);
    let Some(name) = names.first() else { return Ok((None, None)) };
    let map = strata_broker::listeners::protocol_map(config)
        .map_err(|e| anyhow::anyhow!("listener.security.protocol.map: {e}"))?;
    match map.get(name).copied().unwrap_or(SecurityProtocol::Plaintext) {
        SecurityProtocol::Plaintext => Ok((None, None)),
        SecurityProtocol::Ssl => {
            let get = |key: &str| config.listener_get(name, key);
            let fail = |e: strata_security::SecurityError| anyhow::anyhow!("controller listener {name}: {e}");
            let settings = strata_security::tls::TlsSettings::from_config(&get).map_err(fail)?;
            let verify = get("ssl.endpoint.identification.algorithm").is_none_or(|v| !v.trim().is_empty());
            let client = strata_security::client::ClientSecurity::tls_only(settings.clone(), verify).map_err(fail)?;
            let server = strata_security::tls::TlsListener::new(settings).map_err(fail)?;
            Ok((Some(server), Some(Arc::new(client))))
        }
        other => anyhow::bail!(
            "controller listener {name}: {} is not supported there yet (PLAINTEXT or SSL; with ssl.client.auth=required for mutual TLS)",
            other.name()
        ),
    }
}

/// Heartbeats to the active controller every `every` until shutdown, then asks for a
/// controlled shutdown (its partitions stop being led here before the process stops).
async fn heartbeat_loop(
    quorum: Arc<QuorumController>,
    node_id: i32,
    epoch: i64,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(every);
    let mut fenced = false;
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = ticker.tick() => {}
        }
        match quorum.send_heartbeat(node_id, epoch, false).await {
            Ok(reply) => {
                if reply.is_fenced != fenced {
                    tracing::info!(fenced = reply.is_fenced, "the controller changed this broker's fencing");
                }
                fenced = reply.is_fenced;
            }
            Err(e) => tracing::debug!(error = %e.message, "heartbeat not delivered"),
        }
    }
    let asked = tokio::time::timeout(Duration::from_secs(5), quorum.send_heartbeat(node_id, epoch, true)).await;
    match asked {
        Ok(Ok(_)) => tracing::info!("controlled shutdown: the controller moved this broker's partitions"),
        Ok(Err(e)) => tracing::info!(error = %e.message, "controlled shutdown not acknowledged; stopping anyway"),
        Err(_) => tracing::info!("controlled shutdown not acknowledged within 5 s; stopping anyway"),
    }
}

/// Registers this broker with the active controller (KRaft's BrokerRegistration, with the
/// epoch of its last clean shutdown or -1), retrying until it is done, then waits until this
/// node's metadata holds the registration (it has caught up). Returns the broker epoch.
/// `listeners`: every listener's advertised endpoint, the inter-broker one first.
async fn register_with_quorum(
    quorum: &QuorumController,
    node_id: i32,
    listeners: Vec<strata_metadata::image::Endpoint>,
    rack: Option<String>,
    previous_broker_epoch: i64,
) -> i64 {
    let mut last_log = std::time::Instant::now();
    // One per process: a retried registration (its first attempt committed, the answer lost)
    // is the same registration.
    let incarnation_id = uuid::Uuid::new_v4();
    // A one-voter quorum is ready within milliseconds; a cluster may take an election.
    let mut backoff = Duration::from_millis(5);
    let epoch = loop {
        let (host, port) = listeners.first().map(|l| (l.host.clone(), l.port)).unwrap_or_default();
        let registration = strata_controller::decisions::BrokerRegistration {
            broker_id: node_id,
            host,
            port,
            rack: rack.clone(),
            incarnation_id,
            previous_broker_epoch,
            listeners: listeners.clone(),
        };
        match quorum.register_broker(registration).await {
            Ok(epoch) => {
                tracing::info!(broker_epoch = epoch, previous_broker_epoch, "registered with the controller");
                break epoch;
            }
            Err(e) => {
                if last_log.elapsed() > Duration::from_secs(5) {
                    tracing::info!(error = %e.message, "waiting for the metadata quorum to register this broker");
                    last_log = std::time::Instant::now();
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(200));
            }
        }
    };
    let mut last_log = std::time::Instant::now();
    while quorum.image().brokers.get(&node_id).is_none_or(|b| b.epoch < epoch) {
        if last_log.elapsed() > Duration::from_secs(5) {
            tracing::info!(
                broker_epoch = epoch,
                records_applied = quorum.image().records_applied,
                "catching up with the metadata log before serving"
            );
            last_log = std::time::Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    epoch
}

/// Heartbeats until the controller unfences this broker, which it does once the broker's
/// metadata holds its registration (Kafka's `BrokerLifecycleManager`: the broker enables
/// request processing only then).
async fn wait_until_unfenced(quorum: &QuorumController, node_id: i32, epoch: i64) {
    let mut last_log = std::time::Instant::now();
    let mut backoff = Duration::from_millis(5);
    loop {
        match quorum.send_heartbeat(node_id, epoch, false).await {
            Ok(reply) if !reply.is_fenced => {
                tracing::info!(broker_epoch = epoch, "unfenced by the controller");
                return;
            }
            Ok(reply) if last_log.elapsed() > Duration::from_secs(5) => {
                tracing::info!(caught_up = reply.is_caught_up, "waiting for the controller to unfence this broker");
                last_log = std::time::Instant::now();
            }
            Err(e) if last_log.elapsed() > Duration::from_secs(5) => {
                tracing::info!(error = %e.message, "waiting for the controller to unfence this broker");
                last_log = std::time::Instant::now();
            }
            _ => {}
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_millis(200));
    }
}

/// Refuses to start when the metadata log is not in `metadata_dir` but in another data
/// directory (log.dirs reordered, or metadata.log.dir changed): the broker would otherwise look
/// for it in the wrong place and refuse with a less helpful message.
fn check_metadata_log_location(data_dirs: &DataDirs, metadata_dir: &Path) -> anyhow::Result<()> {
    if metadata_dir.join(METADATA_DIR).exists() {
        return Ok(());
    }
    if let Some(other) = data_dirs.paths().find(|d| d.join(METADATA_DIR).exists()) {
        anyhow::bail!(
            "the metadata log ({METADATA_DIR}) is in {}, but metadata.log.dir is {} (the first of log.dirs unless set); list {} first in log.dirs or set metadata.log.dir to it",
            other.display(),
            metadata_dir.display(),
            other.display()
        );
    }
    Ok(())
}

fn spawn_periodic(mut shutdown: watch::Receiver<bool>, every: Duration, task: impl Fn() + Send + Sync + 'static) {
    let task = Arc::new(task);
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(every);
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = ticker.tick() => {
                    let t = task.clone();
                    let _ = tokio::task::spawn_blocking(move || t()).await;
                }
            }
        }
    });
}

/// Waits for a signal to shut down, returning its name: SIGTERM, SIGINT or SIGHUP (which the
/// JVM, and so Kafka, also treats as a request to stop cleanly).
/// Start-up warnings where authorization rests on the network: with an authorizer, a
/// `User:ANONYMOUS` super user makes every unauthenticated client one, and the CONTROLLER
/// listener (Raft and Envelopes, with the principal the sender names) authenticates nobody.
fn warn_about_trust(config: &strata_broker::BrokerConfig) {
    if config.get("authorizer.class.name").is_none_or(|v| v.trim().is_empty()) {
        return;
    }
    let supers = config.get("super.users").unwrap_or_default();
    if supers.split(';').any(|p| p.trim() == "User:ANONYMOUS") {
        tracing::warn!("super.users names User:ANONYMOUS: every client of a PLAINTEXT listener, and every TLS client without a certificate, may do everything; keep such listeners on a private network");
    }
    let controller_tls = strata_broker::listeners::controller_listener_names(config).first().is_some_and(|name| {
        strata_broker::listeners::protocol_map(config)
            .ok()
            .and_then(|m| m.get(name).copied())
            .is_some_and(|p| p == strata_security::SecurityProtocol::Ssl)
    });
    let controller_mtls = strata_broker::listeners::controller_listener_names(config)
        .first()
        .and_then(|name| config.listener_get(name, "ssl.client.auth"))
        .is_some_and(|v| v.trim() == "required");
    if config.controller_listen_addr().ok().flatten().is_some() && controller_tls && !controller_mtls {
        tracing::warn!("the CONTROLLER listener is SSL without ssl.client.auth=required: any TLS client may reach the quorum and send forwarded requests naming any principal; require client certificates there");
    }
    if config.controller_listen_addr().ok().flatten().is_some() && !controller_tls {
        tracing::warn!("the CONTROLLER listener is PLAINTEXT and authenticates no peer (Raft, broker registrations, and forwarded requests carrying their client's principal): keep it on a private network, or map it to SSL with ssl.client.auth=required");
    }
}

/// SIGTERM, SIGINT and SIGHUP, caught from the start of `run` on. Before the node serves, one
/// ends the process at once (a start stuck waiting for its quorum can be stopped; nothing is
/// served yet); from [`serving`](Self::serving) on it is handed to [`wait`](Self::wait), which
/// stops the node cleanly, even when it arrived between the first client being served and the
/// wait.
struct StopSignals {
    received: watch::Receiver<Option<&'static str>>,
    serving: Arc<std::sync::atomic::AtomicBool>,
}

impl StopSignals {
    fn install() -> Self {
        let (tx, received) = watch::channel(None);
        let serving = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let during_start = serving.clone();
        #[cfg(unix)]
        let registered = {
            use tokio::signal::unix::{signal, SignalKind};
            match (signal(SignalKind::terminate()), signal(SignalKind::interrupt()), signal(SignalKind::hangup())) {
                (Ok(term), Ok(int), Ok(hup)) => Some((term, int, hup)),
                _ => None,
            }
        };
        tokio::spawn(async move {
            #[cfg(unix)]
            let name = match registered {
                Some((mut term, mut int, mut hup)) => tokio::select! {
                    _ = term.recv() => "SIGTERM",
                    _ = int.recv() => "SIGINT",
                    _ = hup.recv() => "SIGHUP",
                },
                None => {
                    let _ = tokio::signal::ctrl_c().await;
                    "SIGINT"
                }
            };
            #[cfg(not(unix))]
            let name = {
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            };
            if !during_start.load(std::sync::atomic::Ordering::SeqCst) {
                tracing::warn!(signal = name, "stop signal during start-up: exiting before serving");
                std::process::exit(143);
            }
            let _ = tx.send(Some(name));
        });
        Self { received, serving }
    }

    /// From now on a stop signal stops the node cleanly (call before the first client is
    /// served).
    fn serving(&self) {
        self.serving.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// The first stop signal (one that came before this call included).
    async fn wait(mut self) -> &'static str {
        match self.received.wait_for(Option::is_some).await {
            Ok(name) => name.unwrap_or("SIGTERM"),
            Err(_) => "SIGTERM",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_format_is_text_or_json() {
        for (value, json) in [(None, false), (Some(""), false), (Some("text"), false), (Some(" JSON "), true)] {
            assert_eq!(log_format(value), Ok(json), "{value:?}");
        }
        let e = log_format(Some("logfmt")).err().unwrap_or_default();
        assert!(e.contains("expected text or json"), "{e}");
    }

    #[test]
    fn an_invalid_strata_log_falls_back_to_info_and_says_why() {
        for ok in
            [None, Some(""), Some("debug"), Some("WARN"), Some("info,strata_broker=debug"), Some("strata_log=trace")]
        {
            assert!(log_filter(ok).1.is_none(), "{ok:?}");
        }
        for bad in ["verbose", "infoo", "warn,strata=loud", "strata_broker"] {
            let (filter, problem) = log_filter(Some(bad));
            assert!(problem.is_some(), "{bad}");
            assert_eq!(filter.to_string(), "info", "{bad}");
        }
    }
}
