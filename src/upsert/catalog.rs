//! Reads what a plan needs from the catalog: the table's name, the sent columns' types,
//! collations and input functions, the conflict key's unique index, the operators that order
//! versions, and the extension's own objects.
//!
//! Everything is read as PostgreSQL's own DML reads it: from the relcache and the syscache,
//! after the table lock is taken, through catalog snapshots. Never through SPI, whose queries
//! run under the statement's snapshot: a call that waited for the lock behind a committed
//! ALTER TABLE, or one at REPEATABLE READ, would otherwise describe the table as it was.

use pgrx::prelude::*;
use pgrx::PgTupleDesc;

use super::json_text::ColumnKind;
use super::statement::{Column, KeyCol, OnTie, Shape, VersionCol};
use crate::error;
use crate::tombstones::Registered;

/// A sent column: what converting its JSON value needs.
pub struct ColumnMeta {
    pub name: String,
    pub attnum: i16,
    pub typid: pg_sys::Oid,
    pub typmod: i32,
    pub kind: ColumnKind,
    /// the type's own name (`pg_type.typname`), for the error field drivers read
    pub type_name: String,
}

/// What a call asks for, before the catalog is consulted.
pub struct Request<'a> {
    pub relid: pg_sys::Oid,
    /// the row's keys, sorted: parameter order
    pub keys: Vec<&'a str>,
    pub version_cols: &'a [String],
    pub conflict_cols: Option<&'a [String]>,
    pub on_tie: OnTie,
    pub op: Op,
}

/// What a plan is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Upsert,
    /// `safe_delete`: of the row's keys, only the key and version columns are sent; the others
    /// must be columns, and are neither converted nor checked
    Delete,
}

struct Attr {
    name: String,
    attnum: i16,
    typid: pg_sys::Oid,
    typmod: i32,
    collation: pg_sys::Oid,
    not_null: bool,
    generated: Option<&'static str>,
}

/// A quoted identifier, as `quote_ident` gives it.
pub fn quoted(name: &str) -> String {
    let Ok(c) = std::ffi::CString::new(name) else { error::internal("a catalog name holds a NUL byte") };
    // SAFETY: quote_identifier returns its input or a palloc'd copy, both NUL-terminated.
    unsafe { owned(pg_sys::quote_identifier(c.as_ptr())) }.unwrap_or_default()
}

/// A `NameData` as text.
fn name_of(name: &pg_sys::NameData) -> String {
    // SAFETY: a NameData holds a NUL-terminated string.
    unsafe { std::ffi::CStr::from_ptr(name.data.as_ptr()) }.to_string_lossy().into_owned()
}

/// A schema's name, quoted.
fn quoted_namespace(nsp: pg_sys::Oid) -> String {
    // SAFETY: a syscache lookup; NULL when the schema is gone.
    let name = unsafe { owned(pg_sys::get_namespace_name(nsp)) };
    quoted(&name.unwrap_or_else(|| error::internal(&format!("schema {} not found", nsp.to_u32()))))
}

/// `schema.table`, quoted where needed: used both in messages and in generated SQL.
pub fn table_name(relid: pg_sys::Oid) -> String {
    syscache_table_name(relid).unwrap_or_else(|| error::table_missing(relid.to_u32()))
}

/// The table's schema and name, unquoted, for the error fields drivers read.
pub fn table_parts(relid: pg_sys::Oid) -> Option<(String, String)> {
    // SAFETY: syscache lookups inside a transaction; NULL when the table is gone.
    unsafe {
        let rel = owned(pg_sys::get_rel_name(relid))?;
        let nsp = owned(pg_sys::get_namespace_name(pg_sys::get_rel_namespace(relid)))?;
        Some((nsp, rel))
    }
}

/// The schema the extension is installed in, read through a catalog snapshot.
fn extension_schema() -> pg_sys::Oid {
    extension_row().0
}

/// The role that created the extension (a superuser, as the extension is not trusted): it makes
/// the tombstone tables, in the extension's schema `safe_upsert_data`.
pub fn extension_owner() -> pg_sys::Oid {
    match extension_row() {
        (nsp, owner) if nsp != pg_sys::InvalidOid => owner,
        _ => error::extension_object_missing("extension pg_safeupsert"),
    }
}

