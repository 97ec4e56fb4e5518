//! One client connection.

use std::net::SocketAddr;
use std::sync::Arc;

use std::io::IoSlice;

use bytes::{Bytes, BytesMut};
use strata_protocol::frame::FrameDecoder;
use strata_protocol::request::{decode_request, peek_prefix, Decoded};
use strata_protocol::response::encode_unsupported_api_versions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};

use super::Limits;
use crate::{handlers, Broker};

/// Frames read ahead of the one being handled.
const READ_AHEAD: usize = 8;

/// A whole request frame and its share of the bytes-in-flight budget.
struct Frame {
    bytes: bytes::Bytes,
    _permit: Option<OwnedSemaphorePermit>,
}

pub(super) async fn run(
    stream: TcpStream,
    peer: SocketAddr,
    broker: Arc<Broker>,
    limits: Limits,
    bytes_in_flight: Arc<Semaphore>,
    shutdown: watch::Receiver<bool>,
) {
    let (read_half, mut write_half) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Frame>(READ_AHEAD);
    let reader = tokio::spawn(read_frames(read_half, peer, limits, bytes_in_flight, shutdown, tx));
    let mut out: Vec<Bytes> = Vec::new();
    // As Kafka shows a client's host in DescribeGroups.
    let client_host = format!("/{}", peer.ip());
    while let Some(frame) = rx.recv().await {
        out.clear();
        if let Err(reason) = handle_frame(&broker, &client_host, frame.bytes, &mut out).await {
            tracing::info!(%peer, %reason, "closing connection");
            break;
        }
        if out.is_empty() {
            continue; // acks=0 produce: no response
        }
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
    rx.close();
    reader.abort();
    let _ = write_half.shutdown().await;
}

/// Handles one frame, appending the encoded response (if any) to `out`. An
/// error means the connection must close.
async fn handle_frame(
    broker: &Arc<Broker>,
    client_host: &str,
    frame: bytes::Bytes,
    out: &mut Vec<Bytes>,
) -> Result<(), String> {
    let prefix = peek_prefix(&frame).map_err(|e| e.to_string())?;
    match decode_request(frame) {
        Ok(Decoded::Request(request)) => {
            handlers::handle(broker, *request, client_host, out).await.map_err(|e| e.to_string())
        }
        Ok(Decoded::UnsupportedApiVersions { correlation_id, version }) => {
            tracing::debug!(version, "ApiVersions above the supported range; answering per KIP-511");
            let mut buf = BytesMut::new();
            let r = encode_unsupported_api_versions(&mut buf, correlation_id).map_err(|e| e.to_string());
            out.push(buf.freeze());
            r
        }
        Err(e) => Err(format!(
            "{e} (api key {}, version {}, correlation id {})",
            prefix.api_key, prefix.version, prefix.correlation_id
        )),
    }
}

/// Writes `chunks` in order with vectored writes (record slices go to the
/// socket straight from the mapped segments).
async fn write_chunks(w: &mut OwnedWriteHalf, chunks: &[Bytes]) -> std::io::Result<()> {
    let mut index = 0;
    let mut offset = 0;
    while index < chunks.len() {
        let slices: Vec<IoSlice<'_>> = std::iter::once(&chunks[index][offset..])
            .chain(chunks[index + 1..].iter().map(|c| &c[..]))
            .take(64)
            .map(IoSlice::new)
            .collect();
        let mut written = w.write_vectored(&slices).await?;
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while index < chunks.len() && written >= chunks[index].len() - offset {
            written -= chunks[index].len() - offset;
            index += 1;
            offset = 0;
        }
        offset += written;
    }
    Ok(())
}

/// Reads frames until EOF, an error, idleness or shutdown.
async fn read_frames(
    mut rd: OwnedReadHalf,
    peer: SocketAddr,
    limits: Limits,
    bytes_in_flight: Arc<Semaphore>,
    mut shutdown: watch::Receiver<bool>,
    tx: mpsc::Sender<Frame>,
) {
    let decoder = FrameDecoder::new(limits.max_frame);
    loop {
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
async fn read_body(
    rd: &mut OwnedReadHalf,
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
