//! In-server tests: each runs in a transaction that is rolled back. They live in the SQL schema
//! `tests` (the inner module, a `#[pg_schema]`), where `cargo pgrx test` calls them.
//!
//! Every test makes its own tables (names prefixed by the test's theme), so that tests running
//! side by side in other sessions never wait on each other's catalog rows. Errors are observed
//! through `pg_temp.sqlstate_of`, a PL/pgSQL function that runs a statement in a subtransaction
//! and returns its SQLSTATE and message: the test's own transaction carries on.

#[pgrx::pg_schema]
#[allow(clippy::module_inception)]
mod tests {
    use pgrx::prelude::*;

    // ---------------------------------------------------------------------------------------------
    // helpers
    // ---------------------------------------------------------------------------------------------

    /// Runs statements, failing the test on any error.
    fn run(statements: &str) {
        Spi::run(statements).unwrap_or_else(|e| panic!("{statements}\n  failed: {e}"));
    }

    /// The one value a query returns, as text (NULL gives None).
    fn value(query: &str) -> Option<String> {
        Spi::get_one::<String>(query).unwrap_or_else(|e| panic!("{query}\n  failed: {e}"))
    }

    /// The one non-NULL value a query returns, as text.
    fn text(query: &str) -> String {
        value(query).unwrap_or_else(|| panic!("{query}\n  returned NULL"))
    }

    /// `safe_upsert(table, row, version_col)`, as its outcome's label.
    fn upsert(table: &str, row: &str, version_col: &str) -> String {
        upsert_with(table, row, &format!("'{version_col}'"))
    }

    /// `safe_upsert(table, row, <rest>)`: `rest` is the SQL of the third and later arguments,
    /// e.g. `'v', on_tie => 'apply'` or `ARRAY['a', 'b']`.
    fn upsert_with(table: &str, row: &str, rest: &str) -> String {
        text(&format!("SELECT safe_upsert('{table}', '{row}', {rest})::text"))
    }

    /// A table's rows as text, sorted: compared before and after a call to show it was untouched.
    fn contents(table: &str) -> String {
        text(&format!("SELECT coalesce(string_agg(r::text, ' ' ORDER BY r::text), '') FROM {table} r"))
    }

    /// The stored row whose `id` is `id`, as a record literal, or None.
    fn stored(table: &str, id: i64) -> Option<String> {
        value(&format!("SELECT r::text FROM {table} r WHERE id = {id}"))
    }

