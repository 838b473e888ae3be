-- The raw bytes each tenant stores (each distinct raw object once), kept by triggers on `documents` so that
-- intake's storage-quota check reads one row instead of summing every document of the tenant for every file it
-- takes in (which made taking in n files cost O(n²)). Every path that adds, replaces or removes a document row
-- goes through these triggers, so the count cannot drift from what the rows say.
CREATE TABLE tenant_raw_usage (
    tenant_id TEXT    NOT NULL PRIMARY KEY,
    raw_bytes INTEGER NOT NULL
);

INSERT INTO tenant_raw_usage (tenant_id, raw_bytes)
SELECT tenant_id, SUM(size)
FROM (SELECT tenant_id, MAX(size_bytes) AS size FROM documents GROUP BY tenant_id, raw_sha256)
GROUP BY tenant_id;

-- A row whose raw object no other row of its tenant holds adds the object's size.
CREATE TRIGGER tenant_raw_usage_insert AFTER INSERT ON documents
WHEN NOT EXISTS (
    SELECT 1 FROM documents
    WHERE tenant_id = NEW.tenant_id AND raw_sha256 = NEW.raw_sha256 AND doc_id <> NEW.doc_id
)
BEGIN
    INSERT INTO tenant_raw_usage (tenant_id, raw_bytes) VALUES (NEW.tenant_id, NEW.size_bytes)
    ON CONFLICT (tenant_id) DO UPDATE SET raw_bytes = raw_bytes + excluded.raw_bytes;
END;

-- The last row holding a raw object takes the object's size with it.
CREATE TRIGGER tenant_raw_usage_delete AFTER DELETE ON documents
WHEN NOT EXISTS (SELECT 1 FROM documents WHERE tenant_id = OLD.tenant_id AND raw_sha256 = OLD.raw_sha256)
BEGIN
    UPDATE tenant_raw_usage SET raw_bytes = raw_bytes - OLD.size_bytes WHERE tenant_id = OLD.tenant_id;
END;

-- Replacing a document's content is a removal of the old object and an addition of the new one.
CREATE TRIGGER tenant_raw_usage_replace_old AFTER UPDATE OF raw_sha256, size_bytes ON documents
WHEN (OLD.raw_sha256 <> NEW.raw_sha256 OR OLD.size_bytes <> NEW.size_bytes)
    AND NOT EXISTS (
        SELECT 1 FROM documents
        WHERE tenant_id = OLD.tenant_id AND raw_sha256 = OLD.raw_sha256 AND doc_id <> NEW.doc_id
    )
BEGIN
    UPDATE tenant_raw_usage SET raw_bytes = raw_bytes - OLD.size_bytes WHERE tenant_id = OLD.tenant_id;
END;

CREATE TRIGGER tenant_raw_usage_replace_new AFTER UPDATE OF raw_sha256, size_bytes ON documents
WHEN (OLD.raw_sha256 <> NEW.raw_sha256 OR OLD.size_bytes <> NEW.size_bytes)
    AND NOT EXISTS (
        SELECT 1 FROM documents
        WHERE tenant_id = NEW.tenant_id AND raw_sha256 = NEW.raw_sha256 AND doc_id <> NEW.doc_id
    )
BEGIN
    INSERT INTO tenant_raw_usage (tenant_id, raw_bytes) VALUES (NEW.tenant_id, NEW.size_bytes)
    ON CONFLICT (tenant_id) DO UPDATE SET raw_bytes = raw_bytes + excluded.raw_bytes;
END;
