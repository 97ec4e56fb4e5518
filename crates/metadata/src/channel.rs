//! What a broker asks of the controller, and the seam it asks through.
//!
//! The broker holds a `dyn ControllerChannel`; on one node it is the
//! in-process controller, in a cluster it forwards to the active controller.
//! Broker and controller crates never import each other: both import this.

use std::collections::BTreeMap;
use std::future::Future;
use std::ops::Range;
use std::pin::Pin;

use strata_protocol::ResponseError;
use uuid::Uuid;

use crate::record::ConfigResource;

/// A boxed, sendable future (the trait must be object safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A Kafka error code with the message the client is shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub error: ResponseError,
    pub message: String,
}

impl ApiError {
    pub fn new(error: ResponseError, message: impl Into<String>) -> Self {
        Self { error, message: message.into() }
    }
}

/// A topic to create. `num_partitions` / `replication_factor` of -1 mean the
/// broker defaults; `assignments` (partition -> replicas), when given, fixes
/// both.
#[derive(Debug, Clone, Default)]
pub struct CreateTopicSpec {
    pub name: String,
    pub num_partitions: i32,
    pub replication_factor: i16,
    pub assignments: Vec<(i32, Vec<i32>)>,
    pub configs: BTreeMap<String, String>,
}

/// The outcome for one topic of a CreateTopics.
#[derive(Debug, Clone)]
pub struct CreateTopicResult {
    pub name: String,
    pub result: Result<CreatedTopic, ApiError>,
}

#[derive(Debug, Clone)]
pub struct CreatedTopic {
    pub topic_id: Uuid,
    pub num_partitions: i32,
    pub replication_factor: i16,
    /// The topic's explicitly set configs.
    pub configs: BTreeMap<String, String>,
}

/// A topic named by name or by id (DeleteTopics v6 allows either).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TopicRef {
    Name(String),
    Id(Uuid),
}

/// The outcome for one topic of a DeleteTopics.
#[derive(Debug, Clone)]
pub struct DeleteTopicResult {
    pub name: Option<String>,
    pub topic_id: Uuid,
    pub result: Result<(), ApiError>,
}

/// One change of an IncrementalAlterConfigs / AlterConfigs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigOp {
    Set(String, String),
    Delete(String),
}

/// The metadata quorum as its leader describes it (DescribeQuorum, KIP-595 / KIP-836).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QuorumDescription {
    pub leader_id: i32,
    /// The leader's epoch (its Raft term).
    pub leader_epoch: i32,
    /// The committed index of the metadata log.
    pub high_watermark: i64,
    /// Each voter's log end as the leader knows it.
    pub voters: Vec<QuorumReplica>,
    /// The same for the observers: members that replicate without voting (broker-only
    /// nodes, controllers being added).
    pub observers: Vec<QuorumReplica>,
    /// Each voter's CONTROLLER endpoint (id, host, port).
    pub endpoints: Vec<(i32, String, u16)>,
}

/// One replica of the metadata log in a [`QuorumDescription`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QuorumReplica {
    pub id: i32,
    pub log_end_offset: i64,
    /// When the leader last knew it caught up (ms since the epoch), -1 if unknown.
    pub last_caught_up_ms: i64,
}

/// One partition of an AlterPartition request (key 56, KIP-497): the ISR its leader proposes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsrChange {
    pub topic_id: Uuid,
    pub partition: i32,
    /// The leader and partition epochs the leader's change is based on.
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    /// The proposed ISR: broker ids with the broker epoch the leader saw them with (-1 when
    /// the request version carries none, KIP-903).
    pub new_isr: Vec<(i32, i64)>,
}

/// The answer for one partition of AlterPartition: its registration after the change (or as
/// it stands, when nothing changed), or why it was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IsrOutcome {
    Altered { leader: i32, leader_epoch: i32, isr: Vec<i32>, partition_epoch: i32 },
    Refused(ResponseError),
}

/// ElectLeaders' election type (KIP-460).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElectionType {
    /// Make each partition's preferred replica (the first of its replicas) its leader, if it is
    /// in the ISR and live.
    Preferred,
    /// Give a leaderless partition a leader, from outside the ISR if need be.
    Unclean,
}

/// One partition's outcome of an ElectLeaders: (topic, partition, result).
pub type ElectionResult = (String, i32, Result<(), ApiError>);