    /// Creates `pg_temp.sqlstate_of(statement text)`, once per session: it runs the statement in a
    /// subtransaction and returns NULL, or its SQLSTATE, a space and its message.
    fn install_sqlstate_of() {
        if value("SELECT to_regprocedure('pg_temp.sqlstate_of(text)')::text").is_some() {
            return;
        }
        run(r#"
            CREATE FUNCTION pg_temp.sqlstate_of(statement text) RETURNS text
            LANGUAGE plpgsql AS $fn$
            DECLARE
                state text;
                message text;
            BEGIN
                EXECUTE statement;
                RETURN NULL;
            EXCEPTION WHEN OTHERS THEN
                GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, message = MESSAGE_TEXT;
                RETURN state || ' ' || message;
            END
            $fn$"#);
    }

    /// Runs `statement` in a subtransaction; returns (SQLSTATE, message), or None if it succeeded.
    fn error_of(statement: &str) -> Option<(String, String)> {
        install_sqlstate_of();
        assert!(!statement.contains("$stmt$"));
        value(&format!("SELECT pg_temp.sqlstate_of($stmt${statement}$stmt$)"))
            .map(|r| (r[..5].to_string(), r[6..].to_string()))
    }

    /// Asserts that `statement` fails with `sqlstate`, that its message contains each of
    /// `mentions`, and that `table` holds the same rows afterwards. Returns the message.
    fn assert_rejected(table: &str, statement: &str, sqlstate: &str, mentions: &[&str]) -> String {
        let before = contents(table);
        let (state, message) =
            error_of(statement).unwrap_or_else(|| panic!("{statement}\n  succeeded; expected SQLSTATE {sqlstate}"));
        assert_eq!(state, sqlstate, "{statement}\n  failed with {state}: {message}");
        for m in mentions {
            assert!(message.contains(m), "{statement}\n  message {message:?} does not mention {m:?}");
        }
        assert_eq!(contents(table), before, "{statement}\n  changed table {table}");
        message
    }

    /// `CREATE TABLE <name> (id int PRIMARY KEY, v bigint, val text, note text DEFAULT 'none')`
    /// with one row (1, 10, 'a', 'none'): the usual target.
    fn versioned_table(name: &str) {
        run(&format!(
            "CREATE TABLE {name} (id int PRIMARY KEY, v bigint, val text, note text DEFAULT 'none');
             INSERT INTO {name} VALUES (1, 10, 'a', 'none');"
        ));
    }

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

    // ---------------------------------------------------------------------------------------------
    // JSON values become column values by PostgreSQL's input rules
    // ---------------------------------------------------------------------------------------------

    /// A table with a column of each type, and one row sent through safe_upsert.
    fn conversion_table(name: &str) {
        run(&format!(
            "CREATE TYPE {name}_mood AS ENUM ('sad', 'ok', 'happy');
             CREATE DOMAIN {name}_positive AS int CHECK (VALUE > 0);
             CREATE TABLE {name} (id int PRIMARY KEY, v int, i int, b bigint, n numeric, t text,
                 flag bool, d date, ts timestamp, tstz timestamptz, u uuid, doc jsonb,
                 tags text[], nums int[], grid int[], mood {name}_mood, pos {name}_positive,
                 money numeric(10,2), short varchar(3))"
        ));
    }

    #[pg_test]
    fn json_scalars_convert_by_postgres_input_rules() {
        run("SET LOCAL TimeZone = 'UTC'");
        conversion_table("conv_s");
        let row = r#"{"id": 1, "v": 1, "i": 42, "b": 9223372036854775807, "t": "héllo, \"world\"",
                      "flag": true, "d": "2024-02-29", "ts": "2024-09-24T12:34:56.789",
                      "tstz": "2024-09-24T12:00:00+02:00", "u": "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
                      "mood": "happy", "pos": 3, "money": 12.345, "short": "abc"}"#;
        assert_eq!(upsert("conv_s", row, "v"), "inserted");
        let col = |expr: &str| text(&format!("SELECT ({expr})::text FROM conv_s WHERE id = 1"));
        assert_eq!(col("i"), "42");
        assert_eq!(col("b"), "9223372036854775807");
        assert_eq!(col("t"), r#"héllo, "world""#);
        assert_eq!(col("flag"), "true");
        assert_eq!(col("d"), "2024-02-29");
        assert_eq!(col("ts"), "2024-09-24 12:34:56.789");
        assert_eq!(col("tstz"), "2024-09-24 10:00:00+00");
        assert_eq!(col("u"), "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");
        assert_eq!(col("mood"), "happy");
        assert_eq!(col("pos"), "3");
        assert_eq!(col("money"), "12.35"); // the typmod applies, as in an INSERT
        assert_eq!(col("short"), "abc");
        // numbers given as JSON strings, booleans as words: whatever the type's input accepts
        let row = r#"{"id": 2, "v": 1, "i": "-7", "b": "12", "flag": "off", "n": "NaN", "t": 12.50}"#;
        assert_eq!(upsert("conv_s", row, "v"), "inserted");
        assert_eq!(
            text("SELECT format('%s %s %s %s %s', i, b, flag, n, t) FROM conv_s WHERE id = 2"),
            "-7 12 f NaN 12.50"
        );
    }

    #[pg_test]
    fn big_numbers_are_kept_exactly() {
        conversion_table("conv_num");
        let row = r#"{"id": 1, "v": 1, "n": 123456789012345678901234567890.000000000000000001,
                      "b": 9007199254740993}"#;
        assert_eq!(upsert("conv_num", row, "v"), "inserted");
        assert_eq!(
            text("SELECT n::text FROM conv_num WHERE id = 1"),
            "123456789012345678901234567890.000000000000000001"
        );
        assert_eq!(text("SELECT b::text FROM conv_num WHERE id = 1"), "9007199254740993");
        let row = r#"{"id": 2, "v": 1, "n": 0.1000}"#;
        assert_eq!(upsert("conv_num", row, "v"), "inserted");
        assert_eq!(text("SELECT n::text FROM conv_num WHERE id = 2"), "0.1000");
    }

