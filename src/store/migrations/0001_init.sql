-- vmshot store, schema 1. Times are microseconds since the Unix epoch (UTC):
-- integers sort and compare exactly, and Nova shows microseconds.

-- Capture jobs (Oracle Compute Classic's screen capture requests).
CREATE TABLE jobs (
    id                 INTEGER PRIMARY KEY,
    name               TEXT    NOT NULL UNIQUE,
    dialect            TEXT    NOT NULL,
    principal          TEXT    NOT NULL,
    project            TEXT,
    instance           TEXT    NOT NULL,
    domain_uuid        TEXT    NOT NULL,
    state              TEXT    NOT NULL CHECK (state IN
                           ('queued', 'pending', 'in-progress', 'uploading', 'complete', 'error')),
    error_reason       TEXT,
    cancel             INTEGER NOT NULL DEFAULT 0 CHECK (cancel IN (0, 1)),
    cancellation_state TEXT    NOT NULL DEFAULT 'not_requested' CHECK (cancellation_state IN
                           ('not_requested', 'requested', 'completed', 'failed')),
    cancellation_error TEXT,
    creation_time      INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL,
    media_path         TEXT,
    media_uri          TEXT,
    media_sha256       TEXT,
    media_bytes        INTEGER CHECK (media_bytes IS NULL OR media_bytes >= 0),
    request_id         TEXT    NOT NULL
);
CREATE INDEX jobs_owner ON jobs (dialect, principal, name);
CREATE INDEX jobs_created ON jobs (creation_time, id);
CREATE INDEX jobs_unfinished ON jobs (state) WHERE state NOT IN ('complete', 'error');

-- Nova's instance actions: every capture, whichever dialect asked for it.
CREATE TABLE actions (
    id            INTEGER PRIMARY KEY,
    request_id    TEXT    NOT NULL,
    instance_uuid TEXT    NOT NULL,
    project_id    TEXT,
    user_id       TEXT,
    action        TEXT    NOT NULL,
    message       TEXT,
    start_time    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    UNIQUE (instance_uuid, request_id)
);
CREATE INDEX actions_newest ON actions (instance_uuid, start_time DESC, id DESC);
CREATE INDEX actions_updated ON actions (updated_at);

CREATE TABLE action_events (
    id          INTEGER PRIMARY KEY,
    action_id   INTEGER NOT NULL REFERENCES actions (id) ON DELETE CASCADE,
    event       TEXT    NOT NULL,
    start_time  INTEGER NOT NULL,
    finish_time INTEGER,
    result      TEXT CHECK (result IS NULL OR result IN ('Success', 'Error')),
    traceback   TEXT,
    details     TEXT,
    host        TEXT,
    UNIQUE (action_id, event)
);

-- Replay nonces, per dialect; a row past expires_at may be taken again.
CREATE TABLE nonces (
    dialect    TEXT    NOT NULL,
    key        TEXT    NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (dialect, key)
) WITHOUT ROWID;

-- Per-guest intervals: the next time a rule lets a domain be captured.
CREATE TABLE throttle_slots (
    rule         TEXT    NOT NULL,
    domain_uuid  TEXT    NOT NULL,
    next_allowed INTEGER NOT NULL,
    PRIMARY KEY (rule, domain_uuid)
) WITHOUT ROWID;
