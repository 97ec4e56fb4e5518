//! The controller of a node in a Raft quorum (`controller.quorum.voters`): KRaft's
//! `QuorumController` on raft-rs.
//!
//! # Threads and ownership
//! - One thread (`strata-raft`) owns the [`QuorumNode`]: it ticks it every `tick`, steps the
//!   messages the transport delivers, runs decisions when this node is the active controller,
//!   and runs the Ready loop (the fsyncs happen here, never on a tokio worker).
//! - The transport's tasks (on the tokio runtime) carry messages between controllers.
//! - One loader thread (`strata-metadata-loader`) publishes each committed image to the
//!   broker's publishers, in log order, and then answers the requests whose records that
//!   image holds: a client that created a topic finds it in this broker's metadata at once.
//!   Nothing of the broker runs on the Raft thread.
//!
//! Everything else talks to the Raft thread through its inbox ([`Input`]).
//!
//! # Requests
//! On the active controller a decision runs against the latest image
//! ([`QuorumNode::latest`]), its records are proposed, and the answer waits until they are
//! committed and published. Elsewhere, the broker forwards: client admin requests in an
//! Envelope (KIP-590, see [`QuorumController::forward_envelope`]), its own needs as Kafka's
//! broker-to-controller RPCs (BrokerRegistration, AllocateProducerIds, CreateTopics for the
//! internal topics). A request that reaches a controller which is not (or no longer) active
//! fails with NOT_CONTROLLER, which the sender retries against the new leader.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use kafka_protocol::error::ParseResponseErrorCode;
use kafka_protocol::messages::create_topics_request::{
    CreatableReplicaAssignment, CreatableTopic, CreatableTopicConfig,
};
use kafka_protocol::messages::{
    AllocateProducerIdsRequest, BrokerId, BrokerRegistrationRequest, CreateTopicsRequest, EnvelopeRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use strata_metadata::channel::{
    ApiError, BoxFuture, ControllerChannel, CreateTopicResult, CreateTopicSpec, CreatedTopic,
};
use strata_metadata::{MetadataDelta, MetadataImage, MetadataPublisher, MetadataRecord};
use strata_protocol::ResponseError;
use tokio::sync::oneshot;

use crate::decisions::{self, Defaults};
use crate::raft::transport::{Event, Transport};
use crate::raft::{QuorumConfig, QuorumNode, RaftStore, Refused};
use crate::ControllerError;
use strata_client::KafkaClient as ControllerClient;

/// One controller of the quorum, as `controller.quorum.voters` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoterEndpoint {
    pub id: i32,
    pub host: String,
    pub port: u16,
}

/// What a quorum controller needs to start.
#[derive(Debug, Clone)]
pub struct QuorumControllerConfig {
    pub node_id: i32,
    pub voters: Vec<VoterEndpoint>,
    /// From `meta.properties`: the cluster this node was formatted for.
    pub cluster_id: String,
    pub defaults: Defaults,
    pub quorum: QuorumConfig,
    /// The Raft clock's period.
    pub tick: Duration,
    /// A broker that sends no heartbeat for this long is fenced (`broker.session.timeout.ms`).
    pub session_timeout: Duration,
    /// This node joins an existing quorum (formatted with `--no-initial-controllers`, or a
    /// broker-only node): a new Raft store starts without members and learns them from the
    /// leader once added. Such a node is an observer for the transport (see
    /// [`crate::raft::transport`]) until it is a voter with a CONTROLLER listener.
    pub joining: bool,
    /// `auto.leader.rebalance.enable`: every `leader.imbalance.check.interval.seconds`, the
    /// active controller elects preferred leaders for brokers whose imbalance exceeds
    /// `leader.imbalance.per.broker.percentage` (the interval and the percentage); `None`: off.
    pub leader_rebalance: Option<(Duration, u32)>,
    /// How this node connects to the controllers' CONTROLLER listeners (Raft, and a broker's
    /// requests to the active controller): TLS when that listener is SSL; `None`: PLAINTEXT.
    pub controller_security: Option<Arc<strata_security::client::ClientSecurity>>,
}

/// Work for the Raft thread.
pub enum Input {
    /// From the transport.
    Transport(Event),
    /// A decision or a query, run with the node.
    Job(Box<dyn FnOnce(&mut Driver) + Send>),
    /// Stop the Raft thread (the transport keeps senders to the inbox, so it never closes).
    Stop,
}

/// Answers a proposal once its entry is committed (`Ok`) or lost (`Err`).
type Completion = Box<dyn FnOnce(Result<(), ApiError>) + Send>;

/// Work for the loader thread.
enum LoaderJob {
    Publish(Arc<MetadataImage>, MetadataDelta),
    Register(Arc<dyn MetadataPublisher>, oneshot::Sender<()>),
    Call(Box<dyn FnOnce() + Send>),
}

/// The quorum as this node sees it (for DescribeQuorum and the broker's routing).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QuorumStatus {
    pub leader_id: Option<i32>,
    pub term: u64,
    /// Whether this node is the active controller (the leader, done loading).
    pub active: bool,
    pub voters: Vec<u64>,
    /// Members that replicate the log without voting: broker-only nodes, and controllers
    /// being added.
    pub learners: Vec<u64>,
    pub commit_index: u64,
    pub applied_index: u64,
    pub last_index: u64,
    /// On the leader: each voter's replicated index.
    pub progress: Vec<(u64, u64)>,
}

/// The Raft thread's state.
pub struct Driver {
    node: QuorumNode,
    transport: Transport,
    /// By log index: the term the proposal went in with, and who waits for it.
    pending: BTreeMap<u64, (u64, Completion)>,
    loader: mpsc::Sender<LoaderJob>,
    shared: Arc<Shared>,
    cluster_id: String,
    /// The ClusterCreated proposal in flight, if any.
    bootstrapping: bool,
    /// While active: when each broker last heartbeated (KRaft's `BrokerHeartbeatManager`;
    /// kept in memory, restarted with a full session of grace by each new active controller).
    heartbeats: HashMap<i32, Instant>,
    session_timeout: Duration,
    /// The broker defaults behind elections at fencing (unclean elections, min.insync.replicas).
    election: crate::partition_change::ElectionDefaults,
    was_active: bool,
    last_session_check: Instant,
    /// See [`QuorumControllerConfig::leader_rebalance`].
    leader_rebalance: Option<(Duration, u32)>,
    last_rebalance: Instant,
}

/// What the active controller tells a heartbeating broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeartbeatReply {
    /// The broker's metadata has reached its own registration record (Kafka's rule).
    pub is_caught_up: bool,
    pub is_fenced: bool,
    pub should_shut_down: bool,
}

struct Shared {
    committed: ArcSwap<MetadataImage>,
    status: Mutex<QuorumStatus>,
}

