-- Uploads of media to storage targets (service::uploads). Self-contained:
-- it names no table of another migration, so it applies whichever of its
-- neighbours came first; IF NOT EXISTS for the same reason.

-- One file to upload to every configured target.
CREATE TABLE IF NOT EXISTS uploads (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    media_path TEXT NOT NULL,
    object_key TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    bytes INTEGER NOT NULL CHECK (bytes >= 0),
    content_type TEXT NOT NULL,
    -- Fixed at submission: a resumed upload keeps the chunks it started with.
    chunk_bytes INTEGER NOT NULL CHECK (chunk_bytes > 0),
    owner_dialect TEXT NOT NULL,
    owner_principal TEXT NOT NULL,
    owner_project TEXT,
    created INTEGER NOT NULL
);
-- A job that restarts in `uploading` finds its upload by the object's name.
CREATE INDEX IF NOT EXISTS uploads_key ON uploads (object_key);

-- One target of an upload: its state, the multipart upload the target
-- opened (S3's UploadId), and why it failed.
CREATE TABLE IF NOT EXISTS upload_targets (
    upload_id INTEGER NOT NULL REFERENCES uploads (id) ON DELETE CASCADE,
    target TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('dir', 's3')),
    state TEXT NOT NULL CHECK (state IN ('pending', 'uploading', 'completed', 'failed')),
    multipart_id TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    uri TEXT,
    bucket TEXT,
    directory TEXT,
    updated INTEGER NOT NULL,
    PRIMARY KEY (upload_id, target)
);
CREATE INDEX IF NOT EXISTS upload_targets_open ON upload_targets (state)
    WHERE state IN ('pending', 'uploading');

-- A chunk the target acknowledged: its part index (from 0), the target's id
-- for it (S3's ETag; opaque), and its own digest.
CREATE TABLE IF NOT EXISTS upload_chunks (
    upload_id INTEGER NOT NULL,
    target TEXT NOT NULL,
    part INTEGER NOT NULL CHECK (part >= 0),
    content_id TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    PRIMARY KEY (upload_id, target, part),
    FOREIGN KEY (upload_id, target) REFERENCES upload_targets (upload_id, target) ON DELETE CASCADE
);
