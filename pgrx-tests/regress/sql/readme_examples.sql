-- README examples of safe_upsert, with their psql output.
-- Failing statements are followed by \echo :LAST_ERROR_SQLSTATE, so the expected file shows
-- each error's SQLSTATE; SHOW_CONTEXT never hides the CONTEXT lines (they name internal SQL).
\set SHOW_CONTEXT never
\set VERBOSITY default

-- pg_regress --load-extension may have created the extension already: start from scratch.
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS pg_safeupsert;
RESET client_min_messages;
CREATE EXTENSION pg_safeupsert;
SELECT enum_range(NULL::safe_upsert_outcome);

--
-- The README example: insert, a newer row replaces it, an older one is skipped.
--
CREATE TABLE t (id int PRIMARY KEY, value text, date timestamp);
SELECT safe_upsert('t', '{"id": 2, "value": "A", "date": "2024-09-24"}', 'date');  -- inserted
SELECT safe_upsert('t', '{"id": 2, "value": "B", "date": "2024-09-25"}', 'date');  -- updated
SELECT safe_upsert('t', '{"id": 2, "value": "C", "date": "2024-09-23"}', 'date');  -- stale
SELECT * FROM t ORDER BY id;

-- Same version, same values: an idempotent replay.
SELECT safe_upsert('t', '{"id": 2, "value": "B", "date": "2024-09-25"}', 'date');  -- duplicate
-- Same version, other values: a tie, skipped by default (on_tie => 'skip').
SELECT safe_upsert('t', '{"id": 2, "value": "X", "date": "2024-09-25"}', 'date');  -- tie
SELECT safe_upsert('t', '{"id": 2, "value": "X", "date": "2024-09-25"}', 'date', on_tie => 'skip');  -- tie
SELECT * FROM t ORDER BY id;
-- on_tie => 'apply': newer-or-equal wins; the outcome is then 'updated'.
SELECT safe_upsert('t', '{"id": 2, "value": "X", "date": "2024-09-25"}', 'date', on_tie => 'apply');  -- updated
-- ... and replaying it is still a duplicate, not another update.
SELECT safe_upsert('t', '{"id": 2, "value": "X", "date": "2024-09-25"}', 'date', on_tie => 'apply');  -- duplicate
-- ... while an older row is still stale.
SELECT safe_upsert('t', '{"id": 2, "value": "Z", "date": "2024-09-01"}', 'date', on_tie => 'apply');  -- stale
SELECT * FROM t ORDER BY id;
-- on_tie => 'error': a tie raises, and the stored row is kept.
SELECT safe_upsert('t', '{"id": 2, "value": "Y", "date": "2024-09-25"}', 'date', on_tie => 'error');
\echo :LAST_ERROR_SQLSTATE
-- ... but a duplicate, a stale or a newer row is not an error.
SELECT safe_upsert('t', '{"id": 2, "value": "X", "date": "2024-09-25"}', 'date', on_tie => 'error');  -- duplicate
SELECT safe_upsert('t', '{"id": 2, "value": "Y", "date": "2024-09-20"}', 'date', on_tie => 'error');  -- stale
SELECT safe_upsert('t', '{"id": 2, "value": "Y", "date": "2024-09-26"}', 'date', on_tie => 'error');  -- updated
SELECT * FROM t ORDER BY id;

-- Only the columns sent are written: absent ones get their default on insert and keep their
-- stored value on update. A NULL stored version is older than any version.
ALTER TABLE t ADD COLUMN note text DEFAULT 'n/a';
SELECT safe_upsert('t', '{"id": 3, "date": "2024-01-01"}', 'date');                  -- inserted
SELECT safe_upsert('t', '{"id": 3, "note": "kept", "date": "2024-01-02"}', 'date');  -- updated
SELECT safe_upsert('t', '{"id": 3, "value": "v", "date": "2024-01-03"}', 'date');    -- updated
INSERT INTO t (id, value) VALUES (4, 'no version yet');
SELECT safe_upsert('t', '{"id": 4, "value": "versioned", "date": "2000-01-01"}', 'date');  -- updated
SELECT * FROM t ORDER BY id;

--
-- Several version columns, compared in order, as a row comparison: equal timestamps are
-- broken by source_id.
--
CREATE TABLE events (id int PRIMARY KEY, payload text, updated_at timestamp, source_id int);
SELECT safe_upsert('events', '{"id": 1, "payload": "a", "updated_at": "2024-09-24 10:00", "source_id": 5}',
                   ARRAY['updated_at', 'source_id']);  -- inserted
