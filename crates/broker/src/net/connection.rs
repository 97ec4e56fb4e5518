//! One client connection: TLS handshake (SSL, SASL_SSL), SASL authentication (SASL_*),
//! then requests read ahead and answered strictly in order.

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use strata_protocol::frame::FrameDecoder;
use strata_protocol::request::{decode_request, peek_prefix, Decoded};
use strata_protocol::response::{encode_unsupported_api_versions, Chunk};
use strata_security::KafkaPrincipal;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};

use super::sasl::{SaslState, Verdict};
use super::{Limits, Session};
use crate::handlers::OutChunk;
use crate::listeners::Listener;
use crate::quotas::{PollClock, RequestQuota};
use crate::{handlers, Broker};

/// Frames read ahead of the one being handled.
const READ_AHEAD: usize = 8;

/// Longest a client gets to finish its TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// A whole request frame and its share of the bytes-in-flight budget.
struct Frame {
    bytes: bytes::Bytes,
    _permit: Option<OwnedSemaphorePermit>,
}

/// Where responses go: the socket itself (fetched records can go with `sendfile`), or a TLS
/// stream (every byte is encrypted in user space).
trait Out: AsyncWrite + Unpin + Send {
    /// The raw socket, when bytes written to it reach the client as they are.
    fn raw_socket(&self) -> Option<&TcpStream>;
}

impl Out for OwnedWriteHalf {
    fn raw_socket(&self) -> Option<&TcpStream> {
        Some(self.as_ref())
    }
}

impl Out for tokio::io::WriteHalf<strata_security::tokio_rustls::server::TlsStream<TcpStream>> {
    fn raw_socket(&self) -> Option<&TcpStream> {
        None
    }
}

pub(super) async fn run(
    stream: TcpStream,
    peer: SocketAddr,
    listener: Arc<Listener>,
    broker: Arc<Broker>,
    limits: Limits,
    bytes_in_flight: Arc<Semaphore>,
    shutdown: watch::Receiver<bool>,
) {
    let name = listener.spec.name.as_str();
    let Some(tls) = &listener.tls else {
        let (read_half, write_half) = stream.into_split();
        let session = Session::new(peer, name, KafkaPrincipal::anonymous());
        serve(read_half, write_half, session, &listener, broker, limits, bytes_in_flight, shutdown).await;
        return;
    };
    let accepted =
        tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT.min(limits.idle_timeout), tls.acceptor().accept(stream)).await;
    let stream = match accepted {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            let e = e.to_string();
            let hint = if e.contains("UnsupportedCertVersion") {
                " (the client certificate is X.509 v1: TLS client authentication takes v3 certificates)"
            } else if e.contains("InvalidContentType") {
                " (not TLS: a PLAINTEXT client on a TLS listener?)"
            } else {
                ""
            };
            tracing::info!(%peer, listener = name, error = %e, "TLS handshake failed{hint}; closing the connection");
            return;
        }
        Err(_) => {
            tracing::info!(%peer, listener = name, "TLS handshake failed: not finished in time; closing the connection");
            return;
        }
    };
    // mTLS: the client certificate's subject, mapped by ssl.principal.mapping.rules.
    let principal = match tls.settings().principal_of(stream.get_ref().1.peer_certificates()) {
        Ok(p) => p,
        Err(reason) => {
            tracing::info!(%peer, listener = name, %reason, "TLS client refused");
            return;
        }
    };
    tracing::debug!(%peer, listener = name, %principal, "TLS connection established");
    let (read_half, write_half) = tokio::io::split(stream);
    let session = Session::new(peer, name, principal);
    serve(read_half, write_half, session, &listener, broker, limits, bytes_in_flight, shutdown).await;
}

