//! In-server tests: what each call does with a row: outcomes, the columns written, several version columns, conflict_cols, on_tie.

#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    use crate::tests::helpers::*;

    // ---------------------------------------------------------------------------------------------
    // outcomes
    // ---------------------------------------------------------------------------------------------

    #[pg_test]
    fn readme_example_inserts_updates_then_skips_the_older_row() {
        run("CREATE TABLE readme_t (id int PRIMARY KEY, value text, date timestamp)");
        let r = |row: &str| text(&format!("SELECT safe_upsert('readme_t', '{row}', 'date')::text"));
        assert_eq!(r(r#"{"id": 2, "value": "A", "date": "2024-09-24"}"#), "inserted");
        assert_eq!(stored("readme_t", 2).as_deref(), Some(r#"(2,A,"2024-09-24 00:00:00")"#));
        assert_eq!(r(r#"{"id": 2, "value": "B", "date": "2024-09-25"}"#), "updated");
        assert_eq!(stored("readme_t", 2).as_deref(), Some(r#"(2,B,"2024-09-25 00:00:00")"#));
        assert_eq!(r(r#"{"id": 2, "value": "C", "date": "2024-09-23"}"#), "stale");
        assert_eq!(stored("readme_t", 2).as_deref(), Some(r#"(2,B,"2024-09-25 00:00:00")"#));
    }

    #[pg_test]
    fn columns_named_as_the_statements_aliases_work_in_every_call() {
        // The generated statements name the stored row, the incoming rows and their steps with
        // short aliases; a column of the same name must never make a reference ambiguous.
        run("CREATE TABLE alias_cols (k int PRIMARY KEY, ver int, s text, r text, i text, w text, wr text, tb text,
                                      input text, ranked text, written text, winners text, recorded text,
                                      claimed text, excluded text);
             CREATE TABLE alias_keys (s int, tb int, i int, r int, PRIMARY KEY (s, i));");
        let many = |f: &str, t: &str, rows: &str, rest: &str| {
            text(&format!("SELECT string_agg(outcome::text, ' ' ORDER BY ord) FROM {f}('{t}', '{rows}', {rest})"))
        };
        let one = |f: &str, t: &str, row: &str, rest: &str| text(&format!("SELECT {f}('{t}', '{row}', {rest})::text"));
        assert_eq!(one("safe_upsert", "alias_cols", r#"{"k": 1, "ver": 5, "s": "a", "excluded": "e"}"#, "'ver'"), "inserted");
        assert_eq!(one("safe_upsert", "alias_cols", r#"{"k": 1, "ver": 1, "s": "a"}"#, "'ver'"), "stale");
        assert_eq!(one("safe_upsert", "alias_cols", r#"{"k": 1, "ver": 5, "s": "b"}"#, "'ver', on_tie => 'apply'"), "updated");
        assert_eq!(
            many("safe_upsert_many", "alias_cols", r#"[{"k": 1, "ver": 6, "s": "a"}, {"k": 2, "ver": 1}, {"k": 1, "ver": 7, "s": "d"}, {"k": 1, "ver": 4}]"#, "'ver'"),
            "stale inserted updated stale"
        );
        assert_eq!(one("safe_delete", "alias_cols", r#"{"k": 1, "ver": 8}"#, "'ver'"), "deleted");
        assert_eq!(one("safe_upsert", "alias_cols", r#"{"k": 1, "ver": 7, "s": "late"}"#, "'ver'"), "stale");
        assert_eq!(many("safe_delete_many", "alias_cols", r#"[{"k": 2, "ver": 2}, {"k": 3, "ver": 1}, {"k": 2, "ver": 1}]"#, "'ver'"), "deleted absent stale");
        assert_eq!(many("safe_upsert_many", "alias_cols", r#"[{"k": 2, "ver": 1}, {"k": 3, "ver": 2, "r": "x"}]"#, "'ver'"), "stale inserted");
        // (the helper's alias, r, would name a column here)
        assert_eq!(text("SELECT string_agg(t::text, ' ') FROM alias_cols t"), "(3,2,,x,,,,,,,,,,,)");
        // key and version columns of such names, in the tombstones' table too
        assert_eq!(one("safe_upsert", "alias_keys", r#"{"s": 1, "i": 1, "tb": 5, "r": 1}"#, "'tb'"), "inserted");
        assert_eq!(many("safe_upsert_many", "alias_keys", r#"[{"s": 1, "i": 1, "tb": 6, "r": 2}, {"s": 1, "i": 1, "tb": 6, "r": 2}, {"s": 2, "i": 1, "tb": 1}]"#, "'tb'"), "updated duplicate inserted");
        assert_eq!(many("safe_upsert_many", "alias_keys", r#"[{"s": 1, "i": 1, "tb": 6, "r": 3}, {"s": 1, "i": 1, "tb": 6, "r": 4}]"#, "'tb', on_tie => 'apply'"), "stale updated");
        assert_eq!(one("safe_delete", "alias_keys", r#"{"s": 1, "i": 1, "tb": 9}"#, "'tb'"), "deleted");
        assert_eq!(one("safe_upsert", "alias_keys", r#"{"s": 1, "i": 1, "tb": 8}"#, "'tb'"), "stale");
        assert_eq!(many("safe_delete_many", "alias_keys", r#"[{"s": 2, "i": 1, "tb": 3}, {"s": 2, "i": 1, "tb": 2}, {"s": 5, "i": 1, "tb": 1}]"#, "'tb'"), "deleted stale absent");
        assert_eq!(many("safe_upsert_many", "alias_keys", r#"[{"s": 2, "i": 1, "tb": 2}, {"s": 5, "i": 1, "tb": 2}]"#, "'tb'"), "stale inserted");
        assert_eq!(text("SELECT string_agg(t::text, ' ') FROM alias_keys t"), "(5,2,1,)");
    }

    #[pg_test]
    fn absent_key_is_inserted() {
        versioned_table("out_ins");
        assert_eq!(upsert("out_ins", r#"{"id": 2, "v": 1, "val": "b"}"#, "v"), "inserted");
        assert_eq!(stored("out_ins", 2).as_deref(), Some("(2,1,b,none)"));
        assert_eq!(stored("out_ins", 1).as_deref(), Some("(1,10,a,none)"));
    }

    #[pg_test]
    fn newer_version_replaces_the_row() {
        versioned_table("out_upd");
        assert_eq!(upsert("out_upd", r#"{"id": 1, "v": 11, "val": "b"}"#, "v"), "updated");
        assert_eq!(stored("out_upd", 1).as_deref(), Some("(1,11,b,none)"));
        assert_eq!(text("SELECT count(*)::text FROM out_upd"), "1");
    }

    #[pg_test]
    fn older_version_is_stale_and_keeps_the_stored_row() {
        versioned_table("out_stale");
        assert_eq!(upsert("out_stale", r#"{"id": 1, "v": 9, "val": "old"}"#, "v"), "stale");
        assert_eq!(stored("out_stale", 1).as_deref(), Some("(1,10,a,none)"));
    }

    #[pg_test]
    fn same_version_and_values_is_a_duplicate() {
        versioned_table("out_dup");
        assert_eq!(upsert("out_dup", r#"{"id": 1, "v": 10, "val": "a"}"#, "v"), "duplicate");
        assert_eq!(stored("out_dup", 1).as_deref(), Some("(1,10,a,none)"));
        // only the sent columns are compared: note differs from what was never sent
        run("UPDATE out_dup SET note = 'local'");
        assert_eq!(upsert("out_dup", r#"{"id": 1, "v": 10, "val": "a"}"#, "v"), "duplicate");
        assert_eq!(stored("out_dup", 1).as_deref(), Some("(1,10,a,local)"));
        // NULLs compare equal
        run("UPDATE out_dup SET val = NULL");
        assert_eq!(upsert("out_dup", r#"{"id": 1, "v": 10, "val": null}"#, "v"), "duplicate");
    }

    #[pg_test]
    fn same_version_other_values_is_a_tie_and_keeps_the_stored_row() {
        versioned_table("out_tie");
        assert_eq!(upsert("out_tie", r#"{"id": 1, "v": 10, "val": "b"}"#, "v"), "tie");
        assert_eq!(stored("out_tie", 1).as_deref(), Some("(1,10,a,none)"));
        // a NULL against a value is a difference
        assert_eq!(upsert("out_tie", r#"{"id": 1, "v": 10, "val": null}"#, "v"), "tie");
        // so is a column sent that was only defaulted
        assert_eq!(upsert("out_tie", r#"{"id": 1, "v": 10, "val": "a", "note": "x"}"#, "v"), "tie");
        assert_eq!(stored("out_tie", 1).as_deref(), Some("(1,10,a,none)"));
    }

    #[pg_test]
    fn duplicate_compares_values_not_their_spelling() {
        run("SET LOCAL TimeZone = 'UTC'");
        run("CREATE TABLE out_spell (id int PRIMARY KEY, v timestamptz, doc jsonb, n int)");
        let row = r#"{"id": 1, "v": "2024-01-01T10:00:00+02", "doc": {"a": 1, "b": [2]}, "n": 7}"#;
        assert_eq!(upsert("out_spell", row, "v"), "inserted");
        let same = r#"{"id": 1, "v": "2024-01-01 08:00:00Z", "doc": {"b": [2], "a": 1}, "n": "7"}"#;
        assert_eq!(upsert("out_spell", same, "v"), "duplicate");
    }

    #[pg_test]
    fn columns_without_equality_still_tell_duplicate_from_tie() {
        // json and point have no = operator; the comparison is of stored images
        run("CREATE TABLE out_noeq (id int PRIMARY KEY, v int, j json, p point)");
        let row = r#"{"id": 1, "v": 1, "j": {"a": [1, 2]}, "p": "(1,2)"}"#;
        assert_eq!(upsert("out_noeq", row, "v"), "inserted");
        assert_eq!(upsert("out_noeq", row, "v"), "duplicate");
        assert_eq!(upsert("out_noeq", r#"{"id": 1, "v": 1, "j": {"a": [1, 3]}, "p": "(1,2)"}"#, "v"), "tie");
        assert_eq!(upsert("out_noeq", r#"{"id": 1, "v": 1, "j": {"a": [1, 2]}, "p": "(1,3)"}"#, "v"), "tie");
        assert_eq!(text("SELECT j::text || ' ' || p::text FROM out_noeq"), r#"{"a":[1,2]} (1,2)"#);
    }

    #[pg_test]
    fn large_values_stored_compressed_or_out_of_line_compare_by_their_contents() {
        // the kept note compares the stored row's values, which TOAST may have compressed or
        // moved out of line, with the incoming ones, which are neither; dropped and unsent
        // columns of the row type are passed over
        run("CREATE TABLE out_toast (id int PRIMARY KEY, gone int, v int, big text, noise text, doc jsonb)");
        run("ALTER TABLE out_toast DROP COLUMN gone");
        let compressible = "x".repeat(200_000);
        let random: String = text("SELECT string_agg(md5(g::text), '') FROM generate_series(1, 3000) g");
        for (n, big) in [compressible, random].iter().enumerate() {
            let row = format!(r#"{{"id": {n}, "v": 1, "big": "{big}", "doc": {{"k": "{big}"}}}}"#);
            assert_eq!(upsert("out_toast", &row, "v"), "inserted");
            run(&format!("UPDATE out_toast SET noise = 'not sent' WHERE id = {n}"));
            assert_eq!(upsert("out_toast", &row, "v"), "duplicate");
            let last_changed = format!("{}y", &big[..big.len() - 1]);
            let other = format!(r#"{{"id": {n}, "v": 1, "big": "{last_changed}", "doc": {{"k": "{big}"}}}}"#);
            assert_eq!(upsert("out_toast", &other, "v"), "tie");
            let other = format!(r#"{{"id": {n}, "v": 1, "big": "{big}", "doc": {{"k": "{last_changed}"}}}}"#);
            assert_eq!(upsert("out_toast", &other, "v"), "tie");
        }
        // stored as TOAST keeps them: the repeated one compressed to a fraction, the other not
        assert_eq!(text("SELECT (pg_column_size(big) < 10000)::text FROM out_toast WHERE id = 0"), "true");
        assert_eq!(text("SELECT (pg_column_size(big) > 10000)::text FROM out_toast WHERE id = 1"), "true");
    }

    #[pg_test]
    fn replays_of_an_insert_are_duplicates_within_one_transaction() {
        // the inserted/updated test (xmax) must hold when the stored row is this transaction's own
        run("CREATE TABLE out_replay (id int PRIMARY KEY, v int, val text)");
        let row = r#"{"id": 1, "v": 1, "val": "x"}"#;
        assert_eq!(upsert("out_replay", row, "v"), "inserted");
        assert_eq!(upsert("out_replay", row, "v"), "duplicate");
        assert_eq!(upsert("out_replay", r#"{"id": 1, "v": 2, "val": "y"}"#, "v"), "updated");
        assert_eq!(upsert("out_replay", r#"{"id": 1, "v": 3, "val": "z"}"#, "v"), "updated");
        assert_eq!(upsert("out_replay", r#"{"id": 1, "v": 3, "val": "z"}"#, "v"), "duplicate");
        assert_eq!(stored("out_replay", 1).as_deref(), Some("(1,3,z)"));
    }

    // ---------------------------------------------------------------------------------------------
    // which columns are written
    // ---------------------------------------------------------------------------------------------

    #[pg_test]
    fn absent_columns_get_defaults_on_insert() {
        run("CREATE SEQUENCE cols_seq START 100;
             CREATE TABLE cols_ins (id int PRIMARY KEY, v int, val text DEFAULT 'dflt',
                                    n bigint DEFAULT nextval('cols_seq'), maybe text,
                                    ident int GENERATED BY DEFAULT AS IDENTITY)");
        assert_eq!(upsert("cols_ins", r#"{"id": 1, "v": 1}"#, "v"), "inserted");
        assert_eq!(stored("cols_ins", 1).as_deref(), Some("(1,1,dflt,100,,1)"));
        // an identity column BY DEFAULT may be sent
        assert_eq!(upsert("cols_ins", r#"{"id": 2, "v": 1, "ident": 42}"#, "v"), "inserted");
        assert_eq!(stored("cols_ins", 2).as_deref(), Some("(2,1,dflt,101,,42)"));
    }

    #[pg_test]
    fn absent_columns_keep_their_values_on_update() {
        run("CREATE TABLE cols_upd (id int PRIMARY KEY, v int, a text, b text, c text DEFAULT 'dflt')");
        run("INSERT INTO cols_upd VALUES (1, 1, 'a1', 'b1', 'c1')");
        assert_eq!(upsert("cols_upd", r#"{"id": 1, "v": 2, "a": "a2"}"#, "v"), "updated");
        assert_eq!(stored("cols_upd", 1).as_deref(), Some("(1,2,a2,b1,c1)"));
        assert_eq!(upsert("cols_upd", r#"{"id": 1, "v": 3, "b": null}"#, "v"), "updated");
        assert_eq!(stored("cols_upd", 1).as_deref(), Some("(1,3,a2,,c1)"));
    }

    #[pg_test]
    fn null_stored_version_is_older_than_any() {
        run("CREATE TABLE nullv (id int PRIMARY KEY, v bigint, val text)");
        run("INSERT INTO nullv VALUES (1, NULL, 'unversioned')");
        assert_eq!(upsert("nullv", r#"{"id": 1, "v": -9223372036854775808, "val": "b"}"#, "v"), "updated");
        assert_eq!(stored("nullv", 1).as_deref(), Some("(1,-9223372036854775808,b)"));
    }

    // ---------------------------------------------------------------------------------------------
    // several version columns
    // ---------------------------------------------------------------------------------------------

    #[pg_test]
    fn second_version_column_breaks_ties_of_the_first() {
        run("CREATE TABLE multi_v (id int PRIMARY KEY, updated_at timestamp, source_id int, val text)");
        let vs = "ARRAY['updated_at', 'source_id']";
        let r = |row: &str| upsert_with("multi_v", row, vs);
        assert_eq!(r(r#"{"id": 1, "updated_at": "2024-01-01", "source_id": 5, "val": "a"}"#), "inserted");
        assert_eq!(r(r#"{"id": 1, "updated_at": "2024-01-01", "source_id": 7, "val": "b"}"#), "updated");
        assert_eq!(stored("multi_v", 1).as_deref(), Some(r#"(1,"2024-01-01 00:00:00",7,b)"#));
        assert_eq!(r(r#"{"id": 1, "updated_at": "2024-01-01", "source_id": 6, "val": "c"}"#), "stale");
        assert_eq!(r(r#"{"id": 1, "updated_at": "2024-01-01", "source_id": 7, "val": "b"}"#), "duplicate");
        assert_eq!(r(r#"{"id": 1, "updated_at": "2024-01-01", "source_id": 7, "val": "d"}"#), "tie");
        // a newer first column wins whatever the second
        assert_eq!(r(r#"{"id": 1, "updated_at": "2024-01-02", "source_id": 1, "val": "e"}"#), "updated");
        assert_eq!(r(r#"{"id": 1, "updated_at": "2023-12-31", "source_id": 99, "val": "f"}"#), "stale");
        assert_eq!(stored("multi_v", 1).as_deref(), Some(r#"(1,"2024-01-02 00:00:00",1,e)"#));
    }

    #[pg_test]
    fn order_of_version_columns_decides() {
        run("CREATE TABLE multi_order (id int PRIMARY KEY, a int, b int, val text);
             INSERT INTO multi_order VALUES (1, 1, 5, 'stored'), (2, 1, 5, 'stored')");
        let row = |id| format!(r#"{{"id": {id}, "a": 2, "b": 1, "val": "incoming"}}"#);
        assert_eq!(upsert_with("multi_order", &row(1), "ARRAY['a', 'b']"), "updated");
        assert_eq!(upsert_with("multi_order", &row(2), "ARRAY['b', 'a']"), "stale");
        assert_eq!(stored("multi_order", 1).as_deref(), Some("(1,2,1,incoming)"));
        assert_eq!(stored("multi_order", 2).as_deref(), Some("(2,1,5,stored)"));
    }

    #[pg_test]
    fn null_stored_second_version_column_is_older() {
        run("CREATE TABLE multi_null (id int PRIMARY KEY, a int, b int, val text);
             INSERT INTO multi_null VALUES (1, 1, NULL, 'stored')");
        let vs = "ARRAY['a', 'b']";
        assert_eq!(upsert_with("multi_null", r#"{"id": 1, "a": 0, "b": 9, "val": "x"}"#, vs), "stale");
        assert_eq!(upsert_with("multi_null", r#"{"id": 1, "a": 1, "b": 0, "val": "y"}"#, vs), "updated");
        assert_eq!(stored("multi_null", 1).as_deref(), Some("(1,1,0,y)"));
    }

    #[pg_test]
    fn one_version_column_in_an_array_behaves_as_the_single_form() {
        versioned_table("multi_one");
        assert_eq!(upsert_with("multi_one", r#"{"id": 1, "v": 9, "val": "x"}"#, "ARRAY['v']"), "stale");
        assert_eq!(upsert_with("multi_one", r#"{"id": 1, "v": 10, "val": "a"}"#, "ARRAY['v']"), "duplicate");
        assert_eq!(upsert_with("multi_one", r#"{"id": 1, "v": 10, "val": "x"}"#, "ARRAY['v']"), "tie");
        assert_eq!(upsert_with("multi_one", r#"{"id": 1, "v": 11, "val": "x"}"#, "ARRAY['v']::name[]"), "updated");
        assert_eq!(stored("multi_one", 1).as_deref(), Some("(1,11,x,none)"));
    }

    // ---------------------------------------------------------------------------------------------
    // conflict_cols
    // ---------------------------------------------------------------------------------------------

    #[pg_test]
    fn conflict_cols_choose_a_unique_constraint_other_than_the_primary_key() {
        run("CREATE TABLE cc_uc (id serial PRIMARY KEY, tenant int, ext_id text, v int, val text,
                                 UNIQUE (tenant, ext_id))");
        let cc = "'v', conflict_cols => ARRAY['tenant', 'ext_id']";
        let reversed = "'v', conflict_cols => ARRAY['ext_id', 'tenant']";
        assert_eq!(upsert_with("cc_uc", r#"{"tenant": 1, "ext_id": "x", "v": 1, "val": "a"}"#, cc), "inserted");
        assert_eq!(upsert_with("cc_uc", r#"{"tenant": 2, "ext_id": "x", "v": 1, "val": "b"}"#, cc), "inserted");
        assert_eq!(upsert_with("cc_uc", r#"{"tenant": 1, "ext_id": "x", "v": 2, "val": "c"}"#, reversed), "updated");
        assert_eq!(upsert_with("cc_uc", r#"{"tenant": 1, "ext_id": "x", "v": 1, "val": "d"}"#, reversed), "stale");
        assert_eq!(upsert_with("cc_uc", r#"{"tenant": 1, "ext_id": "x", "v": 2, "val": "c"}"#, cc), "duplicate");
        assert_eq!(
            text("SELECT string_agg(format('%s/%s/%s/%s/%s', id, tenant, ext_id, v, val), ' ' ORDER BY id) FROM cc_uc"),
            "1/1/x/2/c 2/2/x/1/b"
        );
    }

    #[pg_test]
    fn conflict_cols_use_a_unique_index_on_a_table_without_primary_key() {
        run("CREATE TABLE cc_ui (code text NOT NULL, v int, val text);
             CREATE UNIQUE INDEX cc_ui_code ON cc_ui (code)");
        let cc = "'v', ARRAY['code']";
        assert_eq!(upsert_with("cc_ui", r#"{"code": "k", "v": 1, "val": "a"}"#, cc), "inserted");
        assert_eq!(upsert_with("cc_ui", r#"{"code": "k", "v": 2, "val": "b"}"#, cc), "updated");
        assert_eq!(upsert_with("cc_ui", r#"{"code": "k", "v": 0, "val": "c"}"#, cc), "stale");
        assert_eq!(contents("cc_ui"), "(k,2,b)");
    }

    #[pg_test]
    fn conflict_cols_naming_the_primary_key_use_it() {
        versioned_table("cc_pk");
        assert_eq!(upsert_with("cc_pk", r#"{"id": 1, "v": 11, "val": "b"}"#, "'v', ARRAY['id']"), "updated");
        assert_eq!(stored("cc_pk", 1).as_deref(), Some("(1,11,b,none)"));
    }

    // ---------------------------------------------------------------------------------------------
    // on_tie
    // ---------------------------------------------------------------------------------------------

    #[pg_test]
    fn on_tie_skip_is_the_default() {
        versioned_table("tie_skip");
        let row = r#"{"id": 1, "v": 10, "val": "b"}"#;
        assert_eq!(upsert_with("tie_skip", row, "'v', on_tie => 'skip'"), "tie");
        assert_eq!(upsert_with("tie_skip", row, "'v', NULL, 'skip'"), "tie");
        assert_eq!(upsert("tie_skip", row, "v"), "tie");
        assert_eq!(stored("tie_skip", 1).as_deref(), Some("(1,10,a,none)"));
    }

    #[pg_test]
    fn on_tie_apply_writes_equal_versions_and_reports_updated() {
        versioned_table("tie_apply");
        let apply = "'v', on_tie => 'apply'";
        assert_eq!(upsert_with("tie_apply", r#"{"id": 1, "v": 10, "val": "b"}"#, apply), "updated");
        assert_eq!(stored("tie_apply", 1).as_deref(), Some("(1,10,b,none)"));
        // replaying the same values stays an idempotent duplicate
        assert_eq!(upsert_with("tie_apply", r#"{"id": 1, "v": 10, "val": "b"}"#, apply), "duplicate");
        // older is still stale, newer still updated, absent still inserted
        assert_eq!(upsert_with("tie_apply", r#"{"id": 1, "v": 9, "val": "c"}"#, apply), "stale");
        assert_eq!(upsert_with("tie_apply", r#"{"id": 1, "v": 11, "val": "d"}"#, apply), "updated");
        assert_eq!(upsert_with("tie_apply", r#"{"id": 2, "v": 1, "val": "e"}"#, apply), "inserted");
        assert_eq!(contents("tie_apply"), "(1,11,d,none) (2,1,e,none)");
        // several version columns: equal on all of them
        assert_eq!(
            upsert_with("tie_apply", r#"{"id": 2, "v": 1, "val": "f"}"#, "ARRAY['v'], on_tie => 'apply'"),
            "updated"
        );
        assert_eq!(stored("tie_apply", 2).as_deref(), Some("(2,1,f,none)"));
    }

    #[pg_test]
    fn on_tie_error_raises_23000_naming_table_and_key() {
        versioned_table("tie_error");
        let err = "'v', on_tie => 'error'";
        let message = assert_rejected(
            "tie_error",
            &format!(r#"SELECT safe_upsert('tie_error', '{{"id": 1, "v": 10, "val": "b"}}', {err})"#),
            "23000",
            &["tie_error", r#""id""#, "1"],
        );
        assert!(message.contains("same version"), "{message}");
        // a duplicate, a stale, a newer row and a new key are no error
        assert_eq!(upsert_with("tie_error", r#"{"id": 1, "v": 10, "val": "a"}"#, err), "duplicate");
        assert_eq!(upsert_with("tie_error", r#"{"id": 1, "v": 9, "val": "b"}"#, err), "stale");
        assert_eq!(upsert_with("tie_error", r#"{"id": 1, "v": 11, "val": "b"}"#, err), "updated");
        assert_eq!(upsert_with("tie_error", r#"{"id": 2, "v": 1, "val": "c"}"#, err), "inserted");
        assert_eq!(contents("tie_error"), "(1,11,b,none) (2,1,c,none)");
    }
}
