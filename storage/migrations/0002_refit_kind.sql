-- Version 2: ``refit`` (make a finished swap smaller) is a job kind of its own, not a flag in a swap's payload.
-- SQLite cannot ALTER a CHECK constraint, and rebuilding ``jobs`` inside a transaction with foreign keys on would
-- cascade-delete its children; widening a CHECK is the case SQLite documents for editing the stored schema text
-- (https://sqlite.org/lang_altertable.html, "otherwise"): no row changes, and apply_migrations bumps
-- schema_version after a migration that does this, so every connection re-reads the schema.
PRAGMA writable_schema = ON;
UPDATE sqlite_master
   SET sql = replace(sql, 'CHECK (kind IN (''prepare'', ''train'', ''swap''))',
                          'CHECK (kind IN (''prepare'', ''train'', ''swap'', ''refit''))')
 WHERE type = 'table' AND name = 'jobs';
PRAGMA writable_schema = OFF;