/// A quorum controller (see the module docs). Dropping it stops its threads.
pub struct QuorumController {
    config: QuorumControllerConfig,
    inbox: Mutex<Option<mpsc::Sender<Input>>>,
    loader: Mutex<Option<mpsc::Sender<LoaderJob>>>,
    shared: Arc<Shared>,
    /// One client per controller, made on first use (static voters, then those that joined).
    clients: Mutex<HashMap<i32, Arc<ControllerClient>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// Connections that nodes outside the voters opened to this one.
    observers: crate::raft::transport::Observers,
    /// Which voter to ask next while no leader is known.
    next_voter: std::sync::atomic::AtomicUsize,
}

fn not_controller(leader: Option<i32>) -> ApiError {
    let msg = match leader {
        Some(l) => format!("this node is not the active controller (controller {l} is)"),
        None => "no active controller yet (an election is under way)".to_string(),
    };
    ApiError::new(ResponseError::NotController, msg)
}

impl QuorumController {
    /// Opens the Raft store in `dir`, starts the Raft thread, the transport (on `runtime`) and
    /// the loader. Returns before the quorum has a leader.
    pub fn start(
        dir: &std::path::Path,
        config: QuorumControllerConfig,
        runtime: &tokio::runtime::Handle,
    ) -> Result<Arc<Self>, ControllerError> {
        let voter_ids: Vec<u64> =
            if config.joining { Vec::new() } else { config.voters.iter().map(|v| v.id as u64).collect() };
        let store = RaftStore::open(Arc::new(strata_log::storage::FsStorage), dir, &voter_ids)?;
        let node = QuorumNode::new(&config.quorum, store)?;
        let committed = node.committed().clone();
        if let Some(found) = committed.cluster_id.as_deref() {
            if found != config.cluster_id {
                return Err(ControllerError::Identity(format!(
                    "the metadata in {} belongs to cluster {found}, but this node was formatted for {} (meta.properties); refusing to start",
                    dir.display(),
                    config.cluster_id
                )));
            }
        }
        let shared = Arc::new(Shared { committed: ArcSwap::new(committed.clone()), status: Mutex::default() });
        let (tx, rx) = mpsc::channel::<Input>();
        let (loader_tx, loader_rx) = mpsc::channel::<LoaderJob>();
        let peers: HashMap<u64, String> =
            config.voters.iter().map(|v| (v.id as u64, format!("{}:{}", v.host, v.port))).collect();
        let observer = !config.voters.iter().any(|v| v.id == config.node_id) || config.joining;
        let transport =
            Transport::start(runtime, config.node_id as u64, &config.cluster_id, &peers, tx.clone(), observer, {
                config.controller_security.clone()
            });
        let observers = transport.observers();
        let mut driver = Driver {
            node,
            transport,
            pending: BTreeMap::new(),
            loader: loader_tx.clone(),
            shared: shared.clone(),
            cluster_id: config.cluster_id.clone(),
            bootstrapping: false,
            heartbeats: HashMap::new(),
            session_timeout: config.session_timeout,
            election: config.defaults.election,
            was_active: false,
            last_session_check: Instant::now(),
            leader_rebalance: config.leader_rebalance,
            last_rebalance: Instant::now(),
        };
        let tick = config.tick;
        let io = |source| ControllerError::Io { path: dir.to_path_buf(), source };
        let raft_thread =
            std::thread::Builder::new().name("strata-raft".into()).spawn(move || driver.run(rx, tick)).map_err(io)?;
        let loader_thread = std::thread::Builder::new()
            .name("strata-metadata-loader".into())
            .spawn(move || run_loader(committed, loader_rx))
            .map_err(io)?;
        Ok(Arc::new(Self {
            config,
            inbox: Mutex::new(Some(tx)),
            loader: Mutex::new(Some(loader_tx)),
            shared,
            clients: Mutex::default(),
            threads: Mutex::new(vec![raft_thread, loader_thread]),
            observers,
            next_voter: Default::default(),
        }))
    }

    /// The last committed image (what the Raft thread applied; the broker's own view is what
    /// its publishers were given).
    pub fn image(&self) -> Arc<MetadataImage> {
        self.shared.committed.load_full()
    }

