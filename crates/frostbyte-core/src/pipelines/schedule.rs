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
//! Time zones are `UTC` or a fixed offset (`+02:00`, `-05:30`); named zones with daylight-saving rules need a
//! time-zone database, which this build does not carry.

use async_trait::async_trait;
use chrono::{DateTime, FixedOffset, Utc};
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
    /// `UTC` or a fixed offset such as `+02:00`.
    pub timezone: String,
    #[schema(value_type = Object)]
    pub parameters: Map<String, Value>,
    pub is_enabled: bool,
    pub last_run_at: Option<DateTime<Utc>>,
    pub last_run_id: Option<Uuid>,
    /// `None` while disabled.
    pub next_run_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Why a cron expression or time zone was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("invalid cron expression {0:?}: {1}")]
    Cron(String, String),
    #[error("invalid time zone {0:?}: use UTC or a fixed offset such as +02:00")]
    TimeZone(String),
    #[error("cron expression {0:?} never fires")]
    Never(String),
}

/// Parses `UTC`, `Z` or `±HH:MM`.
pub fn parse_timezone(tz: &str) -> Result<FixedOffset, ScheduleError> {
    let t = tz.trim();
    if t.eq_ignore_ascii_case("utc") || t == "Z" {
        return Ok(FixedOffset::east_opt(0).expect("zero offset"));
    }
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
    let offset = parse_timezone(tz)?;
    cron.find_next_occurrence(&after.with_timezone(&offset), false)
        .map(|t| crate::truncate_micros(t.with_timezone(&Utc)))
        .map_err(|_| ScheduleError::Never(expr.to_owned()))
}

/// Changes to a schedule (`None`: unchanged). The store recomputes nothing: callers pass `next_run_at`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScheduleChange {
    pub cron_expression: Option<String>,
    pub timezone: Option<String>,
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
        for tz in ["Europe/Paris", "+2", "+25:00", "02:00", ""] {
            assert!(parse_timezone(tz).is_err(), "{tz}");
        }
        assert_eq!(parse_timezone("-05:30").unwrap().local_minus_utc(), -(5 * 3600 + 30 * 60));
    }
}
