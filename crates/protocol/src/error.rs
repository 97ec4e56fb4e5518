//! Errors raised while framing and decoding requests.

/// Why a request could not be turned into a message.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The frame ended before the request header did.
    #[error("request frame of {len} bytes is too short for a request header")]
    ShortHeader { len: usize },
    /// The API key is not one Kafka defines.
    #[error("unknown API key {api_key}")]
    UnknownApiKey { api_key: i16 },
    /// A known API key at a version Strata does not serve.
    #[error("API {api_key:?} v{version} is not supported (supported: v{min}..=v{max})")]
    UnsupportedVersion { api_key: crate::ApiKey, version: i16, min: i16, max: i16 },
    /// The bytes did not decode as the message they claim to be.
    #[error("malformed {api_key:?} v{version} request: {reason}")]
    Malformed { api_key: crate::ApiKey, version: i16, reason: String },
    /// A response could not be encoded (a bug, or a value out of the wire format's range).
    #[error("cannot encode {api_key:?} v{version} response: {reason}")]
    Encode { api_key: crate::ApiKey, version: i16, reason: String },
}
