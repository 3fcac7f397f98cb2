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
use super::tracking::{self, CallState};
use super::row::JsonbRow;
use super::{as_object, batch, check_table, input, json_arg, jsonb_arg, kept, name_arg, version_names, Args};
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
    /// Tables this backend has seen with tombstones: their deletes skip the registry lookup. A
    /// purge since then makes an entry wrong, which only costs the next first delete its
    /// lock order (it then upgrades ROW EXCLUSIVE, as before the fix for two first deletes).
    static TOMBSTONED: RefCell<HashSet<pg_sys::Oid>> = RefCell::new(HashSet::new());
}

fn call(args: Args, row: Value) -> pg_sys::Oid {
    let state = CallState::default();
    tracking::guard(args.relid, &state, row.as_object().map(|m| m as &dyn super::row::Row), || {
        open_for_delete(&args);
        state.opened.set(true);
        Spi::connect(|_| {
            let row = as_object(args.relid, &row);
            let plan = delete_plan(&args, row.keys().map(String::as_str).collect());
            *state.plan.borrow_mut() = Some(plan.clone());
            let (outcome, stored_version) = delete_row(&plan, row);
            tracking::record(&plan, outcome, row, stored_version);
            outcome.to_oid()
        })
    })
}

/// Checks the target and the caller's right to delete, then locks the table.
fn open_for_delete(args: &Args) {
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
    // SAFETY: as above; the lock, DELETE's own, also processes pending invalidations.
    unsafe { pg_sys::LockRelationOid(args.relid, pg_sys::RowExclusiveLock as i32) };
}

/// The delete plan for rows with these keys, making the table's tombstones on its first delete.
fn delete_plan(args: &Args, keys: Vec<&str>) -> std::rc::Rc<Plan> {
    let req = Request {
        relid: args.relid,
        keys,
        version_cols: &args.version_cols,
        conflict_cols: args.conflict_cols.as_deref(),
        on_tie: super::statement::OnTie::Skip,
        op: Op::Delete,
    };
    let mut plan = plan_cache::get(&req);
    if plan.tomb.is_none() {
        tombstones::create(args.relid, &plan.tombstone_table);
        plan = plan_cache::get(&req);
    }
    TOMBSTONED.with(|t| t.borrow_mut().insert(args.relid));
    plan
}

/// Deletes one row; returns the outcome and, when it is stale, the newer version (the stored
/// row's or the tombstone's) as JSON text.
fn delete_row(plan: &Plan, row: &Map<String, Value>) -> (Outcome, Option<String>) {
    let Some(tomb) = &plan.tomb else { error::internal("the table's tombstones were not found after they were made") };
    let Some((delete, classify)) = tomb.delete else { error::internal("a delete's plan lacks its statements") };
    let (mut values, nulls) = input::convert(plan, row);
    let (recorded, notes) = kept::collect(&[], || as_role(tomb.owner, || run(tomb.claim, &mut values, &nulls)));
    if recorded == 0 {
        // the key's tombstone is as new or newer: a replayed or an older delete
        return match notes.first() {
            Some(note) => (tombstone_kept(note.same_version), note.stored_version.clone()),
            None => (Outcome::StaleByTombstone, None),
        };
    }
    if run(delete, &mut values, &nulls) == 1 {
        return (Outcome::Deleted, None);
    }
    let unclaim = |values: &mut Vec<pg_sys::Datum>| as_role(tomb.owner, || run(tomb.unclaim, values, &nulls));
    if run(classify, &mut values, &nulls) == 1 {
        // SAFETY: classify returned one row of (text, bool).
        let (stored, removable) = unsafe { (cell::<String>(0, 1), cell::<bool>(0, 2) == Some(true)) };
        if removable && catalog::row_security_applies(plan.relid) {
            error::delete_hidden_row(plan.table(), &plan.key_json(row).to_string());
        }
        // the stored row is newer, or a BEFORE DELETE trigger kept it: the key lives on
        unclaim(&mut values);
        return if removable { (Outcome::SkippedByTrigger, None) } else { (Outcome::Stale, stored) };
    }
    if catalog::row_security_applies(plan.relid) {
        // a row hidden from the caller must not be taken for an absent one
        let owner = catalog::relation_owner(plan.relid).unwrap_or_else(|| error::table_missing(plan.relid.to_u32()));
        if as_role(owner, || run(classify, &mut values, &nulls)) == 1 {
            error::delete_hidden_row(plan.table(), &plan.key_json(row).to_string());
        }
    }
    if written_after_snapshot(|| run_latest(classify, &mut values, &nulls)) {
        error::delete_after_snapshot(plan.table(), &plan.key_json(row).to_string());
    }
    (Outcome::Absent, None)
}

