-- The statistics views over a small scripted session on a table of its own. Ids, times, pids
-- and OIDs change from run to run, so the queries show them in order or as booleans.
\set SHOW_CONTEXT never
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS pg_safeupsert;
RESET client_min_messages;
CREATE EXTENSION pg_safeupsert;

CREATE TABLE orders (id int PRIMARY KEY, status text, updated_at timestamptz, ref text UNIQUE);

-- Committed outcomes count (each statement commits on its own here).
SELECT safe_upsert('orders', '{"id": 1, "status": "new", "updated_at": "2024-01-01 10:00+00"}', 'updated_at');
SELECT safe_upsert('orders', '{"id": 1, "status": "paid", "updated_at": "2024-01-01 11:00+00"}', 'updated_at');
SELECT safe_upsert('orders', '{"id": 1, "status": "new", "updated_at": "2024-01-01 10:00+00"}', 'updated_at');
SELECT safe_upsert('orders', '{"id": 1, "status": "paid", "updated_at": "2024-01-01 11:00+00"}', 'updated_at');
SELECT safe_upsert('orders', '{"id": 1, "status": "shipped", "updated_at": "2024-01-01 11:00+00"}', 'updated_at');
SELECT * FROM safe_upsert_many('orders', '[{"id": 2, "status": "new", "updated_at": "2024-01-02 09:00+00"},
                                           {"id": 2, "status": "old", "updated_at": "2024-01-02 08:00+00"}]', 'updated_at');

-- A rolled-back transaction and a rolled-back savepoint leave no trace; a released one counts.
BEGIN;
SELECT safe_upsert('orders', '{"id": 3, "status": "new", "updated_at": "2024-01-03 09:00+00"}', 'updated_at');
ROLLBACK;
BEGIN;
SAVEPOINT a;
SELECT safe_upsert('orders', '{"id": 1, "status": "late", "updated_at": "2023-12-31 00:00+00"}', 'updated_at');
ROLLBACK TO SAVEPOINT a;
SAVEPOINT b;
SELECT safe_upsert('orders', '{"id": 4, "status": "new", "updated_at": "2024-01-04 09:00+00"}', 'updated_at');
RELEASE SAVEPOINT b;
COMMIT;

-- Failed calls are counted at once, although their transaction rolls back.
SELECT safe_upsert('orders', '{"id": 5, "status": "new", "updated_at": "2024-01-05 09:00+00", "ref": "A"}', 'updated_at');
SELECT safe_upsert('orders', '{"id": 6, "status": "new", "updated_at": "2024-01-06 09:00+00", "ref": "A"}', 'updated_at');
SELECT safe_upsert('orders', '{"id": "seven", "status": "new", "updated_at": "2024-01-07 09:00+00"}', 'updated_at');

SELECT schemaname, relname, inserted, updated, stale, duplicate, tie, unique_violations, errors,
       last_conflict_at IS NOT NULL AS has_conflict_time, stats_reset IS NOT NULL AS has_reset_time
FROM safe_upsert_stats WHERE relname = 'orders';

SELECT row_number() OVER (ORDER BY id) AS n, relname, kind, key, stored_version, incoming_version, incoming_row,
       usename = current_user AS by_me, pid = pg_backend_pid() AS this_backend
FROM safe_upsert_conflicts WHERE relname = 'orders' ORDER BY id;

SELECT tables_tracked >= 1 AS tracking, max_tables, conflict_log_size, plan_cache_size, track, save,
       shared_memory_bytes > 0 AS has_memory
FROM safe_upsert_info;

-- Tracking can be turned off per session.
SET safe_upsert.track = off;
SELECT safe_upsert('orders', '{"id": 1, "status": "old", "updated_at": "2020-01-01 00:00+00"}', 'updated_at');
RESET safe_upsert.track;
SELECT stale FROM safe_upsert_stats WHERE relname = 'orders';

-- Reset one table.
SELECT safe_upsert_stats_reset('orders');
SELECT inserted, updated, stale, duplicate, tie, unique_violations, errors, last_conflict_at
FROM safe_upsert_stats WHERE relname = 'orders';

-- A dropped table's row goes away.
DROP TABLE orders;
SELECT count(*) FROM safe_upsert_stats WHERE relname = 'orders';
