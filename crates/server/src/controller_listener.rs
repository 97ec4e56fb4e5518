//! The CONTROLLER listener of a node in a quorum: Raft traffic from the other controllers and
//! Kafka's broker-to-controller RPCs.
//!
//! A connection that starts with the Raft magic is a peer controller's (see
//! `strata_controller::raft::transport`). Any other connection speaks the Kafka protocol:
//! - Envelope (58, KIP-590): a client's admin request forwarded by a broker; answered with the
//!   broker's own handler for it when this node is the active controller, else NOT_CONTROLLER.
//! - BrokerRegistration (62), BrokerHeartbeat (63), AllocateProducerIds (67) and AlterPartition
//!   (56, KIP-497: a leader's ISR change): decided by the active controller.
//! - ApiVersions (18): the controller's APIs (`strata_protocol::versions::CONTROLLER_SUPPORTED`).
//! - CreateTopics (19) and DescribeQuorum (55): answered as a broker would.
//! - DescribeCluster (60) with endpoint type 2 (KIP-919): the controllers.
//! - AddRaftVoter (80) and RemoveRaftVoter (81), KIP-853: membership changes at run time.
//!
//! Other keys close the connection with a log line.
//!
//! Security: PLAINTEXT, or SSL (`listener.security.protocol.map` maps the controller listener
//! to SSL; its `listener.name.controller.ssl.*` keys): with `ssl.client.auth=required` only
//! peers whose certificate the truststore verifies get in, and with an authorizer configured
//! only peers whose certificate principal is a super user (KRaft requires CLUSTER_ACTION on
//! this listener; an Envelope names the principal its request is authorized as, so this
//! listener must trust its peers). SASL on this listener is not built.

use std::sync::{Arc, OnceLock};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{
    AllocateProducerIdsRequest, AllocateProducerIdsResponse, ApiKey, BrokerRegistrationRequest,
    BrokerRegistrationResponse, EnvelopeRequest, EnvelopeResponse, RequestHeader,
};
use kafka_protocol::protocol::Decodable;
use strata_broker::net::handle_request_bytes;
use strata_broker::Broker;
use strata_controller::quorum::QuorumController;
use strata_controller::raft::transport::PeerStream;
use strata_controller::raft::transport::{serve_peer, RAFT_MAGIC};
use strata_protocol::response::encode_response;
use strata_protocol::ResponseError;
use strata_security::tls::TlsListener;
use strata_security::KafkaPrincipal;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Largest request accepted on this listener (a forwarded CreateTopics of many topics fits).
const MAX_REQUEST: usize = 100 << 20;

/// How the CONTROLLER listener secures its connections.
#[derive(Clone, Default)]
pub struct ControllerSecurity {
    /// TLS (an SSL controller listener).
    pub tls: Option<Arc<TlsListener>>,
    /// With an authorizer: the super users, the only principals let in.
    pub super_users: Option<Vec<KafkaPrincipal>>,
}

