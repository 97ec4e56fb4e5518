//! The record-section codecs of RecordBatch v2: streaming decompression (constant memory
//! whatever a batch claims) and compression into a bounded output, as Kafka's clients and
//! brokers frame them.
//!
//! A batch's records section is the same bytes whatever the codec: compression wraps the
//! concatenated records, never the header. So changing a batch's codec is decompressing the
//! section and compressing it again, with no per-record work ([`recompress`]).

use std::io::{Read, Write};

use crate::batch::{compute_crc, BatchHeader, Compression, BATCH_HEADER_LEN, LOG_OVERHEAD};

use super::{RecordsError, MAX_RECORDS_BYTES};

/// A reader of the uncompressed records section of a batch whose (compressed) section is
/// `body`. Decompressors stream: memory stays bounded whatever the section expands to.
pub(crate) fn decompressing_reader<'a>(
    compression: Compression,
    body: &'a [u8],
) -> Result<Box<dyn Read + 'a>, RecordsError> {
    let decompress = |e: std::io::Error| RecordsError::Decompress(e.to_string());
    Ok(match compression {
        Compression::None => Box::new(body),
        Compression::Gzip => Box::new(flate2::read::GzDecoder::new(body)),
        Compression::Snappy => Box::new(SnappyReader::new(body).map_err(decompress)?),
        Compression::Lz4 => Box::new(lz4_flex::frame::FrameDecoder::new(body)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(body).map_err(decompress)?),
    })
}

/// Snappy as Kafka clients write it: either xerial-framed blocks (the Java client, and
/// [`recompress`]) or one raw snappy block (librdkafka). Blocks are decompressed one at a
/// time, and a block may not claim more than snappy can expand its input to.
struct SnappyReader<'a> {
    blocks: &'a [u8],
    framed: bool,
    current: std::io::Cursor<Vec<u8>>,
}

/// xerial's stream header: magic, then version 1 and minimum compatible version 1.
const XERIAL_HEADER: &[u8; 16] = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01";
const XERIAL_MAGIC_LEN: usize = 8;
/// Uncompressed bytes per xerial block (snappy-java's `SnappyOutputStream` default).
const XERIAL_BLOCK: usize = 32 * 1024;
/// Snappy's densest op turns 3 input bytes into 64 output bytes.
const SNAPPY_MAX_RATIO: usize = 22;

impl<'a> SnappyReader<'a> {
    fn new(body: &'a [u8]) -> std::io::Result<Self> {
        if body.len() >= XERIAL_HEADER.len() && body[..XERIAL_MAGIC_LEN] == XERIAL_HEADER[..XERIAL_MAGIC_LEN] {
            Ok(Self { blocks: &body[XERIAL_HEADER.len()..], framed: true, current: std::io::Cursor::new(Vec::new()) })
        } else {
            let mut r = Self { blocks: &[], framed: false, current: std::io::Cursor::new(Vec::new()) };
            r.current = std::io::Cursor::new(Self::block(body)?);
            Ok(r)
        }
    }

    fn block(compressed: &[u8]) -> std::io::Result<Vec<u8>> {
        let bad = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidData, m);
        let len = snap::raw::decompress_len(compressed).map_err(|e| bad(e.to_string()))?;
        if len > compressed.len().saturating_mul(SNAPPY_MAX_RATIO) + 64 {
            return Err(bad(format!("snappy block of {} bytes claims {len} bytes", compressed.len())));
        }
        snap::raw::Decoder::new().decompress_vec(compressed).map_err(|e| bad(e.to_string()))
    }
}

impl Read for SnappyReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let n = self.current.read(buf)?;
            if n > 0 || buf.is_empty() || !self.framed || self.blocks.is_empty() {
                return Ok(n);
            }
            if self.blocks.len() < 4 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let len = u32::from_be_bytes([self.blocks[0], self.blocks[1], self.blocks[2], self.blocks[3]]) as usize;
            let rest = &self.blocks[4..];
            if rest.len() < len {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.current = std::io::Cursor::new(Self::block(&rest[..len])?);
            self.blocks = &rest[len..];
        }
    }
}

