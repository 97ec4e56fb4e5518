//! The tokio transport between controllers: raft-rs messages over TCP on the controller
//! listener.
//!
//! A connection from a peer starts with [`RAFT_MAGIC`] (8 bytes that cannot begin a Kafka
//! request: read as a Kafka size they exceed any frame), then a hello frame naming the cluster
//! and the sender, then one frame per message. Frames are the metadata log's
//! `[len u32][crc32c u32][payload]`; a payload is a protobuf raft-rs `Message`.
//!
//! Each peer has one outbound task with a bounded queue: [`Transport::send`] never blocks (a
//! full queue drops the message; Raft sends again), a broken connection is re-dialled with
//! exponential backoff (100 ms to 2 s), and the driver is told of unreachable peers and of
//! snapshots that did not go through, so raft-rs retries them.
//!
//! A node outside the initial voters (a broker-only node, which has no CONTROLLER listener,
//! or a controller that joins later) is an *observer*: its hello says so, and the controller
//! it dials sends it its messages back over that same connection (KRaft's observers fetch
//! from the leader over connections they open; the Raft messages here are pushed, so the
//! connection is used both ways). Such connections are kept in [`Observers`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use protobuf::Message as _;
use raft::prelude::{Message, MessageType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::metadata_log::encode_frame;

/// First bytes of a controller-to-controller Raft connection.
pub const RAFT_MAGIC: &[u8; 8] = b"STRATARF";

/// Messages queued per peer before new ones are dropped.
const QUEUE: usize = 4096;
/// Largest frame accepted from a peer (a snapshot of a large cluster's metadata fits).
const MAX_FRAME: usize = 256 << 20;

/// What the transport tells the node's owner.
#[derive(Debug)]
pub enum Event {
    /// A message from a peer.
    Message(Box<Message>),
    /// A peer could not be reached.
    Unreachable(u64),
    /// Whether a snapshot sent to a peer went out.
    SnapshotStatus { peer: u64, delivered: bool },
}

/// Where events go: the driver's inbox (a sender that never blocks).
pub type EventSink = std::sync::mpsc::Sender<crate::quorum::Input>;

/// The connections observers opened to this node, by node id: a queue per connection,
/// written back over it. Shared by the transport (which sends) and the listener (which
/// accepts).
#[derive(Clone, Default)]
pub struct Observers(Arc<Mutex<HashMap<u64, ObserverConnection>>>);

/// One observer's connection: its queue, and how to close it when a newer one replaces it.
struct ObserverConnection {
    tx: mpsc::Sender<Message>,
    displaced: Arc<tokio::sync::Notify>,
}

impl Observers {
    fn get(&self, id: u64) -> Option<mpsc::Sender<Message>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).get(&id).map(|c| c.tx.clone())
    }

    /// Registers `id`'s new connection; an older one of the same id is told to close (a
    /// reconnect after a half-open connection, or two nodes claiming one id: logged).
    fn insert(&self, id: u64, tx: mpsc::Sender<Message>, displaced: Arc<tokio::sync::Notify>) {
        let old =
            self.0.lock().unwrap_or_else(PoisonError::into_inner).insert(id, ObserverConnection { tx, displaced });
        if let Some(old) = old {
            tracing::info!(observer = id, "a new connection of this observer replaces its older one");
            old.displaced.notify_one();
        }
    }

    /// Forgets `id`'s connection if `tx` is still it (a newer one may have replaced it).
    fn remove(&self, id: u64, tx: &mpsc::Sender<Message>) {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if map.get(&id).is_some_and(|c| c.tx.same_channel(tx)) {
            map.remove(&id);
        }
    }
}

