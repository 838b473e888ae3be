-- Documents as the pipeline tracks them (see `frostbyte_core::documents`): the intake receipt, the sniffed type,
-- the raw sha256 (the raw blob's key), per-stage status and lineage. No document text: the canonical document
-- lives in the blob store and chunks in `chunks`. Timestamps are TEXT in `frostbyte_core::format_timestamp` form.

CREATE TABLE documents (
    tenant_id         TEXT    NOT NULL REFERENCES tenants (tenant_id),
    doc_id            TEXT    NOT NULL,
    receipt_id        TEXT    NOT NULL,
    original_filename TEXT    NOT NULL,
    mime_type         TEXT    NOT NULL,
    size_bytes        INTEGER NOT NULL,
    raw_sha256        TEXT    NOT NULL,
    -- JSON object.
    metadata          TEXT    NOT NULL,
    collection        TEXT,
    status            TEXT    NOT NULL,
    -- JSON object {intake, parse, policy, embed, index}.
    stages            TEXT    NOT NULL,
    -- JSON object.
    lineage           TEXT    NOT NULL,
    error_code        TEXT,
    created_at        TEXT    NOT NULL,
    updated_at        TEXT    NOT NULL,
    PRIMARY KEY (tenant_id, doc_id),
    UNIQUE (tenant_id, receipt_id)
);
CREATE INDEX documents_status ON documents (tenant_id, status, created_at);
