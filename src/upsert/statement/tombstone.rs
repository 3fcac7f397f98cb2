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

    /// The SET list that raises a kept tombstone to the incoming delete's version and time.
    fn raise_tombstone(&self) -> String {
        let set: Vec<String> = self
            .versions
            .iter()
            .map(|v| format!("{c} = EXCLUDED.{c}", c = self.columns[v.index].name))
            .chain(std::iter::once(format!("{DELETED_AT} = EXCLUDED.{DELETED_AT}")))
            .collect();
        set.join(", ")
    }

    /// A delete's tombstone: recorded, or raised to the incoming version if the stored one is
    /// older; an equal or newer one is kept, and the kept note (`kept.rs`) says which. Returns
    /// one row (true when recorded anew) unless kept.
    pub fn tombstone_sql(&self) -> String {
        let incoming = |i: usize| self.col("EXCLUDED", i);
        format!(
            "{insert} DO UPDATE SET {set} WHERE {older} OR {kept}({same_version}, true, {version}) \
             RETURNING tb.xmax OPERATOR(pg_catalog.=) 0",
            insert = self.insert_tombstone(),
            set = self.raise_tombstone(),
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

    /// The tombstones of a batch of deletes, in one statement: one per key, for its highest
    /// version (of equals, the first row), recorded or raised in key order; a kept one notes
    /// why, in that order (`kept.rs`). Returns per input row (position, whether it won its key,
    /// for winners whether the tombstone was recorded, for the others whether their version
    /// equals the winner's, the key's place in key order, and for the others the winner's
    /// version as JSON text).
    pub fn batch_tombstone_sql(&self) -> String {
        let cols = self.key_and_versions();
        let names: Vec<&str> = cols.iter().map(|&i| self.columns[i].name.as_str()).collect();
        let partition: Vec<String> = self.key.iter().map(|k| self.col("i", k.index)).collect();
        let order: Vec<String> = self.versions.iter().map(|v| format!("{} DESC", self.col("i", v.index))).collect();
        let returning: Vec<String> = self.key.iter().map(|k| self.col("tb", k.index)).collect();
        let excluded = |i: usize| self.col("EXCLUDED", i);
        let incoming = |i: usize| self.col("r", i);
        format!(
            "WITH input AS ({input}), \
             ranked AS (SELECT i.*, pg_catalog.row_number() OVER (PARTITION BY {partition} \
                        ORDER BY {order}, i.{ORD}) AS {RANK}, \
                        pg_catalog.dense_rank() OVER (ORDER BY {partition}) AS {SEQ} FROM input i), \
             recorded AS (INSERT INTO {side} AS tb ({names}, {DELETED_AT}) \
                          SELECT {names}, pg_catalog.statement_timestamp() FROM ranked \
                          WHERE {RANK} OPERATOR(pg_catalog.=) 1 ORDER BY {SEQ} \
                          ON CONFLICT ({key}) DO UPDATE SET {set} \
                          WHERE {older} OR {kept}({same_version}, true, {version}) RETURNING {returning}) \
             SELECT r.{ORD}, true, w.{first_key} IS NOT NULL, NULL::pg_catalog.bool, r.{SEQ}, NULL::pg_catalog.text \
             FROM ranked r LEFT JOIN recorded w ON {recorded_key} WHERE r.{RANK} OPERATOR(pg_catalog.=) 1 \
             UNION ALL \
             SELECT r.{ORD}, false, NULL::pg_catalog.bool, {loser_same}, r.{SEQ}, {winner_version} \
             FROM ranked r JOIN ranked wr ON wr.{RANK} OPERATOR(pg_catalog.=) 1 AND {winner_key} \
             WHERE r.{RANK} OPERATOR(pg_catalog.>) 1",
            input = self.batch_input(),
            partition = partition.join(", "),
            order = order.join(", "),
            side = self.side(),
            names = names.join(", "),
            key = self.key_names(),
            set = self.raise_tombstone(),
            older = self.older("tb", &excluded, 0),
            kept = self.kept,
            same_version = self.same_version("tb", &excluded),
            version = self.version_json("tb"),
            returning = returning.join(", "),
            first_key = self.columns[self.key[0].index].name,
            recorded_key = self.key_eq("w", "r"),
            loser_same = self.same_version("wr", &incoming),
            winner_version = self.version_json("wr"),
            winner_key = self.key_eq("wr", "r"),
        )
    }

    /// The stored rows of a batch's recorded tombstones (one row per key), removed where not
    /// newer. Returns the positions of the rows that removed one.
    pub fn batch_delete_rows_sql(&self) -> String {
        let incoming = |i: usize| self.col("r", i);
        format!(
            "DELETE FROM {table} AS s USING ({input}) r WHERE {key} AND ({older} OR {same}) RETURNING r.{ORD}",
            table = self.table,
            input = self.batch_input(),
            key = self.key_eq("s", "r"),
            older = self.older("s", &incoming, 0),
            same = self.same_version("s", &incoming),
        )
    }

    /// Why rows of a batch removed no stored row: (position, stored version as JSON text,
    /// whether the delete would have removed it) for those that have one.
    pub fn batch_delete_classify_sql(&self) -> String {
        let incoming = |i: usize| self.col("r", i);
        format!(
            "SELECT r.{ORD}, {version}, ({older} OR {same}) FROM ({input}) r JOIN {table} s ON {key}",
            version = self.version_json("s"),
            older = self.older("s", &incoming, 0),
            same = self.same_version("s", &incoming),
            input = self.batch_input(),
            table = self.table,
            key = self.key_eq("s", "r"),
        )
    }

    /// Why a batch's tombstones were kept, when the notes do not tell: (position, whether the
    /// kept tombstone's version equals the row's).
    pub fn batch_tombstone_classify_sql(&self) -> String {
        let incoming = |i: usize| self.col("r", i);
        format!(
            "SELECT r.{ORD}, {same} FROM ({input}) r JOIN {side} tb ON {key}",
            same = self.same_version("tb", &incoming),
            input = self.batch_input(),
            side = self.side(),
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

    #[test]
    fn a_batch_of_deletes_records_one_tombstone_per_key_in_key_order() {
        let s = tombstoned();
        let sql = s.batch_tombstone_sql();
        for part in [
            r#"PARTITION BY i."id" ORDER BY i."date" DESC, i."pg_safeupsert_ord") AS "pg_safeupsert_rank""#,
            r#"WHERE "pg_safeupsert_rank" OPERATOR(pg_catalog.=) 1 ORDER BY "pg_safeupsert_seq" ON CONFLICT ("id") DO UPDATE SET "date" = EXCLUDED."date", "safe_upsert_deleted_at" = EXCLUDED."safe_upsert_deleted_at" WHERE (tb."date" IS NULL OR tb."date" OPERATOR(pg_catalog.<) EXCLUDED."date") OR "ext"."safe_upsert_kept"("#,
            r#"SELECT r."pg_safeupsert_ord", true, w."id" IS NOT NULL, NULL::pg_catalog.bool, r."pg_safeupsert_seq", NULL::pg_catalog.text FROM ranked r LEFT JOIN recorded w ON w."id" OPERATOR(pg_catalog.=) r."id""#,
            r#"SELECT r."pg_safeupsert_ord", false, NULL::pg_catalog.bool, wr."date" OPERATOR(pg_catalog.=) r."date", r."pg_safeupsert_seq", pg_catalog.to_jsonb(wr."date")::pg_catalog.text"#,
        ] {
            assert!(sql.contains(part), "{part}\n not in\n{sql}");
        }
        assert!(s.batch_delete_rows_sql().starts_with(r#"DELETE FROM "public"."t" AS s USING (SELECT r."pg_safeupsert_ord""#));
        assert!(s.batch_delete_rows_sql().ends_with(r#"WHERE s."id" OPERATOR(pg_catalog.=) r."id" AND ((s."date" IS NULL OR s."date" OPERATOR(pg_catalog.<) r."date") OR s."date" OPERATOR(pg_catalog.=) r."date") RETURNING r."pg_safeupsert_ord""#));
        assert!(s.batch_delete_classify_sql().contains(r#"JOIN "public"."t" s ON s."id" OPERATOR(pg_catalog.=) r."id""#));
        assert!(s.batch_tombstone_classify_sql().ends_with(r#"JOIN "safe_upsert_data"."t_tombstones" tb ON tb."id" OPERATOR(pg_catalog.=) r."id""#));
    }
}