/// Outbound queues, one per peer.
pub struct Transport {
    peers: HashMap<u64, mpsc::Sender<Message>>,
    observers: Observers,
    sink: EventSink,
    runtime: tokio::runtime::Handle,
    node_id: u64,
    cluster_id: String,
    /// This node is an observer: its hello says so and it reads its peers' answers on the
    /// connections it opens.
    observer: bool,
    /// TLS to the peers' CONTROLLER listeners (`None`: PLAINTEXT); its configuration is read
    /// at each connect (it follows certificate rotation).
    tls: Option<Arc<strata_security::client::ClientSecurity>>,
}

impl Transport {
    /// Starts one outbound task per peer (`id -> "host:port"`) on `runtime`. An `observer`
    /// (see the module docs) asks its peers to answer over the connections it opens.
    pub fn start(
        runtime: &tokio::runtime::Handle,
        node_id: u64,
        cluster_id: &str,
        peers: &HashMap<u64, String>,
        sink: EventSink,
        observer: bool,
        tls: Option<Arc<strata_security::client::ClientSecurity>>,
    ) -> Self {
        let mut t = Self {
            peers: HashMap::new(),
            observers: Observers::default(),
            sink,
            runtime: runtime.clone(),
            node_id,
            cluster_id: cluster_id.to_owned(),
            observer,
            tls,
        };
        for (&peer, addr) in peers {
            t.ensure_peer(peer, addr);
        }
        t
    }

