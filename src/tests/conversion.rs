//! In-server tests: how JSON values become column values, and how version types order.

#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    use crate::tests::helpers::*;

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
    // Values a single row's columns take without their input function (`input::Direct`) equal
    // what the input function makes of the JSON value's text
    // ---------------------------------------------------------------------------------------------

    /// For each JSON value and column type: what safe_upsert stores (as text), or the SQLSTATE
    /// it fails with, equals what the type's input function makes of the text that
    /// `jsonb #>> '{}'` gives for the value.
    fn same_as_input_function(table: &str, sql_type: &str, values: &[&str]) {
        run(&format!("CREATE TABLE {table} (id int PRIMARY KEY, v int, x {sql_type}); CREATE TABLE {table}_input (x {sql_type})"));
        for (n, json) in values.iter().enumerate() {
            // the text as a literal: INSERT gives it to the column type's input function, with
            // the column's type modifier, as an unknown-typed constant
            let literal = value(&format!("SELECT quote_literal(('{json}'::jsonb) #>> '{{}}')")).unwrap_or_else(|| "NULL".into());
            let expected = match error_of(&format!("INSERT INTO {table}_input VALUES ({literal})")) {
                Some((state, _)) => state,
                None => text(&format!("DELETE FROM {table}_input RETURNING coalesce(x::text, 'NULL')")),
            };
            let row = format!(r#"{{"id": {n}, "v": 1, "x": {json}}}"#);
            let call = format!("SELECT safe_upsert('{table}', '{row}'::jsonb, 'v')");
            let got = match error_of(&call) {
                Some((state, _)) => state,
                None => text(&format!("SELECT coalesce(x::text, 'NULL') FROM {table} WHERE id = {n}")),
            };
            assert_eq!(got, expected, "{json} into {sql_type}");
        }
    }

    const NUMBERS: &[&str] = &[
        "0", "-0", "0.0", "-0.0", "1", "-1", "1.0", "1.5", "1e2", "1E+2", "1.5e1", "15e-1", "100e-2", "1e-2",
        "32767", "32768", "-32768", "-32769", "2147483647", "2147483648", "-2147483648", "-2147483649",
        "9223372036854775807", "9223372036854775808", "-9223372036854775808", "-9223372036854775809",
        "99999999999999999999", "123456789012345678901234567890", "1e19", "1e20", "0.000000000000000000001",
        "123456789012345678901234567890.000000000000000001", "10000", "100000000", "9999", "null",
        r#""7""#, r#""-0""#, "true", "[1]",
    ];

    #[pg_test]
    fn integer_columns_read_numbers_as_their_input_functions_do() {
        same_as_input_function("direct_int2", "int2", NUMBERS);
        same_as_input_function("direct_int4", "int4", NUMBERS);
        same_as_input_function("direct_int8", "int8", NUMBERS);
    }

    #[pg_test]
    fn numeric_columns_keep_the_number_as_numeric_in_reads_it() {
        same_as_input_function("direct_numeric", "numeric", NUMBERS);
        same_as_input_function("direct_numeric_typmod", "numeric(6,2)", NUMBERS);
        same_as_input_function("direct_float", "float8", NUMBERS);
    }

    #[pg_test]
    fn text_and_boolean_columns_read_strings_and_booleans_as_their_input_functions_do() {
        let strings = [
            r#""""#, r#""a""#, r#""héllo, \"world\"""#, r#""\\n""#, r#""  padded  ""#, r#""true""#, r#""f""#,
            "true", "false", "12.50", "-0", "null", "[1]", "[]",
        ];
        same_as_input_function("direct_text", "text", &strings);
        same_as_input_function("direct_varchar", "varchar", &strings);
        same_as_input_function("direct_varchar3", "varchar(3)", &strings);
        same_as_input_function("direct_bool", "bool", &strings);
    }
}
