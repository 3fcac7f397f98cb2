//! `safe_upsert`: one row, one prepared INSERT ... ON CONFLICT, which also tells why when it kept
//! the stored row (`kept.rs`).

use pgrx::prelude::*;
use serde_json::Value;

use super::plan_cache::{self, Plan};
use super::statement::OnTie;
use super::tracking::{self, CallState};
use super::outcome::Outcome;
use super::row::{JsonbRow, Row};
use super::{as_object, kept, open_table, Args};
use crate::error;
use crate::tombstones::as_role;

/// The outcome, as the OID of its SQL enum label. `row` is the argument read in place, or (when
/// it is not an object with fields) the document whose error `as_object` raises.
pub fn call(args: Args, row: Result<JsonbRow, Value>) -> pg_sys::Oid {
    let state = CallState::default();
    let failed_row = row.as_ref().ok().map(|r| r as &dyn Row);
    tracking::guard(args.relid, &state, failed_row, || {
        open_table(args.relid);
        state.opened.set(true);
        let on_tie = args.on_tie();
        Spi::connect(|_| {
            let row = row.as_ref().unwrap_or_else(|doc| {
                as_object(args.relid, doc);
                error::internal("a jsonb object with fields not read in place")
            });
            let plan = plan_cache::get(&args.request(row.keys(), on_tie));
            *state.plan.borrow_mut() = Some(plan.clone());
            let (outcome, stored_version) = upsert_row(&plan, on_tie, row);
            tracking::record(&plan, outcome, row, stored_version);
            outcome.to_oid()
        })
    })
}

/// Runs the plan for one row. Returns the outcome and, when the stored row (or the key's
/// tombstone) was kept, its version as JSON text.
pub fn upsert_row(plan: &Plan, on_tie: OnTie, row: &dyn Row) -> (Outcome, Option<String>) {
    let (mut values, nulls) = row.values(plan);
    let Some(tomb) = &plan.tomb else { return write_row(plan, on_tie, row, &mut values, &nulls) };
    // The key's claim comes first, as a delete's tombstone does: whichever gets there first,
    // the other waits for its transaction.
    as_role(tomb.owner, || run(tomb.claim, &mut values, &nulls));
    // SAFETY: the claim returns one row of (bool, bool, text).
    let (claimed, older, version) = unsafe { (cell::<bool>(0, 1), cell::<bool>(0, 2), cell::<String>(0, 3)) };
    if claimed != Some(true) && older != Some(true) {
        // deleted at this version or later: a delete wins equal versions
        return (Outcome::StaleByTombstone, version);
    }
    let written = write_row(plan, on_tie, row, &mut values, &nulls);
    as_role(tomb.owner, || run(tomb.unclaim, &mut values, &nulls));
    written
}

/// Runs a prepared statement with the row's values; returns the rows it processed.
pub fn run(stmt: pg_sys::SPIPlanPtr, values: &mut [pg_sys::Datum], nulls: &[std::ffi::c_char]) -> u64 {
    // SAFETY: inside an SPI connection; values and nulls have one entry per parameter.
    unsafe {
        let rc = pg_sys::SPI_execute_plan(stmt, values.as_mut_ptr(), nulls.as_ptr(), false, 0);
        if rc < 0 {
            error::spi_failed("SPI_execute_plan", rc);
        }
        pg_sys::SPI_processed
    }
}

/// The write of one row, once any claim on its key is held.
fn write_row(plan: &Plan, on_tie: OnTie, row: &dyn Row, values: &mut [pg_sys::Datum], nulls: &[std::ffi::c_char]) -> (Outcome, Option<String>) {
    // A partitioned table's row can be deleted between the insert that found it and the update:
    // then the insert is tried again.
    for _ in 0..3 {
        let (written, notes) = kept::collect(&plan.sent, || run(plan.upsert, values, nulls));
        if written == 1 {
            // SAFETY: the write returned one row, whose first column is a bool.
            let inserted = unsafe { cell::<bool>(0, 1) } == Some(true);
            return (if inserted { Outcome::Inserted } else { Outcome::Updated }, None);
        }
        if let [note] = notes.as_slice() {
            // The write itself said why it kept the stored row.
            return (kept_outcome(plan, on_tie, row, note.same_version, note.same_values, false), note.stored_version.clone());
        }
        if plan.update.is_none() && notes.is_empty() {
            // Neither written nor kept by the versions, which would have left a note: a BEFORE
            // INSERT trigger returned NULL, or a BEFORE UPDATE trigger did for a newer row.
            return (Outcome::SkippedByTrigger, None);
        }
        if let Some(update) = plan.update {
            if run(update, values, nulls) == 1 {
                return (Outcome::Updated, None);
            }
        }
        if run(plan.classify(), values, nulls) == 1 {
            // SAFETY: classify returned one row of (bool, bool, text, bool).
            let (same_version, same_values, stored, replaces) =
                unsafe { (cell::<bool>(0, 1), cell::<bool>(0, 2), cell::<String>(0, 3), cell::<bool>(0, 4)) };
            if replaces == Some(true) {
                // The versions let the row through, yet it was not written: a trigger said no.
                return (Outcome::SkippedByTrigger, None);
            }
            return (kept_outcome(plan, on_tie, row, same_version, same_values, false), stored);
        }
        if plan.update.is_none() {
            break;
        }
    }
    (unseen_stored_row(plan), None)
}

/// The outcome of a row that was not written while no stored row is visible: a row-level
/// security policy hides the stored row (it is kept, as stale), or else a BEFORE INSERT trigger
/// skipped the row.
pub fn unseen_stored_row(plan: &Plan) -> Outcome {
    if super::catalog::row_security_applies(plan.relid) { Outcome::Stale } else { Outcome::SkippedByTrigger }
}

/// `Outcome::of_kept`, raising the tie error under `on_tie = error`.
pub fn kept_outcome(
    plan: &Plan,
    on_tie: OnTie,
    row: &dyn Row,
    same_version: Option<bool>,
    same_values: Option<bool>,
    superseded: bool,
) -> Outcome {
    let outcome = Outcome::of_kept(same_version, same_values, superseded);
    if outcome == Outcome::Tie && on_tie == OnTie::Error {
        error::version_tie(plan.table(), &plan.key_json(row).to_string());
    }
    outcome
}

/// Column `col` (1-based) of result row `row` (0-based) of the last SPI statement.
///
/// # Safety
/// The last SPI statement returned at least `row + 1` rows with a column `col` of type `T`.
pub unsafe fn cell<T: FromDatum>(row: usize, col: i32) -> Option<T> {
    // SAFETY: the caller's contract: SPI_tuptable holds the last statement's rows.
    unsafe {
        let table = pg_sys::SPI_tuptable;
        let mut isnull = false;
        let datum = pg_sys::SPI_getbinval(*(*table).vals.add(row), (*table).tupdesc, col, &mut isnull);
        T::from_datum(datum, isnull)
    }
}
