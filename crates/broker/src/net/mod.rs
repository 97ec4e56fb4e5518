//! The network layer: accept connections, read frames, answer in order.
//!
//! Each connection has a reader task that reads whole frames (sizes checked
//! against `socket.request.max.bytes` before anything is allocated, bytes in
//! flight bounded over all connections by `queued.max.request.bytes`) into a
//! short queue, and a processing loop that handles them one at a time and
//! writes each response before starting the next. Requests of one connection
//! are therefore handled and answered strictly in order, as Kafka does; the
//! reader's read-ahead lets pipelining clients keep the socket busy.

mod connection;
mod sasl;
pub use connection::{handle_request_bytes, FORWARDED};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use strata_security::KafkaPrincipal;

use crate::listeners::Listener;
use crate::Broker;

/// Who sent a request and how: what handlers need to know of the connection.
#[derive(Debug, Clone)]
pub struct Session {
    pub peer: SocketAddr,
    /// The client's address as Kafka shows it (`/IP`), e.g. in DescribeGroups.
    pub client_host: String,
    /// The listener the connection arrived on (upper-case name): Metadata answers with the
    /// brokers' endpoints of this listener.
    pub listener: Arc<str>,
    /// `User:ANONYMOUS` until TLS client authentication or SASL says otherwise.
    pub principal: KafkaPrincipal,
    /// A request a node of the cluster sent on the CONTROLLER listener itself (not in an
    /// Envelope): authorized as Kafka authorizes its brokers, who are super users. That
    /// listener trusts its peers (see docs/security.md).
    pub cluster_peer: bool,
}

/// An address as Java's `InetAddress.getHostAddress()` writes it, which is how Kafka shows
/// client hosts and matches ACL hosts: an IPv4-mapped IPv6 address as IPv4, IPv6 as eight
/// groups without `::` compression.
pub fn java_host(ip: std::net::IpAddr) -> String {
    match ip.to_canonical() {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => v6.segments().iter().map(|s| format!("{s:x}")).collect::<Vec<_>>().join(":"),
    }
}

impl Session {
    /// The host ACLs are matched against: `client_host` without its `/` (Kafka's
    /// `InetAddress.getHostAddress()` form, see [`java_host`]), computed once per connection.
    pub fn acl_host(&self) -> &str {
        self.client_host.strip_prefix('/').unwrap_or(&self.client_host)
    }

    pub fn new(peer: SocketAddr, listener: &str, principal: KafkaPrincipal) -> Self {
        Self {
            peer,
            client_host: format!("/{}", java_host(peer.ip())),
            listener: Arc::from(listener),
            principal,
            cluster_peer: false,
        }
    }

    /// A request that reached this broker another way (forwarded by a broker to the
    /// controller): `client_host` as given, the inter-broker listener, the client's principal
    /// when the Envelope named it (else `User:ANONYMOUS`).
    pub fn forwarded(client_host: &str, listener: &str, principal: Option<KafkaPrincipal>) -> Self {
        let peer = SocketAddr::from(([0, 0, 0, 0], 0));
        Self {
            peer,
            client_host: client_host.to_string(),
            listener: Arc::from(listener),
            principal: principal.unwrap_or_else(KafkaPrincipal::anonymous),
            cluster_peer: false,
        }
    }
}

/// Budgets shared by every listener of a broker: `max.connections` and
/// `queued.max.request.bytes` count over all of them, as in Kafka.
#[derive(Clone)]
pub struct SharedLimits {
    connections: Arc<Semaphore>,
    bytes_in_flight: Arc<Semaphore>,
}

impl SharedLimits {
    pub fn new(limits: &Limits) -> Self {
        Self {
            connections: Arc::new(Semaphore::new(limits.max_connections)),
            bytes_in_flight: Arc::new(Semaphore::new(limits.queued_max_bytes)),
        }
    }
}

