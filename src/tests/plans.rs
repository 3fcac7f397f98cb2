//! In-server tests: names, schemas, partitioned tables, and plans that stay right after DDL and whatever the row's keys.

#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    use crate::tests::helpers::*;

    // ---------------------------------------------------------------------------------------------
    // names and schemas
    // ---------------------------------------------------------------------------------------------

    #[pg_test]
    fn quoted_mixed_case_table_and_column_names_work() {
        run(r#"CREATE SCHEMA "Names Schema";
               CREATE TABLE "Names Schema"."Order Items" ("Id" int PRIMARY KEY, "Version" bigint,
                                                         "select" text, "wEiRd ""col""" text)"#);
        let table = r#""Names Schema"."Order Items""#;
        let row = |v: i32, s: &str| format!(r#"{{"Id": 1, "Version": {v}, "select": "{s}", "wEiRd \"col\"": "{s}!"}}"#);
        assert_eq!(upsert(table, &row(1, "a"), "Version"), "inserted");
        assert_eq!(upsert(table, &row(2, "b"), "Version"), "updated");
        assert_eq!(upsert(table, &row(1, "c"), "Version"), "stale");
        assert_eq!(upsert_with(table, &row(3, "d"), r#"ARRAY['Version'], ARRAY['Id']"#), "updated");
        assert_eq!(contents(table), "(1,3,d,d!)");
        // names are matched exactly: "id" is not "Id"
        assert_rejected(
            table,
            &format!(r#"SELECT safe_upsert('{table}', '{{"id": 1, "Version": 4}}', 'Version')"#),
            "42703",
            &[r#""id""#, "Order Items"],
        );
    }

    #[pg_test]
    fn table_in_another_schema_is_written_and_its_namesake_is_not() {
        run("CREATE SCHEMA other_sch;
             CREATE TABLE other_sch.items (id int PRIMARY KEY, v int, val text);
             CREATE TABLE public.items_ns (id int PRIMARY KEY, v int, val text);
             CREATE TABLE other_sch.items_ns (id int PRIMARY KEY, v int, val text)");
        assert_eq!(text("SELECT (current_setting('search_path') LIKE '%other_sch%')::text"), "false");
        assert_eq!(upsert("other_sch.items", r#"{"id": 1, "v": 1, "val": "a"}"#, "v"), "inserted");
        assert_eq!(upsert("other_sch.items", r#"{"id": 1, "v": 2, "val": "b"}"#, "v"), "updated");
        assert_eq!(contents("other_sch.items"), "(1,2,b)");
        // same name, same column set, two schemas: each call writes its own table
        assert_eq!(upsert("public.items_ns", r#"{"id": 1, "v": 1, "val": "public"}"#, "v"), "inserted");
        assert_eq!(upsert("other_sch.items_ns", r#"{"id": 1, "v": 1, "val": "other"}"#, "v"), "inserted");
        assert_eq!(contents("public.items_ns"), "(1,1,public)");
        assert_eq!(contents("other_sch.items_ns"), "(1,1,other)");
    }

    #[pg_test]
    fn partitioned_tables_are_targets() {
        run("CREATE TABLE part_t (region text, id int, v int, val text, PRIMARY KEY (region, id))
                 PARTITION BY LIST (region);
             CREATE TABLE part_t_eu PARTITION OF part_t FOR VALUES IN ('eu');
             CREATE TABLE part_t_us PARTITION OF part_t FOR VALUES IN ('us')");
        assert_eq!(upsert("part_t", r#"{"region": "eu", "id": 1, "v": 1, "val": "a"}"#, "v"), "inserted");
        assert_eq!(upsert("part_t", r#"{"region": "us", "id": 1, "v": 1, "val": "b"}"#, "v"), "inserted");
        assert_eq!(upsert("part_t", r#"{"region": "eu", "id": 1, "v": 2, "val": "c"}"#, "v"), "updated");
        assert_eq!(upsert("part_t", r#"{"region": "us", "id": 1, "v": 0, "val": "d"}"#, "v"), "stale");
        assert_eq!(contents("part_t_eu"), "(eu,1,2,c)");
        assert_eq!(contents("part_t_us"), "(us,1,1,b)");
    }

    // ---------------------------------------------------------------------------------------------
    // plans stay right after DDL in the same transaction
    // ---------------------------------------------------------------------------------------------

    #[pg_test]
    fn added_column_can_be_sent_and_unsent_rows_get_its_default() {
        run("CREATE TABLE ddl_add (id int PRIMARY KEY, v int, a text)");
        assert_eq!(upsert("ddl_add", r#"{"id": 1, "v": 1, "a": "x"}"#, "v"), "inserted");
        assert_rejected(
            "ddl_add",
            r#"SELECT safe_upsert('ddl_add', '{"id": 1, "v": 2, "b": "early"}', 'v')"#,
            "42703",
            &[r#""b""#],
        );
        run("ALTER TABLE ddl_add ADD COLUMN b text DEFAULT 'dflt'");
        // same column set as the cached plan
        assert_eq!(upsert("ddl_add", r#"{"id": 1, "v": 2, "a": "y"}"#, "v"), "updated");
        assert_eq!(upsert("ddl_add", r#"{"id": 2, "v": 1, "a": "z"}"#, "v"), "inserted");
        assert_eq!(upsert("ddl_add", r#"{"id": 1, "v": 3, "a": "y", "b": "sent"}"#, "v"), "updated");
        assert_eq!(contents("ddl_add"), "(1,3,y,sent) (2,1,z,dflt)");
    }

    #[pg_test]
    fn dropped_unsent_column_does_not_break_the_cached_plan() {
        run("CREATE TABLE ddl_drop (id int PRIMARY KEY, gone text DEFAULT 'g', v int, a text)");
        assert_eq!(upsert("ddl_drop", r#"{"id": 1, "v": 1, "a": "x"}"#, "v"), "inserted");
        run("ALTER TABLE ddl_drop DROP COLUMN gone");
        assert_eq!(upsert("ddl_drop", r#"{"id": 1, "v": 2, "a": "y"}"#, "v"), "updated");
        assert_eq!(upsert("ddl_drop", r#"{"id": 2, "v": 1, "a": "z"}"#, "v"), "inserted");
        assert_eq!(upsert("ddl_drop", r#"{"id": 1, "v": 2, "a": "y"}"#, "v"), "duplicate");
        assert_eq!(contents("ddl_drop"), "(1,2,y) (2,1,z)");
        // a dropped column that is sent is an unknown key
        run("ALTER TABLE ddl_drop DROP COLUMN a");
        assert_rejected(
            "ddl_drop",
            r#"SELECT safe_upsert('ddl_drop', '{"id": 1, "v": 3, "a": "w"}', 'v')"#,
            "42703",
            &[r#""a""#, "ddl_drop"],
        );
        assert_eq!(upsert("ddl_drop", r#"{"id": 1, "v": 3}"#, "v"), "updated");
        assert_eq!(contents("ddl_drop"), "(1,3) (2,1)");
    }

    #[pg_test]
    fn retyped_version_column_is_compared_with_its_new_type() {
        run("CREATE TABLE ddl_type (id int PRIMARY KEY, v int, val text)");
        assert_eq!(upsert("ddl_type", r#"{"id": 1, "v": 9, "val": "a"}"#, "v"), "inserted");
        assert_eq!(upsert("ddl_type", r#"{"id": 1, "v": 10, "val": "b"}"#, "v"), "updated");
        run("ALTER TABLE ddl_type ALTER COLUMN v TYPE text");
        // as text, "9" is newer than "10"
        assert_eq!(upsert("ddl_type", r#"{"id": 1, "v": 9, "val": "c"}"#, "v"), "updated");
        assert_eq!(upsert("ddl_type", r#"{"id": 1, "v": 10, "val": "d"}"#, "v"), "stale");
        assert_eq!(stored("ddl_type", 1).as_deref(), Some("(1,9,c)"));
        run("ALTER TABLE ddl_type ALTER COLUMN v TYPE bigint USING v::bigint");
        assert_eq!(upsert("ddl_type", r#"{"id": 1, "v": 5000000000, "val": "e"}"#, "v"), "updated");
        assert_eq!(upsert("ddl_type", r#"{"id": 1, "v": 10, "val": "f"}"#, "v"), "stale");
        assert_eq!(stored("ddl_type", 1).as_deref(), Some("(1,5000000000,e)"));
    }

    #[pg_test]
    fn recreated_primary_key_on_other_columns_is_the_new_conflict_key() {
        run("CREATE TABLE ddl_pk (a int, b int, v int, val text, CONSTRAINT ddl_pk_pkey PRIMARY KEY (a))");
        assert_eq!(upsert("ddl_pk", r#"{"a": 1, "b": 1, "v": 1, "val": "x"}"#, "v"), "inserted");
        assert_eq!(upsert("ddl_pk", r#"{"a": 1, "b": 2, "v": 2, "val": "y"}"#, "v"), "updated");
        run("ALTER TABLE ddl_pk DROP CONSTRAINT ddl_pk_pkey, ADD PRIMARY KEY (a, b)");
        // (1, 1) is a new key now; (1, 2) is the stored one
        assert_eq!(upsert("ddl_pk", r#"{"a": 1, "b": 1, "v": 1, "val": "z"}"#, "v"), "inserted");
        assert_eq!(upsert("ddl_pk", r#"{"a": 1, "b": 2, "v": 3, "val": "w"}"#, "v"), "updated");
        assert_eq!(upsert("ddl_pk", r#"{"a": 1, "b": 2, "v": 1, "val": "old"}"#, "v"), "stale");
        assert_eq!(contents("ddl_pk"), "(1,1,1,z) (1,2,3,w)");
        // and back to one column: the same call now needs (a) alone
        run("DELETE FROM ddl_pk WHERE b = 1;
             ALTER TABLE ddl_pk DROP CONSTRAINT ddl_pk_pkey, ADD PRIMARY KEY (b)");
        assert_eq!(upsert("ddl_pk", r#"{"a": 7, "b": 2, "v": 4, "val": "v"}"#, "v"), "updated");
        assert_eq!(contents("ddl_pk"), "(7,2,4,v)");
        // without a primary key the cached plan must not be used
        run("ALTER TABLE ddl_pk DROP CONSTRAINT ddl_pk_pkey");
        assert_rejected(
            "ddl_pk",
            r#"SELECT safe_upsert('ddl_pk', '{"a": 7, "b": 2, "v": 5, "val": "u"}', 'v')"#,
            "42P10",
            &["ddl_pk", "primary key"],
        );
    }

    #[pg_test]
    fn recreated_unique_index_for_conflict_cols_is_followed() {
        run("CREATE TABLE ddl_ui (code text, v int, val text);
             CREATE UNIQUE INDEX ddl_ui_code ON ddl_ui (code)");
        let cc = "'v', ARRAY['code']";
        assert_eq!(upsert_with("ddl_ui", r#"{"code": "k", "v": 1, "val": "a"}"#, cc), "inserted");
        run("DROP INDEX ddl_ui_code");
        assert_rejected(
            "ddl_ui",
            r#"SELECT safe_upsert('ddl_ui', '{"code": "k", "v": 2, "val": "b"}', 'v', ARRAY['code'])"#,
            "42P10",
            &["ddl_ui", "code"],
        );
        run("CREATE UNIQUE INDEX ddl_ui_code2 ON ddl_ui (code)");
        assert_eq!(upsert_with("ddl_ui", r#"{"code": "k", "v": 2, "val": "b"}"#, cc), "updated");
        assert_eq!(contents("ddl_ui"), "(k,2,b)");
    }

    #[pg_test]
    fn renamed_table_column_and_schema_are_followed() {
        run("CREATE SCHEMA ddl_ren_s; CREATE TABLE ddl_ren_s.t (id int PRIMARY KEY, v int, val text)");
        let oid = text("SELECT 'ddl_ren_s.t'::regclass::oid::text");
        let by_oid = |row: &str| upsert(&oid, row, "v");
        assert_eq!(by_oid(r#"{"id": 1, "v": 1, "val": "a"}"#), "inserted");
        run("ALTER TABLE ddl_ren_s.t RENAME TO t2");
        assert_eq!(by_oid(r#"{"id": 1, "v": 2, "val": "b"}"#), "updated");
        run("ALTER SCHEMA ddl_ren_s RENAME TO ddl_ren_s2");
        assert_eq!(by_oid(r#"{"id": 1, "v": 3, "val": "c"}"#), "updated");
        run("ALTER TABLE ddl_ren_s2.t2 RENAME COLUMN val TO value");
        assert_rejected(
            "ddl_ren_s2.t2",
            &format!(r#"SELECT safe_upsert('{oid}', '{{"id": 1, "v": 4, "val": "d"}}', 'v')"#),
            "42703",
            &[r#""val""#, "ddl_ren_s2.t2"],
        );
        assert_eq!(by_oid(r#"{"id": 1, "v": 4, "value": "d"}"#), "updated");
        assert_eq!(contents("ddl_ren_s2.t2"), "(1,4,d)");
    }



    #[pg_test]
    fn plan_cache_of_one_entry_still_gives_right_results() {
        run("SET LOCAL safe_upsert.plan_cache_size = 1");
        versioned_table("pc_small_a");
        versioned_table("pc_small_b");
        for round in 0..3 {
            let v = 11 + round;
            for t in ["pc_small_a", "pc_small_b"] {
                assert_eq!(upsert(t, &format!(r#"{{"id": 1, "v": {v}, "val": "{t}"}}"#), "v"), "updated");
                assert_eq!(upsert(t, &format!(r#"{{"id": 1, "v": {v}}}"#), "v"), "duplicate");
            }
        }
        assert_eq!(contents("pc_small_a"), "(1,13,pc_small_a,none)");
        assert_eq!(contents("pc_small_b"), "(1,13,pc_small_b,none)");
    }

    /// Runs `f` with `hook` called in the middle of every plan build, then removes it.
    fn with_build_hook<R>(hook: fn(pg_sys::Oid), f: impl FnOnce() -> R) -> R {
        use crate::upsert::plan_cache::BUILD_HOOK;
        struct Unset;
        impl Drop for Unset {
            fn drop(&mut self) {
                BUILD_HOOK.with(|h| h.set(None));
            }
        }
        let _unset = Unset;
        BUILD_HOOK.with(|h| h.set(Some(hook)));
        f()
    }

    #[pg_test]
    fn a_plan_invalidated_while_it_is_built_serves_that_call_only() {
        use crate::upsert::plan_cache;
        versioned_table("build_inval");
        let cached = plan_cache::len();
        // the invalidation a concurrent ALTER TABLE would send, arriving mid-build
        let outcome = with_build_hook(plan_cache::mark_stale, || upsert("build_inval", r#"{"id": 1, "v": 11, "val": "b"}"#, "v"));
        assert_eq!(outcome, "updated");
        assert_eq!(plan_cache::len(), cached, "a plan built across an invalidation was cached");
        assert_eq!(upsert("build_inval", r#"{"id": 1, "v": 12, "val": "c"}"#, "v"), "updated");
        // Other sessions' DDL (a schema made, the invalidation queue reset) stales every plan
        // too, and may arrive during this build as well: then the next call caches it.
        for v in 13..20 {
            if plan_cache::len() == cached + 1 {
                break;
            }
            assert_eq!(upsert("build_inval", &format!(r#"{{"id": 1, "v": {v}, "val": "c"}}"#), "v"), "updated");
        }
        assert_eq!(plan_cache::len(), cached + 1);
        assert_eq!(text("SELECT val FROM build_inval WHERE id = 1"), "c");
    }

    #[pg_test]
    fn a_build_that_fails_half_way_keeps_no_spi_plan() {
        versioned_table("build_fail");
        let spi_plans = || text("SELECT count(*)::text FROM pg_backend_memory_contexts WHERE name = 'SPI Plan'");
        error_of("SELECT 1/0"); // the helper's own plans, kept from its first run on
        let before = spi_plans();
        let failed = with_build_hook(|_| crate::error::internal("a build failing after its first plan"), || {
            error_of(r#"SELECT safe_upsert('build_fail', '{"id": 1, "v": 11}', 'v')"#)
        });
        assert_eq!(failed.map(|(state, _)| state).as_deref(), Some("XX000"));
        assert_eq!(spi_plans(), before, "the failed build left a kept SPI plan behind");
        assert_eq!(upsert("build_fail", r#"{"id": 1, "v": 11}"#, "v"), "updated");
    }

    // ---------------------------------------------------------------------------------------------
    // the plan cache key
    // ---------------------------------------------------------------------------------------------

    #[pg_test]
    fn calls_that_differ_in_one_input_each_get_their_own_plan() {
        // each call differs from the one before it in one input of the plan's key; the last
        // plan served is tried first, so a call must never run its predecessor's plan
        versioned_table("alt_a");
        versioned_table("alt_b");
        run("INSERT INTO alt_a VALUES (2, 10, 'x', 'none'); INSERT INTO alt_b VALUES (2, 10, 'x', 'none')");
        let tie = r#"{"id": 1, "v": 10, "val": "other"}"#;
        for round in 0..2 {
            let v = 20 + round * 10;
            assert_eq!(upsert("alt_a", &format!(r#"{{"id": 1, "v": {v}, "val": "a{round}"}}"#), "v"), "updated");
            assert_eq!(upsert("alt_b", &format!(r#"{{"id": 1, "v": {v}, "val": "b{round}"}}"#), "v"), "updated");
            // the same table, one column fewer: val keeps its stored value
            assert_eq!(upsert("alt_b", &format!(r#"{{"id": 1, "v": {}}}"#, v + 1), "v"), "updated");
            assert_eq!(text("SELECT val FROM alt_b WHERE id = 1"), format!("b{round}"));
            // the same row, other on_tie values, on a key stored at version 10
            assert_eq!(upsert_with("alt_a", &tie.replace("\"id\": 1", "\"id\": 2"), "'v', on_tie => 'skip'"), "tie");
            assert_eq!(upsert_with("alt_a", &tie.replace("\"id\": 1", "\"id\": 2"), "'v', on_tie => 'apply'"), "updated");
            run("UPDATE alt_a SET val = 'x' WHERE id = 2");
            // conflict columns named, then not
            assert_eq!(upsert_with("alt_a", &format!(r#"{{"id": 1, "v": {}}}"#, v + 2), "'v', conflict_cols => '{id}'"), "updated");
            assert_eq!(upsert("alt_a", &format!(r#"{{"id": 1, "v": {}}}"#, v + 2), "v"), "duplicate");
            // another version column: note is compared as text, and 'none' < 'zz'
            assert_eq!(upsert("alt_a", r#"{"id": 1, "note": "zz"}"#, "note"), "updated");
            run("UPDATE alt_a SET note = 'none'");
        }
        // a table made again under the same name is another table, whose plan is built anew
        run("DROP TABLE alt_b; CREATE TABLE alt_b (id int PRIMARY KEY, v bigint, val int)");
        assert_eq!(upsert("alt_b", r#"{"id": 1, "v": 1, "val": 5}"#, "v"), "inserted");
        assert_eq!(text("SELECT pg_typeof(val)::text || ' ' || val FROM alt_b"), "integer 5");
        assert_eq!(upsert("alt_b", r#"{"id": 1, "v": 2, "val": 6}"#, "v"), "updated");
    }

    #[pg_test]
    fn a_crafted_json_key_never_reuses_another_shapes_plan() {
        run("CREATE TABLE crafted_key (id int PRIMARY KEY, a text, b text, ver int)");
        assert_eq!(upsert("crafted_key", r#"{"id": 1, "a": "x", "b": "y", "ver": 1}"#, "ver"), "inserted");
        // sorted, the keys "a\u0002b", "id", "ver" once joined to the same text as "a", "b", "id", "ver"
        assert_rejected(
            "crafted_key",
            r#"SELECT safe_upsert('crafted_key', '{"id": 1, "a\u0002b": "z", "ver": 2}', 'ver')"#,
            "42703",
            &["is not a column", "crafted_key"],
        );
        assert_rejected(
            "crafted_key",
            r#"SELECT * FROM safe_upsert_many('crafted_key', '[{"id": 1, "a\u0002b": "z", "ver": 2}]', 'ver')"#,
            "42703",
            &["is not a column"],
        );
        assert_eq!(stored("crafted_key", 1).as_deref(), Some("(1,x,y,1)"));
        // version columns ['a', 'b'] and then ['a\u{2}b'] are two requests: the first compares
        // (a, b) = (1, 1) with the stored (5, 5), the second the column "a\u{2}b", 2 with 1
        run("CREATE TABLE crafted_versions (id int PRIMARY KEY, a int, b int, \"a\u{2}b\" int)");
        run("INSERT INTO crafted_versions VALUES (1, 5, 5, 1)");
        let row = r#"{"id": 1, "a": 1, "b": 1, "a\u0002b": 2}"#;
        assert_eq!(upsert_with("crafted_versions", row, "ARRAY['a', 'b']::name[]"), "stale");
        assert_eq!(upsert_with("crafted_versions", row, r"ARRAY[E'a\x02b']::name[]"), "updated");
    }
}
