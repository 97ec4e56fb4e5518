//! The admin client's view of a cluster: bootstrap, API version negotiation per node, and
//! where each request goes (any broker, a given broker, a group's coordinator, a partition's
//! leader), as Kafka's `KafkaAdminClient` routes them.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiVersionsRequest, FindCoordinatorRequest, MetadataRequest, MetadataResponse, TopicName,
};
use kafka_protocol::protocol::{Request, StrBytes};
use strata_client::KafkaClient;
use strata_security::client::ClientSecurity;
use strata_security::SecurityProtocol;

use crate::error::{error_name, CliError};

/// How to reach the cluster.
#[derive(clap::Args, Debug, Clone)]
pub struct ConnectArgs {
    /// Brokers to start from, HOST:PORT[,HOST:PORT...].
    #[arg(long = "bootstrap-server", value_name = "HOST:PORT", default_value = "127.0.0.1:9092", global = true)]
    pub bootstrap_server: String,
    /// Kafka client properties for TLS and SASL (security.protocol, sasl.mechanism,
    /// sasl.jaas.config, ssl.truststore.location, ssl.keystore.location, ...), as the
    /// kafka-*.sh tools' --command-config.
    #[arg(long, value_name = "FILE", global = true)]
    pub command_config: Option<PathBuf>,
    /// How long to wait for each answer, and for a change (a new topic's leaders, a deleted
    /// topic's absence) to show, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 30_000, global = true)]
    pub request_timeout_ms: u64,
}

/// The API versions the admin commands speak: (lowest, highest). The request bodies the
/// commands build are valid at every version in their range; the version sent is the highest
/// the node also speaks.
fn our_versions(key: i16) -> Option<(i16, i16)> {
    Some(match key {
        0 => (3, 11),      // Produce: record batches v2, topic names
        1 => (4, 12),      // Fetch: topic names (v13 moved to topic ids)
        2 => (2, 7),       // ListOffsets
        3 => (9, 12),      // Metadata
        8 => (2, 8),       // OffsetCommit
        9 => (6, 7),       // OffsetFetch: one group per request
        10 => (4, 6),      // FindCoordinator: batched keys
        15 => (0, 5),      // DescribeGroups
        16 => (0, 5),      // ListGroups
        18 => (0, 3),      // ApiVersions
        19 => (5, 7),      // CreateTopics
        20 => (6, 6),      // DeleteTopics: topics by name or id
        29..=31 => (1, 3), // DescribeAcls, CreateAcls, DeleteAcls
        32 => (1, 4),      // DescribeConfigs
        35 => (1, 4),      // DescribeLogDirs
        37 => (0, 3),      // CreatePartitions
        42 => (0, 2),      // DeleteGroups
        44 => (0, 1),      // IncrementalAlterConfigs
        47 => (0, 0),      // OffsetDelete
        48 | 49 => (0, 1), // DescribeClientQuotas, AlterClientQuotas
        50 | 51 => (0, 0), // DescribeUserScramCredentials, AlterUserScramCredentials
        55 => (0, 2),      // DescribeQuorum
        69 => (0, 1),      // ConsumerGroupDescribe
        60 => (0, 2),      // DescribeCluster (v2: fenced brokers)
        _ => return None,
    })
}

/// One node: its connection and the versions it speaks.
struct Node {
    client: KafkaClient,
    versions: tokio::sync::OnceCell<HashMap<i16, (i16, i16)>>,
}

/// A connected cluster: the broker that answered the bootstrap, and every broker it listed.
pub struct Cluster {
    security: Option<Arc<ClientSecurity>>,
    /// Per-answer and per-wait limit.
    pub timeout: Duration,
    nodes: Mutex<HashMap<String, Arc<Node>>>,
    bootstrap: String,
    /// Broker id -> HOST:PORT, from the last Metadata answer.
    brokers: Mutex<BTreeMap<i32, String>>,
}

impl Cluster {
    /// Connects to the first reachable `--bootstrap-server` address and learns the brokers.
    pub async fn connect(args: &ConnectArgs) -> Result<Self, CliError> {
        let security = match &args.command_config {
            Some(path) => client_security(path)?.map(Arc::new),
            None => None,
        };
        let addrs: Vec<String> =
            args.bootstrap_server.split(',').map(str::trim).filter(|a| !a.is_empty()).map(str::to_owned).collect();
        if addrs.is_empty() {
            return Err(CliError::Usage("--bootstrap-server names no HOST:PORT".into()));
        }
        let mut last = String::new();
        for addr in &addrs {
            let timeout = Duration::from_millis(args.request_timeout_ms.max(1));
            let cluster = Cluster::new(addr.clone(), security.clone(), timeout);
            match cluster.metadata(Some(&[])).await {
                Ok(_) => return Ok(cluster),
                // The cluster answered and refused (a failed login, a Kafka error): no other
                // bootstrap address would do better.
                Err(e @ (CliError::Failed(_) | CliError::Kafka { .. })) => return Err(e),
                Err(e) => last = e.to_string(),
            }
        }
        Err(CliError::Connect(format!("cannot reach the cluster at {}: {last}", args.bootstrap_server)))
    }

