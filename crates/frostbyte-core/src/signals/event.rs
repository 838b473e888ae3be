//! The signal event: `{entity_id, event_time, sequence?, payload, source, trace_id?}`, checked field by field,
//! and its `content_hash`, the per-tenant dedupe key.
//!
//! The canonical form the hash covers is the JSON object `{entity_id, event_time, payload, sequence, source}`
//! with keys sorted at every level and the time written as UTC with microseconds, so the same event sent twice
//! (as a JSON array element, an NDJSON line or a NATS message, with any key order or whitespace) hashes the same.
//! `trace_id` is left out on purpose: it describes the delivery, not the event, and a retry may carry a new one.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::audit::canonical_json;

/// The longest `entity_id` and `source` accepted, in bytes.
pub const MAX_ID_BYTES: usize = 256;
/// The longest `trace_id` accepted, in bytes.
pub const MAX_TRACE_BYTES: usize = 128;

/// A validated event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Event {
    pub entity_id: String,
    pub event_time: DateTime<Utc>,
    pub sequence: Option<i64>,
    #[schema(value_type = Object)]
    pub payload: Value,
    pub source: String,
    pub trace_id: Option<String>,
}

/// Why one event was refused. `reason` is a stable code; `message` names the field, never its content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct EventError {
    /// `INVALID_JSON`, `MISSING_FIELD`, `INVALID_FIELD`, `INVALID_TIME` or `FUTURE_EVENT`.
    pub reason: &'static str,
    pub message: String,
}

impl EventError {
    pub fn new(reason: &'static str, message: impl Into<String>) -> Self {
        EventError { reason, message: message.into() }
    }

    fn missing(field: &str) -> Self {
        EventError::new("MISSING_FIELD", format!("{field} is required"))
    }

    fn invalid(field: &str, constraint: &str) -> Self {
        EventError::new("INVALID_FIELD", format!("{field} must be {constraint}"))
    }
}

fn id_field(obj: &serde_json::Map<String, Value>, field: &str, max: usize) -> Result<String, EventError> {
    match obj.get(field) {
        None | Some(Value::Null) => Err(EventError::missing(field)),
        Some(Value::String(s)) if !s.is_empty() && s.len() <= max && !s.chars().any(char::is_control) => Ok(s.clone()),
        Some(_) => Err(EventError::invalid(field, &format!("a non-empty string of at most {max} bytes"))),
    }
}

impl Event {
    /// Checks one decoded JSON value. Unknown top-level fields are refused, so a misspelt `event_tme` is an error
    /// rather than a silently missing field.
    pub fn from_json(value: Value) -> Result<Event, EventError> {
        let Value::Object(mut obj) = value else {
            return Err(EventError::invalid("event", "a JSON object"));
        };
        if let Some(k) = obj.keys().find(|k| {
            !matches!(k.as_str(), "entity_id" | "event_time" | "sequence" | "payload" | "source" | "trace_id")
        }) {
            let k: String = k.chars().take(64).collect();
            return Err(EventError::new("INVALID_FIELD", format!("unknown field {k:?}")));
        }
        let entity_id = id_field(&obj, "entity_id", MAX_ID_BYTES)?;
        let source = id_field(&obj, "source", MAX_ID_BYTES)?;
        let event_time = match obj.get("event_time") {
            None | Some(Value::Null) => return Err(EventError::missing("event_time")),
            Some(Value::String(s)) => DateTime::parse_from_rfc3339(s)
                .map(|t| crate::truncate_micros(t.with_timezone(&Utc)))
                .map_err(|_| EventError::new("INVALID_TIME", "event_time must be an RFC 3339 timestamp"))?,
            Some(_) => return Err(EventError::new("INVALID_TIME", "event_time must be an RFC 3339 timestamp")),
        };
        let sequence = match obj.get("sequence") {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.as_i64().ok_or_else(|| EventError::invalid("sequence", "an integer"))?),
        };
        let trace_id = match obj.get("trace_id") {
            None | Some(Value::Null) => None,
            Some(_) => Some(id_field(&obj, "trace_id", MAX_TRACE_BYTES)?),
        };
        let payload = match obj.remove("payload") {
            None | Some(Value::Null) => return Err(EventError::missing("payload")),
            Some(p @ Value::Object(_)) => p,
            Some(_) => return Err(EventError::invalid("payload", "a JSON object")),
        };
        Ok(Event { entity_id, event_time, sequence, payload, source, trace_id })
    }

    /// Parses one JSON text (an NDJSON line or a message body).
    pub fn from_slice(bytes: &[u8]) -> Result<Event, EventError> {
        let value: Value = serde_json::from_slice(bytes).map_err(|e| {
            EventError::new("INVALID_JSON", format!("not valid JSON (line {}, column {})", e.line(), e.column()))
        })?;
        Event::from_json(value)
    }

    /// Refuses events stamped further than `horizon_micros` after `now` (clock skew, unit mistakes).
    pub fn check_horizon(&self, now: DateTime<Utc>, horizon_micros: i64) -> Result<(), EventError> {
        if self.event_time_micros() > now.timestamp_micros().saturating_add(horizon_micros) {
            return Err(EventError::new("FUTURE_EVENT", "event_time is beyond the accepted future horizon"));
        }
        Ok(())
    }

    pub fn event_time_micros(&self) -> i64 {
        self.event_time.timestamp_micros()
    }

    /// The canonical JSON the hash covers.
    pub fn canonical(&self) -> String {
        canonical_json(&serde_json::json!({
            "entity_id": self.entity_id,
            "event_time": crate::format_timestamp(&self.event_time),
            "payload": self.payload,
            "sequence": self.sequence,
            "source": self.source,
        }))
    }

    /// Lowercase hex sha256 of [`Event::canonical`].
    pub fn content_hash(&self) -> String {
        hex::encode(Sha256::digest(self.canonical().as_bytes()))
    }
}