    /// The quorum as this node last saw it.
    pub fn status(&self) -> QuorumStatus {
        self.shared.status.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The connections observers (broker-only nodes, joining controllers) opened here: the
    /// listener registers them, the transport answers over them.
    pub fn observers(&self) -> crate::raft::transport::Observers {
        self.observers.clone()
    }

    /// Where the transport delivers peers' messages (`None` once stopped).
    pub fn raft_inbox(&self) -> Option<mpsc::Sender<Input>> {
        self.inbox.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The current voters with their CONTROLLER endpoints (from `controller.quorum.voters`, or
    /// the metadata for those that joined at run time).
    pub fn voters(&self) -> Vec<VoterEndpoint> {
        let status = self.status();
        let ids: Vec<i32> = if status.voters.is_empty() {
            self.config.voters.iter().map(|v| v.id).collect()
        } else {
            status.voters.iter().map(|v| *v as i32).collect()
        };
        ids.into_iter()
            .filter_map(|id| self.endpoint_of(id).map(|(host, port)| VoterEndpoint { id, host, port }))
            .collect()
    }

    /// The cluster id this node was formatted for.
    pub fn cluster_id(&self) -> &str {
        &self.config.cluster_id
    }

    fn submit(&self, job: Input) -> bool {
        let inbox = self.inbox.lock().unwrap_or_else(PoisonError::into_inner);
        inbox.as_ref().is_some_and(|tx| tx.send(job).is_ok())
    }

    /// Adds a publisher: publishes the image the loader last published to it (as a delta that
    /// creates everything), then every later one. Returns once that first publish is done.
    /// The first publish (every log opened, every leader epoch started) runs on the loader
    /// thread; callers wait without holding an async worker.
    pub async fn register_publisher(&self, publisher: Arc<dyn MetadataPublisher>) {
        let (done_tx, done_rx) = oneshot::channel();
        let sent = {
            let loader = self.loader.lock().unwrap_or_else(PoisonError::into_inner);
            loader.as_ref().is_some_and(|l| l.send(LoaderJob::Register(publisher, done_tx)).is_ok())
        };
        if sent && done_rx.await.is_err() {
            tracing::error!("the metadata loader stopped while registering a publisher");
        }
    }

    /// Runs `decide` on the active controller's latest image and commits its records; the
    /// answer comes once they are committed and published here. NOT_CONTROLLER elsewhere.
    fn commit<T: Send + 'static>(
        &self,
        decide: impl FnOnce(&MetadataImage) -> (Vec<MetadataRecord>, T) + Send + 'static,
    ) -> impl std::future::Future<Output = Result<T, ApiError>> + Send + 'static {
        let (tx, rx) = oneshot::channel();
        let queued = self.submit(Input::Job(Box::new(move |d: &mut Driver| d.decide(decide, tx))));
        async move {
            if !queued {
                return Err(stopped());
            }
            rx.await.unwrap_or_else(|_| Err(stopped()))
        }
    }

    /// Registers an incarnation of a broker (KRaft's BrokerRegistration, v3: with
    /// `previous_broker_epoch`, the epoch of its last clean shutdown or -1). Returns its broker
    /// epoch; the broker starts fenced (see [`decisions::register_broker`]). Decided here if
    /// this node is the active controller, else sent to it as a BrokerRegistration request.
    pub async fn register_broker(&self, registration: decisions::BrokerRegistration) -> Result<i64, ApiError> {
        if self.status().active {
            match self.decide_registration(registration.clone()).await {
                Err(e) if e.error == ResponseError::NotController => {}
                other => return other,
            }
        }
        let decisions::BrokerRegistration {
            broker_id,
            host,
            port,
            rack,
            incarnation_id,
            previous_broker_epoch,
            listeners,
        } = registration;
        use kafka_protocol::messages::broker_registration_request::Listener;
        let listener = |name: &str, host: &str, port: u16, protocol: i16| {
            Listener::default()
                .with_name(StrBytes::from_string(name.to_string()))
                .with_host(StrBytes::from_string(host.to_string()))
                .with_port(port)
                .with_security_protocol(protocol)
        };
        // The inter-broker listener first: the controller takes host and port from it.
        let listeners = if listeners.is_empty() {
            vec![listener("PLAINTEXT", &host, port, 0)]
        } else {
            listeners.iter().map(|l| listener(&l.name, &l.host, l.port, l.security_protocol)).collect()
        };
        let client = self.leader_client()?;
        let req = BrokerRegistrationRequest::default()
            .with_broker_id(BrokerId(broker_id))
            .with_cluster_id(StrBytes::from_string(self.config.cluster_id.clone()))
            .with_incarnation_id(incarnation_id)
            .with_listeners(listeners)
            .with_rack(rack.map(StrBytes::from_string))
            .with_previous_broker_epoch(previous_broker_epoch);
        let resp = client.call(3, &req).await.map_err(|e| unavailable(&e))?;
        match resp.error_code.err() {
            None => Ok(resp.broker_epoch),
            Some(e) => Err(ApiError::new(e, format!("broker registration refused by {}", client.addr()))),
        }
    }

    /// Sends this broker's heartbeat (KRaft's BrokerHeartbeat) to the active controller: handled
    /// here if this node is it, else sent as a BrokerHeartbeat request. `want_shut_down` asks
    /// for a controlled shutdown (the broker's partitions are moved off it first).
    pub async fn send_heartbeat(
        &self,
        broker_id: i32,
        broker_epoch: i64,
        want_shut_down: bool,
    ) -> Result<HeartbeatReply, ApiError> {
        // This broker's metadata position: records applied (the index space of broker epochs).
        let metadata_offset = self.image().records_applied as i64;
        if self.status().active {
            match self.handle_heartbeat(broker_id, broker_epoch, metadata_offset, want_shut_down).await {
                Err(e) if e.error == ResponseError::NotController => {}
                other => return other,
            }
        }
        let client = self.leader_client()?;
        let req = kafka_protocol::messages::BrokerHeartbeatRequest::default()
            .with_broker_id(BrokerId(broker_id))
            .with_broker_epoch(broker_epoch)
            .with_current_metadata_offset(metadata_offset)
            .with_want_shut_down(want_shut_down);
        let resp = client.call(1, &req).await.map_err(|e| unavailable(&e))?;
        match resp.error_code.err() {
            None => Ok(HeartbeatReply {
                is_caught_up: resp.is_caught_up,
                is_fenced: resp.is_fenced,
                should_shut_down: resp.should_shut_down,
            }),
            Some(e) => Err(ApiError::new(e, format!("heartbeat refused by {}", client.addr()))),
        }
    }

    /// Handles a heartbeat that reached this controller (NOT_CONTROLLER unless it is active).
    /// `metadata_offset` is how many metadata records the broker has applied. A heartbeat
    /// from another incarnation than the registered one (`broker_epoch` differs) is
    /// STALE_BROKER_EPOCH, as Kafka's `checkBrokerEpoch` answers: it neither keeps the
    /// session alive nor unfences.
    pub async fn handle_heartbeat(
        &self,
        broker_id: i32,
        broker_epoch: i64,
        metadata_offset: i64,
        want_shut_down: bool,
    ) -> Result<HeartbeatReply, ApiError> {
        let (tx, rx) = oneshot::channel();
        let queued = self.submit(Input::Job(Box::new(move |d: &mut Driver| {
            d.heartbeat(broker_id, broker_epoch, metadata_offset, want_shut_down, tx)
        })));
        if !queued {
            return Err(stopped());
        }
        rx.await.unwrap_or_else(|_| Err(stopped()))
    }

    /// AddRaftVoter (KIP-853) on the active controller: records the controller's endpoint,
    /// adds it as a learner, waits (at most `timeout`) until it has caught up with the log,
    /// then makes it a voter. Idempotent: a voter already is one.
    pub async fn add_voter(&self, id: i32, host: String, port: u16, timeout: Duration) -> Result<(), ApiError> {
        let deadline = Instant::now() + timeout;
        if self.status().voters.contains(&(id as u64)) {
            return Ok(());
        }
        let (h, p) = (host.clone(), port);
        self.commit(move |img| {
            let known = img.controllers.get(&id).is_some_and(|(kh, kp)| *kh == h && *kp == p);
            let records = if known {
                Vec::new()
            } else {
                vec![MetadataRecord::ControllerRegistered { controller_id: id, host: h, port: p }]
            };
            (records, ())
        })
        .await?;
        if !self.status().learners.contains(&(id as u64)) {
            self.change_membership(id as u64, crate::raft::Membership::Learner).await?;
        }
        tracing::info!(controller = id, %host, port, "controller added as a learner; waiting for it to catch up");
        loop {
            let st = self.status();
            if st.progress.iter().any(|(p, m)| *p == id as u64 && *m >= st.commit_index) {
                break;
            }
            if Instant::now() >= deadline {
                return Err(ApiError::new(
                    ResponseError::RequestTimedOut,
                    format!("controller {id} did not catch up with the metadata log in time (is it running, at {host}:{port}?)"),
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.change_membership(id as u64, crate::raft::Membership::Voter).await?;
        tracing::info!(controller = id, "controller joined the quorum as a voter");
        Ok(())
    }

    /// RemoveRaftVoter (KIP-853) on the active controller. Removing the active controller
    /// itself hands the leadership over first and answers NOT_CONTROLLER: ask the new one.
    pub async fn remove_voter(&self, id: i32) -> Result<(), ApiError> {
        if !self.status().voters.contains(&(id as u64)) {
            return Err(ApiError::new(ResponseError::VoterNotFound, format!("controller {id} is not a voter")));
        }
        self.change_membership(id as u64, crate::raft::Membership::Remove).await
    }

    async fn change_membership(&self, node: u64, change: crate::raft::Membership) -> Result<(), ApiError> {
        let (tx, rx) = oneshot::channel();
        let queued = self.submit(Input::Job(Box::new(move |d: &mut Driver| d.change_membership(node, change, tx))));
        if !queued {
            return Err(stopped());
        }
        rx.await.unwrap_or_else(|_| Err(stopped()))
    }

    /// Handles a BrokerRegistration that reached this controller: decided here when active.
    pub async fn handle_broker_registration(&self, req: &BrokerRegistrationRequest) -> Result<i64, ApiError> {
        if req.cluster_id.as_str() != self.config.cluster_id {
            return Err(ApiError::new(
                ResponseError::InconsistentClusterId,
                format!(
                    "broker of cluster {} registering with cluster {}",
                    req.cluster_id.as_str(),
                    self.config.cluster_id
                ),
            ));
        }
        let listener = req.listeners.first();
        let host = listener.map(|l| l.host.to_string()).unwrap_or_default();
        let port = listener.map_or(0, |l| l.port);
        let rack = req.rack.as_ref().map(|r| r.to_string());
        self.decide_registration(decisions::BrokerRegistration {
            broker_id: req.broker_id.0,
            host,
            port,
            rack,
            incarnation_id: req.incarnation_id,
            previous_broker_epoch: req.previous_broker_epoch,
            listeners: req
                .listeners
                .iter()
                .map(|l| strata_metadata::image::Endpoint {
                    name: l.name.to_string(),
                    host: l.host.to_string(),
                    port: l.port,
                    security_protocol: l.security_protocol,
                })
                .collect(),
        })
        .await
    }

    /// On the active controller: registers a broker (fenced), then makes sure it is a
    /// member of the Raft group, adding a broker-only node as a learner so that the metadata
    /// log reaches it (KRaft's observers). The broker retries a registration that fails here.
    async fn decide_registration(&self, registration: decisions::BrokerRegistration) -> Result<i64, ApiError> {
        let defaults = self.config.defaults.election;
        let id = registration.broker_id;
        let epoch = self.commit(move |img| decisions::register_broker(img, registration, &defaults)).await?;
        let status = self.status();
        let member = status.voters.contains(&(id as u64)) || status.learners.contains(&(id as u64));
        if !member {
            self.change_membership(id as u64, crate::raft::Membership::Learner).await?;
            tracing::info!(broker = id, "broker added to the metadata quorum as an observer (Raft learner)");
        }
        Ok(epoch)
    }

    /// Handles an AlterPartition (key 56, KIP-497) that reached this controller: decided here
    /// when active ([`decisions::alter_partition`]), else NOT_CONTROLLER for the whole request.
    pub async fn handle_alter_partition(
        &self,
        req: &kafka_protocol::messages::AlterPartitionRequest,
        version: i16,
    ) -> kafka_protocol::messages::AlterPartitionResponse {
        use kafka_protocol::messages::alter_partition_response::{PartitionData, TopicData};
        use kafka_protocol::messages::AlterPartitionResponse;
        let changes: Vec<decisions::IsrChange> = req
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions.iter().map(move |p| decisions::IsrChange {
                    topic_id: t.topic_id,
                    partition: p.partition_index,
                    leader_epoch: p.leader_epoch,
                    partition_epoch: p.partition_epoch,
                    // v3 carries each member's broker epoch (KIP-903); v2 only ids.
                    new_isr: if version >= 3 {
                        p.new_isr_with_epochs.iter().map(|b| (b.broker_id.0, b.broker_epoch)).collect()
                    } else {
                        p.new_isr.iter().map(|b| (b.0, -1)).collect()
                    },
                })
            })
            .collect();
        let (broker, epoch) = (req.broker_id.0, req.broker_epoch);
        let defaults = self.config.defaults.election;
        let decided =
            self.commit(move |img| match decisions::alter_partition(img, broker, epoch, &changes, &defaults) {
                Ok((records, outcomes)) => (records, Ok(outcomes)),
                Err(e) => (Vec::new(), Err(e)),
            });
        let outcomes = match decided.await {
            Ok(Ok(o)) => o,
            Ok(Err(e)) | Err(e) => return AlterPartitionResponse::default().with_error_code(e.error.code()),
        };
        let mut outcomes = outcomes.into_iter();
        let topics = req
            .topics
            .iter()
            .map(|t| {
                let partitions = t
                    .partitions
                    .iter()
                    .map(|p| {
                        let base = PartitionData::default().with_partition_index(p.partition_index);
                        match outcomes.next() {
                            Some(decisions::IsrOutcome::Altered { leader, leader_epoch, isr, partition_epoch }) => base
                                .with_leader_id(BrokerId(leader))
                                .with_leader_epoch(leader_epoch)
                                .with_isr(isr.into_iter().map(BrokerId).collect())
                                .with_partition_epoch(partition_epoch),
                            Some(decisions::IsrOutcome::Refused(e)) => base.with_error_code(e.code()),
                            None => base.with_error_code(ResponseError::UnknownServerError.code()),
                        }
                    })
                    .collect();
                TopicData::default().with_topic_id(t.topic_id).with_partitions(partitions)
            })
            .collect();
        AlterPartitionResponse::default().with_topics(topics)
    }

    /// Handles an AllocateProducerIds that reached this controller.
    pub async fn handle_allocate_producer_ids(&self, broker_id: i32) -> Result<Range<i64>, ApiError> {
        self.commit(move |img| decisions::allocate_producer_ids(img, broker_id, PRODUCER_ID_BLOCK)).await
    }

    /// Where controller `id` listens: `controller.quorum.voters`, else the metadata (a
    /// controller that joined at run time).
    pub fn endpoint_of(&self, id: i32) -> Option<(String, u16)> {
        self.config
            .voters
            .iter()
            .find(|v| v.id == id)
            .map(|v| (v.host.clone(), v.port))
            .or_else(|| self.image().controllers.get(&id).cloned())
    }

    /// A client for the active controller: the leader this node knows of, else (a broker-only
    /// node before it is a learner, or any node during an election) the next of the initial
    /// voters in turn, as a KRaft observer asks a random voter; a voter that is not active
    /// answers NOT_CONTROLLER and the caller retries.
    fn leader_client(&self) -> Result<Arc<ControllerClient>, ApiError> {
        let leader = match self.status().leader_id {
            Some(l) => l,
            None if self.config.voters.is_empty() => return Err(not_controller(None)),
            None => {
                let turn = self.next_voter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.config.voters[turn % self.config.voters.len()].id
            }
        };
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = clients.get(&leader) {
            return Ok(c.clone());
        }
        let (host, port) = self.endpoint_of(leader).ok_or_else(|| not_controller(Some(leader)))?;
        let c = Arc::new(ControllerClient::with_security(
            format!("{host}:{port}"),
            format!("strata-broker-{}", self.config.node_id),
            self.config.controller_security.clone(),
        ));
        clients.insert(leader, c.clone());
        Ok(c)
    }

    /// Sends a client's request (its whole frame after the size: header and body) to the
    /// active controller in an Envelope (KIP-590) and returns the response frame. Retries
    /// NOT_CONTROLLER and unreachable controllers until `timeout`.
    pub async fn forward_envelope(
        &self,
        frame: Bytes,
        client_host: &str,
        principal: &str,
        timeout: Duration,
    ) -> Result<Bytes, ApiError> {
        let deadline = Instant::now() + timeout;
        let host_bytes: Vec<u8> = match client_host.trim_start_matches('/').parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(a)) => a.octets().to_vec(),
            Ok(std::net::IpAddr::V6(a)) => a.octets().to_vec(),
            Err(_) => Vec::new(),
        };
        let req = EnvelopeRequest::default()
            .with_request_data(frame)
            .with_request_principal(Some(Bytes::from(principal.as_bytes().to_vec())))
            .with_client_host_address(Bytes::from(host_bytes));
        loop {
            let last;
            match self.leader_client() {
                Ok(client) => match client.call(0, &req).await {
                    Ok(resp) => match (resp.error_code.err(), resp.response_data) {
                        (None, Some(data)) => return Ok(data),
                        (Some(e), _) => {
                            last = ApiError::new(e, format!("the controller at {} answered {e:?}", client.addr()))
                        }
                        (None, None) => last = unavailable("an empty envelope response"),
                    },
                    Err(e) => last = unavailable(&e),
                },
                Err(e) => last = e,
            }
            if Instant::now() >= deadline {
                return Err(last);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until this node knows an active controller, or `timeout`.
    pub async fn wait_for_leader(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.status().leader_id.is_some() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }
}

/// Producer ids handed out per AllocateProducerIds (Kafka's block size).
const PRODUCER_ID_BLOCK: i64 = 1000;

fn unavailable(reason: &str) -> ApiError {
    ApiError::new(ResponseError::NotController, format!("cannot reach the active controller: {reason}"))
}

fn stopped() -> ApiError {
    ApiError::new(ResponseError::UnknownServerError, "the controller has stopped".to_owned())
}

impl Drop for QuorumController {
    fn drop(&mut self) {
        if let Some(inbox) = self.inbox.lock().unwrap_or_else(PoisonError::into_inner).take() {
            let _ = inbox.send(Input::Stop);
        }
        self.loader.lock().unwrap_or_else(PoisonError::into_inner).take();
        for t in self.threads.lock().unwrap_or_else(PoisonError::into_inner).drain(..) {
            let _ = t.join();
        }
    }
}

impl Driver {
    fn run(&mut self, rx: mpsc::Receiver<Input>, tick: Duration) {
        let mut next_tick = Instant::now();
        // The first Ready applies what was committed before a restart; then a sole voter
        // elects itself without waiting for an election timeout.
        let mut campaigned = false;
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            match rx.recv_timeout(wait) {
                Ok(Input::Stop) => break,
                Ok(input) => self.handle(input),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            // Everything queued meanwhile goes into the same Ready (one fsync for all).
            let mut stop = false;
            while let Ok(input) = rx.try_recv() {
                if matches!(input, Input::Stop) {
                    stop = true;
                    break;
                }
                self.handle(input);
            }
            if stop {
                break;
            }
            let now = Instant::now();
            if now >= next_tick {
                self.node.tick();
                next_tick += tick;
                if next_tick < now {
                    next_tick = now + tick;
                }
            }
            self.bootstrap();
            self.check_sessions();
            self.check_leader_balance();
            if let Err(e) = self.ready() {
                // Like KRaft's fatal fault handler: the metadata log cannot be trusted in
                // this process any more; a restart replays what is durable.
                tracing::error!(error = %e, "the metadata quorum failed; stopping the node");
                std::process::exit(1);
            }
            if !campaigned {
                campaigned = true;
                if self.node.campaign_if_sole_voter() {
                    next_tick = Instant::now();
                }
            }
        }
    }

    fn handle(&mut self, input: Input) {
        match input {
            Input::Transport(Event::Message(m)) => self.node.step(*m),
            Input::Transport(Event::Unreachable(peer)) => self.node.report_unreachable(peer),
            Input::Transport(Event::SnapshotStatus { peer, delivered }) => self.node.report_snapshot(peer, delivered),
            Input::Job(job) => job(self),
            Input::Stop => {}
        }
    }

    /// On the active controller: fences brokers whose session expired (checked once a tick).
    /// `auto.leader.rebalance.enable` (see [`decisions::rebalance_leaders`]).
    fn check_leader_balance(&mut self) {
        let Some((every, percentage)) = self.leader_rebalance else { return };
        if !self.node.is_active() || self.last_rebalance.elapsed() < every {
            return;
        }
        self.last_rebalance = Instant::now();
        let (tx, _rx) = oneshot::channel();
        self.decide(
            move |img| {
                let records = decisions::rebalance_leaders(img, percentage);
                if !records.is_empty() {
                    tracing::info!(partitions = records.len(), "auto leader rebalance: preferred replicas lead again");
                }
                (records, ())
            },
            tx,
        );
    }

    fn check_sessions(&mut self) {
        let active = self.node.is_active();
        if !active {
            self.was_active = false;
            return;
        }
        let now = Instant::now();
        if !self.was_active {
            // A new active controller does not know when brokers last heartbeated: each gets a
            // whole session from now (as KRaft's controller does after a failover).
            self.was_active = true;
            self.heartbeats = self.node.latest().brokers.keys().map(|id| (*id, now)).collect();
        }
        if now.duration_since(self.last_session_check) < Duration::from_millis(100) {
            return;
        }
        self.last_session_check = now;
        // A broker registered since gets a whole session from when it is first seen here.
        let latest = self.node.latest().clone();
        for id in latest.brokers.keys() {
            self.heartbeats.entry(*id).or_insert(now);
        }
        // A sole voter's own broker is never fenced: no other broker could lead its partitions,
        // and a paused process (or a starved runtime) would only lose its leadership.
        let me = self.node.id() as i32;
        let sole = self.node.voters() == [self.node.id()];
        let expired: Vec<i32> = latest
            .brokers
            .values()
            .filter(|b| !b.fenced)
            .filter(|b| !(sole && b.broker_id == me))
            .filter(|b| {
                self.heartbeats.get(&b.broker_id).is_some_and(|t| now.duration_since(*t) > self.session_timeout)
            })
            .map(|b| b.broker_id)
            .collect();
        let defaults = self.election;
        for id in expired {
            tracing::info!(
                broker = id,
                timeout_ms = self.session_timeout.as_millis() as u64,
                "fencing a broker: no heartbeat within broker.session.timeout.ms"
            );
            let (tx, _rx) = oneshot::channel();
            self.decide(move |img| (decisions::fence_broker(img, id, &defaults), ()), tx);
        }
    }

    /// A heartbeat that reached the active controller.
    fn heartbeat(
        &mut self,
        broker_id: i32,
        broker_epoch: i64,
        metadata_offset: i64,
        want_shut_down: bool,
        tx: oneshot::Sender<Result<HeartbeatReply, ApiError>>,
    ) {
        if let Err(e) = self.refuse_unless_active() {
            let _ = tx.send(Err(e));
            return;
        }
        let Some(broker) = self.node.latest().brokers.get(&broker_id).cloned() else {
            let _ = tx.send(Err(ApiError::new(
                ResponseError::BrokerIdNotRegistered,
                format!("broker {broker_id} is not registered"),
            )));
            return;
        };
        if broker.epoch != broker_epoch {
            let _ = tx.send(Err(ApiError::new(
                ResponseError::StaleBrokerEpoch,
                format!("broker {broker_id} is registered at epoch {}, not {broker_epoch}", broker.epoch),
            )));
            return;
        }
        self.heartbeats.insert(broker_id, Instant::now());
        let defaults = self.election;
        // Caught up: the broker's metadata holds its registration (whose index is its epoch).
        let is_caught_up = metadata_offset > broker.epoch;
        if want_shut_down {
            // Controlled shutdown: its partitions move (or go leaderless) before it stops.
            let reply = HeartbeatReply { is_caught_up, is_fenced: true, should_shut_down: true };
            self.decide(move |img| (decisions::fence_broker(img, broker_id, &defaults), reply), tx);
        } else if broker.fenced && is_caught_up {
            tracing::info!(broker = broker_id, "unfencing a broker: it heartbeats again and has caught up");
            let reply = HeartbeatReply { is_caught_up, is_fenced: false, should_shut_down: false };
            self.decide(move |img| (decisions::unfence_broker(img, broker_id, &defaults), reply), tx);
        } else {
            let _ = tx.send(Ok(HeartbeatReply { is_caught_up, is_fenced: broker.fenced, should_shut_down: false }));
        }
    }

    /// Proposes one membership change; answers once it is committed.
    fn change_membership(
        &mut self,
        node: u64,
        change: crate::raft::Membership,
        tx: oneshot::Sender<Result<(), ApiError>>,
    ) {
        if let Err(e) = self.refuse_unless_active() {
            let _ = tx.send(Err(e));
            return;
        }
        if change == crate::raft::Membership::Remove && node == self.node.id() {
            if let Some(&to) = self.node.voters().iter().find(|v| **v != node) {
                self.node.transfer_leadership(to);
            }
            let _ = tx.send(Err(not_controller(None)));
            return;
        }
        let proposed = self.node.propose_membership(node, change);
        self.track(
            proposed,
            ResponseError::InvalidRequest,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
    }

    /// NOT_CONTROLLER (naming the leader this node knows, if another) unless this node is
    /// the active controller.
    fn refuse_unless_active(&self) -> Result<(), ApiError> {
        if self.node.is_active() {
            return Ok(());
        }
        let leader = self.node.leader_id();
        Err(not_controller((leader != 0 && !self.node.is_leader()).then_some(leader as i32)))
    }

    /// Tracks a proposal until its entry is applied (`answer` is called then) or lost.
    fn track(
        &mut self,
        proposed: Result<crate::raft::Proposed, Refused>,
        inconsistent: ResponseError,
        answer: Completion,
    ) {
        match proposed {
            Ok(p) => {
                self.pending.insert(p.index, (p.term, answer));
            }
            Err(Refused::NotLeader(l)) => answer(Err(not_controller(l.map(|l| l as i32)))),
            Err(Refused::Loading) => answer(Err(not_controller(None))),
            Err(Refused::Inconsistent(e)) => {
                tracing::error!(error = %e, "a proposal was refused");
                answer(Err(ApiError::new(inconsistent, e)));
            }
        }
    }

    /// The first active controller of a new cluster writes its id (from meta.properties).
    fn bootstrap(&mut self) {
        if self.bootstrapping || !self.node.is_active() || self.node.latest().cluster_id.is_some() {
            return;
        }
        let record = MetadataRecord::ClusterCreated { cluster_id: self.cluster_id.clone() };
        if let Ok(p) = self.node.propose(&[record]) {
            self.bootstrapping = true;
            tracing::info!(cluster_id = %self.cluster_id, index = p.index, "bootstrapping the cluster's metadata");
        }
    }

    fn decide<T: Send + 'static>(
        &mut self,
        decide: impl FnOnce(&MetadataImage) -> (Vec<MetadataRecord>, T),
        tx: oneshot::Sender<Result<T, ApiError>>,
    ) {
        if let Err(e) = self.refuse_unless_active() {
            let _ = tx.send(Err(e));
            return;
        }
        let (records, answer) = decide(self.node.latest());
        if records.is_empty() {
            let _ = tx.send(Ok(answer));
            return;
        }
        let proposed = self.node.propose(&records);
        // Records that do not apply to the latest image are a decision's bug.
        self.track(
            proposed,
            ResponseError::UnknownServerError,
            Box::new(move |r| {
                let _ = tx.send(r.map(|()| answer));
            }),
        );
    }

    fn ready(&mut self) -> Result<(), ControllerError> {
        let out = self.node.handle_ready()?;
        for m in out.messages {
            self.transport.send(m);
        }
        for a in out.applied {
            // Entries without records (a new leader's, membership changes) leave the image
            // as it was: nothing to publish.
            let previous = self.shared.committed.load_full();
            if !Arc::ptr_eq(&previous, &a.image) {
                if a.image.controllers != previous.controllers {
                    for (id, (host, port)) in a.image.controllers.iter() {
                        self.transport.ensure_peer(*id as u64, &format!("{host}:{port}"));
                    }
                }
                self.shared.committed.store(a.image.clone());
                let _ = self.loader.send(LoaderJob::Publish(a.image.clone(), a.delta));
            }
            // Proposals at or below this index are decided: committed with their term, or lost.
            let later = self.pending.split_off(&(a.index + 1));
            for (index, (term, done)) in std::mem::replace(&mut self.pending, later) {
                let result = if index == a.index && term == a.term { Ok(()) } else { Err(not_controller(None)) };
                let _ = self.loader.send(LoaderJob::Call(Box::new(move || done(result))));
            }
            if a.image.cluster_id.is_some() {
                self.bootstrapping = false;
            }
            if let Some(found) = a.image.cluster_id.as_deref() {
                if found != self.cluster_id {
                    return Err(ControllerError::Identity(format!(
                        "the quorum's metadata belongs to cluster {found}, this node to {}",
                        self.cluster_id
                    )));
                }
            }
        }
        if out.lost_leadership {
            tracing::info!(term = self.node.term(), "no longer the active controller");
            self.bootstrapping = false;
            for (_, (_, done)) in std::mem::take(&mut self.pending) {
                let _ = self.loader.send(LoaderJob::Call(Box::new(move || done(Err(not_controller(None))))));
            }
        }
        let status = QuorumStatus {
            leader_id: (self.node.leader_id() != 0).then_some(self.node.leader_id() as i32),
            term: self.node.term(),
            active: self.node.is_active(),
            voters: self.node.voters(),
            learners: self.node.learners(),
            commit_index: self.node.commit_index(),
            applied_index: self.node.applied_index(),
            last_index: self.node.last_index(),
            progress: self.node.progress().unwrap_or_default(),
        };
        let mut shared = self.shared.status.lock().unwrap_or_else(PoisonError::into_inner);
        if *shared != status {
            if shared.leader_id != status.leader_id || shared.active != status.active {
                tracing::info!(leader = ?status.leader_id, term = status.term, active = status.active,
                    "metadata quorum leader");
            }
            *shared = status;
        }
        Ok(())
    }
}

fn run_loader(mut image: Arc<MetadataImage>, rx: mpsc::Receiver<LoaderJob>) {
    let mut publishers: Vec<Arc<dyn MetadataPublisher>> = Vec::new();
    while let Ok(job) = rx.recv() {
        let run = std::panic::AssertUnwindSafe(|| match job {
            LoaderJob::Publish(next, delta) => {
                for p in &publishers {
                    p.publish(&next, &delta);
                }
                image = next;
            }
            LoaderJob::Register(p, done) => {
                p.publish(&image, &MetadataDelta::everything_in(&image));
                publishers.push(p);
                let _ = done.send(());
            }
            LoaderJob::Call(f) => f(),
        });
        if std::panic::catch_unwind(run).is_err() {
            tracing::error!("a metadata publisher panicked; stopping the node");
            std::process::abort();
        }
    }
}

impl ControllerChannel for QuorumController {
    fn create_acls(
        &self,
        acls: Vec<strata_metadata::image::AclImage>,
    ) -> BoxFuture<'_, Result<Vec<Result<(), ApiError>>, ApiError>> {
        Box::pin(self.commit(move |img| decisions::create_acls(img, &acls)))
    }

    fn delete_acls(
        &self,
        filters: Vec<strata_metadata::channel::AclFilterSpec>,
    ) -> BoxFuture<'_, Result<Vec<strata_metadata::channel::AclDeleteResult>, ApiError>> {
        Box::pin(self.commit(move |img| decisions::delete_acls(img, &filters)))
    }

    fn alter_client_quotas(
        &self,
        alterations: Vec<strata_metadata::channel::QuotaAlteration>,
        validate_only: bool,
    ) -> BoxFuture<'_, Result<Vec<Result<(), ApiError>>, ApiError>> {
        let commit =
            self.commit(move |img| crate::client_quotas::alter_client_quotas(img, &alterations, validate_only));
        Box::pin(commit)
    }

    fn alter_scram_credentials(
        &self,
        changes: Vec<strata_metadata::channel::ScramChange>,
    ) -> BoxFuture<'_, Result<Vec<strata_metadata::channel::ScramResult>, ApiError>> {
        let commit = self.commit(move |img| decisions::alter_scram_credentials(img, &changes));
        Box::pin(commit)
    }

