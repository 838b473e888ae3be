//! Pipeline schedules: a cron expression (standard five fields, parsed by `croner`) in a time zone, the
//! pipeline and parameters it runs with, and the [`ScheduleStore`] port.
//!
//! **Exactly once.** Every scheduler process reads the due schedules and then tries [`ScheduleStore::claim_fire`],
//! a compare-and-set of `next_run_at` from the value it read to the next occurrence after now. Only one process
//! can move it, so only one creates the run, however many schedulers share the database.
//!
//! **Catch-up.** After downtime, a schedule whose `next_run_at` has passed fires once and its next occurrence is
//! computed from now: missed occurrences are not replayed as a storm.
//!
//! **Overlap.** When an occurrence comes while the schedule's previous run is still pending, validating or
//! running, its [`Overlap`] policy decides: `skip` records the skipped occurrence (`last_skipped_at`,
//! `skipped_count`, audit `PIPELINE_SCHEDULE_SKIPPED`); `queue` creates a run that waits for the previous one
//! to end (its job is released in the transaction that ends the previous run), at most one waiting at a time.
//! The decision is taken by the one process whose claim won, so it too happens once.
//!
//! **Time zones** are `UTC`, a fixed offset (`+02:00`, `-05:30`) or an IANA name (`Europe/Berlin`) with its
//! daylight-saving rules (`chrono-tz`). An occurrence in a spring-forward gap fires at the first valid moment
//! after it; an occurrence in the repeated hour of a fall-back fires once, at its first (summer-time) instance.

use async_trait::async_trait;
use chrono::{DateTime, FixedOffset, Utc};
use serde::Deserialize;
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::audit::NewAuditEvent;
use crate::error::StoreResult;
use crate::ids::TenantId;

/// A schedule as stored and shown.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Schedule {
    pub schedule_id: Uuid,
    #[schema(value_type = String)]
    pub tenant_id: TenantId,
    /// `domain/name`.
    pub pipeline: String,
    pub cron_expression: String,
    /// `UTC`, a fixed offset such as `+02:00`, or an IANA zone such as `Europe/Berlin`.
    pub timezone: String,
    /// What an occurrence does while the previous run is still unfinished.
    pub overlap: Overlap,
    #[schema(value_type = Object)]
    pub parameters: Map<String, Value>,
    pub is_enabled: bool,
    pub last_run_at: Option<DateTime<Utc>>,
    pub last_run_id: Option<Uuid>,
    /// `None` while disabled.
    pub next_run_at: Option<DateTime<Utc>>,
    /// The last occurrence skipped because the previous run was unfinished (`skip`), or because a run was already
    /// waiting behind it (`queue`).
    pub last_skipped_at: Option<DateTime<Utc>>,
    /// How many occurrences were skipped.
    pub skipped_count: u64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What an occurrence does while the schedule's previous run is still pending, validating or running.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Overlap {
    /// The occurrence is skipped and recorded.
    #[default]
    Skip,
    /// The occurrence creates a run that starts once the previous one ends; at most one waits.
    Queue,
}

impl Overlap {
    pub fn as_str(self) -> &'static str {
        match self {
            Overlap::Skip => "skip",
            Overlap::Queue => "queue",
        }
    }

    pub fn parse(s: &str) -> Option<Overlap> {
        match s {
            "skip" => Some(Overlap::Skip),
            "queue" => Some(Overlap::Queue),
            _ => None,
        }
    }
}

/// Why a cron expression or time zone was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("invalid cron expression {0:?}: {1}")]
    Cron(String, String),
    #[error("invalid time zone {0:?}: use UTC, a fixed offset such as +02:00, or an IANA name such as Europe/Berlin")]
    TimeZone(String),
    #[error("cron expression {0:?} never fires")]
    Never(String),
}

/// A schedule's time zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Zone {
    Fixed(FixedOffset),
    /// An IANA zone with its daylight-saving rules.
    Named(chrono_tz::Tz),
}

/// Parses `UTC`, `Z`, `±HH:MM` or an IANA zone name (`Europe/Berlin`, exact spelling).
pub fn parse_timezone(tz: &str) -> Result<Zone, ScheduleError> {
    let t = tz.trim();
    if t.eq_ignore_ascii_case("utc") || t == "Z" {
        return Ok(Zone::Fixed(FixedOffset::east_opt(0).expect("zero offset")));
    }
    if t.contains('/') {
        return t.parse::<chrono_tz::Tz>().map(Zone::Named).map_err(|_| ScheduleError::TimeZone(tz.to_owned()));
    }
    parse_offset(tz, t).map(Zone::Fixed)
}

