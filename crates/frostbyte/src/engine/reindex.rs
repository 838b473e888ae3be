//! `documents.reindex`: re-embeds the tenant's chunks (parameter `collection`, or all of them) with another
//! configured embedder (parameter `embedding_model`, a name or model id in the registry) into shadow vectors
//! ([`ShadowIndex`]), then swaps them in atomically.
//!
//! 1. Shadow rows of runs that are no longer executing (left by a process that died) are removed.
//! 2. **Embed**: the chunks still lacking a shadow vector of this run are read in chunk-id order, `batch_size` at
//!    a time, embedded, checked ([`check_vectors`]) and stored as shadow rows. Searches keep answering from the
//!    live vectors meanwhile; cancellation is checked between batches. A resumed run (crash, retry) embeds only
//!    what is left.
//! 3. **Swap**: one transaction moves every chunk of the scope to its shadow vector, sets the tenant's
//!    `embedding_model` to the new one (a compare-and-set on `config_version`, audited as
//!    `TENANT_CONFIG_UPDATED`), appends `DOCUMENTS_REINDEXED` and removes the run's shadow rows. Chunk rows changed
//!    through the store's triggers, so every process's in-memory index reloads them before its next search. When
//!    chunks were written or replaced after they were embedded, the store refuses the swap
//!    ([`SwapOutcome::Incomplete`]); the missing ones are embedded and the swap is tried again, up to
//!    [`SWAP_ATTEMPTS`] times.
//!
//! A cancelled or permanently failed run removes its shadow rows and leaves the live vectors and the config as
//! they were; a retryable failure keeps them for the next attempt of the same run.
//!
//! The tenant's `embedding_model` changes even when one collection is re-embedded: the chunks of other
//! collections keep their old vectors until they are re-embedded too, and searches that hit them report
//! `model_version_match: false`.

use std::sync::Arc;

use frostbyte_core::audit::NewAuditEvent;
use frostbyte_core::embed::{EmbedError, Embedder, check_vectors};
use frostbyte_core::reindex::{ReindexTarget, ShadowIndex, ShadowSwap, ShadowVector, SwapOutcome};
use frostbyte_core::{StoreError, TenantId};
use serde_json::{Map, Value, json};

use super::DocumentPlane;
use super::processors::{Outcome, ProcessorError, RunContext};

/// How many times the swap is retried after chunks changed under it.
const SWAP_ATTEMPTS: usize = 5;
/// The most chunks embedded per call.
const MAX_BATCH: i64 = 1_024;

/// The document plane, which document processors need.
pub(super) fn plane(ctx: &RunContext) -> Result<Arc<DocumentPlane>, ProcessorError> {
    ctx.documents.clone().ok_or_else(|| {
        ProcessorError::permanent(format!(
            "{} needs the document plane, which this process was started without",
            ctx.definition.processor
        ))
    })
}

/// The run's resolved `target`.
pub(super) fn target(ctx: &RunContext) -> Result<String, ProcessorError> {
    ctx.target
        .clone()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ProcessorError::permanent(format!("{} needs a target", ctx.definition.processor)))
}

/// Records progress (best effort).
pub(super) async fn progress(ctx: &RunContext, progress: f64, records: u64) {
    if let Err(error) = ctx.runs.record_progress(&ctx.tenant, ctx.run_id, progress.clamp(0.0, 1.0), records).await {
        tracing::warn!(%error, run_id = %ctx.run_id, "cannot record run progress");
    }
}

fn text_param(ctx: &RunContext, name: &str) -> Option<String> {
    ctx.parameters.get(name).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned)
}

fn embed_failure(e: EmbedError, model: &str) -> ProcessorError {
    ProcessorError::Failed { retryable: e.is_retryable(), message: format!("embedding with {model} failed: {e}") }
}