/// The first 8 bytes of a hex content hash, the engine's tie-breaker between events with equal time and sequence.
pub fn hash_tie(content_hash: &str) -> u64 {
    let mut out = 0u64;
    for b in content_hash.bytes().take(16) {
        let v = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => 0,
        };
        out = (out << 4) | u64::from(v);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ok() -> Value {
        json!({"entity_id": "dev-1", "event_time": "2026-02-08T14:30:00Z", "payload": {"t": 21.5}, "source": "s"})
    }

    #[test]
    fn hash_ignores_key_order_whitespace_and_trace() {
        let a = Event::from_json(ok()).unwrap();
        let b = Event::from_slice(
            br#"{ "source":"s", "payload":{"t":21.5}, "event_time":"2026-02-08T15:30:00+01:00", "entity_id":"dev-1", "trace_id":"x" }"#,
        )
        .unwrap();
        assert_eq!(a.content_hash(), b.content_hash());
        let mut c = ok();
        c["payload"]["t"] = json!(21.6);
        assert_ne!(Event::from_json(c).unwrap().content_hash(), a.content_hash());
    }

    #[test]
    fn each_bad_field_has_a_reason() {
        let cases = [
            (json!({"event_time": "2026-02-08T14:30:00Z", "payload": {}, "source": "s"}), "MISSING_FIELD"),
            (json!({"entity_id": "d", "event_time": "yesterday", "payload": {}, "source": "s"}), "INVALID_TIME"),
            (json!({"entity_id": "d", "event_time": 17, "payload": {}, "source": "s"}), "INVALID_TIME"),
            (
                json!({"entity_id": "d", "event_time": "2026-02-08T14:30:00Z", "payload": [], "source": "s"}),
                "INVALID_FIELD",
            ),
            (
                json!({"entity_id": "", "event_time": "2026-02-08T14:30:00Z", "payload": {}, "source": "s"}),
                "INVALID_FIELD",
            ),
            (
                json!({"entity_id": "d", "event_tme": "2026-02-08T14:30:00Z", "payload": {}, "source": "s"}),
                "INVALID_FIELD",
            ),
            (
                json!({"entity_id": "d", "event_time": "2026-02-08T14:30:00Z", "payload": {}, "source": "s", "sequence": 1.5}),
                "INVALID_FIELD",
            ),
            (json!([1]), "INVALID_FIELD"),
        ];
        for (v, reason) in cases {
            assert_eq!(Event::from_json(v.clone()).unwrap_err().reason, reason, "{v}");
        }
        assert_eq!(Event::from_slice(b"{nope").unwrap_err().reason, "INVALID_JSON");
    }

    #[test]
    fn future_horizon() {
        let e = Event::from_json(ok()).unwrap();
        let now = e.event_time - chrono::Duration::minutes(10);
        assert_eq!(e.check_horizon(now, 60_000_000).unwrap_err().reason, "FUTURE_EVENT");
        assert!(e.check_horizon(now, 600_000_000).is_ok());
    }

    #[test]
    fn tie_reads_hex_prefix() {
        assert_eq!(hash_tie("00000000000000ff"), 255);
        assert_eq!(hash_tie(&"f".repeat(64)), u64::MAX);
    }
}
