//! Tombstones: the versions of deleted keys, kept as data so that a late, older write cannot
//! bring a deleted row back.
//!
//! Each target gets its own tombstone table, made by its first `safe_delete`, in the schema
//! `safe_upsert_data`: the target's key and version columns under the same names, types and
//! collations, plus `safe_upsert_deleted_at`, with the target's conflict key as unique index.
//! Versions and keys therefore compare exactly as the target's do, the table is dumped and
//! restored like any other (the registry `safe_upsert_data.tombstone_tables` names both tables
//! by `regclass`, which pg_dump writes as names), and on Citus it can be distributed and
//! colocated with its target by the same key. A target without tombstones has no such table,
//! and its upserts pay nothing.
//!
//! The tombstone table belongs to the target's owner, and statements on it run as that owner,
//! as PostgreSQL's foreign-key checks do: the caller's rights are checked on the target itself.

pub mod ddl;

use std::ffi::CStr;

use pgrx::prelude::*;
use pgrx::JsonB;

use crate::error;
use crate::upsert::catalog::{self, TombstoneTable};
use crate::upsert::text_datum;

/// Where the registry lives.
pub const SCHEMA: &CStr = c"safe_upsert_data";
const REGISTRY: &CStr = c"tombstone_tables";

/// A target's registered tombstone table.
#[derive(Clone, Debug)]
pub struct Registered {
    pub side: pg_sys::Oid,
    pub owner: pg_sys::Oid,
    pub key_cols: Vec<String>,
    pub version_cols: Vec<String>,
}

/// The registry table's OID; None when the installed SQL predates tombstones.
fn registry() -> Option<pg_sys::Oid> {
    // SAFETY: syscache lookups by name.
    unsafe {
        let nsp = pg_sys::get_namespace_oid(SCHEMA.as_ptr(), true);
        if nsp == pg_sys::InvalidOid {
            return None;
        }
        let rel = pg_sys::get_relname_relid(REGISTRY.as_ptr(), nsp);
        (rel != pg_sys::InvalidOid).then_some(rel)
    }
}

/// The tombstone table of `relid`, read with a fresh snapshot (not the statement's, which at
/// REPEATABLE READ could predate the table's first delete).
pub fn find(relid: pg_sys::Oid) -> Option<Registered> {
    scan(Some(relid)).pop().map(|(_, t)| t)
}

/// The registry's rows, (target, its tombstones): of one target, or of all, in the order of
/// their targets. A row whose tombstone table is gone is left out.
fn scan(target: Option<pg_sys::Oid>) -> Vec<(pg_sys::Oid, Registered)> {
    let Some(registry) = registry() else { return Vec::new() };
    let mut found = Vec::new();
    // SAFETY: a heap scan of the registry with a registered snapshot, keyed on the target when
    // one is given; each tuple's attributes are copied before the next is fetched.
    unsafe {
        let rel = pg_sys::table_open(registry, pg_sys::AccessShareLock as i32);
        let snapshot = pg_sys::RegisterSnapshot(pg_sys::GetLatestSnapshot());
        let mut key = pg_sys::ScanKeyData::default();
        if let Some(relid) = target {
            pg_sys::ScanKeyInit(&mut key, 1, pg_sys::BTEqualStrategyNumber as u16, pg_sys::regproc::from(pg_sys::F_OIDEQ), pg_sys::Datum::from(relid));
        }
        let scan = pg_sys::systable_beginscan(rel, pg_sys::InvalidOid, false, snapshot, target.is_some() as i32, &mut key);
        let desc = (*rel).rd_att;
        loop {
            let tuple = pg_sys::systable_getnext(scan);
            if tuple.is_null() {
                break;
            }
            let attr = |n: i32| {
                let mut isnull = false;
                let d = pg_sys::heap_getattr(tuple, n, desc, &mut isnull);
                (!isnull).then_some(d)
            };
            if let (Some(target), Some(side), Some(keys), Some(versions)) = (attr(1), attr(2), attr(3), attr(4)) {
                found.push((
                    pg_sys::Oid::from(target.value() as u32),
                    pg_sys::Oid::from(side.value() as u32),
                    crate::upsert::name_array(keys, "key_cols"),
                    crate::upsert::name_array(versions, "version_cols"),
                ));
            }
        }
        pg_sys::systable_endscan(scan);
        pg_sys::UnregisterSnapshot(snapshot);
        pg_sys::table_close(rel, pg_sys::AccessShareLock as i32);
    }
    found.sort_by_key(|(target, ..)| target.to_u32());
    found
        .into_iter()
        .filter_map(|(target, side, key_cols, version_cols)| {
            let owner = catalog::relation_owner(side)?;
            Some((target, Registered { side, owner, key_cols, version_cols }))
        })
        .collect()
}

