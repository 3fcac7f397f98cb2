//! Reads what a plan needs from the catalog: the table's name, the sent columns' types and
//! input functions, the conflict key's unique index, and the operators that order versions.
//! Runs only when the plan cache misses, so it favours plain SQL over speed.

use pgrx::prelude::*;
use pgrx::spi::SpiClient;

use super::json_text::ColumnKind;
use super::statement::{KeyCol, OnTie, Shape, VersionCol};
use crate::error;

/// A sent column: what converting its JSON value needs.
pub struct ColumnMeta {
    pub name: String,
    pub typid: pg_sys::Oid,
    pub typmod: i32,
    pub kind: ColumnKind,
}

/// What a call asks for, before the catalog is consulted.
pub struct Request<'a> {
    pub relid: pg_sys::Oid,
    /// the row's keys, sorted: parameter order
    pub keys: Vec<&'a str>,
    pub version_cols: &'a [String],
    pub conflict_cols: Option<&'a [String]>,
    pub on_tie: OnTie,
}

struct Attr {
    name: String,
    quoted: String,
    attnum: i16,
    typid: pg_sys::Oid,
    typmod: i32,
    generated: Option<&'static str>,
    type_name: String,
}

/// The one text value a catalog query returns for an OID, if any. Like every query here, the
/// SQL qualifies each operator, function and type, so the caller's search_path cannot change
/// what it reads.
fn text_for_oid(client: &SpiClient<'_>, sql: &str, oid: pg_sys::Oid) -> Option<String> {
    client.select(sql, Some(1), &[oid.into()]).and_then(|t| t.first().get_one::<String>()).ok().flatten()
}

/// Column `n` of a catalog row, which the query guarantees is not null.
fn column<T: pgrx::datum::FromDatum + pgrx::datum::IntoDatum>(row: &pgrx::spi::SpiHeapTupleData<'_>, n: usize) -> T {
    match row.get::<T>(n) {
        Ok(Some(v)) => v,
        Ok(None) => error::internal(&format!("catalog column {n} is null")),
        Err(e) => error::catalog_read_failed("a catalog column", &e),
    }
}

/// `schema.table`, quoted where needed: used both in messages and in generated SQL.
pub fn qualified_table_name(client: &SpiClient<'_>, relid: pg_sys::Oid) -> Option<String> {
    text_for_oid(
        client,
        "SELECT pg_catalog.format('%I.%I', n.nspname, c.relname) \
         FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace \
         WHERE c.oid OPERATOR(pg_catalog.=) $1",
        relid,
    )
}

/// `qualified_table_name`, or the documented error when the table does not exist.
pub fn table_name(client: &SpiClient<'_>, relid: pg_sys::Oid) -> String {
    qualified_table_name(client, relid).unwrap_or_else(|| error::table_missing(relid.to_u32()))
}

/// The extension's `safe_upsert_kept`: its name, qualified by the extension's schema and
/// quoted, and its OID.
fn kept_function(client: &SpiClient<'_>) -> (String, pg_sys::Oid) {
    let row = client
        .select(
            "SELECT pg_catalog.format('%I.%I', n.nspname, p.proname), p.oid \
             FROM pg_catalog.pg_extension x \
             JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) x.extnamespace \
             JOIN pg_catalog.pg_proc p ON p.pronamespace OPERATOR(pg_catalog.=) n.oid \
             WHERE x.extname OPERATOR(pg_catalog.=) 'pg_safeupsert' \
               AND p.proname OPERATOR(pg_catalog.=) 'safe_upsert_kept'",
            Some(1),
            &[],
        )
        .unwrap_or_else(|e| error::catalog_read_failed("pg_proc", &e));
    let row = row.first();
    match (row.get::<String>(1).ok().flatten(), row.get::<pg_sys::Oid>(2).ok().flatten()) {
        (Some(name), Some(oid)) => (name, oid),
        _ => error::extension_object_missing("function safe_upsert_kept"),
    }
}

