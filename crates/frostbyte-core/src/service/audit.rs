//! Audit use-cases shared by the API and the CLI: whole-chain verification and export as JSON Lines with a
//! manifest that pins the file's SHA-256.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::audit::{ChainBreak, ChainVerifier, NewAuditEvent};
use crate::error::StoreResult;
use crate::ids::TenantId;
use crate::ports::MetadataStore;

const BATCH: u32 = 1_000;

/// The outcome of verifying a tenant's chain.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct VerifyReport {
    pub valid: bool,
    pub events_checked: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_break: Option<ChainBreak>,
    pub breaks_found: u64,
}

/// Walks the tenant's whole chain, oldest first, in batches, recomputing every hash and link.
pub async fn verify_chain(store: &dyn MetadataStore, tenant: &TenantId) -> StoreResult<VerifyReport> {
    let mut verifier = ChainVerifier::default();
    let mut after = 0;
    loop {
        let batch = store.audit_after(tenant, after, BATCH).await?;
        let Some(last) = batch.last() else { break };
        after = last.seq;
        batch.iter().for_each(|e| verifier.push(e));
        if batch.len() < BATCH as usize {
            break;
        }
    }
    Ok(VerifyReport {
        valid: verifier.breaks().is_empty(),
        events_checked: verifier.events_checked(),
        first_break: verifier.first_break().cloned(),
        breaks_found: verifier.breaks().len() as u64,
    })
}

/// Describes an export file.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ExportManifest {
    #[schema(value_type = String)]
    pub tenant_id: TenantId,
    pub event_count: u64,
    /// SHA-256 of exactly the JSON Lines bytes.
    pub file_sha256: String,
    pub start_date: DateTime<Utc>,
    pub end_date: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_types: Option<Vec<String>>,
    pub generated_at: DateTime<Utc>,
}

/// Exports the tenant's events with `start <= timestamp <= end` (optionally only some types) as JSON Lines, one
/// event per line in chain order with its hashes, and records the export itself in the audit log.
pub async fn export_jsonl(
    store: &dyn MetadataStore,
    tenant: &TenantId,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    event_types: Option<&[String]>,
    actor: &str,
) -> StoreResult<(String, ExportManifest)> {
    let mut out = String::new();
    let mut count = 0u64;
    let mut after = 0;
    loop {
        let batch = store.audit_after(tenant, after, BATCH).await?;
        let Some(last) = batch.last() else { break };
        after = last.seq;
        for e in &batch {
            let in_range = e.timestamp >= start && e.timestamp <= end;
            let type_ok = event_types.is_none_or(|types| types.iter().any(|t| t == &e.event_type));
            if in_range && type_ok {
                out.push_str(&serde_json::to_string(e).expect("audit event serialises"));
                out.push('\n');
                count += 1;
            }
        }
        if batch.len() < BATCH as usize {
            break;
        }
    }
    let manifest = ExportManifest {
        tenant_id: tenant.clone(),
        event_count: count,
        file_sha256: hex::encode(Sha256::digest(out.as_bytes())),
        start_date: start,
        end_date: end,
        event_types: event_types.map(<[String]>::to_vec),
        generated_at: crate::now(),
    };
    store
        .append_audit(
            tenant,
            NewAuditEvent::new(
                "AUDIT_EXPORTED",
                actor,
                "audit_log",
                tenant.as_str(),
                json!({
                    "component": "audit",
                    "status": "ok",
                    "event_count": count,
                    "output_hash": manifest.file_sha256,
                }),
            ),
        )
        .await?;
    Ok((out, manifest))
}