/// Compression levels for [`recompress`] (Kafka's `compression.<codec>.level` topic configs,
/// KIP-390). `None` is the codec's default: gzip 6, lz4 9, zstd 3, as in Kafka.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompressionLevels {
    pub gzip: Option<u32>,
    pub lz4: Option<u32>,
    pub zstd: Option<i32>,
}

/// A `Write` into a buffer that refuses to grow past `limit` bytes, so that compressing the
/// records of a decompression bomb fails early instead of filling memory.
struct Bounded {
    out: Vec<u8>,
    limit: usize,
}

impl Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.out.len() + buf.len() > self.limit {
            return Err(std::io::Error::new(std::io::ErrorKind::OutOfMemory, "over the size limit"));
        }
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Why [`recompress`] failed.
#[derive(Debug, thiserror::Error)]
pub enum RecompressError {
    /// The input batch is unreadable.
    #[error(transparent)]
    Records(#[from] RecordsError),
    /// The rewritten batch would be larger than the limit (Kafka: RecordTooLargeException).
    #[error("the batch rewritten in {codec:?} is larger than {limit} bytes")]
    TooLarge { codec: Compression, limit: usize },
    /// The compressor failed (not expected for in-memory output).
    #[error("cannot compress the batch with {codec:?}: {reason}")]
    Compress { codec: Compression, reason: String },
}

/// Rewrites one whole batch with its records section in `target`: the header keeps every
/// field (producer id, epoch, base sequence, timestamps, transactional and control bits) but
/// the codec bits, `batchLength` and the CRC. The records are streamed from the old codec to
/// the new one; a result larger than `max_size` bytes is [`RecompressError::TooLarge`]
/// (Kafka's broker refuses a batch that its own recompression made too large). Used for
/// topics whose `compression.type` is not `producer` (Kafka's `LogValidator`).
pub fn recompress(
    batch: &[u8],
    target: Compression,
    levels: CompressionLevels,
    max_size: usize,
) -> Result<Vec<u8>, RecompressError> {
    let header = BatchHeader::parse(batch).map_err(RecordsError::Header)?;
    let end = header.total_size().min(batch.len());
    let body = &batch[BATCH_HEADER_LEN.min(end)..end];
    let mut input = decompressing_reader(header.compression().map_err(RecordsError::Header)?, body)?;
    let out = compress_records(&mut input, target, levels, max_size, body.len())?;
    finish_batch(out, header, target, max_size)
}

/// Compresses the records section read from `input` with `target`, after room for a batch
/// header: the result is `BATCH_HEADER_LEN` zero bytes, then the section. More than `max_size`
/// bytes in all is [`RecompressError::TooLarge`].
pub(crate) fn compress_records(
    input: &mut dyn Read,
    target: Compression,
    levels: CompressionLevels,
    max_size: usize,
    size_hint: usize,
) -> Result<Vec<u8>, RecompressError> {
    let too_large = RecompressError::TooLarge { codec: target, limit: max_size };
    let mut out = Bounded { out: Vec::with_capacity(size_hint.min(max_size) + BATCH_HEADER_LEN), limit: max_size };
    out.out.extend_from_slice(&[0; BATCH_HEADER_LEN]);
    let fail = |e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::OutOfMemory {
            RecompressError::TooLarge { codec: target, limit: max_size }
        } else {
            RecompressError::Compress { codec: target, reason: e.to_string() }
        }
    };
    // Reading errors come from the decompressor; writing errors from the bound or compressor.
    let copy = |input: &mut dyn Read, output: &mut dyn Write| -> Result<(), RecompressError> {
        let mut buf = [0u8; 16 * 1024];
        let mut total = 0u64;
        loop {
            let n = match input.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(RecordsError::Decompress(e.to_string()).into()),
            };
            total += n as u64;
            if total > MAX_RECORDS_BYTES {
                return Err(RecordsError::Inflated.into());
            }
            output.write_all(&buf[..n]).map_err(fail)?;
        }
    };
    let out = match target {
        Compression::None => {
            copy(input, &mut out)?;
            out
        }
        Compression::Gzip => {
            let level = flate2::Compression::new(levels.gzip.unwrap_or(6).min(9));
            let mut w = flate2::write::GzEncoder::new(out, level);
            copy(input, &mut w)?;
            w.finish().map_err(fail)?
        }
        Compression::Snappy => {
            let mut w = XerialWriter::new(out).map_err(fail)?;
            copy(input, &mut w)?;
            w.finish().map_err(fail)?
        }
        Compression::Lz4 => {
            let mut w = lz4::EncoderBuilder::new()
                .level(levels.lz4.unwrap_or(9).min(17))
                .block_mode(lz4::BlockMode::Independent)
                .build(out)
                .map_err(fail)?;
            copy(input, &mut w)?;
            let (out, result) = w.finish();
            result.map_err(fail)?;
            out
        }
        Compression::Zstd => {
            let level = levels.zstd.unwrap_or(3);
            let mut w = zstd::stream::write::Encoder::new(out, level).map_err(fail)?;
            copy(input, &mut w)?;
            w.finish().map_err(fail)?
        }
    };
    if out.out.len() > max_size {
        return Err(too_large);
    }
    Ok(out.out)
}