/// Runs `f` as `role`, the way foreign-key checks run as a table's owner: the change is local
/// (undone at the end, also when `f` raises an error) and row security is not forced.
pub fn as_role<R>(role: pg_sys::Oid, f: impl FnOnce() -> R) -> R {
    struct Restore(pg_sys::Oid, i32);
    impl Drop for Restore {
        fn drop(&mut self) {
            // SAFETY: restores what GetUserIdAndSecContext returned below.
            unsafe { pg_sys::SetUserIdAndSecContext(self.0, self.1) };
        }
    }
    let (mut user, mut context) = (pg_sys::InvalidOid, 0);
    // SAFETY: reads and sets this backend's current user, as ri_triggers.c does.
    unsafe {
        pg_sys::GetUserIdAndSecContext(&mut user, &mut context);
        pg_sys::SetUserIdAndSecContext(
            role,
            context | (pg_sys::SECURITY_LOCAL_USERID_CHANGE | pg_sys::SECURITY_NOFORCE_RLS) as i32,
        );
    }
    let _restore = Restore(user, context);
    f()
}

/// Runs a statement with parameters inside an SPI connection; returns the rows processed.
pub fn execute(sql: &str, args: &[(pg_sys::Oid, pg_sys::Datum)]) -> u64 {
    let Ok(sql) = std::ffi::CString::new(sql) else { error::internal("generated SQL holds a NUL byte") };
    let mut types: Vec<pg_sys::Oid> = args.iter().map(|a| a.0).collect();
    let mut values: Vec<pg_sys::Datum> = args.iter().map(|a| a.1).collect();
    // SAFETY: inside an SPI connection; one type and value per parameter, none NULL.
    unsafe {
        let rc = pg_sys::SPI_execute_with_args(
            sql.as_ptr(),
            args.len() as i32,
            types.as_mut_ptr(),
            values.as_mut_ptr(),
            std::ptr::null(),
            false,
            0,
        );
        if rc < 0 {
            error::spi_failed("SPI_execute_with_args", rc);
        }
        pg_sys::SPI_processed
    }
}

/// Makes the target's tombstone table, unless another transaction made it while this one
/// waited. Takes SHARE ROW EXCLUSIVE on the target until commit: upserts that began without
/// knowing of tombstones finish first, and later ones rebuild their plans (the relcache
/// invalidation sent here) before they write.
pub fn create(relid: pg_sys::Oid, new: &TombstoneTable) {
    // SAFETY: the target exists (the caller holds a lock on it).
    unsafe { pg_sys::LockRelationOid(relid, pg_sys::ShareRowExclusiveLock as i32) };
    if find(relid).is_some() {
        return;
    }
    let Some(registry) = registry() else { error::extension_object_missing("table safe_upsert_data.tombstone_tables") };
    let (nsp, relname) = catalog::table_parts(relid).unwrap_or_else(|| error::table_missing(relid.to_u32()));
    let name = free_name(&relname);
    let side = format!("{}.{}", catalog::quoted(&SCHEMA.to_string_lossy()), catalog::quoted(&name));
    let owner = catalog::relation_owner(relid).unwrap_or_else(|| error::table_missing(relid.to_u32()));
    let index_cols = as_role(catalog::extension_owner(), || index_columns(new.index, new.key_cols.len()));
    let statements = ddl::create_table(&side, &new.columns, &index_cols, &format!("{nsp}.{relname}"), &catalog::role_name(owner));
    as_role(catalog::extension_owner(), || {
        for sql in &statements {
            execute(sql, &[]);
        }
        let registry_name = catalog::table_name(registry);
        execute(
            &format!(
                "INSERT INTO {registry_name} (target, tombstones, key_cols, version_cols) \
                 VALUES ($1::pg_catalog.regclass, $2::pg_catalog.regclass, $3::pg_catalog.name[], $4::pg_catalog.name[])"
            ),
            &[
                (pg_sys::OIDOID, pg_sys::Datum::from(relid)),
                (pg_sys::TEXTOID, text_datum(&side)),
                (pg_sys::TEXTOID, text_datum(&ddl::array_literal(&new.key_cols))),
                (pg_sys::TEXTOID, text_datum(&ddl::array_literal(&new.version_cols))),
            ],
        );
    });
    // SAFETY: queues an invalidation, sent at commit, for every backend's plans of the target.
    unsafe { pg_sys::CacheInvalidateRelcacheByRelid(relid) };
    // SAFETY: makes this transaction's own catalog changes visible to its next lookups.
    unsafe { pg_sys::CommandCounterIncrement() };
}

