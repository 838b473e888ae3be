//! The document pipeline's workers: claim one job, run its stage, record the stage on the document.
//!
//! - `parse`: raw bytes (`raw/{sha256}`) → [`parse`] on a blocking thread → canonical JSON at
//!   `canonical/{doc_id}.json` → stage done + the `policy` job, in one transaction.
//! - `policy`: [`apply_policy`] on every block's text ([`CanonicalDocument::try_map_text`]); the policed document
//!   is saved at `policed/{doc_id}.json`. PII under `block` quarantines the document (embed and index skipped);
//!   otherwise stage done + the `index` job.
//! - `index`: chunk the policed document → embed ([`HashEmbedder`]) → [`assess_chunk`] per chunk (injection
//!   quarantine) → [`ChunkIndex::replace_document_chunks`] → `embed` and `index` done, document `indexed`.
//!
//! A job works for one document generation (`frostbyte_core::lifecycle`): its blobs are keyed by it and its
//! writes commit only while the document is still at it, so erased documents are never resurrected and a
//! replaced document's old jobs never overwrite the new version.
//!
//! Every stage is idempotent (fixed blob keys, deterministic chunk ids, dedupe keys on the next job), so a job
//! delivered twice converges. Failures become [`JobError`]s with stable codes and messages made of ids and
//! counts, never document text; a permanent error (or the last attempt of a retryable one) also marks the
//! document `failed` with that code.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use frostbyte_adapters::parse::{ParseLimits, parse};
use frostbyte_core::TenantId;
use frostbyte_core::audit::NewAuditEvent;
use frostbyte_core::chunk::{ChunkConfig, chunk_document};
use frostbyte_core::document::CanonicalDocument;
use frostbyte_core::documents::{
    DocumentRecord, DocumentStatus, DocumentStore, PipelineStage, StageStatus, StageUpdate, raw_blob_key,
};
use frostbyte_core::embed::HashEmbedder;
use frostbyte_core::index::{ChunkIndex, IndexedChunk};
use frostbyte_core::lifecycle::{canonical_key, policed_key, stage_job};
use frostbyte_core::policy::{apply_policy, assess_chunk};
use frostbyte_core::ports::{BlobStore, MetadataStore};
use frostbyte_core::queue::{self, ClaimOptions, Job, JobError, JobQueue, RetryPolicy, RunOnce, Stage};
use frostbyte_core::tenant::TenantConfig;
use serde_json::json;
use uuid::Uuid;

/// The actor of pipeline audit events.
const ACTOR: &str = "system:pipeline";

/// The stages these workers take.
pub const STAGES: [Stage; 3] = [Stage::Parse, Stage::Policy, Stage::Index];

/// The ports and settings a worker needs.
#[derive(Clone)]
pub struct Pipeline {
    pub store: Arc<dyn MetadataStore>,
    pub queue: Arc<dyn JobQueue>,
    pub documents: Arc<dyn DocumentStore>,
    pub index: Arc<dyn ChunkIndex>,
    pub blobs: Arc<dyn BlobStore>,
    pub embedder: Arc<HashEmbedder>,
    pub claim: ClaimOptions,
    pub retry: RetryPolicy,
    pub parse_limits: ParseLimits,
    pub chunking: ChunkConfig,
}

/// A stage failure: the job error and whether it may succeed on a later attempt.
struct StageError {
    error: JobError,
    retryable: bool,
}

impl StageError {
    fn permanent(code: &str, message: impl Into<String>) -> Self {
        StageError { error: JobError::new(code, message), retryable: false }
    }
    fn retryable(code: &str, message: impl Into<String>) -> Self {
        StageError { error: JobError::new(code, message), retryable: true }
    }
}

fn store_err(e: frostbyte_core::StoreError) -> StageError {
    StageError::retryable("STORE_ERROR", e.to_string())
}

fn blob_err(e: frostbyte_core::ports::BlobError) -> StageError {
    StageError::retryable("BLOB_ERROR", e.to_string())
}

fn stage_of(stage: Stage) -> PipelineStage {
    match stage {
        Stage::Parse => PipelineStage::Parse,
        Stage::Policy => PipelineStage::Policy,
        _ => PipelineStage::Index,
    }
}

fn event(kind: &str, doc_id: Uuid, details: serde_json::Value) -> NewAuditEvent {
    NewAuditEvent::new(kind, ACTOR, "document", doc_id.to_string(), details)
}