#[allow(clippy::too_many_arguments)]
async fn serve<R, W>(
    read_half: R,
    mut write_half: W,
    mut session: Session,
    listener: &Listener,
    broker: Arc<Broker>,
    limits: Limits,
    bytes_in_flight: Arc<Semaphore>,
    shutdown: watch::Receiver<bool>,
) where
    R: AsyncRead + Unpin + Send + 'static,
    W: Out,
{
    let peer = session.peer;
    let (tx, mut rx) = mpsc::channel::<Frame>(READ_AHEAD);
    // Before a SASL login, frames are bounded by sasl.server.max.receive.size (Kafka's guard
    // against unauthenticated clients announcing huge frames).
    let pre_auth = listener.sasl.as_ref().map(|_| (Arc::new(AtomicBool::new(false)), listener.sasl_max_receive));
    let mut stopping = shutdown.clone();
    // Over a client quota, the reader too stops reading until the throttle time has passed
    // (KIP-219's muted channel): ms after `epoch`, 0 when not muted.
    let muted = Arc::new(Mute { epoch: std::time::Instant::now(), until_ms: AtomicU64::new(0) });
    let reader = tokio::spawn(read_frames(
        read_half,
        peer,
        limits,
        bytes_in_flight,
        shutdown,
        tx,
        pre_auth.clone(),
        muted.clone(),
    ));
    let mut sasl = listener.sasl.clone().map(|s| SaslState::new(s, listener.max_reauth_ms));
    let mut out: Vec<OutChunk> = Vec::new();
    while let Some(frame) = rx.recv().await {
        out.clear();
        let mut close = None;
        let mut throttle = Duration::ZERO;
        let verdict = match sasl.as_mut() {
            Some(state) => {
                let v = state.filter(&frame.bytes, &mut out);
                if let Some(p) = &state.principal {
                    session.principal = p.clone();
                    if let Some((authenticated, _)) = &pre_auth {
                        authenticated.store(true, Ordering::Relaxed);
                    }
                }
                v
            }
            None => Verdict::Serve,
        };
        match verdict {
            Verdict::Serve => match handle_frame(&broker, &session, frame.bytes, false, &mut out).await {
                Ok(t) => throttle = t,
                Err(reason) => {
                    tracing::info!(%peer, %reason, "closing connection");
                    break;
                }
            },
            Verdict::Answered => {}
            Verdict::Close(reason) => close = Some(reason),
            Verdict::Refused(reason) => {
                tokio::time::sleep(listener.failed_auth_delay).await;
                close = Some(reason);
            }
        }
        if !out.is_empty() {
            // (An acks=0 produce has no response.)
            match tokio::time::timeout(limits.idle_timeout, write_chunks(&mut write_half, &out)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "client went away before reading its response");
                    break;
                }
                Err(_) => {
                    tracing::info!(%peer, "client read nothing for connections.max.idle.ms; closing");
                    break;
                }
            }
        }
        if let Some(reason) = close {
            tracing::info!(%peer, listener = %session.listener, %reason, "closing connection");
            break;
        }
        if !throttle.is_zero() {
            // Over a client quota (KIP-219): the response went out at once with the throttle
            // time; the next request waits until it has passed.
            tracing::debug!(%peer, throttle_ms = throttle.as_millis() as u64, "client over its quota: muted");
            muted.until(throttle);
            tokio::select! {
                _ = tokio::time::sleep(throttle) => {}
                _ = stopping.changed() => break,
            }
        }
    }
    rx.close();
    reader.abort();
    // A TLS close flushes what is buffered: bounded, for a peer that stopped reading.
    let _ = tokio::time::timeout(Duration::from_secs(5), write_half.shutdown()).await;
}

/// Requests the active controller answers: the admin requests that change metadata
/// (CreateTopics, DeleteTopics, AlterConfigs, IncrementalAlterConfigs, CreatePartitions,
/// ElectLeaders, AlterPartitionReassignments, AlterUserScramCredentials, CreateAcls,
/// DeleteAcls, AlterClientQuotas), ListPartitionReassignments (the reassignments the
/// controller knows of) and DescribeQuorum (KIP-836: brokers forward it).
pub const FORWARDED: [i16; 13] = [19, 20, 33, 44, 37, 43, 45, 46, 55, 51, 30, 31, 49];

