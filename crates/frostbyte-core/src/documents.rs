//! Documents as the pipeline tracks them: what intake received (receipt, filename, type, size, raw sha256,
//! tenant metadata), where the document is in its life (`status`), and a per-stage status
//! (`stages{intake, parse, policy, embed, index}`), plus the [`DocumentStore`] port the metadata stores implement.
//!
//! Every write takes the audit event recording it and, where the write hands work on, the next stage's job, and
//! commits all of them in one transaction (DESIGN.md §2.3–2.4): a document never exists without its parse job,
//! and a stage is never marked done without the job that continues the pipeline.
//!
//! Nothing here holds document text: the canonical document lives in the blob store, chunks in the chunk index.

use std::collections::HashMap;
use std::fmt;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::audit::NewAuditEvent;
use crate::error::StoreResult;
use crate::ids::TenantId;
use crate::index::IndexedChunk;
use crate::lifecycle::{
    DocumentErasure, DocumentResidue, DocumentTombstone, ErasureAudit, PurgeAudit, ReplacementContent,
    TenantDocumentRows,
};
use crate::page::{Page, PageRequest};
use crate::queue::NewJob;

/// Where a document is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DocumentStatus {
    /// Accepted by intake, waiting for (or in) the pipeline.
    Processing,
    /// Every stage done; its chunks are searchable.
    Indexed,
    /// Policy blocked it (PII under `block`); nothing is indexed.
    Quarantined,
    /// A stage failed for good (dead-lettered or a permanent error).
    Failed,
}

impl DocumentStatus {
    pub const ALL: [DocumentStatus; 4] =
        [DocumentStatus::Processing, DocumentStatus::Indexed, DocumentStatus::Quarantined, DocumentStatus::Failed];

    pub fn as_str(self) -> &'static str {
        match self {
            DocumentStatus::Processing => "processing",
            DocumentStatus::Indexed => "indexed",
            DocumentStatus::Quarantined => "quarantined",
            DocumentStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<DocumentStatus> {
        DocumentStatus::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

impl fmt::Display for DocumentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The stages a document's record tracks (the API's `stages{intake,parse,policy,embed,index}`). Chunking is part
/// of `embed` here: chunks are made, embedded and indexed by one job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PipelineStage {
    Intake,
    Parse,
    Policy,
    Embed,
    Index,
}

impl PipelineStage {
    pub const ALL: [PipelineStage; 5] = [
        PipelineStage::Intake,
        PipelineStage::Parse,
        PipelineStage::Policy,
        PipelineStage::Embed,
        PipelineStage::Index,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PipelineStage::Intake => "intake",
            PipelineStage::Parse => "parse",
            PipelineStage::Policy => "policy",
            PipelineStage::Embed => "embed",
            PipelineStage::Index => "index",
        }
    }
}

/// One stage's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StageStatus {
    Pending,
    Running,
    Done,
    Failed,
    /// Not run because an earlier stage decided so (a quarantined document is never embedded).
    Skipped,
}

/// Every stage's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DocumentStages {
    pub intake: StageStatus,
    pub parse: StageStatus,
    pub policy: StageStatus,
    pub embed: StageStatus,
    pub index: StageStatus,
}

impl DocumentStages {
    /// A document intake just accepted: intake done, everything else pending.
    pub fn received() -> Self {
        DocumentStages {
            intake: StageStatus::Done,
            parse: StageStatus::Pending,
            policy: StageStatus::Pending,
            embed: StageStatus::Pending,
            index: StageStatus::Pending,
        }
    }

    pub fn get(&self, stage: PipelineStage) -> StageStatus {
        match stage {
            PipelineStage::Intake => self.intake,
            PipelineStage::Parse => self.parse,
            PipelineStage::Policy => self.policy,
            PipelineStage::Embed => self.embed,
            PipelineStage::Index => self.index,
        }
    }