/// `<table>_tombstones` (the table's name cut to leave room), numbered if that name is taken.
fn free_name(relname: &str) -> String {
    let mut base: String = relname.to_string();
    while base.len() > 40 {
        base.pop();
    }
    // SAFETY: syscache lookups by name.
    let nsp = unsafe { pg_sys::get_namespace_oid(SCHEMA.as_ptr(), false) };
    for n in 1.. {
        let name = if n == 1 { format!("{base}_tombstones") } else { format!("{base}_tombstones_{n}") };
        let Ok(c) = std::ffi::CString::new(name.as_str()) else { error::internal("a table name holds a NUL byte") };
        // SAFETY: a syscache lookup by name.
        if unsafe { pg_sys::get_relname_relid(c.as_ptr(), nsp) } == pg_sys::InvalidOid {
            return name;
        }
    }
    unreachable!()
}

/// The conflict key's index columns as CREATE INDEX writes them (name, and the collation and
/// operator class where they differ from the column's defaults), joined by commas.
fn index_columns(index: pg_sys::Oid, n: usize) -> String {
    let sql = "SELECT pg_catalog.string_agg(pg_catalog.pg_get_indexdef($1, n, false), ', ' ORDER BY n) \
               FROM pg_catalog.generate_series(1, $2) AS n";
    execute(sql, &[(pg_sys::OIDOID, pg_sys::Datum::from(index)), (pg_sys::INT4OID, pg_sys::Datum::from(n as i32))]);
    // SAFETY: the statement returned one row of one text column.
    unsafe { crate::upsert::cell::<String>(0, 1) }.unwrap_or_else(|| error::internal("index columns not found"))
}

extension_sql!(
    r#"
CREATE SCHEMA safe_upsert_data;
COMMENT ON SCHEMA safe_upsert_data IS 'pg_safeupsert: the tombstone tables, one per table with versioned deletes';
-- each tombstone table belongs to its target's owner, who works on it through this schema;
-- the tables themselves grant nothing to anyone else
GRANT USAGE ON SCHEMA safe_upsert_data TO PUBLIC;
CREATE TABLE safe_upsert_data.tombstone_tables (
    target regclass PRIMARY KEY,
    tombstones regclass NOT NULL UNIQUE,
    key_cols name[] NOT NULL,
    version_cols name[] NOT NULL
);
COMMENT ON TABLE safe_upsert_data.tombstone_tables IS 'pg_safeupsert: which table keeps the tombstones of which target';
REVOKE ALL ON safe_upsert_data.tombstone_tables FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('safe_upsert_data.tombstone_tables', '');

-- A dropped target takes its tombstones along; a dropped tombstone table leaves the registry.
CREATE FUNCTION safe_upsert_data.on_drop() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT t.target, t.tombstones, d.objid = t.tombstones::oid AS side_dropped
        FROM pg_event_trigger_dropped_objects() d
        JOIN safe_upsert_data.tombstone_tables t ON d.objid IN (t.target::oid, t.tombstones::oid)
        WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objsubid = 0
    LOOP
        DELETE FROM safe_upsert_data.tombstone_tables WHERE target::oid = r.target::oid;
        IF NOT r.side_dropped AND pg_catalog.to_regclass(r.tombstones::text) IS NOT NULL THEN
            EXECUTE pg_catalog.format('DROP TABLE %s', r.tombstones);
        END IF;
    END LOOP;
    -- a key or version column dropped from a target that keeps tombstones
    FOR r IN
        SELECT t.target, d.address_names[3] AS col
        FROM pg_event_trigger_dropped_objects() d
        JOIN safe_upsert_data.tombstone_tables t ON d.objid = t.target::oid
        WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objsubid <> 0
          AND d.address_names[3] = ANY (t.key_cols || t.version_cols)
    LOOP
        RAISE EXCEPTION 'cannot drop column "%" of table %: its tombstones compare it', r.col, r.target
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = pg_catalog.format('Remove the tombstones first: SELECT safe_upsert_purge_tombstones(%L);', r.target::text);
    END LOOP;
END
$$;
CREATE EVENT TRIGGER safe_upsert_on_drop ON sql_drop EXECUTE FUNCTION safe_upsert_data.on_drop();

-- ALTER TABLE on a key or version column of a target that keeps tombstones: refused, since the
-- tombstones would no longer compare as the table does.
CREATE FUNCTION safe_upsert_data.on_alter() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT t.target, a.attname
        FROM (SELECT DISTINCT objid FROM pg_event_trigger_ddl_commands()
              WHERE classid = 'pg_catalog.pg_class'::regclass) c
        JOIN safe_upsert_data.tombstone_tables t ON t.target::oid = c.objid
        JOIN pg_attribute a ON a.attrelid = t.tombstones::oid AND a.attnum > 0 AND NOT a.attisdropped
        LEFT JOIN pg_attribute b ON b.attrelid = t.target::oid AND b.attname = a.attname AND NOT b.attisdropped
        WHERE a.attname = ANY (t.key_cols || t.version_cols)
          AND (b.attname IS NULL OR b.atttypid <> a.atttypid OR b.atttypmod <> a.atttypmod
               OR b.attcollation <> a.attcollation)
    LOOP
        RAISE EXCEPTION 'cannot change column "%" of table %: its tombstones compare it', r.attname, r.target
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'A renamed, retyped or dropped key or version column would leave tombstones that compare wrong.',
                  HINT = pg_catalog.format('Remove the tombstones first: SELECT safe_upsert_purge_tombstones(%L);', r.target::text);
    END LOOP;
END
$$;
CREATE EVENT TRIGGER safe_upsert_on_alter ON ddl_command_end WHEN TAG IN ('ALTER TABLE')
    EXECUTE FUNCTION safe_upsert_data.on_alter();
"#,
    name = "tombstone_tables",
);