/// Handles one request frame (header and body, no size) as a client's and returns the whole
/// response frame, size included, or `None` when the request has no response. For requests a
/// controller listener receives (an Envelope's content, or a broker's CreateTopics).
pub async fn handle_request_bytes(
    broker: &Arc<Broker>,
    session: &Session,
    frame: bytes::Bytes,
) -> Result<Option<bytes::Bytes>, String> {
    let mut out = Vec::new();
    // Controllers answer brokers and forwarded requests: no client quota applies.
    handle_frame(broker, session, frame, true, &mut out).await?;
    if out.is_empty() {
        return Ok(None);
    }
    let mut buf = BytesMut::with_capacity(out.iter().map(|c| c.bytes().len()).sum());
    for chunk in &out {
        buf.extend_from_slice(chunk.bytes());
    }
    Ok(Some(buf.freeze()))
}

/// Handles one frame, appending the encoded response (if any) to `out`, and returns how long
/// the connection must stay muted for a client quota (`exempt`: none applies). An error
/// means the connection must close.
async fn handle_frame(
    broker: &Arc<Broker>,
    session: &Session,
    frame: bytes::Bytes,
    exempt: bool,
    out: &mut Vec<OutChunk>,
) -> Result<Duration, String> {
    let prefix = peek_prefix(&frame).map_err(|e| e.to_string())?;
    if FORWARDED.contains(&prefix.api_key) && !broker.controller.is_active() {
        // Not the active controller: the request travels to it in an Envelope and its
        // answer comes back as it is (KIP-590). If no controller answers in time, the local
        // handler answers (NOT_CONTROLLER, which clients retry).
        match broker.controller.forward(frame.clone(), session.client_host.clone(), session.principal.to_string()).await
        {
            Ok(response) => {
                let mut buf = BytesMut::with_capacity(4 + response.len());
                buf.extend_from_slice(&u32::try_from(response.len()).unwrap_or(u32::MAX).to_be_bytes());
                buf.extend_from_slice(&response);
                out.push(Chunk::Encoded(buf.freeze()));
                return Ok(Duration::ZERO);
            }
            Err(e) => tracing::info!(api_key = prefix.api_key, error = %e.message, "cannot forward to the controller"),
        }
    }
    let frame_len = frame.len();
    match decode_request(frame) {
        Ok(Decoded::Request(request)) => {
            // The handler is polled through a clock, for request_percentage quotas.
            let clock = PollClock::new();
            let quota = RequestQuota { exempt, frame_len, clock: &clock };
            let mut handling = std::pin::pin!(handlers::handle(broker, *request, session, &quota, out));
            std::future::poll_fn(|cx| clock.poll(handling.as_mut(), cx)).await.map_err(|e| e.to_string())
        }
        Ok(Decoded::UnsupportedApiVersions { correlation_id, version }) => {
            tracing::debug!(version, "ApiVersions above the supported range; answering per KIP-511");
            let mut buf = BytesMut::new();
            let r = encode_unsupported_api_versions(&mut buf, correlation_id).map_err(|e| e.to_string());
            out.push(Chunk::Encoded(buf.freeze()));
            r.map(|()| Duration::ZERO)
        }
        Err(e) => Err(format!(
            "{e} (api key {}, version {}, correlation id {})",
            prefix.api_key, prefix.version, prefix.correlation_id
        )),
    }
}

/// Record sets at least this big go to the socket with `sendfile(2)` straight
/// from their segment file (the kernel passes page references instead of
/// copying the bytes, as Kafka's `transferTo` does); smaller ones ride in one
/// `writev` with the encoded bytes around them, where a saved copy is worth
/// less than the extra system calls.
const SENDFILE_MIN: usize = 64 * 1024;

/// The file and position to send `chunk` from with `sendfile`, if it should be.
fn sendfile_source(chunk: &OutChunk) -> Option<(BorrowedFd<'_>, u64)> {
    match chunk {
        Chunk::Records(r) if r.bytes.len() >= SENDFILE_MIN => {
            let range = r.file_range.as_ref()?;
            Some((range.fd()?, range.position()))
        }
        _ => None,
    }
}