SELECT safe_upsert('events', '{"id": 1, "payload": "b", "updated_at": "2024-09-24 10:00", "source_id": 7}',
                   ARRAY['updated_at', 'source_id']);  -- updated: same time, higher source
SELECT safe_upsert('events', '{"id": 1, "payload": "c", "updated_at": "2024-09-24 10:00", "source_id": 6}',
                   ARRAY['updated_at', 'source_id']);  -- stale: same time, lower source
SELECT safe_upsert('events', '{"id": 1, "payload": "d", "updated_at": "2024-09-24 11:00", "source_id": 1}',
                   ARRAY['updated_at', 'source_id']);  -- updated: later time wins, whatever the source
SELECT safe_upsert('events', '{"id": 1, "payload": "e", "updated_at": "2024-09-24 09:00", "source_id": 99}',
                   ARRAY['updated_at', 'source_id']);  -- stale: earlier time loses, whatever the source
SELECT safe_upsert('events', '{"id": 1, "payload": "d", "updated_at": "2024-09-24 11:00", "source_id": 1}',
                   ARRAY['updated_at', 'source_id']);  -- duplicate
SELECT safe_upsert('events', '{"id": 1, "payload": "f", "updated_at": "2024-09-24 11:00", "source_id": 1}',
                   ARRAY['updated_at', 'source_id']);  -- tie
SELECT safe_upsert('events', '{"id": 1, "payload": "f", "updated_at": "2024-09-24 11:00", "source_id": 1}',
                   version_cols => ARRAY['updated_at', 'source_id'], on_tie => 'apply');  -- updated
SELECT * FROM events ORDER BY id;

--
-- conflict_cols: the unique index whose columns are exactly these, in any order.
--
CREATE TABLE accounts (id int PRIMARY KEY, tenant text, email text, name text, version int,
                       UNIQUE (tenant, email));
SELECT safe_upsert('accounts', '{"id": 1, "tenant": "acme", "email": "ann@acme", "name": "Ann", "version": 1}',
                   'version', conflict_cols => ARRAY['tenant', 'email']);  -- inserted
SELECT safe_upsert('accounts', '{"id": 1, "tenant": "acme", "email": "ann@acme", "name": "Ann B.", "version": 2}',
                   'version', conflict_cols => ARRAY['email', 'tenant']);  -- updated
SELECT safe_upsert('accounts', '{"id": 1, "tenant": "acme", "email": "ann@acme", "name": "Old Ann", "version": 1}',
                   'version', conflict_cols => ARRAY['tenant', 'email']);  -- stale
-- the primary key is still the default target
SELECT safe_upsert('accounts', '{"id": 1, "tenant": "acme", "email": "ann@acme", "name": "Ann C.", "version": 3}',
                   'version');  -- updated