impl Pipeline {
    /// A pipeline over these ports with default limits, claiming as `worker_id`.
    pub fn new(
        store: Arc<dyn MetadataStore>,
        queue: Arc<dyn JobQueue>,
        documents: Arc<dyn DocumentStore>,
        index: Arc<dyn ChunkIndex>,
        blobs: Arc<dyn BlobStore>,
        worker_id: &str,
    ) -> Self {
        Pipeline {
            store,
            queue,
            documents,
            index,
            blobs,
            embedder: Arc::new(HashEmbedder::default()),
            claim: ClaimOptions::new(worker_id, Duration::from_secs(300), 2).stages(STAGES),
            retry: RetryPolicy::default(),
            parse_limits: ParseLimits::default(),
            chunking: ChunkConfig::default(),
        }
    }

    /// Claims one job and runs its stage.
    pub async fn try_run_one(&self) -> anyhow::Result<RunOnce> {
        Ok(queue::try_run_one(&*self.queue, &self.claim, &self.retry, |job| self.run_guarded(job)).await?)
    }

    /// Runs a job for the document generation it was queued for, and only while that generation is live: a job of
    /// an erased or replaced document ends without running, and one whose document was erased or replaced while it
    /// ran ends without leaving anything behind (see `frostbyte_core::service::lifecycle`).
    async fn run_guarded(&self, job: Job) -> Result<(), JobError> {
        use frostbyte_core::service::lifecycle::{admit_job, settle_job};
        let lifecycle_err = |e: &dyn std::fmt::Display| JobError::new("STORE_ERROR", e.to_string());
        let Some(generation) = admit_job(&*self.documents, &job).await.map_err(|e| lifecycle_err(&e))? else {
            tracing::info!(tenant = %job.tenant_id, doc_id = %job.resource_id, stage = job.stage.as_str(),
                "skipping a job of an erased or replaced document");
            return Ok(());
        };
        let doc_id = Uuid::parse_str(&job.resource_id).ok().filter(|_| job.stage.resource_type() == "document");
        let tenant = job.tenant_id.clone();
        let result = self.run(job, generation).await;
        if let Some(doc_id) = doc_id
            && settle_job(&*self.documents, &*self.blobs, &tenant, doc_id, generation)
                .await
                .map_err(|e| lifecycle_err(&e))?
        {
            tracing::info!(tenant = %tenant, doc_id = %doc_id, generation, "document erased or replaced while its job ran");
            return Ok(());
        }
        result
    }

    async fn run(&self, job: Job, generation: u64) -> Result<(), JobError> {
        let tenant = job.tenant_id.clone();
        let Ok(doc_id) = Uuid::parse_str(&job.resource_id) else {
            return Err(JobError::new("INVALID_JOB", "the job's resource id is not a document id"));
        };
        let started = std::time::Instant::now();
        let result = match job.stage {
            Stage::Parse => self.parse(&tenant, doc_id, generation).await,
            Stage::Policy => self.policy(&tenant, doc_id, generation).await,
            Stage::Index => self.index(&tenant, doc_id, generation).await,
            other => Err(StageError::permanent("UNSUPPORTED_STAGE", format!("no worker for stage {other}"))),
        };
        let Err(failure) = result else {
            tracing::info!(
                tenant = %tenant, doc_id = %doc_id, stage = job.stage.as_str(),
                duration_ms = started.elapsed().as_millis() as u64, "stage done"
            );
            return Ok(());
        };
        let last_attempt = job.attempts >= self.retry.for_stage(job.stage).max_attempts;
        tracing::warn!(
            tenant = %tenant, doc_id = %doc_id, stage = job.stage.as_str(), code = %failure.error.code,
            attempt = job.attempts, retryable = failure.retryable, "stage failed"
        );
        if !failure.retryable || last_attempt {
            let update = StageUpdate::new(stage_of(job.stage), StageStatus::Failed)
                .document_status(DocumentStatus::Failed)
                .error_code(failure.error.code.clone());
            let audit = event(
                "DOCUMENT_FAILED",
                doc_id,
                json!({"component": job.stage.as_str(), "status": "failed", "error_code": failure.error.code}),
            );
            match self.documents.update_stage_at(&tenant, doc_id, generation, update, None, audit).await {
                Ok(_) | Err(frostbyte_core::StoreError::NotFound { .. } | frostbyte_core::StoreError::Conflict(_)) => {}
                Err(e) => tracing::error!(error = %e, doc_id = %doc_id, "cannot record a failed stage"),
            }
            if !failure.retryable {
                // Recorded on the document; retrying the same input cannot help.
                return Ok(());
            }
        }
        Err(failure.error)
    }

    async fn document(&self, tenant: &TenantId, doc_id: Uuid) -> Result<DocumentRecord, StageError> {
        self.documents
            .get_document(tenant, doc_id)
            .await
            .map_err(store_err)?
            .ok_or_else(|| StageError::permanent("DOCUMENT_NOT_FOUND", format!("document {doc_id} does not exist")))
    }

    async fn config(&self, tenant: &TenantId) -> Result<TenantConfig, StageError> {
        let t = self.store.get_tenant(tenant).await.map_err(store_err)?;
        t.map(|t| t.config).ok_or_else(|| StageError::permanent("TENANT_NOT_FOUND", "the tenant does not exist"))
    }

