-- Documents as the pipeline tracks them (see `frostbyte_core::documents`): the intake receipt, the sniffed type,
-- the raw sha256 (the raw blob's key), per-stage status and lineage. No document text: the canonical document
-- lives in the blob store and chunks in `chunks`.

CREATE TABLE documents (
    tenant_id         TEXT        NOT NULL REFERENCES tenants (tenant_id),
    doc_id            TEXT        NOT NULL,
    receipt_id        TEXT        NOT NULL,
    original_filename TEXT        NOT NULL,
    mime_type         TEXT        NOT NULL,
    size_bytes        BIGINT      NOT NULL,
    raw_sha256        TEXT        NOT NULL,
    metadata          JSONB       NOT NULL,
    collection        TEXT,
    status            TEXT        NOT NULL,
    -- {intake, parse, policy, embed, index}.
    stages            JSONB       NOT NULL,
    lineage           JSONB       NOT NULL,
    error_code        TEXT,
    created_at        TIMESTAMPTZ NOT NULL,
    updated_at        TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant_id, doc_id),
    UNIQUE (tenant_id, receipt_id)
);
CREATE INDEX documents_status ON documents (tenant_id, status, created_at);