/// How long a TLS handshake may take on this listener.
const TLS_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Accepts connections until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    quorum: Arc<QuorumController>,
    broker: Arc<OnceLock<Arc<Broker>>>,
    security: ControllerSecurity,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.changed() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let (quorum, broker, security) = (quorum.clone(), broker.clone(), security.clone());
                tokio::spawn(async move {
                    let Some(stream) = secure(stream, peer, &security).await else { return };
                    if let Err(e) = connection(stream, peer, quorum, broker).await {
                        tracing::debug!(%peer, error = %e, "controller listener connection closed");
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed on the controller listener");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// The TLS handshake and the peer's principal check, on an SSL controller listener; `None`
/// (logged) when the peer is refused.
async fn secure(
    stream: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    security: &ControllerSecurity,
) -> Option<Box<dyn PeerStream>> {
    let Some(tls) = &security.tls else {
        return Some(Box::new(stream));
    };
    let stream = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, tls.acceptor().accept(stream)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::info!(%peer, error = %e, "controller listener: TLS handshake failed; closing the connection");
            return None;
        }
        Err(_) => {
            tracing::info!(%peer, "controller listener: TLS handshake not finished in time; closing the connection");
            return None;
        }
    };
    let principal = match tls.settings().principal_of(stream.get_ref().1.peer_certificates()) {
        Ok(p) => p,
        Err(reason) => {
            tracing::info!(%peer, %reason, "controller listener: peer refused");
            return None;
        }
    };
    if let Some(supers) = &security.super_users {
        if !supers.contains(&principal) {
            tracing::warn!(%peer, %principal,
                "controller listener: peer refused: with an authorizer, only super users may connect to controllers");
            return None;
        }
    }
    Some(Box::new(stream))
}

async fn connection(
    mut stream: Box<dyn PeerStream>,
    peer: std::net::SocketAddr,
    quorum: Arc<QuorumController>,
    broker: Arc<OnceLock<Arc<Broker>>>,
) -> std::io::Result<()> {
    let client_host = format!("/{}", peer.ip());
    let mut first = [0u8; 4];
    stream.read_exact(&mut first).await?;
    if first == RAFT_MAGIC[..4] {
        let mut rest = [0u8; 4];
        stream.read_exact(&mut rest).await?;
        if rest != RAFT_MAGIC[4..] {
            tracing::info!(%peer, "closing a controller listener connection: neither Raft nor Kafka");
            return Ok(());
        }
        if let Some(inbox) = quorum.raft_inbox() {
            serve_peer(stream, peer.to_string(), quorum.cluster_id().to_owned(), inbox, quorum.observers()).await;
        }
        return Ok(());
    }
    let mut size = u32::from_be_bytes(first) as usize;
    loop {
        if !(8..=MAX_REQUEST).contains(&size) {
            tracing::info!(%peer, size, "closing a controller listener connection: bad request size");
            return Ok(());
        }
        let mut frame = vec![0u8; size];
        stream.read_exact(&mut frame).await?;
        let frame = Bytes::from(frame);
        let Some(response) = respond(&quorum, &broker, &client_host, frame).await else {
            return Ok(());
        };
        stream.write_all(&response).await?;
        stream.flush().await?;
        let mut next = [0u8; 4];
        stream.read_exact(&mut next).await?;
        size = u32::from_be_bytes(next) as usize;
    }
}

/// The request body, or `None` (the connection closes) with a log line saying why.
fn decode<R: Decodable>(buf: &mut Bytes, version: i16) -> Option<R> {
    match R::decode(buf, version) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::info!(version, error = %e, "closing a controller listener connection: undecodable request");
            None
        }
    }
}

/// The broker, once this node has one (it starts after the quorum does); `None` after 30 s.
async fn wait_for_broker(broker: &OnceLock<Arc<Broker>>) -> Option<&Arc<Broker>> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Some(b) = broker.get() {
            return Some(b);
        }
        if std::time::Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The whole response frame for one request, or `None` to close the connection.