fn attributes(client: &SpiClient<'_>, relid: pg_sys::Oid) -> Vec<Attr> {
    let rows = client
        .select(
            "SELECT a.attname::pg_catalog.text, pg_catalog.quote_ident(a.attname), a.attnum, a.atttypid, \
                    a.atttypmod, a.attgenerated::pg_catalog.text, a.attidentity::pg_catalog.text, \
                    pg_catalog.format_type(a.atttypid, a.atttypmod) \
             FROM pg_catalog.pg_attribute a \
             WHERE a.attrelid OPERATOR(pg_catalog.=) $1 AND a.attnum OPERATOR(pg_catalog.>) 0 \
               AND NOT a.attisdropped ORDER BY a.attnum",
            None,
            &[relid.into()],
        )
        .unwrap_or_else(|e| error::catalog_read_failed("pg_attribute", &e));
    rows.map(|r| {
        let generated = match (r.get::<String>(6).ok().flatten(), r.get::<String>(7).ok().flatten()) {
            (Some(g), _) if g == "s" || g == "v" => Some("a generated column"),
            (_, Some(i)) if i == "a" => Some("an identity column GENERATED ALWAYS"),
            _ => None,
        };
        Attr {
            name: column(&r, 1),
            quoted: column(&r, 2),
            attnum: column(&r, 3),
            typid: column(&r, 4),
            typmod: column(&r, 5),
            generated,
            type_name: column(&r, 8),
        }
    })
    .collect()
}

/// Unique indexes that `ON CONFLICT (cols)` can use as arbiters: valid, immediate, without
/// predicate or expressions. Returns (is primary, attnums).
fn arbiter_indexes(client: &SpiClient<'_>, relid: pg_sys::Oid) -> Vec<(bool, Vec<i16>)> {
    let rows = client
        .select(
            "SELECT i.indisprimary, i.indkey::pg_catalog.int2[] FROM pg_catalog.pg_index i \
             WHERE i.indrelid OPERATOR(pg_catalog.=) $1 AND i.indisunique AND i.indisvalid AND i.indimmediate \
               AND i.indpred IS NULL AND i.indexprs IS NULL \
             ORDER BY i.indisprimary DESC, i.indexrelid",
            None,
            &[relid.into()],
        )
        .unwrap_or_else(|e| error::catalog_read_failed("pg_index", &e));
    rows.map(|r| (column(&r, 1), column(&r, 2)))
        .collect()
}

/// `OPERATOR(schema.op)` for an operator OID.
fn qualified_operator(client: &SpiClient<'_>, opr: pg_sys::Oid) -> String {
    text_for_oid(
        client,
        "SELECT pg_catalog.format('OPERATOR(%I.%s)', n.nspname, o.oprname) \
         FROM pg_catalog.pg_operator o JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) o.oprnamespace \
         WHERE o.oid OPERATOR(pg_catalog.=) $1",
        opr,
    )
    .unwrap_or_else(|| error::internal(&format!("operator {} not found", opr.to_u32())))
}

/// The (less-than, equal) operators of a type's default btree ordering, if it has one.
fn ordering_operators(typid: pg_sys::Oid) -> Option<(pg_sys::Oid, pg_sys::Oid)> {
    let flags = (pg_sys::TYPECACHE_LT_OPR | pg_sys::TYPECACHE_EQ_OPR) as i32;
    // SAFETY: the type exists (it is a column's type); the entry lives in the type cache.
    let entry = unsafe { &*pg_sys::lookup_type_cache(typid, flags) };
    (entry.lt_opr != pg_sys::InvalidOid && entry.eq_opr != pg_sys::InvalidOid)
        .then_some((entry.lt_opr, entry.eq_opr))
}

fn column_kind(typid: pg_sys::Oid) -> ColumnKind {
    // SAFETY: plain syscache lookups on an existing type.
    let base = unsafe { pg_sys::getBaseType(typid) };
    if base == pg_sys::JSONOID || base == pg_sys::JSONBOID {
        ColumnKind::Json
    // SAFETY: a plain syscache lookup on an existing type.
    } else if unsafe { pg_sys::get_element_type(base) } != pg_sys::InvalidOid {
        ColumnKind::Array
    } else {
        ColumnKind::Other
    }
}