fn parse_offset(tz: &str, t: &str) -> Result<FixedOffset, ScheduleError> {
    let (sign, rest) = match t.as_bytes().first() {
        Some(b'+') => (1, &t[1..]),
        Some(b'-') => (-1, &t[1..]),
        _ => return Err(ScheduleError::TimeZone(tz.to_owned())),
    };
    let (h, m) = rest.split_once(':').ok_or_else(|| ScheduleError::TimeZone(tz.to_owned()))?;
    if h.len() != 2 || m.len() != 2 {
        return Err(ScheduleError::TimeZone(tz.to_owned()));
    }
    let (h, m) = match (h.parse::<i32>(), m.parse::<i32>()) {
        (Ok(h), Ok(m)) if h <= 14 && m < 60 => (h, m),
        _ => return Err(ScheduleError::TimeZone(tz.to_owned())),
    };
    FixedOffset::east_opt(sign * (h * 3600 + m * 60)).ok_or_else(|| ScheduleError::TimeZone(tz.to_owned()))
}

/// Checks a five-field cron expression.
pub fn parse_cron(expr: &str) -> Result<croner::Cron, ScheduleError> {
    if expr.split_whitespace().count() != 5 {
        return Err(ScheduleError::Cron(expr.to_owned(), "expected five fields: minute hour day month weekday".into()));
    }
    croner::Cron::new(expr).parse().map_err(|e| ScheduleError::Cron(expr.to_owned(), e.to_string()))
}

/// The first occurrence strictly after `after`, evaluated in `tz`.
pub fn next_fire(expr: &str, tz: &str, after: DateTime<Utc>) -> Result<DateTime<Utc>, ScheduleError> {
    let cron = parse_cron(expr)?;
    let found = match parse_timezone(tz)? {
        Zone::Fixed(offset) => {
            cron.find_next_occurrence(&after.with_timezone(&offset), false).map(|t| t.with_timezone(&Utc))
        }
        Zone::Named(zone) => {
            cron.find_next_occurrence(&after.with_timezone(&zone), false).map(|t| t.with_timezone(&Utc))
        }
    };
    found.map(crate::truncate_micros).map_err(|_| ScheduleError::Never(expr.to_owned()))
}

/// Changes to a schedule (`None`: unchanged). The store recomputes nothing: callers pass `next_run_at`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScheduleChange {
    pub cron_expression: Option<String>,
    pub timezone: Option<String>,
    pub overlap: Option<Overlap>,
    pub parameters: Option<Map<String, Value>>,
    pub is_enabled: Option<bool>,
    pub next_run_at: Option<Option<DateTime<Utc>>>,
}