    async fn load_json(&self, tenant: &TenantId, key: &str) -> Result<CanonicalDocument, StageError> {
        let bytes = self.blobs.get(tenant, key).await.map_err(blob_err)?;
        serde_json::from_slice(&bytes)
            .map_err(|_| StageError::permanent("CANONICAL_CORRUPT", format!("{key} is not a canonical document")))
    }

    async fn save_json(&self, tenant: &TenantId, key: &str, doc: &CanonicalDocument) -> Result<(), StageError> {
        let bytes = serde_json::to_vec(doc)
            .map_err(|_| StageError::permanent("CANONICAL_ENCODE", "the canonical document could not be encoded"))?;
        self.blobs.put(tenant, key, Bytes::from(bytes)).await.map_err(blob_err)
    }

    async fn parse(&self, tenant: &TenantId, doc_id: Uuid, generation: u64) -> Result<(), StageError> {
        let doc = self.document(tenant, doc_id).await?;
        let raw = self.blobs.get(tenant, &raw_blob_key(&doc.raw_sha256)).await.map_err(blob_err)?;
        let (mime, limits, id) = (doc.mime_type.clone(), self.parse_limits.clone(), doc_id.to_string());
        let canonical = tokio::task::spawn_blocking(move || parse(&raw, &mime, &id, &limits))
            .await
            .map_err(|_| StageError::retryable("PARSER_ERROR", "the parser task panicked or was cancelled"))?
            .map_err(|e| StageError {
                error: JobError::new(e.code(), format!("parsing {} failed", doc.mime_type)),
                retryable: e.is_retryable(),
            })?;
        self.save_json(tenant, &canonical_key(&doc_id, generation), &canonical).await?;
        let parser_version = format!("{}@{}", canonical.parser.name, canonical.parser.version);
        let next = stage_job(Stage::Policy, doc_id, generation);
        let audit = event(
            "DOCUMENT_PARSED",
            doc_id,
            json!({"component": "parse", "status": "done", "input_hash": doc.raw_sha256, "parser_version": parser_version,
                   "blocks": canonical.blocks.len()}),
        );
        let update =
            StageUpdate::new(PipelineStage::Parse, StageStatus::Done).lineage("parser_version", parser_version);
        self.documents
            .update_stage_at(tenant, doc_id, generation, update, Some(next), audit)
            .await
            .map_err(store_err)?;
        Ok(())
    }

    async fn policy(&self, tenant: &TenantId, doc_id: Uuid, generation: u64) -> Result<(), StageError> {
        let config = self.config(tenant).await?;
        let canonical = self.load_json(tenant, &canonical_key(&doc_id, generation)).await?;
        let mut blocked = false;
        let mut redacted_blocks = 0usize;
        let mut pii_total = 0usize;
        let mut policy_version = String::new();
        let mut best: Option<(String, f64)> = None;
        let policed = canonical.try_map_text(|text| {
            let outcome = apply_policy(text, &config)?;
            let r = &outcome.report;
            blocked |= r.blocked;
            redacted_blocks += usize::from(r.redacted);
            pii_total += r.pii.counts.values().sum::<usize>();
            policy_version.clone_from(&r.policy_version);
            if best.as_ref().is_none_or(|(_, c)| r.classification.confidence > *c) {
                best = Some((r.classification.category.clone(), r.classification.confidence));
            }
            Ok::<_, frostbyte_core::policy::PolicyError>(outcome.text)
        });
        let policed = policed.map_err(|e| StageError::permanent(e.code(), "the policy checks refused the document"))?;
        let classification = best.map(|(c, _)| c);
        let details = json!({"component": "policy", "status": if blocked { "quarantined" } else { "done" },
            "policy_version": policy_version, "pii_detected": pii_total, "redacted_blocks": redacted_blocks,
            "classification": classification});
        let update = StageUpdate::new(PipelineStage::Policy, StageStatus::Done)
            .lineage("policy_version", policy_version.clone())
            .lineage("classification", classification.clone());
        if blocked {
            let update = update
                .also(PipelineStage::Embed, StageStatus::Skipped)
                .also(PipelineStage::Index, StageStatus::Skipped)
                .document_status(DocumentStatus::Quarantined);
            let audit = event("DOCUMENT_QUARANTINED", doc_id, details);
            self.documents.update_stage_at(tenant, doc_id, generation, update, None, audit).await.map_err(store_err)?;
            tracing::info!(tenant = %tenant, doc_id = %doc_id, "document quarantined by policy");
            return Ok(());
        }
        self.save_json(tenant, &policed_key(&doc_id, generation), &policed).await?;
        let next = stage_job(Stage::Index, doc_id, generation);
        let audit = event("DOCUMENT_POLICY_APPLIED", doc_id, details);
        self.documents
            .update_stage_at(tenant, doc_id, generation, update, Some(next), audit)
            .await
            .map_err(store_err)?;
        Ok(())
    }

