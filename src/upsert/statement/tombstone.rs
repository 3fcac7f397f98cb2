//! The statements on a table's tombstones (see `crate::tombstones`): the claim an upsert takes
//! on its key there before writing, and the versioned delete. A tombstone table has the key and
//! version columns of its target, under the same names, types and collations, and
//! `DELETED_AT`; its unique index is the target's conflict key, so `ON CONFLICT` on it orders
//! every writer of a key, upserts and deletes alike, on one index entry.

use super::*;

/// The tombstone table's own column: when the key was deleted.
pub const DELETED_AT: &str = r#""safe_upsert_deleted_at""#;

impl Shape {
    /// The tombstone table, quoted; only for plans of tables that have one.
    fn side(&self) -> &str {
        self.tombstones.as_deref().unwrap_or("<no tombstones>")
    }

    /// The key and version columns (in that order), as named in both tables.
    fn key_and_versions(&self) -> Vec<usize> {
        self.key.iter().map(|k| k.index).chain(self.versions.iter().map(|v| v.index)).collect()
    }

    /// `INSERT INTO <tombstones> (<key, versions, deleted_at>) VALUES (<parameters>, now)`, the
    /// start of both the claim and the delete.
    fn insert_tombstone(&self) -> String {
        let cols = self.key_and_versions();
        let names: Vec<&str> = cols.iter().map(|&i| self.columns[i].name.as_str()).collect();
        let params: Vec<String> = cols.iter().map(|&i| format!("${}", i + 1)).collect();
        format!(
            "INSERT INTO {side} AS tb ({names}, {DELETED_AT}) VALUES ({params}, pg_catalog.statement_timestamp()) \
             ON CONFLICT ({key})",
            side = self.side(),
            names = names.join(", "),
            params = params.join(", "),
            key = self.key_names(),
        )
    }

    /// An upsert's claim on its key, taken before it writes, held to the end of the
    /// transaction: inserts a placeholder tombstone, or locks the key's tombstone. Either way a
    /// concurrent delete of the key waits for this transaction, and this one for a delete that
    /// got there first. Returns (whether the placeholder was inserted, whether the existing
    /// tombstone is older than the incoming row, its version as JSON text).
    pub fn claim_sql(&self) -> String {
        let param = |i: usize| format!("${}", i + 1);
        format!(
            "{insert} DO UPDATE SET {DELETED_AT} = tb.{DELETED_AT} \
             RETURNING tb.xmax OPERATOR(pg_catalog.=) 0, {older}, {version}",
            insert = self.insert_tombstone(),
            older = self.older("tb", &param, 0),
            version = self.version_json("tb"),
        )
    }

    /// After the upsert: removes the claim's placeholder, or the older tombstone the row
    /// replaced.
    pub fn unclaim_sql(&self) -> String {
        let param = |i: usize| format!("${}", i + 1);
        let key: Vec<String> =
            self.key.iter().map(|k| format!("{} {} {}", self.col("tb", k.index), k.eq, param(k.index))).collect();
        format!("DELETE FROM {} AS tb WHERE {}", self.side(), key.join(" AND "))
    }

    /// A delete's tombstone: recorded, or raised to the incoming version if the stored one is
    /// older; an equal or newer one is kept, and the kept note (`kept.rs`) says which. Returns
    /// one row (true when recorded anew) unless kept.
    pub fn tombstone_sql(&self) -> String {
        let incoming = |i: usize| self.col("EXCLUDED", i);
        let set: Vec<String> = self
            .versions
            .iter()
            .map(|v| format!("{c} = EXCLUDED.{c}", c = self.columns[v.index].name))
            .chain(std::iter::once(format!("{DELETED_AT} = EXCLUDED.{DELETED_AT}")))
            .collect();
        format!(
            "{insert} DO UPDATE SET {set} WHERE {older} OR {kept}({same_version}, true, {version}) \
             RETURNING tb.xmax OPERATOR(pg_catalog.=) 0",
            insert = self.insert_tombstone(),
            set = set.join(", "),
            older = self.older("tb", &incoming, 0),
            kept = self.kept,
            same_version = self.same_version("tb", &incoming),
            version = self.version_json("tb"),
        )
    }

