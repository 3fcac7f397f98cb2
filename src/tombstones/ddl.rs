//! The SQL that makes a tombstone table. Pure string work, unit-tested with plain `#[test]`s;
//! every name arrives quoted, every type schema-qualified.

use crate::upsert::statement::tombstone::DELETED_AT;

/// The statements making tombstone table `side` (quoted, qualified) with `columns` (quoted
/// name, type, COLLATE clause), unique on `index_cols` (as CREATE INDEX writes them), owned by
/// `owner` (quoted); `target` names the table in the comment.
pub fn create_table(side: &str, columns: &[(String, String, Option<String>)], index_cols: &str, target: &str, owner: &str) -> Vec<String> {
    let mut defs: Vec<String> = columns
        .iter()
        .map(|(name, typ, collate)| match collate {
            Some(c) => format!("{name} {typ} {c} NOT NULL"),
            None => format!("{name} {typ} NOT NULL"),
        })
        .collect();
    defs.push(format!("{DELETED_AT} pg_catalog.timestamptz NOT NULL"));
    vec![
        format!("CREATE TABLE {side} ({})", defs.join(", ")),
        format!("CREATE UNIQUE INDEX ON {side} ({index_cols})"),
        format!("COMMENT ON TABLE {side} IS {}", literal(&format!("pg_safeupsert: the tombstones of {target}"))),
        format!("ALTER TABLE {side} OWNER TO {owner}"),
    ]
}

/// A string literal, quoted as `quote_literal` does (standard_conforming_strings is on since
/// PostgreSQL 9.1, and the `E` form works either way).
pub fn literal(s: &str) -> String {
    if s.contains('\\') {
        format!("E'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
    } else {
        format!("'{}'", s.replace('\'', "''"))
    }
}

/// An array literal of names, each element quoted: `{"a","b\"c"}`.
pub fn array_literal(names: &[String]) -> String {
    let elems: Vec<String> = names.iter().map(|n| format!("\"{}\"", n.replace('\\', "\\\\").replace('"', "\\\""))).collect();
    format!("{{{}}}", elems.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tombstone_table_has_the_key_and_versions_and_the_deletion_time() {
        let cols = vec![
            (r#""id""#.to_string(), "pg_catalog.text".to_string(), Some(r#"COLLATE "pg_catalog"."C""#.to_string())),
            (r#""ver""#.to_string(), "pg_catalog.int4".to_string(), None),
        ];
        assert_eq!(
            create_table(r#""safe_upsert_data"."t_tombstones""#, &cols, r#""id""#, "public.t", r#""alice""#),
            vec![
                r#"CREATE TABLE "safe_upsert_data"."t_tombstones" ("id" pg_catalog.text COLLATE "pg_catalog"."C" NOT NULL, "ver" pg_catalog.int4 NOT NULL, "safe_upsert_deleted_at" pg_catalog.timestamptz NOT NULL)"#,
                r#"CREATE UNIQUE INDEX ON "safe_upsert_data"."t_tombstones" ("id")"#,
                r#"COMMENT ON TABLE "safe_upsert_data"."t_tombstones" IS 'pg_safeupsert: the tombstones of public.t'"#,
                r#"ALTER TABLE "safe_upsert_data"."t_tombstones" OWNER TO "alice""#,
            ]
        );
    }

    #[test]
    fn literals_quote_what_would_end_them() {
        assert_eq!(literal("it's"), "'it''s'");
        assert_eq!(literal(r"a\b'"), r"E'a\\b'''");
        assert_eq!(array_literal(&["id".into(), r#"we"ird\"#.into()]), r#"{"id","we\"ird\\"}"#);
    }
}