    async fn index(&self, tenant: &TenantId, doc_id: Uuid, generation: u64) -> Result<(), StageError> {
        let config = self.config(tenant).await?;
        let doc = self.document(tenant, doc_id).await?;
        let policed = self.load_json(tenant, &policed_key(&doc_id, generation)).await?;
        let chunks = chunk_document(&policed, &self.chunking)
            .map_err(|_| StageError::permanent("CHUNK_CONFIG_INVALID", "the chunking configuration is invalid"))?;
        let texts: Vec<String> = chunks.iter().map(|c| c.text.clone()).collect();
        let embedder = self.embedder.clone();
        let vectors = tokio::task::spawn_blocking(move || embedder.embed_batch(&texts))
            .await
            .map_err(|_| StageError::retryable("EMBED_ERROR", "the embedding task panicked or was cancelled"))?
            .map_err(|e| StageError {
                error: JobError::new(e.code(), "embedding failed"),
                retryable: e.is_retryable(),
            })?;
        let classification = doc.lineage.get("classification").and_then(|v| v.as_str()).map(str::to_owned);
        let model = frostbyte_core::embed::Embedder::model_id(&*self.embedder).to_owned();
        let mut indexed = Vec::with_capacity(chunks.len());
        for (chunk, vector) in chunks.into_iter().zip(vectors) {
            let verdict = assess_chunk(&chunk.text, &config)
                .map_err(|e| StageError::permanent(e.code(), "the chunk policy checks failed"))?;
            let offset = |n: usize| {
                u32::try_from(n).map_err(|_| StageError::permanent("DOCUMENT_TOO_LARGE", "offsets exceed u32"))
            };
            indexed.push(IndexedChunk {
                chunk_id: chunk.chunk_id.to_string(),
                doc_id: doc_id.to_string(),
                position: chunk.position,
                start: offset(chunk.start)?,
                end: offset(chunk.end)?,
                page_start: chunk.page_start,
                page_end: chunk.page_end,
                heading_path: chunk.heading_path,
                kind: chunk.kind.to_string(),
                text_hash: chunk.text_hash,
                text: chunk.text,
                classification: classification.clone(),
                collection: doc.collection.clone(),
                metadata: doc.metadata.clone(),
                quarantined: verdict.quarantined,
                embed_model: model.clone(),
                vector,
                source_sha256: doc.raw_sha256.clone(),
                original_filename: doc.original_filename.clone(),
                ingested_at: doc.created_at,
            });
        }
        self.index
            .replace_document_chunks_at(tenant, &doc_id.to_string(), generation, &indexed)
            .await
            .map_err(store_err)?;
        let quarantined = indexed.iter().filter(|c| c.quarantined).count();
        let update = StageUpdate::new(PipelineStage::Index, StageStatus::Done)
            .also(PipelineStage::Embed, StageStatus::Done)
            .document_status(DocumentStatus::Indexed)
            .lineage("embed_model", model.clone())
            .lineage("chunks", indexed.len())
            .lineage("quarantined_chunks", quarantined);
        let audit = event(
            "DOCUMENT_INDEXED",
            doc_id,
            json!({"component": "index", "status": "done", "embed_model": model, "chunks": indexed.len(),
                   "quarantined_chunks": quarantined}),
        );
        self.documents.update_stage_at(tenant, doc_id, generation, update, None, audit).await.map_err(store_err)?;
        Ok(())
    }
}

/// The blob key of a document after policy (redacted text): what chunking and embedding read.
pub fn policed_blob_key(doc_id: &Uuid) -> String {
    policed_key(doc_id, frostbyte_core::lifecycle::FIRST_GENERATION)
}

/// Runs `pipeline` until `shutdown` turns true: a job at a time, sleeping `poll` when idle. A job in progress is
/// finished before the loop looks at `shutdown` again.
pub async fn run_worker(pipeline: Pipeline, poll: Duration, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let worker = pipeline.claim.worker_id.clone();
    tracing::info!(worker = %worker, "pipeline worker started");
    while !*shutdown.borrow() {
        let idle = match pipeline.try_run_one().await {
            Ok(RunOnce::Ran(_)) => false,
            Ok(RunOnce::Idle) => true,
            Err(error) => {
                tracing::error!(worker = %worker, %error, "pipeline worker could not run a job");
                true
            }
        };
        if idle {
            tokio::select! {
                _ = tokio::time::sleep(poll) => {}
                _ = shutdown.changed() => {}
            }
        }
    }
    tracing::info!(worker = %worker, "pipeline worker stopped");
}
