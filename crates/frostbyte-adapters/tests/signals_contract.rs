//! The `SignalStore` contract, one suite run against every adapter: SQLite always, PostgreSQL when
//! `FROSTBYTE_TEST_POSTGRES_URL` is set. Events dedupe per tenant, feature sets are versioned and audited, and a
//! batch's events, checkpoints and rows commit together or not at all.

use frostbyte_core::audit::{ChainVerifier, NewAuditEvent};
use frostbyte_core::signals::definition::FeatureSetDef;
use frostbyte_core::signals::engine::EntityState;
use frostbyte_core::signals::event::Event;
use frostbyte_core::signals::store::{SignalBatch, StateWrite, StoredEvent};
use frostbyte_core::signals::{CompiledFeatureSet, Engine, FeatureRow};
use frostbyte_core::{StoreError, TenantId};
use serde_json::json;

#[macro_use]
mod common;

use common::active_tenant as tenant;
use common::*;

contract_tests!(
    feature_sets_are_versioned_and_audited,
    a_batch_commits_events_checkpoints_and_rows_together,
    a_replayed_event_is_a_conflict_and_changes_nothing,
    a_moved_checkpoint_is_a_conflict_and_changes_nothing,
    rows_upsert_on_their_key,
    events_page_in_replay_order,
    other_tenants_signals_are_invisible,
    backfill_replays_into_the_rows_streaming_wrote,
    concurrent_batches_never_double_count,
);

fn def(size: &str) -> FeatureSetDef {
    FeatureSetDef::from_json(json!({
        "allowed_lateness": "10s",
        "windows": [{"name": "m", "type": "tumbling", "size": size, "aggregates": [{"name": "n", "op": "count"}]}]
    }))
    .unwrap()
}

fn audit(name: &str) -> NewAuditEvent {
    NewAuditEvent::new("FEATURE_SET_CREATED", "test", "feature_set", name, json!({"component": "test"}))
}

fn event(entity: &str, secs: i64, v: f64) -> StoredEvent {
    let e = Event::from_json(json!({
        "entity_id": entity,
        "event_time": chrono::DateTime::from_timestamp(1_770_000_000 + secs, 0).unwrap().to_rfc3339(),
        "sequence": secs,
        "payload": {"v": v},
        "source": "test",
    }))
    .unwrap();
    StoredEvent::new(e, frostbyte_core::now())
}

fn row(entity: &str, end: i64, revision: u32, n: u64) -> FeatureRow {
    FeatureRow {
        feature_set: "fs".into(),
        version: 1,
        entity_id: entity.into(),
        window_end: end,
        revision,
        values: json!({"m": {"n": n}}),
    }
}

async fn audit_count(h: &Harness, t: &TenantId) -> u64 {
    let mut v = ChainVerifier::default();
    for e in &h.store.audit_after(t, 0, 1000).await.expect("audit") {
        v.push(e);
    }
    assert!(v.first_break().is_none(), "the chain stays valid");
    v.events_checked()
}

fn state_after(events: &[StoredEvent]) -> EntityState {
    let fs = std::sync::Arc::new(CompiledFeatureSet::compile("fs", 1, &def("1m")));
    let mut engine = Engine::new(fs);
    let mut state = EntityState::default();
    let mut rows = Vec::new();
    for e in events {
        let ev = frostbyte_core::signals::engine::EventRef {
            time: e.event.event_time_micros(),
            sequence: e.event.sequence,
            tie: 0,
            payload: &e.event.payload,
        };
        engine.process(&mut state, &e.event.entity_id, ev, &mut rows);
    }
    state
}

// --- the contract ----------------------------------------------------------------------------------------------

