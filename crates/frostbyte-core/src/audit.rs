//! The audit plane's domain: events, the per-tenant hash chain, and chain verification.
//!
//! `hash = sha256(prev_hash ‖ canonical(event))`, where the canonical form is JSON with object keys sorted at every
//! level and the timestamp written with microseconds. The first event of a tenant links to [`GENESIS_HASH`].
//! Stores append an event in the same transaction as the change it records and refuse UPDATE and DELETE on
//! audit rows; verification here finds any row that was altered behind the store's back anyway.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::ids::TenantId;

/// The `prev_hash` of a tenant's first event.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// An event about to be appended. The store assigns its sequence number and hashes.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAuditEvent {
    pub event_type: String,
    pub actor: String,
    pub resource_type: String,
    pub resource_id: String,
    /// `{component, status, ...}`: ids, counts and hashes only, never document text, PII, queries or secrets.
    pub details: Value,
}

impl NewAuditEvent {
    pub fn new(
        event_type: &str,
        actor: impl Into<String>,
        resource_type: &str,
        resource_id: impl Into<String>,
        details: Value,
    ) -> Self {
        NewAuditEvent {
            event_type: event_type.to_owned(),
            actor: actor.into(),
            resource_type: resource_type.to_owned(),
            resource_id: resource_id.into(),
            details,
        }
    }

    /// Seals the event into the chain after `prev_hash`, as the `seq`-th event of `tenant`.
    pub fn seal(self, tenant: &TenantId, seq: i64, prev_hash: &str, timestamp: DateTime<Utc>) -> AuditEvent {
        let mut event = AuditEvent {
            event_id: crate::ids::new_id(),
            tenant_id: tenant.clone(),
            seq,
            event_type: self.event_type,
            timestamp: crate::truncate_micros(timestamp),
            actor: self.actor,
            resource_type: self.resource_type,
            resource_id: self.resource_id,
            details: self.details,
            prev_hash: prev_hash.to_owned(),
            hash: String::new(),
        };
        event.hash = event.compute_hash();
        event
    }

    /// Seals `events`, in order, after the chain head `(seq, prev_hash)`: each links to the one before it. Empty
    /// for no events; the last one is the new head.
    pub fn seal_all(
        events: Vec<NewAuditEvent>,
        tenant: &TenantId,
        seq: i64,
        prev_hash: &str,
        timestamp: DateTime<Utc>,
    ) -> Vec<AuditEvent> {
        let mut sealed: Vec<AuditEvent> = Vec::with_capacity(events.len());
        for (n, event) in (1..).zip(events) {
            let prev = sealed.last().map_or(prev_hash, |e| e.hash.as_str());
            let e = event.seal(tenant, seq + n, prev, timestamp);
            sealed.push(e);
        }
        sealed
    }
}

/// A sealed audit event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditEvent {
    pub event_id: Uuid,
    #[schema(value_type = String)]
    pub tenant_id: TenantId,
    /// Position in the tenant's chain, from 1.
    pub seq: i64,
    pub event_type: String,
    pub timestamp: DateTime<Utc>,
    pub actor: String,
    pub resource_type: String,
    pub resource_id: String,
    #[schema(value_type = Object)]
    pub details: Value,
    pub prev_hash: String,
    pub hash: String,
}

impl AuditEvent {
    /// The canonical bytes the hash covers (everything but the hashes themselves).
    pub fn canonical(&self) -> String {
        let body = serde_json::json!({
            "event_id": self.event_id.to_string(),
            "tenant_id": self.tenant_id.as_str(),
            "seq": self.seq,
            "event_type": self.event_type,
            "timestamp": crate::format_timestamp(&self.timestamp),
            "actor": self.actor,
            "resource_type": self.resource_type,
            "resource_id": self.resource_id,
            "details": self.details,
        });
        canonical_json(&body)
    }

    pub fn compute_hash(&self) -> String {
        let mut h = Sha256::new();
        h.update(self.prev_hash.as_bytes());
        h.update(self.canonical().as_bytes());
        hex::encode(h.finalize())
    }
}

/// JSON with object keys sorted at every level and no insignificant whitespace, independent of how any crate in
/// the build configured `serde_json`'s map ordering.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::to_string(k).expect("string serialises"));
                out.push(':');
                write_canonical(&map[k.as_str()], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(v, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&serde_json::to_string(scalar).expect("scalar serialises")),
    }
}

/// Where and how a chain is broken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ChainBreak {
    pub seq: i64,
    pub event_id: Uuid,
    /// `hash_mismatch` (the row's content no longer matches its hash), `prev_hash_mismatch` (the row does not link
    /// to the one before it) or `sequence_gap` (a row is missing).
    pub kind: String,
    pub expected: String,
    pub found: String,
}

/// Incremental verifier: feed events in sequence order, in as many batches as convenient.
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    prev_hash: String,
    next_seq: i64,
    checked: u64,
    breaks: Vec<ChainBreak>,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        ChainVerifier { prev_hash: GENESIS_HASH.to_owned(), next_seq: 1, checked: 0, breaks: Vec::new() }
    }
}

