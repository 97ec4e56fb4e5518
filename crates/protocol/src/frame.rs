//! Size-prefixed framing: every Kafka request and response is a big-endian
//! `i32` length followed by that many bytes.

use bytes::{Buf, Bytes, BytesMut};

/// Why a frame was refused. The connection must be closed: the stream can
/// no longer be trusted to be aligned on frame boundaries.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// The announced size is above `socket.request.max.bytes`.
    #[error("frame of {size} bytes exceeds socket.request.max.bytes ({max})")]
    TooLarge { size: usize, max: usize },
    /// The announced size is zero or negative.
    #[error("invalid frame size {size}")]
    InvalidSize { size: i32 },
}

/// Splits a byte stream into frames. Holds only the cap: the caller owns the buffer.
#[derive(Debug, Clone, Copy)]
pub struct FrameDecoder {
    max_frame: usize,
}

impl FrameDecoder {
    /// A decoder refusing frames larger than `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        Self { max_frame }
    }

    /// The size the next frame announces, validated, if its 4-byte prefix has
    /// arrived. Callers use it to reserve buffer space and account bytes in
    /// flight *before* reading the body.
    pub fn peek_size(&self, buf: &[u8]) -> Result<Option<usize>, FrameError> {
        if buf.len() < 4 {
            return Ok(None);
        }
        let size = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        if size <= 0 {
            return Err(FrameError::InvalidSize { size });
        }
        let size = size as usize;
        if size > self.max_frame {
            return Err(FrameError::TooLarge { size, max: self.max_frame });
        }
        Ok(Some(size))
    }

    /// Takes one whole frame (without its prefix) off the front of `buf`.
    /// Half a frame is `Ok(None)`: read more and call again.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        let Some(size) = self.peek_size(buf)? else {
            return Ok(None);
        };
        if buf.len() < 4 + size {
            buf.reserve(4 + size - buf.len());
            return Ok(None);
        }
        buf.advance(4);
        Ok(Some(buf.split_to(size).freeze()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn half_frames_wait_for_more() {
        let mut dec = FrameDecoder::new(100);
        let mut buf = BytesMut::from(&[0u8, 0][..]);
        assert_eq!(dec.decode(&mut buf), Ok(None));
        buf.extend_from_slice(&[0, 3, 1, 2]);
        assert_eq!(dec.decode(&mut buf), Ok(None));
        buf.extend_from_slice(&[3, 0, 0]);
        assert_eq!(dec.decode(&mut buf).unwrap().unwrap().as_ref(), &[1, 2, 3]);
        assert_eq!(&buf[..], &[0, 0]);
    }

    #[test]
    fn bad_sizes_are_refused_before_allocating() {
        let mut dec = FrameDecoder::new(100);
        for (bytes, err) in [
            ([0x7f, 0xff, 0xff, 0xff], FrameError::TooLarge { size: i32::MAX as usize, max: 100 }),
            ([0, 0, 0, 0], FrameError::InvalidSize { size: 0 }),
            ([0xff, 0xff, 0xff, 0xff], FrameError::InvalidSize { size: -1 }),
        ] {
            let mut buf = BytesMut::from(&bytes[..]);
            assert_eq!(dec.decode(&mut buf), Err(err));
            assert!(buf.capacity() < 1024);
        }
    }

    proptest! {
        #[test]
        fn frames_round_trip(payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..50), 0..10), split in 0usize..600) {
            let mut wire = Vec::new();
            for p in &payloads {
                wire.extend_from_slice(&(p.len() as i32).to_be_bytes());
                wire.extend_from_slice(p);
            }
            let split = split.min(wire.len());
            let mut dec = FrameDecoder::new(64);
            let mut buf = BytesMut::new();
            let mut out = Vec::new();
            for chunk in [&wire[..split], &wire[split..]] {
                buf.extend_from_slice(chunk);
                while let Some(f) = dec.decode(&mut buf).unwrap() {
                    out.push(f.to_vec());
                }
            }
            prop_assert_eq!(out, payloads);
            prop_assert!(buf.is_empty());
        }
    }
}