/// How often listeners look for new keystore, truststore and JWKS files.
const FILE_RELOAD_CHECK: Duration = Duration::from_secs(5);

/// Re-reads a listener's TLS files (certificate rotation without a restart) and its
/// OAUTHBEARER JWKS (key rotation; also every `sasl.oauthbearer.jwks.endpoint.refresh.ms`)
/// whenever they change, until shutdown. A file that does not load keeps the previous
/// keys in use. File reads run off the async workers.
pub async fn watch_security_files(listener: Arc<Listener>, mut shutdown: watch::Receiver<bool>) {
    let (tls, sasl) = (listener.tls.clone(), listener.sasl.clone());
    if tls.is_none() && sasl.is_none() {
        return;
    }
    let name = listener.spec.name.clone();
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(FILE_RELOAD_CHECK) => {}
        }
        let (tls, sasl) = (tls.clone(), sasl.clone());
        let reloaded = tokio::task::spawn_blocking(move || {
            (tls.map(|t| t.reload_if_changed()), sasl.map(|s| s.reload_if_changed()))
        })
        .await
        .unwrap_or((None, None));
        match reloaded.0 {
            Some(Ok(true)) => {
                tracing::info!(listener = %name, "TLS keystore or truststore changed: new connections use the new one")
            }
            Some(Err(e)) => {
                tracing::warn!(listener = %name, error = %e, "TLS files changed but do not load; keeping the previous ones")
            }
            _ => {}
        }
        match reloaded.1 {
            Some(Ok(true)) => tracing::info!(listener = %name, "OAUTHBEARER JWKS re-read: its keys are in use"),
            Some(Err(e)) => {
                tracing::warn!(listener = %name, error = %e, "OAUTHBEARER JWKS does not load; keeping the previous keys")
            }
            _ => {}
        }
    }
}

/// Limits applied to every connection.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_frame: usize,
    pub queued_max_bytes: usize,
    pub max_connections: usize,
    pub idle_timeout: Duration,
}

impl Limits {
    pub fn from_config(c: &crate::BrokerConfig) -> Self {
        Self {
            max_frame: c.socket_request_max_bytes(),
            queued_max_bytes: c.queued_max_request_bytes(),
            max_connections: c.max_connections(),
            idle_timeout: Duration::from_millis(c.connections_max_idle_ms()),
        }
    }
}

/// How long connections get to finish their in-flight requests at shutdown.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Accepts connections until `shutdown` turns true, then waits (at most
/// [`SHUTDOWN_GRACE`]) for open connections to finish what they have read.
pub async fn serve(
    socket: TcpListener,
    listener: Arc<Listener>,
    broker: Arc<Broker>,
    limits: Limits,
    shared: SharedLimits,
    mut shutdown: watch::Receiver<bool>,
) {
    let SharedLimits { connections, bytes_in_flight } = shared;
    let listener_socket = socket;
    let mut tasks = JoinSet::new();
    loop {
        let permit = tokio::select! {
            _ = shutdown.changed() => break,
            p = connections.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            _ = shutdown.changed() => break,
            a = listener_socket.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let broker = broker.clone();
                let bytes = bytes_in_flight.clone();
                let shutdown = shutdown.clone();
                let listener = listener.clone();
                tasks.spawn(async move {
                    // Counted while the task lives (dropped also when it is aborted).
                    let _counted = crate::metrics::ConnectionGauge::open(broker.metrics.clone(), &listener.spec.name);
                    connection::run(stream, peer, listener, broker, limits, bytes, shutdown).await;
                    drop(permit);
                });
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        while tasks.try_join_next().is_some() {}
    }
    drop(listener_socket);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async { while tasks.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(open = tasks.len(), "connections still open after the shutdown grace period; closing them");
        tasks.abort_all();
    }
}

/// Binds the listener for `addr`.
pub async fn bind(addr: &(String, u16)) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind((addr.0.as_str(), addr.1)).await?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}
