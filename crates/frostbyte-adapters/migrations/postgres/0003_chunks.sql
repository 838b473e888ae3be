-- The chunk index (see `frostbyte_core::index`): chunk text, provenance, policy outcome and vector. The keyword
-- index is a generated tsvector column with a GIN index, so it can never drift from the text. Vectors are
-- little-endian f32 bytes (no pgvector dependency); the exact search runs in the adapter.

CREATE TABLE chunks (
    tenant_id         TEXT        NOT NULL REFERENCES tenants (tenant_id),
    chunk_id          TEXT        NOT NULL,
    doc_id            TEXT        NOT NULL,
    position          BIGINT      NOT NULL,
    text              TEXT        NOT NULL,
    start_offset      BIGINT      NOT NULL,
    end_offset        BIGINT      NOT NULL,
    page_start        BIGINT,
    page_end          BIGINT,
    -- JSON array of strings.
    heading_path      TEXT        NOT NULL,
    kind              TEXT        NOT NULL,
    text_hash         TEXT        NOT NULL,
    classification    TEXT,
    collection        TEXT,
    metadata          JSONB       NOT NULL,
    quarantined       BOOLEAN     NOT NULL,
    embed_model       TEXT        NOT NULL,
    dimension         INTEGER     NOT NULL,
    vector            BYTEA       NOT NULL,
    source_sha256     TEXT        NOT NULL,
    original_filename TEXT        NOT NULL,
    ingested_at       TIMESTAMPTZ NOT NULL,
    text_tsv          TSVECTOR    GENERATED ALWAYS AS (to_tsvector('simple', text)) STORED,
    PRIMARY KEY (tenant_id, chunk_id)
);
CREATE INDEX chunks_doc ON chunks (tenant_id, doc_id, position);
CREATE INDEX chunks_tsv ON chunks USING GIN (text_tsv);