SELECT * FROM accounts ORDER BY id;
-- Another unique constraint violated: 23505, naming the constraint; nothing written.
-- (terse: the DETAIL of an error raised inside the SPI call would carry a Rust backtrace if the
-- server ran with RUST_BACKTRACE set, which is pgrx's doing and not the point here)
\set VERBOSITY terse
SELECT safe_upsert('accounts', '{"id": 2, "tenant": "acme", "email": "ann@acme", "name": "Bob", "version": 1}',
                   'version');
\echo :LAST_ERROR_SQLSTATE
SELECT safe_upsert('accounts', '{"id": 1, "tenant": "acme", "email": "bob@acme", "name": "Bob", "version": 1}',
                   'version', conflict_cols => ARRAY['tenant', 'email']);
\echo :LAST_ERROR_SQLSTATE
\set VERBOSITY default
SELECT * FROM accounts ORDER BY id;

--
-- JSON values become column values by each type's own input rules.
--
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN percent AS int CHECK (VALUE BETWEEN 0 AND 100);
CREATE TABLE typed (k uuid PRIMARY KEY, v bigint, n numeric, b bool, d date, ts timestamptz,
                    j jsonb, a int[], tags text[], m mood, p percent);
SELECT safe_upsert('typed', '{"k": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "v": 9007199254740993,
                    "n": 123456789012345678901234567890.000000001, "b": true, "d": "2024-02-29",
                    "ts": "2024-09-24T10:00:00+02:00", "j": {"x": [1, null, "two"]},
                    "a": [1, 2, 3], "tags": ["a,b", "{c}", "NULL", null], "m": "happy", "p": 42}', 'v');
SELECT * FROM typed;
-- a version of any ordered type: here a uuid key and a bigint version beyond 2^53
SELECT safe_upsert('typed', '{"k": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "v": 9007199254740992, "m": "sad"}', 'v');  -- stale
SELECT safe_upsert('typed', '{"k": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "v": 9007199254740994, "m": "ok"}', 'v');   -- updated
SELECT k, v, m FROM typed;

--
-- Bad input: each error has its own SQLSTATE and names the table, column or key at fault,
-- and the table is left unchanged.
--
CREATE TABLE t_before AS SELECT * FROM t;
-- target missing
SELECT safe_upsert('no_such_table', '{"id": 1, "date": "2024-01-01"}', 'date');
\echo :LAST_ERROR_SQLSTATE
SELECT safe_upsert(0::oid::regclass, '{"id": 1, "date": "2024-01-01"}', 'date');
\echo :LAST_ERROR_SQLSTATE
-- target not a table
CREATE VIEW t_view AS SELECT * FROM t;
SELECT safe_upsert('t_view', '{"id": 1, "date": "2024-01-01"}', 'date');
\echo :LAST_ERROR_SQLSTATE
CREATE SEQUENCE t_seq;
SELECT safe_upsert('t_seq', '{"id": 1, "date": "2024-01-01"}', 'date');
\echo :LAST_ERROR_SQLSTATE
-- row not a JSON object, or empty
SELECT safe_upsert('t', '[{"id": 1, "date": "2024-01-01"}]', 'date');
\echo :LAST_ERROR_SQLSTATE
SELECT safe_upsert('t', '"id"', 'date');
\echo :LAST_ERROR_SQLSTATE
SELECT safe_upsert('t', '{}', 'date');
\echo :LAST_ERROR_SQLSTATE
-- a JSON key that is not a column
SELECT safe_upsert('t', '{"id": 1, "date": "2024-01-01", "colour": "red"}', 'date');
\echo :LAST_ERROR_SQLSTATE
-- a key column missing or null
SELECT safe_upsert('t', '{"value": "x", "date": "2024-01-01"}', 'date');
\echo :LAST_ERROR_SQLSTATE
SELECT safe_upsert('t', '{"id": null, "value": "x", "date": "2024-01-01"}', 'date');
\echo :LAST_ERROR_SQLSTATE
-- version column not in the table, or part of the key
SELECT safe_upsert('t', '{"id": 1, "date": "2024-01-01"}', 'modified');
\echo :LAST_ERROR_SQLSTATE
SELECT safe_upsert('t', '{"id": 1, "date": "2024-01-01"}', 'id');
\echo :LAST_ERROR_SQLSTATE
-- version missing or null in the row
SELECT safe_upsert('t', '{"id": 1, "value": "x"}', 'date');
\echo :LAST_ERROR_SQLSTATE
SELECT safe_upsert('t', '{"id": 1, "value": "x", "date": null}', 'date');
\echo :LAST_ERROR_SQLSTATE
SELECT safe_upsert('events', '{"id": 1, "payload": "x", "updated_at": "2024-09-30 00:00", "source_id": null}',
                   ARRAY['updated_at', 'source_id']);
\echo :LAST_ERROR_SQLSTATE
-- a version column whose type has no ordering
CREATE TABLE docs (id int PRIMARY KEY, body json, rev point);
SELECT safe_upsert('docs', '{"id": 1, "body": {}, "rev": "(1,2)"}', 'rev');
\echo :LAST_ERROR_SQLSTATE
-- a value that does not convert to its column's type (PostgreSQL's own SQLSTATE)
SELECT safe_upsert('t', '{"id": 1, "date": "the day after tomorrow"}', 'date');
\echo :LAST_ERROR_SQLSTATE
SELECT safe_upsert('t', '{"id": 12345678901, "date": "2024-01-01"}', 'date');
\echo :LAST_ERROR_SQLSTATE
SELECT safe_upsert('t', '{"id": 1.5, "date": "2024-01-01"}', 'date');
\echo :LAST_ERROR_SQLSTATE
SELECT safe_upsert('typed', '{"k": "not-a-uuid", "v": 1}', 'v');
\echo :LAST_ERROR_SQLSTATE
SELECT safe_upsert('typed', '{"k": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a12", "v": 1, "m": "grumpy"}', 'v');
\echo :LAST_ERROR_SQLSTATE
SELECT safe_upsert('typed', '{"k": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a12", "v": 1, "p": 101}', 'v');
\echo :LAST_ERROR_SQLSTATE
-- a generated column sent
CREATE TABLE gen (id int PRIMARY KEY, version int, twice int GENERATED ALWAYS AS (version * 2) STORED,
                  serial_no int GENERATED ALWAYS AS IDENTITY);
