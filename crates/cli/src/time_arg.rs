//! Times given on the command line: milliseconds since the epoch, or a date-time as Kafka's
//! tools take it (`2026-12-01T10:00:00`, `2026-12-01T10:00:00.000`, with an optional `Z` or
//! `+01:00`; without one it is UTC).

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::error::CliError;

/// Milliseconds since the Unix epoch of `arg`.
pub fn parse_time_ms(arg: &str) -> Result<i64, CliError> {
    let arg = arg.trim();
    if let Ok(ms) = arg.parse::<i64>() {
        return Ok(ms);
    }
    let has_zone = arg.ends_with('Z')
        || arg.ends_with('z')
        || arg.rfind(['+', '-']).is_some_and(|i| i > 10 && arg[i..].contains(':'));
    let text = if has_zone { arg.to_string() } else { format!("{arg}Z") };
    let t = OffsetDateTime::parse(&text, &Rfc3339).map_err(|e| {
        CliError::Usage(format!(
            "'{arg}' is not a time: give milliseconds since the epoch or YYYY-MM-DDTHH:MM:SS[.sss][Z|+HH:MM] ({e})"
        ))
    })?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).map_err(|_| CliError::Usage(format!("'{arg}' is out of range")))
}

/// `ms` since the epoch as an RFC 3339 UTC date-time, for tables.
pub fn format_time_ms(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| ms.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_date_times_and_epoch_milliseconds() {
        assert_eq!(parse_time_ms("1700000000000").unwrap(), 1_700_000_000_000);
        assert_eq!(parse_time_ms("2023-11-14T22:13:20").unwrap(), 1_700_000_000_000);
        assert_eq!(parse_time_ms("2023-11-14T22:13:20.250Z").unwrap(), 1_700_000_000_250);
        assert_eq!(parse_time_ms("2023-11-14T23:13:20+01:00").unwrap(), 1_700_000_000_000);
        assert!(parse_time_ms("yesterday").is_err());
        assert_eq!(format_time_ms(1_700_000_000_000), "2023-11-14T22:13:20Z");
    }
}
