//! The signal use-cases shared by the HTTP API, the CLI and the stream consumer: define a feature set, ingest a
//! batch of events, read an entity's latest features, and backfill.
//!
//! **Ingest** (one batch, effectively once): validate each event (errors carry the event's index), refuse those
//! beyond the future horizon, drop in-batch repeats, ask the store which are already stored (duplicates change
//! nothing), then run the new ones in arrival order through every feature set of the tenant starting from each
//! touched entity's checkpoint, and commit events, checkpoints and rows together. If the commit meets a concurrent
//! writer (`Conflict`) the whole batch is recomputed from fresh checkpoints, so nothing is lost or counted twice.
//!
//! **Backfill** replays stored events in `(event_time, sequence, content_hash)` order through a fresh engine and
//! upserts the rows: the same code as the stream, so the same rows. Entities can be split across workers with
//! [`partition_of`](super::partition::partition_of).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;

use super::definition::FeatureSetDef;
use super::engine::{CompiledFeatureSet, Engine, EntityState, EventRef, FeatureRow, Outcome};
use super::event::{Event, EventError, hash_tie};
use super::partition::partition_of;
use super::store::{EventCursor, FeatureSetVersion, OfflineSink, SignalBatch, SignalStore, StateWrite, StoredEvent};
use crate::audit::NewAuditEvent;
use crate::error::{StoreError, StoreResult};
use crate::ids::TenantId;
use crate::tenant::FieldViolation;

/// How many times a batch is recomputed after meeting a concurrent writer.
const MAX_ATTEMPTS: usize = 32;
/// Events read per page during a backfill.
const BACKFILL_PAGE: u32 = 5_000;

/// A failure of a signal use-case.
#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    #[error("invalid input")]
    Invalid(Vec<FieldViolation>),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Ingest limits.
#[derive(Debug, Clone, Copy)]
pub struct IngestSettings {
    /// Events stamped more than this after `now` are refused (`FUTURE_EVENT`).
    pub future_horizon_micros: i64,
}

/// One refused event.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct IndexedError {
    /// Position in the request (0-based array index or NDJSON line).
    pub index: usize,
    pub reason: &'static str,
    pub message: String,
}

/// Per feature set: what the batch did to it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct FeatureSetStats {
    pub feature_set: String,
    pub version: i32,
    pub late_dropped: u64,
    pub late_held: u64,
    pub late_corrected: u64,
    pub rows_emitted: u64,
    /// The lowest watermark among the entities this batch touched (microseconds), for lag metrics.
    #[serde(skip)]
    pub min_watermark: Option<i64>,
}

/// The answer to an ingest: `{accepted, duplicates, late_dropped, late_held}` plus detail. Late counts are
/// summed over feature sets (an event late for two feature sets counts twice).
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct IngestReport {
    /// New events stored.
    pub accepted: u64,
    /// Events already stored (or repeated within the batch): nothing changed.
    pub duplicates: u64,
    pub late_dropped: u64,
    pub late_held: u64,
    pub late_corrected: u64,
    /// Events refused, listed in `errors`.
    pub rejected: u64,
    pub rows_emitted: u64,
    pub errors: Vec<IndexedError>,
    pub feature_sets: Vec<FeatureSetStats>,
    /// Set when the rows were committed online but the offline append failed (a backfill rewrites them). Logged
    /// by the caller, never sent to clients.
    #[serde(skip)]
    pub offline_error: Option<String>,
}

/// An entity's latest value of one window.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct WindowValue {
    pub window: String,
    pub window_end: DateTime<Utc>,
    pub revision: u32,
    #[schema(value_type = Object)]
    pub values: serde_json::Value,
}

/// `GET …/features/{name}/{entity_id}`.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct FeatureView {
    pub feature_set: String,
    pub version: i32,
    pub entity_id: String,
    /// `max event time − allowed_lateness`; windows ending at or before it are final (unless corrected).
    pub watermark: Option<DateTime<Utc>>,
    pub max_event_time: Option<DateTime<Utc>>,
    /// The latest value of each window, in definition order.
    pub windows: Vec<WindowValue>,
}

