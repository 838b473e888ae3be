-- `documents.sync` (see `frostbyte_core::pipelines::sync`): per tenant, source and path, what the last sync took in
-- (size, modification stamp or ETag, sha256, the document it became), so an unchanged corpus is recognised from a
-- listing alone. Paths and hashes only, never content.
CREATE TABLE sync_files (
    tenant_id  TEXT        NOT NULL REFERENCES tenants (tenant_id),
    source     TEXT        NOT NULL,
    path       TEXT        NOT NULL,
    size_bytes BIGINT      NOT NULL,
    version    TEXT        NOT NULL,
    sha256     TEXT        NOT NULL,
    doc_id     TEXT        NOT NULL,
    synced_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant_id, source, path)
);

-- What a completed run's processor reported (`added`, `unchanged`, `rows_rejected`, ...).
ALTER TABLE pipeline_runs ADD COLUMN counts JSONB NOT NULL DEFAULT '{}'::jsonb;
