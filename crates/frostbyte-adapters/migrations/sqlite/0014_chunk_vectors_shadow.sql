-- Shadow vectors of a `documents.reindex` run (see `frostbyte_core::reindex`): the new model's vector for each
-- chunk, keyed by (tenant, run, chunk) and tagged with the text hash it was embedded from. Searches never read
-- this table; the swap copies the vectors onto `chunks` in one transaction and deletes the run's rows. A shadow
-- row goes with its chunk (erasure, replacement, purge) through the cascade, so nothing derived from an erased
-- document outlives it here. Rows hold vectors and ids only, never text.

CREATE TABLE chunk_vectors_shadow (
    tenant_id   TEXT    NOT NULL,
    run_id      TEXT    NOT NULL,
    chunk_id    TEXT    NOT NULL,
    text_hash   TEXT    NOT NULL,
    embed_model TEXT    NOT NULL,
    dimension   INTEGER NOT NULL,
    -- Little-endian f32 bytes, like `chunks.vector`.
    vector      BLOB    NOT NULL,
    created_at  TEXT    NOT NULL,
    PRIMARY KEY (tenant_id, run_id, chunk_id),
    FOREIGN KEY (tenant_id, chunk_id) REFERENCES chunks (tenant_id, chunk_id) ON DELETE CASCADE
);
-- For the cascade from `chunks` and the swap's join.
CREATE INDEX chunk_vectors_shadow_chunk ON chunk_vectors_shadow (tenant_id, chunk_id);
