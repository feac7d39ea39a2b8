"""Every SQL statement famswap runs, by name, in one place (the schema itself is in ``migrations/``).

Parameters are named (``:guild``) unless a query takes a single value. Lists travel as JSON arrays and are read with
``json_each``, so no statement is ever assembled from strings at run time.
"""

from __future__ import annotations

# ------------------------------------------------------------------------------------------------ meta, blobs
GET_META = "SELECT value FROM meta WHERE key = ?"
SET_META_IF_ABSENT = "INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)"

BLOB_EXISTS = "SELECT 1 FROM blobs WHERE digest = ?"
INSERT_BLOB = "INSERT OR IGNORE INTO blobs (digest, size, created_at) VALUES (?, ?, ?)"
DELETE_BLOB = "DELETE FROM blobs WHERE digest = ?"
MARK_DELETION = "INSERT OR IGNORE INTO pending_deletions (digest, marked_at) VALUES (?, ?)"
UNMARK_DELETION = "DELETE FROM pending_deletions WHERE digest = ?"
DELETION_MARKED = "SELECT 1 FROM pending_deletions WHERE digest = ?"
PENDING_DELETIONS = "SELECT digest FROM pending_deletions ORDER BY marked_at"

# Every column that refers to a stored file. A test checks this list against the schema's foreign keys, so a new
# column cannot be forgotten here (it would make its files look unreferenced).
BLOB_REFERENCES: tuple[tuple[str, str], ...] = (
    ("identities", "faceset_digest"),
    ("identities", "thumbnail_digest"),
    ("uploads", "blob_digest"),
    ("banks", "encoder_digest"),
    ("bank_decoders", "digest"),
    ("jobs", "input_digest"),
    ("jobs", "checkpoint_digest"),
    ("jobs", "preview_digest"),
    ("results", "video_digest"),
    ("results", "comparison_digest"),
)
_REFERENCED = "\n".join(f"EXCEPT SELECT {column} FROM {table}" for table, column in BLOB_REFERENCES)

# Of the given digests (JSON array), those no row refers to any more.
UNREFERENCED_AMONG = f"SELECT value FROM json_each(?)\n{_REFERENCED}"
# Blob rows older than a cutoff that nothing refers to (a crash between storing a file and using it).
UNREFERENCED_BLOBS = f"SELECT digest FROM blobs WHERE created_at < ?\n{_REFERENCED}"

# ------------------------------------------------------------------------------------------------ guilds, users
UPSERT_GUILD = """
INSERT INTO guilds (id, name, created_at) VALUES (:id, :name, :now)
ON CONFLICT (id) DO UPDATE SET name = CASE WHEN excluded.name != '' THEN excluded.name ELSE guilds.name END
RETURNING *
"""
GET_GUILD = "SELECT * FROM guilds WHERE id = ?"
SET_GUILD_SETTINGS = "UPDATE guilds SET settings = ? WHERE id = ?"
SET_GUILD_DELETION = "UPDATE guilds SET deletion_due_at = ? WHERE id = ? RETURNING *"
GUILD_IDS = "SELECT id, deletion_due_at IS NOT NULL AS scheduled FROM guilds ORDER BY id"
DUE_GUILDS = "SELECT id FROM guilds WHERE deletion_due_at IS NOT NULL AND deletion_due_at <= ? ORDER BY id"
DELETE_GUILD = "DELETE FROM guilds WHERE id = ?"

UPSERT_USER = """
INSERT INTO users (id, name, created_at) VALUES (:id, :name, :now)
ON CONFLICT (id) DO UPDATE SET name = CASE WHEN excluded.name != '' THEN excluded.name ELSE users.name END
RETURNING *
"""
ENSURE_USER = "INSERT OR IGNORE INTO users (id, name, created_at) VALUES (?, '', ?)"
ENSURE_GUILD = "INSERT OR IGNORE INTO guilds (id, name, created_at) VALUES (?, '', ?)"
# Users (JSON array of ids) who own nothing any more: their row (a name) goes too.
DELETE_IDLE_USERS = """
DELETE FROM users WHERE id IN (SELECT value FROM json_each(?))
  AND NOT EXISTS (SELECT 1 FROM identities WHERE owner_id = users.id)
  AND NOT EXISTS (SELECT 1 FROM jobs WHERE owner_id = users.id)
"""