    pub fn set(&mut self, stage: PipelineStage, status: StageStatus) {
        let slot = match stage {
            PipelineStage::Intake => &mut self.intake,
            PipelineStage::Parse => &mut self.parse,
            PipelineStage::Policy => &mut self.policy,
            PipelineStage::Embed => &mut self.embed,
            PipelineStage::Index => &mut self.index,
        };
        *slot = status;
    }

    /// The first stage not yet done (or skipped), if any.
    pub fn current(&self) -> Option<PipelineStage> {
        PipelineStage::ALL.into_iter().find(|s| !matches!(self.get(*s), StageStatus::Done | StageStatus::Skipped))
    }
}

/// A document as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DocumentRecord {
    pub doc_id: Uuid,
    pub receipt_id: Uuid,
    pub original_filename: String,
    /// The sniffed type (what the parser is chosen by), not the one the client declared.
    pub mime_type: String,
    pub size_bytes: u64,
    /// Lowercase hex sha256 of the raw bytes; the raw blob's key is `raw/{raw_sha256}`.
    pub raw_sha256: String,
    /// The tenant's custom metadata (a JSON object).
    pub metadata: Value,
    pub collection: Option<String>,
    pub status: DocumentStatus,
    pub stages: DocumentStages,
    /// What produced the derived data: `parser_version`, `policy_version`, `embed_model`, `chunks`, ... (ids,
    /// versions and counts only).
    pub lineage: Map<String, Value>,
    /// The stable code of the error that failed the document, if it failed.
    pub error_code: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A change to one stage of a document, applied with [`DocumentStore::update_stage`].
#[derive(Debug, Clone, PartialEq)]
pub struct StageUpdate {
    pub stage: PipelineStage,
    pub status: StageStatus,
    /// Other stages to set in the same write (for example `embed` and `index` skipped when policy quarantines).
    pub also: Vec<(PipelineStage, StageStatus)>,
    /// The document's new status, if it changes.
    pub document_status: Option<DocumentStatus>,
    /// Keys merged into the document's lineage.
    pub lineage: Map<String, Value>,
    /// Recorded as the document's `error_code` when set.
    pub error_code: Option<String>,
    /// `(job_id, worker_id)`: completes that job in the same transaction, so the stage's output and its job's
    /// completion commit together. If the job is no longer leased to that worker, nothing is written (`Conflict`).
    pub completes_job: Option<(Uuid, String)>,
}

impl StageUpdate {
    pub fn new(stage: PipelineStage, status: StageStatus) -> Self {
        StageUpdate {
            stage,
            status,
            also: Vec::new(),
            document_status: None,
            lineage: Map::new(),
            error_code: None,
            completes_job: None,
        }
    }

    pub fn also(mut self, stage: PipelineStage, status: StageStatus) -> Self {
        self.also.push((stage, status));
        self
    }

    pub fn document_status(mut self, status: DocumentStatus) -> Self {
        self.document_status = Some(status);
        self
    }

    pub fn lineage(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.lineage.insert(key.to_owned(), value.into());
        self
    }

    pub fn error_code(mut self, code: impl Into<String>) -> Self {
        self.error_code = Some(code.into());
        self
    }

    /// Completes the job leased to `worker_id` in the same transaction (see [`StageUpdate::completes_job`]).
    pub fn completes_job(mut self, job_id: Uuid, worker_id: impl Into<String>) -> Self {
        self.completes_job = Some((job_id, worker_id.into()));
        self
    }

    /// Applies the update to a record (what the stores do inside their transaction).
    pub fn apply_to(&self, doc: &mut DocumentRecord, now: DateTime<Utc>) {
        doc.stages.set(self.stage, self.status);
        for (stage, status) in &self.also {
            doc.stages.set(*stage, *status);
        }
        if let Some(status) = self.document_status {
            doc.status = status;
        }
        for (k, v) in &self.lineage {
            doc.lineage.insert(k.clone(), v.clone());
        }
        if let Some(code) = &self.error_code {
            doc.error_code = Some(code.clone());
        }
        doc.updated_at = now;
    }
}