/// Fills in the header of `out` (from [`compress_records`]): `header` with the codec bits of
/// `codec`, the batch length and the CRC.
pub(crate) fn finish_batch(
    mut out: Vec<u8>,
    header: BatchHeader,
    codec: Compression,
    max_size: usize,
) -> Result<Vec<u8>, RecompressError> {
    let too_large = RecompressError::TooLarge { codec, limit: max_size };
    let rewritten = BatchHeader {
        attributes: (header.attributes & !0x07) | i16::from(codec.id()),
        batch_length: i32::try_from(out.len() - LOG_OVERHEAD).map_err(|_| too_large)?,
        ..header
    };
    out[..BATCH_HEADER_LEN].copy_from_slice(&rewritten.to_bytes());
    let crc = compute_crc(&out);
    out[crate::batch::offsets::CRC..crate::batch::offsets::CRC + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(out)
}

/// Writes xerial-framed snappy, as the Java client's `SnappyOutputStream` does: the stream
/// header, then for each block of up to 32 KiB its compressed length (u32, big-endian) and
/// the raw snappy block.
struct XerialWriter<W: Write> {
    out: W,
    pending: Vec<u8>,
    encoder: snap::raw::Encoder,
    scratch: Vec<u8>,
}

impl<W: Write> XerialWriter<W> {
    fn new(mut out: W) -> std::io::Result<Self> {
        out.write_all(XERIAL_HEADER)?;
        Ok(Self {
            out,
            pending: Vec::with_capacity(XERIAL_BLOCK),
            encoder: snap::raw::Encoder::new(),
            scratch: vec![0; snap::raw::max_compress_len(XERIAL_BLOCK)],
        })
    }

    fn emit(&mut self) -> std::io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let n = self
            .encoder
            .compress(&self.pending, &mut self.scratch)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
        self.out.write_all(&(n as u32).to_be_bytes())?;
        self.out.write_all(&self.scratch[..n])?;
        self.pending.clear();
        Ok(())
    }

    fn finish(mut self) -> std::io::Result<W> {
        self.emit()?;
        Ok(self.out)
    }
}

impl<W: Write> Write for XerialWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let take = buf.len().min(XERIAL_BLOCK - self.pending.len());
        self.pending.extend_from_slice(&buf[..take]);
        if self.pending.len() == XERIAL_BLOCK {
            self.emit()?;
        }
        Ok(take)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