# ------------------------------------------------------------------------------------------------ identities
INSERT_IDENTITY = """
INSERT INTO identities (guild_id, owner_id, display_name, subject_user_id, on_behalf, consent_confirmed_by,
                        consent_confirmed_at, created_at, updated_at)
VALUES (:guild, :owner, :name, :subject, :on_behalf, :confirmed_by, :confirmed_at, :now, :now)
RETURNING *
"""
GET_IDENTITY = "SELECT * FROM identities WHERE id = ? AND guild_id = ?"
IDENTITIES_BY_NAME = """
SELECT * FROM identities WHERE guild_id = :guild AND display_name = :name COLLATE NOCASE
ORDER BY owner_id != :user, id
"""
USABLE_IDENTITIES = r"""
SELECT i.* FROM identities i
WHERE i.guild_id = :guild
  AND (i.owner_id = :user OR i.subject_user_id = :user
       OR EXISTS (SELECT 1 FROM grants g WHERE g.identity_id = i.id AND g.user_id IN (:user, 0)))
  AND i.display_name LIKE :prefix || '%' ESCAPE '\'
ORDER BY i.owner_id != :user, i.display_name COLLATE NOCASE, i.id
LIMIT :limit
"""
HAS_GRANT = "SELECT 1 FROM grants WHERE identity_id = ? AND user_id IN (?, 0)"
SET_IDENTITY_STATUS = (
    "UPDATE identities SET status = ?, updated_at = ? WHERE id = ? AND guild_id = ? RETURNING *"
)
TRANSFER_IDENTITY = """
UPDATE identities SET owner_id = :user, on_behalf = 0, subject_user_id = :user, updated_at = :now
WHERE id = :id RETURNING *
"""
SET_FACESET = """
UPDATE identities SET faceset_digest = :faceset, faceset_size = :faceset_size,
       thumbnail_digest = :thumbnail, thumbnail_size = :thumbnail_size,
       face_count = :face_count, summary = :summary, status = 'ready',
       faceset_version = faceset_version + 1, updated_at = :now
WHERE id = :id RETURNING *
"""
IDENTITY_IDS_OF_GUILD = "SELECT id FROM identities WHERE guild_id = ?"
IDENTITY_IDS_OF_USER = """
SELECT id FROM identities WHERE (owner_id = :user OR subject_user_id = :user) AND (:guild IS NULL OR guild_id = :guild)
"""
IDENTITY_FILES = """
SELECT faceset_digest, thumbnail_digest FROM identities WHERE id IN (SELECT value FROM json_each(?))
"""
DELETE_IDENTITIES = "DELETE FROM identities WHERE id IN (SELECT value FROM json_each(?))"
CLEAR_CONSENT_BY = """
UPDATE identities SET consent_confirmed_by = NULL, consent_confirmed_at = NULL
WHERE consent_confirmed_by = ? AND on_behalf = 0
"""

# ------------------------------------------------------------------------------------------------ grants
INSERT_GRANT = """
INSERT INTO grants (identity_id, guild_id, user_id, granted_by, created_at) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (identity_id, user_id) DO NOTHING
"""
GET_GRANT = "SELECT * FROM grants WHERE identity_id = ? AND user_id = ?"
LIST_GRANTS = "SELECT * FROM grants WHERE identity_id = ? ORDER BY user_id != 0, created_at"
DELETE_GRANT = "DELETE FROM grants WHERE identity_id = ? AND user_id = ?"
DELETE_GRANTS_OF_IDENTITY = "DELETE FROM grants WHERE identity_id = ?"
DELETE_GRANTS_TO_USER = "DELETE FROM grants WHERE user_id = :user AND (:guild IS NULL OR guild_id = :guild)"

