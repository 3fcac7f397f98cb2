//! In-server tests: safe_delete and tombstones.

#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    use crate::tests::helpers::*;

    fn delete(table: &str, row: &str, rest: &str) -> String {
        text(&format!("SELECT safe_delete('{table}', '{row}', {rest})::text"))
    }

    /// The table's tombstones as `key=version` pairs, sorted.
    fn tombstones(table: &str) -> String {
        text(&format!(
            "SELECT coalesce(string_agg(key::text || '=' || version::text, ' ' ORDER BY key::text), '') \
             FROM safe_upsert_tombstones WHERE relid = '{table}'::regclass"
        ))
    }

    #[pg_test]
    fn the_newest_event_wins_whether_write_or_delete() {
        run("CREATE TABLE del_t (id int PRIMARY KEY, ver int NOT NULL, v text)");
        let steps = [
            ("u", r#"{"id": 1, "ver": 5, "v": "a"}"#, "inserted"),
            ("d", r#"{"id": 1, "ver": 3}"#, "stale"),
            ("d", r#"{"id": 1, "ver": 7}"#, "deleted"),
            ("u", r#"{"id": 1, "ver": 6, "v": "late"}"#, "stale"),
            ("u", r#"{"id": 1, "ver": 7, "v": "tie"}"#, "stale"),
            ("d", r#"{"id": 1, "ver": 7}"#, "duplicate"),
            ("d", r#"{"id": 1, "ver": 6}"#, "stale"),
            ("d", r#"{"id": 2, "ver": 4}"#, "absent"),
            ("d", r#"{"id": 2, "ver": 6}"#, "absent"),
            ("u", r#"{"id": 2, "ver": 6, "v": "x"}"#, "stale"),
            ("u", r#"{"id": 3, "ver": 1, "v": "y"}"#, "inserted"),
            ("d", r#"{"id": 3, "ver": 1}"#, "deleted"),
        ];
        for (op, row, expected) in steps {
            let got = if op == "u" { upsert("del_t", row, "ver") } else { delete("del_t", row, "'ver'") };
            assert_eq!(got, expected, "{op} {row}");
        }
        assert_eq!(contents("del_t"), "");
        assert_eq!(tombstones("del_t"), r#"{"id": 1}=7 {"id": 2}=6 {"id": 3}=1"#);
        // a newer write brings the key back and removes its tombstone
        assert_eq!(upsert("del_t", r#"{"id": 1, "ver": 8, "v": "new"}"#, "ver"), "inserted");
        assert_eq!(contents("del_t"), "(1,8,new)");
        assert_eq!(tombstones("del_t"), r#"{"id": 2}=6 {"id": 3}=1"#);
    }

    #[pg_test]
    fn batches_respect_tombstones_and_remove_older_ones() {
        run("CREATE TABLE del_b (id int PRIMARY KEY, ver int NOT NULL, v text)");
        delete("del_b", r#"{"id": 1, "ver": 5}"#, "'ver'");
        delete("del_b", r#"{"id": 2, "ver": 5}"#, "'ver'");
        let outcomes = text(
            r#"SELECT string_agg(outcome::text, ' ' ORDER BY ord) FROM safe_upsert_many('del_b',
               '[{"id": 1, "ver": 4, "v": "a"}, {"id": 1, "ver": 5, "v": "b"}, {"id": 2, "ver": 3, "v": "c"},
                 {"id": 2, "ver": 6, "v": "d"}, {"id": 3, "ver": 1, "v": "e"}]', 'ver')"#,
        );
        assert_eq!(outcomes, "stale stale stale inserted inserted");
        assert_eq!(contents("del_b"), "(2,6,d) (3,1,e)");
        assert_eq!(tombstones("del_b"), r#"{"id": 1}=5"#);
    }

    #[pg_test]
    fn several_version_columns_and_a_unique_key_other_than_the_primary() {
        run("CREATE TABLE del_m (id serial PRIMARY KEY, code text NOT NULL UNIQUE, day date, seq int, v text)");
        let rest = "ARRAY['day', 'seq'], ARRAY['code']";
        assert_eq!(
            upsert_with("del_m", r#"{"code": "a", "day": "2026-01-02", "seq": 1, "v": "x"}"#, rest),
            "inserted"
        );
        assert_eq!(delete("del_m", r#"{"code": "a", "day": "2026-01-01", "seq": 9}"#, rest), "stale");
        assert_eq!(delete("del_m", r#"{"code": "a", "day": "2026-01-02", "seq": 2}"#, rest), "deleted");
        assert_eq!(tombstones("del_m"), r#"{"code": "a"}=["2026-01-02", 2]"#);
        assert_eq!(upsert_with("del_m", r#"{"code": "a", "day": "2026-01-02", "seq": 2, "v": "y"}"#, rest), "stale");
        assert_eq!(upsert_with("del_m", r#"{"code": "a", "day": "2026-01-03", "seq": 0, "v": "z"}"#, rest), "inserted");
        // a call with other columns than the tombstones were kept for is refused, clearly
        let msg = assert_rejected("del_m", r#"SELECT safe_upsert('del_m', '{"code": "b", "day": "2026-01-01"}', 'day', ARRAY['code'])"#, "55000", &["del_m", "(day, seq)"]);
        assert!(msg.contains("tombstones"), "{msg}");
    }

    #[pg_test]
    fn a_cdc_before_image_passes_as_it_comes_but_every_key_must_be_a_column() {
        run("CREATE TABLE del_cdc (id int PRIMARY KEY, ver bigint NOT NULL, n int CHECK (n > 0), twice int GENERATED ALWAYS AS (n * 2) STORED)");
        run("INSERT INTO del_cdc (id, ver, n) VALUES (1, 1, 1)");
        // other values are neither converted nor checked, generated columns included
        assert_eq!(delete("del_cdc", r#"{"id": 1, "ver": 2, "n": "not a number", "twice": [1]}"#, "'ver'"), "deleted");
        assert_rejected("del_cdc", r#"SELECT safe_delete('del_cdc', '{"id": 2, "ver": 2, "nope": 1}', 'ver')"#, "42703", &["nope", "del_cdc"]);
    }

    #[pg_test]
    fn bad_input_is_refused_and_leaves_no_tombstone() {
        run("CREATE TABLE del_bad (id int PRIMARY KEY, ver int NOT NULL, v text)");
        delete("del_bad", r#"{"id": 9, "ver": 1}"#, "'ver'");
        let cases = [
            (r#"'{"ver": 1}'"#, "23502", "id"),
            (r#"'{"id": null, "ver": 1}'"#, "23502", "id"),
            (r#"'{"id": 1}'"#, "22004", "ver"),
            (r#"'{"id": 1, "ver": null}'"#, "22004", "ver"),
            (r#"'{"id": "x", "ver": 1}'"#, "22P02", "id"),
            (r#"'{"id": 1, "ver": 99999999999}'"#, "22003", "ver"),
            (r#"'[1]'"#, "22023", "del_bad"),
        ];
        for (row, state, mention) in cases {
            assert_rejected("del_bad", &format!("SELECT safe_delete('del_bad', {row}, 'ver')"), state, &[mention, "del_bad"]);
        }
        assert_eq!(tombstones("del_bad"), r#"{"id": 9}=1"#);
        assert_rejected("del_bad", r#"SELECT safe_delete('del_bad', '{"id": 1, "ver": 1}', 'nope')"#, "42703", &["nope"]);
        assert_rejected("del_bad", r#"SELECT safe_delete('del_bad', '{"id": 1, "ver": 1}', 'ver', ARRAY['v'])"#, "42P10", &["v"]);
        assert_eq!(tombstones("del_bad"), r#"{"id": 9}=1"#);
    }

    #[pg_test]
    fn deletes_need_delete_and_select_and_never_take_a_hidden_row_for_absent() {
        run("CREATE TABLE del_priv (id int PRIMARY KEY, ver int NOT NULL, owner text);
             INSERT INTO del_priv VALUES (1, 1, 'alice'), (2, 1, 'bob');
             CREATE ROLE del_alice NOLOGIN; CREATE ROLE del_reader NOLOGIN;
             GRANT SELECT ON del_priv TO del_reader;
             GRANT SELECT, DELETE ON del_priv TO del_alice;
             ALTER TABLE del_priv ENABLE ROW LEVEL SECURITY;
             CREATE POLICY mine ON del_priv USING (owner = 'alice');");
        run("SET LOCAL ROLE del_reader");
        assert_rejected("del_priv", r#"SELECT safe_delete('del_priv', '{"id": 1, "ver": 5}', 'ver')"#, "42501", &["del_priv"]);
        run("RESET ROLE; SET LOCAL ROLE del_alice");
        assert_eq!(delete("del_priv", r#"{"id": 1, "ver": 5}"#, "'ver'"), "deleted");
        assert_rejected("del_priv", r#"SELECT safe_delete('del_priv', '{"id": 2, "ver": 5}', 'ver')"#, "42501", &["del_priv", "row-level security"]);
        assert_eq!(delete("del_priv", r#"{"id": 3, "ver": 5}"#, "'ver'"), "absent");
        // the view shows a role only the tables it may read
        assert_eq!(tombstones("del_priv"), r#"{"id": 1}=5 {"id": 3}=5"#);
        run("RESET ROLE; SET LOCAL ROLE del_reader");
        assert_eq!(tombstones("del_priv"), r#"{"id": 1}=5 {"id": 3}=5"#);
        run("RESET ROLE; REVOKE SELECT ON del_priv FROM del_reader; SET LOCAL ROLE del_reader");
        assert_eq!(tombstones("del_priv"), "");
        run("RESET ROLE");
        assert_eq!(contents("del_priv"), "(2,1,bob)");
    }

    #[pg_test]
    fn only_the_owner_purges_and_a_full_purge_drops_the_tombstone_table() {
        // an owner without superuser rights, and a writer who owns nothing
        run("CREATE ROLE del_powner NOLOGIN; CREATE ROLE del_writer NOLOGIN;
             GRANT CREATE ON SCHEMA public TO del_powner;
             SET LOCAL ROLE del_powner;
             CREATE TABLE del_p (id int PRIMARY KEY, ver int NOT NULL);
             GRANT SELECT, INSERT, UPDATE, DELETE ON del_p TO del_writer;
             RESET ROLE;");
        run("SET LOCAL ROLE del_writer");
        for id in 1..=3 {
            assert_eq!(delete("del_p", &format!(r#"{{"id": {id}, "ver": 1}}"#), "'ver'"), "absent");
        }
        assert_eq!(upsert("del_p", r#"{"id": 1, "ver": 1}"#, "ver"), "stale");
        assert_rejected("del_p", "SELECT safe_upsert_purge_tombstones('del_p')", "42501", &["del_p", "owner"]);
        assert_eq!(text("SELECT safe_upsert_purge_tombstones()::text"), "0");
        run("RESET ROLE");
        assert_eq!(text("SELECT tableowner::text FROM pg_tables WHERE tablename = 'del_p_tombstones'"), "del_powner");
        run("UPDATE safe_upsert_data.del_p_tombstones SET safe_upsert_deleted_at = now() - interval '2 days' WHERE id = 1");
        run("SET LOCAL ROLE del_powner");
        assert_eq!(text("SELECT safe_upsert_purge_tombstones('del_p', '1 day')::text"), "1");
        assert_eq!(tombstones("del_p"), r#"{"id": 2}=1 {"id": 3}=1"#);
        assert_eq!(upsert("del_p", r#"{"id": 1, "ver": 0}"#, "ver"), "inserted", "the purged key accepts any version again");
        assert_eq!(text("SELECT safe_upsert_purge_tombstones('del_p')::text"), "2");
        assert_eq!(value("SELECT to_regclass('safe_upsert_data.del_p_tombstones')::text"), None);
        assert_eq!(upsert("del_p", r#"{"id": 2, "ver": 0}"#, "ver"), "inserted");
        run("RESET ROLE");
        assert_eq!(text("SELECT count(*)::text FROM safe_upsert_data.tombstone_tables WHERE target = 'del_p'::regclass"), "0");
    }

    #[pg_test]
    fn tombstones_go_with_their_table_and_their_columns_cannot_change_under_them() {
        run("CREATE TABLE del_ddl (id int PRIMARY KEY, ver int NOT NULL, v text)");
        delete("del_ddl", r#"{"id": 1, "ver": 1}"#, "'ver'");
        for ddl in [
            "ALTER TABLE del_ddl ALTER COLUMN ver TYPE bigint",
            "ALTER TABLE del_ddl RENAME COLUMN id TO key",
            "ALTER TABLE del_ddl DROP COLUMN ver",
        ] {
            let (state, msg) = error_of(ddl).unwrap_or_else(|| panic!("{ddl} succeeded"));
            assert_eq!(state, "55000", "{ddl}: {msg}");
            assert!(msg.contains("tombstones"), "{ddl}: {msg}");
        }
        // other columns are free to change
        run("ALTER TABLE del_ddl ALTER COLUMN v TYPE varchar(10), ADD COLUMN w int");
        assert_eq!(upsert("del_ddl", r#"{"id": 1, "ver": 1, "v": "a"}"#, "ver"), "stale");
        run("DROP TABLE del_ddl");
        assert_eq!(value("SELECT to_regclass('safe_upsert_data.del_ddl_tombstones')::text"), None);
        assert_eq!(text("SELECT count(*)::text FROM safe_upsert_data.tombstone_tables WHERE tombstones::text LIKE '%del_ddl%'"), "0");
    }

    #[pg_test]
    fn tables_without_deletes_have_no_tombstone_statements() {
        run("CREATE TABLE del_none (id int PRIMARY KEY, ver int NOT NULL)");
        assert_eq!(upsert("del_none", r#"{"id": 1, "ver": 1}"#, "ver"), "inserted");
        assert_eq!(value("SELECT to_regclass('safe_upsert_data.del_none_tombstones')::text"), None);
        let relid = text("SELECT 'del_none'::regclass::oid::text");
        let plan = crate::upsert::plan_cache::cached(pg_sys::Oid::from(relid.parse::<u32>().unwrap()));
        assert_eq!(plan, Some(false), "a cached plan without tombstone statements");
        delete("del_none", r#"{"id": 1, "ver": 1}"#, "'ver'");
        assert_eq!(upsert("del_none", r#"{"id": 2, "ver": 1}"#, "ver"), "inserted");
        let plan = crate::upsert::plan_cache::cached(pg_sys::Oid::from(relid.parse::<u32>().unwrap()));
        assert_eq!(plan, Some(true), "after the first delete the plan claims keys");
    }

    #[pg_test]
    fn a_hundred_thousand_deletes_in_one_transaction_hold_no_lock_per_key() {
        run("CREATE TABLE del_many (id int PRIMARY KEY, ver int NOT NULL)");
        run("INSERT INTO del_many SELECT g, 1 FROM generate_series(1, 50000) g");
        let outcomes = text(
            "SELECT string_agg(o || ' ' || n, ', ' ORDER BY o) FROM (SELECT o::text, count(*) AS n FROM \
             (SELECT safe_delete('del_many', jsonb_build_object('id', g, 'ver', 2), 'ver') AS o \
              FROM generate_series(1, 100000) g) d GROUP BY o) c",
        );
        assert_eq!(outcomes, "absent 50000, deleted 50000");
        let locks = text("SELECT count(*)::text FROM pg_locks WHERE pid = pg_backend_pid()");
        assert!(locks.parse::<i32>().unwrap() < 50, "{locks} locks held");
        assert_eq!(text("SELECT count(*)::text FROM safe_upsert_tombstones WHERE relname = 'del_many'"), "100000");
    }

    fn delete_many(table: &str, rows: &str) -> String {
        text(&format!("SELECT string_agg(outcome::text, ' ' ORDER BY ord) FROM safe_delete_many('{table}', '{rows}', 'ver')"))
    }

    #[pg_test]
    fn a_batch_of_deletes_follows_the_batch_rules_and_names_the_row_at_fault() {
        run("CREATE TABLE del_many_b (id int PRIMARY KEY, ver int NOT NULL, v text);
             INSERT INTO del_many_b VALUES (1, 5, 'a'), (2, 5, 'b'), (3, 9, 'c')");
        assert_eq!(
            delete_many("del_many_b", r#"[{"id":1,"ver":6},{"id":1,"ver":4},{"id":1,"ver":6},{"id":2,"ver":5},{"id":3,"ver":2},{"id":4,"ver":1},{"id":4,"ver":3}]"#),
            "deleted stale duplicate deleted stale stale absent"
        );
        assert_eq!(contents("del_many_b"), "(3,9,c)");
        assert_eq!(tombstones("del_many_b"), r#"{"id": 1}=6 {"id": 2}=5 {"id": 4}=3"#);
        assert_eq!(delete_many("del_many_b", r#"[{"id":1,"ver":6},{"id":1,"ver":2},{"id":4,"ver":9},{"id":2,"ver":5}]"#), "duplicate stale absent duplicate");
        assert_eq!(tombstones("del_many_b"), r#"{"id": 1}=6 {"id": 2}=5 {"id": 4}=9"#);
        let msg = assert_rejected("del_many_b", r#"SELECT * FROM safe_delete_many('del_many_b', '[{"id":5,"ver":1},{"id":"x","ver":2}]', 'ver')"#, "22P02", &["row 2", "id"]);
        assert!(msg.starts_with("row 2: "), "{msg}");
        assert_eq!(tombstones("del_many_b"), r#"{"id": 1}=6 {"id": 2}=5 {"id": 4}=9"#, "a failed batch records nothing");
        assert_rejected("del_many_b", "SELECT * FROM safe_delete_many('del_many_b', '{}', 'ver')", "22023", &["del_many_b"]);
    }

    #[pg_test]
    fn upsert_and_delete_batches_give_the_same_rows_in_either_order() {
        let upserts = r#"[{"id":1,"ver":3,"v":"u3"},{"id":2,"ver":1,"v":"u1"},{"id":3,"ver":5,"v":"u5"},{"id":4,"ver":2,"v":"u2"}]"#;
        let deletes = r#"[{"id":1,"ver":2},{"id":2,"ver":1},{"id":3,"ver":7},{"id":5,"ver":1}]"#;
        let mut finals = Vec::new();
        for (name, first_upserts) in [("del_ord_a", true), ("del_ord_b", false)] {
            run(&format!("CREATE TABLE {name} (id int PRIMARY KEY, ver int NOT NULL, v text)"));
            let up = format!("SELECT count(*) FROM safe_upsert_many('{name}', '{upserts}', 'ver')");
            let del = format!("SELECT count(*) FROM safe_delete_many('{name}', '{deletes}', 'ver')");
            if first_upserts { run(&up); run(&del); } else { run(&del); run(&up); }
            finals.push((contents(name), tombstones(name)));
        }
        assert_eq!(finals[0], finals[1]);
        assert_eq!(finals[0].0, "(1,3,u3) (4,2,u2)");
        assert_eq!(finals[0].1, r#"{"id": 2}=1 {"id": 3}=7 {"id": 5}=1"#);
    }
}