    fn create_topics(
        &self,
        topics: Vec<CreateTopicSpec>,
        validate_only: bool,
    ) -> BoxFuture<'_, Vec<CreateTopicResult>> {
        let names: Vec<String> = topics.iter().map(|t| t.name.clone()).collect();
        let defaults = self.config.defaults.clone();
        Box::pin(async move {
            let fail = |e: ApiError| {
                names.iter().map(|n| CreateTopicResult { name: n.clone(), result: Err(e.clone()) }).collect()
            };
            if self.status().active {
                let t = topics.clone();
                match self.commit(move |img| decisions::create_topics(img, &defaults, t, validate_only)).await {
                    Ok(results) => return results,
                    Err(e) if e.error == ResponseError::NotController => {}
                    Err(e) => return fail(e),
                }
            }
            // The broker's own topics: retried while the quorum elects a leader.
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                match self.forward_create_topics(topics.clone(), validate_only).await {
                    Ok(results) => return results,
                    Err(e) if e.error == ResponseError::NotController && Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(e) => return fail(e),
                }
            }
        })
    }

    // One decision committed as it is (DeleteTopics, CreatePartitions, AlterConfigs).
    fn delete_topics(
        &self,
        topics: Vec<strata_metadata::channel::TopicRef>,
    ) -> BoxFuture<'_, Vec<strata_metadata::channel::DeleteTopicResult>> {
        let refs = topics.clone();
        let commit = self.commit(move |img| decisions::delete_topics(img, topics));
        Box::pin(async move {
            match commit.await {
                Ok(results) => results,
                Err(e) => decisions::delete_topics_failed(refs, &e),
            }
        })
    }

    fn create_partitions(
        &self,
        topic: String,
        total_count: i32,
        assignments: Option<Vec<Vec<i32>>>,
        validate_only: bool,
    ) -> BoxFuture<'_, Result<(), ApiError>> {
        let commit = self.commit(move |img| {
            decisions::create_partitions_request(img, &topic, total_count, assignments.as_deref(), validate_only)
        });
        Box::pin(async move { commit.await? })
    }

    fn alter_configs(
        &self,
        resource: strata_metadata::ConfigResource,
        ops: Vec<strata_metadata::channel::ConfigOp>,
        replace: bool,
        validate_only: bool,
    ) -> BoxFuture<'_, Result<(), ApiError>> {
        let commit =
            self.commit(move |img| decisions::alter_configs_request(img, &resource, &ops, replace, validate_only));
        Box::pin(async move { commit.await? })
    }

    fn allocate_producer_ids(&self, broker_id: i32, count: i64) -> BoxFuture<'_, Result<Range<i64>, ApiError>> {
        Box::pin(async move {
            if self.status().active {
                match self.commit(move |img| decisions::allocate_producer_ids(img, broker_id, count)).await {
                    Err(e) if e.error == ResponseError::NotController => {}
                    other => return other,
                }
            }
            let client = self.leader_client()?;
            let req = AllocateProducerIdsRequest::default().with_broker_id(BrokerId(broker_id)).with_broker_epoch(-1);
            let resp = client.call(0, &req).await.map_err(|e| unavailable(&e))?;
            match resp.error_code.err() {
                None => Ok(resp.producer_id_start.0..resp.producer_id_start.0 + i64::from(resp.producer_id_len)),
                Some(e) => Err(ApiError::new(e, format!("producer ids refused by {}", client.addr()))),
            }
        })
    }

    fn alter_partition(
        &self,
        broker_id: i32,
        broker_epoch: i64,
        changes: Vec<decisions::IsrChange>,
    ) -> BoxFuture<'_, Result<Vec<decisions::IsrOutcome>, ApiError>> {
        Box::pin(async move {
            if self.status().active {
                let local = changes.clone();
                let defaults = self.config.defaults.election;
                let decided = self.commit(move |img| {
                    match decisions::alter_partition(img, broker_id, broker_epoch, &local, &defaults) {
                        Ok((records, outcomes)) => (records, Ok(outcomes)),
                        Err(e) => (Vec::new(), Err(e)),
                    }
                });
                match decided.await {
                    Err(e) if e.error == ResponseError::NotController => {}
                    Ok(result) => return result,
                    Err(e) => return Err(e),
                }
            }
            self.send_alter_partition(broker_id, broker_epoch, &changes).await
        })
    }

    fn elect_leaders(
        &self,
        election: decisions::ElectionType,
        partitions: Option<Vec<(String, i32)>>,
    ) -> BoxFuture<'_, Result<Vec<decisions::ElectionResult>, ApiError>> {
        let defaults = self.config.defaults.election;
        let commit = self.commit(move |img| decisions::elect_leaders(img, election, partitions.as_deref(), &defaults));
        Box::pin(commit)
    }

    fn alter_reassignments(
        &self,
        targets: Vec<strata_metadata::channel::ReassignmentTarget>,
        allow_rf_change: bool,
    ) -> BoxFuture<'_, Result<Vec<strata_metadata::channel::ReassignmentResult>, ApiError>> {
        let defaults = self.config.defaults.election;
        let commit =
            self.commit(move |img| crate::reassign::alter_reassignments(img, &targets, allow_rf_change, &defaults));
        Box::pin(commit)
    }

    fn list_reassignments(
        &self,
        wanted: Option<Vec<(String, Vec<i32>)>>,
    ) -> BoxFuture<'_, Result<Vec<strata_metadata::channel::OngoingReassignment>, ApiError>> {
        let commit = self.commit(move |img| (Vec::new(), crate::reassign::list_reassignments(img, wanted.as_deref())));
        Box::pin(commit)
    }

    fn is_active(&self) -> bool {
        self.status().active
    }

    fn describe_quorum(&self) -> Option<strata_metadata::channel::QuorumDescription> {
        let status = self.status();
        if !status.active {
            return None;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let replica = |id: &u64| {
            let matched = status.progress.iter().find(|(p, _)| p == id).map_or(0, |(_, m)| *m);
            let leo = if *id as i32 == self.config.node_id { status.last_index } else { matched };
            strata_metadata::channel::QuorumReplica {
                id: *id as i32,
                log_end_offset: leo as i64,
                last_caught_up_ms: if leo >= status.commit_index { now } else { -1 },
            }
        };
        let voters = status.voters.iter().map(replica).collect();
        let observers = status.learners.iter().map(replica).collect();
        Some(strata_metadata::channel::QuorumDescription {
            leader_id: self.config.node_id,
            leader_epoch: i32::try_from(status.term).unwrap_or(i32::MAX),
            high_watermark: status.commit_index as i64,
            voters,
            observers,
            endpoints: status
                .voters
                .iter()
                .filter_map(|id| self.endpoint_of(*id as i32).map(|(h, p)| (*id as i32, h, p)))
                // A single node without a CONTROLLER listener has no endpoint to give.
                .filter(|(_, _, port)| *port != 0)
                .collect(),
        })
    }

    fn forward(&self, frame: Bytes, client_host: String, principal: String) -> BoxFuture<'_, Result<Bytes, ApiError>> {
        Box::pin(async move { self.forward_envelope(frame, &client_host, &principal, Duration::from_secs(30)).await })
    }
}

