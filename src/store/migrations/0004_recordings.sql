-- Screen recordings (service::recordings). A row outlives its domain, so the
-- domain's name, instance id and owner are kept as they were at the start.
-- Files are named, not pathed: they live in the recordings directory.
CREATE TABLE recordings (
    id             TEXT    PRIMARY KEY,
    domain_uuid    TEXT    NOT NULL,
    domain_name    TEXT    NOT NULL,
    instance_id    TEXT,
    domain_project TEXT,
    domain_user    TEXT,
    kind           TEXT    NOT NULL CHECK (kind IN ('FULL', 'INTERVAL', 'OPERATION', 'SESSION')),
    status         TEXT    NOT NULL CHECK (status IN ('RECORDING', 'REC_COMPLETED', 'UPLOADING',
                               'UPLOAD_COMPLETED', 'REC_FAILED', 'UPLOAD_FAILED')),
    reason         TEXT,
    dialect        TEXT    NOT NULL,
    principal      TEXT    NOT NULL,
    project        TEXT,
    request_id     TEXT    NOT NULL,
    -- The recording's parameters (fps, interval, triggers...), JSON.
    params         TEXT    NOT NULL,
    start_time     INTEGER NOT NULL,
    end_time       INTEGER,
    updated_at     INTEGER NOT NULL,
    duration_ms    INTEGER NOT NULL DEFAULT 0 CHECK (duration_ms >= 0),
    frames         INTEGER NOT NULL DEFAULT 0 CHECK (frames >= 0),
    video_name     TEXT,
    video_bytes    INTEGER CHECK (video_bytes IS NULL OR video_bytes >= 0),
    video_sha256   TEXT,
    events_name    TEXT,
    events_bytes   INTEGER CHECK (events_bytes IS NULL OR events_bytes >= 0),
    events_sha256  TEXT,
    -- The upload that ships it (the uploads service's), once taken.
    upload_id      TEXT
);
CREATE INDEX recordings_started ON recordings (start_time, id);
CREATE INDEX recordings_domain ON recordings (domain_uuid, start_time);
CREATE INDEX recordings_running ON recordings (status) WHERE status = 'RECORDING';