SELECT safe_upsert('gen', '{"id": 1, "version": 1, "twice": 2}', 'version');
\echo :LAST_ERROR_SQLSTATE
SELECT safe_upsert('gen', '{"id": 1, "version": 1, "serial_no": 7}', 'version');
\echo :LAST_ERROR_SQLSTATE
SELECT safe_upsert('gen', '{"id": 1, "version": 1}', 'version');  -- inserted
SELECT * FROM gen;
-- no primary key and no conflict_cols; conflict_cols matching no unique index
CREATE TABLE nokey (a int, b int, version int);
SELECT safe_upsert('nokey', '{"a": 1, "b": 2, "version": 1}', 'version');
\echo :LAST_ERROR_SQLSTATE
SELECT safe_upsert('nokey', '{"a": 1, "b": 2, "version": 1}', 'version', conflict_cols => ARRAY['a', 'b']);
\echo :LAST_ERROR_SQLSTATE
SELECT safe_upsert('nokey', '{"a": 1, "b": 2, "version": 1}', 'version', conflict_cols => ARRAY['a', 'c']);
\echo :LAST_ERROR_SQLSTATE
CREATE UNIQUE INDEX nokey_a_b ON nokey (a, b);
SELECT safe_upsert('nokey', '{"a": 1, "b": 2, "version": 1}', 'version', conflict_cols => ARRAY['b', 'a']);  -- inserted
SELECT safe_upsert('nokey', '{"a": 1, "b": 2, "version": 1}', 'version', conflict_cols => ARRAY['a']);
\echo :LAST_ERROR_SQLSTATE
-- an unknown on_tie
SELECT safe_upsert('t', '{"id": 2, "date": "2024-01-01"}', 'date', on_tie => 'overwrite');
\echo :LAST_ERROR_SQLSTATE
-- NULL arguments
SELECT safe_upsert('t', NULL, 'date');
\echo :LAST_ERROR_SQLSTATE
SELECT safe_upsert('t', '{"id": 2, "date": "2024-01-01"}', NULL::name);
\echo :LAST_ERROR_SQLSTATE
-- none of the failed calls above wrote anything
SELECT * FROM t EXCEPT SELECT * FROM t_before;
SELECT * FROM t_before EXCEPT SELECT * FROM t;

-- A failed call inside a transaction aborts it, as any failed statement does; a savepoint
-- keeps the work before it.
BEGIN;
SELECT safe_upsert('t', '{"id": 5, "value": "five", "date": "2024-05-05"}', 'date');  -- inserted
SAVEPOINT s;
SELECT safe_upsert('t', '{"id": 6, "value": "six", "date": "not a date"}', 'date');
\echo :LAST_ERROR_SQLSTATE
ROLLBACK TO SAVEPOINT s;
SELECT safe_upsert('t', '{"id": 6, "value": "six", "date": "2024-06-06"}', 'date');  -- inserted
COMMIT;
SELECT * FROM t ORDER BY id;

DROP TABLE t, t_before, events, accounts, typed, docs, gen, nokey CASCADE;
DROP SEQUENCE t_seq;
DROP TYPE mood;
DROP DOMAIN percent;

--
-- Versioned deletes: the newest event wins, write or delete.
--
CREATE TABLE d (id int PRIMARY KEY, ver int NOT NULL, v text);
SELECT safe_upsert('d', '{"id": 1, "ver": 5, "v": "a"}', 'ver');   -- inserted
SELECT safe_delete('d', '{"id": 1, "ver": 3}', 'ver');             -- stale: the row is newer
SELECT safe_delete('d', '{"id": 1, "ver": 7}', 'ver');             -- deleted
SELECT safe_upsert('d', '{"id": 1, "ver": 6, "v": "late"}', 'ver'); -- stale: deleted at 7
SELECT safe_delete('d', '{"id": 1, "ver": 7}', 'ver');             -- duplicate: replayed delete
SELECT safe_delete('d', '{"id": 2, "ver": 4}', 'ver');             -- absent: tombstone recorded
SELECT relname, key, version FROM safe_upsert_tombstones ORDER BY key::text;
SELECT safe_upsert('d', '{"id": 1, "ver": 8, "v": "back"}', 'ver'); -- inserted: newer than the delete
SELECT * FROM d;
SELECT relname, key, version FROM safe_upsert_tombstones ORDER BY key::text;
-- the tombstones' columns are fixed while they exist
ALTER TABLE d ALTER COLUMN ver TYPE bigint;
\echo :LAST_ERROR_SQLSTATE
SELECT safe_upsert_purge_tombstones('d');
ALTER TABLE d ALTER COLUMN ver TYPE bigint;
DROP TABLE d;
