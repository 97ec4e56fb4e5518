//! The Kafka-facing broker: network, one handler per API, and the partitions
//! it hosts.
//!
//! # Layout
//! - [`config`]: broker config keys (Kafka's names) and per-topic settings.
//! - [`net`]: listener, connections, in-order responses, limits, shutdown.
//! - [`handlers`]: one module per Kafka API, dispatched from one `match`.
//! - [`replica`]: partitions, their logs, produce validation, producer state.
//! - [`groups`]: the driver of the group coordinator shards over `__consumer_offsets`.
//! - [`txn`]: the driver of the transaction coordinator shards over `__transaction_state`.
//! - [`producer_ids`]: producer-id blocks leased from the controller.
//! - [`error`]: the broker's error enum and its mapping to Kafka codes.

pub mod authz;
pub mod blocking;
pub mod config;
pub mod error;
pub mod groups;
pub mod handlers;
pub mod listeners;
pub mod metrics;
pub mod net;
pub mod producer_ids;
pub mod quotas;
pub mod replica;
pub mod txn;

use std::sync::Arc;

use strata_metadata::channel::ControllerChannel;

pub use config::BrokerConfig;
pub use error::BrokerError;
pub use replica::ReplicaManager;

/// Everything a request handler can reach. Shared as `Arc<Broker>`.
pub struct Broker {
    pub config: BrokerConfig,
    pub node_id: i32,
    pub controller: Arc<dyn ControllerChannel>,
    pub replicas: Arc<ReplicaManager>,
    pub producer_ids: Arc<producer_ids::ProducerIdManager>,
    pub groups: Arc<groups::GroupCoordinator>,
    pub txn: Arc<txn::TxnCoordinator>,
    /// `authorizer.class.name`'s decisions over the image's ACLs (all allowed without one).
    pub authz: authz::Authz,
    /// Client quota rates (`quota.window.num` × `quota.window.size.seconds`).
    pub quotas: quotas::ClientQuotas,
    /// `logger.slow.request.threshold.ms`: requests slower than this are logged (`None`: off).
    pub slow_request_threshold: Option<std::time::Duration>,
    /// What `/metrics` exports (the server's HTTP listener shares it).
    pub metrics: Arc<metrics::BrokerMetrics>,
    /// Turns true when the broker starts shutting down; long-polling fetches
    /// answer at once instead of holding the shutdown up.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

impl Broker {
    pub fn new(
        config: BrokerConfig,
        controller: Arc<dyn ControllerChannel>,
        replicas: Arc<ReplicaManager>,
        groups: Arc<groups::GroupCoordinator>,
        txn: Arc<txn::TxnCoordinator>,
        producer_ids: Arc<producer_ids::ProducerIdManager>,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        let node_id = config.node_id();
        let authz = authz::Authz::new(&config, replicas.clone());
        let (samples, window_ms) = config.quota_window();
        let quotas = quotas::ClientQuotas::new(samples, window_ms);
        let slow_request_threshold = config.slow_request_threshold();
        Self {
            producer_ids,
            txn,
            config,
            node_id,
            controller,
            replicas,
            groups,
            shutdown,
            authz,
            quotas,
            slow_request_threshold,
            metrics: Arc::new(metrics::BrokerMetrics::new()),
        }
    }

    /// The same broker counting into `metrics` (the one the HTTP listener serves).
    pub fn with_metrics(mut self, metrics: Arc<metrics::BrokerMetrics>) -> Self {
        self.metrics = metrics;
        self
    }
}
