//! Builds the two SQL statements behind one cached plan. Pure string work, no PostgreSQL calls,
//! so it is unit-tested with plain `#[test]`s.
//!
//! Every identifier arrives already quoted (from the catalog, through `quote_identifier`), every
//! operator arrives schema-qualified as `OPERATOR(schema.op)`, and every function we call is
//! written `pg_catalog.f`, so the generated SQL means the same under any `search_path`.

pub mod tombstone;

/// What to do when the stored and incoming versions are equal but the values differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OnTie {
    Skip,
    Apply,
    Error,
}

impl OnTie {
    pub fn parse(s: &str) -> Option<OnTie> {
        match s {
            "skip" => Some(OnTie::Skip),
            "apply" => Some(OnTie::Apply),
            "error" => Some(OnTie::Error),
            _ => None,
        }
    }
}

/// A version column with the operators of its type's default btree ordering.
#[derive(Clone, Debug)]
pub struct VersionCol {
    /// position in `Shape::columns`
    pub index: usize,
    /// e.g. `OPERATOR(pg_catalog.<)`
    pub lt: String,
    /// e.g. `OPERATOR(pg_catalog.=)`
    pub eq: String,
    /// the column is NOT NULL: a stored version is never NULL, so no `IS NULL` arm
    pub not_null: bool,
}

/// A key column with the equality operator of its type.
#[derive(Clone, Debug)]
pub struct KeyCol {
    pub index: usize,
    pub eq: String,
}

/// A sent column as the statements name it.
#[derive(Clone, Debug)]
pub struct Column {
    /// quoted
    pub name: String,
    /// `COLLATE schema.name`, for a type with collations: batches group and order rows in SQL,
    /// where the values come from arrays that carry their type's default collation, not the
    /// column's
    pub collate: Option<String>,
    /// the column's type, when it has no array type (arrays, domains over arrays): batches pass
    /// its values as text and cast them, with the type's own input function
    pub text_cast: Option<String>,
}

/// The shape of one call: which table, which columns are sent (in parameter order: column i is
/// parameter `$i+1`), which of them form the conflict key and which are the version.
#[derive(Clone, Debug)]
pub struct Shape {
    /// `"schema"."table"`, quoted
    pub table: String,
    pub columns: Vec<Column>,
    pub key: Vec<KeyCol>,
    pub versions: Vec<VersionCol>,
    pub on_tie: OnTie,
    /// the extension's `safe_upsert_kept` function, schema-qualified and quoted
    pub kept: String,
    /// whether the extension's SQL has the form of `safe_upsert_kept` that compares the stored
    /// and incoming rows itself (0.2.0 on), which the upsert's kept arm then calls
    pub kept_rows: bool,
    /// the table's tombstone table, schema-qualified and quoted, once it has one
    pub tombstones: Option<String>,
}

/// Column names the batch statements add to the sent columns; the prefix keeps them apart from
/// any table column a user would choose.
const ORD: &str = r#""pg_safeupsert_ord""#;
const RANK: &str = r#""pg_safeupsert_rank""#;
const INSERTED: &str = r#""pg_safeupsert_inserted""#;
const SEQ: &str = r#""pg_safeupsert_seq""#;

impl Shape {
    fn col(&self, prefix: &str, i: usize) -> String {
        format!("{prefix}.{}", self.columns[i].name)
    }

    /// The sent columns' names, comma-separated.
    fn names(&self) -> String {
        self.columns.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ")
    }

    /// The key columns of `a` equal those of `b`.
    fn key_eq(&self, a: &str, b: &str) -> String {
        let eqs: Vec<String> =
            self.key.iter().map(|k| format!("{} {} {}", self.col(a, k.index), k.eq, self.col(b, k.index))).collect();
        eqs.join(" AND ")
    }