/// Checks the request against the table and returns the statement shape and sent columns.
/// Every failure here is a caller's mistake and raises its documented error.
pub fn describe(client: &SpiClient<'_>, req: &Request<'_>) -> (Shape, Vec<ColumnMeta>, pg_sys::Oid) {
    let table = table_name(client, req.relid);
    let attrs = attributes(client, req.relid);
    let attr = |name: &str| attrs.iter().find(|a| a.name == name);

    let mut sent = Vec::with_capacity(req.keys.len());
    for key in &req.keys {
        let a = attr(key).unwrap_or_else(|| error::unknown_column(&table, key));
        if let Some(how) = a.generated {
            error::generated_column(&table, &a.name, how);
        }
        sent.push(a);
    }
    let position = |attnum: i16| sent.iter().position(|a| a.attnum == attnum);

    let key_attnums = choose_key(client, req, &table, &attrs);
    let mut key = Vec::with_capacity(key_attnums.len());
    for attnum in &key_attnums {
        let Some(a) = attrs.iter().find(|a| a.attnum == *attnum) else {
            error::internal(&format!("column {attnum} of the key of table {table} not found"))
        };
        let index = position(*attnum).unwrap_or_else(|| error::key_missing(&table, &a.name));
        let (_, eq) = ordering_operators(a.typid)
            .unwrap_or_else(|| error::key_column_without_equality(&table, &a.name, &a.type_name));
        key.push(KeyCol { index, eq: qualified_operator(client, eq) });
    }

    let mut versions = Vec::with_capacity(req.version_cols.len());
    for name in req.version_cols {
        let a = attr(name).unwrap_or_else(|| error::version_column_unknown(&table, name));
        if key_attnums.contains(&a.attnum) {
            error::version_column_is_key(&table, name);
        }
        let index = position(a.attnum).unwrap_or_else(|| error::version_missing(&table, name));
        let (lt, eq) = ordering_operators(a.typid)
            .unwrap_or_else(|| error::version_column_unordered(&table, name, &a.type_name));
        versions.push(VersionCol {
            index,
            lt: qualified_operator(client, lt),
            eq: qualified_operator(client, eq),
        });
    }

    let (kept, kept_oid) = kept_function(client);
    let shape = Shape {
        table: table.clone(),
        columns: sent.iter().map(|a| a.quoted.clone()).collect(),
        key,
        versions,
        on_tie: req.on_tie,
        kept,
    };
    let metas = sent
        .iter()
        .map(|a| ColumnMeta {
            name: a.name.clone(),
            typid: a.typid,
            typmod: a.typmod,
            kind: column_kind(a.typid),
        })
        .collect();
    (shape, metas, kept_oid)
}

/// The attnums of the conflict key: the primary key, or the unique index whose columns are
/// exactly `conflict_cols`.
fn choose_key(client: &SpiClient<'_>, req: &Request<'_>, table: &str, attrs: &[Attr]) -> Vec<i16> {
    let indexes = arbiter_indexes(client, req.relid);
    match req.conflict_cols {
        None => indexes
            .into_iter()
            .find(|(primary, _)| *primary)
            .map(|(_, cols)| cols)
            .unwrap_or_else(|| error::no_primary_key(table)),
        Some(names) => {
            let mut wanted: Vec<i16> = names
                .iter()
                .map(|n| {
                    attrs
                        .iter()
                        .find(|a| &a.name == n)
                        .map(|a| a.attnum)
                        .unwrap_or_else(|| error::conflict_column_unknown(table, n))
                })
                .collect();
            wanted.sort_unstable();
            wanted.dedup();
            indexes
                .into_iter()
                .map(|(_, mut cols)| {
                    cols.sort_unstable();
                    cols
                })
                .find(|cols| *cols == wanted)
                .unwrap_or_else(|| error::no_unique_index(table, &names.join(", ")))
        }
    }
}

/// A palloc'd C string from the catalog, copied; None for NULL (the object is gone).
///
/// # Safety
/// `s` is NULL or a NUL-terminated string.
pub unsafe fn owned(s: *const std::ffi::c_char) -> Option<String> {
    // SAFETY: the caller's contract.
    (!s.is_null()).then(|| unsafe { std::ffi::CStr::from_ptr(s) }.to_string_lossy().into_owned())
}

/// `schema.table`, each part quoted where needed, as `quote_ident` does, read from the
/// syscache (no SQL); None if dropped.
pub fn syscache_table_name(relid: pg_sys::Oid) -> Option<String> {
    // SAFETY: syscache lookups inside a transaction; quote_identifier returns its input or a
    // palloc'd copy.
    unsafe {
        let rel = pg_sys::get_rel_name(relid);
        let nsp = pg_sys::get_namespace_name(pg_sys::get_rel_namespace(relid));
        if rel.is_null() || nsp.is_null() {
            return None;
        }
        Some(format!("{}.{}", owned(pg_sys::quote_identifier(nsp))?, owned(pg_sys::quote_identifier(rel))?))
    }
}

/// Whether the table has row-level security enabled (`relrowsecurity`), read from the syscache;
/// true when it cannot be read, so that nothing is shown by mistake.
pub fn has_row_security(relid: pg_sys::Oid) -> bool {
    // SAFETY: a syscache lookup inside a transaction; the tuple is a pg_class row, released here.
    unsafe {
        let tuple = pg_sys::SearchSysCache1(pg_sys::SysCacheIdentifier::RELOID as i32, pg_sys::Datum::from(relid));
        if tuple.is_null() {
            return true;
        }
        let form = pg_sys::heap_tuple_get_struct::<pg_sys::FormData_pg_class>(tuple);
        let rls = (*form).relrowsecurity;
        pg_sys::ReleaseSysCache(tuple);
        rls
    }
}