/// The schedules, implemented by both metadata stores. Tenant first; another tenant's id is `NotFound`.
#[async_trait]
pub trait ScheduleStore: Send + Sync {
    async fn create_schedule(&self, schedule: &Schedule, audit: NewAuditEvent) -> StoreResult<()>;
    async fn get_schedule(&self, tenant: &TenantId, id: Uuid) -> StoreResult<Option<Schedule>>;
    async fn list_schedules(&self, tenant: &TenantId) -> StoreResult<Vec<Schedule>>;
    async fn update_schedule(
        &self,
        tenant: &TenantId,
        id: Uuid,
        change: ScheduleChange,
        audit: NewAuditEvent,
    ) -> StoreResult<Schedule>;
    async fn delete_schedule(&self, tenant: &TenantId, id: Uuid, audit: NewAuditEvent) -> StoreResult<()>;
    /// Enabled schedules of every tenant with `next_run_at <= now`, oldest first, at most `limit`.
    async fn due_schedules(&self, now: DateTime<Utc>, limit: u32) -> StoreResult<Vec<Schedule>>;
    /// Moves `next_run_at` from `expected` to `next` and records the firing at `now`, only if it is still
    /// `expected` and the schedule is enabled. True for the one caller that won.
    async fn claim_fire(
        &self,
        tenant: &TenantId,
        id: Uuid,
        expected: DateTime<Utc>,
        next: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// Records the run a firing created.
    async fn record_fired_run(&self, tenant: &TenantId, id: Uuid, run_id: Uuid) -> StoreResult<()>;
    /// Like [`ScheduleStore::claim_fire`], for an occurrence that is skipped: moves `next_run_at` from `expected`
    /// to `next` and records the skip at `now` (`last_skipped_at`, `skipped_count + 1`, and `audit`) in one
    /// transaction, only if it is still `expected` and the schedule enabled. True for the one caller that won.
    async fn claim_skip(
        &self,
        tenant: &TenantId,
        id: Uuid,
        expected: DateTime<Utc>,
        next: DateTime<Utc>,
        now: DateTime<Utc>,
        audit: NewAuditEvent,
    ) -> StoreResult<bool>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn next_fire_table() {
        let table = [
            ("0 2 * * *", "UTC", "2026-03-01T01:00:00Z", "2026-03-01T02:00:00Z"),
            ("0 2 * * *", "UTC", "2026-03-01T02:00:00Z", "2026-03-02T02:00:00Z"),
            ("0 2 * * *", "+02:00", "2026-03-01T01:00:00Z", "2026-03-02T00:00:00Z"),
            ("*/15 * * * *", "UTC", "2026-03-01T10:07:00Z", "2026-03-01T10:15:00Z"),
            ("30 9 * * 1", "-05:00", "2026-03-01T00:00:00Z", "2026-03-02T14:30:00Z"),
        ];
        for (expr, tz, after, expected) in table {
            assert_eq!(next_fire(expr, tz, at(after)).unwrap(), at(expected), "{expr} {tz} after {after}");
        }
    }

    #[test]
    fn bad_expressions_and_zones_are_refused() {
        assert!(matches!(parse_cron("every day"), Err(ScheduleError::Cron(..))));
        assert!(matches!(parse_cron("61 * * * *"), Err(ScheduleError::Cron(..))));
        assert!(matches!(parse_cron("0 0 * * * *"), Err(ScheduleError::Cron(..))), "six fields");
        for tz in ["Europe/Berlinn", "Mars/Base", "europe/berlin", "+2", "+25:00", "02:00", ""] {
            assert!(parse_timezone(tz).is_err(), "{tz}");
        }
        let Zone::Fixed(offset) = parse_timezone("-05:30").unwrap() else { panic!("fixed") };
        assert_eq!(offset.local_minus_utc(), -(5 * 3600 + 30 * 60));
        assert_eq!(parse_timezone("Europe/Berlin").unwrap(), Zone::Named(chrono_tz::Europe::Berlin));
    }

    #[test]
    fn named_zones_follow_daylight_saving_transitions() {
        let table = [
            // Berlin is UTC+1 in winter, UTC+2 in summer.
            ("0 2 * * *", "Europe/Berlin", "2026-01-15T12:00:00Z", "2026-01-16T01:00:00Z"),
            ("0 9 * * *", "Europe/Berlin", "2026-07-01T12:00:00Z", "2026-07-02T07:00:00Z"),
            // 29 March 2026: 02:00 CET jumps to 03:00 CEST. 09:00 that day is 07:00 UTC, the day before 08:00 UTC.
            ("0 9 * * *", "Europe/Berlin", "2026-03-28T12:00:00Z", "2026-03-29T07:00:00Z"),
            ("0 9 * * *", "Europe/Berlin", "2026-03-27T12:00:00Z", "2026-03-28T08:00:00Z"),
            // 02:30 does not exist on 29 March: it fires at the first valid moment after the gap, 03:00 CEST.
            ("30 2 * * *", "Europe/Berlin", "2026-03-28T12:00:00Z", "2026-03-29T01:00:00Z"),
            // 25 October 2026: 03:00 CEST falls back to 02:00 CET; 09:00 is 08:00 UTC again.
            ("0 9 * * *", "Europe/Berlin", "2026-10-24T12:00:00Z", "2026-10-25T08:00:00Z"),
            // New York: 8 March 2026, 02:00 EST jumps to 03:00 EDT.
            ("0 12 * * *", "America/New_York", "2026-03-07T18:00:00Z", "2026-03-08T16:00:00Z"),
        ];
        for (expr, tz, after, expected) in table {
            assert_eq!(next_fire(expr, tz, at(after)).unwrap(), at(expected), "{expr} {tz} after {after}");
        }
        // An hourly schedule across the spring-forward night fires 23 times in that local day.
        let mut t = at("2026-03-28T23:00:00Z"); // 00:00 CET on the 29th
        let mut fired = 0;
        while t < at("2026-03-29T22:00:00Z") {
            t = next_fire("0 * * * *", "Europe/Berlin", t).unwrap();
            fired += 1;
        }
        assert_eq!(fired, 23);
    }

    #[test]
    fn the_repeated_fall_back_hour_fires_once() {
        // 02:30 happens twice on 25 October 2026 in Berlin (00:30 UTC in CEST, 01:30 UTC in CET).
        let first = next_fire("30 2 * * *", "Europe/Berlin", at("2026-10-24T12:00:00Z")).unwrap();
        assert_eq!(first, at("2026-10-25T00:30:00Z"));
        let second = next_fire("30 2 * * *", "Europe/Berlin", first).unwrap();
        assert_eq!(second, at("2026-10-26T01:30:00Z"), "not again an hour later");
    }
}