async fn feature_sets_are_versioned_and_audited(h: &Harness) {
    let s = h.signals();
    let t = tenant(h, "sig").await;
    let before = audit_count(h, &t).await;
    let (v1, created) = s.put_feature_set(&t, "fs", &def("1m"), audit("fs")).await.unwrap();
    assert!(created);
    assert_eq!(v1.version, 1);
    assert_eq!(audit_count(h, &t).await, before + 1);
    let (same, created) = s.put_feature_set(&t, "fs", &def("1m"), audit("fs")).await.unwrap();
    assert!(!created, "an unchanged definition is not a new version");
    assert_eq!(same.version, 1);
    assert_eq!(audit_count(h, &t).await, before + 1, "nothing written, nothing audited");
    let (v2, created) = s.put_feature_set(&t, "fs", &def("5m"), audit("fs")).await.unwrap();
    assert!(created);
    assert_eq!(v2.version, 2);
    let events = h.store.audit_after(&t, 0, 1000).await.unwrap();
    assert_eq!(events.last().unwrap().details["version"], json!(2));
    assert_eq!(s.get_feature_set(&t, "fs", None).await.unwrap().unwrap().definition, def("5m"));
    assert_eq!(s.get_feature_set(&t, "fs", Some(1)).await.unwrap().unwrap().definition, def("1m"));
    assert!(s.get_feature_set(&t, "fs", Some(3)).await.unwrap().is_none());
    s.put_feature_set(&t, "other", &def("1h"), audit("other")).await.unwrap();
    let listed: Vec<(String, i32)> =
        s.list_feature_sets(&t).await.unwrap().into_iter().map(|v| (v.name, v.version)).collect();
    assert_eq!(listed, vec![("fs".to_string(), 2), ("other".to_string(), 1)]);
    let ghost = TenantId::parse("ghost-tenant").unwrap();
    assert!(matches!(
        s.put_feature_set(&ghost, "fs", &def("1m"), audit("fs")).await,
        Err(StoreError::NotFound { resource: "tenant" })
    ));
}

async fn a_batch_commits_events_checkpoints_and_rows_together(h: &Harness) {
    let s = h.signals();
    let t = tenant(h, "sig").await;
    let events = vec![event("dev-1", 0, 1.0), event("dev-1", 70, 2.0), event("dev-2", 5, 3.0)];
    let batch = SignalBatch {
        events: events.clone(),
        states: vec![StateWrite {
            feature_set: "fs".into(),
            version: 1,
            entity_id: "dev-1".into(),
            expected_revision: None,
            state: state_after(&events[..2]),
            watermark: Some(42),
        }],
        // The same key twice in one batch: the last one wins.
        rows: vec![row("dev-1", 60, 0, 1), row("dev-1", 60, 1, 2), row("dev-1", 120, 0, 1)],
    };
    s.commit_batch(&t, &batch).await.unwrap();
    let hashes: Vec<String> = events.iter().map(|e| e.content_hash.clone()).chain(["f".repeat(64)]).collect();
    let mut existing = s.existing_events(&t, &hashes).await.unwrap();
    existing.sort();
    let mut want: Vec<String> = events.iter().map(|e| e.content_hash.clone()).collect();
    want.sort();
    assert_eq!(existing, want);
    let states = s.load_states(&t, "fs", 1, &["dev-1".into(), "dev-2".into()]).await.unwrap();
    assert_eq!(states.len(), 1);
    assert_eq!(states[0].revision, 1);
    assert_eq!(states[0].watermark, Some(42));
    assert_eq!(states[0].state, state_after(&events[..2]), "the checkpoint restores exactly");
    let rows = s.feature_rows(&t, "fs", 1, "dev-1", 10).await.unwrap();
    assert_eq!(rows, vec![row("dev-1", 120, 0, 1), row("dev-1", 60, 1, 2)]);
    // The next batch updates the checkpoint by compare-and-set.
    let more = SignalBatch {
        events: vec![event("dev-1", 130, 4.0)],
        states: vec![StateWrite {
            feature_set: "fs".into(),
            version: 1,
            entity_id: "dev-1".into(),
            expected_revision: Some(1),
            state: EntityState::default(),
            watermark: Some(120),
        }],
        rows: vec![],
    };
    s.commit_batch(&t, &more).await.unwrap();
    let states = s.load_states(&t, "fs", 1, &["dev-1".into()]).await.unwrap();
    assert_eq!((states[0].revision, states[0].watermark), (2, Some(120)));
}

