//! The [`SignalStore`] port: events (deduplicated per tenant by content hash), feature-set versions, per-entity
//! engine checkpoints and the online feature rows. Implemented by both metadata stores and held to one contract
//! suite (`frostbyte-adapters/tests/signals_contract.rs`).
//!
//! A batch's effects commit together ([`SignalStore::commit_batch`]): the new events, every touched entity's
//! checkpoint (compare-and-set on its revision) and the rows the engine emitted. Either all of it is durable or
//! none is, so a process killed mid-batch resumes from the last checkpoint with no event lost or counted twice,
//! and a concurrent writer shows up as `Conflict`, which the ingest use-case answers by reloading and retrying.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::definition::FeatureSetDef;
use super::engine::{EntityState, FeatureRow};
use super::event::Event;
use crate::audit::NewAuditEvent;
use crate::error::StoreResult;
use crate::ids::TenantId;

/// One stored version of a feature set.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FeatureSetVersion {
    pub name: String,
    /// From 1; a new version is stored only when the definition changes.
    pub version: i32,
    pub definition: FeatureSetDef,
    pub created_at: DateTime<Utc>,
}

/// An accepted event with its dedupe key.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub content_hash: String,
    pub event: Event,
    pub received_at: DateTime<Utc>,
}

/// An entity's checkpoint as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StateRecord {
    pub entity_id: String,
    /// Bumped by every write; the compare-and-set token.
    pub revision: i64,
    pub state: EntityState,
    /// Microseconds, or `None` before the first event.
    pub watermark: Option<i64>,
}

/// A checkpoint to write: inserted when `expected_revision` is `None`, else updated only if the stored revision
/// still equals it (the new revision is `expected + 1`).
#[derive(Debug, Clone, PartialEq)]
pub struct StateWrite {
    pub feature_set: String,
    pub version: i32,
    pub entity_id: String,
    pub expected_revision: Option<i64>,
    pub state: EntityState,
    pub watermark: Option<i64>,
}

/// Everything one ingest batch changes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SignalBatch {
    pub events: Vec<StoredEvent>,
    pub states: Vec<StateWrite>,
    pub rows: Vec<FeatureRow>,
}

/// Where a page of stored events starts: after this `(event_time, sequence, content_hash)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventCursor {
    pub event_time: i64,
    pub sequence: i64,
    pub content_hash: String,
}

/// Events, feature sets, checkpoints and online rows. Tenant first on every method.
#[async_trait]
pub trait SignalStore: Send + Sync + 'static {
    /// Stores `definition` as the next version of `name`, with `audit` (its details gain `version`) in the same
    /// transaction. If it equals the latest version, nothing is written and that version is returned with
    /// `false`. `NotFound` for an unknown tenant.
    async fn put_feature_set(
        &self,
        tenant: &TenantId,
        name: &str,
        definition: &FeatureSetDef,
        audit: NewAuditEvent,
    ) -> StoreResult<(FeatureSetVersion, bool)>;

    /// A version of a feature set (the latest when `version` is `None`).
    async fn get_feature_set(
        &self,
        tenant: &TenantId,
        name: &str,
        version: Option<i32>,
    ) -> StoreResult<Option<FeatureSetVersion>>;

    /// The latest version of each of the tenant's feature sets, by name.
    async fn list_feature_sets(&self, tenant: &TenantId) -> StoreResult<Vec<FeatureSetVersion>>;

    /// Which of `hashes` the tenant already has.
    async fn existing_events(&self, tenant: &TenantId, hashes: &[String]) -> StoreResult<Vec<String>>;

    /// The stored checkpoints of `entities` (missing ones are simply absent).
    async fn load_states(
        &self,
        tenant: &TenantId,
        feature_set: &str,
        version: i32,
        entities: &[String],
    ) -> StoreResult<Vec<StateRecord>>;

    /// Inserts the events, writes the checkpoints and upserts the rows in one transaction. `Conflict` (and
    /// nothing written) if an event is already stored or a checkpoint moved underneath; `NotFound` for an
    /// unknown tenant.
    async fn commit_batch(&self, tenant: &TenantId, batch: &SignalBatch) -> StoreResult<()>;

    /// Upserts rows on `(entity_id, window_end, feature_set, version)` (backfills). Returns how many were written.
    async fn upsert_rows(&self, tenant: &TenantId, rows: &[FeatureRow]) -> StoreResult<u64>;

    /// Stored events with `from ≤ event_time < to` (microseconds), in `(event_time, sequence, content_hash)`
    /// order, after `cursor`, at most `limit`.
    async fn events_page(
        &self,
        tenant: &TenantId,
        from: i64,
        to: i64,
        cursor: Option<&EventCursor>,
        limit: u32,
    ) -> StoreResult<Vec<StoredEvent>>;

    /// An entity's online rows, newest `window_end` first, at most `limit`.
    async fn feature_rows(
        &self,
        tenant: &TenantId,
        feature_set: &str,
        version: i32,
        entity_id: &str,
        limit: u32,
    ) -> StoreResult<Vec<FeatureRow>>;
}

impl StoredEvent {
    pub fn new(event: Event, received_at: DateTime<Utc>) -> StoredEvent {
        StoredEvent { content_hash: event.content_hash(), event, received_at }
    }

    /// This event's position in replay order.
    pub fn cursor(&self) -> EventCursor {
        EventCursor {
            event_time: self.event.event_time_micros(),
            sequence: self.event.sequence.unwrap_or(i64::MIN),
            content_hash: self.content_hash.clone(),
        }
    }
}

/// The offline feature store: an append-only log of emitted rows for training, partitioned by feature set and
/// date. Appends happen after the online commit; a failed append is reported (and can be regenerated with a
/// backfill), never a reason to undo the online write.
#[async_trait]
pub trait OfflineSink: Send + Sync + 'static {
    /// Appends `rows`; returns how many files were written.
    async fn append(&self, tenant: &TenantId, rows: &[FeatureRow]) -> StoreResult<usize>;
}
