-- `documents_lifecycle_raw` (0006) indexed exactly what `documents_raw_sha256` (0005) already did, (tenant_id,
-- raw_sha256): every document insert and replacement wrote both. The remaining index serves the same lookups
-- (intake's duplicate check, and which live documents share a raw blob on erasure and replacement).
DROP INDEX IF EXISTS documents_lifecycle_raw;
