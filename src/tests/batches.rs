//! In-server tests: batches group, order and convert rows as the table does: each column's
//! collation, arrays and domains over them.

#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    use crate::tests::helpers::*;

    /// The outcomes of `safe_upsert_many(table, rows, 'v')`, space-separated, in input order.
    fn many(table: &str, rows: &str) -> String {
        text(&format!("SELECT string_agg(outcome::text, ' ' ORDER BY ord) FROM safe_upsert_many('{table}', '{rows}', 'v')"))
    }

    /// The outcome of each row sent alone to `table`, in order, space-separated.
    fn singles(table: &str, rows: &[&str]) -> String {
        rows.iter().map(|r| upsert(table, r, "v")).collect::<Vec<_>>().join(" ")
    }

    #[pg_test]
    fn a_version_columns_collation_picks_the_same_winner_in_batches_as_in_single_calls() {
        // 'B' sorts before 'a' under "C" and after it in a linguistic order: whichever the
        // database's default is, one of these tables compares otherwise than the text type would.
        let mut collations = vec!["C"];
        if text("SELECT EXISTS (SELECT FROM pg_collation WHERE collname = 'und-x-icu')::text") == "true" {
            collations.push("und-x-icu");
        }
        for (n, coll) in collations.iter().enumerate() {
            let (batch, single) = (format!("coll_ver_b{n}"), format!("coll_ver_s{n}"));
            for t in [&batch, &single] {
                run(&format!(r#"CREATE TABLE {t} (id int PRIMARY KEY, v text COLLATE "{coll}", val text)"#));
            }
            let rows = [r#"{"id": 1, "v": "a", "val": "lower"}"#, r#"{"id": 1, "v": "B", "val": "upper"}"#];
            singles(&single, &rows);
            many(&batch, &format!("[{}]", rows.join(", ")));
            assert_eq!(
                text(&format!("SELECT val FROM {batch}")),
                text(&format!("SELECT val FROM {single}")),
                "collation {coll}"
            );
        }
    }

    #[pg_test]
    fn integer_keys_and_versions_pick_their_winners_by_value_at_each_types_edges() {
        // Integer comparisons are made without calling btint2/4/8cmp: negative values, zero and
        // each type's extremes must order as the type does, in batches as in single calls.
        for (t, min, max) in [("smallint", "-32768", "32767"), ("integer", "-2147483648", "2147483647"), ("bigint", "-9223372036854775808", "9223372036854775807")] {
            let (batch, single) = (format!("int_edge_b_{t}"), format!("int_edge_s_{t}"));
            for name in [&batch, &single] {
                run(&format!("CREATE TABLE {name} (id {t} PRIMARY KEY, v {t}, val text)"));
            }
            let rows: Vec<String> = [
                (max, min, "a"), (min, "-1", "b"), (max, "0", "c"), ("-1", max, "d"), (min, min, "e"),
                ("-1", "-1", "f"), (max, "-1", "g"), ("0", "1", "h"), (min, "0", "i"), ("-1", min, "j"),
            ]
            .iter()
            .map(|(id, v, val)| format!(r#"{{"id": {id}, "v": {v}, "val": "{val}"}}"#))
            .collect();
            let rows: Vec<&str> = rows.iter().map(String::as_str).collect();
            let singles = singles(&single, &rows);
            assert_eq!(singles, "inserted inserted updated inserted stale stale stale inserted updated stale", "{t}");
            assert_eq!(many(&batch, &format!("[{}]", rows.join(", "))), "stale stale inserted inserted stale stale stale inserted inserted stale", "{t}");
            assert_eq!(contents(&batch), contents(&single), "{t}");
        }
    }

    // PostgreSQL 18 here is built without ICU, which nondeterministic collations need.
    #[cfg(feature = "pg15")]
    #[pg_test]
    fn a_nondeterministic_key_collation_groups_batch_rows_as_the_unique_index_does() {
        run("CREATE COLLATION coll_ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
             CREATE TABLE coll_key (k text COLLATE coll_ci PRIMARY KEY, v int, val text);
             INSERT INTO coll_key VALUES ('Stored', 5, 'x');");
        // 'A' and 'a' are one key for the index: one winner, never "cannot affect row a second time"
        assert_eq!(
            many("coll_key", r#"[{"k": "A", "v": 1, "val": "first"}, {"k": "a", "v": 2, "val": "second"},
                                {"k": "STORED", "v": 4, "val": "older"}, {"k": "stored", "v": 6, "val": "newer"}]"#),
            "stale inserted stale updated"
        );
        assert_eq!(text("SELECT string_agg(k || ':' || v || ':' || val, ' ' ORDER BY v) FROM coll_key"), "a:2:second Stored:6:newer");
        // the stored key compared with its spelling in the batch, as a single call compares it
        assert_eq!(many("coll_key", r#"[{"k": "STORED", "v": 6, "val": "newer"}]"#), "tie");
        assert_eq!(upsert("coll_key", r#"{"k": "STORED", "v": 6, "val": "newer"}"#, "v"), "tie");
    }

    #[pg_test]
    fn array_columns_and_domains_over_arrays_work_in_batches_as_in_single_calls() {
        run("CREATE DOMAIN arr_small AS int[] CHECK (cardinality(VALUE) <= 3);
             CREATE TABLE arr_b (id int PRIMARY KEY, v int, nums int[], tags text[], small arr_small, grid int[][]);
             CREATE TABLE arr_s (LIKE arr_b INCLUDING ALL);");
        let rows = [
            r#"{"id": 1, "v": 1, "nums": [1, 2], "tags": ["a", "b c"], "small": [7], "grid": [[1, 2], [3, 4]]}"#,
            r#"{"id": 2, "v": 1, "nums": [], "tags": [null, "x"], "small": null, "grid": null}"#,
            r#"{"id": 1, "v": 2, "nums": [3], "tags": ["d"], "small": [1, 2, 3], "grid": [[5]]}"#,
        ];
        assert_eq!(singles("arr_s", &rows), "inserted inserted updated");
        assert_eq!(many("arr_b", &format!("[{}]", rows.join(", "))), "stale inserted inserted");
        assert_eq!(contents("arr_b"), contents("arr_s"));
        assert_eq!(contents("arr_b"), r#"(1,2,{3},{d},"{1,2,3}",{{5}}) (2,1,{},"{NULL,x}",,)"#);
        // a later batch that replays the stored rows finds them duplicates
        assert_eq!(many("arr_b", &format!("[{}, {}]", rows[1], rows[2])), "duplicate duplicate");
    }

    #[pg_test]
    fn rows_of_one_key_compare_array_values_as_values_not_as_their_spelling() {
        // arrays travel as text: "{1,2}" and "{ 1 , 2 }" are one value, as the stored row's
        // comparison with a single call finds
        run("CREATE TABLE arr_dup (id int PRIMARY KEY, v int, nums int[])");
        assert_eq!(
            many("arr_dup", r#"[{"id": 1, "v": 1, "nums": "{1,2}"}, {"id": 1, "v": 1, "nums": "{ 1 , 2 }"},
                              {"id": 1, "v": 1, "nums": [1, 2]}, {"id": 1, "v": 1, "nums": [2, 1]}]"#),
            "inserted duplicate duplicate tie"
        );
        assert_eq!(upsert("arr_dup", r#"{"id": 1, "v": 1, "nums": "{ 1 , 2 }"}"#, "v"), "duplicate");
    }

    #[pg_test]
    fn rows_of_a_batch_keep_their_outcomes_when_a_trigger_moves_another_rows_key() {
        // The write returns the keys it wrote, matched to the rows sent: a row that a BEFORE
        // INSERT trigger moved to another key matches none of them, and the rows around it
        // must still be told apart.
        run(r#"CREATE TABLE trg_move (id int PRIMARY KEY, v int, val text);
               INSERT INTO trg_move VALUES (3, 5, 'stored'), (5, 1, 'stored');
               CREATE FUNCTION trg_move_f() RETURNS trigger LANGUAGE plpgsql AS $$
               BEGIN IF NEW.val = 'move' THEN NEW.id := NEW.id + 100; END IF; RETURN NEW; END $$;
               CREATE TRIGGER move_rows BEFORE INSERT ON trg_move FOR EACH ROW EXECUTE FUNCTION trg_move_f();"#);
        let outcomes = text(
            r#"SELECT string_agg(outcome::text, ' ' ORDER BY ord) FROM safe_upsert_many('trg_move',
                 '[{"id": 4, "v": 1, "val": "keep"}, {"id": 1, "v": 1, "val": "move"}, {"id": 3, "v": 2, "val": "old"},
                   {"id": 2, "v": 1, "val": "keep"}, {"id": 5, "v": 2, "val": "new"}]', 'v') WHERE ord <> 2"#,
        );
        assert_eq!(outcomes, "inserted stale inserted updated");
        assert_eq!(contents("trg_move"), "(101,1,move) (2,1,keep) (3,5,stored) (4,1,keep) (5,2,new)");
    }

    #[pg_test]
    fn a_bad_array_in_a_batch_names_its_row_and_column_and_writes_nothing() {
        run("CREATE DOMAIN arr_bad_small AS int[] CHECK (cardinality(VALUE) <= 1);
             CREATE TABLE arr_bad (id int PRIMARY KEY, v int, nums int[], small arr_bad_small);");
        assert_rejected(
            "arr_bad",
            r#"SELECT * FROM safe_upsert_many('arr_bad', '[{"id": 1, "v": 1, "nums": [1]}, {"id": 2, "v": 1, "nums": ["x"]}]', 'v')"#,
            "22P02",
            &["row 2:", "column \"nums\"", "arr_bad"],
        );
        assert_rejected(
            "arr_bad",
            r#"SELECT * FROM safe_upsert_many('arr_bad', '[{"id": 1, "v": 1, "small": [1, 2]}]', 'v')"#,
            "23514",
            &["row 1:", "column \"small\"", "arr_bad_small_check"],
        );
    }
}