async fn respond(
    quorum: &Arc<QuorumController>,
    broker: &OnceLock<Arc<Broker>>,
    client_host: &str,
    frame: Bytes,
) -> Option<Bytes> {
    let key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let Ok(api) = ApiKey::try_from(key) else {
        tracing::info!(key, "closing a controller listener connection: unknown API key");
        return None;
    };
    let mut buf = frame.clone();
    let header = match RequestHeader::decode(&mut buf, api.request_header_version(version)) {
        Ok(h) => h,
        Err(e) => {
            tracing::info!(key, version, error = %e, "closing a controller listener connection: bad header");
            return None;
        }
    };
    let cid = header.correlation_id;
    let mut out = BytesMut::new();
    match api {
        ApiKey::Envelope => {
            let req = decode::<EnvelopeRequest>(&mut buf, version)?;
            let mut resp = EnvelopeResponse::default();
            match wait_for_broker(broker).await {
                Some(b) if quorum.status().active => {
                    let session = envelope_session(b, &req.client_host_address, req.request_principal.as_deref());
                    // Only what brokers forward travels in an Envelope (Kafka's EnvelopeUtils).
                    let inner = strata_protocol::request::peek_prefix(&req.request_data).map(|p| p.api_key);
                    if !inner.as_ref().is_ok_and(|k| strata_broker::net::FORWARDED.contains(k)) {
                        tracing::info!(inner = ?inner.ok(), "refusing an Envelope of an API brokers do not forward");
                        resp.error_code = ResponseError::InvalidRequest.code();
                        encode_response(&mut out, api, version, cid, &resp).ok()?;
                        return Some(out.freeze());
                    }
                    match handle_request_bytes(b, &session, req.request_data).await {
                        // The inner response without its size: the forwarding broker adds it back.
                        Ok(Some(inner)) => resp.response_data = Some(inner.slice(4..)),
                        Ok(None) => {}
                        Err(e) => {
                            tracing::info!(error = %e, "a forwarded request could not be handled");
                            resp.error_code = ResponseError::InvalidRequest.code();
                        }
                    }
                }
                _ => resp.error_code = ResponseError::NotController.code(),
            }
            encode_response(&mut out, api, version, cid, &resp).ok()?;
        }
        ApiKey::BrokerRegistration => {
            let req = decode::<BrokerRegistrationRequest>(&mut buf, version)?;
            let mut resp = BrokerRegistrationResponse::default();
            match quorum.handle_broker_registration(&req).await {
                Ok(epoch) => resp.broker_epoch = epoch,
                Err(e) => resp.error_code = e.error.code(),
            }
            encode_response(&mut out, api, version, cid, &resp).ok()?;
        }
        ApiKey::BrokerHeartbeat => {
            let req = decode::<kafka_protocol::messages::BrokerHeartbeatRequest>(&mut buf, version)?;
            let mut resp = kafka_protocol::messages::BrokerHeartbeatResponse::default();
            match quorum
                .handle_heartbeat(req.broker_id.0, req.broker_epoch, req.current_metadata_offset, req.want_shut_down)
                .await
            {
                Ok(reply) => {
                    resp.is_caught_up = reply.is_caught_up;
                    resp.is_fenced = reply.is_fenced;
                    resp.should_shut_down = reply.should_shut_down;
                }
                Err(e) => resp.error_code = e.error.code(),
            }
            encode_response(&mut out, api, version, cid, &resp).ok()?;
        }
        ApiKey::AlterPartition => {
            let req = decode::<kafka_protocol::messages::AlterPartitionRequest>(&mut buf, version)?;
            let resp = quorum.handle_alter_partition(&req, version).await;
            encode_response(&mut out, api, version, cid, &resp).ok()?;
        }
        ApiKey::AllocateProducerIds => {
            let req = decode::<AllocateProducerIdsRequest>(&mut buf, version)?;
            let mut resp = AllocateProducerIdsResponse::default();
            match quorum.handle_allocate_producer_ids(req.broker_id.0).await {
                Ok(range) => {
                    resp.producer_id_start = kafka_protocol::messages::ProducerId(range.start);
                    resp.producer_id_len = i32::try_from(range.end - range.start).unwrap_or(i32::MAX);
                }
                Err(e) => resp.error_code = e.error.code(),
            }
            encode_response(&mut out, api, version, cid, &resp).ok()?;
        }
        ApiKey::AddRaftVoter => {
            let req = decode::<kafka_protocol::messages::AddRaftVoterRequest>(&mut buf, version)?;
            let mut resp = kafka_protocol::messages::AddRaftVoterResponse::default();
            let listener = req.listeners.iter().find(|l| l.name.as_str() == "CONTROLLER").or(req.listeners.first());
            let result = match (req.cluster_id.as_ref().map(|c| c.as_str()).filter(|c| !c.is_empty()), listener) {
                (Some(c), _) if c != quorum.cluster_id() => Err(strata_metadata::channel::ApiError::new(
                    ResponseError::InconsistentClusterId,
                    format!("cluster {c} is not this quorum's"),
                )),
                (_, None) => Err(strata_metadata::channel::ApiError::new(
                    ResponseError::InvalidRequest,
                    "the new voter names no listener".to_string(),
                )),
                (_, Some(l)) => {
                    let timeout = std::time::Duration::from_millis(req.timeout_ms.clamp(1_000, 300_000) as u64);
                    quorum.add_voter(req.voter_id, l.host.to_string(), l.port, timeout).await
                }
            };
            if let Err(e) = result {
                resp.error_code = e.error.code();
                resp.error_message = Some(kafka_protocol::protocol::StrBytes::from_string(e.message));
            }
            encode_response(&mut out, api, version, cid, &resp).ok()?;
        }
        ApiKey::RemoveRaftVoter => {
            let req = decode::<kafka_protocol::messages::RemoveRaftVoterRequest>(&mut buf, version)?;
            let mut resp = kafka_protocol::messages::RemoveRaftVoterResponse::default();
            if let Err(e) = quorum.remove_voter(req.voter_id).await {
                resp.error_code = e.error.code();
                resp.error_message = Some(kafka_protocol::protocol::StrBytes::from_string(e.message));
            }
            encode_response(&mut out, api, version, cid, &resp).ok()?;
        }
        ApiKey::DescribeCluster => {
            // KIP-919: `--bootstrap-controller` clients ask controllers for the controllers.
            let req = decode::<kafka_protocol::messages::DescribeClusterRequest>(&mut buf, version)?;
            let mut resp = kafka_protocol::messages::DescribeClusterResponse::default()
                .with_endpoint_type(req.endpoint_type)
                .with_cluster_id(kafka_protocol::protocol::StrBytes::from_string(quorum.cluster_id().to_owned()))
                .with_cluster_authorized_operations(i32::MIN);
            if req.endpoint_type == 2 {
                resp.controller_id = kafka_protocol::messages::BrokerId(quorum.status().leader_id.unwrap_or(-1));
                resp.brokers = quorum
                    .voters()
                    .iter()
                    .map(|v| {
                        kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker::default()
                            .with_broker_id(kafka_protocol::messages::BrokerId(v.id))
                            .with_host(kafka_protocol::protocol::StrBytes::from_string(v.host.clone()))
                            .with_port(i32::from(v.port))
                    })
                    .collect();
            } else {
                resp.error_code = ResponseError::UnsupportedEndpointType.code();
                resp.error_message = Some(kafka_protocol::protocol::StrBytes::from_static_str(
                    "the controller listener describes controllers (endpoint type 2)",
                ));
            }
            encode_response(&mut out, api, version, cid, &resp).ok()?;
        }
        ApiKey::ApiVersions => {
            // The controller's own list (Kafka's controller ApiVersions), not the broker's.
            if version > 4 {
                // KIP-511: a newer client gets our range in the v0 form and retries.
                strata_protocol::response::encode_unsupported_api_versions(&mut out, cid).ok()?;
            } else {
                let body = strata_protocol::response::controller_api_versions_body();
                encode_response(&mut out, api, version, cid, &body).ok()?;
            }
        }
        ApiKey::CreateTopics | ApiKey::DescribeQuorum => {
            let b = wait_for_broker(broker).await?;
            return handle_request_bytes(b, &forwarded_session(b, client_host), frame).await.ok().flatten();
        }
        other => {
            tracing::info!(api = ?other, "closing a controller listener connection: not a controller API");
            return None;
        }
    }
    Some(out.freeze())
}