    /// Starts an outbound task for `peer` at `addr` unless there is one (a controller that
    /// joined at run time, learned from the metadata).
    pub fn ensure_peer(&mut self, peer: u64, addr: &str) {
        if peer == self.node_id || self.peers.contains_key(&peer) {
            return;
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        self.runtime.spawn(outbound(
            self.node_id,
            peer,
            addr.to_owned(),
            self.cluster_id.clone(),
            rx,
            self.sink.clone(),
            self.observer,
            self.tls.clone(),
        ));
        self.peers.insert(peer, tx);
    }

    /// The connections observers opened to this node (for the listener that accepts them).
    pub fn observers(&self) -> Observers {
        self.observers.clone()
    }

    /// Queues `msg` for its peer (over a connection to it, else over the one it opened as an
    /// observer); drops it if the queue is full (Raft retries what matters) and tells the
    /// driver of a peer it cannot reach at all.
    pub fn send(&self, msg: Message) {
        let (to, snapshot) = (msg.to, msg.get_msg_type() == MessageType::MsgSnapshot);
        let queue = self.peers.get(&to).cloned().or_else(|| self.observers.get(to));
        let Some(q) = queue else {
            if snapshot {
                tell(&self.sink, Event::SnapshotStatus { peer: to, delivered: false });
            }
            tell(&self.sink, Event::Unreachable(to));
            return;
        };
        if q.try_send(msg).is_err() && snapshot {
            tell(&self.sink, Event::SnapshotStatus { peer: to, delivered: false });
        }
    }
}

/// Writes the messages of `rx` to `stream` until it fails or `stop` resolves; reports
/// snapshots sent and lost. Returns whether it stopped because of a failed write.
async fn write_messages<W: tokio::io::AsyncWrite + Unpin>(
    stream: &mut W,
    peer: u64,
    rx: &mut mpsc::Receiver<Message>,
    sink: &EventSink,
    stop: &mut (impl std::future::Future<Output = ()> + Unpin),
) -> Option<std::io::Error> {
    loop {
        let m = tokio::select! {
            m = rx.recv() => m,
            () = &mut *stop => return None,
        };
        let m = m?;
        let snapshot = m.get_msg_type() == MessageType::MsgSnapshot;
        let bytes = match m.write_to_bytes() {
            Ok(b) => encode_frame(&b),
            Err(e) => {
                tracing::error!(error = %e, "cannot encode a raft message");
                continue;
            }
        };
        // (A TLS stream may hold written bytes until flushed.)
        if let Err(e) = async {
            stream.write_all(&bytes).await?;
            stream.flush().await
        }
        .await
        {
            report_lost_snapshot(&m, sink);
            tell(sink, Event::Unreachable(peer));
            return Some(e);
        }
        if snapshot {
            tell(sink, Event::SnapshotStatus { peer, delivered: true });
        }
    }
}

/// Reads a peer's messages from `stream` into `sink` until it ends or sends something bad.
async fn read_messages<R: tokio::io::AsyncRead + Unpin>(stream: &mut R, peer: &str, sink: &EventSink) {
    loop {
        match read_frame(stream, MAX_FRAME).await {
            Ok(Some(payload)) => match Message::parse_from_bytes(&payload) {
                Ok(m) => {
                    if !tell(sink, Event::Message(Box::new(m))) {
                        return;
                    }
                }
                Err(e) => {
                    tracing::info!(%peer, error = %e, "closing a Raft connection: bad message");
                    return;
                }
            },
            Ok(None) => return,
            Err(e) => {
                tracing::info!(%peer, error = %e, "closing a Raft connection");
                return;
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn outbound(
    from: u64,
    peer: u64,
    addr: String,
    cluster_id: String,
    mut rx: mpsc::Receiver<Message>,
    sink: EventSink,
    observer: bool,
    tls: Option<Arc<strata_security::client::ClientSecurity>>,
) {
    let mut backoff = Duration::from_millis(100);
    let role = if observer { " observer" } else { "" };
    let hello = encode_frame(format!("{cluster_id} {from}{role}").as_bytes());
    loop {
        let config = tls.as_ref().and_then(|t| t.tls_config());
        let dialled = tokio::time::timeout(CONNECT_TIMEOUT, connect(&addr, config)).await;
        let mut stream = match dialled.unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into())) {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(peer, %addr, error = %e, "cannot reach controller; retrying");
                tell(&sink, Event::Unreachable(peer));
                // Drop what queued up meanwhile: it is stale, and Raft sends again.
                while let Ok(m) = rx.try_recv() {
                    report_lost_snapshot(&m, &sink);
                }
                if rx.is_closed() {
                    return;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        if stream.write_all(RAFT_MAGIC).await.is_err()
            || stream.write_all(&hello).await.is_err()
            || stream.flush().await.is_err()
        {
            continue;
        }
        backoff = Duration::from_millis(100);
        tracing::info!(peer, %addr, "connected to controller");
        let (mut read, mut write) = tokio::io::split(stream);
        // An observer reads its peer's answers on this connection; when that side ends, the
        // connection is dialled again.
        let reader = observer.then(|| {
            let (sink, addr) = (sink.clone(), addr.clone());
            tokio::spawn(async move { read_messages(&mut read, &addr, &sink).await })
        });
        let abort = reader.as_ref().map(tokio::task::JoinHandle::abort_handle);
        let mut stop = Box::pin(async move {
            match reader {
                Some(r) => {
                    let _ = r.await;
                }
                None => std::future::pending().await,
            }
        });
        let stopped = write_messages(&mut write, peer, &mut rx, &sink, &mut stop).await;
        if let Some(a) = abort {
            a.abort();
        }
        match stopped {
            Some(e) => tracing::info!(peer, %addr, error = %e, "lost the connection to controller; reconnecting"),
            None if rx.is_closed() => return,
            None => tracing::info!(peer, %addr, "the controller closed the connection; reconnecting"),
        }
    }
}

/// How long dialling a peer (TCP and the TLS handshake) may take: a peer that accepts and
/// then stalls (paused, overloaded) must not hold its outbound task forever.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A byte stream to a peer: TCP, or TLS over TCP.
pub trait PeerStream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> PeerStream for T {}

/// Dials `addr` (`host:port`), with TLS when `tls` is set (the server's name checked as the
/// configuration says).
async fn connect(
    addr: &str,
    tls: Option<Arc<strata_security::rustls::ClientConfig>>,
) -> std::io::Result<Box<dyn PeerStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let _ = tcp.set_nodelay(true);
    let Some(config) = tls else { return Ok(Box::new(tcp)) };
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h).trim_start_matches('[').trim_end_matches(']');
    let name = strata_security::rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let stream = strata_security::tokio_rustls::TlsConnector::from(config).connect(name, tcp).await?;
    Ok(Box::new(stream))
}

/// Hands `event` to the driver; false once the driver has stopped.
fn tell(sink: &EventSink, event: Event) -> bool {
    sink.send(crate::quorum::Input::Transport(event)).is_ok()
}

fn report_lost_snapshot(m: &Message, sink: &EventSink) {
    if m.get_msg_type() == MessageType::MsgSnapshot {
        tell(sink, Event::SnapshotStatus { peer: m.to, delivered: false });
    }
}

/// Largest hello frame (cluster id and node id): checked before anything larger is allocated
/// for a connection that has not said who it is.
const MAX_HELLO: usize = 1024;

/// Reads one frame's payload of at most `max` bytes; `None` at a clean end of stream.
async fn read_frame<R: tokio::io::AsyncRead + Unpin>(stream: &mut R, max: usize) -> std::io::Result<Option<Vec<u8>>> {
    let mut header = [0u8; 8];
    match stream.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    if len == 0 || len > max {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("frame of {len} bytes")));
    }
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).await?;
    if crc32c::crc32c(&payload) != crc {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "frame checksum mismatch"));
    }
    Ok(Some(payload))
}

