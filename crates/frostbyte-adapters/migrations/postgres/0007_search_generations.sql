-- Change tracking for derived search indexes (`frostbyte_adapters::search`). Every write to `chunks`, whatever
-- path makes it, bumps the tenant's generation and records which document changed at that generation, inside the
-- writer's own transaction. The bump locks the tenant's generation row until commit, so one tenant's chunk writes
-- commit in generation order: a reader that sees generation g has seen every change up to g. An in-memory index
-- compares its generation with `chunk_generations` before each query and reloads only the documents in
-- `chunk_changes` newer than it, so several processes sharing one database stay consistent. Rows hold ids and
-- counters only, never chunk text.

CREATE TABLE chunk_generations (
    tenant_id  TEXT   NOT NULL PRIMARY KEY,
    generation BIGINT NOT NULL
);

CREATE TABLE chunk_changes (
    tenant_id  TEXT   NOT NULL,
    doc_id     TEXT   NOT NULL,
    generation BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, doc_id)
);
CREATE INDEX chunk_changes_generation ON chunk_changes (tenant_id, generation);

CREATE FUNCTION chunks_record_change(t TEXT, d TEXT) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    g BIGINT;
BEGIN
    INSERT INTO chunk_generations AS cg (tenant_id, generation) VALUES (t, 1)
        ON CONFLICT (tenant_id) DO UPDATE SET generation = cg.generation + 1
        RETURNING cg.generation INTO g;
    INSERT INTO chunk_changes AS cc (tenant_id, doc_id, generation) VALUES (t, d, g)
        ON CONFLICT (tenant_id, doc_id) DO UPDATE SET generation = EXCLUDED.generation;
END;
$$;

CREATE FUNCTION chunks_generation_trigger() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        PERFORM chunks_record_change(OLD.tenant_id, OLD.doc_id);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        PERFORM chunks_record_change(NEW.tenant_id, NEW.doc_id);
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER chunks_generation AFTER INSERT OR UPDATE OR DELETE ON chunks
    FOR EACH ROW EXECUTE FUNCTION chunks_generation_trigger();