/// Whether the current user owns the table; false for one that is gone (a registry row left
/// behind by a drop that ran with event triggers off).
fn owns(relid: pg_sys::Oid) -> bool {
    // SAFETY: a syscache lookup.
    if unsafe { pg_sys::get_rel_relkind(relid) } == 0 {
        return false;
    }
    // SAFETY: an ownership check of an existing table for the current user.
    unsafe {
        #[cfg(feature = "pg15")]
        return pg_sys::pg_class_ownercheck(relid, pg_sys::GetUserId());
        #[cfg(not(feature = "pg15"))]
        return pg_sys::object_ownercheck(pg_sys::RelationRelationId, relid, pg_sys::GetUserId());
    }
}

/// Removes tombstones: of one table or of every table the caller owns; all of them, or those
/// deleted longer ago than `older_than`. Removing all of a table's drops its tombstone table,
/// so that its upserts pay nothing again and its key and version columns may be altered.
#[pg_extern(sql = false)]
fn safe_upsert_purge_tombstones(target: Option<pg_sys::Oid>, older_than: Option<Interval>) -> i64 {
    crate::require_preload();
    if let Some(t) = target {
        let name = catalog::syscache_table_name(t).unwrap_or_else(|| error::table_missing(t.to_u32()));
        if !owns(t) {
            error::purge_not_owner(&name);
        }
    }
    Spi::connect(|_| {
        let mut removed = 0i64;
        for (target, Registered { side, owner, .. }) in scan(target) {
            if !owns(target) {
                continue;
            }
            let side_name = catalog::table_name(side);
            removed += match older_than {
                Some(age) => as_role(owner, || {
                    execute(
                        &format!(
                            "DELETE FROM {side_name} WHERE {} OPERATOR(pg_catalog.<) \
                             (pg_catalog.statement_timestamp() OPERATOR(pg_catalog.-) $1)",
                            crate::upsert::statement::tombstone::DELETED_AT
                        ),
                        &[(pg_sys::INTERVALOID, age.into_datum().unwrap_or(pg_sys::Datum::from(0)))],
                    )
                }) as i64,
                None => {
                    // as the first delete: writers that planned with the tombstones finish
                    // first, and later ones plan without
                    // SAFETY: the target exists (it is registered and was just checked).
                    unsafe { pg_sys::LockRelationOid(target, pg_sys::ShareRowExclusiveLock as i32) };
                    let n = as_role(owner, || rows_of(&side_name));
                    // the drop trigger removes the registry's row
                    as_role(catalog::extension_owner(), || execute(&format!("DROP TABLE {side_name}"), &[]));
                    // SAFETY: queues an invalidation of the target's plans, sent at commit.
                    unsafe { pg_sys::CacheInvalidateRelcacheByRelid(target) };
                    n
                }
            };
        }
        removed
    })
}

