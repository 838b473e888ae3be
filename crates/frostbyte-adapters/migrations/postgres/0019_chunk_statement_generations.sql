-- Search generations (0007) move once per statement that writes chunks, not once per chunk row. The row trigger
-- bumped the tenant's generation and rewrote the document's change row for every chunk: a document of 30 chunks
-- updated one `chunk_generations` row 30 times in its transaction, and a stage batch several hundred times,
-- each update adding a version that later updates in the same transaction had to walk past. Statement triggers
-- with transition tables see every row the statement wrote: one bump per tenant, one change row per document,
-- at the new generation. Tenants are taken in order, so two statements lock their generation rows alike.

DROP TRIGGER chunks_generation ON chunks;
DROP FUNCTION chunks_generation_trigger();
DROP FUNCTION chunks_record_change(TEXT, TEXT);

-- The rows a statement wrote are `old_chunks` (deletes, updates) and `new_chunks` (inserts, updates).
CREATE FUNCTION chunks_record_changes() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    c RECORD;
    g BIGINT;
BEGIN
    FOR c IN EXECUTE format(
        'SELECT tenant_id, array_agg(DISTINCT doc_id) AS docs FROM (%s) AS changed GROUP BY tenant_id ORDER BY tenant_id',
        CASE TG_OP
            WHEN 'INSERT' THEN 'SELECT tenant_id, doc_id FROM new_chunks'
            WHEN 'DELETE' THEN 'SELECT tenant_id, doc_id FROM old_chunks'
            ELSE 'SELECT tenant_id, doc_id FROM old_chunks UNION ALL SELECT tenant_id, doc_id FROM new_chunks'
        END)
    LOOP
        INSERT INTO chunk_generations AS cg (tenant_id, generation) VALUES (c.tenant_id, 1)
            ON CONFLICT (tenant_id) DO UPDATE SET generation = cg.generation + 1
            RETURNING cg.generation INTO g;
        INSERT INTO chunk_changes AS cc (tenant_id, doc_id, generation)
            SELECT c.tenant_id, d, g FROM unnest(c.docs) AS d
            ON CONFLICT (tenant_id, doc_id) DO UPDATE SET generation = EXCLUDED.generation;
    END LOOP;
    RETURN NULL;
END;
$$;

CREATE TRIGGER chunks_generation_insert AFTER INSERT ON chunks
    REFERENCING NEW TABLE AS new_chunks FOR EACH STATEMENT EXECUTE FUNCTION chunks_record_changes();
CREATE TRIGGER chunks_generation_delete AFTER DELETE ON chunks
    REFERENCING OLD TABLE AS old_chunks FOR EACH STATEMENT EXECUTE FUNCTION chunks_record_changes();
CREATE TRIGGER chunks_generation_update AFTER UPDATE ON chunks
    REFERENCING OLD TABLE AS old_chunks NEW TABLE AS new_chunks FOR EACH STATEMENT
    EXECUTE FUNCTION chunks_record_changes();