# ------------------------------------------------------------------------------------------------ uploads
COUNT_UPLOADS = "SELECT count(*) FROM uploads WHERE identity_id = ? AND status != 'rejected'"
UPLOAD_BY_CONTENT = "SELECT * FROM uploads WHERE identity_id = ? AND content_digest = ?"
INSERT_UPLOAD = """
INSERT INTO uploads (guild_id, identity_id, owner_id, content_digest, blob_digest, kind, filename, size, created_at)
VALUES (:guild, :identity, :owner, :digest, :digest, :kind, :filename, :size, :now)
RETURNING *
"""
LIST_UPLOADS = """
SELECT * FROM uploads WHERE identity_id = :identity AND guild_id = :guild AND (:status IS NULL OR status = :status)
ORDER BY id
"""
SET_UPLOAD_OUTCOME = """
UPDATE uploads SET status = :status, reason = :reason, faces_found = :faces, quality = :quality
WHERE id = :id RETURNING *
"""
# Retention: once the face set is built, raw files of judged uploads go (their rows stay for dedupe).
DROP_JUDGED_UPLOAD_FILES = """
UPDATE uploads SET blob_digest = NULL
WHERE identity_id = ? AND status != 'pending' AND blob_digest IS NOT NULL
RETURNING content_digest
"""
UPLOAD_FILES_OF_IDENTITIES = """
SELECT blob_digest FROM uploads WHERE identity_id IN (SELECT value FROM json_each(?)) AND blob_digest IS NOT NULL
"""
DELETE_UPLOADS_OF_IDENTITIES = "DELETE FROM uploads WHERE identity_id IN (SELECT value FROM json_each(?))"

# ------------------------------------------------------------------------------------------------ banks
GET_BANK = "SELECT * FROM banks WHERE guild_id = ?"
GET_BANK_DECODERS = "SELECT * FROM bank_decoders WHERE guild_id = ? ORDER BY identity_id"
UPSERT_BANK = """
INSERT INTO banks (guild_id, version, encoder_digest, encoder_size, config, updated_at)
VALUES (:guild, 1, :encoder, :encoder_size, :config, :now)
ON CONFLICT (guild_id) DO UPDATE SET version = banks.version + 1,
    encoder_digest = coalesce(excluded.encoder_digest, banks.encoder_digest),
    encoder_size = coalesce(excluded.encoder_size, banks.encoder_size),
    config = excluded.config, updated_at = excluded.updated_at
"""
UPSERT_DECODER = """
INSERT INTO bank_decoders (identity_id, guild_id, digest, size, faceset_version, updated_at, trained_steps,
                           trained_seconds)
VALUES (:identity, :guild, :digest, :size, :version, :now, :steps, :seconds)
ON CONFLICT (identity_id) DO UPDATE SET digest = excluded.digest, size = excluded.size,
    faceset_version = excluded.faceset_version, updated_at = excluded.updated_at,
    trained_steps = bank_decoders.trained_steps + excluded.trained_steps,
    trained_seconds = bank_decoders.trained_seconds + excluded.trained_seconds
"""
DECODER_OF = "SELECT digest FROM bank_decoders WHERE identity_id = ?"
DECODER_FILES_OF_IDENTITIES = (
    "SELECT digest FROM bank_decoders WHERE identity_id IN (SELECT value FROM json_each(?))"
)
DELETE_DECODERS_OF_IDENTITIES = (
    "DELETE FROM bank_decoders WHERE identity_id IN (SELECT value FROM json_each(?))"
)
DECODER_FILES_OF_GUILD = "SELECT digest FROM bank_decoders WHERE guild_id = ?"
DELETE_DECODERS_OF_GUILD = "DELETE FROM bank_decoders WHERE guild_id = ?"
DELETE_BANK = "DELETE FROM banks WHERE guild_id = ? RETURNING encoder_digest"

