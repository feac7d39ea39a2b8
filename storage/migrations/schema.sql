-- The current schema, applied in one go to a new database. Keep it equal to the numbered migrations applied in
-- order (tests/storage/test_storage_migrations.py compares the two).

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- One row per file in files/ab/abcdef…: a row exists only once its file is durable.
CREATE TABLE blobs (
    digest     TEXT PRIMARY KEY,  -- HMAC-SHA256 of the plaintext, hex
    size       INTEGER NOT NULL,  -- plaintext bytes
    created_at REAL NOT NULL
);

-- Files whose rows are gone: deleted from disk, then unmarked (a crash in between is finished at start-up).
CREATE TABLE pending_deletions (
    digest    TEXT PRIMARY KEY,
    marked_at REAL NOT NULL
);

CREATE TABLE guilds (
    id              INTEGER PRIMARY KEY,  -- Discord snowflake
    name            TEXT NOT NULL DEFAULT '',
    settings        TEXT NOT NULL DEFAULT '{}',
    created_at      REAL NOT NULL,
    deletion_due_at REAL,  -- the bot left: erase everything after this time
    last_served     INTEGER NOT NULL DEFAULT 0  -- fairness: serve_seq when a worker last took one of its jobs
);

CREATE TABLE users (
    id             INTEGER PRIMARY KEY,  -- Discord snowflake
    name           TEXT NOT NULL DEFAULT '',
    created_at     REAL NOT NULL,
    last_served    INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE identities (
    id                   INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: stale decoders cannot match a newcomer
    guild_id             INTEGER NOT NULL REFERENCES guilds (id),
    owner_id             INTEGER NOT NULL REFERENCES users (id),
    display_name         TEXT NOT NULL,
    subject_user_id      INTEGER,  -- the member whose face it is, when known
    on_behalf            INTEGER NOT NULL DEFAULT 0 CHECK (on_behalf IN (0, 1)),
    consent_confirmed_by INTEGER,
    consent_confirmed_at REAL,
    status               TEXT NOT NULL DEFAULT 'empty' CHECK (status IN ('empty', 'preparing', 'ready')),
    faceset_digest       TEXT REFERENCES blobs (digest),
    faceset_size         INTEGER,
    thumbnail_digest     TEXT REFERENCES blobs (digest),
    thumbnail_size       INTEGER,
    face_count           INTEGER NOT NULL DEFAULT 0,
    summary              TEXT NOT NULL DEFAULT '{}',
    faceset_version      INTEGER NOT NULL DEFAULT 0,
    created_at           REAL NOT NULL,
    updated_at           REAL NOT NULL,
    -- Nobody is enrolled on someone else's behalf without a recorded confirmation.
    CHECK (on_behalf = 0 OR (consent_confirmed_by IS NOT NULL AND consent_confirmed_at IS NOT NULL))
);
CREATE UNIQUE INDEX identities_by_name ON identities (guild_id, owner_id, display_name COLLATE NOCASE);
CREATE INDEX identities_by_owner ON identities (owner_id);
CREATE INDEX identities_by_subject ON identities (subject_user_id);

CREATE TABLE grants (
    identity_id INTEGER NOT NULL REFERENCES identities (id) ON DELETE CASCADE,
    guild_id    INTEGER NOT NULL,
    user_id     INTEGER NOT NULL,  -- 0: everyone in the guild
    granted_by  INTEGER NOT NULL,
    created_at  REAL NOT NULL,
    PRIMARY KEY (identity_id, user_id)
);
CREATE INDEX grants_by_user ON grants (user_id, guild_id);

CREATE TABLE uploads (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    guild_id       INTEGER NOT NULL,
    identity_id    INTEGER NOT NULL REFERENCES identities (id),
    owner_id       INTEGER NOT NULL,
    content_digest TEXT NOT NULL,  -- kept after the raw file is dropped, so a resend is recognised
    blob_digest    TEXT REFERENCES blobs (digest),  -- NULL once deleted by retention
    kind           TEXT NOT NULL CHECK (kind IN ('image', 'video')),
    filename       TEXT NOT NULL DEFAULT '',
    size           INTEGER NOT NULL,
    status         TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'accepted', 'rejected')),
    reason         TEXT,
    faces_found    INTEGER NOT NULL DEFAULT 0,
    quality        TEXT NOT NULL DEFAULT '{}',
    created_at     REAL NOT NULL,
    UNIQUE (identity_id, content_digest)
);

CREATE TABLE banks (
    guild_id       INTEGER PRIMARY KEY REFERENCES guilds (id),
    version        INTEGER NOT NULL,
    encoder_digest TEXT REFERENCES blobs (digest),
    encoder_size   INTEGER,
    config         TEXT NOT NULL DEFAULT '{}',
    updated_at     REAL NOT NULL
);

-- One decoder per identity, a file of its own: forgetting the identity deletes exactly this file.
CREATE TABLE bank_decoders (
    identity_id     INTEGER PRIMARY KEY REFERENCES identities (id),
    guild_id        INTEGER NOT NULL REFERENCES banks (guild_id),
    digest          TEXT NOT NULL REFERENCES blobs (digest),
    size            INTEGER NOT NULL,
    faceset_version INTEGER NOT NULL DEFAULT 0,
    updated_at      REAL NOT NULL,
    trained_steps   INTEGER NOT NULL DEFAULT 0,  -- steps this decoder has trained, warming and swaps together
    trained_seconds REAL NOT NULL DEFAULT 0
);
CREATE INDEX bank_decoders_by_guild ON bank_decoders (guild_id);

