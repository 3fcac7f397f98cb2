//! In-server tests: BEFORE triggers that skip rows, and triggers that call safe_upsert.

#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    use crate::tests::helpers::*;

    #[pg_test]
    fn a_trigger_calling_safe_upsert_inside_a_write_keeps_each_calls_outcomes_apart() {
        // The inner calls run inside the outer write and keep stored rows too: every call must
        // still tell its own rows' outcomes.
        run(r#"
            CREATE TABLE nest_inner (id int PRIMARY KEY, v int, val text);
            INSERT INTO nest_inner SELECT g, 5, 'inner' FROM generate_series(1, 4) g;
            CREATE TABLE nest_log (id int, outcome text);
            CREATE TABLE nest_outer (id int PRIMARY KEY, v int, val text);
            INSERT INTO nest_outer VALUES (1, 10, 'a'), (2, 10, 'a'), (3, 10, 'a');
            CREATE FUNCTION nest_trigger() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                INSERT INTO nest_log SELECT NEW.id,
                    safe_upsert('nest_inner', jsonb_build_object('id', NEW.id, 'v', 1, 'val', 'x'), 'v')::text;
                RETURN NEW;
            END $$;
            CREATE TRIGGER nest BEFORE INSERT ON nest_outer FOR EACH ROW EXECUTE FUNCTION nest_trigger();
        "#);
        assert_eq!(
            text(r#"SELECT string_agg(outcome::text, ' ' ORDER BY ord) FROM safe_upsert_many('nest_outer',
                    '[{"id": 1, "v": 9, "val": "b"}, {"id": 2, "v": 10, "val": "b"},
                      {"id": 3, "v": 10, "val": "a"}, {"id": 4, "v": 1, "val": "b"}]', 'v')"#),
            "stale tie duplicate inserted"
        );
        assert_eq!(upsert("nest_outer", r#"{"id": 2, "v": 10, "val": "c"}"#, "v"), "tie");
        assert_eq!(upsert("nest_outer", r#"{"id": 3, "v": 10, "val": "a"}"#, "v"), "duplicate");
        assert_eq!(text("SELECT string_agg(outcome, ' ') FROM nest_log"), "stale stale stale stale stale stale");
        assert_eq!(contents("nest_inner"), "(1,5,inner) (2,5,inner) (3,5,inner) (4,5,inner)");
    }

    #[pg_test]
    fn a_before_update_trigger_that_cancels_a_newer_row_is_skipped_by_trigger_not_stale() {
        // The versions let the row through; the trigger returned NULL. Nothing was refused by
        // version, so it is no conflict: single calls and batches say so alike.
        versioned_table("trg_upd");
        run(r#"
            CREATE FUNCTION trg_upd_cancel() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN RETURN CASE WHEN NEW.val = 'cancel' THEN NULL ELSE NEW END; END $$;
            CREATE TRIGGER cancel BEFORE UPDATE ON trg_upd FOR EACH ROW EXECUTE FUNCTION trg_upd_cancel();
            INSERT INTO trg_upd VALUES (2, 10, 'a');
        "#);
        assert_eq!(upsert("trg_upd", r#"{"id": 1, "v": 11, "val": "cancel"}"#, "v"), "skipped_by_trigger");
        assert_eq!(upsert("trg_upd", r#"{"id": 1, "v": 9, "val": "cancel"}"#, "v"), "stale");
        // the batch mixes a cancelled winner with rows the versions refused (one note for two
        // kept winners), so the stored rows are read back to tell them apart
        assert_eq!(
            text(r#"SELECT string_agg(outcome::text, ' ' ORDER BY ord) FROM safe_upsert_many('trg_upd',
                    '[{"id": 1, "v": 12, "val": "cancel"}, {"id": 2, "v": 9, "val": "b"},
                      {"id": 2, "v": 10, "val": "a"}, {"id": 3, "v": 1, "val": "c"}]', 'v')"#),
            "skipped_by_trigger stale duplicate inserted"
        );
        // every winner cancelled: no note at all
        assert_eq!(
            text(r#"SELECT string_agg(outcome::text, ' ' ORDER BY ord) FROM safe_upsert_many('trg_upd',
                    '[{"id": 1, "v": 13, "val": "cancel"}, {"id": 2, "v": 13, "val": "cancel"}]', 'v')"#),
            "skipped_by_trigger skipped_by_trigger"
        );
        assert_eq!(contents("trg_upd"), "(1,10,a,none) (2,10,a,none) (3,1,c,none)");
    }

    /// A BEFORE INSERT trigger on `table` that drops rows whose `val` is 'drop'.
    fn dropping_trigger(table: &str) {
        run(&format!(
            r#"CREATE FUNCTION {table}_drop() RETURNS trigger LANGUAGE plpgsql AS $$
               BEGIN RETURN CASE WHEN NEW.val = 'drop' THEN NULL ELSE NEW END; END $$;
               CREATE TRIGGER drop_rows BEFORE INSERT ON {table} FOR EACH ROW EXECUTE FUNCTION {table}_drop();"#
        ));
    }

    #[pg_test]
    fn a_before_insert_trigger_returning_null_is_skipped_by_trigger_not_stale() {
        versioned_table("trg_ins");
        dropping_trigger("trg_ins");
        assert_eq!(upsert("trg_ins", r#"{"id": 5, "v": 1, "val": "drop"}"#, "v"), "skipped_by_trigger");
        // PostgreSQL runs BEFORE INSERT triggers before it looks for a conflict: a stored key
        // is not even compared
        assert_eq!(upsert("trg_ins", r#"{"id": 1, "v": 99, "val": "drop"}"#, "v"), "skipped_by_trigger");
        assert_eq!(
            text(r#"SELECT string_agg(outcome::text, ' ' ORDER BY ord) FROM safe_upsert_many('trg_ins',
                    '[{"id": 6, "v": 1, "val": "drop"}, {"id": 7, "v": 1, "val": "keep"}, {"id": 1, "v": 5, "val": "x"}]', 'v')"#),
            "skipped_by_trigger inserted stale"
        );
        assert_eq!(contents("trg_ins"), "(1,10,a,none) (7,1,keep,none)");
    }

    #[pg_test]
    fn a_partitioned_tables_before_insert_trigger_returning_null_is_skipped_by_trigger() {
        // Partitioned tables are written by INSERT ... DO NOTHING, then UPDATE: an insert that
        // found no row and left none behind was dropped by the trigger.
        run("CREATE TABLE trg_part (id int PRIMARY KEY, v bigint, val text, note text) PARTITION BY RANGE (id);
             CREATE TABLE trg_part_1 PARTITION OF trg_part FOR VALUES FROM (0) TO (100);
             INSERT INTO trg_part VALUES (1, 10, 'a', 'none');");
        dropping_trigger("trg_part");
        assert_eq!(upsert("trg_part", r#"{"id": 5, "v": 1, "val": "drop"}"#, "v"), "skipped_by_trigger");
        assert_eq!(
            text(r#"SELECT string_agg(outcome::text, ' ' ORDER BY ord) FROM safe_upsert_many('trg_part',
                    '[{"id": 6, "v": 1, "val": "drop"}, {"id": 7, "v": 1, "val": "keep"}, {"id": 1, "v": 5, "val": "x"}]', 'v')"#),
            "skipped_by_trigger inserted stale"
        );
        assert_eq!(contents("trg_part"), "(1,10,a,none) (7,1,keep,)");
    }
}
