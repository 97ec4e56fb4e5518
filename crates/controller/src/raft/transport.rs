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

use std::collections::HashMap;
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

/// Outbound queues, one per peer.
pub struct Transport {
    peers: HashMap<u64, mpsc::Sender<Message>>,
    sink: EventSink,
    runtime: tokio::runtime::Handle,
    node_id: u64,
    cluster_id: String,
}

impl Transport {
    /// Starts one outbound task per peer (`id -> "host:port"`) on `runtime`.
    pub fn start(
        runtime: &tokio::runtime::Handle,
        node_id: u64,
        cluster_id: &str,
        peers: &HashMap<u64, String>,
        sink: EventSink,
    ) -> Self {
        let mut t =
            Self { peers: HashMap::new(), sink, runtime: runtime.clone(), node_id, cluster_id: cluster_id.to_owned() };
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
        ));
        self.peers.insert(peer, tx);
    }

    /// Queues `msg` for its peer; drops it if the queue is full (Raft retries what matters).
    pub fn send(&self, msg: Message) {
        let (to, snapshot) = (msg.to, msg.get_msg_type() == MessageType::MsgSnapshot);
        let Some(q) = self.peers.get(&to) else { return };
        if q.try_send(msg).is_err() && snapshot {
            let _ =
                self.sink.send(crate::quorum::Input::Transport(Event::SnapshotStatus { peer: to, delivered: false }));
        }
    }
}

async fn outbound(
    from: u64,
    peer: u64,
    addr: String,
    cluster_id: String,
    mut rx: mpsc::Receiver<Message>,
    sink: EventSink,
) {
    let mut backoff = Duration::from_millis(100);
    let hello = encode_frame(format!("{cluster_id} {from}").as_bytes());
    loop {
        let mut stream = match TcpStream::connect(&addr).await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(peer, %addr, error = %e, "cannot reach controller; retrying");
                let _ = sink.send(crate::quorum::Input::Transport(Event::Unreachable(peer)));
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
        let _ = stream.set_nodelay(true);
        if stream.write_all(RAFT_MAGIC).await.is_err() || stream.write_all(&hello).await.is_err() {
            continue;
        }
        backoff = Duration::from_millis(100);
        tracing::info!(peer, %addr, "connected to controller");
        loop {
            let Some(m) = rx.recv().await else { return };
            let snapshot = m.get_msg_type() == MessageType::MsgSnapshot;
            let bytes = match m.write_to_bytes() {
                Ok(b) => encode_frame(&b),
                Err(e) => {
                    tracing::error!(error = %e, "cannot encode a raft message");
                    continue;
                }
            };
            if let Err(e) = stream.write_all(&bytes).await {
                tracing::info!(peer, %addr, error = %e, "lost the connection to controller; reconnecting");
                report_lost_snapshot(&m, &sink);
                let _ = sink.send(crate::quorum::Input::Transport(Event::Unreachable(peer)));
                break;
            }
            if snapshot {
                let _ = sink.send(crate::quorum::Input::Transport(Event::SnapshotStatus { peer, delivered: true }));
            }
        }
    }
}

fn report_lost_snapshot(m: &Message, sink: &EventSink) {
    if m.get_msg_type() == MessageType::MsgSnapshot {
        let _ = sink.send(crate::quorum::Input::Transport(Event::SnapshotStatus { peer: m.to, delivered: false }));
    }
}

/// Largest hello frame (cluster id and node id): checked before anything larger is allocated
/// for a connection that has not said who it is.
const MAX_HELLO: usize = 1024;

/// Reads one frame's payload of at most `max` bytes; `None` at a clean end of stream.
async fn read_frame(stream: &mut TcpStream, max: usize) -> std::io::Result<Option<Vec<u8>>> {
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
/// hands each message to the driver until the peer goes away. Bad input closes the
/// connection with a log line.
pub async fn serve_peer(mut stream: TcpStream, cluster_id: String, sink: EventSink) {
    let peer_addr = stream.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    let hello = match read_frame(&mut stream, MAX_HELLO).await {
        Ok(Some(h)) => String::from_utf8_lossy(&h).into_owned(),
        Ok(None) => return,
        Err(e) => {
            tracing::info!(peer = %peer_addr, error = %e, "closing a controller connection: bad hello");
            return;
        }
    };
    let (cluster, from) = hello.split_once(' ').unwrap_or((hello.as_str(), ""));
    if cluster != cluster_id {
        tracing::warn!(peer = %peer_addr, cluster, expected = %cluster_id,
            "closing a controller connection from another cluster");
        return;
    }
    tracing::debug!(peer = %peer_addr, from, "controller connected");
    loop {
        match read_frame(&mut stream, MAX_FRAME).await {
            Ok(Some(payload)) => match Message::parse_from_bytes(&payload) {
                Ok(m) => {
                    if sink.send(crate::quorum::Input::Transport(Event::Message(Box::new(m)))).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::info!(peer = %peer_addr, error = %e, "closing a controller connection: bad message");
                    return;
                }
            },
            Ok(None) => return,
            Err(e) => {
                tracing::info!(peer = %peer_addr, error = %e, "closing a controller connection");
                return;
            }
        }
    }
}