async fn a_replayed_event_is_a_conflict_and_changes_nothing(h: &Harness) {
    let s = h.signals();
    let t = tenant(h, "sig").await;
    let first = SignalBatch { events: vec![event("d", 1, 1.0)], states: vec![], rows: vec![row("d", 60, 0, 1)] };
    s.commit_batch(&t, &first).await.unwrap();
    let replay = SignalBatch {
        events: vec![event("d", 2, 2.0), event("d", 1, 1.0)],
        states: vec![],
        rows: vec![row("d", 60, 0, 99)],
    };
    assert!(matches!(s.commit_batch(&t, &replay).await, Err(StoreError::Conflict(_))));
    assert!(s.existing_events(&t, &[event("d", 2, 2.0).content_hash]).await.unwrap().is_empty(), "rolled back");
    assert_eq!(s.feature_rows(&t, "fs", 1, "d", 10).await.unwrap(), vec![row("d", 60, 0, 1)]);
}

async fn a_moved_checkpoint_is_a_conflict_and_changes_nothing(h: &Harness) {
    let s = h.signals();
    let t = tenant(h, "sig").await;
    let write = |expected| StateWrite {
        feature_set: "fs".into(),
        version: 1,
        entity_id: "d".into(),
        expected_revision: expected,
        state: EntityState::default(),
        watermark: None,
    };
    s.commit_batch(&t, &SignalBatch { events: vec![], states: vec![write(None)], rows: vec![] }).await.unwrap();
    // A second writer that also believed the entity was new.
    let stale = SignalBatch { events: vec![event("d", 1, 1.0)], states: vec![write(None)], rows: vec![] };
    assert!(matches!(s.commit_batch(&t, &stale).await, Err(StoreError::Conflict(_))));
    let stale = SignalBatch { events: vec![event("d", 1, 1.0)], states: vec![write(Some(7))], rows: vec![] };
    assert!(matches!(s.commit_batch(&t, &stale).await, Err(StoreError::Conflict(_))));
    assert!(s.existing_events(&t, &[event("d", 1, 1.0).content_hash]).await.unwrap().is_empty());
    let ok = SignalBatch { events: vec![event("d", 1, 1.0)], states: vec![write(Some(1))], rows: vec![] };
    s.commit_batch(&t, &ok).await.unwrap();
}

async fn rows_upsert_on_their_key(h: &Harness) {
    let s = h.signals();
    let t = tenant(h, "sig").await;
    assert_eq!(s.upsert_rows(&t, &[row("d", 60, 0, 1), row("d", 120, 0, 5)]).await.unwrap(), 2);
    s.upsert_rows(&t, &[row("d", 60, 1, 2)]).await.unwrap();
    let mut other_version = row("d", 60, 0, 7);
    other_version.version = 2;
    s.upsert_rows(&t, &[other_version.clone()]).await.unwrap();
    assert_eq!(s.feature_rows(&t, "fs", 1, "d", 10).await.unwrap(), vec![row("d", 120, 0, 5), row("d", 60, 1, 2)]);
    assert_eq!(s.feature_rows(&t, "fs", 2, "d", 10).await.unwrap(), vec![other_version]);
    assert_eq!(s.feature_rows(&t, "fs", 1, "d", 1).await.unwrap().len(), 1);
}