    /// The stored row `s` is older than the parameters' version, or of the same: a delete
    /// removes it.
    fn not_newer(&self) -> String {
        let param = |i: usize| format!("${}", i + 1);
        format!("({} OR {})", self.older("s", &param, 0), self.same_version("s", &param))
    }

    fn key_is_params(&self, p: &str) -> String {
        let key: Vec<String> =
            self.key.iter().map(|k| format!("{} {} ${}", self.col(p, k.index), k.eq, k.index + 1)).collect();
        key.join(" AND ")
    }

    /// The versioned delete of the stored row: returns its version as JSON text when removed.
    pub fn delete_row_sql(&self) -> String {
        format!(
            "DELETE FROM {table} AS s WHERE {key} AND {not_newer} RETURNING {version}",
            table = self.table,
            key = self.key_is_params("s"),
            not_newer = self.not_newer(),
            version = self.version_json("s"),
        )
    }

    /// Why the delete removed no row: reads the stored row, if any. Returns (its version as
    /// JSON text, whether the delete would have removed it).
    pub fn delete_classify_sql(&self) -> String {
        format!(
            "SELECT {version}, {not_newer} FROM {table} s WHERE {key}",
            version = self.version_json("s"),
            not_newer = self.not_newer(),
            table = self.table,
            key = self.key_is_params("s"),
        )
    }

    /// The claims of a batch, one per key, for the key's highest incoming version, in key
    /// order. Returns the rows (position, tombstone version as JSON text) whose key has a
    /// tombstone at or above the highest incoming version: those rows are stale.
    pub fn batch_claim_sql(&self) -> String {
        let cols = self.key_and_versions();
        let names: Vec<&str> = cols.iter().map(|&i| self.columns[i].name.as_str()).collect();
        let w_names: Vec<String> = cols.iter().map(|&i| self.col("w", i)).collect();
        let key: Vec<String> = self.key.iter().map(|k| self.col("i", k.index)).collect();
        let order: Vec<String> = self.versions.iter().map(|v| format!("{} DESC", self.col("i", v.index))).collect();
        let returning: Vec<String> = cols.iter().map(|&i| self.col("tb", i)).collect();
        let winner = |i: usize| self.col("w", i);
        format!(
            "WITH input AS ({input}), \
             winners AS (SELECT DISTINCT ON ({key}) i.* FROM input i ORDER BY {key}, {order}), \
             claimed AS (INSERT INTO {side} AS tb ({names}, {DELETED_AT}) SELECT {w_names}, pg_catalog.statement_timestamp() \
                         FROM winners w ORDER BY {w_key} ON CONFLICT ({key_names}) DO UPDATE SET {DELETED_AT} = tb.{DELETED_AT} \
                         RETURNING {returning}, tb.xmax OPERATOR(pg_catalog.=) 0 AS {INSERTED}) \
             SELECT i.{ORD}, {version} FROM claimed tb JOIN winners w ON {winner_key} JOIN input i ON {input_key} \
             WHERE NOT tb.{INSERTED} AND NOT {older}",
            input = self.batch_input(),
            key = key.join(", "),
            order = order.join(", "),
            side = self.side(),
            names = names.join(", "),
            w_names = w_names.join(", "),
            w_key = self.key.iter().map(|k| self.col("w", k.index)).collect::<Vec<_>>().join(", "),
            key_names = self.key_names(),
            returning = returning.join(", "),
            version = self.version_json("tb"),
            winner_key = self.key_eq("tb", "w"),
            input_key = self.key_eq("i", "w"),
            older = self.older("tb", &winner, 0),
        )
    }