    /// The stored version of row `p` as JSON text.
    fn version_json(&self, p: &str) -> String {
        if self.versions.len() == 1 {
            format!("pg_catalog.to_jsonb({})::pg_catalog.text", self.col(p, self.versions[0].index))
        } else {
            let vs: Vec<String> = self.versions.iter().map(|v| self.col(p, v.index)).collect();
            format!("pg_catalog.jsonb_build_array({})::pg_catalog.text", vs.join(", "))
        }
    }

    /// The batch input: parameter 1 is the rows' positions, parameter i+2 the values of column
    /// i, each given its column's collation (and type, for those passed as text), so that rows
    /// are grouped, ordered and compared as the table compares them.
    fn batch_input(&self) -> String {
        let arrays: Vec<String> = (1..=self.columns.len() + 1).map(|n| format!("pg_catalog.unnest(${n})")).collect();
        let values: Vec<String> = self
            .columns
            .iter()
            .map(|c| {
                let mut value = format!("r.{}", c.name);
                if let Some(t) = &c.text_cast {
                    value = format!("CAST({value} AS {t})");
                }
                if let Some(collate) = &c.collate {
                    value = format!("{value} {collate}");
                }
                format!("{value} AS {}", c.name)
            })
            .collect();
        format!("SELECT r.{ORD}, {} FROM ROWS FROM ({}) AS r({ORD}, {})", values.join(", "), arrays.join(", "), self.names())
    }

    /// When the stored row `s` is replaced by the incoming one: it is older or, with
    /// `on_tie = apply`, of the same version with other values.
    fn replaces(&self, incoming: &dyn Fn(usize) -> String) -> String {
        let older = self.older("s", incoming, 0);
        if self.on_tie == OnTie::Apply {
            format!("{older} OR ({} AND NOT {})", self.same_version("s", incoming), self.same_values("s", incoming))
        } else {
            older
        }
    }

    fn key_names(&self) -> String {
        let key: Vec<&str> = self.key.iter().map(|k| self.columns[k.index].name.as_str()).collect();
        key.join(", ")
    }

