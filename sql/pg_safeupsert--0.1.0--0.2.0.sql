-- pg_safeupsert 0.1.0 -> 0.2.0 (unreleased). Every change to the SQL objects made for 0.2.0
-- goes here, in the order it was made, until 0.2.0 is released; from then on this file is
-- frozen too. The upgrade tier (scripts/test-upgrade.sh) checks that 0.1.0 plus this script
-- gives exactly the objects of a fresh 0.2.0 install.
\echo Use "ALTER EXTENSION pg_safeupsert UPDATE" to load this file. \quit

-- Versioned deletes: two outcomes, the tombstone tables' registry and event triggers,
-- safe_delete, the purge, the view.
ALTER TYPE safe_upsert_outcome ADD VALUE 'deleted';
ALTER TYPE safe_upsert_outcome ADD VALUE 'absent';

CREATE SCHEMA safe_upsert_data;
COMMENT ON SCHEMA safe_upsert_data IS 'pg_safeupsert: the tombstone tables, one per table with versioned deletes';
-- each tombstone table belongs to its target's owner, who works on it through this schema;
-- the tables themselves grant nothing to anyone else
GRANT USAGE ON SCHEMA safe_upsert_data TO PUBLIC;
CREATE TABLE safe_upsert_data.tombstone_tables (
    target regclass PRIMARY KEY,
    tombstones regclass NOT NULL UNIQUE,
    key_cols name[] NOT NULL,
    version_cols name[] NOT NULL
);
COMMENT ON TABLE safe_upsert_data.tombstone_tables IS 'pg_safeupsert: which table keeps the tombstones of which target';
REVOKE ALL ON safe_upsert_data.tombstone_tables FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('safe_upsert_data.tombstone_tables', '');

-- A dropped target takes its tombstones along; a dropped tombstone table leaves the registry.
CREATE FUNCTION safe_upsert_data.on_drop() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT t.target, t.tombstones, d.objid = t.tombstones::oid AS side_dropped
        FROM pg_event_trigger_dropped_objects() d
        JOIN safe_upsert_data.tombstone_tables t ON d.objid IN (t.target::oid, t.tombstones::oid)
        WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objsubid = 0
    LOOP
        DELETE FROM safe_upsert_data.tombstone_tables WHERE target::oid = r.target::oid;
        IF NOT r.side_dropped AND pg_catalog.to_regclass(r.tombstones::text) IS NOT NULL THEN
            EXECUTE pg_catalog.format('DROP TABLE %s', r.tombstones);
        END IF;
    END LOOP;
    -- a key or version column dropped from a target that keeps tombstones
    FOR r IN
        SELECT t.target, d.address_names[3] AS col
        FROM pg_event_trigger_dropped_objects() d
        JOIN safe_upsert_data.tombstone_tables t ON d.objid = t.target::oid
        WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objsubid <> 0
          AND d.address_names[3] = ANY (t.key_cols || t.version_cols)
    LOOP
        RAISE EXCEPTION 'cannot drop column "%" of table %: its tombstones compare it', r.col, r.target
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = pg_catalog.format('Remove the tombstones first: SELECT safe_upsert_purge_tombstones(%L);', r.target::text);
    END LOOP;
END
$$;
CREATE EVENT TRIGGER safe_upsert_on_drop ON sql_drop EXECUTE FUNCTION safe_upsert_data.on_drop();

-- ALTER TABLE on a key or version column of a target that keeps tombstones: refused, since the
-- tombstones would no longer compare as the table does.
CREATE FUNCTION safe_upsert_data.on_alter() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT t.target, a.attname
        FROM (SELECT DISTINCT objid FROM pg_event_trigger_ddl_commands()
              WHERE classid = 'pg_catalog.pg_class'::regclass) c
        JOIN safe_upsert_data.tombstone_tables t ON t.target::oid = c.objid
        JOIN pg_attribute a ON a.attrelid = t.tombstones::oid AND a.attnum > 0 AND NOT a.attisdropped
        LEFT JOIN pg_attribute b ON b.attrelid = t.target::oid AND b.attname = a.attname AND NOT b.attisdropped
        WHERE a.attname = ANY (t.key_cols || t.version_cols)
          AND (b.attname IS NULL OR b.atttypid <> a.atttypid OR b.atttypmod <> a.atttypmod
               OR b.attcollation <> a.attcollation)
    LOOP
        RAISE EXCEPTION 'cannot change column "%" of table %: its tombstones compare it', r.attname, r.target
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'A renamed, retyped or dropped key or version column would leave tombstones that compare wrong.',
                  HINT = pg_catalog.format('Remove the tombstones first: SELECT safe_upsert_purge_tombstones(%L);', r.target::text);
    END LOOP;
