-- The durable job queue (see `frostbyte_core::queue`): jobs live beside the rows that cause them, so a job and
-- its cause commit in one transaction. Timestamps are TEXT in `frostbyte_core::format_timestamp` form.

CREATE TABLE jobs (
    job_id             TEXT    NOT NULL PRIMARY KEY,
    tenant_id          TEXT    NOT NULL REFERENCES tenants (tenant_id),
    stage              TEXT    NOT NULL,
    resource_id        TEXT    NOT NULL,
    -- Stage input as JSON text: ids, hashes and versions, never document text.
    payload            TEXT    NOT NULL,
    dedupe_key         TEXT,
    -- queued | running | succeeded | dead | abandoned
    status             TEXT    NOT NULL,
    attempts           INTEGER NOT NULL,
    max_attempts       INTEGER NOT NULL,
    lease_owner        TEXT,
    lease_expires_at   TEXT,
    run_after          TEXT    NOT NULL,
    last_error_code    TEXT,
    last_error_message TEXT,
    created_at         TEXT    NOT NULL,
    updated_at         TEXT    NOT NULL,
    first_attempt_at   TEXT,
    last_attempt_at    TEXT,
    finished_at        TEXT
);
-- Idempotent enqueue: one job per tenant and key.
CREATE UNIQUE INDEX jobs_dedupe ON jobs (tenant_id, dedupe_key) WHERE dedupe_key IS NOT NULL;
-- Claim: a tenant's claimable jobs in order, and its live leases.
CREATE INDEX jobs_tenant_ready ON jobs (tenant_id, status, run_after);
CREATE INDEX jobs_tenant_lease ON jobs (tenant_id, status, lease_expires_at);
-- The dead-letter list, most recently failed first.
CREATE INDEX jobs_tenant_finished ON jobs (tenant_id, status, last_attempt_at);

-- One row per tenant that has ever had a job: when it was last served (the fairness tie-break). On PostgreSQL
-- claims also lock it, so the per-tenant concurrency cap holds under concurrent claimers; SQLite serialises
-- writers anyway.
CREATE TABLE job_tenants (
    tenant_id       TEXT NOT NULL PRIMARY KEY REFERENCES tenants (tenant_id),
    last_claimed_at TEXT
);
