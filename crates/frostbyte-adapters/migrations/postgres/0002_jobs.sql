-- The durable job queue (see `frostbyte_core::queue`): jobs live beside the rows that cause them, so a job and
-- its cause commit in one transaction. Claims pick rows with `FOR UPDATE SKIP LOCKED`.

CREATE TABLE jobs (
    job_id             UUID        NOT NULL PRIMARY KEY,
    tenant_id          TEXT        NOT NULL REFERENCES tenants (tenant_id),
    stage              TEXT        NOT NULL,
    resource_id        TEXT        NOT NULL,
    -- Stage input: ids, hashes and versions, never document text.
    payload            JSONB       NOT NULL,
    dedupe_key         TEXT,
    -- queued | running | succeeded | dead | abandoned
    status             TEXT        NOT NULL,
    attempts           BIGINT      NOT NULL,
    max_attempts       BIGINT      NOT NULL,
    lease_owner        TEXT,
    lease_expires_at   TIMESTAMPTZ,
    run_after          TIMESTAMPTZ NOT NULL,
    last_error_code    TEXT,
    last_error_message TEXT,
    created_at         TIMESTAMPTZ NOT NULL,
    updated_at         TIMESTAMPTZ NOT NULL,
    first_attempt_at   TIMESTAMPTZ,
    last_attempt_at    TIMESTAMPTZ,
    finished_at        TIMESTAMPTZ
);
-- Idempotent enqueue: one job per tenant and key.
CREATE UNIQUE INDEX jobs_dedupe ON jobs (tenant_id, dedupe_key) WHERE dedupe_key IS NOT NULL;
-- Claim: a tenant's claimable jobs in order, and its live leases.
CREATE INDEX jobs_tenant_ready ON jobs (tenant_id, status, run_after);
CREATE INDEX jobs_tenant_lease ON jobs (tenant_id, status, lease_expires_at);
-- The dead-letter list, most recently failed first.
CREATE INDEX jobs_tenant_finished ON jobs (tenant_id, status, last_attempt_at);

-- One row per tenant that has ever had a job. A claim locks its tenant's row (`FOR UPDATE`) before counting
-- live leases and taking a job, so concurrent claimers cannot push a tenant past its concurrency cap; claims
-- for different tenants proceed in parallel. `last_claimed_at` is the fairness tie-break.
CREATE TABLE job_tenants (
    tenant_id       TEXT        NOT NULL PRIMARY KEY REFERENCES tenants (tenant_id),
    last_claimed_at TIMESTAMPTZ
);
