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

/// Kafka's name of an error code, as `Errors.java` spells it (`NOT_LEADER_OR_FOLLOWER`; `NONE`
/// for 0, `UNKNOWN_ERROR_CODE_N` for a code this build does not know).
pub fn error_name(code: i16) -> String {
    use kafka_protocol::ResponseError;
    match ResponseError::try_from_code(code) {
        None => "NONE".to_string(),
        Some(ResponseError::Unknown(c)) => format!("UNKNOWN_ERROR_CODE_{c}"),
        Some(e) => {
            let camel = format!("{e:?}");
            let mut out = String::with_capacity(camel.len() + 8);
            for (i, c) in camel.chars().enumerate() {
                if c.is_ascii_uppercase() && i > 0 {
                    out.push('_');
                }
                out.push(c.to_ascii_uppercase());
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_names_follow_kafka() {
        assert_eq!(error_name(36), "TOPIC_ALREADY_EXISTS");
        assert_eq!(error_name(6), "NOT_LEADER_OR_FOLLOWER");
        assert_eq!(error_name(29), "TOPIC_AUTHORIZATION_FAILED");
        assert_eq!(error_name(0), "NONE");
        assert_eq!(error_name(-30000), "UNKNOWN_ERROR_CODE_-30000");
    }
}
