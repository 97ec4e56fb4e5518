//! Kafka wire protocol for Strata: framing, request and response headers, the
//! API versions Strata supports, and a zero-copy view of RecordBatch v2.
//!
//! No I/O happens here: the broker's connection task feeds bytes in and writes
//! bytes out. Message bodies are the `kafka-protocol` crate's types, generated
//! from Apache Kafka's own JSON schemas.
//!
//! # Layout
//! - [`frame`]: size-prefixed frames, capped before any allocation.
//! - [`request`]: request header + body decoding, with the KIP-511 rule.
//! - [`response`]: response header + body encoding.
//! - [`versions`]: the API keys and version ranges Strata answers.
//! - [`batch`]: the RecordBatch v2 header view, CRC check and in-place patches.
//! - [`records`]: record-level work inside a batch: the streaming record scan, Kafka's
//!   per-record produce checks, codec changes, and the broker's own batches.
//! - [`error`]: this crate's error type.
//!
//! # Example
//! ```
//! use bytes::BytesMut;
//! use strata_protocol::frame::{FrameDecoder, FrameError};
//! let mut buf = BytesMut::from(&[0u8, 0, 0, 2, 0xAB, 0xCD][..]);
//! let mut dec = FrameDecoder::new(1024);
//! let frame = dec.decode(&mut buf).unwrap().unwrap();
//! assert_eq!(&frame[..], &[0xAB, 0xCD]);
//! assert!(matches!(FrameDecoder::new(1).decode(&mut BytesMut::from(&[0u8, 0, 0, 2][..])),
//!     Err(FrameError::TooLarge { .. })));
//! ```

pub mod batch;
pub mod error;
pub mod frame;
pub mod records;
pub mod request;
pub mod response;
pub mod versions;

pub use error::ProtocolError;
pub use kafka_protocol;
pub use kafka_protocol::messages::ApiKey;
pub use kafka_protocol::ResponseError;