    /// The sent columns outside the key, which a replacement writes.
    fn non_key(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.columns.len()).filter(|&i| !self.key.iter().any(|k| k.index == i))
    }

    /// The write's SET list and WHERE condition, shared by the single and batch statements.
    /// When the incoming row does not replace the stored one, the last arm of the condition
    /// notes why (see `kept.rs`) and is false.
    fn on_conflict(&self) -> String {
        let set: Vec<String> = self.non_key().map(|i| format!("{c} = EXCLUDED.{c}", c = self.columns[i].name)).collect();
        let incoming = |i: usize| self.col("EXCLUDED", i);
        // The whole rows cost one step each to set up, where the comparison of every sent
        // column in SQL costs a step per column and side, paid by every call.
        let values = if self.kept_rows { "s.*, EXCLUDED.*".to_string() } else { self.same_values("s", &incoming) };
        format!(
            "ON CONFLICT ({key}) DO UPDATE SET {set} WHERE {when} OR {kept}({same_version}, {values}, {stored_version})",
            key = self.key_names(),
            set = set.join(", "),
            when = self.replaces(&incoming),
            kept = self.kept,
            same_version = self.same_version("s", &incoming),
            stored_version = self.version_json("s"),
        )
    }

    /// `stored` is older than `incoming`, a NULL stored version being older than any; compared
    /// left to right over the version columns, as a row comparison would, but NULL-aware.
    fn older(&self, stored: &str, incoming: &dyn Fn(usize) -> String, from: usize) -> String {
        let v = &self.versions[from];
        let s = self.col(stored, v.index);
        let i = incoming(v.index);
        let here = if v.not_null { format!("{s} {} {i}", v.lt) } else { format!("{s} IS NULL OR {s} {} {i}", v.lt) };
        if from + 1 == self.versions.len() {
            format!("({here})")
        } else {
            let rest = self.older(stored, incoming, from + 1);
            format!("({here} OR ({s} {} {i} AND {rest}))", v.eq)
        }
    }

    /// Every version column of `stored` equals the incoming one.
    fn same_version(&self, stored: &str, incoming: &dyn Fn(usize) -> String) -> String {
        self.versions
            .iter()
            .map(|v| format!("{} {} {}", self.col(stored, v.index), v.eq, incoming(v.index)))
            .collect::<Vec<_>>()
            .join(" AND ")
    }

    /// Every sent column of `stored` has the same binary image as the incoming value, NULLs
    /// equal: `*=` needs no equality operator per type (json has none) and says "identical".
    /// The casts to record keep the parser from expanding it into per-column `*=`.
    fn same_values(&self, stored: &str, incoming: &dyn Fn(usize) -> String) -> String {
        let s: Vec<String> = (0..self.columns.len()).map(|i| self.col(stored, i)).collect();
        let i: Vec<String> = (0..self.columns.len()).map(incoming).collect();
        format!(
            "ROW({})::pg_catalog.record OPERATOR(pg_catalog.*=) ROW({})::pg_catalog.record",
            s.join(", "),
            i.join(", ")
        )
    }

    /// The write: insert, or replace when the incoming version is newer (or, with
    /// `on_tie = apply`, equal with other values). Returns one row, `true` when inserted,
    /// `false` when updated; no row when the stored row was kept.
    pub fn upsert_sql(&self) -> String {
        let params: Vec<String> = (1..=self.columns.len()).map(|n| format!("${n}")).collect();
        format!(
            "INSERT INTO {table} AS s ({cols}) VALUES ({params}) {on_conflict} \
             RETURNING s.xmax OPERATOR(pg_catalog.=) 0",
            table = self.table,
            cols = self.names(),
            params = params.join(", "),
            on_conflict = self.on_conflict(),
        )
    }

    /// For partitioned tables, whose RETURNING cannot read xmax: insert unless the key exists.
    /// Returns one row when inserted.
    pub fn insert_sql(&self) -> String {
        let params: Vec<String> = (1..=self.columns.len()).map(|n| format!("${n}")).collect();
        format!(
            "INSERT INTO {table} AS s ({cols}) VALUES ({params}) ON CONFLICT ({key}) DO NOTHING RETURNING true",
            table = self.table,
            cols = self.names(),
            params = params.join(", "),
            key = self.key_names(),
        )
    }

    /// For partitioned tables, after `insert_sql` found the key: replace the stored row if the
    /// incoming one is newer. Returns one row when updated.
    pub fn update_sql(&self) -> String {
        let param = |i: usize| format!("${}", i + 1);
        let set: Vec<String> = self.non_key().map(|i| format!("{} = {}", self.columns[i].name, param(i))).collect();
        let key: Vec<String> =
            self.key.iter().map(|k| format!("{} {} {}", self.col("s", k.index), k.eq, param(k.index))).collect();
        format!(
            "UPDATE {table} AS s SET {set} WHERE {key} AND ({when}) RETURNING false",
            table = self.table,
            set = set.join(", "),
            key = key.join(" AND "),
            when = self.replaces(&param),
        )
    }

    /// Why the write was skipped: reads the stored row, which the skipped `ON CONFLICT DO
    /// UPDATE` has locked, so at READ COMMITTED this statement's fresh snapshot sees the very
    /// version that was compared. Returns (same version, same values, stored version as JSON
    /// text, whether the incoming row replaces it): the last tells a write that a trigger
    /// cancelled from one that the versions refused.
    pub fn classify_sql(&self) -> String {
        let param = |i: usize| format!("${}", i + 1);
        let key: Vec<String> = self
            .key
            .iter()
            .map(|k| format!("{} {} {}", self.col("s", k.index), k.eq, param(k.index)))
            .collect();
        format!(
            "SELECT {same_version}, {same_values}, {stored_version}, {replaces} FROM {table} s WHERE {key}",
            same_version = self.same_version("s", &param),
            same_values = self.same_values("s", &param),
            stored_version = self.version_json("s"),
            replaces = self.replaces(&param),
            table = self.table,
            key = key.join(" AND "),
        )
    }

    /// The batch write, one statement for many rows of this shape. Of the rows sharing a key
    /// only the one with the highest version is written (the first of equals, or with
    /// `on_tie = apply` the last); the others are compared with it. Returns per input row: its
    /// position, whether it was its key's winner, whether the write inserted (true), updated
    /// (false) or was skipped (NULL) for winners, for the other rows the comparison with their
    /// key's winner (same version, same values, winner's version as JSON text; compared only for
    /// them, as most batches have few), and the key's place in key order: winners are written
    /// in that order (a fixed lock order between concurrent batches), so the n-th note of a kept
    /// row (`kept.rs`) belongs to the n-th skipped winner.
    pub fn batch_upsert_sql(&self) -> String {
        let order: Vec<String> = self.versions.iter().map(|v| format!("{} DESC", self.col("i", v.index))).collect();
        let partition: Vec<String> = self.key.iter().map(|k| self.col("i", k.index)).collect();
        let returning: Vec<String> = self.key.iter().map(|k| self.col("s", k.index)).collect();
        let ties = if self.on_tie == OnTie::Apply { "DESC" } else { "ASC" };
        let incoming = |i: usize| self.col("r", i);
        format!(
            "WITH input AS ({input}), \
             ranked AS (SELECT i.*, pg_catalog.row_number() OVER (PARTITION BY {partition} \
                        ORDER BY {order}, i.{ORD} {ties}) AS {RANK}, \
                        pg_catalog.dense_rank() OVER (ORDER BY {partition}) AS {SEQ} FROM input i), \
             written AS (INSERT INTO {table} AS s ({cols}) \
                         SELECT {cols} FROM ranked WHERE {RANK} OPERATOR(pg_catalog.=) 1 ORDER BY {SEQ} \
                         {on_conflict} \
                         RETURNING {returning}, s.xmax OPERATOR(pg_catalog.=) 0 AS {INSERTED}) \
             SELECT r.{ORD}, true, w.{INSERTED}, NULL::pg_catalog.bool, NULL::pg_catalog.bool, NULL::pg_catalog.text, r.{SEQ} \
             FROM ranked r LEFT JOIN written w ON {written_key} WHERE r.{RANK} OPERATOR(pg_catalog.=) 1 \
             UNION ALL \
             SELECT r.{ORD}, false, NULL::pg_catalog.bool, {same_version}, {same_values}, {winner_version}, r.{SEQ} \
             FROM ranked r JOIN ranked wr ON wr.{RANK} OPERATOR(pg_catalog.=) 1 AND {winner_key} \
             WHERE r.{RANK} OPERATOR(pg_catalog.>) 1",
            input = self.batch_input(),
            partition = partition.join(", "),
            order = order.join(", "),
            table = self.table,
            cols = self.names(),
            on_conflict = self.on_conflict(),
            returning = returning.join(", "),
            same_version = self.same_version("wr", &incoming),
            same_values = self.same_values("wr", &incoming),
            winner_version = self.version_json("wr"),
            winner_key = self.key_eq("wr", "r"),
            written_key = self.key_eq("w", "r"),
        )
    }

    /// The batch write of rows already chosen one per key and sent in key order (`dedupe.rs`),
    /// written in that order (a fixed lock order between concurrent batches): the function scan
    /// over the arrays feeds the insert directly, with no node between them that could reorder
    /// the rows, so the plan needs no sort (parameter 1, their positions, goes unused). Returns
    /// the key and whether it inserted, per written row; a kept row returns nothing and leaves a
    /// note (`kept.rs`), so the n-th note belongs to the n-th winner not returned.
    pub fn batch_winners_sql(&self) -> String {
        let returning: Vec<String> = self.key.iter().map(|k| self.col("s", k.index)).collect();
        format!(
            "INSERT INTO {table} AS s ({cols}) SELECT {cols} FROM ({input}) i {on_conflict} \
             RETURNING {returning}, s.xmax OPERATOR(pg_catalog.=) 0",
            table = self.table,
            cols = self.names(),
            input = self.batch_input(),
            on_conflict = self.on_conflict(),
            returning = returning.join(", "),
        )
    }

    /// Why batch writes were skipped: like `classify_sql`, for the skipped rows passed as in
    /// `batch_upsert_sql`. Returns (position, same version, same values, stored version,
    /// whether the incoming row replaces it).
    pub fn batch_classify_sql(&self) -> String {
        let incoming = |i: usize| self.col("r", i);
        format!(
            "SELECT r.{ORD}, {same_version}, {same_values}, {stored_version}, {replaces} FROM ({input}) r \
             JOIN {table} s ON {key}",
            same_version = self.same_version("s", &incoming),
            same_values = self.same_values("s", &incoming),
            stored_version = self.version_json("s"),
            replaces = self.replaces(&incoming),
            input = self.batch_input(),
            table = self.table,
            key = self.key_eq("s", "r"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn shape(on_tie: OnTie, versions: &[usize]) -> Shape {
        Shape {
            table: r#""public"."t""#.into(),
            columns: [r#""date""#, r#""id""#, r#""seq""#, r#""value""#]
                .into_iter()
                .map(|name| Column { name: name.into(), collate: None, text_cast: None })
                .collect(),
            key: vec![KeyCol { index: 1, eq: "OPERATOR(pg_catalog.=)".into() }],
            versions: versions
                .iter()
                .map(|&index| VersionCol {
                    index,
                    lt: "OPERATOR(pg_catalog.<)".into(),
                    eq: "OPERATOR(pg_catalog.=)".into(),
                    not_null: false,
                })
                .collect(),
            on_tie,
            kept: r#""ext"."safe_upsert_kept""#.into(),
            kept_rows: false,
            tombstones: None,
        }
    }

    #[test]
    fn upsert_replaces_only_older_rows() {
        assert_eq!(
            shape(OnTie::Skip, &[0]).upsert_sql(),
            r#"INSERT INTO "public"."t" AS s ("date", "id", "seq", "value") VALUES ($1, $2, $3, $4) ON CONFLICT ("id") DO UPDATE SET "date" = EXCLUDED."date", "seq" = EXCLUDED."seq", "value" = EXCLUDED."value" WHERE (s."date" IS NULL OR s."date" OPERATOR(pg_catalog.<) EXCLUDED."date") OR "ext"."safe_upsert_kept"(s."date" OPERATOR(pg_catalog.=) EXCLUDED."date", ROW(s."date", s."id", s."seq", s."value")::pg_catalog.record OPERATOR(pg_catalog.*=) ROW(EXCLUDED."date", EXCLUDED."id", EXCLUDED."seq", EXCLUDED."value")::pg_catalog.record, pg_catalog.to_jsonb(s."date")::pg_catalog.text) RETURNING s.xmax OPERATOR(pg_catalog.=) 0"#
        );
    }

    #[test]
    fn with_the_whole_row_note_and_a_not_null_version_the_condition_is_slim() {
        let mut s = shape(OnTie::Skip, &[0]);
        s.kept_rows = true;
        s.versions[0].not_null = true;
        assert_eq!(
            s.upsert_sql(),
            r#"INSERT INTO "public"."t" AS s ("date", "id", "seq", "value") VALUES ($1, $2, $3, $4) ON CONFLICT ("id") DO UPDATE SET "date" = EXCLUDED."date", "seq" = EXCLUDED."seq", "value" = EXCLUDED."value" WHERE (s."date" OPERATOR(pg_catalog.<) EXCLUDED."date") OR "ext"."safe_upsert_kept"(s."date" OPERATOR(pg_catalog.=) EXCLUDED."date", s.*, EXCLUDED.*, pg_catalog.to_jsonb(s."date")::pg_catalog.text) RETURNING s.xmax OPERATOR(pg_catalog.=) 0"#
        );
        // with on_tie = apply the condition still compares the values in SQL
        s.on_tie = OnTie::Apply;
        assert!(s.upsert_sql().contains(r#"AND NOT ROW(s."date", s."id", s."seq", s."value")::pg_catalog.record OPERATOR(pg_catalog.*=) ROW("#));
    }

    #[test]
    fn partitioned_tables_insert_then_update() {
        let s = shape(OnTie::Skip, &[0]);
        assert_eq!(
            s.insert_sql(),
            r#"INSERT INTO "public"."t" AS s ("date", "id", "seq", "value") VALUES ($1, $2, $3, $4) ON CONFLICT ("id") DO NOTHING RETURNING true"#
        );
        assert_eq!(
            s.update_sql(),
            r#"UPDATE "public"."t" AS s SET "date" = $1, "seq" = $3, "value" = $4 WHERE s."id" OPERATOR(pg_catalog.=) $2 AND ((s."date" IS NULL OR s."date" OPERATOR(pg_catalog.<) $1)) RETURNING false"#
        );
    }

    #[test]
    fn several_version_columns_compare_left_to_right() {
        let sql = shape(OnTie::Skip, &[0, 2]).upsert_sql();
        assert!(sql.contains(
            r#"WHERE (s."date" IS NULL OR s."date" OPERATOR(pg_catalog.<) EXCLUDED."date" OR (s."date" OPERATOR(pg_catalog.=) EXCLUDED."date" AND (s."seq" IS NULL OR s."seq" OPERATOR(pg_catalog.<) EXCLUDED."seq"))) OR "ext"."safe_upsert_kept"(s."date" OPERATOR(pg_catalog.=) EXCLUDED."date" AND s."seq" OPERATOR(pg_catalog.=) EXCLUDED."seq", "#
        ), "{sql}");
    }

    #[test]
    fn apply_also_replaces_equal_versions_with_other_values() {
        let sql = shape(OnTie::Apply, &[0]).upsert_sql();
        assert!(sql.contains(
            r#"OR (s."date" OPERATOR(pg_catalog.=) EXCLUDED."date" AND NOT ROW(s."date", s."id", s."seq", s."value")::pg_catalog.record OPERATOR(pg_catalog.*=) ROW(EXCLUDED."date", EXCLUDED."id", EXCLUDED."seq", EXCLUDED."value")::pg_catalog.record) OR "ext"."safe_upsert_kept"("#
        ), "{sql}");
    }

    #[test]
    fn classify_reads_the_stored_row_by_key() {
        assert_eq!(
            shape(OnTie::Skip, &[0, 2]).classify_sql(),
            r#"SELECT s."date" OPERATOR(pg_catalog.=) $1 AND s."seq" OPERATOR(pg_catalog.=) $3, ROW(s."date", s."id", s."seq", s."value")::pg_catalog.record OPERATOR(pg_catalog.*=) ROW($1, $2, $3, $4)::pg_catalog.record, pg_catalog.jsonb_build_array(s."date", s."seq")::pg_catalog.text, (s."date" IS NULL OR s."date" OPERATOR(pg_catalog.<) $1 OR (s."date" OPERATOR(pg_catalog.=) $1 AND (s."seq" IS NULL OR s."seq" OPERATOR(pg_catalog.<) $3))) FROM "public"."t" s WHERE s."id" OPERATOR(pg_catalog.=) $2"#
        );
    }

    #[test]
    fn batch_writes_one_winner_per_key_in_key_order() {
        let sql = shape(OnTie::Skip, &[0]).batch_upsert_sql();
        for part in [
            r#"FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2), pg_catalog.unnest($3), pg_catalog.unnest($4), pg_catalog.unnest($5)) AS r("pg_safeupsert_ord", "date", "id", "seq", "value")"#,
            r#"PARTITION BY i."id" ORDER BY i."date" DESC, i."pg_safeupsert_ord" ASC"#,
            r#"pg_catalog.dense_rank() OVER (ORDER BY i."id") AS "pg_safeupsert_seq""#,
            r#"WHERE "pg_safeupsert_rank" OPERATOR(pg_catalog.=) 1 ORDER BY "pg_safeupsert_seq" ON CONFLICT ("id") DO UPDATE"#,
            r#"OR "ext"."safe_upsert_kept"(s."date" OPERATOR(pg_catalog.=) EXCLUDED."date", "#,
            r#"RETURNING s."id", s.xmax OPERATOR(pg_catalog.=) 0 AS "pg_safeupsert_inserted""#,
            r#"FROM ranked r LEFT JOIN written w ON w."id" OPERATOR(pg_catalog.=) r."id" WHERE r."pg_safeupsert_rank" OPERATOR(pg_catalog.=) 1 UNION ALL"#,
            r#"JOIN ranked wr ON wr."pg_safeupsert_rank" OPERATOR(pg_catalog.=) 1 AND wr."id" OPERATOR(pg_catalog.=) r."id" WHERE r."pg_safeupsert_rank" OPERATOR(pg_catalog.>) 1"#,
        ] {
            assert!(sql.contains(part), "{part}\n not in\n{sql}");
        }
        assert!(shape(OnTie::Apply, &[0]).batch_upsert_sql().contains(r#"i."pg_safeupsert_ord" DESC"#));
    }

    #[test]
    fn batch_winners_are_written_in_the_order_sent_and_return_their_keys() {
        let sql = shape(OnTie::Skip, &[0]).batch_winners_sql();
        assert!(sql.contains(r#"AS r("pg_safeupsert_ord", "date", "id", "seq", "value")) i ON CONFLICT ("id")"#), "{sql}");
        assert!(sql.ends_with(r#"RETURNING s."id", s.xmax OPERATOR(pg_catalog.=) 0"#), "{sql}");
        assert!(!sql.contains("row_number"), "{sql}");
    }

    #[test]
    fn batch_classify_joins_the_stored_rows() {
        assert_eq!(
            shape(OnTie::Skip, &[0]).batch_classify_sql(),
            r#"SELECT r."pg_safeupsert_ord", s."date" OPERATOR(pg_catalog.=) r."date", ROW(s."date", s."id", s."seq", s."value")::pg_catalog.record OPERATOR(pg_catalog.*=) ROW(r."date", r."id", r."seq", r."value")::pg_catalog.record, pg_catalog.to_jsonb(s."date")::pg_catalog.text, (s."date" IS NULL OR s."date" OPERATOR(pg_catalog.<) r."date") FROM (SELECT r."pg_safeupsert_ord", r."date" AS "date", r."id" AS "id", r."seq" AS "seq", r."value" AS "value" FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2), pg_catalog.unnest($3), pg_catalog.unnest($4), pg_catalog.unnest($5)) AS r("pg_safeupsert_ord", "date", "id", "seq", "value")) r JOIN "public"."t" s ON s."id" OPERATOR(pg_catalog.=) r."id""#
        );
    }

    #[test]
    fn batch_input_gives_each_column_its_collation_and_type() {
        let mut shape = shape(OnTie::Skip, &[0]);
        shape.columns[1].collate = Some(r#"COLLATE "public"."ci""#.into());
        shape.columns[3].text_cast = Some("integer[]".into());
        shape.columns[3].collate = Some(r#"COLLATE "pg_catalog"."default""#.into());
        let input = r#"SELECT r."pg_safeupsert_ord", r."date" AS "date", r."id" COLLATE "public"."ci" AS "id", r."seq" AS "seq", CAST(r."value" AS integer[]) COLLATE "pg_catalog"."default" AS "value" FROM ROWS FROM ("#;
        assert!(shape.batch_upsert_sql().contains(&format!("WITH input AS ({input}")));
        assert!(shape.batch_classify_sql().contains(&format!("FROM ({input}")));
    }

    #[test]
    fn on_tie_names() {
        assert_eq!(OnTie::parse("skip"), Some(OnTie::Skip));
        assert_eq!(OnTie::parse("apply"), Some(OnTie::Apply));
        assert_eq!(OnTie::parse("error"), Some(OnTie::Error));
        assert_eq!(OnTie::parse("Skip"), None);
    }
}
