//! Timestamps the way Go's `time.Time` marshals them: RFC 3339 with up to nine fractional
//! digits, trailing zeros trimmed, `Z` for UTC.
use time::OffsetDateTime;

/// Formats `t` (converted to UTC) like Go's `time.Time.MarshalJSON` without the quotes.
pub fn rfc3339(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    let mut s = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    let nanos = t.nanosecond();
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

/// The current time.
pub fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_go() {
        let t = OffsetDateTime::from_unix_timestamp_nanos(1_705_055_960_886_816_000).unwrap();
        assert_eq!(rfc3339(t), "2024-01-12T10:39:20.886816Z");
        let t = OffsetDateTime::from_unix_timestamp(0).unwrap();
        assert_eq!(rfc3339(t), "1970-01-01T00:00:00Z");
    }
}
