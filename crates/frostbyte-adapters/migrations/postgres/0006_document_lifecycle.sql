-- The document lifecycle (see `frostbyte_core::lifecycle`): a generation per document, bumped by every
-- replacement and checked inside the transactions that write a stage's output, and tombstones of erased
-- documents. A tombstone keeps the id, the last generation, the raw sha256 and the time of erasure only:
-- filenames and metadata may be personal data.

ALTER TABLE documents ADD COLUMN generation BIGINT NOT NULL DEFAULT 1;

CREATE TABLE document_tombstones (
    tenant_id  TEXT        NOT NULL REFERENCES tenants (tenant_id),
    doc_id     TEXT        NOT NULL,
    generation BIGINT      NOT NULL,
    -- The raw blob's key, so that a repeated DELETE can finish a sweep an outage interrupted.
    raw_sha256 TEXT        NOT NULL,
    erased_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant_id, doc_id)
);

-- Erasure and replacement ask which live documents share a raw blob, and erasure removes a document's jobs.
CREATE INDEX documents_lifecycle_raw ON documents (tenant_id, raw_sha256);
CREATE INDEX jobs_lifecycle_resource ON jobs (tenant_id, resource_id);
