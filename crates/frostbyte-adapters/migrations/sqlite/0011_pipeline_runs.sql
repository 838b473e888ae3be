-- Pipeline runs (see `frostbyte_core::pipelines::run`): status, counts, the bound parameters (values the tenant
-- supplied for the run: ids, dates, paths; never document text) and who triggered the run. The run's job lives
-- in `jobs`. Timestamps are TEXT in `frostbyte_core::format_timestamp` form.

CREATE TABLE pipeline_runs (
    tenant_id         TEXT    NOT NULL REFERENCES tenants (tenant_id),
    run_id            TEXT    NOT NULL,
    domain            TEXT    NOT NULL,
    pipeline          TEXT    NOT NULL,
    -- pending | validating | running | completed | failed | cancelled
    status            TEXT    NOT NULL,
    -- JSON object.
    parameters        TEXT    NOT NULL,
    triggered_by      TEXT    NOT NULL,
    progress          REAL    NOT NULL,
    records_processed INTEGER NOT NULL,
    error_message     TEXT,
    job_id            TEXT    NOT NULL,
    cancel_requested  INTEGER NOT NULL,
    created_at        TEXT    NOT NULL,
    started_at        TEXT,
    completed_at      TEXT,
    updated_at        TEXT    NOT NULL,
    PRIMARY KEY (tenant_id, run_id)
);
CREATE INDEX pipeline_runs_history ON pipeline_runs (tenant_id, created_at);
CREATE INDEX pipeline_runs_unfinished ON pipeline_runs (status);

-- Pipeline schedules (see `frostbyte_core::pipelines::schedule`). A firing is a compare-and-set on
-- `next_run_at`, so one process fires each occurrence.
CREATE TABLE pipeline_schedules (
    tenant_id       TEXT    NOT NULL REFERENCES tenants (tenant_id),
    schedule_id     TEXT    NOT NULL,
    pipeline        TEXT    NOT NULL,
    cron_expression TEXT    NOT NULL,
    timezone        TEXT    NOT NULL,
    -- JSON object.
    parameters      TEXT    NOT NULL,
    is_enabled      INTEGER NOT NULL,
    last_run_at     TEXT,
    last_run_id     TEXT,
    next_run_at     TEXT,
    created_at      TEXT    NOT NULL,
    updated_at      TEXT    NOT NULL,
    PRIMARY KEY (tenant_id, schedule_id)
);
CREATE INDEX pipeline_schedules_due ON pipeline_schedules (is_enabled, next_run_at);
