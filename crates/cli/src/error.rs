//! The admin commands' one error type and its exit codes.

/// Why an admin command failed. [`CliError::exit_code`] is what the process exits with.
#[derive(Debug)]
pub enum CliError {
    /// The arguments do not make a request (exit 2, as clap's own usage errors).
    Usage(String),
    /// No broker of `--bootstrap-server` could be reached, or a connection failed (exit 3).
    Connect(String),
    /// The cluster answered with a Kafka error code (exit 1).
    Kafka { code: i16, context: String, message: Option<String> },
    /// Anything else: a refused operation found before sending, bad input data (exit 1).
    Failed(String),
}

impl CliError {
    /// 1 for a refusal, 2 for bad arguments, 3 when the cluster could not be reached.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => 2,
            CliError::Connect(_) => 3,
            CliError::Kafka { .. } | CliError::Failed(_) => 1,
        }
    }

    /// A Kafka error `code` (non-zero) met while doing `context`.
    pub fn kafka(code: i16, context: impl Into<String>, message: Option<&str>) -> Self {
        CliError::Kafka { code, context: context.into(), message: message.filter(|m| !m.is_empty()).map(str::to_owned) }
    }
}

pub use strata_protocol::error::error_name;

/// `Ok` for code 0, else the error with its context.
pub fn check(code: i16, context: impl FnOnce() -> String, message: Option<&str>) -> Result<(), CliError> {
    if code == 0 {
        Ok(())
    } else {
        Err(CliError::kafka(code, context(), message))
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CliError::Usage(m) | CliError::Connect(m) | CliError::Failed(m) => f.write_str(m),
            CliError::Kafka { code, context, message } => {
                write!(f, "{context}: {} ({code})", error_name(*code))?;
                match message {
                    Some(m) => write!(f, ": {m}"),
                    None => Ok(()),
                }
            }
        }
    }
}

impl std::error::Error for CliError {}