    /// A cluster reached through `bootstrap` (HOST:PORT) with `security` (TLS and/or a SASL
    /// login; `None` for PLAINTEXT). Nothing is sent until the first request.
    pub fn new(bootstrap: String, security: Option<Arc<ClientSecurity>>, timeout: Duration) -> Self {
        Cluster {
            security,
            timeout,
            nodes: Mutex::new(HashMap::new()),
            bootstrap,
            brokers: Mutex::new(BTreeMap::new()),
        }
    }

    fn node(&self, addr: &str) -> Arc<Node> {
        let mut nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        nodes
            .entry(addr.to_string())
            .or_insert_with(|| {
                Arc::new(Node {
                    client: KafkaClient::with_security(addr.to_string(), "strata-cli".into(), self.security.clone()),
                    versions: tokio::sync::OnceCell::new(),
                })
            })
            .clone()
    }

    /// The version of `R` to send to the node at `addr`: the highest both speak (asked with
    /// ApiVersions once per node).
    pub async fn version_for<R: Request>(&self, addr: &str) -> Result<i16, CliError> {
        let node = self.node(addr);
        let versions = node
            .versions
            .get_or_try_init(|| async {
                let req = ApiVersionsRequest::default()
                    .with_client_software_name(StrBytes::from_static_str("strata-cli"))
                    .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
                let answer =
                    node.client.call_within(3, &req, self.timeout).await.map_err(|e| transport_error(addr, e))?;
                if answer.error_code != 0 {
                    return Err(CliError::kafka(answer.error_code, format!("ApiVersions from {addr}"), None));
                }
                Ok(answer.api_keys.iter().map(|k| (k.api_key, (k.min_version, k.max_version))).collect())
            })
            .await?;
        let api = api_name(R::KEY);
        let (our_min, our_max) =
            our_versions(R::KEY).ok_or_else(|| CliError::Failed(format!("{api} is not spoken by this tool")))?;
        let (their_min, their_max) = *versions
            .get(&R::KEY)
            .ok_or_else(|| CliError::Failed(format!("{addr} does not support {api} (API key {})", R::KEY)))?;
        let version = our_max.min(their_max);
        if version < our_min.max(their_min) {
            return Err(CliError::Failed(format!(
                "{addr} speaks {api} v{their_min}-{their_max}, this tool v{our_min}-{our_max}"
            )));
        }
        Ok(version)
    }

    /// Sends `req` to the node at `addr`, at the highest version both speak.
    pub async fn send_to<R: Request>(&self, addr: &str, req: &R) -> Result<R::Response, CliError> {
        let version = self.version_for::<R>(addr).await?;
        self.node(addr).client.call_within(version, req, self.timeout).await.map_err(|e| transport_error(addr, e))
    }

    /// The bootstrap broker's address.
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// Sends `req` to the bootstrap broker (requests any broker answers or forwards to the
    /// controller).
    pub async fn send<R: Request>(&self, req: &R) -> Result<R::Response, CliError> {
        self.send_to(&self.bootstrap.clone(), req).await
    }

    /// Sends `req` to broker `id`.
    pub async fn send_to_broker<R: Request>(&self, id: i32, req: &R) -> Result<R::Response, CliError> {
        let addr = self.broker_addr(id)?;
        self.send_to(&addr, req).await
    }

    /// The HOST:PORT of broker `id`, from the last Metadata answer.
    pub fn broker_addr(&self, id: i32) -> Result<String, CliError> {
        self.brokers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
            .ok_or_else(|| CliError::Failed(format!("broker {id} is not in the cluster's metadata")))
    }

