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
pub use connection::handle_request_bytes;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::Broker;

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
pub async fn serve(listener: TcpListener, broker: Arc<Broker>, limits: Limits, mut shutdown: watch::Receiver<bool>) {
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let bytes_in_flight = Arc::new(Semaphore::new(limits.queued_max_bytes));
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
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let broker = broker.clone();
                let bytes = bytes_in_flight.clone();
                let shutdown = shutdown.clone();
                tasks.spawn(async move {
                    connection::run(stream, peer, broker, limits, bytes, shutdown).await;
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
    drop(listener);
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
