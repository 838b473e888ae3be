-- The chunk index (see `frostbyte_core::index`): chunk text, provenance, policy outcome and vector, with an FTS5
-- keyword index kept in step inside the same transactions. Timestamps are TEXT in
-- `frostbyte_core::format_timestamp` form; vectors are little-endian f32 bytes.

CREATE TABLE chunks (
    -- The FTS5 rowid of the chunk's keyword entry.
    id                INTEGER NOT NULL PRIMARY KEY,
    tenant_id         TEXT    NOT NULL REFERENCES tenants (tenant_id),
    chunk_id          TEXT    NOT NULL,
    doc_id            TEXT    NOT NULL,
    position          INTEGER NOT NULL,
    text              TEXT    NOT NULL,
    start_offset      INTEGER NOT NULL,
    end_offset        INTEGER NOT NULL,
    page_start        INTEGER,
    page_end          INTEGER,
    -- JSON array of strings.
    heading_path      TEXT    NOT NULL,
    kind              TEXT    NOT NULL,
    text_hash         TEXT    NOT NULL,
    classification    TEXT,
    collection        TEXT,
    -- JSON object.
    metadata          TEXT    NOT NULL,
    quarantined       INTEGER NOT NULL,
    embed_model       TEXT    NOT NULL,
    dimension         INTEGER NOT NULL,
    vector            BLOB    NOT NULL,
    source_sha256     TEXT    NOT NULL,
    original_filename TEXT    NOT NULL,
    ingested_at       TEXT    NOT NULL,
    UNIQUE (tenant_id, chunk_id)
);
CREATE INDEX chunks_doc ON chunks (tenant_id, doc_id, position);

-- External-content FTS5 table over `chunks.text`: the adapter inserts and deletes its entries explicitly (the
-- 'delete' command needs the old text, read from `chunks` before the row goes).
CREATE VIRTUAL TABLE chunks_fts USING fts5 (text, content = 'chunks', content_rowid = 'id');