/// (schema, owner) of the extension, InvalidOid for both when it is not created.
fn extension_row() -> (pg_sys::Oid, pg_sys::Oid) {
    // SAFETY: a catalog scan of pg_extension by name, as get_extension_oid does; the tuple is
    // read before the scan ends.
    unsafe {
        let rel = pg_sys::table_open(pg_sys::ExtensionRelationId, pg_sys::AccessShareLock as i32);
        let mut key = pg_sys::ScanKeyData::default();
        pg_sys::ScanKeyInit(
            &mut key,
            pg_sys::Anum_pg_extension_extname as i16,
            pg_sys::BTEqualStrategyNumber as u16,
            pg_sys::regproc::from(pg_sys::F_NAMEEQ),
            pg_sys::Datum::from(c"pg_safeupsert".as_ptr()),
        );
        let scan = pg_sys::systable_beginscan(rel, pg_sys::Oid::from(pg_sys::ExtensionNameIndexId), true, std::ptr::null_mut(), 1, &mut key);
        let tuple = pg_sys::systable_getnext(scan);
        let nsp = if tuple.is_null() {
            (pg_sys::InvalidOid, pg_sys::InvalidOid)
        } else {
            let form = &*pg_sys::heap_tuple_get_struct::<pg_sys::FormData_pg_extension>(tuple);
            (form.extnamespace, form.extowner)
        };
        pg_sys::systable_endscan(scan);
        pg_sys::table_close(rel, pg_sys::AccessShareLock as i32);
        nsp
    }
}

/// The extension's `safe_upsert_kept`: its name, qualified by the extension's schema and
/// quoted, and its OID.
fn kept_function() -> (String, pg_sys::Oid, bool) {
    let nsp = extension_schema();
    if nsp == pg_sys::InvalidOid {
        error::extension_object_missing("function safe_upsert_kept");
    }
    // SAFETY: a syscache lookup; NULL when the schema is gone.
    let nspname = unsafe { pg_sys::get_namespace_name(nsp) };
    // SAFETY: `nspname` is NULL or a palloc'd string.
    let Some(schema) = (unsafe { owned(nspname) }).map(|n| quoted(&n)) else {
        error::extension_object_missing("function safe_upsert_kept")
    };
    // SAFETY: builds a qualified name list in the current context and looks it up in the
    // syscache; missing_ok answers InvalidOid instead of raising.
    let lookup = |args: &[pg_sys::Oid]| unsafe {
        let name = pg_sys::list_make2_impl(
            pg_sys::NodeTag::T_List,
            pg_sys::ListCell { ptr_value: pg_sys::makeString(nspname).cast() },
            pg_sys::ListCell { ptr_value: pg_sys::makeString(pg_sys::pstrdup(c"safe_upsert_kept".as_ptr())).cast() },
        );
        pg_sys::LookupFuncName(name, args.len() as i32, args.as_ptr(), true)
    };
    let oid = lookup(&[pg_sys::BOOLOID, pg_sys::BOOLOID, pg_sys::TEXTOID]);
    if oid == pg_sys::InvalidOid {
        error::extension_object_missing("function safe_upsert_kept");
    }
    // 0.2.0's form, comparing whole rows; a database still on 0.1.0's SQL has only the other
    let rows = lookup(&[pg_sys::BOOLOID, pg_sys::RECORDOID, pg_sys::RECORDOID, pg_sys::TEXTOID]) != pg_sys::InvalidOid;
    (format!("{schema}.safe_upsert_kept"), oid, rows)
}

