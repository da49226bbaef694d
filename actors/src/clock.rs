//! Wall-clock helpers: the protocol's timestamp format and epoch milliseconds.
//!
//! Every timestamp the appliance emits is UTC with milliseconds and a `Z`
//! (PROTOCOL.md §2), so there is exactly one formatter for it.

use time::format_description::FormatItem;
use time::macros::format_description;
use time::OffsetDateTime;

const RFC3339_MILLIS: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");

/// Formats a UTC instant as `2025-10-04T10:30:00.000Z`.
pub fn format_rfc3339(t: OffsetDateTime) -> String {
    // The format has no fallible component for UTC values in year 0..=9999; the
    // fallback keeps us from ever panicking on an absurd clock.
    t.to_offset(time::UtcOffset::UTC)
        .format(RFC3339_MILLIS)
        .unwrap_or_else(|_| "1970-01-01T00:00:00.000Z".to_owned())
}

/// The current time in the protocol's timestamp format.
pub fn now_rfc3339() -> String {
    format_rfc3339(OffsetDateTime::now_utc())
}

/// Milliseconds since the Unix epoch (0 if the clock is before 1970).
pub fn now_ms() -> u64 {
    let nanos = OffsetDateTime::now_utc().unix_timestamp_nanos();
    u64::try_from(nanos / 1_000_000).unwrap_or(0)
}

/// Formats epoch milliseconds as an RFC 3339 timestamp.
pub fn ms_to_rfc3339(ms: u64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .map(format_rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00.000Z".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_have_millis_and_z() {
        let t = OffsetDateTime::from_unix_timestamp(1_759_573_800).expect("valid");
        assert_eq!(format_rfc3339(t), "2025-10-04T10:30:00.000Z");
        assert_eq!(ms_to_rfc3339(1_759_573_800_123), "2025-10-04T10:30:00.123Z");
    }
}
