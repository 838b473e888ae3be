//! Frostbyte's domain: identifiers, tenants and their lifecycle, credentials, the audit hash chain, and the ports
//! (traits) that adapters implement.
//!
//! This crate is deliberately free of HTTP, SQL drivers and cloud SDKs: Cargo enforces that the domain can be
//! read, tested and reasoned about without them. Adapters live in `frostbyte-adapters`; wiring lives in the
//! `frostbyte` binary.

pub mod audit;
pub mod auth;
pub mod batch;
pub mod chunk;
pub mod document;
pub mod documents;
pub mod embed;
pub mod error;
pub mod ids;
pub mod index;
pub mod lifecycle;
pub mod page;
pub mod pipelines;
pub mod policy;
pub mod ports;
pub mod queue;
pub mod reindex;
pub mod scan;
pub mod search;
pub mod service;
pub mod signals;
pub mod tenant;
pub mod words;

pub use error::{StoreError, StoreResult};
pub use ids::TenantId;

/// The current time, truncated to microseconds so that it survives a round trip through every store exactly
/// (PostgreSQL keeps microseconds; the audit hash covers the formatted timestamp).
pub fn now() -> chrono::DateTime<chrono::Utc> {
    truncate_micros(chrono::Utc::now())
}

/// Truncates a timestamp to whole microseconds.
pub fn truncate_micros(t: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
    use chrono::{SubsecRound, Timelike};
    let micros = t.nanosecond() / 1_000;
    t.trunc_subsecs(0) + chrono::Duration::microseconds(i64::from(micros))
}

/// Formats a timestamp the one way Frostbyte writes them: UTC RFC 3339 with microseconds and a `Z`.
pub fn format_timestamp(t: &chrono::DateTime<chrono::Utc>) -> String {
    // The same text as `%Y-%m-%dT%H:%M:%S%.6fZ` for years 0 to 9999 (tested), without parsing a format string
    // on every call: audit events, stage records and rows take several each.
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Parses a date bound given as RFC 3339 or `YYYY-MM-DD`. A bare date means the start of that day, or, with
/// `end_of_day`, its last microsecond, so that `start=2026-02-08&end=2026-02-08` covers the whole day.
pub fn parse_date_bound(s: &str, end_of_day: bool) -> Option<chrono::DateTime<chrono::Utc>> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&chrono::Utc));
    }
    let day = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
    let time =
        if end_of_day { chrono::NaiveTime::from_hms_micro_opt(23, 59, 59, 999_999)? } else { chrono::NaiveTime::MIN };
    Some(day.and_time(time).and_utc())
}

#[cfg(test)]
mod tests {
    #[test]
    fn date_bounds() {
        let start = super::parse_date_bound("2026-02-08", false).unwrap();
        let end = super::parse_date_bound("2026-02-08", true).unwrap();
        assert_eq!(super::format_timestamp(&start), "2026-02-08T00:00:00.000000Z");
        assert_eq!(super::format_timestamp(&end), "2026-02-08T23:59:59.999999Z");
        assert!(super::parse_date_bound("2026-02-08T14:30:00Z", false).is_some());
        assert!(super::parse_date_bound("08/02/2026", false).is_none());
    }

    #[test]
    fn timestamps_format_as_the_written_pattern() {
        use chrono::TimeZone;
        let mut t = chrono::Utc.with_ymd_and_hms(0, 1, 1, 0, 0, 0).unwrap();
        let last = chrono::Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap();
        // Steps of a prime number of seconds and nanoseconds cover every field's values, fractions with trailing
        // zeros and none, and leap days.
        while t < last {
            assert_eq!(super::format_timestamp(&t), t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string());
            t += chrono::Duration::seconds(86_400 * 97 + 3_607) + chrono::Duration::nanoseconds(123_457_001);
        }
        let micros = chrono::Utc.with_ymd_and_hms(2026, 2, 28, 23, 59, 59).unwrap() + chrono::Duration::microseconds(7);
        assert_eq!(super::format_timestamp(&micros), "2026-02-28T23:59:59.000007Z");
    }

    #[test]
    fn timestamps_truncate_to_micros() {
        let t = super::now();
        assert_eq!(t.timestamp_subsec_nanos() % 1_000, 0);
    }
}