async fn events_page_in_replay_order(h: &Harness) {
    let s = h.signals();
    let t = tenant(h, "sig").await;
    let events: Vec<StoredEvent> = (0..25).rev().map(|i| event(&format!("d{}", i % 3), i * 10, i as f64)).collect();
    s.commit_batch(&t, &SignalBatch { events: events.clone(), states: vec![], rows: vec![] }).await.unwrap();
    let from = (1_770_000_000 + 20) * 1_000_000;
    let to = (1_770_000_000 + 200) * 1_000_000;
    let mut got = Vec::new();
    let mut cursor = None;
    loop {
        let page = s.events_page(&t, from, to, cursor.as_ref(), 4).await.unwrap();
        let Some(last) = page.last() else { break };
        cursor = Some(last.cursor());
        got.extend(page);
    }
    let times: Vec<i64> = got.iter().map(|e| e.event.event_time.timestamp() - 1_770_000_000).collect();
    assert_eq!(times, (2..20).map(|i| i * 10).collect::<Vec<_>>());
    let original = events.iter().find(|e| e.event.event_time == got[0].event.event_time).unwrap();
    assert_eq!(got[0].event, original.event, "events round-trip");
    assert_eq!(got[0].content_hash, got[0].event.content_hash());
}

async fn other_tenants_signals_are_invisible(h: &Harness) {
    let s = h.signals();
    let a = tenant(h, "siga").await;
    let b = tenant(h, "sigb").await;
    s.put_feature_set(&a, "fs", &def("1m"), audit("fs")).await.unwrap();
    let e = event("d", 1, 1.0);
    s.commit_batch(&a, &SignalBatch { events: vec![e.clone()], states: vec![], rows: vec![row("d", 60, 0, 1)] })
        .await
        .unwrap();
    assert!(s.get_feature_set(&b, "fs", None).await.unwrap().is_none());
    assert!(s.list_feature_sets(&b).await.unwrap().is_empty());
    assert!(s.existing_events(&b, std::slice::from_ref(&e.content_hash)).await.unwrap().is_empty());
    assert!(s.feature_rows(&b, "fs", 1, "d", 10).await.unwrap().is_empty());
    assert!(s.events_page(&b, 0, i64::MAX, None, 10).await.unwrap().is_empty());
    // The same event is new for another tenant.
    s.commit_batch(&b, &SignalBatch { events: vec![e], states: vec![], rows: vec![] }).await.unwrap();
}

/// Events for two entities, sent in batches whose arrival order shuffles events within the lateness bound.
fn stream_events() -> Vec<Vec<serde_json::Value>> {
    let mut all = Vec::new();
    for i in 0..240i64 {
        for entity in ["a", "b", "c"] {
            let t = i * 7 + if entity == "b" { 3 } else { 0 };
            // Arrival key: event time plus a delay of at most 9 s (lateness is 10 s).
            let delay = (i * 37 + entity.len() as i64 * 11) % 10;
            all.push((
                t + delay,
                json!({
                    "entity_id": entity,
                    "event_time": chrono::DateTime::from_timestamp(1_770_000_000 + t, 0).unwrap().to_rfc3339(),
                    "payload": {"v": (i % 17) as f64 * 0.5, "k": i % 5},
                    "source": "test",
                }),
            ));
        }
    }
    all.sort_by_key(|(arrival, _)| *arrival);
    let events: Vec<serde_json::Value> = all.into_iter().map(|(_, e)| e).collect();
    events.chunks(50).map(|c| c.to_vec()).collect()
}

fn stream_def() -> serde_json::Value {
    json!({
        "allowed_lateness": "10s",
        "windows": [
            {"name": "m1", "type": "tumbling", "size": "1m", "aggregates": [
                {"name": "n", "op": "count"}, {"name": "sum", "op": "sum", "field": "/v"},
                {"name": "sd", "op": "stddev", "field": "/v"}, {"name": "k", "op": "distinct_count", "field": "/k"}]},
            {"name": "m5", "type": "sliding", "size": "5m", "slide": "1m", "aggregates": [{"name": "max", "op": "max", "field": "/v"}]},
            {"name": "e", "type": "ewma", "field": "/v", "half_life": "2m", "every": "1m"},
            {"name": "z", "type": "zscore", "field": "/v", "size": "10m", "every": "1m"}
        ]
    })
}

