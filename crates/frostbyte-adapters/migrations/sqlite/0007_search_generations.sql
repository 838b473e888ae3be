-- Change tracking for derived search indexes (`frostbyte_adapters::search`). Every write to `chunks`, whatever
-- path makes it, bumps the tenant's generation and records which document changed at that generation, inside the
-- writer's own transaction. An in-memory index compares its generation with `chunk_generations` before each query
-- and reloads only the documents in `chunk_changes` newer than it, so several processes sharing one database stay
-- consistent. Rows hold ids and counters only, never chunk text.

CREATE TABLE chunk_generations (
    tenant_id  TEXT    NOT NULL PRIMARY KEY,
    generation INTEGER NOT NULL
);

CREATE TABLE chunk_changes (
    tenant_id  TEXT    NOT NULL,
    doc_id     TEXT    NOT NULL,
    generation INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, doc_id)
);
CREATE INDEX chunk_changes_generation ON chunk_changes (tenant_id, generation);

CREATE TRIGGER chunks_generation_insert AFTER INSERT ON chunks
BEGIN
    INSERT INTO chunk_generations (tenant_id, generation) VALUES (NEW.tenant_id, 1)
        ON CONFLICT (tenant_id) DO UPDATE SET generation = generation + 1;
    INSERT INTO chunk_changes (tenant_id, doc_id, generation)
        VALUES (NEW.tenant_id, NEW.doc_id,
                (SELECT generation FROM chunk_generations WHERE tenant_id = NEW.tenant_id))
        ON CONFLICT (tenant_id, doc_id) DO UPDATE SET generation = excluded.generation;
END;

CREATE TRIGGER chunks_generation_delete AFTER DELETE ON chunks
BEGIN
    INSERT INTO chunk_generations (tenant_id, generation) VALUES (OLD.tenant_id, 1)
        ON CONFLICT (tenant_id) DO UPDATE SET generation = generation + 1;
    INSERT INTO chunk_changes (tenant_id, doc_id, generation)
        VALUES (OLD.tenant_id, OLD.doc_id,
                (SELECT generation FROM chunk_generations WHERE tenant_id = OLD.tenant_id))
        ON CONFLICT (tenant_id, doc_id) DO UPDATE SET generation = excluded.generation;
END;

CREATE TRIGGER chunks_generation_update AFTER UPDATE ON chunks
BEGIN
    INSERT INTO chunk_generations (tenant_id, generation) VALUES (OLD.tenant_id, 1)
        ON CONFLICT (tenant_id) DO UPDATE SET generation = generation + 1;
    INSERT INTO chunk_changes (tenant_id, doc_id, generation)
        VALUES (OLD.tenant_id, OLD.doc_id,
                (SELECT generation FROM chunk_generations WHERE tenant_id = OLD.tenant_id))
        ON CONFLICT (tenant_id, doc_id) DO UPDATE SET generation = excluded.generation;
    INSERT INTO chunk_generations (tenant_id, generation) VALUES (NEW.tenant_id, 1)
        ON CONFLICT (tenant_id) DO UPDATE SET generation = generation + 1;
    INSERT INTO chunk_changes (tenant_id, doc_id, generation)
        VALUES (NEW.tenant_id, NEW.doc_id,
                (SELECT generation FROM chunk_generations WHERE tenant_id = NEW.tenant_id))
        ON CONFLICT (tenant_id, doc_id) DO UPDATE SET generation = excluded.generation;
END;
