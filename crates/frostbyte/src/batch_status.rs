//! The batch status view behind `GET /api/v1/ingest/{tenant_id}/batch/{batch_id}`: per-file stages from the
//! documents the batch created, a summary, and the acceptance report that names every problem (rejections,
//! quarantines, pipeline failures) with what the submitter can do about it.
//!
//! Built from stored rows only (the batch, its files, their documents), so it survives restarts.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use frostbyte_core::batch::{BatchFileRecord, BatchRecord, FileOutcome, RejectReason};
use frostbyte_core::documents::{DocumentRecord, DocumentStages, DocumentStatus, PipelineStage, StageStatus};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

/// `summary`: every file counted once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct BatchSummary {
    pub total_files: u64,
    /// Indexed.
    pub completed: u64,
    /// In the pipeline past intake.
    pub processing: u64,
    /// Accepted, waiting for the parse stage.
    pub queued: u64,
    /// Rejected, quarantined, or failed (or quarantined by policy) in the pipeline.
    pub failed: u64,
}

/// Why a file did not (or will not) become searchable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FileError {
    pub code: String,
    pub message: String,
}

/// One file of the batch.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct BatchFileStatus {
    pub file_id: String,
    pub filename: String,
    pub receipt_id: Uuid,
    /// `null` for files intake did not accept.
    pub doc_id: Option<Uuid>,
    /// `accepted`, `rejected` or `quarantined` at intake.
    pub outcome: FileOutcome,
    /// `queued`, `processing`, `completed` or `failed`.
    pub status: String,
    pub stages: DocumentStages,
    /// The first stage not yet done; `null` when finished or stopped.
    pub current_stage: Option<PipelineStage>,
    pub scan_result: Option<String>,
    pub error: Option<FileError>,
}

/// One problem in the acceptance report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ReportProblem {
    pub file_id: String,
    pub filename: String,
    /// Where it happened: `intake` or a pipeline stage.
    pub stage: String,
    pub code: String,
    pub message: String,
    /// What the submitter can do about it.
    pub remediation: String,
}

/// The acceptance report: counts at intake and every problem.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct AcceptanceReport {
    pub accepted: u64,
    pub rejected: u64,
    pub quarantined: u64,
    /// Accepted files that later failed or were quarantined by policy.
    pub failed_in_pipeline: u64,
    pub problems: Vec<ReportProblem>,
}

/// `GET …/batch/{batch_id}`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct BatchStatusView {
    pub batch_id: String,
    /// `processing` while any file is queued or processing; then `completed` (no problems), `partial` (some
    /// files failed) or `failed` (none completed).
    pub status: String,
    pub collection: Option<String>,
    pub summary: BatchSummary,
    pub files: Vec<BatchFileStatus>,
    pub acceptance_report: AcceptanceReport,
    pub created_at: DateTime<Utc>,
}

/// Remediation for a pipeline failure code.
fn pipeline_remediation(code: &str) -> &'static str {
    match code {
        "FILE_CORRUPTED" => "the file is damaged or truncated; re-export it from its source and resubmit",
        "UNSUPPORTED_FORMAT" => {
            "convert the file to a supported format (PDF, DOCX, XLSX, PPTX, text, Markdown, HTML, CSV, JSON) and resubmit"
        }
        "PARSER_ERROR" => {
            "the file passed a parser limit (size, nesting, time); split it into smaller files and resubmit"
        }
        "POLICY_QUARANTINED" => {
            "the tenant's policy blocked the document (for example PII under pii_policy block); remove the sensitive data or ask an administrator to review the policy"
        }
        "DOCUMENT_ERASED" => "the document was erased after intake; resubmit it if it is still needed",
        _ => {
            "a pipeline stage failed after its retries; check the tenant's dead-letter list (GET /api/v1/tenants/{tenant_id}/dlq) and retry it, or contact support with the receipt id"
        }
    }
}

fn rejected_stages() -> DocumentStages {
    DocumentStages {
        intake: StageStatus::Failed,
        parse: StageStatus::Skipped,
        policy: StageStatus::Skipped,
        embed: StageStatus::Skipped,
        index: StageStatus::Skipped,
    }
}