/// One partition's outcome of an AlterPartitionReassignments: (topic, partition, result).
pub type ReassignmentResult = (String, i32, Result<(), ApiError>);

/// One partition of AlterPartitionReassignments (key 45): (topic, partition, target replicas),
/// a `None` target cancelling the reassignment in progress.
pub type ReassignmentTarget = (String, i32, Option<Vec<i32>>);

/// One partition being reassigned (KIP-455), as ListPartitionReassignments (key 46) shows it:
/// its replicas (targets first, then those leaving), and which are being added and removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OngoingReassignment {
    pub topic: String,
    pub partition: i32,
    pub replicas: Vec<i32>,
    pub adding: Vec<i32>,
    pub removing: Vec<i32>,
}

/// One change of AlterUserScramCredentials (key 51): a user's credential for a mechanism
/// (1 SCRAM-SHA-256, 2 SCRAM-SHA-512) removed, or set from the salted password the client
/// computed (`Hi(password, salt, iterations)`; the controller derives the stored keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScramChange {
    pub name: String,
    pub mechanism: i8,
    /// `None`: delete.
    pub upsert: Option<ScramUpsert>,
}

/// The salted password of a [`ScramChange`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScramUpsert {
    pub salt: Vec<u8>,
    pub salted_password: Vec<u8>,
    pub iterations: i32,
}

/// One DeleteAcls filter as sent: Kafka's ids, ANY (1) matching every value and, for the
/// pattern, MATCH (2) the bindings that cover `name`; `None` strings match anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclFilterSpec {
    pub resource_type: i8,
    pub name: Option<String>,
    pub pattern_type: i8,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operation: i8,
    pub permission: i8,
}

/// One DeleteAcls filter's outcome: the bindings it removed.
pub type AclDeleteResult = Result<Vec<crate::image::AclImage>, ApiError>;

/// One entity's changes of AlterClientQuotas (key 49): the quota keys to set (`Some`) or
/// remove (`None`), in the order sent.
#[derive(Debug, Clone, PartialEq)]
pub struct QuotaAlteration {
    /// As sent: (entity type, name) pairs, a `None` name the default; not yet validated.
    pub entity: Vec<(String, Option<String>)>,
    pub ops: Vec<(String, Option<f64>)>,
}

/// One user's outcome of AlterUserScramCredentials.
pub type ScramResult = (String, Result<(), ApiError>);

/// The controller, as the broker sees it.
pub trait ControllerChannel: Send + Sync {
    fn create_topics(&self, topics: Vec<CreateTopicSpec>, validate_only: bool)
        -> BoxFuture<'_, Vec<CreateTopicResult>>;
    fn delete_topics(&self, topics: Vec<TopicRef>) -> BoxFuture<'_, Vec<DeleteTopicResult>>;
    /// Grows `topic` to `total_count` partitions, placing the new ones on `assignments` (one
    /// replica list per new partition) when given.
    fn create_partitions(
        &self,
        topic: String,
        total_count: i32,
        assignments: Option<Vec<Vec<i32>>>,
        validate_only: bool,
    ) -> BoxFuture<'_, Result<(), ApiError>>;
    /// Applies `ops` to one resource atomically. `replace` drops every
    /// setting not in `ops` first (legacy AlterConfigs semantics).
    fn alter_configs(
        &self,
        resource: ConfigResource,
        ops: Vec<ConfigOp>,
        replace: bool,
        validate_only: bool,
    ) -> BoxFuture<'_, Result<(), ApiError>>;
    /// Reserves `count` fresh producer ids for `broker_id`.
    fn allocate_producer_ids(&self, broker_id: i32, count: i64) -> BoxFuture<'_, Result<Range<i64>, ApiError>>;

    /// AlterPartition (key 56, KIP-497) from the leader `broker_id` at `broker_epoch`: the ISR
    /// changes it proposes, one outcome per change in order once the controller has decided
    /// (and committed what it accepted). An error for the whole request (STALE_BROKER_EPOCH,
    /// NOT_CONTROLLER when no controller could be reached) leaves every change undecided.
    fn alter_partition(
        &self,
        broker_id: i32,
        broker_epoch: i64,
        changes: Vec<IsrChange>,
    ) -> BoxFuture<'_, Result<Vec<IsrOutcome>, ApiError>>;