    /// The brokers' ids and addresses now (a Metadata request for no topics), for requests
    /// that go to every broker.
    pub async fn live_brokers(&self) -> Result<BTreeMap<i32, String>, CliError> {
        self.metadata(Some(&[])).await?;
        Ok(self.brokers.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }

    /// Metadata for `topics` (`None`: every topic; `Some(&[])`: brokers only), and the broker
    /// list it gives is remembered.
    pub async fn metadata(&self, topics: Option<&[String]>) -> Result<MetadataResponse, CliError> {
        let req = MetadataRequest::default().with_allow_auto_topic_creation(false).with_topics(topics.map(|t| {
            t.iter()
                .map(|name| {
                    MetadataRequestTopic::default().with_name(Some(TopicName(StrBytes::from_string(name.clone()))))
                })
                .collect()
        }));
        let answer = self.send(&req).await?;
        let brokers =
            answer.brokers.iter().map(|b| (b.node_id.0, format!("{}:{}", host_of(&b.host), b.port))).collect();
        *self.brokers.lock().unwrap_or_else(|p| p.into_inner()) = brokers;
        Ok(answer)
    }

    /// The coordinator of group `group` (`key_type` 0) or transactional id (1): its HOST:PORT.
    /// Waits out COORDINATOR_NOT_AVAILABLE / COORDINATOR_LOAD_IN_PROGRESS within the timeout.
    pub async fn coordinator(&self, key: &str, key_type: i8) -> Result<String, CliError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            let req = FindCoordinatorRequest::default()
                .with_key_type(key_type)
                .with_coordinator_keys(vec![StrBytes::from_string(key.to_string())]);
            let answer = self.send(&req).await?;
            let Some(c) = answer.coordinators.first() else {
                return Err(CliError::Failed(format!("FindCoordinator for {key} gave no coordinator")));
            };
            match c.error_code {
                0 => return Ok(format!("{}:{}", host_of(&c.host), c.port)),
                14 | 15 if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                code => {
                    return Err(CliError::kafka(
                        code,
                        format!("finding the coordinator of {key}"),
                        c.error_message.as_deref(),
                    ))
                }
            }
        }
    }
}

/// A failed call as an error: a refused login is the cluster saying no (exit 1), anything
/// else a connection problem (exit 3).
fn transport_error(addr: &str, e: String) -> CliError {
    // The client's messages name the address already when it is theirs to name.
    let e = if e.contains(addr) { e } else { format!("{addr}: {e}") };
    if e.contains("SASL") || e.contains("login") {
        CliError::Failed(format!("authentication failed: {e}"))
    } else if e.contains("response of ") {
        // An absurd length prefix: the first bytes were not a Kafka response ("HTTP" is
        // 1213486160 as a length).
        CliError::Connect(format!("{e} (not a Kafka listener? check the port, and TLS in --command-config)"))
    } else {
        CliError::Connect(e)
    }
}

/// A host as an address: IPv6 literals in brackets.
fn host_of(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

/// The TLS and SASL settings of a Kafka client properties file (`--command-config`).
fn client_security(path: &std::path::Path) -> Result<Option<ClientSecurity>, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::Usage(format!("cannot read --command-config {}: {e}", path.display())))?;
    let mut props = HashMap::new();
    // A line ending in a backslash goes on on the next (Java's Properties), as
    // sasl.jaas.config is often written over several lines.
    let mut logical = Vec::new();
    let mut pending = String::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(head) = line.strip_suffix('\\') {
            pending.push_str(head);
            pending.push(' ');
        } else {
            pending.push_str(line);
            logical.push(std::mem::take(&mut pending));
        }
    }
    if !pending.is_empty() {
        logical.push(pending);
    }
    for line in logical.iter().map(|l| l.trim()) {
        if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
            continue;
        }
        let split = line.find(['=', ':']).map(|i| (&line[..i], &line[i + 1..]));
        let Some((k, v)) = split else {
            return Err(CliError::Usage(format!("{}: '{line}' is not KEY=VALUE", path.display())));
        };
        props.insert(k.trim().to_string(), v.trim().to_string());
    }
    let protocol_name = props.get("security.protocol").cloned().unwrap_or_else(|| "PLAINTEXT".into());
    let protocol = SecurityProtocol::parse(&protocol_name.to_ascii_uppercase()).ok_or_else(|| {
        CliError::Usage(format!(
            "security.protocol={protocol_name}: expected PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"
        ))
    })?;
    let mechanism = props.get("sasl.mechanism").cloned().unwrap_or_else(|| "PLAIN".into());
    // The shared client reads a SASL login's JAAS entry under `<mechanism>.sasl.jaas.config`,
    // as a listener's keys are named; a client file names it `sasl.jaas.config`.
    let get = |key: &str| -> Option<String> {
        if key.ends_with(".sasl.jaas.config") {
            return props.get("sasl.jaas.config").cloned();
        }
        props.get(key).cloned()
    };
    ClientSecurity::from_config("client", protocol, &get, &mechanism)
        .map_err(|e| CliError::Usage(format!("--command-config {}: {e}", path.display())))
}

/// Kafka's name of an API key, for messages.
pub fn api_name(key: i16) -> String {
    kafka_protocol::messages::ApiKey::try_from(key).map_or_else(|_| format!("API {key}"), |k| format!("{k:?}"))
}

/// Kafka's error name and code of a refusal, for JSON.
pub fn error_json(code: i16, message: Option<&str>) -> serde_json::Value {
    serde_json::json!({ "code": code, "name": error_name(code), "message": message })
}