END
$$;
CREATE EVENT TRIGGER safe_upsert_on_alter ON ddl_command_end WHEN TAG IN ('ALTER TABLE')
    EXECUTE FUNCTION safe_upsert_data.on_alter();

CREATE FUNCTION safe_delete(target regclass, "row" jsonb, version_col name, conflict_cols name[] DEFAULT NULL)
RETURNS safe_upsert_outcome
LANGUAGE c VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'safe_delete_one_wrapper';
COMMENT ON FUNCTION safe_delete(regclass, jsonb, name, name[]) IS
  'Delete the stored row if its version is older or equal, keeping a tombstone that refuses older writes.';

CREATE FUNCTION safe_delete(target regclass, "row" jsonb, version_cols name[], conflict_cols name[] DEFAULT NULL)
RETURNS safe_upsert_outcome
LANGUAGE c VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'safe_delete_multi_wrapper';
COMMENT ON FUNCTION safe_delete(regclass, jsonb, name[], name[]) IS
  'safe_delete with several version columns compared in order.';

CREATE FUNCTION safe_upsert_purge_tombstones(target regclass DEFAULT NULL, older_than interval DEFAULT NULL)
RETURNS bigint
LANGUAGE c VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'safe_upsert_purge_tombstones_wrapper';
COMMENT ON FUNCTION safe_upsert_purge_tombstones(regclass, interval) IS
  'Remove the tombstones of a table (or of every table you own), all or those older than older_than; returns how many.';

CREATE FUNCTION safe_upsert_tombstone_rows()
RETURNS TABLE(relid oid, schemaname text, relname text, key jsonb, version jsonb, deleted_at timestamptz)
LANGUAGE c VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'safe_upsert_tombstone_rows_wrapper';
COMMENT ON FUNCTION safe_upsert_tombstone_rows() IS 'Internal to the view safe_upsert_tombstones.';

CREATE VIEW safe_upsert_tombstones AS
    SELECT relid, schemaname::name AS schemaname, relname::name AS relname, key, version, deleted_at
    FROM safe_upsert_tombstone_rows();
COMMENT ON VIEW safe_upsert_tombstones IS
  'The tombstones of deleted keys, of the tables you may SELECT from.';
GRANT SELECT ON safe_upsert_tombstones TO PUBLIC;

-- safe_delete_many
CREATE FUNCTION safe_delete_many(target regclass, "rows" jsonb, version_col name, conflict_cols name[] DEFAULT NULL)
RETURNS TABLE(ord int, outcome safe_upsert_outcome)
LANGUAGE c VOLATILE PARALLEL UNSAFE ROWS 1000
AS 'MODULE_PATHNAME', 'safe_delete_many_one_wrapper';
COMMENT ON FUNCTION safe_delete_many(regclass, jsonb, name, name[]) IS
  'safe_delete for every object of a JSON array, set-based; one outcome per row, in input order.';

CREATE FUNCTION safe_delete_many(target regclass, "rows" jsonb, version_cols name[], conflict_cols name[] DEFAULT NULL)
RETURNS TABLE(ord int, outcome safe_upsert_outcome)
LANGUAGE c VOLATILE PARALLEL UNSAFE ROWS 1000
AS 'MODULE_PATHNAME', 'safe_delete_many_multi_wrapper';
COMMENT ON FUNCTION safe_delete_many(regclass, jsonb, name[], name[]) IS
  'safe_delete_many with several version columns compared in order.';