/// What a backfill did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct BackfillReport {
    pub feature_set: String,
    pub version: i32,
    pub events_read: u64,
    pub events_replayed: u64,
    pub rows_written: u64,
    pub entities: u64,
}

fn micros_to_time(us: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_micros(us)
}

/// The signal use-cases over a [`SignalStore`].
#[derive(Clone)]
pub struct SignalService {
    store: Arc<dyn SignalStore>,
    offline: Option<Arc<dyn OfflineSink>>,
}

impl SignalService {
    pub fn new(store: Arc<dyn SignalStore>) -> Self {
        SignalService { store, offline: None }
    }

    /// Also appends every emitted row to an offline store.
    pub fn with_offline(mut self, offline: Arc<dyn OfflineSink>) -> Self {
        self.offline = Some(offline);
        self
    }

    /// Appends rows to the offline store, if there is one. Failures are returned in the report, not raised: the
    /// online rows are already committed and a backfill regenerates the offline files.
    async fn append_offline(&self, tenant: &TenantId, rows: &[FeatureRow]) -> Option<String> {
        let offline = self.offline.as_ref()?;
        if rows.is_empty() {
            return None;
        }
        offline.append(tenant, rows).await.err().map(|e| e.to_string())
    }

    pub fn store(&self) -> &Arc<dyn SignalStore> {
        &self.store
    }

