//! What the upsert entry points tell the statistics: each row's outcome and conflicts, and the
//! failure of a call, noted as the error propagates and counted when its (sub)transaction ends,
//! since it will not commit.

use std::cell::{Cell, RefCell};
use std::panic::AssertUnwindSafe;
use std::rc::Rc;

use pgrx::prelude::*;

use super::plan_cache::Plan;
use super::outcome::Outcome;
use super::row::Row;
use crate::error;
use crate::stats::{self, Counter, LogRecord};

/// What a call has got to, for describing its failure without looking anything up then.
#[derive(Default)]
pub struct CallState {
    /// the target exists and is locked: a failure from here on is the table's
    pub opened: Cell<bool>,
    /// the plan the call was using
    pub plan: RefCell<Option<Rc<Plan>>>,
}

/// The counter of an upsert's or a delete's outcome.
fn counter(delete: bool, outcome: Outcome) -> Counter {
    match (delete, outcome) {
        (false, Outcome::Inserted) => Counter::Inserted,
        (false, Outcome::Updated) => Counter::Updated,
        (false, Outcome::Stale | Outcome::StaleByTombstone) => Counter::Stale,
        (false, Outcome::Duplicate) => Counter::Duplicate,
        (false, Outcome::Tie) => Counter::Tie,
        (false, Outcome::SkippedByTrigger) => Counter::SkippedByTrigger,
        (true, Outcome::Stale | Outcome::StaleByTombstone) => Counter::DeleteStale,
        (true, Outcome::Duplicate) => Counter::DeleteDuplicate,
        (true, Outcome::SkippedByTrigger) => Counter::DeleteSkippedByTrigger,
        (true, Outcome::Deleted) => Counter::Deleted,
        (true, Outcome::Absent) => Counter::Absent,
        // never produced: a delete neither inserts, updates nor ties, an upsert never deletes
        (true, Outcome::Inserted | Outcome::Updated | Outcome::Tie) | (false, Outcome::Deleted | Outcome::Absent) => Counter::Errors,
    }
}

/// Runs a call, noting its failure (if tracking is on) before re-raising the error. The note is
/// made in backend memory only, and counted when the (sub)transaction ends.
pub fn guard<R>(relid: pg_sys::Oid, state: &CallState, row: Option<&dyn Row>, work: impl FnOnce() -> R) -> R {
    if !stats::tracking() {
        return work();
    }
    match std::panic::catch_unwind(AssertUnwindSafe(work)) {
        Ok(done) => done,
        Err(payload) => {
            if state.opened.get() {
                let code = error::caught(payload.as_ref()).map(|r| r.sql_error_code());
                record_failure(relid, code, state.plan.borrow().as_deref(), row);
            }
            std::panic::resume_unwind(payload)
        }
    }
}

/// Counts one row's outcome and, for a conflict, queues its description for the log.
pub fn record(plan: &Plan, outcome: Outcome, row: &dyn Row, stored_version: Option<String>) {
    if !stats::tracking() {
        return;
    }
    let kind = counter(plan.is_delete(), outcome);
    stats::outcome(plan.relid, kind);
    if matches!(kind, Counter::Stale | Counter::Tie | Counter::DeleteStale) && stats::logging() {
        let mut record = describe(plan, row, kind, stored_version);
        record.tombstone = outcome == Outcome::StaleByTombstone;
        stats::conflict(record);
    }
}

/// A conflict as the log shows it: no more than the key, the versions and the (cut) row.
fn describe(plan: &Plan, row: &dyn Row, kind: Counter, stored_version: Option<String>) -> LogRecord {
    LogRecord {
        relid: plan.relid.to_u32(),
        kind: kind as u8,
        key: plan.key_json(row).to_string(),
        stored_version,
        incoming_version: plan.version_json(row).to_string(),
        incoming_row: row.log_text(),
        ..Default::default()
    }
}

/// Notes a failed call on an existing table: unique violations (logged as conflicts too, when
/// the row is known) apart from other errors.
fn record_failure(relid: pg_sys::Oid, code: Option<PgSqlErrorCode>, plan: Option<&Plan>, row: Option<&dyn Row>) {
    if code != Some(PgSqlErrorCode::ERRCODE_UNIQUE_VIOLATION) {
        return stats::failed(relid, Counter::Errors, None);
    }
    let conflict = match (plan, row) {
        (Some(plan), Some(row)) if stats::logging() => {
            Some(describe(plan, row, Counter::UniqueViolations, None))
        }
        _ => None,
    };
    stats::failed(relid, Counter::UniqueViolations, conflict);
}