# ------------------------------------------------------------------------------------------------ the warm bank
# Any job waiting that a warming worker should make way for (a warm job waits for nobody).
WAITING_WORK = """
SELECT 1 FROM jobs WHERE status = 'queued' AND kind != 'warm' AND run_after <= ? AND cancel_requested = 0 LIMIT 1
"""
LIVE_WARM_JOBS_OF_GUILD = "SELECT id, status FROM jobs WHERE guild_id = ? AND kind = 'warm' AND status IN ('queued', 'running')"
WARM_SECONDS_SINCE = "SELECT coalesce(sum(seconds), 0) FROM warm_runs WHERE guild_id = ? AND started_at > ?"
INSERT_WARM_RUN = """
INSERT INTO warm_runs (guild_id, job_id, started_at, seconds, steps, stopped, trained)
VALUES (:guild, :job, :started, :seconds, :steps, :stopped, :trained)
"""
LAST_PLATEAU = """
SELECT trained FROM warm_runs WHERE guild_id = ? AND stopped = 'plateau' ORDER BY started_at DESC, id DESC LIMIT 1
"""
DELETE_WARM_RUNS_OF_GUILD = "DELETE FROM warm_runs WHERE guild_id = ?"
# A forgotten identity leaves no id behind: the runs that trained it keep their seconds (the allowance) only.
FORGET_IDENTITIES_IN_WARM_RUNS = """
UPDATE warm_runs SET trained = '' WHERE EXISTS (
    SELECT 1 FROM json_each(?) WHERE ',' || warm_runs.trained LIKE '%,' || value || ':%')
"""
# Guilds with ready identities, no live job and no pending erase: what idle workers may warm (the allowance and
# the plateau are checked per guild, in api.Storage.guilds_to_warm).
WARM_CANDIDATES = """
SELECT DISTINCT i.guild_id FROM identities i JOIN guilds g ON g.id = i.guild_id
WHERE i.status = 'ready' AND i.faceset_digest IS NOT NULL AND g.deletion_due_at IS NULL
  AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.guild_id = i.guild_id AND j.status IN ('queued', 'running'))
"""
READY_IDENTITIES_OF_GUILD = """
SELECT id, faceset_version FROM identities
WHERE guild_id = ? AND status = 'ready' AND faceset_digest IS NOT NULL ORDER BY id
"""
WARMING_GUILD = "SELECT 1 FROM jobs WHERE guild_id = ? AND kind = 'warm' AND status = 'running' LIMIT 1"

# ------------------------------------------------------------------------------------------------ jobs: enqueue, read
# Warm jobs are famswap's own (the worker queues them when idle): no user's or server's quota counts them.
COUNT_LIVE_JOBS_OF_USER = """
SELECT count(*) FROM jobs WHERE owner_id = ? AND guild_id = ? AND status IN ('queued', 'running') AND kind != 'warm'
"""
COUNT_LIVE_JOBS_OF_GUILD = """
SELECT count(*) FROM jobs WHERE guild_id = ? AND status IN ('queued', 'running') AND kind != 'warm'
"""
# Rolling 24-hour quota: jobs that ran or are waiting (cancelled before starting does not count).
DAILY_JOBS_OF_USER = """
SELECT count(*) AS n, min(created_at) AS oldest FROM jobs
WHERE owner_id = ? AND guild_id = ? AND created_at > ? AND NOT (status = 'cancelled' AND started_at IS NULL)
  AND kind != 'warm'
"""
COUNT_LIVE_JOBS = "SELECT count(*) FROM jobs WHERE status IN ('queued', 'running') AND kind != 'warm'"
DAILY_JOBS = """
SELECT count(*) AS n, min(created_at) AS oldest FROM jobs
WHERE created_at > ? AND NOT (status = 'cancelled' AND started_at IS NULL) AND kind != 'warm'
"""
DAILY_JOBS_OF_GUILD = """
SELECT count(*) AS n, min(created_at) AS oldest FROM jobs
WHERE guild_id = ? AND created_at > ? AND NOT (status = 'cancelled' AND started_at IS NULL) AND kind != 'warm'
"""
INSERT_JOB = """
INSERT INTO jobs (guild_id, owner_id, kind, payload, priority, identity_ids, input_digest, input_size,
                  max_attempts, run_after, created_at)
VALUES (:guild, :owner, :kind, :payload, :priority, :identity_ids, :input, :input_size, :max_attempts, :now, :now)
"""
INSERT_JOB_IDENTITY = "INSERT INTO job_identities (job_id, identity_id) VALUES (?, ?)"
GET_JOB = "SELECT * FROM jobs WHERE id = ?"
GET_JOBS = "SELECT * FROM jobs WHERE id IN (SELECT value FROM json_each(?))"
LIST_JOBS = """
SELECT * FROM jobs
WHERE guild_id = :guild AND (:owner IS NULL OR owner_id = :owner)
  AND (:active = 0 OR status IN ('queued', 'running'))
ORDER BY id DESC LIMIT :limit
"""

