//! `strata`: the Strata broker binary.
//!
//! `strata server` runs a node (broker plus its one-voter controller). With
//! no flags it keeps data in `./data` and listens on 127.0.0.1:9092.

mod settings;

#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use strata_broker::groups::GroupCoordinator;
use strata_broker::net::{self, Limits};
use strata_broker::replica::{now_ms, METADATA_DIR};
use strata_broker::{Broker, ReplicaManager};
use strata_controller::decisions::Defaults;
use strata_controller::{ControllerConfig, LocalController};
use strata_log::data_dir::{random_id, DataDirLock, MetaProperties};
use tokio::sync::watch;

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("STRATA_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let Command::Server(args) = cli.command;
    let config = match settings::load(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("strata: {e:#}");
            return ExitCode::from(2);
        }
    };
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

async fn run(config: strata_broker::BrokerConfig) -> anyhow::Result<()> {
    let data_dir: PathBuf = config.data_dir();
    prepare_data_dir(&data_dir)?;
    // Held until the process ends: a second broker on this directory is refused.
    let _lock = DataDirLock::acquire(&data_dir)?;
    let meta = MetaProperties::read(&data_dir)?;
    if let Some(m) = &meta {
        m.check_node_id(&data_dir, config.node_id())?;
    }
    let listen = config.listen_addr().map_err(anyhow::Error::msg)?;
    let (advertised_host, advertised_port) = config.advertised().map_err(anyhow::Error::msg)?;
    let (listener, local) =
        net::bind(&listen).await.with_context(|| format!("cannot listen on {}:{}", listen.0, listen.1))?;
    // With port 0 the advertised port is the one the OS picked.
    let advertised_port = if advertised_port == 0 { local.port() } else { advertised_port };

    let controller = Arc::new(
        LocalController::open(
            &data_dir.join(METADATA_DIR),
            ControllerConfig {
                node_id: config.node_id(),
                advertised_host,
                advertised_port,
                rack: config.rack(),
                defaults: Defaults {
                    num_partitions: config.num_partitions(),
                    default_replication_factor: config.default_replication_factor(),
                },
            },
            meta.as_ref().map(|m| m.cluster_id.as_str()),
        )
        .context("cannot open the metadata log")?,
    );
    if meta.is_none() {
        // First start on this directory (or one written before meta.properties existed).
        let cluster_id = controller.image().cluster_id.clone().unwrap_or_default();
        MetaProperties { cluster_id, node_id: config.node_id(), directory_id: random_id() }.write(&data_dir)?;
    }
    let replicas = Arc::new(ReplicaManager::new(data_dir.clone(), config.topic_defaults()));
    let started = std::time::Instant::now();
    controller.register_publisher(replicas.clone());
    replicas.remove_deleted_topics_data();
    tracing::info!(
        partitions = replicas.all_partitions().len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "logs loaded"
    );

    let limits = Limits::from_config(&config);
    let retention_every = Duration::from_millis(config.retention_check_interval_ms());
    let flush_every = Duration::from_millis(config.flush_scheduler_interval_ms().min(3_600_000 * 24 * 365));
    let producer_expiry_every = config.producer_id_expiration_check_interval_ms();
    let groups = GroupCoordinator::start(&config, controller.as_ref(), replicas.clone())
        .await
        .context("cannot start the group coordinator")?;
    controller.register_publisher(groups.clone());
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    tokio::spawn(groups.clone().run_timers(shutdown_rx.clone()));
    let broker = Arc::new(Broker::new(config, controller.clone(), replicas.clone(), groups, shutdown_rx.clone()));

    spawn_periodic(shutdown_rx.clone(), retention_every, {
        let replicas = replicas.clone();
        move || replicas.enforce_retention(now_ms())
    });
    spawn_periodic(shutdown_rx.clone(), Duration::from_millis(producer_expiry_every), {
        let replicas = replicas.clone();
        move || replicas.remove_expired_producers(now_ms())
    });
    spawn_periodic(shutdown_rx.clone(), flush_every, {
        let replicas = replicas.clone();
        move || replicas.flush_due(now_ms())
    });

    tracing::info!(listen = %local, node_id = broker.node_id, data_dir = %data_dir.display(), "strata is serving");
    let server = tokio::spawn(net::serve(listener, broker, limits, shutdown_rx));
    wait_for_signal().await;
    tracing::info!("shutting down: no new connections, finishing requests in flight");
    let _ = shutdown_tx.send(true);
    let _ = server.await;
    let closing = std::time::Instant::now();
    tokio::task::spawn_blocking(move || replicas.close_all()).await.context("closing logs")?;
    tracing::info!(elapsed_ms = closing.elapsed().as_millis() as u64, "logs flushed and closed; bye");
    Ok(())
}

/// Creates the data directory and checks it can be written, so a bad
/// directory is refused at start with a clear message.
fn prepare_data_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create the data directory {}", dir.display()))?;
    let probe = dir.join(".strata-write-test");
    std::fs::write(&probe, b"ok").with_context(|| format!("the data directory {} is not writable", dir.display()))?;
    let _ = std::fs::remove_file(&probe);
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

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