async fn embed(embedder: &Arc<dyn Embedder>, texts: Vec<String>) -> Result<Vec<Vec<f32>>, ProcessorError> {
    let model = embedder.model_id().to_owned();
    let (dimension, n) = (embedder.dimension(), texts.len());
    let vectors = if embedder.compute_bound() {
        let embedder = embedder.clone();
        tokio::task::spawn_blocking(move || tokio::runtime::Handle::current().block_on(embedder.embed(&texts)))
            .await
            .map_err(|_| ProcessorError::permanent("the embedding task panicked or was cancelled"))?
    } else {
        embedder.embed(&texts).await
    }
    .map_err(|e| embed_failure(e, &model))?;
    check_vectors(&vectors, n, dimension).map_err(|e| embed_failure(e, &model))?;
    Ok(vectors)
}

pub(super) async fn documents_reindex(ctx: RunContext) -> Result<Outcome, ProcessorError> {
    let plane = plane(&ctx)?;
    let model = text_param(&ctx, "embedding_model")
        .ok_or_else(|| ProcessorError::permanent("documents.reindex needs the parameter embedding_model"))?;
    let embedder = plane.embedders.get(&model).ok_or_else(|| {
        ProcessorError::permanent(format!(
            "embedding_model {model:?} is not configured on this deployment (configured: {})",
            plane.embedders.selectors().join(", ")
        ))
    })?;
    let batch = match ctx.parameters.get("batch_size").map(Value::as_i64) {
        None => 64,
        Some(Some(n)) if (1..=MAX_BATCH).contains(&n) => n as usize,
        Some(_) => return Err(ProcessorError::permanent(format!("batch_size must be between 1 and {MAX_BATCH}"))),
    };
    let target = ReindexTarget {
        run_id: ctx.run_id,
        embed_model: embedder.model_id().to_owned(),
        collection: text_param(&ctx, "collection"),
    };
    match plane.shadow.discard_stale_shadows(&ctx.tenant, ctx.run_id).await {
        Ok(0) => {}
        Ok(rows) => tracing::info!(tenant = %ctx.tenant, rows, "removed shadow vectors of interrupted reindex runs"),
        Err(error) => tracing::warn!(%error, tenant = %ctx.tenant, "cannot remove stale shadow vectors"),
    }
    let result = Reindex { ctx: &ctx, shadow: &*plane.shadow, embedder, target, model, batch }.run().await;
    if let Err(e) = &result
        && !matches!(e, ProcessorError::Failed { retryable: true, .. })
    {
        match plane.shadow.discard_shadow(&ctx.tenant, ctx.run_id).await {
            Ok(rows) => {
                tracing::info!(run_id = %ctx.run_id, rows, "reindex stopped before the swap; shadow vectors removed")
            }
            Err(error) => tracing::warn!(%error, run_id = %ctx.run_id, "cannot remove the run's shadow vectors"),
        }
    }
    result
}

struct Reindex<'a> {
    ctx: &'a RunContext,
    shadow: &'a dyn ShadowIndex,
    embedder: Arc<dyn Embedder>,
    target: ReindexTarget,
    /// The name the run was asked for (what the tenant's `embedding_model` becomes).
    model: String,
    batch: usize,
}