async fn online_rows(s: &dyn frostbyte_core::signals::store::SignalStore, t: &TenantId) -> Vec<FeatureRow> {
    let mut rows = Vec::new();
    for entity in ["a", "b", "c"] {
        rows.extend(s.feature_rows(t, "fs", 1, entity, 10_000).await.unwrap());
    }
    rows
}

async fn backfill_replays_into_the_rows_streaming_wrote(h: &Harness) {
    use frostbyte_core::signals::service::{IngestSettings, SignalService};
    let service = SignalService::new(h.signals_arc());
    let t = tenant(h, "sig").await;
    service.put_feature_set(&t, "fs", stream_def(), "test").await.unwrap();
    let settings = IngestSettings { future_horizon_micros: i64::MAX / 2 };
    let mut late = 0;
    for batch in stream_events() {
        let items = batch.into_iter().map(Event::from_json).collect();
        let report = service.ingest(&t, items, settings, frostbyte_core::now()).await.unwrap();
        late += report.late_dropped + report.late_held;
    }
    assert_eq!(late, 0, "every event arrived within the lateness bound");
    let streamed = online_rows(h.signals(), &t).await;
    assert!(streamed.len() > 50, "{} rows", streamed.len());

    let from = chrono::DateTime::from_timestamp(1_770_000_000, 0).unwrap();
    let to = from + chrono::Duration::days(1);
    let (report, replayed) = service.backfill(&t, "fs", from, to, None, true).await.unwrap();
    assert_eq!(report.events_replayed, 720);
    let key = |r: &FeatureRow| (r.entity_id.clone(), r.window_end);
    let mut a = streamed.clone();
    let mut b = replayed.clone();
    a.sort_by_key(key);
    b.sort_by_key(key);
    assert_eq!(a, b, "backfill yields exactly the rows the stream wrote");
    assert_eq!(online_rows(h.signals(), &t).await, streamed, "upserting them again changes nothing");

    // Two workers, each owning the entities of its partition, together write the same rows.
    let mut split = Vec::new();
    for i in 0..2 {
        let (_, rows) = service.backfill(&t, "fs", from, to, Some((i, 2)), true).await.unwrap();
        assert!(rows.iter().all(|r| frostbyte_core::signals::partition::partition_of(&r.entity_id, 2) == i));
        split.extend(rows);
    }
    split.sort_by_key(key);
    assert_eq!(split, a);
}

async fn concurrent_batches_never_double_count(h: &Harness) {
    use frostbyte_core::signals::service::{IngestSettings, SignalService};
    let service = SignalService::new(h.signals_arc());
    let t = tenant(h, "sig").await;
    service.put_feature_set(&t, "fs", stream_def(), "test").await.unwrap();
    let settings = IngestSettings { future_horizon_micros: i64::MAX / 2 };
    let batches = stream_events();
    // Every batch is sent twice, concurrently: one copy is accepted, the other is all duplicates.
    let mut handles = Vec::new();
    for batch in batches.iter().take(6) {
        for _ in 0..2 {
            let service = service.clone();
            let t = t.clone();
            let items: Vec<_> = batch.iter().cloned().map(Event::from_json).collect();
            handles.push(tokio::spawn(async move {
                service.ingest(&t, items, settings, frostbyte_core::now()).await.unwrap()
            }));
        }
    }
    let mut accepted = 0;
    let mut duplicates = 0;
    for h in handles {
        let r = h.await.unwrap();
        accepted += r.accepted;
        duplicates += r.duplicates;
    }
    assert_eq!(accepted, 300);
    assert_eq!(duplicates, 300);
    let from = chrono::DateTime::from_timestamp(1_770_000_000, 0).unwrap();
    let mut n = 0;
    let mut cursor = None;
    loop {
        let page = h.signals().events_page(&t, from.timestamp_micros(), i64::MAX, cursor.as_ref(), 1000).await.unwrap();
        let Some(last) = page.last() else { break };
        cursor = Some(last.cursor());
        n += page.len();
    }
    assert_eq!(n, 300);
}
