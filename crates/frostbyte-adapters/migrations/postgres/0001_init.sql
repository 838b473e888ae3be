-- Frostbyte metadata schema for PostgreSQL: tenants, API keys and the per-tenant audit hash chain.
--
-- Audit `details` hold `frostbyte_core::audit::canonical_json` as TEXT (not jsonb, which would reorder and
-- reformat it), so a row hashes back to the value it was sealed with byte for byte. Timestamps are timestamptz,
-- which keeps the microseconds the audit hash covers.

CREATE TABLE tenants (
    tenant_id      TEXT        NOT NULL PRIMARY KEY,
    tenant_name    TEXT        NOT NULL,
    contact_email  TEXT        NOT NULL,
    tier           TEXT        NOT NULL,
    state          TEXT        NOT NULL,
    state_reason   TEXT,
    -- The tenant's config as JSON text (`TenantConfig`).
    config         TEXT        NOT NULL,
    config_version BIGINT      NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL
);
CREATE INDEX tenants_created ON tenants (created_at, tenant_id);
CREATE INDEX tenants_state_created ON tenants (state, created_at, tenant_id);

CREATE TABLE api_keys (
    key_id     UUID        NOT NULL PRIMARY KEY,
    tenant_id  TEXT        NOT NULL REFERENCES tenants (tenant_id),
    name       TEXT        NOT NULL,
    prefix     TEXT        NOT NULL,
    key_hash   TEXT        NOT NULL UNIQUE,
    -- Comma-separated scope names, e.g. `ingest,query`.
    scopes     TEXT        NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ,
    revoked_at TIMESTAMPTZ
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id, created_at);

-- No foreign key to tenants: the audit log outlives everything it records.
CREATE TABLE audit_events (
    tenant_id     TEXT        NOT NULL,
    seq           BIGINT      NOT NULL,
    event_id      UUID        NOT NULL UNIQUE,
    event_type    TEXT        NOT NULL,
    "timestamp"   TIMESTAMPTZ NOT NULL,
    actor         TEXT        NOT NULL,
    resource_type TEXT        NOT NULL,
    resource_id   TEXT        NOT NULL,
    details       TEXT        NOT NULL,
    prev_hash     TEXT        NOT NULL,
    hash          TEXT        NOT NULL,
    PRIMARY KEY (tenant_id, seq)
);
CREATE INDEX audit_events_type ON audit_events (tenant_id, event_type);
CREATE INDEX audit_events_resource ON audit_events (tenant_id, resource_id);
CREATE INDEX audit_events_timestamp ON audit_events (tenant_id, "timestamp");

-- The head of each tenant's chain. An append locks its tenant's row (`SELECT ... FOR UPDATE`) before reading
-- it, so appends to one tenant serialise and never fork the chain, while other tenants proceed in parallel.
-- A row with seq 0 is a placeholder created by the first append; it only becomes visible once that append
-- commits, by which time it has advanced to 1.
CREATE TABLE audit_heads (
    tenant_id TEXT   NOT NULL PRIMARY KEY,
    seq       BIGINT NOT NULL,
    hash      TEXT   NOT NULL
);

-- Audit rows are append-only, enforced here rather than trusted to the code. Tests (and the CLI's tamper
-- tests) drop these triggers by name to simulate tampering; keep the names stable.
CREATE FUNCTION audit_events_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only (% refused)', TG_OP;
END;
$$;

CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only();

-- A chain head only ever moves forward by one, and is never removed.
CREATE FUNCTION audit_heads_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF NEW.tenant_id = OLD.tenant_id AND NEW.seq = OLD.seq + 1 THEN
            RETURN NEW;
        END IF;
    END IF;
    RAISE EXCEPTION 'audit_heads only advance by one (% refused)', TG_OP;
END;
$$;

CREATE TRIGGER audit_heads_advance_only BEFORE UPDATE ON audit_heads
    FOR EACH ROW EXECUTE FUNCTION audit_heads_guard();
CREATE TRIGGER audit_heads_no_delete BEFORE DELETE ON audit_heads
    FOR EACH ROW EXECUTE FUNCTION audit_heads_guard();
CREATE TRIGGER audit_heads_no_truncate BEFORE TRUNCATE ON audit_heads
    FOR EACH STATEMENT EXECUTE FUNCTION audit_heads_guard();