/// Writes `chunks` in order: runs of encoded bytes and small record sets with
/// vectored writes (record slices straight from the mapped segments), big
/// record sets with `sendfile`.
async fn write_chunks<W: Out>(w: &mut W, chunks: &[OutChunk]) -> io::Result<()> {
    let sendfile_ok = w.raw_socket().is_some();
    fn source(sendfile_ok: bool, c: &OutChunk) -> Option<(BorrowedFd<'_>, u64)> {
        if sendfile_ok {
            sendfile_source(c)
        } else {
            None
        }
    }
    let mut index = 0;
    let mut offset = 0;
    while index < chunks.len() {
        if chunks[index].bytes().len() == offset {
            // Nothing (left) to write here: a write of nothing would read as a closed socket.
            index += 1;
            offset = 0;
            continue;
        }
        if let (Some((fd, position)), Some(socket)) = (source(sendfile_ok, &chunks[index]), w.raw_socket()) {
            send_file(socket, fd, position, chunks[index].bytes().len()).await?;
            index += 1;
            continue;
        }
        let slices: Vec<IoSlice<'_>> = std::iter::once(&chunks[index].bytes()[offset..])
            .chain(chunks[index + 1..].iter().take_while(|c| source(sendfile_ok, c).is_none()).map(|c| c.bytes()))
            .take(64)
            .map(IoSlice::new)
            .collect();
        let mut written = w.write_vectored(&slices).await?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        while index < chunks.len() && written >= chunks[index].bytes().len() - offset {
            written -= chunks[index].bytes().len() - offset;
            index += 1;
            offset = 0;
        }
        offset += written;
    }
    // TLS holds records back until flushed.
    w.flush().await
}

/// Sends `len` bytes of `file` from `position` to the socket with `sendfile`.
/// The range must exist: a file that ends early (cut under a reader) fails the
/// write, since the frame's size was already promised.
async fn send_file(socket: &TcpStream, file: BorrowedFd<'_>, position: u64, len: usize) -> io::Result<()> {
    let mut position = position;
    let mut left = len;
    while left > 0 {
        let sent = socket.try_io(Interest::WRITABLE, || {
            rustix::fs::sendfile(socket, file, Some(&mut position), left).map_err(io::Error::from)
        });
        match sent {
            Ok(0) => {
                // Not the client's doing: the broker's own file is shorter than what it read.
                tracing::error!(
                    position,
                    left,
                    "segment file ended before the fetched records; closing the connection"
                );
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "segment file ended before the fetched records",
                ));
            }
            Ok(n) => left -= n.min(left),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => socket.writable().await?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                // A closed or reset socket is the client going away (logged by the caller);
                // anything else (EIO reading the segment) is the broker's problem.
                if !matches!(e.kind(), io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset) {
                    tracing::warn!(position, left, error = %e, "sendfile of fetched records failed; closing the connection");
                }
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Reads frames until EOF, an error, idleness or shutdown.
/// When a connection over a client quota may be read again.
struct Mute {
    epoch: std::time::Instant,
    /// Milliseconds after `epoch`; 0: not muted.
    until_ms: AtomicU64,
}

impl Mute {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Mutes the connection for `d` from now.
    fn until(&self, d: Duration) {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        self.until_ms.store(self.now_ms().saturating_add(ms).max(1), Ordering::Relaxed);
    }

    /// How long the connection is still muted for.
    fn remaining(&self) -> Option<Duration> {
        let until = self.until_ms.load(Ordering::Relaxed);
        let now = self.now_ms();
        (until > now).then(|| Duration::from_millis(until - now))
    }
}

#[allow(clippy::too_many_arguments)]
async fn read_frames<R: AsyncRead + Unpin>(
    mut rd: R,
    peer: SocketAddr,
    limits: Limits,
    bytes_in_flight: Arc<Semaphore>,
    mut shutdown: watch::Receiver<bool>,
    tx: mpsc::Sender<Frame>,
    pre_auth: Option<(Arc<AtomicBool>, usize)>,
    muted: Arc<Mute>,
) {
    let decoder = FrameDecoder::new(limits.max_frame);
    loop {
        // A throttled client's next requests stay in the socket until its time is up.
        while let Some(wait) = muted.remaining() {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
        let mut prefix = [0u8; 4];
        let read_prefix = tokio::select! {
            _ = shutdown.changed() => return,
            r = tokio::time::timeout(limits.idle_timeout, rd.read_exact(&mut prefix)) => r,
        };
        match read_prefix {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                if e.kind() != std::io::ErrorKind::UnexpectedEof {
                    tracing::debug!(%peer, error = %e, "read failed");
                }
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "idle for connections.max.idle.ms; closing");
                return;
            }
        }
        let size = match decoder.peek_size(&prefix) {
            Ok(Some(size)) => size,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "refusing frame; closing connection");
                return;
            }
        };
        if let Some((authenticated, max)) = &pre_auth {
            if size > *max && !authenticated.load(Ordering::Relaxed) {
                tracing::info!(%peer, size, max, "SASL authentication failed: a frame above sasl.server.max.receive.size before authentication; closing connection");
                return;
            }
        }
        // Reserve the frame's bytes as they arrive, chunk by chunk, before
        // allocating them: many connections announcing big frames then hold
        // only what they really sent, and a frame waiting for budget never
        // stalls small requests of other connections behind it (the
        // semaphore is fair, so one big up-front reservation would).
        let body = tokio::select! {
            _ = shutdown.changed() => return,
            r = tokio::time::timeout(limits.idle_timeout, read_body(&mut rd, size, limits.queued_max_bytes, &bytes_in_flight)) => r,
        };
        let (body, permit) = match body {
            Ok(Some(b)) => b,
            Ok(None) => return,
            Err(_) => {
                tracing::info!(%peer, size, "frame body not received within connections.max.idle.ms; closing");
                return;
            }
        };
        if tx.send(Frame { bytes: body, _permit: permit }).await.is_err() {
            return;
        }
    }
}

