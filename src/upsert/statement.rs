//! Builds the two SQL statements behind one cached plan. Pure string work, no PostgreSQL calls,
//! so it is unit-tested with plain `#[test]`s.
//!
//! Every identifier arrives already quoted (from the catalog, through `quote_identifier`), every
//! operator arrives schema-qualified as `OPERATOR(schema.op)`, and every function we call is
//! written `pg_catalog.f`, so the generated SQL means the same under any `search_path`.

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
}

/// A key column with the equality operator of its type.
#[derive(Clone, Debug)]
pub struct KeyCol {
    pub index: usize,
    pub eq: String,
}

/// The shape of one call: which table, which columns are sent (in parameter order: column i is
/// parameter `$i+1`), which of them form the conflict key and which are the version.
#[derive(Clone, Debug)]
pub struct Shape {
    /// `"schema"."table"`, quoted
    pub table: String,
    /// quoted column names
    pub columns: Vec<String>,
    pub key: Vec<KeyCol>,
    pub versions: Vec<VersionCol>,
    pub on_tie: OnTie,
}

impl Shape {
    fn col(&self, prefix: &str, i: usize) -> String {
        format!("{prefix}.{}", self.columns[i])
    }

    /// `stored` is older than `incoming`, a NULL stored version being older than any; compared
    /// left to right over the version columns, as a row comparison would, but NULL-aware.
    fn older(&self, stored: &str, incoming: &str, from: usize) -> String {
        let v = &self.versions[from];
        let s = self.col(stored, v.index);
        let i = self.col(incoming, v.index);
        let here = format!("{s} IS NULL OR {s} {} {i}", v.lt);
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
        let cols = self.columns.join(", ");
        let params: Vec<String> = (1..=self.columns.len()).map(|n| format!("${n}")).collect();
        let key: Vec<&str> = self.key.iter().map(|k| self.columns[k.index].as_str()).collect();
        let is_key = |i: usize| self.key.iter().any(|k| k.index == i);
        let set: Vec<String> = (0..self.columns.len())
            .filter(|&i| !is_key(i))
            .map(|i| format!("{c} = EXCLUDED.{c}", c = self.columns[i]))
            .collect();
        let excluded = |i: usize| self.col("EXCLUDED", i);
        let mut when = self.older("s", "EXCLUDED", 0);
        if self.on_tie == OnTie::Apply {
            when = format!(
                "{when} OR ({} AND NOT {})",
                self.same_version("s", &excluded),
                self.same_values("s", &excluded)
            );
        }
        format!(
            "INSERT INTO {table} AS s ({cols}) VALUES ({params}) \
             ON CONFLICT ({key}) DO UPDATE SET {set} WHERE {when} \
             RETURNING s.xmax OPERATOR(pg_catalog.=) 0",
            table = self.table,
            params = params.join(", "),
            key = key.join(", "),
            set = set.join(", "),
        )
    }

    /// Why the write was skipped: reads the stored row, which the skipped `ON CONFLICT DO
    /// UPDATE` has locked, so at READ COMMITTED this statement's fresh snapshot sees the very
    /// version that was compared. Returns (same version, same values, stored version as JSON text).
    pub fn classify_sql(&self) -> String {
        let param = |i: usize| format!("${}", i + 1);
        let stored_version = if self.versions.len() == 1 {
            format!("pg_catalog.to_jsonb({})::pg_catalog.text", self.col("s", self.versions[0].index))
        } else {
            let vs: Vec<String> = self.versions.iter().map(|v| self.col("s", v.index)).collect();
            format!("pg_catalog.jsonb_build_array({})::pg_catalog.text", vs.join(", "))
        };
        let key: Vec<String> = self
            .key
            .iter()
            .map(|k| format!("{} {} {}", self.col("s", k.index), k.eq, param(k.index)))
            .collect();
        format!(
            "SELECT {same_version}, {same_values}, {stored_version} FROM {table} s WHERE {key}",
            same_version = self.same_version("s", &param),
            same_values = self.same_values("s", &param),
            table = self.table,
            key = key.join(" AND "),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(on_tie: OnTie, versions: &[usize]) -> Shape {
        Shape {
            table: r#""public"."t""#.into(),
            columns: vec![r#""date""#.into(), r#""id""#.into(), r#""seq""#.into(), r#""value""#.into()],
            key: vec![KeyCol { index: 1, eq: "OPERATOR(pg_catalog.=)".into() }],
            versions: versions
                .iter()
                .map(|&index| VersionCol {
                    index,
                    lt: "OPERATOR(pg_catalog.<)".into(),
                    eq: "OPERATOR(pg_catalog.=)".into(),
                })
                .collect(),
            on_tie,
        }
    }

    #[test]
    fn upsert_replaces_only_older_rows() {
        assert_eq!(
            shape(OnTie::Skip, &[0]).upsert_sql(),
            r#"INSERT INTO "public"."t" AS s ("date", "id", "seq", "value") VALUES ($1, $2, $3, $4) ON CONFLICT ("id") DO UPDATE SET "date" = EXCLUDED."date", "seq" = EXCLUDED."seq", "value" = EXCLUDED."value" WHERE (s."date" IS NULL OR s."date" OPERATOR(pg_catalog.<) EXCLUDED."date") RETURNING s.xmax OPERATOR(pg_catalog.=) 0"#
        );
    }

    #[test]
    fn several_version_columns_compare_left_to_right() {
        let sql = shape(OnTie::Skip, &[0, 2]).upsert_sql();
        assert!(sql.contains(
            r#"WHERE (s."date" IS NULL OR s."date" OPERATOR(pg_catalog.<) EXCLUDED."date" OR (s."date" OPERATOR(pg_catalog.=) EXCLUDED."date" AND (s."seq" IS NULL OR s."seq" OPERATOR(pg_catalog.<) EXCLUDED."seq"))) RETURNING"#
        ), "{sql}");
    }

    #[test]
    fn apply_also_replaces_equal_versions_with_other_values() {
        let sql = shape(OnTie::Apply, &[0]).upsert_sql();
        assert!(sql.contains(
            r#"OR (s."date" OPERATOR(pg_catalog.=) EXCLUDED."date" AND NOT ROW(s."date", s."id", s."seq", s."value")::pg_catalog.record OPERATOR(pg_catalog.*=) ROW(EXCLUDED."date", EXCLUDED."id", EXCLUDED."seq", EXCLUDED."value")::pg_catalog.record)"#
        ), "{sql}");
    }

    #[test]
    fn classify_reads_the_stored_row_by_key() {
        assert_eq!(
            shape(OnTie::Skip, &[0, 2]).classify_sql(),
            r#"SELECT s."date" OPERATOR(pg_catalog.=) $1 AND s."seq" OPERATOR(pg_catalog.=) $3, ROW(s."date", s."id", s."seq", s."value")::pg_catalog.record OPERATOR(pg_catalog.*=) ROW($1, $2, $3, $4)::pg_catalog.record, pg_catalog.jsonb_build_array(s."date", s."seq")::pg_catalog.text FROM "public"."t" s WHERE s."id" OPERATOR(pg_catalog.=) $2"#
        );
    }

    #[test]
    fn on_tie_names() {
        assert_eq!(OnTie::parse("skip"), Some(OnTie::Skip));
        assert_eq!(OnTie::parse("apply"), Some(OnTie::Apply));
        assert_eq!(OnTie::parse("error"), Some(OnTie::Error));
        assert_eq!(OnTie::parse("Skip"), None);
    }
}