/// The session of a request that came through the controller listener: the client's host as
/// forwarded, the inter-broker listener (its answers name the brokers' endpoints there).
fn forwarded_session(broker: &Arc<Broker>, client_host: &str) -> strata_broker::net::Session {
    let listener = broker.config.inter_broker_listener().map(|l| l.name).unwrap_or_else(|_| "PLAINTEXT".into());
    let mut session = strata_broker::net::Session::forwarded(client_host, &listener, None);
    // A node of the cluster (a broker creating an internal topic): trusted as a broker.
    session.cluster_peer = true;
    session
}

/// The session of an Envelope's request (KIP-590): the client's address and principal as the
/// forwarding broker saw them, so that the request is authorized as the client's. (The
/// CONTROLLER listener trusts its peers: keep it on a private network.)
fn envelope_session(broker: &Arc<Broker>, address: &[u8], principal: Option<&[u8]>) -> strata_broker::net::Session {
    let ip: Option<std::net::IpAddr> = match address.len() {
        4 => <[u8; 4]>::try_from(address).ok().map(std::net::IpAddr::from),
        16 => <[u8; 16]>::try_from(address).ok().map(std::net::IpAddr::from),
        _ => None,
    };
    let host = ip.map(|ip| format!("/{}", strata_broker::net::java_host(ip))).unwrap_or_default();
    let principal = principal
        .and_then(|p| std::str::from_utf8(p).ok())
        .and_then(|p| strata_security::KafkaPrincipal::parse(p).ok());
    let listener = broker.config.inter_broker_listener().map(|l| l.name).unwrap_or_else(|_| "PLAINTEXT".into());
    let mut session = strata_broker::net::Session::forwarded(&host, &listener, principal);
    if let Some(ip) = ip {
        session.peer = std::net::SocketAddr::new(ip, 0);
    }
    session
}