/// At REPEATABLE READ and SERIALIZABLE, whether `latest` (a read of the stored row under a
/// fresh snapshot) finds a row that the transaction's snapshot did not: a row committed since,
/// which this delete would otherwise leave alive under its tombstone. As a concurrent update
/// does, that is a serialization failure.
fn written_after_snapshot(latest: impl FnOnce() -> u64) -> bool {
    // SAFETY: plain read of the transaction's isolation level.
    let snapshot_per_transaction = unsafe { pg_sys::XactIsoLevel } >= pg_sys::XACT_REPEATABLE_READ as i32;
    snapshot_per_transaction && latest() > 0
}

/// `run` under the latest snapshot instead of the transaction's, as foreign-key checks read.
fn run_latest(stmt: pg_sys::SPIPlanPtr, values: &mut [pg_sys::Datum], nulls: &[std::ffi::c_char]) -> u64 {
    // SAFETY: inside an SPI connection; one value and null flag per parameter; the snapshot is
    // pushed by SPI for the statement alone.
    unsafe {
        let rc = pg_sys::SPI_execute_snapshot(
            stmt,
            values.as_mut_ptr(),
            nulls.as_ptr(),
            pg_sys::GetLatestSnapshot(),
            std::ptr::null_mut(),
            true,
            false,
            0,
        );
        if rc < 0 {
            error::spi_failed("SPI_execute_snapshot", rc);
        }
        pg_sys::SPI_processed
    }
}

/// The outcome of a delete whose key has a tombstone at least as new: a replay, or stale.
fn tombstone_kept(same_version: Option<bool>) -> Outcome {
    if same_version == Some(true) { Outcome::Duplicate } else { Outcome::StaleByTombstone }
}

#[pg_extern(sql = false)]
fn safe_delete_many_one(
    target: Option<pg_sys::Oid>,
    rows: Option<Internal>,
    version_col: Option<&CStr>,
    conflict_cols: Option<AnyArray>,
) -> TableIterator<'static, (name!(ord, i32), name!(outcome, pg_sys::Oid))> {
    let outcomes = fields::keep_fields(target, || {
        let args = Args::new(target, vec![name_arg(version_col, "version_col")], conflict_cols, Some("skip"));
        call_many(args, jsonb_arg(rows, "rows"))
    });
    TableIterator::new(outcomes)
}

#[pg_extern(sql = false)]
fn safe_delete_many_multi(
    target: Option<pg_sys::Oid>,
    rows: Option<Internal>,
    version_cols: Option<AnyArray>,
    conflict_cols: Option<AnyArray>,
) -> TableIterator<'static, (name!(ord, i32), name!(outcome, pg_sys::Oid))> {
    let outcomes = fields::keep_fields(target, || {
        let args = Args::new(target, version_names(version_cols), conflict_cols, Some("skip"));
        call_many(args, jsonb_arg(rows, "rows"))
    });
    TableIterator::new(outcomes)
}

extension_sql!(
    r#"
CREATE FUNCTION safe_delete_many(target regclass, "rows" jsonb, version_col name, conflict_cols name[] DEFAULT NULL)
RETURNS TABLE(ord int, outcome safe_upsert_outcome)
LANGUAGE c VOLATILE PARALLEL UNSAFE ROWS 1000
AS 'MODULE_PATHNAME', 'safe_delete_many_one_wrapper';
COMMENT ON FUNCTION safe_delete_many(regclass, jsonb, name, name[]) IS
  'safe_delete for every object of a JSON array, set-based; one outcome per row, in input order.';

CREATE FUNCTION safe_delete_many(target regclass, "rows" jsonb, version_cols name[], conflict_cols name[] DEFAULT NULL)
RETURNS TABLE(ord int, outcome safe_upsert_outcome)
LANGUAGE c VOLATILE PARALLEL UNSAFE ROWS 1000
AS 'MODULE_PATHNAME', 'safe_delete_many_multi_wrapper';
COMMENT ON FUNCTION safe_delete_many(regclass, jsonb, name[], name[]) IS
  'safe_delete_many with several version columns compared in order.';
"#,
    name = "safe_delete_many_functions",
    requires = ["safe_upsert_outcome", "tombstone_tables"],
);