impl QuorumController {
    /// AlterPartition v3 (KIP-903: each member with its broker epoch) sent to the active
    /// controller; outcomes in the order of `changes`.
    async fn send_alter_partition(
        &self,
        broker_id: i32,
        broker_epoch: i64,
        changes: &[decisions::IsrChange],
    ) -> Result<Vec<decisions::IsrOutcome>, ApiError> {
        use kafka_protocol::messages::alter_partition_request::{BrokerState, PartitionData, TopicData};
        let client = self.leader_client()?;
        // One entry per topic, in first-seen order; partitions in the order given.
        let mut topics: Vec<TopicData> = Vec::new();
        for c in changes {
            let data = PartitionData::default()
                .with_partition_index(c.partition)
                .with_leader_epoch(c.leader_epoch)
                .with_partition_epoch(c.partition_epoch)
                .with_new_isr_with_epochs(
                    c.new_isr
                        .iter()
                        .map(|(id, epoch)| {
                            BrokerState::default().with_broker_id(BrokerId(*id)).with_broker_epoch(*epoch)
                        })
                        .collect(),
                );
            match topics.iter_mut().find(|t| t.topic_id == c.topic_id) {
                Some(t) => t.partitions.push(data),
                None => topics.push(TopicData::default().with_topic_id(c.topic_id).with_partitions(vec![data])),
            }
        }
        let req = kafka_protocol::messages::AlterPartitionRequest::default()
            .with_broker_id(BrokerId(broker_id))
            .with_broker_epoch(broker_epoch)
            .with_topics(topics);
        let resp = client.call(3, &req).await.map_err(|e| unavailable(&e))?;
        if let Some(e) = resp.error_code.err() {
            return Err(ApiError::new(e, format!("AlterPartition refused by {}", client.addr())));
        }
        Ok(changes
            .iter()
            .map(|c| {
                let found = resp
                    .topics
                    .iter()
                    .filter(|t| t.topic_id == c.topic_id)
                    .flat_map(|t| t.partitions.iter())
                    .find(|p| p.partition_index == c.partition);
                match found {
                    Some(p) => match p.error_code.err() {
                        Some(e) => decisions::IsrOutcome::Refused(e),
                        None => decisions::IsrOutcome::Altered {
                            leader: p.leader_id.0,
                            leader_epoch: p.leader_epoch,
                            isr: p.isr.iter().map(|b| b.0).collect(),
                            partition_epoch: p.partition_epoch,
                        },
                    },
                    None => decisions::IsrOutcome::Refused(ResponseError::UnknownServerError),
                }
            })
            .collect())
    }