/// The tombstones of every table the caller may SELECT from.
#[pg_extern(sql = false)]
fn safe_upsert_tombstone_rows() -> TableIterator<
    'static,
    (
        name!(relid, pg_sys::Oid),
        name!(schemaname, String),
        name!(relname, String),
        name!(key, JsonB),
        name!(version, JsonB),
        name!(deleted_at, TimestampWithTimeZone),
    ),
> {
    let rows = Spi::connect(|_| {
        let mut rows = Vec::new();
        for (target, t) in scan(None) {
            let Some((nsp, rel)) = catalog::table_parts(target) else { continue };
            // SAFETY: an ACL check of an existing table for the current user.
            let may_read = unsafe { pg_sys::pg_class_aclcheck(target, pg_sys::GetUserId(), pg_sys::ACL_SELECT as pg_sys::AclMode) };
            if may_read != pg_sys::AclResult::ACLCHECK_OK {
                continue;
            }
            let quoted = |names: &[String]| names.iter().map(|n| catalog::quoted(n)).collect::<Vec<_>>();
            let key: Vec<String> =
                t.key_cols.iter().zip(quoted(&t.key_cols)).map(|(n, q)| format!("{}, {q}", ddl::literal(n))).collect();
            let versions = quoted(&t.version_cols);
            let version = if versions.len() == 1 {
                format!("pg_catalog.to_jsonb({})", versions[0])
            } else {
                format!("pg_catalog.jsonb_build_array({})", versions.join(", "))
            };
            let sql = format!(
                "SELECT pg_catalog.jsonb_build_object({})::pg_catalog.text, {version}::pg_catalog.text, {} FROM {} ORDER BY 3",
                key.join(", "),
                crate::upsert::statement::tombstone::DELETED_AT,
                catalog::table_name(t.side)
            );
            let n = as_role(t.owner, || execute(&sql, &[]));
            for r in 0..n as usize {
                // SAFETY: the statement returned n rows of (text, text, timestamptz).
                let (k, v, at) = unsafe {
                    (
                        crate::upsert::cell::<String>(r, 1),
                        crate::upsert::cell::<String>(r, 2),
                        crate::upsert::cell::<TimestampWithTimeZone>(r, 3),
                    )
                };
                let json = |s: Option<String>| JsonB(s.and_then(|s| serde_json::from_str(&s).ok()).unwrap_or_default());
                let Some(at) = at else { continue };
                rows.push((target, nsp.clone(), rel.clone(), json(k), json(v), at));
            }
        }
        rows
    });
    TableIterator::new(rows)
}

extension_sql!(
    r#"
CREATE FUNCTION safe_upsert_purge_tombstones(target regclass DEFAULT NULL, older_than interval DEFAULT NULL)
RETURNS bigint
LANGUAGE c VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'safe_upsert_purge_tombstones_wrapper';
COMMENT ON FUNCTION safe_upsert_purge_tombstones(regclass, interval) IS
  'Remove the tombstones of a table (or of every table you own), all or those older than older_than; returns how many.';

CREATE FUNCTION safe_upsert_tombstone_rows()
RETURNS TABLE(relid oid, schemaname text, relname text, key jsonb, version jsonb, deleted_at timestamptz)
LANGUAGE c VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'safe_upsert_tombstone_rows_wrapper';
COMMENT ON FUNCTION safe_upsert_tombstone_rows() IS 'Internal to the view safe_upsert_tombstones.';

CREATE VIEW safe_upsert_tombstones AS
    SELECT relid, schemaname::name AS schemaname, relname::name AS relname, key, version, deleted_at
    FROM safe_upsert_tombstone_rows();
COMMENT ON VIEW safe_upsert_tombstones IS
  'The tombstones of deleted keys, of the tables you may SELECT from.';
GRANT SELECT ON safe_upsert_tombstones TO PUBLIC;
"#,
    name = "tombstone_functions",
    requires = ["tombstone_tables"],
);

/// How many tombstones this database keeps, over all its tables.
pub fn count() -> i64 {
    Spi::connect(|_| {
        let tables = scan(None);
        if tables.is_empty() {
            return 0;
        }
        as_role(catalog::extension_owner(), || {
            tables
                .iter()
                .filter_map(|(_, t)| catalog::syscache_table_name(t.side))
                .map(|side| rows_of(&side))
                .sum()
        })
    })
}

/// How many rows the tombstone table `side` (quoted, qualified) holds.
fn rows_of(side: &str) -> i64 {
    execute(&format!("SELECT pg_catalog.count(*) FROM {side}"), &[]);
    // SAFETY: the statement returned one row of one bigint.
    unsafe { crate::upsert::cell::<i64>(0, 1) }.unwrap_or(0)
}