/// The stage that failed (the first `failed` one), for the report.
fn failed_stage(stages: &DocumentStages) -> PipelineStage {
    PipelineStage::ALL.into_iter().find(|s| stages.get(*s) == StageStatus::Failed).unwrap_or(PipelineStage::Parse)
}

/// Builds the view from the stored batch, its files and the documents they created (keyed by doc id; a missing
/// document was erased).
pub fn build(batch: BatchRecord, files: Vec<BatchFileRecord>, docs: &HashMap<Uuid, DocumentRecord>) -> BatchStatusView {
    let mut summary = BatchSummary { total_files: files.len() as u64, ..BatchSummary::default() };
    let mut problems = Vec::new();
    let mut failed_in_pipeline = 0;
    let mut out = Vec::with_capacity(files.len());
    for f in files {
        let (status, stages, error, stage_name) = match (f.outcome, f.doc_id.and_then(|id| docs.get(&id))) {
            (FileOutcome::Accepted, Some(doc)) => match doc.status {
                DocumentStatus::Indexed => ("completed", doc.stages, None, None),
                DocumentStatus::Failed => {
                    let code = doc.error_code.clone().unwrap_or_else(|| "PIPELINE_FAILED".into());
                    let stage = failed_stage(&doc.stages);
                    let message = format!("the {} stage failed ({code})", stage.as_str());
                    ("failed", doc.stages, Some(FileError { code, message }), Some(stage.as_str()))
                }
                DocumentStatus::Quarantined => {
                    let error = FileError {
                        code: "POLICY_QUARANTINED".into(),
                        message: "the policy stage quarantined the document; nothing was indexed".into(),
                    };
                    ("failed", doc.stages, Some(error), Some("policy"))
                }
                DocumentStatus::Processing => {
                    let running =
                        PipelineStage::ALL.into_iter().skip(1).any(|s| doc.stages.get(s) != StageStatus::Pending);
                    (if running { "processing" } else { "queued" }, doc.stages, None, None)
                }
            },
            (FileOutcome::Accepted, None) => {
                let error = FileError {
                    code: "DOCUMENT_ERASED".into(),
                    message: "the document was erased after intake".into(),
                };
                ("failed", rejected_stages(), Some(error), Some("intake"))
            }
            (FileOutcome::Rejected | FileOutcome::Quarantined, _) => {
                let code = f.reason.map_or("REJECTED", RejectReason::as_str).to_owned();
                let message = f.message.clone().unwrap_or_else(|| "rejected at intake".into());
                ("failed", rejected_stages(), Some(FileError { code, message }), Some("intake"))
            }
        };
        match status {
            "completed" => summary.completed += 1,
            "processing" => summary.processing += 1,
            "queued" => summary.queued += 1,
            _ => summary.failed += 1,
        }
        if let (Some(e), Some(stage)) = (&error, stage_name) {
            if f.outcome == FileOutcome::Accepted {
                failed_in_pipeline += 1;
            }
            let remediation = match f.reason {
                Some(reason) if f.outcome != FileOutcome::Accepted => reason.remediation(),
                _ => pipeline_remediation(&e.code),
            };
            problems.push(ReportProblem {
                file_id: f.file_id.clone(),
                filename: f.filename.clone(),
                stage: stage.to_owned(),
                code: e.code.clone(),
                message: e.message.clone(),
                remediation: remediation.to_owned(),
            });
        }
        let current_stage = if status == "failed" { None } else { stages.current() };
        out.push(BatchFileStatus {
            file_id: f.file_id,
            filename: f.filename,
            receipt_id: f.receipt_id,
            doc_id: f.doc_id,
            outcome: f.outcome,
            status: status.to_owned(),
            stages,
            current_stage,
            scan_result: f.scan_result,
            error,
        });
    }
    let status = if summary.queued + summary.processing > 0 {
        "processing"
    } else if summary.failed == 0 {
        "completed"
    } else if summary.completed == 0 {
        "failed"
    } else {
        "partial"
    };
    BatchStatusView {
        batch_id: batch.batch_id,
        status: status.to_owned(),
        collection: batch.collection,
        summary,
        files: out,
        acceptance_report: AcceptanceReport {
            accepted: batch.accepted,
            rejected: batch.rejected,
            quarantined: batch.quarantined,
            failed_in_pipeline,
            problems,
        },
        created_at: batch.created_at,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Map, json};

    use super::*;

    fn file(id: &str, outcome: FileOutcome, reason: Option<RejectReason>, doc: Option<Uuid>) -> BatchFileRecord {
        BatchFileRecord {
            file_id: id.into(),
            position: 0,
            filename: format!("{id}.txt"),
            declared_mime: "text/plain".into(),
            size_bytes: 1,
            sha256: "a".repeat(64),
            outcome,
            reason,
            message: reason.map(|_| "why".into()),
            doc_id: doc,
            receipt_id: Uuid::now_v7(),
            scan_result: Some("skipped".into()),
            signature: None,
        }
    }

    fn doc(status: DocumentStatus, stages: DocumentStages, error: Option<&str>) -> DocumentRecord {
        let now = frostbyte_core::now();
        DocumentRecord {
            doc_id: Uuid::now_v7(),
            receipt_id: Uuid::now_v7(),
            original_filename: "x".into(),
            mime_type: "text/plain".into(),
            size_bytes: 1,
            raw_sha256: "a".repeat(64),
            metadata: json!({}),
            collection: None,
            status,
            stages,
            lineage: Map::new(),
            error_code: error.map(str::to_owned),
            created_at: now,
            updated_at: now,
        }
    }

    #[test]
    fn every_problem_is_reported_with_remediation_and_the_summary_adds_up() {
        let done = DocumentStages {
            intake: StageStatus::Done,
            parse: StageStatus::Done,
            policy: StageStatus::Done,
            embed: StageStatus::Done,
            index: StageStatus::Done,
        };
        let mut parse_failed = DocumentStages::received();
        parse_failed.parse = StageStatus::Failed;
        let indexed = doc(DocumentStatus::Indexed, done, None);
        let failed = doc(DocumentStatus::Failed, parse_failed, Some("FILE_CORRUPTED"));
        let queued = doc(DocumentStatus::Processing, DocumentStages::received(), None);
        let docs: HashMap<Uuid, DocumentRecord> =
            [&indexed, &failed, &queued].into_iter().map(|d| (d.doc_id, d.clone())).collect();
        let files = vec![
            file("ok", FileOutcome::Accepted, None, Some(indexed.doc_id)),
            file("broken", FileOutcome::Accepted, None, Some(failed.doc_id)),
            file("waiting", FileOutcome::Accepted, None, Some(queued.doc_id)),
            file("bad-sum", FileOutcome::Rejected, Some(RejectReason::ChecksumMismatch), None),
            file("virus", FileOutcome::Quarantined, Some(RejectReason::MalwareDetected), None),
        ];
        let batch = BatchRecord {
            batch_id: "b".into(),
            file_count: 5,
            collection: None,
            submitter: None,
            accepted: 3,
            rejected: 1,
            quarantined: 1,
            created_at: frostbyte_core::now(),
        };
        let view = build(batch, files, &docs);
        assert_eq!(view.status, "processing");
        assert_eq!(view.summary, BatchSummary { total_files: 5, completed: 1, processing: 0, queued: 1, failed: 3 });
        let codes: Vec<&str> = view.acceptance_report.problems.iter().map(|p| p.code.as_str()).collect();
        assert_eq!(codes, ["FILE_CORRUPTED", "CHECKSUM_MISMATCH", "MALWARE_DETECTED"]);
        assert!(view.acceptance_report.problems.iter().all(|p| !p.remediation.is_empty()));
        assert_eq!(view.acceptance_report.problems[0].stage, "parse");
        assert_eq!(view.acceptance_report.failed_in_pipeline, 1);
        assert_eq!(view.files[2].current_stage, Some(PipelineStage::Parse));
        assert_eq!(view.files[3].stages.intake, StageStatus::Failed);
    }
}