/// Serves a peer's connection whose [`RAFT_MAGIC`] was already read: checks its hello, then
/// hands each message to the driver until the peer goes away. An observer's connection also
/// carries this node's messages to it (registered in `observers` while it lasts). Bad input
/// closes the connection with a log line.
pub async fn serve_peer<S: PeerStream + 'static>(
    mut stream: S,
    peer_addr: String,
    cluster_id: String,
    sink: EventSink,
    observers: Observers,
) {
    let hello = match read_frame(&mut stream, MAX_HELLO).await {
        Ok(Some(h)) => String::from_utf8_lossy(&h).into_owned(),
        Ok(None) => return,
        Err(e) => {
            tracing::info!(peer = %peer_addr, error = %e, "closing a controller connection: bad hello");
            return;
        }
    };
    let mut words = hello.split(' ');
    let (cluster, from, role) = (words.next().unwrap_or(""), words.next().unwrap_or(""), words.next());
    if cluster != cluster_id {
        tracing::warn!(peer = %peer_addr, cluster, expected = %cluster_id,
            "closing a controller connection from another cluster");
        return;
    }
    let observer = match (role, from.parse::<u64>()) {
        (None, _) => None,
        (Some("observer"), Ok(id)) => Some(id),
        _ => {
            tracing::info!(peer = %peer_addr, %hello, "closing a controller connection: bad hello");
            return;
        }
    };
    tracing::debug!(peer = %peer_addr, from, ?observer, "Raft peer connected");
    let Some(id) = observer else {
        read_messages(&mut stream, &peer_addr, &sink).await;
        return;
    };
    let (mut read, mut write) = tokio::io::split(stream);
    let (tx, mut rx) = mpsc::channel(QUEUE);
    let displaced = Arc::new(tokio::sync::Notify::new());
    observers.insert(id, tx.clone(), displaced.clone());
    let writer = {
        let sink = sink.clone();
        tokio::spawn(async move {
            let mut never = Box::pin(std::future::pending::<()>());
            write_messages(&mut write, id, &mut rx, &sink, &mut never).await
        })
    };
    tokio::select! {
        () = read_messages(&mut read, &peer_addr, &sink) => {}
        () = displaced.notified() => {}
    }
    observers.remove(id, &tx);
    writer.abort();
    // Whatever was queued or half written is lost: raft-rs must not wait for it (a snapshot
    // in flight would otherwise keep the observer's progress paused for good).
    tell(&sink, Event::SnapshotStatus { peer: id, delivered: false });
    tell(&sink, Event::Unreachable(id));
}
