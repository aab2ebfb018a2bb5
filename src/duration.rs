//! The one syntax of durations on the command line (`bench --duration`, `token --ttl`,
//! `--timeout`): jiff's friendly format (`1m30s`, `500ms`, `1.5s`, `2h`, `1 hour`), or a
//! plain number of seconds. Imports nothing from the crate.

use std::time::Duration;

/// A positive duration in the command line's syntax; the error says what was expected.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let duration = match text.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => text
            .parse::<jiff::SignedDuration>()
            .map_err(|_| format!("{text:?} is not a duration like 1m30s, 500ms, 2h or 90"))
            .and_then(|d| Duration::try_from(d).map_err(|_| format!("{text:?} is negative")))?,
    };
    if duration.is_zero() {
        return Err(format!("{text:?} must be more than zero"));
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations_parse_in_jiffs_friendly_format_or_as_seconds() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("-5m").is_err());
        assert!(parse_duration("fast").is_err());
    }
}
