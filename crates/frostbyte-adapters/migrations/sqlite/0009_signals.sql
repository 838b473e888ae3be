-- Signals (see `frostbyte_core::signals`): events deduplicated per tenant by content hash, feature-set versions,
-- per-entity engine checkpoints, and the online feature rows. Event times, window ends and watermarks are
-- microseconds since the Unix epoch (INTEGER), identical on both dialects; JSON is stored as TEXT.

CREATE TABLE signal_events (
    tenant_id    TEXT    NOT NULL REFERENCES tenants (tenant_id),
    content_hash TEXT    NOT NULL,
    entity_id    TEXT    NOT NULL,
    event_time   INTEGER NOT NULL,
    -- The sequence, or the smallest 64-bit integer when the event has none (the replay order key).
    seq_key      INTEGER NOT NULL,
    sequence     INTEGER,
    source       TEXT    NOT NULL,
    trace_id     TEXT,
    payload      TEXT    NOT NULL,
    received_at  INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, content_hash)
);
CREATE INDEX signal_events_replay ON signal_events (tenant_id, event_time, seq_key, content_hash);

CREATE TABLE signal_feature_sets (
    tenant_id  TEXT    NOT NULL REFERENCES tenants (tenant_id),
    name       TEXT    NOT NULL,
    version    INTEGER NOT NULL,
    definition TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, name, version)
);

CREATE TABLE signal_states (
    tenant_id   TEXT    NOT NULL REFERENCES tenants (tenant_id),
    feature_set TEXT    NOT NULL,
    version     INTEGER NOT NULL,
    entity_id   TEXT    NOT NULL,
    revision    INTEGER NOT NULL,
    watermark   INTEGER,
    state       TEXT    NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, feature_set, version, entity_id)
);

CREATE TABLE signal_features (
    tenant_id   TEXT    NOT NULL REFERENCES tenants (tenant_id),
    entity_id   TEXT    NOT NULL,
    window_end  INTEGER NOT NULL,
    feature_set TEXT    NOT NULL,
    version     INTEGER NOT NULL,
    revision    INTEGER NOT NULL,
    -- {window: {aggregate: value}}
    feature_values TEXT NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, entity_id, window_end, feature_set, version)
);
CREATE INDEX signal_features_latest ON signal_features (tenant_id, feature_set, version, entity_id, window_end);
