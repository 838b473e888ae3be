-- Frostbyte metadata schema for SQLite: tenants, API keys and the per-tenant audit hash chain.
--
-- Timestamps are TEXT in `frostbyte_core::format_timestamp` form (UTC, microseconds, `Z`), which sorts and
-- compares correctly as text. Audit `details` hold `frostbyte_core::audit::canonical_json`, so a row hashes
-- back to the value it was sealed with byte for byte.

CREATE TABLE tenants (
    tenant_id      TEXT    NOT NULL PRIMARY KEY,
    tenant_name    TEXT    NOT NULL,
    contact_email  TEXT    NOT NULL,
    tier           TEXT    NOT NULL,
    state          TEXT    NOT NULL,
    state_reason   TEXT,
    config         TEXT    NOT NULL,
    config_version INTEGER NOT NULL,
    created_at     TEXT    NOT NULL,
    updated_at     TEXT    NOT NULL
);
CREATE INDEX tenants_created ON tenants (created_at, tenant_id);
CREATE INDEX tenants_state_created ON tenants (state, created_at, tenant_id);

CREATE TABLE api_keys (
    key_id     TEXT NOT NULL PRIMARY KEY,
    tenant_id  TEXT NOT NULL REFERENCES tenants (tenant_id),
    name       TEXT NOT NULL,
    prefix     TEXT NOT NULL,
    key_hash   TEXT NOT NULL UNIQUE,
    -- Comma-separated scope names, e.g. `ingest,query`.
    scopes     TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT,
    revoked_at TEXT
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id, created_at);

-- No foreign key to tenants: the audit log outlives everything it records.
CREATE TABLE audit_events (
    tenant_id     TEXT    NOT NULL,
    seq           INTEGER NOT NULL,
    event_id      TEXT    NOT NULL UNIQUE,
    event_type    TEXT    NOT NULL,
    timestamp     TEXT    NOT NULL,
    actor         TEXT    NOT NULL,
    resource_type TEXT    NOT NULL,
    resource_id   TEXT    NOT NULL,
    details       TEXT    NOT NULL,
    prev_hash     TEXT    NOT NULL,
    hash          TEXT    NOT NULL,
    PRIMARY KEY (tenant_id, seq)
);
CREATE INDEX audit_events_type ON audit_events (tenant_id, event_type);
CREATE INDEX audit_events_resource ON audit_events (tenant_id, resource_id);
CREATE INDEX audit_events_timestamp ON audit_events (tenant_id, timestamp);

-- The head of each tenant's chain: the last sequence number and hash. Appends read and advance it inside the
-- (IMMEDIATE) write transaction, so two appends can never link to the same predecessor.
CREATE TABLE audit_heads (
    tenant_id TEXT    NOT NULL PRIMARY KEY,
    seq       INTEGER NOT NULL,
    hash      TEXT    NOT NULL
);

-- Audit rows are append-only, enforced here rather than trusted to the code. Tests (and the CLI's tamper
-- tests) drop these triggers by name to simulate tampering; keep the names stable.
CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END;

CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END;

-- A chain head only ever moves forward by one, and is never removed.
CREATE TRIGGER audit_heads_advance_only BEFORE UPDATE ON audit_heads
WHEN NEW.tenant_id <> OLD.tenant_id OR NEW.seq <> OLD.seq + 1
BEGIN
    SELECT RAISE(ABORT, 'audit_heads only advance by one');
END;

CREATE TRIGGER audit_heads_no_delete BEFORE DELETE ON audit_heads
BEGIN
    SELECT RAISE(ABORT, 'audit_heads are never removed');
END;