    /// Validates and stores a feature set (a new version only if it changed), audited as
    /// `FEATURE_SET_CREATED` (version 1) or `FEATURE_SET_UPDATED`.
    pub async fn put_feature_set(
        &self,
        tenant: &TenantId,
        name: &str,
        definition: serde_json::Value,
        actor: &str,
    ) -> Result<(FeatureSetVersion, bool), SignalError> {
        if !super::definition::valid_name(name) {
            return Err(SignalError::Invalid(vec![FieldViolation::new(
                "name",
                name.chars().take(80).collect::<String>(),
                "a lowercase name ([a-z][a-z0-9_-]{0,63})",
            )]));
        }
        let def = FeatureSetDef::from_json(definition).map_err(SignalError::Invalid)?;
        let existing = self.store.get_feature_set(tenant, name, None).await?;
        let event_type = if existing.is_some() { "FEATURE_SET_UPDATED" } else { "FEATURE_SET_CREATED" };
        let canonical = crate::audit::canonical_json(&serde_json::to_value(&def).unwrap_or_default());
        let definition_hash = {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(canonical.as_bytes()))
        };
        let audit = NewAuditEvent::new(
            event_type,
            actor,
            "feature_set",
            name,
            json!({
                "component": "signals",
                "status": "ok",
                "windows": def.windows.len(),
                "late_policy": def.late_policy.as_str(),
                "definition_hash": definition_hash,
            }),
        );
        Ok(self.store.put_feature_set(tenant, name, &def, audit).await?)
    }

    pub async fn get_feature_set(
        &self,
        tenant: &TenantId,
        name: &str,
        version: Option<i32>,
    ) -> Result<FeatureSetVersion, SignalError> {
        self.store.get_feature_set(tenant, name, version).await?.ok_or(SignalError::NotFound("feature set"))
    }

    /// Ingests one batch; `items` are the decoded events in arrival order (or why each could not be decoded).
    pub async fn ingest(
        &self,
        tenant: &TenantId,
        items: Vec<Result<Event, EventError>>,
        settings: IngestSettings,
        now: DateTime<Utc>,
    ) -> Result<IngestReport, SignalError> {
        let mut report = IngestReport::default();
        let mut seen = HashSet::new();
        let mut fresh: Vec<StoredEvent> = Vec::new();
        for (index, item) in items.into_iter().enumerate() {
            let checked = item.and_then(|e| e.check_horizon(now, settings.future_horizon_micros).map(|()| e));
            match checked {
                Err(e) => report.errors.push(IndexedError { index, reason: e.reason, message: e.message }),
                Ok(event) => {
                    let stored = StoredEvent::new(event, now);
                    if seen.insert(stored.content_hash.clone()) {
                        fresh.push(stored);
                    } else {
                        report.duplicates += 1;
                    }
                }
            }
        }
        report.rejected = report.errors.len() as u64;
        if fresh.is_empty() {
            return Ok(report);
        }
        let sets = self.compiled_sets(tenant).await?;
        let mut last_conflict = None;
        for _ in 0..MAX_ATTEMPTS {
            let hashes: Vec<String> = fresh.iter().map(|e| e.content_hash.clone()).collect();
            let existing: HashSet<String> = self.store.existing_events(tenant, &hashes).await?.into_iter().collect();
            let new_events: Vec<StoredEvent> =
                fresh.iter().filter(|e| !existing.contains(&e.content_hash)).cloned().collect();
            let (batch, stats) = self.run_batch(tenant, &sets, new_events).await?;
            match self.store.commit_batch(tenant, &batch).await {
                Ok(()) => {
                    report.accepted = batch.events.len() as u64;
                    report.duplicates += existing.len() as u64;
                    report.rows_emitted = batch.rows.len() as u64;
                    for s in &stats {
                        report.late_dropped += s.late_dropped;
                        report.late_held += s.late_held;
                        report.late_corrected += s.late_corrected;
                    }
                    report.feature_sets = stats;
                    report.offline_error = self.append_offline(tenant, &batch.rows).await;
                    return Ok(report);
                }
                Err(StoreError::Conflict(m)) => last_conflict = Some(m),
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Unavailable(format!(
            "signal batch kept meeting concurrent writers: {}",
            last_conflict.unwrap_or_default()
        ))
        .into())
    }

    async fn compiled_sets(&self, tenant: &TenantId) -> StoreResult<Vec<Arc<CompiledFeatureSet>>> {
        Ok(self
            .store
            .list_feature_sets(tenant)
            .await?
            .iter()
            .map(|v| Arc::new(CompiledFeatureSet::compile(&v.name, v.version, &v.definition)))
            .collect())
    }

    /// Runs `events` through every feature set from the stored checkpoints.
    async fn run_batch(
        &self,
        tenant: &TenantId,
        sets: &[Arc<CompiledFeatureSet>],
        events: Vec<StoredEvent>,
    ) -> StoreResult<(SignalBatch, Vec<FeatureSetStats>)> {
        let mut batch = SignalBatch::default();
        let mut stats = Vec::new();
        let mut entities: Vec<String> = events.iter().map(|e| e.event.entity_id.clone()).collect();
        entities.sort();
        entities.dedup();
        for fs in sets {
            let stored = self.store.load_states(tenant, &fs.name, fs.version, &entities).await?;
            let mut states: HashMap<String, (Option<i64>, EntityState)> =
                stored.into_iter().map(|r| (r.entity_id, (Some(r.revision), r.state))).collect();
            let mut engine = Engine::new(Arc::clone(fs));
            let mut s = FeatureSetStats { feature_set: fs.name.clone(), version: fs.version, ..Default::default() };
            let before = batch.rows.len();
            for e in &events {
                let (_, state) =
                    states.entry(e.event.entity_id.clone()).or_insert_with(|| (None, EntityState::default()));
                let ev = EventRef {
                    time: e.event.event_time_micros(),
                    sequence: e.event.sequence,
                    tie: hash_tie(&e.content_hash),
                    payload: &e.event.payload,
                };
                match engine.process(state, &e.event.entity_id, ev, &mut batch.rows) {
                    Outcome::LateDropped => s.late_dropped += 1,
                    Outcome::LateHeld => s.late_held += 1,
                    Outcome::LateCorrected => s.late_corrected += 1,
                    Outcome::Applied | Outcome::Filtered => {}
                }
            }
            s.rows_emitted = (batch.rows.len() - before) as u64;
            for entity in &entities {
                if let Some((expected, state)) = states.remove(entity) {
                    let watermark = state.watermark(fs);
                    s.min_watermark = match (s.min_watermark, watermark) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                    batch.states.push(StateWrite {
                        feature_set: fs.name.clone(),
                        version: fs.version,
                        entity_id: entity.clone(),
                        expected_revision: expected,
                        state,
                        watermark,
                    });
                }
            }
            stats.push(s);
        }
        batch.events = events;
        Ok((batch, stats))
    }

    /// The latest value of each window of an entity, with its watermark.
    pub async fn features(&self, tenant: &TenantId, name: &str, entity_id: &str) -> Result<FeatureView, SignalError> {
        let fs = self.get_feature_set(tenant, name, None).await?;
        let compiled = CompiledFeatureSet::compile(&fs.name, fs.version, &fs.definition);
        let state = self.store.load_states(tenant, name, fs.version, &[entity_id.to_owned()]).await?.into_iter().next();
        let rows = self.store.feature_rows(tenant, name, fs.version, entity_id, 500).await?;
        if state.is_none() && rows.is_empty() {
            return Err(SignalError::NotFound("entity"));
        }
        let mut latest: BTreeMap<&str, WindowValue> = BTreeMap::new();
        for row in &rows {
            let Some(values) = row.values.as_object() else { continue };
            for (window, v) in values {
                if !latest.contains_key(window.as_str())
                    && let Some(end) = micros_to_time(row.window_end)
                {
                    latest.insert(
                        window.as_str(),
                        WindowValue {
                            window: window.clone(),
                            window_end: end,
                            revision: row.revision,
                            values: v.clone(),
                        },
                    );
                }
            }
        }
        let windows =
            fs.definition.windows.iter().filter_map(|w| latest.get(w.name.as_str()).cloned()).collect::<Vec<_>>();
        Ok(FeatureView {
            feature_set: fs.name,
            version: fs.version,
            entity_id: entity_id.to_owned(),
            watermark: state.as_ref().and_then(|s| s.state.watermark(&compiled)).and_then(micros_to_time),
            max_event_time: state.as_ref().and_then(|s| s.state.max_event_time()).and_then(micros_to_time),
            windows,
        })
    }

    /// Replays the tenant's stored events with `from ≤ event_time < to` through a fresh engine for the latest
    /// version of `name`, upserting the rows. With `partition = Some((i, n))` only entities in partition `i` of
    /// `n` are replayed, so `n` workers can share a backfill. Returns the rows as well when `collect` is set.
    pub async fn backfill(
        &self,
        tenant: &TenantId,
        name: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        partition: Option<(u32, u32)>,
        collect: bool,
    ) -> Result<(BackfillReport, Vec<FeatureRow>), SignalError> {
        if from >= to {
            return Err(SignalError::Invalid(vec![FieldViolation::new(
                "to",
                crate::format_timestamp(&to),
                "after from",
            )]));
        }
        let fs = self.get_feature_set(tenant, name, None).await?;
        let compiled = Arc::new(CompiledFeatureSet::compile(&fs.name, fs.version, &fs.definition));
        let mut engine = Engine::new(Arc::clone(&compiled));
        let mut states: HashMap<String, EntityState> = HashMap::new();
        let mut report = BackfillReport { feature_set: fs.name.clone(), version: fs.version, ..Default::default() };
        let mut cursor: Option<EventCursor> = None;
        let mut rows = Vec::new();
        let mut kept = Vec::new();
        loop {
            let page = self
                .store
                .events_page(tenant, from.timestamp_micros(), to.timestamp_micros(), cursor.as_ref(), BACKFILL_PAGE)
                .await?;
            let Some(last) = page.last() else { break };
            cursor = Some(last.cursor());
            report.events_read += page.len() as u64;
            for e in &page {
                if let Some((i, n)) = partition
                    && partition_of(&e.event.entity_id, n) != i
                {
                    continue;
                }
                report.events_replayed += 1;
                let state = states.entry(e.event.entity_id.clone()).or_default();
                let ev = EventRef {
                    time: e.event.event_time_micros(),
                    sequence: e.event.sequence,
                    tie: hash_tie(&e.content_hash),
                    payload: &e.event.payload,
                };
                engine.process(state, &e.event.entity_id, ev, &mut rows);
            }
            if !rows.is_empty() {
                report.rows_written += self.store.upsert_rows(tenant, &rows).await?;
                if let Some(offline) = &self.offline {
                    offline.append(tenant, &rows).await?;
                }
                if collect {
                    kept.append(&mut rows);
                } else {
                    rows.clear();
                }
            }
            if page.len() < BACKFILL_PAGE as usize {
                break;
            }
        }
        report.entities = states.len() as u64;
        Ok((report, kept))
    }
}