# ------------------------------------------------------------------------------------------------ jobs: claim
NEXT_SERVE_SEQ = "UPDATE counters SET value = value + 1 WHERE name = 'serve_seq' RETURNING value"
# Leases that ran out: the worker died. Back to the queue (the attempt was counted at claim), or failed when no
# attempt is left, or cancelled if a cancel was waiting. Returns the rows that became final, to release files.
REQUEUE_EXPIRED = """
UPDATE jobs SET
    status = CASE WHEN cancel_requested = 1 THEN 'cancelled'
                  WHEN attempts >= max_attempts THEN 'failed' ELSE 'queued' END,
    finished_at = CASE WHEN cancel_requested = 1 OR attempts >= max_attempts THEN :now END,
    worker_id = NULL, lease_expires_at = NULL, run_after = :now
WHERE status = 'running' AND lease_expires_at < :now
RETURNING id, status
"""
# The fair pick: priority first; then the guild, then the user, with the fewest running jobs and served longest
# ago; then the oldest job. Within one (priority, guild, owner) group only the oldest job can win, so the ordering
# looks at one head per group instead of the whole queue. One statement inside BEGIN IMMEDIATE, so two workers can
# never take the same row.
CLAIM_NEXT = """
WITH heads AS (
    SELECT min(id) AS id FROM jobs
    WHERE status = 'queued' AND run_after <= :now
      AND (:kinds IS NULL OR kind IN (SELECT value FROM json_each(:kinds)))
      AND (:job IS NULL OR id = :job)
      -- a guild's bank is warmed by one worker at a time, and never while a job of that guild trains it
      AND NOT (kind = 'warm' AND EXISTS (SELECT 1 FROM jobs r WHERE r.guild_id = jobs.guild_id
                                         AND r.status = 'running' AND r.kind IN ('warm', 'train', 'swap')))
    GROUP BY priority, guild_id, owner_id
)
UPDATE jobs SET status = 'running', worker_id = :worker, attempts = attempts + 1,
    lease_expires_at = :now + :lease, heartbeat_at = :now, started_at = coalesce(started_at, :now)
WHERE status = 'queued' AND id = (
    SELECT j.id FROM heads h
    JOIN jobs j ON j.id = h.id
    JOIN guilds g ON g.id = j.guild_id
    JOIN users u ON u.id = j.owner_id
    ORDER BY j.priority DESC,
        (SELECT count(*) FROM jobs r WHERE r.guild_id = j.guild_id AND r.status = 'running'),
        g.last_served,
        (SELECT count(*) FROM jobs r WHERE r.owner_id = j.owner_id AND r.status = 'running'),
        u.last_served,
        j.id
    LIMIT 1)
RETURNING id, guild_id, owner_id
"""
MARK_GUILD_SERVED = "UPDATE guilds SET last_served = ? WHERE id = ?"
MARK_USER_SERVED = "UPDATE users SET last_served = ? WHERE id = ?"
# What queue_position simulates the claim order over.
QUEUED_FOR_ORDER = """
SELECT j.id, j.kind, j.priority, j.guild_id, j.owner_id, g.last_served AS guild_served,
       u.last_served AS user_served
FROM jobs j JOIN guilds g ON g.id = j.guild_id JOIN users u ON u.id = j.owner_id
WHERE j.status = 'queued'
"""
RUNNING_FOR_ETA = "SELECT id, kind, guild_id, owner_id, started_at, worker_id, lease_expires_at FROM jobs WHERE status = 'running'"
RECENT_DURATIONS = """
SELECT kind, avg(finished_at - started_at) AS seconds FROM (
    SELECT kind, started_at, finished_at FROM jobs
    WHERE status = 'succeeded' AND started_at IS NOT NULL ORDER BY finished_at DESC LIMIT 200)
GROUP BY kind
"""
STALLED_JOBS = "SELECT * FROM jobs WHERE status = 'running' AND lease_expires_at < ? ORDER BY id"