-- One row per stretch of warming (see migration 0004): the guild's daily allowance and its plateau.
CREATE TABLE warm_runs (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    guild_id   INTEGER NOT NULL REFERENCES guilds (id),
    job_id     INTEGER,
    started_at REAL NOT NULL,
    seconds    REAL NOT NULL,
    steps      INTEGER NOT NULL,
    stopped    TEXT NOT NULL,  -- handed back | allowance | plateau | minutes | steps | cancelled
    trained    TEXT NOT NULL DEFAULT ''
);
CREATE INDEX warm_runs_by_guild ON warm_runs (guild_id, started_at);

CREATE TABLE jobs (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    guild_id          INTEGER NOT NULL REFERENCES guilds (id),
    owner_id          INTEGER NOT NULL REFERENCES users (id),
    kind              TEXT NOT NULL CHECK (kind IN ('prepare', 'train', 'swap', 'refit', 'warm')),
    payload           TEXT NOT NULL DEFAULT '{}',
    priority          INTEGER NOT NULL DEFAULT 0,
    status            TEXT NOT NULL DEFAULT 'queued'
                      CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    identity_ids      TEXT NOT NULL DEFAULT '',  -- copy of job_identities, for reading a job in one row
    input_digest      TEXT REFERENCES blobs (digest),
    input_size        INTEGER,
    attempts          INTEGER NOT NULL DEFAULT 0,
    max_attempts      INTEGER NOT NULL DEFAULT 3,
    run_after         REAL NOT NULL,
    worker_id         TEXT,
    lease_expires_at  REAL,
    heartbeat_at      REAL,
    cancel_requested  INTEGER NOT NULL DEFAULT 0 CHECK (cancel_requested IN (0, 1)),
    state             TEXT NOT NULL DEFAULT '{}',
    checkpoint_digest TEXT REFERENCES blobs (digest),
    checkpoint_size   INTEGER,
    stage             TEXT,
    percent           REAL,
    message           TEXT,
    preview_digest    TEXT REFERENCES blobs (digest),
    preview_size      INTEGER,
    progress_at       REAL,
    error             TEXT,
    created_at        REAL NOT NULL,
    started_at        REAL,
    finished_at       REAL,
    update_seq        INTEGER NOT NULL DEFAULT 0
);
-- Covers the claim's "oldest queued job per (priority, guild, owner)" scan without touching the table.
CREATE INDEX jobs_queue_heads ON jobs (status, priority, guild_id, owner_id, id, run_after, kind);
CREATE INDEX jobs_by_owner ON jobs (owner_id, status, guild_id);
CREATE INDEX jobs_by_guild ON jobs (guild_id, status);
CREATE INDEX jobs_by_update ON jobs (update_seq);
CREATE INDEX jobs_by_lease ON jobs (status, lease_expires_at);

CREATE TABLE job_identities (
    job_id      INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    identity_id INTEGER NOT NULL REFERENCES identities (id),
    PRIMARY KEY (job_id, identity_id)
);
CREATE INDEX job_identities_by_identity ON job_identities (identity_id);

CREATE TABLE results (
    job_id            INTEGER PRIMARY KEY REFERENCES jobs (id),
    guild_id          INTEGER NOT NULL,
    owner_id          INTEGER NOT NULL,
    video_digest      TEXT REFERENCES blobs (digest),
    video_size        INTEGER,
    comparison_digest TEXT REFERENCES blobs (digest),
    comparison_size   INTEGER,
    report            TEXT NOT NULL DEFAULT '{}',
    visibility        TEXT NOT NULL DEFAULT 'guild' CHECK (visibility IN ('owner', 'guild')),
    created_at        REAL NOT NULL,
    expires_at        REAL NOT NULL
);
CREATE INDEX results_by_expiry ON results (expires_at);

-- The bot's Discord bookkeeping: where each job's status message lives, and what it last showed.
CREATE TABLE job_posts (
    job_id             INTEGER PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    guild_id           INTEGER NOT NULL,
    channel_id         INTEGER NOT NULL,
    status_message_id  INTEGER,
    status_message_at  REAL,
    request_message_id INTEGER,
    interaction_id     INTEGER,
    interaction_token  TEXT,
    posted_seq         INTEGER NOT NULL DEFAULT 0,
    posted_at          REAL,
    result_message_id  INTEGER
);

-- update_seq: a number that grows whenever a job changes in a way the bot shows (status, progress, cancel).
-- Triggers give every changed row its own number, so a poller never misses one between two batches.
CREATE TABLE counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT INTO counters (name, value) VALUES ('job_update_seq', 0), ('serve_seq', 0);

CREATE TRIGGER jobs_seq_on_insert AFTER INSERT ON jobs
BEGIN
    UPDATE counters SET value = value + 1 WHERE name = 'job_update_seq';
    UPDATE jobs SET update_seq = (SELECT value FROM counters WHERE name = 'job_update_seq') WHERE id = NEW.id;
END;

CREATE TRIGGER jobs_seq_on_change
AFTER UPDATE OF status, stage, percent, message, preview_digest, cancel_requested, error ON jobs
BEGIN
    UPDATE counters SET value = value + 1 WHERE name = 'job_update_seq';
    UPDATE jobs SET update_seq = (SELECT value FROM counters WHERE name = 'job_update_seq') WHERE id = NEW.id;
END;
