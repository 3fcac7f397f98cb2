//! `safe_delete`: the versioned delete. The key's tombstone is recorded first, on the unique
//! index that upserts claim their key on (see `statement/tombstone.rs`), so a delete and an
//! upsert of one key never run side by side; then the stored row is removed if its version is
//! older or equal. Each step's snapshot is taken after the previous step waited, so at READ
//! COMMITTED the delete sees the row as the last writer of the key committed it.

use std::cell::RefCell;
use std::collections::HashSet;
use std::ffi::CStr;

use pgrx::prelude::*;
use pgrx::{AnyArray, Internal};
use serde_json::{Map, Value};

use super::catalog::{self, Op, Request};
use super::outcome::Outcome;
use super::plan_cache::{self, Plan};
use super::single::{cell, run};
use super::{as_object, check_table, input, json_arg, kept, name_arg, open_table, version_names, Args};
use crate::error::{self, fields};
use crate::tombstones::{self, as_role};

#[pg_extern(sql = false)]
fn safe_delete_one(
    target: Option<pg_sys::Oid>,
    row: Option<Internal>,
    version_col: Option<&CStr>,
    conflict_cols: Option<AnyArray>,
) -> pg_sys::Oid {
    fields::keep_fields(target, || {
        let args = Args::new(target, vec![name_arg(version_col, "version_col")], conflict_cols, Some("skip"));
        let row = json_arg(row, "row", args.relid);
        call(args, row)
    })
}

#[pg_extern(sql = false)]
fn safe_delete_multi(
    target: Option<pg_sys::Oid>,
    row: Option<Internal>,
    version_cols: Option<AnyArray>,
    conflict_cols: Option<AnyArray>,
) -> pg_sys::Oid {
    fields::keep_fields(target, || {
        let args = Args::new(target, version_names(version_cols), conflict_cols, Some("skip"));
        let row = json_arg(row, "row", args.relid);
        call(args, row)
    })
}

extension_sql!(
    r#"
CREATE FUNCTION safe_delete(target regclass, "row" jsonb, version_col name, conflict_cols name[] DEFAULT NULL)
RETURNS safe_upsert_outcome
LANGUAGE c VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'safe_delete_one_wrapper';
COMMENT ON FUNCTION safe_delete(regclass, jsonb, name, name[]) IS
  'Delete the stored row if its version is older or equal, keeping a tombstone that refuses older writes.';

CREATE FUNCTION safe_delete(target regclass, "row" jsonb, version_cols name[], conflict_cols name[] DEFAULT NULL)
RETURNS safe_upsert_outcome
LANGUAGE c VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'safe_delete_multi_wrapper';
COMMENT ON FUNCTION safe_delete(regclass, jsonb, name[], name[]) IS
  'safe_delete with several version columns compared in order.';
"#,
    name = "safe_delete_functions",
    requires = ["safe_upsert_outcome", "tombstone_tables"],
);

thread_local! {
    /// Tables this backend has seen with tombstones: their deletes skip the registry lookup.
    static TOMBSTONED: RefCell<HashSet<pg_sys::Oid>> = RefCell::new(HashSet::new());
}

fn call(args: Args, row: Value) -> pg_sys::Oid {
    check_table(args.relid);
    // SAFETY: an ACL check of an existing table for the current user.
    let may_delete = unsafe { pg_sys::pg_class_aclcheck(args.relid, pg_sys::GetUserId(), pg_sys::ACL_DELETE as pg_sys::AclMode) };
    if may_delete != pg_sys::AclResult::ACLCHECK_OK {
        // checked before any lock, and before the first delete of a table makes its tombstones
        error::delete_not_permitted(&catalog::table_name(args.relid));
    }
    if !TOMBSTONED.with(|t| t.borrow().contains(&args.relid)) && tombstones::find(args.relid).is_none() {
        // The first delete makes the tombstone table under SHARE ROW EXCLUSIVE: taken before
        // the usual ROW EXCLUSIVE, so that two first deletes queue instead of deadlocking on
        // the upgrade.
        // SAFETY: the relation exists (checked above).
        unsafe { pg_sys::LockRelationOid(args.relid, pg_sys::ShareRowExclusiveLock as i32) };
    }
    open_table(args.relid);
    Spi::connect(|_| {
        let row = as_object(args.relid, &row);
        let req = Request {
            relid: args.relid,
            keys: row.keys().map(String::as_str).collect(),
            version_cols: &args.version_cols,
            conflict_cols: args.conflict_cols.as_deref(),
            on_tie: super::statement::OnTie::Skip,
            op: Op::Delete,
        };
        let mut plan = plan_cache::get(&req);
        if plan.tomb.is_none() {
            let t = &plan.tombstone_table;
            tombstones::create(&tombstones::NewTable {
                relid: args.relid,
                columns: t.columns.iter().map(|(n, typ, c)| (n.as_str(), typ.clone(), c.clone())).collect(),
                key_cols: t.key_cols.clone(),
                version_cols: t.version_cols.clone(),
                index: t.index,
            });
            plan = plan_cache::get(&req);
        }
        TOMBSTONED.with(|t| t.borrow_mut().insert(args.relid));
        delete_row(&plan, row).to_oid()
    })
}

fn delete_row(plan: &Plan, row: &Map<String, Value>) -> Outcome {
    let Some(tomb) = &plan.tomb else { error::internal("the table's tombstones were not found after they were made") };
    let Some((delete, classify)) = tomb.delete else { error::internal("a delete's plan lacks its statements") };
    let (mut values, nulls) = input::convert(plan, row, &[]);
    let (recorded, notes) = kept::collect(|| as_role(tomb.owner, || run(tomb.claim, &mut values, &nulls)));
    if recorded == 0 {
        // the key's tombstone is as new or newer: a replayed or an older delete
        return match notes.first() {
            Some(note) => Outcome::of_kept(note.same_version, note.same_values, false),
            None => Outcome::Stale,
        };
    }
    if run(delete, &mut values, &nulls) == 1 {
        return Outcome::Deleted;
    }
    let unclaim = |values: &mut Vec<pg_sys::Datum>| as_role(tomb.owner, || run(tomb.unclaim, values, &nulls));
    if run(classify, &mut values, &nulls) == 1 {
        // SAFETY: classify returned one row of (text, bool).
        let removable = unsafe { cell::<bool>(0, 2) } == Some(true);
        if removable && catalog::row_security_applies(plan.relid) {
            error::delete_hidden_row(plan.table(), &plan.key_json(row).to_string());
        }
        // the stored row is newer, or a BEFORE DELETE trigger kept it: the key lives on
        unclaim(&mut values);
        return if removable { Outcome::SkippedByTrigger } else { Outcome::Stale };
    }
    if catalog::row_security_applies(plan.relid) {
        // a row hidden from the caller must not be taken for an absent one
        let owner = catalog::relation_owner(plan.relid).unwrap_or_else(|| error::table_missing(plan.relid.to_u32()));
        if as_role(owner, || run(classify, &mut values, &nulls)) == 1 {
            error::delete_hidden_row(plan.table(), &plan.key_json(row).to_string());
        }
    }
    Outcome::Absent
}