    /// CreateTopics sent to the active controller (the broker's own topics, e.g.
    /// `__consumer_offsets`; clients' requests travel in an Envelope instead).
    async fn forward_create_topics(
        &self,
        topics: Vec<CreateTopicSpec>,
        validate_only: bool,
    ) -> Result<Vec<CreateTopicResult>, ApiError> {
        let client = self.leader_client()?;
        let req = CreateTopicsRequest::default().with_timeout_ms(30_000).with_validate_only(validate_only).with_topics(
            topics
                .iter()
                .map(|t| {
                    CreatableTopic::default()
                        .with_name(TopicName(StrBytes::from_string(t.name.clone())))
                        .with_num_partitions(t.num_partitions)
                        .with_replication_factor(t.replication_factor)
                        .with_assignments(
                            t.assignments
                                .iter()
                                .map(|(p, brokers)| {
                                    CreatableReplicaAssignment::default()
                                        .with_partition_index(*p)
                                        .with_broker_ids(brokers.iter().map(|b| BrokerId(*b)).collect())
                                })
                                .collect(),
                        )
                        .with_configs(
                            t.configs
                                .iter()
                                .map(|(k, v)| {
                                    CreatableTopicConfig::default()
                                        .with_name(StrBytes::from_string(k.clone()))
                                        .with_value(Some(StrBytes::from_string(v.clone())))
                                })
                                .collect(),
                        )
                })
                .collect(),
        );
        let resp = client.call(7, &req).await.map_err(|e| unavailable(&e))?;
        Ok(resp
            .topics
            .into_iter()
            .map(|t| {
                let name = t.name.0.to_string();
                let result = match t.error_code.err() {
                    None => Ok(CreatedTopic {
                        topic_id: t.topic_id,
                        num_partitions: t.num_partitions,
                        replication_factor: t.replication_factor,
                        configs: t
                            .configs
                            .unwrap_or_default()
                            .into_iter()
                            .filter_map(|c| c.value.map(|v| (c.name.to_string(), v.to_string())))
                            .collect(),
                    }),
                    Some(e) => Err(ApiError::new(e, t.error_message.map(|m| m.to_string()).unwrap_or_default())),
                };
                CreateTopicResult { name, result }
            })
            .collect())
    }
}