    #[pg_test]
    fn json_objects_and_arrays_convert_to_jsonb_and_arrays() {
        conversion_table("conv_c");
        let row = r#"{"id": 1, "v": 1, "doc": {"a": {"b": [1, "two", null]}, "c": true},
                      "tags": ["x", "y, z", "q\"uote", "NULL", null, "back\\slash", "{brace}"],
                      "nums": [1, 2, 3], "grid": [[1, 2], [3, 4]]}"#;
        assert_eq!(upsert("conv_c", row, "v"), "inserted");
        let col = |expr: &str| text(&format!("SELECT ({expr})::text FROM conv_c WHERE id = 1"));
        assert_eq!(col("jsonb_typeof(doc)"), "object");
        assert_eq!(col("doc"), r#"{"a": {"b": [1, "two", null]}, "c": true}"#);
        assert_eq!(col("doc #>> '{a,b,1}'"), "two");
        assert_eq!(col("array_length(tags, 1)"), "7");
        assert_eq!(
            col(r#"tags = ARRAY['x', 'y, z', 'q"uote', 'NULL', NULL, 'back\slash', '{brace}']"#),
            "true"
        );
        assert_eq!(col("tags[5] IS NULL AND tags[4] = 'NULL'"), "true");
        assert_eq!(col("nums"), "{1,2,3}");
        assert_eq!(col("grid"), "{{1,2},{3,4}}");
        assert_eq!(col("grid[2][1]"), "3");
        // a JSON array into jsonb stays a JSON array; an empty array into int[] is empty
        let row = r#"{"id": 2, "v": 1, "doc": [1, {"k": "v"}], "nums": []}"#;
        assert_eq!(upsert("conv_c", row, "v"), "inserted");
        assert_eq!(text("SELECT doc::text || ' ' || nums::text FROM conv_c WHERE id = 2"), r#"[1, {"k": "v"}] {}"#);
    }

    #[pg_test]
    fn json_scalars_into_jsonb_keep_their_json_type() {
        // as in jsonb_populate_record: a JSON string stays a JSON string in a jsonb column
        conversion_table("conv_js");
        let row = r#"{"id": 1, "v": 1, "doc": 5}"#;
        assert_eq!(upsert("conv_js", row, "v"), "inserted");
        assert_eq!(text("SELECT jsonb_typeof(doc) FROM conv_js WHERE id = 1"), "number");
        let row = r#"{"id": 2, "v": 1, "doc": "123"}"#;
        assert_eq!(upsert("conv_js", row, "v"), "inserted");
        assert_eq!(text("SELECT jsonb_typeof(doc) FROM conv_js WHERE id = 2"), "string");
        let row = r#"{"id": 3, "v": 1, "doc": "plain words"}"#;
        assert_eq!(upsert("conv_js", row, "v"), "inserted");
        assert_eq!(text("SELECT doc #>> '{}' FROM conv_js WHERE id = 3"), "plain words");
    }

    #[pg_test]
    fn json_null_stores_sql_null() {
        conversion_table("conv_null");
        let row = r#"{"id": 1, "v": 1, "i": null, "doc": null, "tags": null, "mood": null}"#;
        assert_eq!(upsert("conv_null", row, "v"), "inserted");
        assert_eq!(
            text("SELECT (i IS NULL AND doc IS NULL AND tags IS NULL AND mood IS NULL)::text FROM conv_null"),
            "true"
        );
    }

    #[pg_test]
    fn domain_check_violation_is_23514_naming_the_column() {
        conversion_table("conv_dom");
        run("INSERT INTO conv_dom (id, v, pos) VALUES (1, 1, 1)");
        assert_rejected(
            "conv_dom",
            r#"SELECT safe_upsert('conv_dom', '{"id": 1, "v": 2, "pos": -1}', 'v')"#,
            "23514",
            &[r#""pos""#, "conv_dom", "conv_dom_positive"],
        );
    }

    #[pg_test]
    fn unconvertible_values_keep_postgres_sqlstate_and_name_the_column() {
        conversion_table("conv_bad");
        run("INSERT INTO conv_bad (id, v, i) VALUES (1, 1, 1)");
        let bad = |field: &str, value: &str, sqlstate: &str| {
            let stmt = format!(r#"SELECT safe_upsert('conv_bad', '{{"id": 1, "v": 2, "{field}": {value}}}', 'v')"#);
            assert_rejected("conv_bad", &stmt, sqlstate, &[&format!("\"{field}\""), "conv_bad"])
        };
        let message = bad("i", r#""abc""#, "22P02");
        assert!(message.contains("integer"), "{message}");
        bad("i", "1.5", "22P02");
        bad("i", "[1, 2]", "22P02");
        bad("i", "99999999999", "22003");
        bad("flag", r#""maybe""#, "22P02");
        bad("d", r#""2024-02-30""#, "22008");
        bad("u", r#""not-a-uuid""#, "22P02");
        bad("mood", r#""angry""#, "22P02");
        bad("nums", r#"["one"]"#, "22P02");
        bad("nums", r#"[[1, 2], [3]]"#, "22P02");
        bad("short", r#""abcd""#, "22001");
        bad("money", "123456789012", "22003");
        // a bad key or version value is reported the same way
        bad("id", r#""x""#, "22P02");
        bad("v", r#""x""#, "22P02");
    }

    // ---------------------------------------------------------------------------------------------
    // version column types
    // ---------------------------------------------------------------------------------------------

    /// On a fresh table with a version column of type `ty`: `low`, `mid` and `high` (JSON values,
    /// in increasing order) give inserted (mid), updated (high), stale (low), duplicate (high).
    fn versions_order(table: &str, ty: &str, low: &str, mid: &str, high: &str) {
        run(&format!("CREATE TABLE {table} (id int PRIMARY KEY, v {ty}, val text)"));
        let row = |v: &str, val: &str| format!(r#"{{"id": 1, "v": {v}, "val": "{val}"}}"#);
        assert_eq!(upsert(table, &row(mid, "mid"), "v"), "inserted", "{ty}: {mid}");
        assert_eq!(upsert(table, &row(high, "high"), "v"), "updated", "{ty}: {high} after {mid}");
        assert_eq!(upsert(table, &row(low, "low"), "v"), "stale", "{ty}: {low} after {high}");
        assert_eq!(upsert(table, &row(high, "high"), "v"), "duplicate", "{ty}: {high} again");
        assert_eq!(upsert(table, &row(high, "other"), "v"), "tie", "{ty}: {high} with other values");
        assert_eq!(text(&format!("SELECT val FROM {table} WHERE id = 1")), "high");
    }

    #[pg_test]
    fn bigint_versions_compare_exactly_beyond_double_precision() {
        versions_order("vt_bigint", "bigint", "9007199254740992", "9007199254740993", "9007199254740994");
    }

    #[pg_test]
    fn timestamptz_versions_compare_instants_whatever_the_offset() {
        // 10:00+03 is 07:00Z, 10:00+02 is 08:00Z, 09:30Z is later than both
        versions_order(
            "vt_tstz",
            "timestamptz",
            r#""2024-01-01T10:00:00+03""#,
            r#""2024-01-01T10:00:00+02""#,
            r#""2024-01-01T09:30:00Z""#,
        );
    }

    #[pg_test]
    fn numeric_versions_compare_by_value() {
        versions_order(
            "vt_numeric",
            "numeric",
            "1.25",
            "12345678901234567890.1",
            "12345678901234567890.10000000000000000001",
        );
    }

    #[pg_test]
    fn text_versions_compare_as_text() {
        // as text, "10" sorts before "9"
        versions_order("vt_text", "text", r#""10""#, r#""9""#, r#""9a""#);
    }

    #[pg_test]
    fn enum_versions_follow_declaration_order() {
        run("CREATE TYPE vt_stage AS ENUM ('zeta', 'alpha', 'omega')");
        versions_order("vt_enum", "vt_stage", r#""zeta""#, r#""alpha""#, r#""omega""#);
    }

    #[pg_test]
    fn date_and_domain_versions_use_their_base_ordering() {
        versions_order("vt_date", "date", r#""2023-12-31""#, r#""2024-01-01""#, r#""2024-01-02""#);
        run("CREATE DOMAIN vt_revision AS bigint CHECK (VALUE >= 0)");
        versions_order("vt_domain", "vt_revision", "0", "5", "40");
    }

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
    fn a_cancelled_update_leaves_no_note_and_the_stored_row_is_read_instead() {
        // A BEFORE UPDATE trigger returning NULL makes the write skip a row without a note of
        // why: the call reads the stored row with a second statement.
        versioned_table("fallback");
        run(r#"
            CREATE FUNCTION fallback_cancel() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN RETURN CASE WHEN NEW.val = 'cancel' THEN NULL ELSE NEW END; END $$;
            CREATE TRIGGER cancel BEFORE UPDATE ON fallback FOR EACH ROW EXECUTE FUNCTION fallback_cancel();
            INSERT INTO fallback VALUES (2, 10, 'a');
        "#);
        assert_eq!(upsert("fallback", r#"{"id": 1, "v": 11, "val": "cancel"}"#, "v"), "stale");
        assert_eq!(
            text(r#"SELECT string_agg(outcome::text, ' ' ORDER BY ord) FROM safe_upsert_many('fallback',
                    '[{"id": 1, "v": 12, "val": "cancel"}, {"id": 2, "v": 9, "val": "b"},
                      {"id": 2, "v": 10, "val": "a"}, {"id": 3, "v": 1, "val": "c"}]', 'v')"#),
            "stale stale duplicate inserted"
        );
        assert_eq!(contents("fallback"), "(1,10,a,none) (2,10,a,none) (3,1,c,none)");
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

    // ---------------------------------------------------------------------------------------------
    // search_path
    // ---------------------------------------------------------------------------------------------

    #[pg_test]
    fn hostile_operators_and_functions_on_search_path_change_nothing() {
        run(r#"
            CREATE SCHEMA sp_hostile;
            CREATE FUNCTION sp_hostile.never(int, int) RETURNS bool LANGUAGE sql AS 'SELECT false';
            CREATE FUNCTION sp_hostile.always(int, int) RETURNS bool LANGUAGE sql AS 'SELECT true';
            CREATE OPERATOR sp_hostile.= (LEFTARG = int, RIGHTARG = int, FUNCTION = sp_hostile.never);
            CREATE OPERATOR sp_hostile.< (LEFTARG = int, RIGHTARG = int, FUNCTION = sp_hostile.always);
            CREATE FUNCTION sp_hostile.to_jsonb(anyelement) RETURNS jsonb LANGUAGE sql
                AS $$SELECT '"hostile"'::jsonb$$;
            CREATE FUNCTION sp_hostile.jsonb_build_array(int, int) RETURNS jsonb LANGUAGE sql
                AS $$SELECT '"hostile"'::jsonb$$;
            CREATE TABLE public.sp_t (id int PRIMARY KEY, v int, w int, val text);
        "#);
        run("SET LOCAL search_path = sp_hostile, public, pg_catalog");
        // the hostile operators are in effect for plain SQL here
        assert_eq!(value("SELECT (1 = 1)::text").as_deref(), Some("false"));
        let calls = [
            (r#"{"id": 1, "v": 5, "w": 1, "val": "a"}"#, "'v'", "inserted"),
            (r#"{"id": 1, "v": 6, "w": 1, "val": "b"}"#, "'v'", "updated"),
            (r#"{"id": 1, "v": 4, "w": 1, "val": "c"}"#, "'v'", "stale"),
            (r#"{"id": 1, "v": 6, "w": 1, "val": "b"}"#, "'v'", "duplicate"),
            (r#"{"id": 1, "v": 6, "w": 1, "val": "d"}"#, "'v'", "tie"),
            (r#"{"id": 1, "v": 6, "w": 2, "val": "e"}"#, "ARRAY['v', 'w']", "updated"),
            (r#"{"id": 1, "v": 6, "w": 0, "val": "f"}"#, "ARRAY['v', 'w']", "stale"),
            (r#"{"id": 1, "v": 6, "w": 2, "val": "e"}"#, "ARRAY['v', 'w']", "duplicate"),
            (r#"{"id": 1, "v": 6, "w": 2, "val": "g"}"#, "ARRAY['v', 'w']", "tie"),
            (r#"{"id": 1, "v": 6, "w": 2, "val": "h"}"#, "'v', on_tie => 'apply'", "updated"),
            (r#"{"id": 1, "v": 6, "w": 2, "val": "h"}"#, "'v', on_tie => 'apply'", "duplicate"),
            (r#"{"id": 2, "v": 1, "w": 1, "val": "i"}"#, "'v', ARRAY['id']", "inserted"),
        ];
        let outcomes: Vec<String> = calls
            .iter()
            .map(|(row, rest, _)| {
                text(&format!("SELECT public.safe_upsert('public.sp_t', '{row}', {rest})::text"))
            })
            .collect();
        run("SET LOCAL search_path = public");
        for ((row, rest, expected), got) in calls.iter().zip(&outcomes) {
            assert_eq!(got, expected, "{row} with {rest}");
        }
        assert_eq!(contents("sp_t"), "(1,6,2,h) (2,1,1,i)");
    }

    #[pg_test]
    fn hostile_operators_on_catalog_types_change_nothing() {
        run(r#"
            CREATE SCHEMA sp_cat;
            CREATE FUNCTION sp_cat.oid_eq(oid, oid) RETURNS bool LANGUAGE sql AS 'SELECT false';
            CREATE OPERATOR sp_cat.= (LEFTARG = oid, RIGHTARG = oid, FUNCTION = sp_cat.oid_eq);
            CREATE FUNCTION sp_cat.int24gt(int2, int4) RETURNS bool LANGUAGE sql AS 'SELECT false';
            CREATE OPERATOR sp_cat.> (LEFTARG = int2, RIGHTARG = int4, FUNCTION = sp_cat.int24gt);
            CREATE FUNCTION sp_cat.cat(text, text) RETURNS text LANGUAGE sql AS $$SELECT 'x'$$;
            CREATE OPERATOR sp_cat.|| (LEFTARG = text, RIGHTARG = text, FUNCTION = sp_cat.cat);
            CREATE TABLE public.sp_cat_t (id int PRIMARY KEY, v int, val text);
        "#);
        run("SET LOCAL search_path = sp_cat, public, pg_catalog");
        let outcomes: Vec<String> = [
            r#"{"id": 1, "v": 5, "val": "a"}"#,
            r#"{"id": 1, "v": 6, "val": "b"}"#,
            r#"{"id": 1, "v": 4, "val": "c"}"#,
        ]
        .iter()
        .map(|row| text(&format!("SELECT public.safe_upsert('public.sp_cat_t', '{row}', 'v')::text")))
        .collect();
        run("SET LOCAL search_path = public");
        assert_eq!(outcomes, ["inserted", "updated", "stale"]);
        assert_eq!(contents("sp_cat_t"), "(1,6,b)");
    }

    // ---------------------------------------------------------------------------------------------
    // privileges
    // ---------------------------------------------------------------------------------------------

    #[pg_test]
    fn runs_with_the_callers_privileges() {
        versioned_table("priv_t");
        install_sqlstate_of();
        run("CREATE ROLE priv_t_reader NOLOGIN;
             GRANT SELECT ON priv_t TO priv_t_reader;
             SET LOCAL ROLE priv_t_reader");
        let (state, message) =
            error_of(r#"SELECT safe_upsert('priv_t', '{"id": 1, "v": 11, "val": "b"}', 'v')"#)
                .expect("a reader cannot upsert");
        run("RESET ROLE");
        assert_eq!(state, "42501", "{message}");
        assert!(message.contains("priv_t"), "{message}");
        assert_eq!(contents("priv_t"), "(1,10,a,none)");
    }

    // ---------------------------------------------------------------------------------------------
    // bad input: each with its SQLSTATE, a message naming what is at fault, the table untouched
    // ---------------------------------------------------------------------------------------------

    #[pg_test]
    fn row_that_is_not_an_object_is_22023() {
        versioned_table("bad_notobj");
        // the jsonb is read in its binary form: a top-level scalar is told from a one-element array
        for (row, found) in
            [("[1, 2]", "an array"), ("[5]", "an array"), (r#""text""#, "a string"), ("42", "a number"), ("true", "a boolean"), ("null", "null")]
        {
            assert_rejected(
                "bad_notobj",
                &format!("SELECT safe_upsert('bad_notobj', '{row}', 'v')"),
                "22023",
                &["bad_notobj", "JSON object", found],
            );
        }
    }

    #[pg_test]
    fn empty_row_is_22023() {
        versioned_table("bad_empty");
        assert_rejected("bad_empty", "SELECT safe_upsert('bad_empty', '{}', 'v')", "22023", &["bad_empty", "empty"]);
    }

    #[pg_test]
    fn unknown_json_key_is_42703_naming_the_key() {
        versioned_table("bad_key");
        assert_rejected(
            "bad_key",
            r#"SELECT safe_upsert('bad_key', '{"id": 1, "v": 11, "colour": "red"}', 'v')"#,
            "42703",
            &[r#""colour""#, "bad_key"],
        );
    }

    #[pg_test]
    fn missing_or_null_key_column_is_23502() {
        versioned_table("bad_nokey");
        for row in [r#"{"v": 11, "val": "b"}"#, r#"{"id": null, "v": 11, "val": "b"}"#] {
            assert_rejected(
                "bad_nokey",
                &format!("SELECT safe_upsert('bad_nokey', '{row}', 'v')"),
                "23502",
                &[r#""id""#, "bad_nokey"],
            );
        }
        // one column of a composite key
        run("CREATE TABLE bad_nokey2 (a int, b int, v int, PRIMARY KEY (a, b))");
        assert_rejected(
            "bad_nokey2",
            r#"SELECT safe_upsert('bad_nokey2', '{"a": 1, "v": 1}', 'v')"#,
            "23502",
            &[r#""b""#, "bad_nokey2"],
        );
        assert_rejected(
            "bad_nokey2",
            r#"SELECT safe_upsert('bad_nokey2', '{"a": 1, "b": null, "v": 1}', 'v')"#,
            "23502",
            &[r#""b""#, "bad_nokey2"],
        );
    }

    #[pg_test]
    fn version_column_not_in_table_is_42703() {
        versioned_table("bad_vcol");
        assert_rejected(
            "bad_vcol",
            r#"SELECT safe_upsert('bad_vcol', '{"id": 1, "v": 11}', 'version')"#,
            "42703",
            &[r#""version""#, "bad_vcol"],
        );
        assert_rejected(
            "bad_vcol",
            r#"SELECT safe_upsert('bad_vcol', '{"id": 1, "v": 11}', ARRAY['v', 'nope'])"#,
            "42703",
            &[r#""nope""#, "bad_vcol"],
        );
    }

    #[pg_test]
    fn version_column_in_the_key_is_42p10() {
        versioned_table("bad_vkey");
        assert_rejected(
            "bad_vkey",
            r#"SELECT safe_upsert('bad_vkey', '{"id": 1, "v": 11}', 'id')"#,
            "42P10",
            &[r#""id""#, "bad_vkey", "key"],
        );
        run("CREATE TABLE bad_vkey2 (a int, b int, v int, UNIQUE (a, b))");
        assert_rejected(
            "bad_vkey2",
            r#"SELECT safe_upsert('bad_vkey2', '{"a": 1, "b": 2, "v": 3}', ARRAY['v', 'b'], ARRAY['a', 'b'])"#,
            "42P10",
            &[r#""b""#, "bad_vkey2"],
        );
    }

    #[pg_test]
    fn missing_or_null_version_is_22004() {
        versioned_table("bad_nover");
        for row in [r#"{"id": 1, "val": "b"}"#, r#"{"id": 1, "v": null, "val": "b"}"#] {
            assert_rejected(
                "bad_nover",
                &format!("SELECT safe_upsert('bad_nover', '{row}', 'v')"),
                "22004",
                &[r#""v""#, "bad_nover"],
            );
        }
        // a new key with no version is not inserted either
        assert_rejected(
            "bad_nover",
            r#"SELECT safe_upsert('bad_nover', '{"id": 2, "v": null}', 'v')"#,
            "22004",
            &[r#""v""#],
        );
        // every version column of the array form
        run("CREATE TABLE bad_nover2 (id int PRIMARY KEY, a int, b int)");
        assert_rejected(
            "bad_nover2",
            r#"SELECT safe_upsert('bad_nover2', '{"id": 1, "a": 1, "b": null}', ARRAY['a', 'b'])"#,
            "22004",
            &[r#""b""#, "bad_nover2"],
        );
    }

    #[pg_test]
    fn generated_column_sent_is_428c9() {
        run("CREATE TABLE bad_gen (id int PRIMARY KEY, v int, price int,
                                   doubled int GENERATED ALWAYS AS (price * 2) STORED);
             INSERT INTO bad_gen (id, v, price) VALUES (1, 1, 5)");
        assert_rejected(
            "bad_gen",
            r#"SELECT safe_upsert('bad_gen', '{"id": 1, "v": 2, "doubled": 3}', 'v')"#,
            "428C9",
            &[r#""doubled""#, "bad_gen"],
        );
        // not sending it is fine, and it is computed
        assert_eq!(upsert("bad_gen", r#"{"id": 1, "v": 2, "price": 7}"#, "v"), "updated");
        assert_eq!(contents("bad_gen"), "(1,2,7,14)");
    }

    #[cfg(feature = "pg18")]
    #[pg_test]
    fn virtual_generated_column_sent_is_428c9() {
        run("CREATE TABLE bad_vgen (id int PRIMARY KEY, v int, price int,
                                    doubled int GENERATED ALWAYS AS (price * 2) VIRTUAL);
             INSERT INTO bad_vgen (id, v, price) VALUES (1, 1, 5)");
        assert_rejected(
            "bad_vgen",
            r#"SELECT safe_upsert('bad_vgen', '{"id": 1, "v": 2, "doubled": 3}', 'v')"#,
            "428C9",
            &[r#""doubled""#, "bad_vgen"],
        );
        assert_eq!(upsert("bad_vgen", r#"{"id": 1, "v": 2, "price": 7}"#, "v"), "updated");
        assert_eq!(contents("bad_vgen"), "(1,2,7,14)");
    }

    #[pg_test]
    fn identity_always_column_sent_is_428c9() {
        run("CREATE TABLE bad_ident (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, code text UNIQUE,
                                     v int);
             INSERT INTO bad_ident (code, v) VALUES ('k', 1)");
        assert_rejected(
            "bad_ident",
            r#"SELECT safe_upsert('bad_ident', '{"id": 1, "v": 2}', 'v')"#,
            "428C9",
            &[r#""id""#, "bad_ident"],
        );
        // keyed on another unique column, the identity is generated
        let cc = "'v', ARRAY['code']";
        assert_eq!(upsert_with("bad_ident", r#"{"code": "k", "v": 2}"#, cc), "updated");
        assert_eq!(upsert_with("bad_ident", r#"{"code": "m", "v": 1}"#, cc), "inserted");
        // (the identity of a row that conflicted is drawn and discarded, as in any upsert)
        assert_eq!(text("SELECT string_agg(code || v, ' ' ORDER BY code) FROM bad_ident"), "k2 m1");
    }

    #[pg_test]
    fn no_primary_key_and_no_conflict_cols_is_42p10() {
        run("CREATE TABLE bad_nopk (id int, v int, val text); INSERT INTO bad_nopk VALUES (1, 1, 'a')");
        assert_rejected(
            "bad_nopk",
            r#"SELECT safe_upsert('bad_nopk', '{"id": 1, "v": 2}', 'v')"#,
            "42P10",
            &["bad_nopk", "primary key"],
        );
        // a unique index does not stand in for the primary key unless named
        run("CREATE UNIQUE INDEX ON bad_nopk (id)");
        assert_rejected(
            "bad_nopk",
            r#"SELECT safe_upsert('bad_nopk', '{"id": 1, "v": 2}', 'v')"#,
            "42P10",
            &["bad_nopk"],
        );
    }

    #[pg_test]
    fn conflict_cols_matching_no_unique_index_is_42p10() {
        run("CREATE TABLE bad_cc (id int PRIMARY KEY, a int, b int, c int, v int);
             CREATE UNIQUE INDEX bad_cc_ab ON bad_cc (a, b);
             CREATE INDEX bad_cc_c ON bad_cc (c);
             CREATE UNIQUE INDEX bad_cc_partial ON bad_cc (b) WHERE c > 0;
             CREATE UNIQUE INDEX bad_cc_expr ON bad_cc ((c + 1));
             INSERT INTO bad_cc VALUES (1, 1, 1, 1, 1)");
        for cols in ["ARRAY['a']", "ARRAY['a', 'b', 'c']", "ARRAY['c']", "ARRAY['b']", "ARRAY['id', 'a']"] {
            let stmt = format!(
                r#"SELECT safe_upsert('bad_cc', '{{"id": 1, "a": 1, "b": 1, "c": 1, "v": 2}}', 'v', {cols})"#
            );
            assert_rejected("bad_cc", &stmt, "42P10", &["bad_cc", "unique index"]);
        }
        // a deferrable unique constraint cannot be an arbiter either
        run("CREATE TABLE bad_cc2 (id int PRIMARY KEY, k int UNIQUE DEFERRABLE, v int)");
        assert_rejected(
            "bad_cc2",
            r#"SELECT safe_upsert('bad_cc2', '{"id": 1, "k": 1, "v": 2}', 'v', ARRAY['k'])"#,
            "42P10",
            &["bad_cc2", "k"],
        );
    }

    #[pg_test]
    fn conflict_cols_naming_a_missing_column_is_42703() {
        versioned_table("bad_ccol");
        assert_rejected(
            "bad_ccol",
            r#"SELECT safe_upsert('bad_ccol', '{"id": 1, "v": 11}', 'v', ARRAY['id', 'nope'])"#,
            "42703",
            &[r#""nope""#, "bad_ccol"],
        );
    }

    #[pg_test]
    fn unknown_on_tie_is_22023() {
        versioned_table("bad_tie");
        for on_tie in ["'ignore'", "'SKIP'", "''"] {
            assert_rejected(
                "bad_tie",
                &format!(r#"SELECT safe_upsert('bad_tie', '{{"id": 1, "v": 11}}', 'v', on_tie => {on_tie})"#),
                "22023",
                &["on_tie", &on_tie[1..on_tie.len() - 1]],
            );
        }
    }

    #[pg_test]
    fn other_unique_constraint_violated_is_23505_naming_it() {
        run("CREATE TABLE bad_uniq (id int PRIMARY KEY, email text CONSTRAINT bad_uniq_email UNIQUE, v int);
             INSERT INTO bad_uniq VALUES (1, 'a@x', 1), (2, 'b@x', 1)");
        // by insert
        assert_rejected(
            "bad_uniq",
            r#"SELECT safe_upsert('bad_uniq', '{"id": 3, "email": "a@x", "v": 1}', 'v')"#,
            "23505",
            &["bad_uniq_email"],
        );
        // by update
        assert_rejected(
            "bad_uniq",
            r#"SELECT safe_upsert('bad_uniq', '{"id": 2, "email": "a@x", "v": 2}', 'v')"#,
            "23505",
            &["bad_uniq_email"],
        );
    }

    #[pg_test]
    fn view_or_sequence_target_is_42809() {
        versioned_table("bad_kind");
        run("CREATE VIEW bad_kind_view AS SELECT * FROM bad_kind;
             CREATE SEQUENCE bad_kind_seq;
             CREATE MATERIALIZED VIEW bad_kind_mv AS SELECT * FROM bad_kind;
             CREATE INDEX bad_kind_idx ON bad_kind (v)");
        for target in ["bad_kind_view", "bad_kind_seq", "bad_kind_mv", "bad_kind_idx"] {
            assert_rejected(
                "bad_kind",
                &format!(r#"SELECT safe_upsert('{target}', '{{"id": 1, "v": 11}}', 'v')"#),
                "42809",
                &[target, "not a table"],
            );
        }
    }

    #[pg_test]
    fn dropped_table_oid_is_42p01() {
        run("CREATE TABLE bad_dropped (id int PRIMARY KEY, v int)");
        let oid = text("SELECT 'bad_dropped'::regclass::oid::text");
        assert_eq!(upsert("bad_dropped", r#"{"id": 1, "v": 1}"#, "v"), "inserted");
        run("DROP TABLE bad_dropped");
        let (state, message) = error_of(&format!(r#"SELECT safe_upsert({oid}::oid::regclass, '{{"id": 1, "v": 2}}', 'v')"#))
            .expect("a dropped table cannot be written");
        assert_eq!(state, "42P01", "{message}");
        assert!(message.contains(&oid), "{message}");
        // a name that never existed fails in regclass input, with the same SQLSTATE
        let (state, _) = error_of(r#"SELECT safe_upsert('bad_never_was', '{"id": 1, "v": 2}', 'v')"#).unwrap();
        assert_eq!(state, "42P01");
    }

    #[pg_test]
    fn null_arguments_are_22004() {
        versioned_table("bad_null");
        let cases = [
            (r#"SELECT safe_upsert(NULL, '{"id": 1, "v": 11}', 'v')"#, "target"),
            (r#"SELECT safe_upsert('bad_null', NULL, 'v')"#, "row"),
            (r#"SELECT safe_upsert('bad_null', '{"id": 1, "v": 11}', NULL::name)"#, "version_col"),
            (r#"SELECT safe_upsert('bad_null', '{"id": 1, "v": 11}', NULL::name[])"#, "version_cols"),
            (r#"SELECT safe_upsert('bad_null', '{"id": 1, "v": 11}', ARRAY[]::name[])"#, "version_cols"),
            (r#"SELECT safe_upsert('bad_null', '{"id": 1, "v": 11}', ARRAY['v', NULL])"#, "version_cols"),
            (r#"SELECT safe_upsert('bad_null', '{"id": 1, "v": 11}', 'v', ARRAY['id', NULL])"#, "conflict_cols"),
        ];
        for (stmt, arg) in cases {
            assert_rejected("bad_null", stmt, "22004", &[&format!("\"{arg}\"")]);
        }
    }

    #[pg_test]
    fn version_column_without_btree_ordering_is_42883() {
        run("CREATE TABLE bad_order (id int PRIMARY KEY, p point, j json, v int);
             INSERT INTO bad_order VALUES (1, '(0,0)', '{}', 1)");
        assert_rejected(
            "bad_order",
            r#"SELECT safe_upsert('bad_order', '{"id": 1, "p": "(1,2)"}', 'p')"#,
            "42883",
            &[r#""p""#, "bad_order", "point"],
        );
        assert_rejected(
            "bad_order",
            r#"SELECT safe_upsert('bad_order', '{"id": 1, "j": {"a": 1}}', 'j')"#,
            "42883",
            &[r#""j""#, "bad_order", "json"],
        );
        assert_rejected(
            "bad_order",
            r#"SELECT safe_upsert('bad_order', '{"id": 1, "v": 2, "p": "(1,2)"}', ARRAY['v', 'p'])"#,
            "42883",
            &[r#""p""#, "bad_order"],
        );
    }

    // ---------------------------------------------------------------------------------------------
    // the plan cache key
    // ---------------------------------------------------------------------------------------------

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
