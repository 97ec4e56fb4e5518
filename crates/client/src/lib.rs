//! A minimal Kafka-protocol client for Strata's own node-to-node RPCs: broker to controller
//! (KRaft's `NodeToControllerChannelManager`: registration, heartbeats, AlterPartition) and
//! follower to leader (Fetch, OffsetForLeaderEpoch, as Kafka's `ReplicaFetcherThread` sends
//! them). One connection per peer, one request at a time, re-dialled after any error.
//! Requests and responses are `kafka-protocol` messages; clients of the cluster never use it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{RequestHeader, ResponseHeader, SaslAuthenticateRequest, SaslHandshakeRequest};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use strata_security::client::{ClientSecurity, LoginStep};
use strata_security::tokio_rustls::TlsConnector;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest response accepted (a follower's fetch response is bounded by
/// `replica.fetch.response.max.bytes`, far below this).
const MAX_RESPONSE: usize = 256 << 20;

/// How long a call may take unless the caller says otherwise: connect, send, and the whole
/// response.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// A byte stream to a node: TCP, or TLS over TCP.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// An open connection and when its SASL session must be renewed (KIP-368: the server closes
/// a connection whose session ended, so the client reconnects before that).
struct Conn {
    stream: Box<dyn Stream>,
    renew_at: Option<Instant>,
}

/// A connection to one node's listener.
pub struct KafkaClient {
    addr: String,
    client_id: String,
    security: Option<Arc<ClientSecurity>>,
    conn: tokio::sync::Mutex<Option<Conn>>,
    correlation: std::sync::atomic::AtomicI32,
}

impl KafkaClient {
    /// A PLAINTEXT client of the node at `addr` (`host:port`); connects on first use.
    pub fn new(addr: String, client_id: String) -> Self {
        Self::with_security(addr, client_id, None)
    }

    /// A client of the node at `addr` that connects with `security` (TLS and/or a SASL login,
    /// the inter-broker listener's), or in PLAINTEXT with `None`.
    pub fn with_security(addr: String, client_id: String, security: Option<Arc<ClientSecurity>>) -> Self {
        Self { addr, client_id, security, conn: tokio::sync::Mutex::new(None), correlation: 0.into() }
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
        let mut guard = self.conn.lock().await;
        // The connection is out of the slot for the exchange and goes back only after a whole
        // answer: a call dropped halfway (its caller gave up) closes it, so no later call
        // reads an answer meant for another.
        let held = guard.take().filter(|c| c.renew_at.is_none_or(|at| Instant::now() < at));
        let exchange = async {
            let mut conn = match held {
                Some(c) => c,
                None => self.connect().await?,
            };
            let answer = self.roundtrip(&mut conn.stream, version, req).await?;
            Ok::<_, String>((conn, answer))
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok((conn, answer))) => {
                *guard = Some(conn);
                Ok(answer)
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(format!("no answer from {} within {} ms", self.addr, timeout.as_millis())),
        }
    }

    /// Dials the node and runs the TLS handshake and the SASL login the security asks for.
    async fn connect(&self) -> Result<Conn, String> {
        let tcp = TcpStream::connect(&self.addr).await.map_err(|e| format!("connect {}: {e}", self.addr))?;
        let _ = tcp.set_nodelay(true);
        let Some(security) = &self.security else {
            return Ok(Conn { stream: Box::new(tcp), renew_at: None });
        };
        let mut stream: Box<dyn Stream> = match security.tls_config() {
            Some(config) => {
                let host = self.addr.rsplit_once(':').map_or(self.addr.as_str(), |(h, _)| h);
                let host = host.trim_start_matches('[').trim_end_matches(']');
                let name = strata_security::rustls::pki_types::ServerName::try_from(host.to_string())
                    .map_err(|e| format!("{host} is not a TLS server name: {e}"))?;
                let tls = TlsConnector::from(config)
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS handshake with {}: {e}", self.addr))?;
                Box::new(tls)
            }
            None => Box::new(tcp),
        };
        let mut renew_at = None;
        if let Some(mechanism) = security.mechanism() {
            let started = Instant::now();
            let hs = SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str(mechanism.name()));
            let answer = self.roundtrip(&mut stream, 1, &hs).await?;
            if answer.error_code != 0 {
                return Err(format!(
                    "{} refused SASL mechanism {} (error {}; it offers {:?})",
                    self.addr,
                    mechanism.name(),
                    answer.error_code,
                    answer.mechanisms.iter().map(|m| m.to_string()).collect::<Vec<_>>()
                ));
            }
            let mut login = match security.login() {
                Some(Ok(l)) => l,
                Some(Err(e)) => return Err(format!("SASL login: {e}")),
                None => return Err("no SASL login configured".into()),
            };
            let mut challenge: Option<Bytes> = None;
            loop {
                let token = match login.step(challenge.as_deref())? {
                    LoginStep::Done => break,
                    LoginStep::Send(t) | LoginStep::SendLast(t) => t,
                };
                let auth = SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(token));
                let answer = self.roundtrip(&mut stream, 2, &auth).await?;
                if answer.error_code != 0 {
                    return Err(format!(
                        "SASL {} login to {} failed: {}",
                        mechanism.name(),
                        self.addr,
                        answer.error_message.as_deref().unwrap_or("(no message)")
                    ));
                }
                if answer.session_lifetime_ms > 0 {
                    // Reconnect (a new login) at 90% of the session's lifetime.
                    let lifetime = Duration::from_millis(answer.session_lifetime_ms.unsigned_abs());
                    renew_at = started.checked_add(lifetime.mul_f64(0.9));
                }
                challenge = Some(answer.auth_bytes);
            }
        }
        Ok(Conn { stream, renew_at })
    }

    /// One request and its response on `stream`.
    async fn roundtrip<R: Request>(
        &self,
        stream: &mut Box<dyn Stream>,
        version: i16,
        req: &R,
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
        stream.write_all(&body).await.map_err(|e| e.to_string())?;
        stream.flush().await.map_err(|e| e.to_string())?;
        let mut size = [0u8; 4];
        stream.read_exact(&mut size).await.map_err(|e| e.to_string())?;
        let size = u32::from_be_bytes(size) as usize;
        if size > MAX_RESPONSE {
            return Err(format!("response of {size} bytes"));
        }
        let mut frame = vec![0u8; size];
        stream.read_exact(&mut frame).await.map_err(|e| e.to_string())?;
        let mut buf = Bytes::from(frame);
        let h = ResponseHeader::decode(&mut buf, R::Response::header_version(version)).map_err(|e| e.to_string())?;
        if h.correlation_id != cid {
            return Err(format!("correlation id {} for request {cid}", h.correlation_id));
        }
        let resp = R::Response::decode(&mut buf, version).map_err(|e| e.to_string())?;
        if buf.has_remaining() {
            tracing::debug!(remaining = buf.remaining(), addr = %self.addr, "bytes after a response");
        }
        Ok(resp)
    }
}
