//! A minimal Kafka-protocol client for Strata's own node-to-node RPCs: broker to controller
//! (KRaft's `NodeToControllerChannelManager`: registration, heartbeats, AlterPartition) and
//! follower to leader (Fetch, OffsetForLeaderEpoch, as Kafka's `ReplicaFetcherThread` sends
//! them). One connection per peer, one request at a time, re-dialled after any error.
//! Requests and responses are `kafka-protocol` messages; clients of the cluster never use it.

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest response accepted (a follower's fetch response is bounded by
/// `replica.fetch.response.max.bytes`, far below this).
const MAX_RESPONSE: usize = 256 << 20;

/// How long a call may take unless the caller says otherwise: connect, send, and the whole
/// response.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// A connection to one node's listener.
pub struct KafkaClient {
    addr: String,
    client_id: String,
    conn: tokio::sync::Mutex<Option<TcpStream>>,
    correlation: std::sync::atomic::AtomicI32,
}

impl KafkaClient {
    /// A client of the node at `addr` (`host:port`); connects on first use.
    pub fn new(addr: String, client_id: String) -> Self {
        Self { addr, client_id, conn: tokio::sync::Mutex::new(None), correlation: 0.into() }
    }

    /// The node's address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Sends `req` at `version` and returns the response, within [`DEFAULT_TIMEOUT`].
    pub async fn call<R: Request>(&self, version: i16, req: &R) -> Result<R::Response, String> {
        self.call_within(version, req, DEFAULT_TIMEOUT).await
    }

    /// Sends `req` at `version` and returns the response, or an error after `timeout`. Any
    /// error (a timeout too) drops the connection, so a late response is never read as the
    /// answer to a later request.
    pub async fn call_within<R: Request>(
        &self,
        version: i16,
        req: &R,
        timeout: Duration,
    ) -> Result<R::Response, String> {
        let cid = self.correlation.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(cid)
            .with_client_id(Some(StrBytes::from_string(self.client_id.clone())));
        let mut body = BytesMut::new();
        body.put_u32(0);
        header.encode(&mut body, R::header_version(version)).map_err(|e| e.to_string())?;
        req.encode(&mut body, version).map_err(|e| e.to_string())?;
        let len = u32::try_from(body.len() - 4).map_err(|_| "request too large".to_string())?;
        body[..4].copy_from_slice(&len.to_be_bytes());

        let mut guard = self.conn.lock().await;
        let exchange = async {
            if guard.is_none() {
                let s = TcpStream::connect(&self.addr).await.map_err(|e| format!("connect {}: {e}", self.addr))?;
                let _ = s.set_nodelay(true);
                *guard = Some(s);
            }
            let Some(stream) = guard.as_mut() else { return Err("not connected".to_string()) };
            stream.write_all(&body).await.map_err(|e| e.to_string())?;
            let mut size = [0u8; 4];
            stream.read_exact(&mut size).await.map_err(|e| e.to_string())?;
            let size = u32::from_be_bytes(size) as usize;
            if size > MAX_RESPONSE {
                return Err(format!("response of {size} bytes"));
            }
            let mut frame = vec![0u8; size];
            stream.read_exact(&mut frame).await.map_err(|e| e.to_string())?;
            let mut buf = Bytes::from(frame);
            let h =
                ResponseHeader::decode(&mut buf, R::Response::header_version(version)).map_err(|e| e.to_string())?;
            if h.correlation_id != cid {
                return Err(format!("correlation id {} for request {cid}", h.correlation_id));
            }
            let resp = R::Response::decode(&mut buf, version).map_err(|e| e.to_string())?;
            if buf.has_remaining() {
                tracing::debug!(remaining = buf.remaining(), addr = %self.addr, "bytes after a response");
            }
            Ok(resp)
        };
        let result = match tokio::time::timeout(timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer from {} within {} ms", self.addr, timeout.as_millis())),
        };
        if result.is_err() {
            *guard = None;
        }
        result
    }
}
