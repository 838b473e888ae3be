-- Chaining, schedule overlap and webhook deliveries (see `frostbyte_core::pipelines::{run, schedule, webhook}`).

-- A chained follow-up knows its parent and its place in the parent's list; the pair is unique, so a follow-up
-- can never be created twice. A run queued behind a schedule's previous run names the run it waits for.
ALTER TABLE pipeline_runs ADD COLUMN parent_run_id TEXT;
ALTER TABLE pipeline_runs ADD COLUMN chain_index INTEGER;
ALTER TABLE pipeline_runs ADD COLUMN chain_depth INTEGER NOT NULL DEFAULT 0;
ALTER TABLE pipeline_runs ADD COLUMN waits_for_run_id TEXT;
CREATE UNIQUE INDEX pipeline_runs_chain ON pipeline_runs (tenant_id, parent_run_id, chain_index)
    WHERE parent_run_id IS NOT NULL;
CREATE INDEX pipeline_runs_waiting ON pipeline_runs (tenant_id, waits_for_run_id)
    WHERE waits_for_run_id IS NOT NULL;

-- skip | queue
ALTER TABLE pipeline_schedules ADD COLUMN overlap TEXT NOT NULL DEFAULT 'skip';
ALTER TABLE pipeline_schedules ADD COLUMN last_skipped_at TIMESTAMPTZ;
ALTER TABLE pipeline_schedules ADD COLUMN skipped_count BIGINT NOT NULL DEFAULT 0;

-- One webhook notification of one run ending. Written with the run's terminal transition; the body is built
-- from the run when sent, and the secret is only named.
CREATE TABLE pipeline_webhook_deliveries (
    tenant_id        TEXT        NOT NULL REFERENCES tenants (tenant_id),
    delivery_id      TEXT        NOT NULL,
    run_id           TEXT        NOT NULL,
    url              TEXT        NOT NULL,
    -- completed | failed | cancelled
    event            TEXT        NOT NULL,
    secret_env       TEXT,
    -- pending | delivered | failed
    status           TEXT        NOT NULL,
    attempts         INTEGER     NOT NULL,
    next_attempt_at  TIMESTAMPTZ,
    last_status_code INTEGER,
    last_error       TEXT,
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL,
    delivered_at     TIMESTAMPTZ,
    PRIMARY KEY (tenant_id, delivery_id)
);
CREATE INDEX pipeline_webhook_deliveries_due ON pipeline_webhook_deliveries (status, next_attempt_at);
CREATE INDEX pipeline_webhook_deliveries_run ON pipeline_webhook_deliveries (tenant_id, run_id);

-- Every attempt's outcome: the HTTP status or the error, never the body.
CREATE TABLE pipeline_webhook_attempts (
    tenant_id    TEXT        NOT NULL,
    delivery_id  TEXT        NOT NULL,
    attempt      INTEGER     NOT NULL,
    attempted_at TIMESTAMPTZ NOT NULL,
    status_code  INTEGER,
    error        TEXT,
    delivered    BOOLEAN     NOT NULL,
    PRIMARY KEY (tenant_id, delivery_id, attempt),
    FOREIGN KEY (tenant_id, delivery_id) REFERENCES pipeline_webhook_deliveries (tenant_id, delivery_id)
);