# ------------------------------------------------------------------------------------------------ jobs: worker side
HEARTBEAT = """
UPDATE jobs SET lease_expires_at = :now + :lease, heartbeat_at = :now
WHERE id = :id AND worker_id = :worker AND status = 'running'
RETURNING cancel_requested, lease_expires_at
"""
HELD_JOB = "SELECT * FROM jobs WHERE id = ? AND worker_id = ? AND status = 'running'"
SET_PROGRESS = """
UPDATE jobs SET stage = :stage, percent = :percent, message = :message, progress_at = :now,
    preview_digest = coalesce(:preview, preview_digest), preview_size = coalesce(:preview_size, preview_size)
WHERE id = :id
"""
SET_CHECKPOINT = """
UPDATE jobs SET state = :state, checkpoint_digest = coalesce(:checkpoint, checkpoint_digest),
    checkpoint_size = coalesce(:checkpoint_size, checkpoint_size)
WHERE id = :id
"""
# A job that reached a final state lets go of its clip, checkpoint and preview (the result keeps what matters).
FINISH_JOB = """
UPDATE jobs SET status = :status, error = coalesce(:error, error), finished_at = :now, lease_expires_at = NULL,
    input_digest = NULL, input_size = NULL, checkpoint_digest = NULL, checkpoint_size = NULL,
    preview_digest = NULL, preview_size = NULL
WHERE id = :id
"""
RETRY_JOB = """
UPDATE jobs SET status = 'queued', error = :error, run_after = :run_after, worker_id = NULL, lease_expires_at = NULL
WHERE id = :id
"""
# A worker shutting down hands its job back at once; the attempt it used is not counted against the job.
RELEASE_JOB = """
UPDATE jobs SET status = 'queued', attempts = max(attempts - 1, 0), run_after = :now, worker_id = NULL,
    lease_expires_at = NULL
WHERE id = :id
"""
REQUEST_CANCEL = "UPDATE jobs SET cancel_requested = 1 WHERE id = ? AND status = 'running'"
JOB_FILES = """
SELECT input_digest, checkpoint_digest, preview_digest FROM jobs WHERE id IN (SELECT value FROM json_each(?))
"""
# Queued jobs (JSON array of candidates) whose owner may no longer use one of their identities.
QUEUED_JOBS_USING = """
SELECT j.id, j.owner_id, j.status FROM jobs j JOIN job_identities ji ON ji.job_id = j.id
WHERE ji.identity_id = ? AND j.status IN ('queued', 'running')
"""
INSERT_RESULT = """
INSERT INTO results (job_id, guild_id, owner_id, video_digest, video_size, comparison_digest, comparison_size,
                     report, visibility, created_at, expires_at)
VALUES (:job, :guild, :owner, :video, :video_size, :comparison, :comparison_size, :report, :visibility, :now,
        :expires)
"""
GET_RESULT = "SELECT * FROM results WHERE job_id = ?"
GET_RESULTS = "SELECT * FROM results WHERE job_id IN (SELECT value FROM json_each(?))"

