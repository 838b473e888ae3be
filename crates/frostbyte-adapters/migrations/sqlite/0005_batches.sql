-- Batch intake (see `frostbyte_core::batch`): one row per batch and one per manifest file, so that
-- `GET /api/v1/ingest/{tenant}/batch/{batch_id}` survives restarts; and the tenant's metadata JSON Schema.
-- No document content: ids, declared names, sizes, hashes and outcomes only. Timestamps are TEXT in
-- `frostbyte_core::format_timestamp` form.

CREATE TABLE batches (
    tenant_id   TEXT    NOT NULL REFERENCES tenants (tenant_id),
    batch_id    TEXT    NOT NULL,
    file_count  INTEGER NOT NULL,
    collection  TEXT,
    submitter   TEXT,
    accepted    INTEGER NOT NULL,
    rejected    INTEGER NOT NULL,
    quarantined INTEGER NOT NULL,
    created_at  TEXT    NOT NULL,
    PRIMARY KEY (tenant_id, batch_id)
);

CREATE TABLE batch_files (
    tenant_id     TEXT    NOT NULL,
    batch_id      TEXT    NOT NULL,
    file_id       TEXT    NOT NULL,
    position      INTEGER NOT NULL,
    filename      TEXT    NOT NULL,
    declared_mime TEXT    NOT NULL,
    size_bytes    INTEGER NOT NULL,
    sha256        TEXT    NOT NULL,
    -- accepted | rejected | quarantined
    outcome       TEXT    NOT NULL,
    reason        TEXT,
    message       TEXT,
    doc_id        TEXT,
    receipt_id    TEXT    NOT NULL,
    scan_result   TEXT,
    signature     TEXT,
    PRIMARY KEY (tenant_id, batch_id, file_id),
    UNIQUE (tenant_id, receipt_id),
    FOREIGN KEY (tenant_id, batch_id) REFERENCES batches (tenant_id, batch_id)
);
CREATE INDEX batch_files_position ON batch_files (tenant_id, batch_id, position);

CREATE TABLE metadata_schemas (
    tenant_id  TEXT    NOT NULL PRIMARY KEY REFERENCES tenants (tenant_id),
    version    INTEGER NOT NULL,
    -- JSON Schema (a JSON object).
    schema     TEXT    NOT NULL,
    updated_at TEXT    NOT NULL
);

-- Quota checks: documents accepted today, raw bytes stored per distinct hash.
CREATE INDEX documents_created ON documents (tenant_id, created_at);
CREATE INDEX documents_raw_sha256 ON documents (tenant_id, raw_sha256);