/// Bytes of a frame body read (and reserved) at a time.
const BODY_CHUNK: usize = 64 * 1024;

/// Frames up to this size are allocated whole before their first byte is read.
const WHOLE_FRAME_ALLOC: usize = 1024 * 1024;

/// Longest a partly read frame waits for more bytes-in-flight budget.
const BUDGET_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Reads a `size`-byte frame body, reserving bytes-in-flight budget for each
/// chunk before reading it (at most `max_reserved` in all, so a frame larger
/// than the whole budget cannot wait for itself). `None` on EOF or error.
async fn read_body<R: AsyncRead + Unpin>(
    rd: &mut R,
    size: usize,
    max_reserved: usize,
    bytes_in_flight: &Arc<Semaphore>,
) -> Option<(Bytes, Option<OwnedSemaphorePermit>)> {
    // Frames up to 1 MiB (most produce requests) get their whole buffer at once, so the body is
    // never copied by a growing buffer; bigger ones grow chunk by chunk as their bytes arrive
    // (and are reserved against the budget below).
    let mut body = BytesMut::with_capacity(if size <= WHOLE_FRAME_ALLOC { size } else { BODY_CHUNK });
    let mut permit: Option<OwnedSemaphorePermit> = None;
    let mut reserved = 0usize;
    while body.len() < size {
        let chunk = (size - body.len()).min(BODY_CHUNK);
        let want = chunk.min(max_reserved.saturating_sub(reserved));
        if want > 0 {
            // Partial reservations of several big frames could wait for each
            // other forever; a frame that gets no budget for a while is
            // dropped with its connection (releasing what it holds), and its
            // client retries.
            let p = match tokio::time::timeout(BUDGET_WAIT, bytes_in_flight.clone().acquire_many_owned(want as u32))
                .await
            {
                Ok(p) => p.ok()?,
                Err(_) => {
                    tracing::warn!(
                        size,
                        reserved,
                        "no queued.max.request.bytes budget for this request; closing the connection"
                    );
                    return None;
                }
            };
            reserved += want;
            match permit.as_mut() {
                Some(held) => held.merge(p),
                None => permit = Some(p),
            }
        }
        let target = body.len() + chunk;
        body.reserve(chunk);
        while body.len() < target {
            let n = (&mut *rd).take((target - body.len()) as u64).read_buf(&mut body).await.ok()?;
            if n == 0 {
                return None;
            }
        }
    }
    Some((body.freeze(), permit))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handlers::FetchedRecords;
    use strata_log::{Log, LogConfig};
    use strata_protocol::kafka_protocol::records::Compression;
    use strata_protocol::records::encode_key_values;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    fn batch(value_len: usize, fill: u8) -> Bytes {
        let value = Bytes::from(vec![fill; value_len]);
        encode_key_values([(None, Some(value))], 0, Compression::None).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A log holding a big batch (sent with sendfile) then a small one (sent from memory).
    fn log_with_batches(dir: &std::path::Path) -> (Log, FetchedRecords, FetchedRecords) {
        let mut log = Log::open(dir, LogConfig::default(), 0).unwrap_or_else(|e| panic!("{e}"));
        for (len, fill) in [(3 * SENDFILE_MIN, 7u8), (100, 9)] {
            log.append_batch(&batch(len, fill), 0).unwrap_or_else(|e| panic!("{e}"));
        }
        let read = |offset| {
            let r = log.read(offset, 1, i64::MAX).unwrap_or_else(|e| panic!("{e}"));
            FetchedRecords { bytes: r.records, file_range: r.file_range }
        };
        let (big, small) = (read(0), read(1));
        (log, big, small)
    }

    /// Writes `chunks` to a connected socket and returns what the peer read, or the write error.
    async fn send_through_socket(chunks: Vec<OutChunk>) -> (Vec<u8>, io::Result<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let reader = tokio::spawn(async move {
            let mut client = TcpStream::connect(addr).await.unwrap_or_else(|e| panic!("{e}"));
            let mut got = Vec::new();
            let _ = client.read_to_end(&mut got).await;
            got
        });
        let (server, _) = listener.accept().await.unwrap_or_else(|e| panic!("{e}"));
        let (_read_half, mut write_half) = server.into_split();
        let result = write_chunks(&mut write_half, &chunks).await;
        let _ = write_half.shutdown().await;
        drop(write_half);
        drop(_read_half);
        (reader.await.unwrap_or_else(|e| panic!("{e}")), result)
    }

    #[tokio::test]
    async fn chunks_arrive_in_order_whichever_way_they_are_sent() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (_log, big, small) = log_with_batches(dir.path());
        assert!(sendfile_source(&Chunk::Records(FetchedRecords {
            bytes: big.bytes.clone(),
            file_range: big.file_range.clone()
        }))
        .is_some());
        let in_memory_big = FetchedRecords { bytes: big.bytes.clone(), file_range: None };
        let mut expected = Vec::new();
        for part in [&b"head"[..], &big.bytes, b"mid", &small.bytes, &in_memory_big.bytes, b"tail"] {
            expected.extend_from_slice(part);
        }
        let chunks = vec![
            Chunk::Encoded(Bytes::from_static(b"head")),
            Chunk::Records(big),
            Chunk::Encoded(Bytes::from_static(b"mid")),
            Chunk::Records(small),
            Chunk::Records(in_memory_big),
            Chunk::Encoded(Bytes::from_static(b"tail")),
        ];
        assert!(sendfile_source(&chunks[3]).is_none(), "small record sets are written from memory");
        let (got, result) = send_through_socket(chunks).await;
        result.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(got.len(), expected.len());
        assert!(got == expected, "bytes differ");
    }

    #[tokio::test]
    async fn empty_chunks_around_a_sendfile_are_skipped() {
        // A record set that ends the frame leaves an empty encoded tail after it.
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (_log, big, _small) = log_with_batches(dir.path());
        let mut expected = b"head".to_vec();
        expected.extend_from_slice(&big.bytes);
        let chunks = vec![
            Chunk::Encoded(Bytes::new()),
            Chunk::Encoded(Bytes::from_static(b"head")),
            Chunk::Records(big),
            Chunk::Encoded(Bytes::new()),
        ];
        let (got, result) = send_through_socket(chunks).await;
        result.unwrap_or_else(|e| panic!("{e}"));
        assert!(got == expected, "bytes differ");
    }

    #[tokio::test]
    async fn a_segment_cut_under_a_sendfile_fails_the_write() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (_log, big, _small) = log_with_batches(dir.path());
        let segment = dir.path().join("00000000000000000000.log");
        std::fs::OpenOptions::new()
            .write(true)
            .open(&segment)
            .and_then(|f| f.set_len(1000))
            .unwrap_or_else(|e| panic!("{e}"));
        let (got, result) =
            send_through_socket(vec![Chunk::Encoded(Bytes::from_static(b"head")), Chunk::Records(big)]).await;
        let err = result.expect_err("the write must fail, not hang or send garbage");
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(got.len(), 4 + 1000, "only the bytes the file still had were sent");
    }
}
