//! How domain values are written to and read back from both SQL stores, kept in one place so the SQLite and
//! PostgreSQL adapters cannot drift apart.
//!
//! Every decoder returns [`StoreError::Internal`] for a value it does not recognise: a corrupt or hand-edited
//! row is an error the caller can report, never a panic. Messages name the column, never the stored value.

use chrono::{DateTime, Utc};
use frostbyte_core::audit::canonical_json;
use frostbyte_core::auth::Scope;
use frostbyte_core::tenant::{TenantConfig, TenantState, Tier};
use frostbyte_core::{StoreError, StoreResult, TenantId};
use serde_json::Value;
use uuid::Uuid;

/// The error for a stored value that cannot be decoded.
pub(crate) fn corrupt(column: &'static str) -> StoreError {
    StoreError::Internal(format!("stored {column} could not be decoded"))
}

/// Reads a column by name; a missing column or a value of the wrong type is an `Internal` error naming the
/// column.
pub(crate) fn column<'r, R, T>(row: &'r R, name: &'static str) -> StoreResult<T>
where
    R: sqlx::Row,
    &'static str: sqlx::ColumnIndex<R>,
    T: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    row.try_get(name).map_err(|_| StoreError::Internal(format!("column {name} could not be read")))
}

/// Scopes as stored: names joined by commas, e.g. `ingest,query`.
pub(crate) fn encode_scopes(scopes: &[Scope]) -> String {
    scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",")
}

pub(crate) fn decode_scopes(stored: &str) -> StoreResult<Vec<Scope>> {
    if stored.is_empty() {
        return Ok(Vec::new());
    }
    stored.split(',').map(|name| Scope::parse(name).ok_or_else(|| corrupt("api_keys.scopes"))).collect()
}

pub(crate) fn encode_config(config: &TenantConfig) -> StoreResult<String> {
    serde_json::to_string(config).map_err(|_| StoreError::Internal("tenant config could not be encoded".into()))
}

pub(crate) fn decode_config(stored: &str) -> StoreResult<TenantConfig> {
    serde_json::from_str(stored).map_err(|_| corrupt("tenants.config"))
}

pub(crate) fn decode_state(stored: &str) -> StoreResult<TenantState> {
    TenantState::parse(stored).ok_or_else(|| corrupt("tenants.state"))
}

pub(crate) fn decode_tier(stored: &str) -> StoreResult<Tier> {
    Tier::parse(stored).ok_or_else(|| corrupt("tenants.tier"))
}

pub(crate) fn decode_tenant_id(stored: &str, column: &'static str) -> StoreResult<TenantId> {
    TenantId::parse(stored).map_err(|_| corrupt(column))
}

pub(crate) fn decode_uuid(stored: &str, column: &'static str) -> StoreResult<Uuid> {
    Uuid::parse_str(stored).map_err(|_| corrupt(column))
}

/// Audit details as stored: the canonical JSON the hash covers, so reading a row back reproduces the hash.
pub(crate) fn encode_details(details: &Value) -> String {
    canonical_json(details)
}

pub(crate) fn decode_details(stored: &str) -> StoreResult<Value> {
    serde_json::from_str(stored).map_err(|_| corrupt("audit_events.details"))
}

/// Timestamps as SQLite stores them: [`frostbyte_core::format_timestamp`], which sorts as text.
pub(crate) fn encode_timestamp(t: &DateTime<Utc>) -> String {
    frostbyte_core::format_timestamp(t)
}

pub(crate) fn decode_timestamp(stored: &str, column: &'static str) -> StoreResult<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(stored).map(|t| t.with_timezone(&Utc)).map_err(|_| corrupt(column))
}

pub(crate) fn decode_opt_timestamp(stored: Option<String>, column: &'static str) -> StoreResult<Option<DateTime<Utc>>> {
    stored.map(|s| decode_timestamp(&s, column)).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn scopes_round_trip_and_reject_unknown_names() {
        let scopes = vec![Scope::Ingest, Scope::Admin];
        assert_eq!(decode_scopes(&encode_scopes(&scopes)).unwrap(), scopes);
        assert_eq!(decode_scopes("").unwrap(), Vec::<Scope>::new());
        assert!(matches!(decode_scopes("query,root"), Err(StoreError::Internal(m)) if !m.contains("root")));
    }

    #[test]
    fn timestamps_round_trip_with_microseconds() {
        let t = frostbyte_core::now();
        assert_eq!(decode_timestamp(&encode_timestamp(&t), "t").unwrap(), t);
        assert!(decode_timestamp("yesterday", "t").is_err());
    }

    #[test]
    fn details_round_trip_byte_exact() {
        let v = json!({"b": [1, 2.5, {"z": null, "a": "é"}], "a": true});
        let stored = encode_details(&v);
        assert_eq!(encode_details(&decode_details(&stored).unwrap()), stored);
    }

    #[test]
    fn unknown_state_tier_and_config_are_internal_errors() {
        assert!(matches!(decode_state("ASLEEP"), Err(StoreError::Internal(_))));
        assert!(matches!(decode_tier("platinum"), Err(StoreError::Internal(_))));
        assert!(matches!(decode_config("{\"nope\": 1}"), Err(StoreError::Internal(_))));
        assert!(matches!(decode_config("not json"), Err(StoreError::Internal(_))));
    }
}
