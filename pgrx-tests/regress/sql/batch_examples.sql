-- safe_upsert_many: the README example and the batch rules, with their psql output.
\set SHOW_CONTEXT never
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS pg_safeupsert;
RESET client_min_messages;
CREATE EXTENSION pg_safeupsert;

CREATE TABLE batch_t (id int PRIMARY KEY, value text, date timestamp, note text DEFAULT 'default');

-- One result row per input row, in input order; the highest version of a key wins.
SELECT * FROM safe_upsert_many('batch_t', '[{"id": 1, "value": "a", "date": "2024-01-01"},
                                      {"id": 1, "value": "b", "date": "2024-01-03"},
                                      {"id": 4, "value": "n", "date": "2024-01-01"}]', 'date');
SELECT * FROM batch_t ORDER BY id;

-- Rows compared with the stored ones and with each other: stale, duplicate, tie, updated.
SELECT * FROM safe_upsert_many('batch_t', '[{"id": 1, "value": "old", "date": "2023-01-01"},
                                      {"id": 4, "value": "n", "date": "2024-01-01"},
                                      {"id": 4, "value": "other", "date": "2024-01-01"},
                                      {"id": 5, "value": "x", "date": "2024-01-01"},
                                      {"id": 5, "value": "x", "date": "2024-01-01"},
                                      {"id": 5, "value": "y", "date": "2024-01-01"},
                                      {"id": 1, "value": "c", "date": "2024-02-01"}]', 'date');
SELECT * FROM batch_t ORDER BY id;

-- Rows may carry different columns: absent ones keep their defaults or stored values.
SELECT * FROM safe_upsert_many('batch_t', '[{"id": 6, "value": "v", "date": "2024-01-01", "note": "given"},
                                      {"id": 1, "date": "2024-03-01"}]', 'date');
SELECT * FROM batch_t ORDER BY id;

-- on_tie => 'apply': of equal versions the last row wins.
SELECT * FROM safe_upsert_many('batch_t', '[{"id": 7, "value": "first", "date": "2024-01-01"},
                                      {"id": 7, "value": "last", "date": "2024-01-01"}]', 'date', on_tie => 'apply');
SELECT value FROM batch_t WHERE id = 7;

-- Several version columns.
CREATE TABLE batch_ev (id int PRIMARY KEY, at timestamp, source int, body text);
SELECT * FROM safe_upsert_many('batch_ev', '[{"id": 1, "at": "2024-01-01", "source": 2, "body": "b"},
                                       {"id": 1, "at": "2024-01-01", "source": 1, "body": "a"}]',
                               ARRAY['at', 'source']);
SELECT * FROM batch_ev;

-- Atomic: a bad row fails the whole call, and says which row it was.
SELECT * FROM safe_upsert_many('batch_t', '[{"id": 8, "value": "ok", "date": "2024-01-01"},
                                      {"id": "nine", "value": "bad", "date": "2024-01-01"}]', 'date');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM safe_upsert_many('batch_t', '[{"id": 8, "value": "ok", "date": "2024-01-01"},
                                      {"id": 9, "value": "no version"}]', 'date');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM safe_upsert_many('batch_t', '[{"id": 8, "value": "ok", "date": "2024-01-01"}, 42]', 'date');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM safe_upsert_many('batch_t', '{"id": 8}', 'date');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM batch_t WHERE id IN (8, 9);

-- An empty array is an empty result.
SELECT * FROM safe_upsert_many('batch_t', '[]', 'date');

DROP TABLE batch_t, batch_ev;
