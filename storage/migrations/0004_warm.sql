-- Version 4: the warm bank. ``warm`` is a job kind (training the guild's bank while the worker is idle); each
-- decoder counts the steps and seconds it has trained; ``warm_runs`` records every stretch of warming, for the
-- guild's daily allowance (FAMSWAP_WARM_MINUTES_PER_DAY) and its plateau. The CHECK is widened as 0002 did.
PRAGMA writable_schema = ON;
UPDATE sqlite_master
   SET sql = replace(sql, 'CHECK (kind IN (''prepare'', ''train'', ''swap'', ''refit''))',
                          'CHECK (kind IN (''prepare'', ''train'', ''swap'', ''refit'', ''warm''))')
 WHERE type = 'table' AND name = 'jobs';
PRAGMA writable_schema = OFF;
ALTER TABLE bank_decoders ADD COLUMN trained_steps INTEGER NOT NULL DEFAULT 0;
ALTER TABLE bank_decoders ADD COLUMN trained_seconds REAL NOT NULL DEFAULT 0;
-- One row per stretch of warming (a warm job's run until it was handed back or ended). No face, no name: the
-- identities trained are ids with the face-set version each was trained on ("12:3,15:1"), which also tells whether
-- a plateau reached then still holds (the same people, the same face sets).
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
