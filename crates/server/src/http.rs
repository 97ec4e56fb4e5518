//! The operator's HTTP listener (`http.listener=HOST:PORT`, off by default; issue #17):
//!
//! | path | answer |
//! |---|---|
//! | `GET /metrics` | 200, the broker's metrics in the OpenMetrics text format (Prometheus scrapes it) |
//! | `GET /health` | 200 `ok` while the process runs and serves this listener |
//! | `GET /ready` | 200 `ready` once the node serves clients (logs loaded, unfenced, listeners open); 503 `not ready` before and once it shuts down |
//!
//! | `GET /`, `/topics`, `/groups`, ... | the web console's pages, when `console.enable=true` (see [`crate::console`]) |
//!
//! Other paths are 404, other methods 405. HTTP/1.1 with hyper; at most [`MAX_CONNECTIONS`]
//! connections at once (more are closed on accept), each given [`HEADER_TIMEOUT`] to send its
//! request head and [`CONNECTION_LIFETIME`] in all. A scrape reads `/proc` and walks the
//! partitions on a blocking thread, never on an async worker, one scrape at a time.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};
use strata_broker::metrics::{BrokerMetrics, QuorumFigures};
use strata_broker::Broker;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

/// Connections served at once; a new one over this is closed at once.
pub const MAX_CONNECTIONS: usize = 128;
/// How long a connection has to send a request head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection may stay open (keep-alive included; a scraper reconnects).
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);

/// OpenMetrics 1.0 text, which Prometheus asks for and parses.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What the endpoints read.
pub struct HttpState {
    pub metrics: Arc<BrokerMetrics>,
    /// Set once the node's logs are open and its broker side runs.
    pub broker: OnceLock<Arc<Broker>>,
    /// Set once the node's Raft node runs.
    pub quorum: OnceLock<Arc<strata_controller::quorum::QuorumController>>,
    /// True while the node serves clients.
    pub ready: AtomicBool,
    /// The web console, when `console.enable=true` on a node with a broker.
    pub console: OnceLock<Arc<crate::console::Console>>,
}

impl HttpState {
    pub fn new(metrics: Arc<BrokerMetrics>) -> Self {
        Self {
            metrics,
            broker: OnceLock::new(),
            quorum: OnceLock::new(),
            ready: AtomicBool::new(false),
            console: OnceLock::new(),
        }
    }
}

/// Parses `http.listener` (`HOST:PORT`, an IPv6 host in brackets).
pub fn parse_listener(value: &str) -> Result<(String, u16), String> {
    let value = value.trim();
    let bad = || format!("http.listener={value} is not HOST:PORT (e.g. 0.0.0.0:9644)");
    let (host, port) = value.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    if host.is_empty() {
        return Err(bad());
    }
    Ok((host.to_string(), port))
}

/// Serves `socket` until `shutdown` turns true.
pub async fn serve(socket: TcpListener, state: Arc<HttpState>, mut shutdown: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            _ = shutdown.changed() => return,
            a = socket.accept() => a,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "http.listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Over the cap the connection is closed at once: idle or stalled clients cannot keep
        // the accept loop (and so /health) waiting.
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::debug!("http.listener: {MAX_CONNECTIONS} connections open; closing a new one");
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(answer(&state, request).await) }
            });
            let serving = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            match tokio::time::timeout(CONNECTION_LIFETIME, serving).await {
                Ok(Err(e)) => tracing::debug!(error = %e, "http.listener: connection ended with an error"),
                Err(_) => tracing::debug!("http.listener: connection open too long; closed"),
                Ok(Ok(())) => {}
            }
            drop(permit);
        });
    }
}

fn text(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    if let Ok(value) = hyper::header::HeaderValue::from_str(content_type) {
        response.headers_mut().insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}

async fn answer<B>(state: &Arc<HttpState>, request: Request<B>) -> Response<Full<Bytes>> {
    const PLAIN: &str = "text/plain; charset=utf-8";
    let path = request.uri().path();
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, PLAIN, "only GET\n");
    }
    if !matches!(path, "/metrics" | "/health" | "/ready") {
        let Some(console) = state.console.get() else {
            return text(StatusCode::NOT_FOUND, PLAIN, "not found: try /metrics, /health or /ready\n");
        };
        let (status, html) = console.page(path, request.uri().query().unwrap_or("")).await;
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return text(status, "text/html; charset=utf-8", html);
    }
    match path {
        "/health" => text(StatusCode::OK, PLAIN, "ok\n"),
        "/ready" if state.ready.load(Ordering::Relaxed) => text(StatusCode::OK, PLAIN, "ready\n"),
        "/ready" => text(StatusCode::SERVICE_UNAVAILABLE, PLAIN, "not ready\n"),
        _ => {
            let state = state.clone();
            let encoded = tokio::task::spawn_blocking(move || {
                let node = state.broker.get().and_then(|b| u64::try_from(b.node_id).ok());
                let quorum = state.quorum.get().map(|q| {
                    let s = q.status();
                    QuorumFigures {
                        leader_id: s.leader_id.map_or(-1, i64::from),
                        epoch: s.term,
                        active: s.active,
                        voter: node.is_some_and(|id| s.voters.contains(&id)),
                        high_watermark: s.commit_index,
                        log_end_offset: s.last_index,
                        applied: s.applied_index,
                    }
                });
                state.metrics.encode(state.broker.get().map(|b| b.as_ref()), quorum).map_err(|e| e.to_string())
            })
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r);
            match encoded {
                Ok(body) => text(StatusCode::OK, OPENMETRICS, body),
                Err(e) => {
                    tracing::warn!(error = %e, "http.listener: cannot encode the metrics");
                    text(StatusCode::INTERNAL_SERVER_ERROR, PLAIN, "cannot encode the metrics\n")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listener_is_host_and_port() {
        assert_eq!(parse_listener("0.0.0.0:9644"), Ok(("0.0.0.0".into(), 9644)));
        assert_eq!(parse_listener(" [::1]:80 "), Ok(("::1".into(), 80)));
        for bad in ["9644", ":9644", "host:", "host:99999", "host:port"] {
            assert!(parse_listener(bad).is_err(), "{bad}");
        }
    }
}
