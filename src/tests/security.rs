//! In-server tests: search_path and privileges.

#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    use crate::tests::helpers::*;

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
}