-- Statistics of deletes: the views read new functions with more columns (appended, so that
-- CREATE OR REPLACE VIEW keeps what depends on them); 0.1.0's functions go.
CREATE FUNCTION safe_upsert_stats_rows()
RETURNS TABLE(relid oid, inserted bigint, updated bigint, stale bigint, duplicate bigint, tie bigint,
              skipped_by_trigger bigint, unique_violations bigint, errors bigint,
              last_conflict_at timestamptz, stats_reset timestamptz, deleted bigint, absent bigint,
              delete_stale bigint, delete_duplicate bigint, delete_skipped_by_trigger bigint)
LANGUAGE c VOLATILE PARALLEL SAFE AS 'MODULE_PATHNAME', 'safe_upsert_stats_rows_wrapper';
COMMENT ON FUNCTION safe_upsert_stats_rows() IS 'Internal to the view safe_upsert_stats.';

CREATE FUNCTION safe_upsert_conflict_rows()
RETURNS TABLE(id bigint, occurred_at timestamptz, relid oid, kind text, key jsonb, stored_version jsonb,
              incoming_version jsonb, incoming_row jsonb, pid integer, userid oid, operation text,
              tombstone boolean)
LANGUAGE c VOLATILE PARALLEL SAFE AS 'MODULE_PATHNAME', 'safe_upsert_conflict_rows_wrapper';
COMMENT ON FUNCTION safe_upsert_conflict_rows() IS 'Internal to the view safe_upsert_conflicts.';

CREATE FUNCTION safe_upsert_info_row()
RETURNS TABLE(tables_tracked bigint, max_tables integer, tables_evicted bigint, conflict_log_size integer,
              conflicts_logged bigint, stats_reset timestamptz, shared_memory_bytes bigint,
              plan_cache_entries integer, plan_cache_size integer, track boolean, save boolean,
              notify_events_queued bigint, notify_events_pending bigint, notify_events_dropped bigint,
              notifications_sent bigint, last_notification_at timestamptz, notify_workers integer,
              conflicts_skipped bigint, tombstones bigint)
LANGUAGE c VOLATILE PARALLEL UNSAFE AS 'MODULE_PATHNAME', 'safe_upsert_info_row_wrapper';
COMMENT ON FUNCTION safe_upsert_info_row() IS 'Internal to the view safe_upsert_info.';

CREATE OR REPLACE VIEW safe_upsert_stats AS
  SELECT s.relid, n.nspname AS schemaname, c.relname,
         s.inserted, s.updated, s.stale, s.duplicate, s.tie, s.skipped_by_trigger,
         s.unique_violations, s.errors, s.last_conflict_at, s.stats_reset,
         s.deleted, s.absent, s.delete_stale, s.delete_duplicate, s.delete_skipped_by_trigger
  FROM safe_upsert_stats_rows() s
  JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) s.relid
  JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace;
COMMENT ON VIEW safe_upsert_stats IS 'Outcomes of safe_upsert and safe_delete per table of the current database, counted at commit.';

CREATE OR REPLACE VIEW safe_upsert_conflicts AS
  SELECT l.id, l.occurred_at, l.relid, n.nspname AS schemaname, c.relname, l.kind, l.key,
         l.stored_version, l.incoming_version, l.incoming_row, l.pid,
         pg_catalog.pg_get_userbyid(l.userid) AS usename, l.operation, l.tombstone
  FROM safe_upsert_conflict_rows() l
  JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) l.relid
  JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
  ORDER BY l.id;
CREATE OR REPLACE VIEW safe_upsert_info AS SELECT * FROM safe_upsert_info_row();

DROP FUNCTION safe_upsert_stats_data();
DROP FUNCTION safe_upsert_conflicts_data();
DROP FUNCTION safe_upsert_info_data();

-- The kept note in its whole-row form: the upsert passes the stored and incoming rows, and the
-- note compares the sent columns itself (0.1.0's form stays, for the tombstones' statements).
CREATE FUNCTION safe_upsert_kept(same_version boolean, stored record, incoming record, stored_version text)
RETURNS boolean
LANGUAGE c VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'safe_upsert_kept_rows_wrapper';
COMMENT ON FUNCTION safe_upsert_kept(boolean, record, record, text) IS
  'Internal to safe_upsert''s statements: notes why a stored row was kept, comparing the rows; always false.';