fn call_many(args: Args, rows: pg_sys::Datum) -> Vec<(i32, pg_sys::Oid)> {
    let state = CallState::default();
    tracking::guard(args.relid, &state, None, || {
        open_for_delete(&args);
        state.opened.set(true);
        Spi::connect(|_| {
            let rows = batch::object_rows(args.relid, rows);
            let mut outcomes = Vec::with_capacity(rows.len());
            for positions in batch::groups(&rows) {
                let keys = rows[positions[0]].keys();
                let plan = batch::at_row(positions[0], || delete_plan(&args, keys));
                *state.plan.borrow_mut() = Some(plan.clone());
                let mut done = delete_group(&plan, &rows, &positions);
                done.sort_unstable_by_key(|(pos, _, _)| *pos); // conflicts are logged in input order
                for (pos, outcome, stored_version) in done {
                    pgrx::pg_sys::check_for_interrupts!();
                    tracking::record(&plan, outcome, &rows[pos], stored_version);
                    outcomes.push((pos as i32 + 1, outcome.to_oid()));
                }
            }
            outcomes.sort_unstable_by_key(|(ord, _)| *ord);
            outcomes
        })
    })
}

/// Deletes one group of rows (one set of columns); returns (position, outcome, newer version
/// for a stale row) per row.
fn delete_group(plan: &Plan, rows: &[JsonbRow], positions: &[usize]) -> Vec<(usize, Outcome, Option<String>)> {
    let Some(tomb) = &plan.tomb else { error::internal("the table's tombstones were not found after they were made") };
    let batch = batch::batch_plan(plan);
    let statements = plan.batch_tomb(tomb, batch);
    let Some((tomb_classify, delete_rows, classify)) = statements.delete else { error::internal("a delete's plan lacks its statements") };
    let converted = batch::convert_group(plan, rows, positions);
    let index_of = |pos: usize| converted.positions.binary_search(&pos).unwrap_or_else(|_| error::internal("a row is not of its group"));
    // a batch statement over the converted rows at `picks`
    let exec = |stmt: pg_sys::SPIPlanPtr, picks: &[usize]| -> usize {
        let mut params = batch::params(batch, &converted, picks);
        let not_null = vec![input::NOT_NULL; params.len()];
        run(stmt, &mut params, &not_null) as usize
    };
    // the statements that reach the table by key (not the tombstones', which join the batch's
    // own rows, where hash joins are what they need)
    let lookup = |stmt: pg_sys::SPIPlanPtr, picks: &[usize]| plan_cache::with_key_lookups(|| exec(stmt, picks));
    // The positions in column 1 of the last statement's n rows.
    let ords = |n: usize| -> Vec<usize> {
        // SAFETY: called right after a batch statement whose rows begin with a position.
        (0..n).map(|r| unsafe { batch::position(r, rows.len()) }).collect()
    };

    let all: Vec<usize> = (0..positions.len()).collect();
    let mut results = Vec::with_capacity(positions.len());
    let (n, notes) = kept::collect(&[], || as_role(tomb.owner, || exec(statements.claim, &all)));
    let mut recorded = Vec::new();
    let mut kept_winners = Vec::new();
    for (r, pos) in ords(n).into_iter().enumerate() {
        // SAFETY: rows of (int, bool, bool, bool, bigint, text).
        let (winner, fresh, same, seq) = unsafe { (cell::<bool>(r, 2), cell::<bool>(r, 3), cell::<bool>(r, 4), cell::<i64>(r, 5)) };
        match (winner, fresh) {
            (Some(true), Some(true)) => recorded.push(pos),
            (Some(true), _) => kept_winners.push((seq.unwrap_or(0), pos)),
            // compared with the row that won its key in this batch
            _ if same == Some(true) => results.push((pos, Outcome::Duplicate, None)),
            // SAFETY: as above.
            _ => results.push((pos, Outcome::Stale, unsafe { cell::<String>(r, 6) })),
        }
    }
    // Winners whose key has an equal or newer tombstone: the notes say which, in key order.
    kept_winners.sort_unstable();
    if notes.len() == kept_winners.len() {
        for ((_, pos), note) in kept_winners.iter().zip(&notes) {
            results.push((*pos, tombstone_kept(note.same_version), note.stored_version.clone()));
        }
    } else if !kept_winners.is_empty() {
        let picks: Vec<usize> = kept_winners.iter().map(|&(_, p)| index_of(p)).collect();
        let n = as_role(tomb.owner, || exec(tomb_classify, &picks));
        let mut seen = Vec::new();
        for (r, pos) in ords(n).into_iter().enumerate() {
            // SAFETY: rows of (int, bool).
            let same = unsafe { cell::<bool>(r, 2) } == Some(true);
            results.push((pos, tombstone_kept(Some(same)), None));
            seen.push(pos);
        }
        results.extend(kept_winners.iter().filter(|(_, p)| !seen.contains(p)).map(|&(_, p)| (p, Outcome::StaleByTombstone, None)));
    }
    if recorded.is_empty() {
        return results;
    }
    // The stored rows of the recorded tombstones, removed where not newer.
    recorded.sort_unstable();
    let picks: Vec<usize> = recorded.iter().map(|&p| index_of(p)).collect();
    let n = lookup(delete_rows, &picks);
    let deleted = ords(n);
    results.extend(deleted.iter().map(|&p| (p, Outcome::Deleted, None)));
    let rest: Vec<usize> = recorded.iter().copied().filter(|p| !deleted.contains(p)).collect();
    if rest.is_empty() {
        return results;
    }
    let picks: Vec<usize> = rest.iter().map(|&p| index_of(p)).collect();
    let n = lookup(classify, &picks);
    let rls = catalog::row_security_applies(plan.relid);
    let mut living = Vec::new();
    for (r, pos) in ords(n).into_iter().enumerate() {
        // SAFETY: rows of (int, text, bool).
        let (stored, removable) = unsafe { (cell::<String>(r, 2), cell::<bool>(r, 3) == Some(true)) };
        if removable && rls {
            batch::at_row(pos, || error::delete_hidden_row(plan.table(), &plan.key_json(&rows[pos]).to_string()));
        }
        results.push(if removable { (pos, Outcome::SkippedByTrigger, None) } else { (pos, Outcome::Stale, stored) });
        living.push(pos);
    }
    let absent: Vec<usize> = rest.iter().copied().filter(|p| !living.contains(p)).collect();
    if rls && !absent.is_empty() {
        let owner = catalog::relation_owner(plan.relid).unwrap_or_else(|| error::table_missing(plan.relid.to_u32()));
        let picks: Vec<usize> = absent.iter().map(|&p| index_of(p)).collect();
        if let Some(&pos) = ords(as_role(owner, || lookup(classify, &picks))).first() {
            batch::at_row(pos, || error::delete_hidden_row(plan.table(), &plan.key_json(&rows[pos]).to_string()));
        }
    }
    if !absent.is_empty() {
        let picks: Vec<usize> = absent.iter().map(|&p| index_of(p)).collect();
        let mut params = batch::params(batch, &converted, &picks);
        let not_null = vec![input::NOT_NULL; params.len()];
        if written_after_snapshot(|| run_latest(classify, &mut params, &not_null)) {
            // SAFETY: the read returned rows whose first column is a position.
            let pos = unsafe { batch::position(0, rows.len()) };
            batch::at_row(pos, || error::delete_after_snapshot(plan.table(), &plan.key_json(&rows[pos]).to_string()));
        }
    }
    results.extend(absent.iter().map(|&p| (p, Outcome::Absent, None)));
    if !living.is_empty() {
        // the key lives on: its tombstone goes
        living.sort_unstable();
        let picks: Vec<usize> = living.iter().map(|&p| index_of(p)).collect();
        as_role(tomb.owner, || lookup(statements.unclaim, &picks));
    }
    results
}