impl Reindex<'_> {
    fn tenant(&self) -> &TenantId {
        &self.ctx.tenant
    }

    fn check_cancelled(&self) -> Result<(), ProcessorError> {
        if self.ctx.cancel.is_cancelled() { Err(ProcessorError::Cancelled) } else { Ok(()) }
    }

    /// Embeds every chunk of the scope that has no shadow vector yet; returns how many.
    async fn embed_pending(&self, scope: u64, done_before: u64) -> Result<u64, ProcessorError> {
        let mut embedded = 0u64;
        let mut after: Option<String> = None;
        loop {
            self.check_cancelled()?;
            let page = self.shadow.reindex_pending(self.tenant(), &self.target, after.as_deref(), self.batch).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.chunk_id.clone());
            let texts = page.iter().map(|c| c.text.clone()).collect();
            // A slow or remote embedder must not hold up a cancel.
            let vectors = tokio::select! {
                v = embed(&self.embedder, texts) => v?,
                () = self.ctx.cancel.cancelled() => return Err(ProcessorError::Cancelled),
            };
            let rows: Vec<ShadowVector> = page
                .iter()
                .zip(vectors)
                .map(|(c, vector)| ShadowVector {
                    chunk_id: c.chunk_id.clone(),
                    text_hash: c.text_hash.clone(),
                    vector,
                })
                .collect();
            self.shadow.put_shadow_vectors(self.tenant(), &self.target, &rows).await?;
            embedded += rows.len() as u64;
            let done = done_before + embedded;
            progress(self.ctx, done as f64 / scope.max(1) as f64 * 0.95, done).await;
            if page.len() < self.batch {
                break;
            }
            tokio::task::yield_now().await;
        }
        Ok(embedded)
    }

    async fn run(self) -> Result<Outcome, ProcessorError> {
        let scope = self.shadow.reindex_scope(self.tenant(), &self.target).await?;
        let resumed = self.shadow.shadow_count(self.tenant(), self.target.run_id).await?;
        let mut embedded = 0;
        for _ in 0..SWAP_ATTEMPTS {
            embedded += self.embed_pending(scope, resumed + embedded).await?;
            self.check_cancelled()?;
            let tenant = self
                .ctx
                .store
                .get_tenant(self.tenant())
                .await?
                .ok_or_else(|| ProcessorError::permanent("the tenant no longer exists"))?;
            let previous = tenant.config.embedding_model.clone();
            let mut audit = Vec::new();
            let config = (previous != self.model).then(|| {
                let mut config = tenant.config.clone();
                config.embedding_model.clone_from(&self.model);
                audit.push(NewAuditEvent::new(
                    "TENANT_CONFIG_UPDATED",
                    format!("pipeline:{}", self.target.run_id),
                    "tenant",
                    self.tenant().as_str(),
                    json!({"component": "reindex", "status": "ok", "config_version": tenant.config_version + 1,
                           "fields": ["embedding_model"], "run_id": self.target.run_id.to_string()}),
                ));
                (tenant.config_version, config)
            });
            audit.push(NewAuditEvent::new(
                "DOCUMENTS_REINDEXED",
                format!("pipeline:{}", self.target.run_id),
                "pipeline_run",
                self.target.run_id.to_string(),
                json!({"component": "reindex", "status": "swapped", "embed_model": self.target.embed_model,
                       "embedding_model": self.model, "previous_embedding_model": previous,
                       "collection": self.target.collection}),
            ));
            match self.shadow.swap_shadow(self.tenant(), &self.target, ShadowSwap { config, audit }).await {
                Ok(SwapOutcome::Swapped { chunks }) => {
                    tracing::info!(tenant = %self.tenant(), run_id = %self.target.run_id, chunks,
                                   model = %self.target.embed_model, "reindex swapped");
                    let mut counts = Map::new();
                    counts.insert("chunks".into(), json!(chunks));
                    counts.insert("embedded".into(), json!(resumed + embedded));
                    counts.insert("embed_model".into(), json!(self.target.embed_model));
                    counts.insert("previous_embedding_model".into(), json!(previous));
                    counts.insert("collection".into(), json!(self.target.collection));
                    return Ok(Outcome { records: chunks, counts });
                }
                Ok(SwapOutcome::Incomplete { missing }) => {
                    tracing::info!(run_id = %self.target.run_id, missing, "chunks changed during the reindex; embedding them");
                }
                Err(StoreError::Conflict(reason)) => {
                    tracing::info!(run_id = %self.target.run_id, %reason, "tenant config changed during the swap; retrying");
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(ProcessorError::Failed {
            message: format!("the chunks kept changing; the swap did not succeed in {SWAP_ATTEMPTS} attempts"),
            retryable: true,
        })
    }
}
