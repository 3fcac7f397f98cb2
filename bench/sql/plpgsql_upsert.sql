-- What users write instead of safe_upsert: a generic PL/pgSQL function that takes the row as
-- jsonb, builds INSERT ... ON CONFLICT ... DO UPDATE ... WHERE stored < incoming with
-- EXECUTE format(...) from the JSON's keys, and converts the values with jsonb_populate_record.
-- The conflict column is an argument (default 'id') rather than looked up from the catalog,
-- which spares it work safe_upsert does (once per plan). EXECUTE plans the statement at every
-- call: that is the price of being generic in PL/pgSQL.
-- Returns true when the row was written, false when the stored row was kept.
CREATE OR REPLACE FUNCTION plpgsql_upsert(target regclass, r jsonb, version_col text,
                                          key_col text DEFAULT 'id')
RETURNS boolean
LANGUAGE plpgsql AS $fn$
DECLARE
  cols text;
  sets text;
  n bigint;
BEGIN
  SELECT string_agg(quote_ident(k), ', '),
         string_agg(format('%1$I = EXCLUDED.%1$I', k), ', ') FILTER (WHERE k <> key_col)
    INTO cols, sets
    FROM jsonb_object_keys(r) AS k;
  EXECUTE format(
    'INSERT INTO %1$s AS t (%2$s) SELECT %2$s FROM jsonb_populate_record(NULL::%1$s, $1) '
    'ON CONFLICT (%3$I) DO UPDATE SET %4$s WHERE t.%5$I IS NULL OR t.%5$I < EXCLUDED.%5$I',
    target, cols, key_col, sets, version_col)
  USING r;
  GET DIAGNOSTICS n = ROW_COUNT;
  RETURN n > 0;
END
$fn$;