# ------------------------------------------------------------------------------------------------ job posts (bot)
UPSERT_POST = """
INSERT INTO job_posts (job_id, guild_id, channel_id, status_message_id, status_message_at, request_message_id,
                       interaction_id, interaction_token)
VALUES (:job, :guild, :channel, :status_message, :status_at, :request_message, :interaction, :token)
ON CONFLICT (job_id) DO UPDATE SET channel_id = excluded.channel_id,
    status_message_id = excluded.status_message_id, status_message_at = excluded.status_message_at,
    request_message_id = excluded.request_message_id, interaction_id = excluded.interaction_id,
    interaction_token = excluded.interaction_token
RETURNING *
"""
# Each field changes only when its flag is 1 (so one fixed statement serves every combination).
UPDATE_POST = """
UPDATE job_posts SET
    status_message_id = CASE WHEN :set_status THEN :status_message ELSE status_message_id END,
    status_message_at = CASE WHEN :set_status THEN :now ELSE status_message_at END,
    posted_seq = CASE WHEN :set_seq THEN :seq ELSE posted_seq END,
    posted_at = CASE WHEN :set_seq THEN :now ELSE posted_at END,
    result_message_id = CASE WHEN :set_result THEN :result_message ELSE result_message_id END,
    interaction_token = CASE WHEN :set_token THEN :token ELSE interaction_token END
WHERE job_id = :job
RETURNING *
"""
GET_POSTS = "SELECT * FROM job_posts WHERE job_id IN (SELECT value FROM json_each(?))"
PENDING_UPDATES = """
SELECT j.id FROM jobs j JOIN job_posts p ON p.job_id = j.id
WHERE j.update_seq > p.posted_seq AND j.update_seq > :after
ORDER BY j.update_seq LIMIT :limit
"""

# ------------------------------------------------------------------------------------------------ forgetting
JOBS_USING_IDENTITIES = (
    "SELECT DISTINCT job_id FROM job_identities WHERE identity_id IN (SELECT value FROM json_each(?))"
)
JOB_IDS_OF_USER = "SELECT id FROM jobs WHERE owner_id = :user AND (:guild IS NULL OR guild_id = :guild)"
USERS_OF_GUILD = (
    "SELECT owner_id FROM jobs WHERE guild_id = ? UNION SELECT owner_id FROM identities WHERE guild_id = ?"
)
JOB_IDS_OF_GUILD = "SELECT id FROM jobs WHERE guild_id = ?"
RESULT_FILES = """
SELECT video_digest, comparison_digest FROM results WHERE job_id IN (SELECT value FROM json_each(?))
"""
DELETE_RESULTS = "DELETE FROM results WHERE job_id IN (SELECT value FROM json_each(?))"
COUNT_RUNNING_AMONG = (
    "SELECT count(*) FROM jobs WHERE status = 'running' AND id IN (SELECT value FROM json_each(?))"
)
DELETE_JOBS = "DELETE FROM jobs WHERE id IN (SELECT value FROM json_each(?))"
EXPIRED_RESULTS = "SELECT job_id FROM results WHERE expires_at <= ? ORDER BY expires_at"
# Finished jobs older than the result retention, whose result (if any) is gone: history no one needs.
OLD_FINISHED_JOBS = """
SELECT id FROM jobs WHERE status IN ('succeeded', 'failed', 'cancelled') AND finished_at < ?
  AND NOT EXISTS (SELECT 1 FROM results WHERE results.job_id = jobs.id)
"""
JOB_STATUS_AMONG = "SELECT id, status FROM jobs WHERE id IN (SELECT value FROM json_each(?))"
