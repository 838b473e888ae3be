-- A chunk insert bumped its tenant's search generation and rewrote its document's change row once per row (two
-- upserts for every chunk of a document), which was about three quarters of the cost of inserting the rows. The
-- one statement that inserts chunks (`index::sqlite::swap_chunks_in_tx`) now records its documents' changes
-- itself, once per write: one bump of the generation, one change row per document. Deletes and updates keep their
-- per-row triggers (0007), which erasure, replacement, purges and reindex swaps rely on.
DROP TRIGGER chunks_generation_insert;