/// One document's stage transition in a batch applied by [`DocumentStore::apply_stage_writes`]: what
/// [`DocumentStore::update_stage_at`] takes, with any number of audit events and, for the index stage, the
/// document's chunks.
#[derive(Debug, Clone, PartialEq)]
pub struct StageWrite {
    pub doc_id: Uuid,
    /// Applied only while the document is still at this generation.
    pub generation: u64,
    pub update: StageUpdate,
    pub next_job: Option<NewJob>,
    /// Appended in order (findings such as `PII_DETECTED` before the transition's own event).
    pub audit: Vec<NewAuditEvent>,
    /// When set, these replace the document's indexed chunks (rows, vectors and keyword entries) in the same
    /// transaction as the transition.
    pub chunks: Option<Vec<IndexedChunk>>,
}

impl StageWrite {
    pub fn new(doc_id: Uuid, generation: u64, update: StageUpdate, audit: NewAuditEvent) -> Self {
        StageWrite { doc_id, generation, update, next_job: None, audit: vec![audit], chunks: None }
    }

    pub fn next_job(mut self, job: Option<NewJob>) -> Self {
        self.next_job = job;
        self
    }

    /// Appends `event` before the transition's own event.
    pub fn finding(mut self, event: NewAuditEvent) -> Self {
        self.audit.insert(self.audit.len().saturating_sub(1), event);
        self
    }

    pub fn chunks(mut self, chunks: Vec<IndexedChunk>) -> Self {
        self.chunks = Some(chunks);
        self
    }

    /// This write followed by `next`, a later stage of the same document and generation, as one write: both
    /// stages' statuses, the lineage of both, the later document status, error code, next job and chunks where
    /// it sets them, the audit events of this write and then of `next`. The job completed is this write's (a
    /// worker that ran both stages for one job). The two must set different stages.
    pub fn then(mut self, next: StageWrite) -> Self {
        debug_assert_eq!((self.doc_id, self.generation), (next.doc_id, next.generation), "one document's stages");
        let StageWrite { update, next_job, mut audit, chunks, .. } = next;
        let first = &mut self.update;
        debug_assert!(update.completes_job.is_none() || update.completes_job == first.completes_job);
        first.also.push((first.stage, first.status));
        first.also.push((update.stage, update.status));
        first.also.extend(update.also);
        // The later stage leads: it is the transition the write announces.
        first.stage = update.stage;
        first.status = update.status;
        first.document_status = update.document_status.or(first.document_status);
        first.lineage.extend(update.lineage);
        first.error_code = update.error_code.or(first.error_code.take());
        self.next_job = next_job;
        self.audit.append(&mut audit);
        self.chunks = chunks.or(self.chunks);
        self
    }

    /// About how many bytes the write holds in memory: its chunks' text and vectors, their per-chunk fields, and
    /// a fixed share for the row update and events. What a batch of writes is bounded by.
    pub fn weight(&self) -> usize {
        const PER_WRITE: usize = 1 << 10;
        const PER_CHUNK: usize = 256;
        let chunks = self.chunks.as_deref().unwrap_or_default();
        PER_WRITE
            + chunks
                .iter()
                .map(|c| {
                    PER_CHUNK
                        + c.text.len()
                        + c.vector.len() * std::mem::size_of::<f32>()
                        + c.heading_path.iter().map(String::len).sum::<usize>()
                        + c.original_filename.len()
                })
                .sum::<usize>()
    }
}

/// The blob key of a document's raw bytes (content-addressed, so identical uploads share one object).
pub fn raw_blob_key(sha256: &str) -> String {
    format!("raw/{sha256}")
}

/// The blob key of a document's canonical JSON.
pub fn canonical_blob_key(doc_id: &Uuid) -> String {
    format!("canonical/{doc_id}.json")
}