/// The OIDs of the labels of the extension's `safe_upsert_outcome`, in the order given;
/// InvalidOid for a label the installed version of the type does not have (an older version's
/// SQL, used by a newer library until `ALTER EXTENSION ... UPDATE`).
pub fn outcome_label_oids<const N: usize>(labels: &[&str; N], required: usize) -> [pg_sys::Oid; N] {
    let missing = || error::extension_object_missing("type safe_upsert_outcome");
    let nsp = extension_schema();
    if nsp == pg_sys::InvalidOid {
        missing();
    }
    // SAFETY: syscache lookups by (name, schema) and (enum type, label).
    let typid = unsafe {
        pg_sys::GetSysCacheOid(
            pg_sys::SysCacheIdentifier::TYPENAMENSP as i32,
            pg_sys::Anum_pg_type_oid as i16,
            pg_sys::Datum::from(c"safe_upsert_outcome".as_ptr()),
            pg_sys::Datum::from(nsp),
            pg_sys::Datum::from(0),
            pg_sys::Datum::from(0),
        )
    };
    if typid == pg_sys::InvalidOid {
        missing();
    }
    let mut oids = [pg_sys::InvalidOid; N];
    for (oid, label) in oids.iter_mut().zip(labels) {
        let Ok(label) = std::ffi::CString::new(*label) else { missing() };
        // SAFETY: as above.
        *oid = unsafe {
            pg_sys::GetSysCacheOid(
                pg_sys::SysCacheIdentifier::ENUMTYPOIDNAME as i32,
                pg_sys::Anum_pg_enum_oid as i16,
                pg_sys::Datum::from(typid),
                pg_sys::Datum::from(label.as_ptr()),
                pg_sys::Datum::from(0),
                pg_sys::Datum::from(0),
            )
        };
    }
    if oids.iter().take(required).any(|&o| o == pg_sys::InvalidOid) {
        missing();
    }
    oids
}

/// The table's live columns, from its relcache entry. The caller holds a lock on the table.
fn attributes(relid: pg_sys::Oid) -> Vec<Attr> {
    // SAFETY: the caller holds a lock on the table, so it cannot go away; the tuple descriptor
    // is read before the relation is closed.
    unsafe {
        let rel = pg_sys::relation_open(relid, pg_sys::NoLock as i32);
        let desc = PgTupleDesc::from_pg_unchecked((*rel).rd_att);
        let attrs = desc
            .iter()
            .filter(|a| !a.attisdropped)
            .map(|a| Attr {
                name: name_of(&a.attname),
                attnum: a.attnum,
                typid: a.atttypid,
                typmod: a.atttypmod,
                collation: a.attcollation,
                not_null: a.attnotnull,
                generated: match (a.attgenerated as u8, a.attidentity as u8) {
                    (b's' | b'v', _) => Some("a generated column"),
                    (_, b'a') => Some("an identity column GENERATED ALWAYS"),
                    _ => None,
                },
            })
            .collect();
        drop(desc);
        pg_sys::relation_close(rel, pg_sys::NoLock as i32);
        attrs
    }
}

/// Unique indexes that `ON CONFLICT (cols)` can use as arbiters: valid, immediate, without
/// predicate or expressions. Returns (is primary, key attnums), primary first, then by OID.
fn arbiter_indexes(relid: pg_sys::Oid) -> Vec<(bool, pg_sys::Oid, Vec<i16>)> {
    let mut found = Vec::new();
    // SAFETY: as in `attributes`; each pg_index tuple comes from the syscache and is released
    // after its fields are copied.
    unsafe {
        let rel = pg_sys::relation_open(relid, pg_sys::NoLock as i32);
        let list = pg_sys::RelationGetIndexList(rel);
        let n = if list.is_null() { 0 } else { (*list).length };
        for i in 0..n {
            let index = pg_sys::list_nth_oid(list, i);
            let tuple = pg_sys::SearchSysCache1(pg_sys::SysCacheIdentifier::INDEXRELID as i32, pg_sys::Datum::from(index));
            if tuple.is_null() {
                continue;
            }
            let form = &*pg_sys::heap_tuple_get_struct::<pg_sys::FormData_pg_index>(tuple);
            let plain = pg_sys::heap_attisnull(tuple, pg_sys::Anum_pg_index_indexprs as i32, std::ptr::null_mut())
                && pg_sys::heap_attisnull(tuple, pg_sys::Anum_pg_index_indpred as i32, std::ptr::null_mut());
            if form.indisunique && form.indisvalid && form.indimmediate && plain {
                let keys = form.indkey.values.as_slice(form.indnkeyatts.max(0) as usize).to_vec();
                found.push((form.indisprimary, index, keys));
            }
            pg_sys::ReleaseSysCache(tuple);
        }
        pg_sys::relation_close(rel, pg_sys::NoLock as i32);
    }
    found.sort_by_key(|(primary, index, _)| (!primary, index.to_u32()));
    found
}