impl ChainVerifier {
    pub fn push(&mut self, e: &AuditEvent) {
        self.checked += 1;
        if e.seq != self.next_seq {
            self.breaks.push(ChainBreak {
                seq: e.seq,
                event_id: e.event_id,
                kind: "sequence_gap".into(),
                expected: self.next_seq.to_string(),
                found: e.seq.to_string(),
            });
        }
        if e.prev_hash != self.prev_hash {
            self.breaks.push(ChainBreak {
                seq: e.seq,
                event_id: e.event_id,
                kind: "prev_hash_mismatch".into(),
                expected: self.prev_hash.clone(),
                found: e.prev_hash.clone(),
            });
        }
        let recomputed = e.compute_hash();
        if recomputed != e.hash {
            self.breaks.push(ChainBreak {
                seq: e.seq,
                event_id: e.event_id,
                kind: "hash_mismatch".into(),
                expected: recomputed,
                found: e.hash.clone(),
            });
        }
        // Continue from the stored hash so that one altered row is reported once, not as a cascade.
        self.prev_hash = e.hash.clone();
        self.next_seq = e.seq + 1;
    }

    pub fn events_checked(&self) -> u64 {
        self.checked
    }

    pub fn breaks(&self) -> &[ChainBreak] {
        &self.breaks
    }

    pub fn first_break(&self) -> Option<&ChainBreak> {
        self.breaks.first()
    }
}

/// Verifies that each event's content matches its own hash, for a subset of a chain (a resource's events), where
/// links to neighbours outside the subset cannot be checked.
pub fn verify_each(events: &[AuditEvent]) -> Vec<ChainBreak> {
    events
        .iter()
        .filter_map(|e| {
            let recomputed = e.compute_hash();
            (recomputed != e.hash).then(|| ChainBreak {
                seq: e.seq,
                event_id: e.event_id,
                kind: "hash_mismatch".into(),
                expected: recomputed,
                found: e.hash.clone(),
            })
        })
        .collect()
}

/// Filters for listing audit events.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuditFilter {
    pub event_type: Option<String>,
    pub resource_id: Option<String>,
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chain(n: usize) -> Vec<AuditEvent> {
        let tenant = TenantId::parse("acme").unwrap();
        let mut prev = GENESIS_HASH.to_owned();
        (1..=n as i64)
            .map(|seq| {
                let e = NewAuditEvent::new("TENANT_UPDATED", "admin", "tenant", "acme", json!({"n": seq})).seal(
                    &tenant,
                    seq,
                    &prev,
                    crate::now(),
                );
                prev = e.hash.clone();
                e
            })
            .collect()
    }

    #[test]
    fn events_sealed_together_continue_the_chain_from_its_head() {
        let tenant = TenantId::parse("acme").unwrap();
        let head = chain(3);
        let new = |n: i64| NewAuditEvent::new("TENANT_UPDATED", "admin", "tenant", "acme", json!({"n": n}));
        let last = &head[2];
        let more = NewAuditEvent::seal_all(vec![new(4), new(5)], &tenant, last.seq, &last.hash, crate::now());
        assert_eq!(more.iter().map(|e| e.seq).collect::<Vec<_>>(), [4, 5]);
        let mut v = ChainVerifier::default();
        head.iter().chain(&more).for_each(|e| v.push(e));
        assert_eq!(v.events_checked(), 5);
        assert!(v.breaks().is_empty(), "{:?}", v.breaks());
        assert!(NewAuditEvent::seal_all(Vec::new(), &tenant, 3, &last.hash, crate::now()).is_empty());
    }

    #[test]
    fn intact_chain_verifies() {
        let mut v = ChainVerifier::default();
        chain(5).iter().for_each(|e| v.push(e));
        assert_eq!(v.events_checked(), 5);
        assert!(v.breaks().is_empty());
    }

    #[test]
    fn altered_details_are_found_at_the_altered_row() {
        let mut events = chain(5);
        events[2].details = json!({"n": 999});
        let mut v = ChainVerifier::default();
        events.iter().for_each(|e| v.push(e));
        let first = v.first_break().unwrap();
        assert_eq!((first.seq, first.kind.as_str()), (3, "hash_mismatch"));
        assert_eq!(v.breaks().len(), 1, "one altered row is one break: {:?}", v.breaks());
    }

    #[test]
    fn deleted_row_is_a_gap_and_a_broken_link() {
        let mut events = chain(4);
        events.remove(1);
        let mut v = ChainVerifier::default();
        events.iter().for_each(|e| v.push(e));
        let kinds: Vec<_> = v.breaks().iter().map(|b| (b.seq, b.kind.as_str())).collect();
        assert_eq!(kinds, [(3, "sequence_gap"), (3, "prev_hash_mismatch")]);
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let v = json!({"b": 1, "a": {"z": [ {"y": 1, "x": 2} ], "c": "é"}});
        assert_eq!(canonical_json(&v), r#"{"a":{"c":"é","z":[{"x":2,"y":1}]},"b":1}"#);
    }
}
