//! In-server tests: bad input: each with its SQLSTATE, a message naming what is at fault, the table untouched.

#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    use crate::tests::helpers::*;

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
}