/// Reads the syscache row of `oid` in `cache`, whose catalog's fixed part is a `T`; None when
/// there is none.
///
/// # Safety
/// `T` is the struct of `cache`'s catalog.
unsafe fn syscache_row<T, R>(cache: pg_sys::SysCacheIdentifier::Type, oid: pg_sys::Oid, read: impl FnOnce(&T) -> R) -> Option<R> {
    // SAFETY: a syscache lookup inside a transaction; the row is read (`read` only copies) and
    // then released.
    unsafe {
        let tuple = pg_sys::SearchSysCache1(cache as i32, pg_sys::Datum::from(oid));
        if tuple.is_null() {
            return None;
        }
        let r = read(&*pg_sys::heap_tuple_get_struct::<T>(tuple));
        pg_sys::ReleaseSysCache(tuple);
        Some(r)
    }
}

/// `OPERATOR(schema.op)` for an operator OID.
fn qualified_operator(opr: pg_sys::Oid) -> String {
    // SAFETY: OPEROID rows are pg_operator's.
    let found = unsafe {
        syscache_row(pg_sys::SysCacheIdentifier::OPEROID, opr, |o: &pg_sys::FormData_pg_operator| (name_of(&o.oprname), o.oprnamespace))
    };
    let (name, nsp) = found.unwrap_or_else(|| error::internal(&format!("operator {} not found", opr.to_u32())));
    format!("OPERATOR({}.{name})", quoted_namespace(nsp))
}

/// `COLLATE schema.name` for a column's collation; None for a type without collations.
fn collate_clause(collation: pg_sys::Oid) -> Option<String> {
    if collation == pg_sys::InvalidOid {
        return None;
    }
    // SAFETY: COLLOID rows are pg_collation's.
    let found = unsafe {
        syscache_row(pg_sys::SysCacheIdentifier::COLLOID, collation, |c: &pg_sys::FormData_pg_collation| {
            (name_of(&c.collname), c.collnamespace)
        })
    };
    let (name, nsp) = found.unwrap_or_else(|| error::internal(&format!("collation {} not found", collation.to_u32())));
    Some(format!("COLLATE {}.{}", quoted_namespace(nsp), quoted(&name)))
}

/// A type as SQL names it, schema-qualified unless it is a built-in with an SQL name.
fn type_sql(typid: pg_sys::Oid, typmod: i32) -> String {
    let flags = (pg_sys::FORMAT_TYPE_TYPEMOD_GIVEN | pg_sys::FORMAT_TYPE_FORCE_QUALIFY) as u16;
    // SAFETY: the type exists (it is a column's type); the result is palloc'd.
    unsafe { owned(pg_sys::format_type_extended(typid, typmod, flags)) }.unwrap_or_default()
}

/// A type as messages name it, e.g. `character varying(20)`.
fn type_display(typid: pg_sys::Oid, typmod: i32) -> String {
    // SAFETY: as in `type_sql`.
    unsafe { owned(pg_sys::format_type_with_typemod(typid, typmod)) }.unwrap_or_default()
}

