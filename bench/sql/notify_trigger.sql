-- The notification peer of suite 3: conflicts written to a second table whose AFTER INSERT
-- trigger calls pg_notify in the writing transaction, as users do without a worker. The writer
-- inserts a conflict row only when safe_upsert kept the stored one (one statement, see
-- bench/suite_notify.py); NOTIFY then takes its cluster-wide lock at that commit.
CREATE OR REPLACE FUNCTION bench_notify_conflict() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
  PERFORM pg_notify('bench_conflicts',
                    json_build_object('table', NEW.relname, 'kind', NEW.kind, 'id', NEW.id,
                                      'version', NEW.version)::text);
  RETURN NULL;
END
$fn$;
