-- `frostbyte ingest` asks "does this tenant already have a document under this name?" for every file it walks;
-- without an index that is a scan of the tenant's documents per file.
CREATE INDEX documents_by_filename ON documents (tenant_id, original_filename, created_at);