/// `pg_type.typname`.
fn type_name(typid: pg_sys::Oid) -> String {
    // SAFETY: TYPEOID rows are pg_type's.
    unsafe { syscache_row(pg_sys::SysCacheIdentifier::TYPEOID, typid, |t: &pg_sys::FormData_pg_type| name_of(&t.typname)) }
        .unwrap_or_default()
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

/// What `describe` finds: the statements' shape, the sent columns, the OID of
/// `safe_upsert_kept`, and the table's tombstones (registered, or what making them needs).
pub struct Described {
    pub shape: Shape,
    pub metas: Vec<ColumnMeta>,
    pub kept_oid: pg_sys::Oid,
    pub tombstones: Option<Registered>,
    pub tombstone_table: TombstoneTable,
}

/// The tombstone table a target would get: its key and version columns, in that order, as
/// (quoted name, type as SQL, COLLATE clause), their names, and the conflict key's index.
pub struct TombstoneTable {
    pub columns: Vec<(String, String, Option<String>)>,
    pub key_cols: Vec<String>,
    pub version_cols: Vec<String>,
    pub index: pg_sys::Oid,
}

/// Checks the request against the table and returns the statement shape and sent columns.
/// Every failure here is a caller's mistake and raises its documented error. The caller holds
/// a lock on the table.
pub fn describe(req: &Request<'_>) -> Described {
    let table = table_name(req.relid);
    let attrs = attributes(req.relid);
    let attr = |name: &str| attrs.iter().find(|a| a.name == name);

    let mut sent = Vec::with_capacity(req.keys.len());
    for key in &req.keys {
        let a = attr(key).unwrap_or_else(|| error::unknown_column(&table, key));
        if let (Some(how), Op::Upsert) = (a.generated, req.op) {
            error::generated_column(&table, &a.name, how);
        }
        sent.push(a);
    }

    let (index, key_attnums) = choose_key(req, &table, &attrs);
    let mut version_attrs = Vec::with_capacity(req.version_cols.len());
    for name in req.version_cols {
        let a = attr(name).unwrap_or_else(|| error::version_column_unknown(&table, name));
        if key_attnums.contains(&a.attnum) {
            error::version_column_is_key(&table, name);
        }
        version_attrs.push(a);
    }
    if req.op == Op::Delete {
        // a delete sends only what it compares: the key and the version
        sent.retain(|a| key_attnums.contains(&a.attnum) || version_attrs.iter().any(|v| v.attnum == a.attnum));
    }
    let position = |attnum: i16| sent.iter().position(|a| a.attnum == attnum);

    let mut key = Vec::with_capacity(key_attnums.len());
    let mut key_attrs = Vec::with_capacity(key_attnums.len());
    for attnum in &key_attnums {
        let Some(a) = attrs.iter().find(|a| a.attnum == *attnum) else {
            error::internal(&format!("column {attnum} of the key of table {table} not found"))
        };
        let index = position(*attnum).unwrap_or_else(|| error::key_missing(&table, &a.name));
        let (_, eq) = ordering_operators(a.typid).unwrap_or_else(|| {
            error::key_column_without_equality(&table, &a.name, &type_display(a.typid, a.typmod))
        });
        key.push(KeyCol { index, eq: qualified_operator(eq) });
        key_attrs.push(a);
    }

    let mut versions = Vec::with_capacity(version_attrs.len());
    for a in &version_attrs {
        let index = position(a.attnum).unwrap_or_else(|| error::version_missing(&table, &a.name));
        let (lt, eq) = ordering_operators(a.typid)
            .unwrap_or_else(|| error::version_column_unordered(&table, &a.name, &type_display(a.typid, a.typmod)));
        versions.push(VersionCol { index, lt: qualified_operator(lt), eq: qualified_operator(eq), not_null: a.not_null });
    }

    let tombstone_table = TombstoneTable {
        columns: key_attrs
            .iter()
            .chain(version_attrs.iter())
            .map(|a| (quoted(&a.name), type_sql(a.typid, a.typmod), collate_clause(a.collation)))
            .collect(),
        key_cols: key_attrs.iter().map(|a| a.name.clone()).collect(),
        version_cols: version_attrs.iter().map(|a| a.name.clone()).collect(),
        index,
    };
    let tombstones = crate::tombstones::find(req.relid);
    let tombstones_sql = tombstones.as_ref().map(|t| {
        check_tombstones(&table, t, &tombstone_table, &key_attrs, &version_attrs);
        table_name(t.side)
    });

    let (kept, kept_oid, kept_rows) = kept_function();
    let columns = sent
        .iter()
        .map(|a| Column {
            name: quoted(&a.name),
            collate: collate_clause(a.collation),
            // SAFETY: a plain syscache lookup on an existing type.
            text_cast: (unsafe { pg_sys::get_array_type(a.typid) } == pg_sys::InvalidOid).then(|| type_sql(a.typid, a.typmod)),
        })
        .collect();
    let shape = Shape { table, columns, key, versions, on_tie: req.on_tie, kept, kept_rows, tombstones: tombstones_sql };
    let metas = sent
        .iter()
        .map(|a| ColumnMeta {
            name: a.name.clone(),
            attnum: a.attnum,
            typid: a.typid,
            typmod: a.typmod,
            kind: column_kind(a.typid),
            type_name: type_name(a.typid),
        })
        .collect();
    Described { shape, metas, kept_oid, tombstones, tombstone_table }
}

/// A call on a table with tombstones must use the key and version columns they were kept for,
/// and those must still be of the tombstones' types and collations.
fn check_tombstones(table: &str, t: &Registered, wanted: &TombstoneTable, key: &[&Attr], versions: &[&Attr]) {
    let mut have_key = t.key_cols.clone();
    let mut want_key = wanted.key_cols.clone();
    have_key.sort();
    want_key.sort();
    if have_key != want_key || t.version_cols != wanted.version_cols {
        error::tombstones_of_other_columns(table, &t.key_cols, &t.version_cols, &wanted.key_cols, &wanted.version_cols);
    }
    let side = attributes(t.side);
    for a in key.iter().chain(versions) {
        let same = side
            .iter()
            .any(|s| s.name == a.name && s.typid == a.typid && s.typmod == a.typmod && s.collation == a.collation);
        if !same {
            error::tombstones_compare_otherwise(table, &a.name);
        }
    }
}

/// The owner of a relation, from the syscache; None if it is gone.
pub fn relation_owner(relid: pg_sys::Oid) -> Option<pg_sys::Oid> {
    // SAFETY: RELOID rows are pg_class's.
    unsafe { syscache_row(pg_sys::SysCacheIdentifier::RELOID, relid, |c: &pg_sys::FormData_pg_class| c.relowner) }
}

/// A role's name, quoted.
pub fn role_name(role: pg_sys::Oid) -> String {
    // SAFETY: raises if the role is gone, which cannot be for an object's owner.
    quoted(&unsafe { owned(pg_sys::GetUserNameFromId(role, false)) }.unwrap_or_default())
}

/// The conflict key: its unique index and attnums, of the primary key or of the unique index
/// whose columns are exactly `conflict_cols`.
fn choose_key(req: &Request<'_>, table: &str, attrs: &[Attr]) -> (pg_sys::Oid, Vec<i16>) {
    let indexes = arbiter_indexes(req.relid);
    match req.conflict_cols {
        None => indexes
            .into_iter()
            .find(|(primary, _, _)| *primary)
            .map(|(_, index, cols)| (index, cols))
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
                .find(|(_, _, cols)| {
                    let mut cols = cols.clone();
                    cols.sort_unstable();
                    cols == wanted
                })
                .map(|(_, index, cols)| (index, cols))
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
    table_parts(relid).map(|(nsp, rel)| format!("{}.{}", quoted(&nsp), quoted(&rel)))
}

/// Whether the table has row-level security enabled (`relrowsecurity`), read from the syscache;
/// true when it cannot be read, so that nothing is shown by mistake.
pub fn has_row_security(relid: pg_sys::Oid) -> bool {
    // SAFETY: RELOID rows are pg_class's.
    unsafe { syscache_row(pg_sys::SysCacheIdentifier::RELOID, relid, |c: &pg_sys::FormData_pg_class| c.relrowsecurity) }
        .unwrap_or(true)
}

/// Whether row-level security applies to this role on the table (as `check_enable_rls` says:
/// not to its owner without FORCE, a superuser, or a BYPASSRLS role): then its policies may hide
/// rows from the role, and the conflict log shows it no row data.
pub fn row_security_applies(relid: pg_sys::Oid) -> bool {
    // SAFETY: with noError, a missing table or an unset row_security answers instead of raising.
    let r = unsafe { pg_sys::check_enable_rls(relid, pg_sys::InvalidOid, true) };
    r as u32 == pg_sys::CheckEnableRlsResult::RLS_ENABLED
}