/// Documents, implemented by both metadata stores. Tenant first on every method; another tenant's document is
/// `None` / `NotFound`, never visible.
#[async_trait]
pub trait DocumentStore: Send + Sync + 'static {
    /// Inserts the document, its first job and the audit event recording it, in one transaction. `NotFound` for
    /// an unknown tenant; `AlreadyExists` for a taken doc or receipt id.
    async fn create_document(
        &self,
        tenant: &TenantId,
        doc: &DocumentRecord,
        first_job: NewJob,
        audit: NewAuditEvent,
    ) -> StoreResult<()> {
        self.create_documents(tenant, vec![(doc.clone(), first_job, audit)]).await
    }
    /// [`DocumentStore::create_document`] for several documents in one transaction: all of them or, on any error,
    /// none. Their audit events are appended in order.
    async fn create_documents(
        &self,
        tenant: &TenantId,
        documents: Vec<(DocumentRecord, NewJob, NewAuditEvent)>,
    ) -> StoreResult<()>;
    async fn get_document(&self, tenant: &TenantId, doc_id: Uuid) -> StoreResult<Option<DocumentRecord>>;
    async fn get_by_receipt(&self, tenant: &TenantId, receipt_id: Uuid) -> StoreResult<Option<DocumentRecord>>;
    /// Applies `update`, enqueues `next_job` (if any), completes `update.completes_job` (if any) and appends
    /// `audit`, in one transaction; returns the updated record. `NotFound` if the document does not exist;
    /// `Conflict`, with nothing written, if the job to complete is no longer leased to that worker.
    async fn update_stage(
        &self,
        tenant: &TenantId,
        doc_id: Uuid,
        update: StageUpdate,
        next_job: Option<NewJob>,
        audit: NewAuditEvent,
    ) -> StoreResult<DocumentRecord>;
    /// The tenant's newest document of each of these filenames that has one, by filename: how `frostbyte ingest`
    /// recognises the files of a group it has already taken in (and, by comparing `raw_sha256`, whether they
    /// changed), with one query for the group.
    async fn newest_by_filename(
        &self,
        tenant: &TenantId,
        filenames: &[String],
    ) -> StoreResult<HashMap<String, DocumentRecord>>;

    // --- lifecycle: replace in place, erasure, tenant purge (see `crate::lifecycle`) ---------------------------
    /// The live document's generation; `None` when there is none (never existed, erased, purged).
    async fn document_generation(&self, tenant: &TenantId, doc_id: Uuid) -> StoreResult<Option<u64>>;
    /// The live documents among `doc_ids`, each with its generation, in one read (a worker admits and settles a
    /// whole batch with it). Absent ids (never existed, erased, purged) are left out; the order is the store's.
    async fn documents_at(&self, tenant: &TenantId, doc_ids: &[Uuid]) -> StoreResult<Vec<(DocumentRecord, u64)>>;
    /// [`DocumentStore::update_stage`], applied only while the document is still at `generation` (checked in the
    /// transaction): `Conflict` once a replacement moved it on, `NotFound` once it was erased.
    async fn update_stage_at(
        &self,
        tenant: &TenantId,
        doc_id: Uuid,
        generation: u64,
        update: StageUpdate,
        next_job: Option<NewJob>,
        audit: NewAuditEvent,
    ) -> StoreResult<DocumentRecord>;
    /// Applies several documents' [`StageWrite`]s in one transaction: a worker's whole batch commits with one
    /// write. Each write is checked and applied on its own, exactly as [`DocumentStore::update_stage_at`] would
    /// (chunks first, then the update, the next job, the job completion and the audit events): one that is
    /// refused (`NotFound`, `Conflict`) writes nothing of its own and leaves the others to commit. The outer error
    /// means nothing was written. Results are in the order of `writes`.
    async fn apply_stage_writes(
        &self,
        tenant: &TenantId,
        writes: Vec<StageWrite>,
    ) -> StoreResult<Vec<StoreResult<DocumentRecord>>>;
    /// Replaces the document's content if it is still at `expected_generation` (compare-and-set): the row takes
    /// `content`, generation + 1, fresh stages (`processing`), an empty lineage and no error; `first_job` and
    /// `audit` commit with it. Returns the new record. `NotFound` if there is no live document, `Conflict` if the
    /// generation moved on.
    async fn replace_content(
        &self,
        tenant: &TenantId,
        doc_id: Uuid,
        expected_generation: u64,
        content: &ReplacementContent,
        first_job: NewJob,
        audit: NewAuditEvent,
    ) -> StoreResult<DocumentRecord>;
    /// Erases the document from the metadata store in one transaction: its chunks (vectors and keyword entries
    /// with them), its jobs that are not running, and its row, which becomes a tombstone; the audit event built
    /// from what was removed commits with them. `None` (nothing written) if there is no live document.
    async fn erase_document(
        &self,
        tenant: &TenantId,
        doc_id: Uuid,
        audit: ErasureAudit,
    ) -> StoreResult<Option<DocumentErasure>>;
    async fn get_tombstone(&self, tenant: &TenantId, doc_id: Uuid) -> StoreResult<Option<DocumentTombstone>>;
    /// How many live documents of the tenant reference the raw blob `raw/{sha256}`.
    async fn raw_references(&self, tenant: &TenantId, sha256: &str) -> StoreResult<u64>;
    /// What the store still holds of a document (for the erasure's verification sweep).
    async fn document_residue(&self, tenant: &TenantId, doc_id: Uuid) -> StoreResult<DocumentResidue>;
    /// Removes every document, tombstone, chunk and job (dead letters included) of the tenant in one transaction
    /// with the audit event built from the counts. Idempotent; the tenant row and its audit chain stay.
    async fn purge_tenant(&self, tenant: &TenantId, audit: PurgeAudit) -> StoreResult<TenantDocumentRows>;
    /// The tenant's rows left in those tables.
    async fn tenant_residue(&self, tenant: &TenantId) -> StoreResult<TenantDocumentRows>;
    /// A page of the tenant's documents, newest first (ties by doc id), only those with `status` and in
    /// `collection` when given; `total` counts every match.
    async fn list_documents(
        &self,
        tenant: &TenantId,
        status: Option<DocumentStatus>,
        collection: Option<&str>,
        page: PageRequest,
    ) -> StoreResult<Page<DocumentRecord>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_writes_weight_grows_with_its_chunks_text_and_vectors() {
        let chunk = |text: &str, dim: usize| IndexedChunk {
            chunk_id: "c".into(),
            doc_id: "d".into(),
            position: 0,
            text: text.into(),
            start: 0,
            end: 0,
            page_start: None,
            page_end: None,
            heading_path: vec!["Intro".into()],
            kind: "text".into(),
            text_hash: String::new(),
            classification: None,
            collection: None,
            metadata: serde_json::json!({}),
            quarantined: false,
            embed_model: "m".into(),
            vector: vec![0.0; dim],
            source_sha256: String::new(),
            original_filename: "a.txt".into(),
            ingested_at: crate::now(),
        };
        let update = StageUpdate::new(PipelineStage::Index, StageStatus::Done);
        let audit = NewAuditEvent::new("INDEX_WRITTEN", "t", "document", "d", serde_json::json!({}));
        let bare = StageWrite::new(Uuid::nil(), 1, update, audit);
        let small = bare.clone().chunks(vec![chunk("short", 4)]);
        let large = bare.clone().chunks(vec![chunk(&"x".repeat(10_000), 384); 100]);
        assert!(bare.weight() < small.weight() && small.weight() < large.weight());
        // Text and vectors of every chunk are counted in full.
        assert!(large.weight() >= 100 * (10_000 + 384 * 4), "{}", large.weight());
    }

    #[test]
    fn chained_writes_apply_as_the_stages_would_one_after_the_other() {
        let (doc_id, job) = (Uuid::now_v7(), Uuid::now_v7());
        let audit = |kind: &str| NewAuditEvent::new(kind, "t", "document", "d", serde_json::json!({}));
        let next = |stage| crate::lifecycle::stage_job(stage, doc_id, 1);
        let parsed = StageWrite::new(
            doc_id,
            1,
            StageUpdate::new(PipelineStage::Parse, StageStatus::Done)
                .lineage("pages", 1)
                .lineage("parser_version", "text@1")
                .completes_job(job, "w"),
            audit("DOCUMENT_PARSED"),
        )
        .next_job(Some(next(crate::queue::Stage::Policy)));
        let blocked = StageWrite::new(
            doc_id,
            1,
            StageUpdate::new(PipelineStage::Policy, StageStatus::Done)
                .also(PipelineStage::Embed, StageStatus::Skipped)
                .also(PipelineStage::Index, StageStatus::Skipped)
                .document_status(DocumentStatus::Quarantined)
                .lineage("pages", 2)
                .completes_job(job, "w"),
            audit("POLICY_GATE_FAILED"),
        )
        .finding(audit("PII_DETECTED"));

        let chained = parsed.clone().then(blocked.clone());
        assert_eq!(chained.next_job, None, "the later stage queues nothing");
        assert_eq!(chained.update.completes_job, Some((job, "w".to_owned())));
        let kinds: Vec<&str> = chained.audit.iter().map(|e| e.event_type.as_str()).collect();
        assert_eq!(kinds, ["DOCUMENT_PARSED", "PII_DETECTED", "POLICY_GATE_FAILED"]);
        assert_eq!(chained.update.stage, PipelineStage::Policy, "the later transition leads");

        // Applied at once, the record ends where the two writes applied in turn leave it.
        let now = crate::now();
        let record = || DocumentRecord {
            doc_id,
            receipt_id: Uuid::nil(),
            original_filename: "a.txt".into(),
            mime_type: "text/plain".into(),
            size_bytes: 1,
            raw_sha256: String::new(),
            metadata: serde_json::json!({}),
            collection: None,
            status: DocumentStatus::Processing,
            stages: DocumentStages::received(),
            lineage: Map::new(),
            error_code: None,
            created_at: now,
            updated_at: now,
        };
        let (mut once, mut twice) = (record(), record());
        chained.update.apply_to(&mut once, now);
        parsed.update.apply_to(&mut twice, now);
        blocked.update.apply_to(&mut twice, now);
        assert_eq!(once, twice);
        assert_eq!(once.status, DocumentStatus::Quarantined);
        assert_eq!(once.lineage["pages"], 2, "later lineage wins");
        assert_eq!(once.lineage["parser_version"], "text@1");
        assert_eq!(once.stages.get(PipelineStage::Parse), StageStatus::Done);
        assert_eq!(once.stages.get(PipelineStage::Index), StageStatus::Skipped);

        // A later write that queues a job keeps it.
        let policed = StageWrite::new(
            doc_id,
            1,
            StageUpdate::new(PipelineStage::Policy, StageStatus::Done),
            audit("POLICY_GATE_PASSED"),
        )
        .next_job(Some(next(crate::queue::Stage::Index)));
        assert_eq!(parsed.then(policed).next_job, Some(next(crate::queue::Stage::Index)));
    }

    #[test]
    fn stages_serialise_by_name_and_report_the_current_stage() {
        let mut s = DocumentStages::received();
        assert_eq!(s.current(), Some(PipelineStage::Parse));
        let v = serde_json::to_value(s).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"intake":"done","parse":"pending","policy":"pending","embed":"pending","index":"pending"})
        );
        for st in PipelineStage::ALL {
            s.set(st, StageStatus::Done);
        }
        assert_eq!(s.current(), None);
        assert_eq!(DocumentStatus::parse("indexed"), Some(DocumentStatus::Indexed));
    }
}
