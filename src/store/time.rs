//! Times as the store keeps them: text the store compares (retention cut-offs,
//! newest-first order), so one format for every writer, the jobs worker included.

/// The current time as stored and returned: RFC 3339, UTC, millisecond precision.
pub fn now() -> String {
    format_time(jiff::Timestamp::now())
}

/// RFC 3339 in UTC with exactly three fractional digits. Always three: the store compares
/// these strings (retention, newest-first order), and `…:45Z` sorts after `…:45.001Z`.
pub fn format_time(t: jiff::Timestamp) -> String {
    let t = t.round(jiff::Unit::Millisecond).unwrap_or(t);
    jiff::fmt::temporal::DateTimePrinter::new()
        .precision(Some(3))
        .timestamp_to_string(&t)
}

#[cfg(test)]
mod tests {
    use super::format_time;

    #[test]
    fn times_always_have_three_fractional_digits_so_they_sort_as_strings() {
        let whole: jiff::Timestamp = "2026-11-30T04:08:45Z".parse().expect("a time");
        let later: jiff::Timestamp = "2026-11-30T04:08:45.0014Z".parse().expect("a time");
        assert_eq!(format_time(whole), "2026-11-30T04:08:45.000Z");
        assert_eq!(format_time(later), "2026-11-30T04:08:45.001Z");
        assert!(format_time(whole) < format_time(later));
    }
}