    /// After a batch's write: removes the claims' placeholders and the older tombstones of its
    /// keys.
    pub fn batch_unclaim_sql(&self) -> String {
        format!(
            "DELETE FROM {side} AS tb USING ({input}) r WHERE {key}",
            side = self.side(),
            input = self.batch_input(),
            key = self.key_eq("tb", "r"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::shape;
    use super::*;

    fn tombstoned() -> Shape {
        let mut s = shape(OnTie::Skip, &[0]);
        s.tombstones = Some(r#""safe_upsert_data"."t_tombstones""#.into());
        s
    }

    #[test]
    fn a_claim_inserts_a_placeholder_or_locks_the_tombstone() {
        assert_eq!(
            tombstoned().claim_sql(),
            r#"INSERT INTO "safe_upsert_data"."t_tombstones" AS tb ("id", "date", "safe_upsert_deleted_at") VALUES ($2, $1, pg_catalog.statement_timestamp()) ON CONFLICT ("id") DO UPDATE SET "safe_upsert_deleted_at" = tb."safe_upsert_deleted_at" RETURNING tb.xmax OPERATOR(pg_catalog.=) 0, (tb."date" IS NULL OR tb."date" OPERATOR(pg_catalog.<) $1), pg_catalog.to_jsonb(tb."date")::pg_catalog.text"#
        );
        assert_eq!(
            tombstoned().unclaim_sql(),
            r#"DELETE FROM "safe_upsert_data"."t_tombstones" AS tb WHERE tb."id" OPERATOR(pg_catalog.=) $2"#
        );
    }

    #[test]
    fn a_delete_raises_only_an_older_tombstone_and_notes_why_it_kept_one() {
        assert_eq!(
            tombstoned().tombstone_sql(),
            r#"INSERT INTO "safe_upsert_data"."t_tombstones" AS tb ("id", "date", "safe_upsert_deleted_at") VALUES ($2, $1, pg_catalog.statement_timestamp()) ON CONFLICT ("id") DO UPDATE SET "date" = EXCLUDED."date", "safe_upsert_deleted_at" = EXCLUDED."safe_upsert_deleted_at" WHERE (tb."date" IS NULL OR tb."date" OPERATOR(pg_catalog.<) EXCLUDED."date") OR "ext"."safe_upsert_kept"(tb."date" OPERATOR(pg_catalog.=) EXCLUDED."date", true, pg_catalog.to_jsonb(tb."date")::pg_catalog.text) RETURNING tb.xmax OPERATOR(pg_catalog.=) 0"#
        );
    }

    #[test]
    fn a_delete_removes_a_stored_row_of_an_older_or_equal_version() {
        let s = tombstoned();
        assert_eq!(
            s.delete_row_sql(),
            r#"DELETE FROM "public"."t" AS s WHERE s."id" OPERATOR(pg_catalog.=) $2 AND ((s."date" IS NULL OR s."date" OPERATOR(pg_catalog.<) $1) OR s."date" OPERATOR(pg_catalog.=) $1) RETURNING pg_catalog.to_jsonb(s."date")::pg_catalog.text"#
        );
        assert_eq!(
            s.delete_classify_sql(),
            r#"SELECT pg_catalog.to_jsonb(s."date")::pg_catalog.text, ((s."date" IS NULL OR s."date" OPERATOR(pg_catalog.<) $1) OR s."date" OPERATOR(pg_catalog.=) $1) FROM "public"."t" s WHERE s."id" OPERATOR(pg_catalog.=) $2"#
        );
    }

    #[test]
    fn a_batch_claims_each_key_once_for_its_highest_version_in_key_order() {
        let sql = tombstoned().batch_claim_sql();
        for part in [
            r#"winners AS (SELECT DISTINCT ON (i."id") i.* FROM input i ORDER BY i."id", i."date" DESC)"#,
            r#"claimed AS (INSERT INTO "safe_upsert_data"."t_tombstones" AS tb ("id", "date", "safe_upsert_deleted_at") SELECT w."id", w."date", pg_catalog.statement_timestamp() FROM winners w ORDER BY w."id" ON CONFLICT ("id") DO UPDATE"#,
            r#"JOIN winners w ON tb."id" OPERATOR(pg_catalog.=) w."id" JOIN input i ON i."id" OPERATOR(pg_catalog.=) w."id" WHERE NOT tb."pg_safeupsert_inserted" AND NOT (tb."date" IS NULL OR tb."date" OPERATOR(pg_catalog.<) w."date")"#,
        ] {
            assert!(sql.contains(part), "{part}\n not in\n{sql}");
        }
        assert!(tombstoned().batch_unclaim_sql().starts_with(r#"DELETE FROM "safe_upsert_data"."t_tombstones" AS tb USING (SELECT r."pg_safeupsert_ord""#));
    }
}
