-- The raw bytes each tenant stores (each distinct raw object once), kept by a trigger on `documents` so that
-- intake's storage-quota check reads one row instead of summing every document of the tenant for every file it
-- takes in (which made taking in n files cost O(n²)). Every path that adds, replaces or removes a document row
-- goes through the trigger, so the count cannot drift from what the rows say.
CREATE TABLE tenant_raw_usage (
    tenant_id TEXT   NOT NULL PRIMARY KEY,
    raw_bytes BIGINT NOT NULL
);

INSERT INTO tenant_raw_usage (tenant_id, raw_bytes)
SELECT tenant_id, SUM(size)
FROM (SELECT tenant_id, MAX(size_bytes) AS size FROM documents GROUP BY tenant_id, raw_sha256) AS objects
GROUP BY tenant_id;

-- Concurrent transactions of one tenant take the tenant's usage row first (creating it if need be), so each
-- decides whether a raw object is new or gone only after the others that changed the tenant's documents have
-- committed: two uploads of the same new bytes count them once.
CREATE FUNCTION tenant_raw_usage_track() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    tenant TEXT := CASE WHEN TG_OP = 'DELETE' THEN OLD.tenant_id ELSE NEW.tenant_id END;
    delta BIGINT := 0;
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.raw_sha256 = NEW.raw_sha256 AND OLD.size_bytes = NEW.size_bytes THEN
        RETURN NULL;
    END IF;
    INSERT INTO tenant_raw_usage (tenant_id, raw_bytes) VALUES (tenant, 0) ON CONFLICT (tenant_id) DO NOTHING;
    PERFORM 1 FROM tenant_raw_usage WHERE tenant_id = tenant FOR UPDATE;
    IF TG_OP IN ('UPDATE', 'DELETE') AND NOT EXISTS (
        SELECT 1 FROM documents
        WHERE tenant_id = OLD.tenant_id AND raw_sha256 = OLD.raw_sha256 AND doc_id <> OLD.doc_id
    ) THEN
        delta := delta - OLD.size_bytes;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') AND NOT EXISTS (
        SELECT 1 FROM documents
        WHERE tenant_id = NEW.tenant_id AND raw_sha256 = NEW.raw_sha256 AND doc_id <> NEW.doc_id
    ) THEN
        delta := delta + NEW.size_bytes;
    END IF;
    IF delta <> 0 THEN
        UPDATE tenant_raw_usage SET raw_bytes = raw_bytes + delta WHERE tenant_id = tenant;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER tenant_raw_usage_track AFTER INSERT OR DELETE OR UPDATE OF raw_sha256, size_bytes ON documents
    FOR EACH ROW EXECUTE FUNCTION tenant_raw_usage_track();