    /// The quorum, if this node can describe it (it is the leader); `None` elsewhere (the
    /// broker forwards DescribeQuorum to the active controller).
    fn describe_quorum(&self) -> Option<QuorumDescription> {
        None
    }

    /// ElectLeaders (key 43) on the active controller: `partitions` (topic, partition), or
    /// every partition with `None` (then only the partitions that needed an election are in
    /// the answer). Each outcome once the elections are committed.
    fn elect_leaders(
        &self,
        election: ElectionType,
        partitions: Option<Vec<(String, i32)>>,
    ) -> BoxFuture<'_, Result<Vec<ElectionResult>, ApiError>>;

    /// AlterPartitionReassignments (key 45) on the active controller: one outcome per target,
    /// in order, once the changes are committed (the reassignments themselves finish later,
    /// when the new replicas are in sync). `allow_rf_change` is v1's
    /// `allow_replication_factor_change` (KIP-860; true before v1).
    fn alter_reassignments(
        &self,
        targets: Vec<ReassignmentTarget>,
        allow_rf_change: bool,
    ) -> BoxFuture<'_, Result<Vec<ReassignmentResult>, ApiError>>;

    /// ListPartitionReassignments (key 46) on the active controller: the reassignments in
    /// progress among `wanted` (topic, partitions), or all of them with `None`.
    fn list_reassignments(
        &self,
        wanted: Option<Vec<(String, Vec<i32>)>>,
    ) -> BoxFuture<'_, Result<Vec<OngoingReassignment>, ApiError>>;

    /// AlterUserScramCredentials (key 51) on the active controller: one outcome per user named,
    /// in the order first named, once the changes are committed.
    fn alter_scram_credentials(&self, changes: Vec<ScramChange>) -> BoxFuture<'_, Result<Vec<ScramResult>, ApiError>> {
        let _ = changes;
        Box::pin(async { Err(ApiError::new(ResponseError::NotController, "no controller here".to_string())) })
    }

    /// AlterClientQuotas (key 49) on the active controller: one outcome per alteration, in
    /// order, once committed (nothing is committed with `validate_only`).
    fn alter_client_quotas(
        &self,
        alterations: Vec<QuotaAlteration>,
        validate_only: bool,
    ) -> BoxFuture<'_, Result<Vec<Result<(), ApiError>>, ApiError>> {
        let _ = (alterations, validate_only);
        Box::pin(async { Err(ApiError::new(ResponseError::NotController, "no controller here".to_string())) })
    }

    /// CreateAcls (key 30) on the active controller: one outcome per binding, in order, once
    /// committed (a binding that exists already succeeds without a second copy).
    fn create_acls(
        &self,
        acls: Vec<crate::image::AclImage>,
    ) -> BoxFuture<'_, Result<Vec<Result<(), ApiError>>, ApiError>> {
        let _ = acls;
        Box::pin(async { Err(ApiError::new(ResponseError::NotController, "no controller here".to_string())) })
    }

    /// DeleteAcls (key 31) on the active controller: per filter, the bindings it removed.
    fn delete_acls(&self, filters: Vec<AclFilterSpec>) -> BoxFuture<'_, Result<Vec<AclDeleteResult>, ApiError>> {
        let _ = filters;
        Box::pin(async { Err(ApiError::new(ResponseError::NotController, "no controller here".to_string())) })
    }

    /// Whether admin requests are decided on this node: it is the active controller (always,
    /// on a single node). When false, the broker forwards clients' admin requests with
    /// [`forward`](Self::forward).
    fn is_active(&self) -> bool {
        true
    }

    /// Sends a client's request frame (header and body, without the size) to the active
    /// controller in an Envelope (KIP-590) and returns the response frame (header and body),
    /// which answers the client as it is. `client_host` is the client's address, `principal`
    /// who it authenticated as (`User:NAME`): the controller authorizes the request as theirs.
    fn forward(
        &self,
        frame: bytes::Bytes,
        client_host: String,
        principal: String,
    ) -> BoxFuture<'_, Result<bytes::Bytes, ApiError>> {
        let _ = (frame, client_host, principal);
        Box::pin(async {
            Err(ApiError::new(ResponseError::NotController, "this node cannot forward to a controller".to_string()))
        })
    }
}
