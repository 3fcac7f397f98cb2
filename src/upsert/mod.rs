//! The SQL entry points: `safe_upsert` with one version column or several.

mod catalog;
mod json_text;
pub mod plan_cache;
pub mod statement;

use std::cell::RefCell;
use std::ffi::{CStr, CString};
use std::panic::AssertUnwindSafe;
use std::rc::Rc;

use pgrx::pg_sys::panic::CaughtError;
use pgrx::prelude::*;
use pgrx::{AnyArray, JsonB};
use serde_json::{Map, Value};

use crate::error;
use crate::stats::{self, Counter, LogRecord};
use catalog::Request;
use plan_cache::Plan;
use statement::OnTie;

/// What happened to one row. The labels are part of the SQL API.
#[derive(PostgresEnum, Clone, Copy, Debug, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum safe_upsert_outcome {
    inserted,
    updated,
    stale,
    duplicate,
    tie,
}

#[pg_extern(sql = false)]
fn safe_upsert_one(
    target: Option<pg_sys::Oid>,
    row: Option<JsonB>,
    version_col: Option<&CStr>,
    conflict_cols: Option<AnyArray>,
    on_tie: Option<&str>,
) -> safe_upsert_outcome {
    let version_cols = vec![name_arg(version_col, "version_col")];
    call(target, row, version_cols, conflict_cols, on_tie)
}

#[pg_extern(sql = false)]
fn safe_upsert_multi(
    target: Option<pg_sys::Oid>,
    row: Option<JsonB>,
    version_cols: Option<AnyArray>,
    conflict_cols: Option<AnyArray>,
    on_tie: Option<&str>,
) -> safe_upsert_outcome {
    let version_cols = version_cols
        .map(|a| name_array(a.datum(), "version_cols"))
        .unwrap_or_else(|| error::null_argument("version_cols"));
    if version_cols.is_empty() {
        error::null_argument("version_cols");
    }
    call(target, row, version_cols, conflict_cols, on_tie)
}

extension_sql!(
    r#"
CREATE FUNCTION safe_upsert(target regclass, "row" jsonb, version_col name,
                            conflict_cols name[] DEFAULT NULL, on_tie text DEFAULT 'skip')
RETURNS safe_upsert_outcome
LANGUAGE c VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'safe_upsert_one_wrapper';
COMMENT ON FUNCTION safe_upsert(regclass, jsonb, name, name[], text) IS
  'Insert the row, or replace the stored one only if the incoming version is newer.';

CREATE FUNCTION safe_upsert(target regclass, "row" jsonb, version_cols name[],
                            conflict_cols name[] DEFAULT NULL, on_tie text DEFAULT 'skip')
RETURNS safe_upsert_outcome
LANGUAGE c VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'safe_upsert_multi_wrapper';
COMMENT ON FUNCTION safe_upsert(regclass, jsonb, name[], name[], text) IS
  'Insert the row, or replace the stored one only if its version columns, compared in order, are newer.';
"#,
    name = "safe_upsert_functions",
    requires = [safe_upsert_outcome],
);

fn name_arg(value: Option<&CStr>, arg: &str) -> String {
    value
        .map(|c| c.to_string_lossy().into_owned())
        .unwrap_or_else(|| error::null_argument(arg))
}

/// The elements of a `name[]` argument; a NULL element is an error.
fn name_array(datum: pg_sys::Datum, arg: &str) -> Vec<String> {
    // SAFETY: the SQL signature makes this datum a name[]; deconstruct_array copies nothing and
    // points into the detoasted array, which lives until the end of the call.
    unsafe {
        let array = pg_sys::pg_detoast_datum(datum.cast_mut_ptr()) as *mut pg_sys::ArrayType;
        let mut elems: *mut pg_sys::Datum = std::ptr::null_mut();
        let mut nulls: *mut bool = std::ptr::null_mut();
        let mut n = 0;
        pg_sys::deconstruct_array(
            array,
            pg_sys::NAMEOID,
            pg_sys::NAMEDATALEN as i32,
            false,
            pg_sys::TYPALIGN_CHAR as _,
            &mut elems,
            &mut nulls,
            &mut n,
        );
        (0..n as usize)
            .map(|i| {
                if *nulls.add(i) {
                    error::null_argument(arg);
                }
                CStr::from_ptr((*elems.add(i)).cast_mut_ptr()).to_string_lossy().into_owned()
            })
            .collect()
    }
}

fn call(
    target: Option<pg_sys::Oid>,
    row: Option<JsonB>,
    version_cols: Vec<String>,
    conflict_cols: Option<AnyArray>,
    on_tie: Option<&str>,
) -> safe_upsert_outcome {
    crate::require_preload();
    let relid = target.unwrap_or_else(|| error::null_argument("target"));
    let JsonB(row) = row.unwrap_or_else(|| error::null_argument("row"));
    let on_tie = on_tie.unwrap_or("skip");
    let conflict_cols = conflict_cols.map(|a| name_array(a.datum(), "conflict_cols"));
    let plan: RefCell<Option<Rc<Plan>>> = RefCell::new(None);
    let work = || {
        let on_tie = OnTie::parse(on_tie).unwrap_or_else(|| error::unknown_on_tie(on_tie));
        open_table(relid);
        Spi::connect(|client| {
            let row = as_object(client, relid, &row);
            let req = Request {
                relid,
                keys: row.keys().map(String::as_str).collect(),
                version_cols: &version_cols,
                conflict_cols: conflict_cols.as_deref(),
                on_tie,
            };
            let found = plan_cache::get(client, &req);
            *plan.borrow_mut() = Some(found.clone());
            upsert_row(&found, on_tie, row)
        })
    };
    if !stats::tracking() {
        return work().0;
    }
    // Errors are counted before they propagate: their transaction will not commit.
    let (outcome, stored_version) = match std::panic::catch_unwind(AssertUnwindSafe(work)) {
        Ok(done) => done,
        Err(payload) => {
            record_failure(relid, payload.downcast_ref::<CaughtError>(), plan.borrow().as_deref(), &row);
            std::panic::resume_unwind(payload)
        }
    };
    stats::outcome(relid, counter(outcome));
    if matches!(outcome, safe_upsert_outcome::stale | safe_upsert_outcome::tie) && stats::logging() {
        if let (Some(plan), Value::Object(row)) = (plan.borrow().as_deref(), &row) {
            stats::conflict(describe(plan, row, counter(outcome), stored_version));
        }
    }
    outcome
}

fn counter(outcome: safe_upsert_outcome) -> Counter {
    match outcome {
        safe_upsert_outcome::inserted => Counter::Inserted,
        safe_upsert_outcome::updated => Counter::Updated,
        safe_upsert_outcome::stale => Counter::Stale,
        safe_upsert_outcome::duplicate => Counter::Duplicate,
        safe_upsert_outcome::tie => Counter::Tie,
    }
}

/// A conflict as the log shows it: no more than the key, the versions and the (cut) row.
fn describe(plan: &Plan, row: &Map<String, Value>, kind: Counter, stored_version: Option<String>) -> LogRecord {
    let pick = |indexes: &[usize]| -> Vec<(String, Value)> {
        indexes.iter().map(|&i| plan.columns[i].meta.name.clone()).map(|n| (n.clone(), row[&n].clone())).collect()
    };
    let versions: Vec<Value> = pick(&plan.versions).into_iter().map(|(_, v)| v).collect();
    let incoming_version = match versions.as_slice() {
        [one] => one.to_string(),
        many => Value::Array(many.to_vec()).to_string(),
    };
    LogRecord {
        relid: plan.relid.to_u32(),
        kind: kind as u8,
        key: Value::Object(pick(&plan.key).into_iter().collect()).to_string(),
        stored_version,
        incoming_version,
        incoming_row: stats::cut_row(row, 256, 1024),
        ..Default::default()
    }
}

/// Counts a failed call: unique violations (logged as conflicts too) apart from other errors.
fn record_failure(relid: pg_sys::Oid, caught: Option<&CaughtError>, plan: Option<&Plan>, row: &Value) {
    let code = match caught {
        Some(CaughtError::PostgresError(r)) | Some(CaughtError::ErrorReport(r)) => r.sql_error_code(),
        _ => PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
    };
    // SAFETY: plain syscache lookup; a missing target is not counted anywhere.
    if unsafe { pg_sys::get_rel_relkind(relid) } == 0 {
        return;
    }
    if code != PgSqlErrorCode::ERRCODE_UNIQUE_VIOLATION {
        return stats::failed(relid, Counter::Errors, None);
    }
    let conflict = match (plan, row) {
        (Some(plan), Value::Object(row)) if stats::logging() => {
            Some(describe(plan, row, Counter::UniqueViolations, None))
        }
        _ => None,
    };
    stats::failed(relid, Counter::UniqueViolations, conflict);
}

/// Checks that the target is a table we can upsert into and locks it as INSERT would. Taking
/// the lock first also processes pending invalidations, so the plan cache sees the latest DDL.
fn open_table(relid: pg_sys::Oid) {
    // SAFETY: plain syscache lookup.
    let kind = unsafe { pg_sys::get_rel_relkind(relid) } as u8;
    let what = match kind {
        b'r' | b'p' => None,
        0 => error::table_missing(relid.to_u32()),
        b'v' => Some("a view"),
        b'm' => Some("a materialized view"),
        b'S' => Some("a sequence"),
        b'f' => Some("a foreign table"),
        b'i' | b'I' => Some("an index"),
        b'c' => Some("a composite type"),
        b't' => Some("a TOAST table"),
        _ => Some("not a table"),
    };
    if let Some(what) = what {
        let name = Spi::connect(|client| catalog::table_name(client, relid));
        error::not_a_table(&name, what);
    }
    // SAFETY: the relation exists; the lock is released at transaction end, as INSERT's is.
    unsafe { pg_sys::LockRelationOid(relid, pg_sys::RowExclusiveLock as i32) };
}

fn as_object<'a>(client: &pgrx::spi::SpiClient<'_>, relid: pg_sys::Oid, row: &'a Value) -> &'a Map<String, Value> {
    let kind = match row {
        Value::Object(map) if map.is_empty() => error::row_empty(&catalog::table_name(client, relid)),
        Value::Object(map) => return map,
        Value::Array(_) => "an array",
        Value::String(_) => "a string",
        Value::Number(_) => "a number",
        Value::Bool(_) => "a boolean",
        Value::Null => "null",
    };
    error::row_not_object(&catalog::table_name(client, relid), kind)
}

/// Converts the row's values with each column's input function and runs the plan.
/// Returns the outcome and, when the stored row was kept, its version as JSON text.
fn upsert_row(plan: &Plan, on_tie: OnTie, row: &Map<String, Value>) -> (safe_upsert_outcome, Option<String>) {
    let mut values = Vec::with_capacity(plan.columns.len());
    let mut nulls = Vec::with_capacity(plan.columns.len());
    for (i, col) in plan.columns.iter().enumerate() {
        match json_text::input_text(&row[&col.meta.name], col.meta.is_array) {
            Some(text) => {
                values.push(input_value(plan, col, &text));
                nulls.push(b' ' as std::ffi::c_char);
            }
            None if plan.key.contains(&i) => error::key_missing(&plan.table, &col.meta.name),
            None if plan.versions.contains(&i) => error::version_missing(&plan.table, &col.meta.name),
            None => {
                values.push(pg_sys::Datum::from(0));
                nulls.push(b'n' as std::ffi::c_char);
            }
        }
    }
    // SAFETY: inside an SPI connection; values and nulls have one entry per plan parameter.
    unsafe {
        let rc = pg_sys::SPI_execute_plan(plan.upsert, values.as_mut_ptr(), nulls.as_ptr(), false, 0);
        assert!(rc >= 0, "SPI_execute_plan failed: {rc}");
        if pg_sys::SPI_processed == 1 {
            let inserted = first_bool(1) == Some(true);
            return (if inserted { safe_upsert_outcome::inserted } else { safe_upsert_outcome::updated }, None);
        }
        let rc = pg_sys::SPI_execute_plan(plan.classify, values.as_mut_ptr(), nulls.as_ptr(), false, 0);
        assert!(rc >= 0, "SPI_execute_plan failed: {rc}");
        if pg_sys::SPI_processed == 0 {
            // The stored row exists (it was locked) but a row-level security policy hides it.
            return (safe_upsert_outcome::stale, None);
        }
        let outcome = match (first_bool(1), first_bool(2)) {
            (Some(true), Some(true)) => safe_upsert_outcome::duplicate,
            (Some(true), _) if on_tie == OnTie::Error => error::version_tie(&plan.table, &key_text(plan, row)),
            (Some(true), _) => safe_upsert_outcome::tie,
            _ => safe_upsert_outcome::stale,
        };
        (outcome, first_text(3))
    }
}

/// Column `n` (1-based) of the first result row, as a boolean.
unsafe fn first_bool(n: i32) -> Option<bool> {
    let table = pg_sys::SPI_tuptable;
    let mut isnull = false;
    let datum = pg_sys::SPI_getbinval(*(*table).vals, (*table).tupdesc, n, &mut isnull);
    (!isnull).then(|| datum.value() != 0)
}

/// Column `n` (1-based) of the first result row, as text.
unsafe fn first_text(n: i32) -> Option<String> {
    let table = pg_sys::SPI_tuptable;
    let mut isnull = false;
    let datum = pg_sys::SPI_getbinval(*(*table).vals, (*table).tupdesc, n, &mut isnull);
    String::from_datum(datum, isnull)
}

/// The row's key as JSON, for messages.
fn key_text(plan: &Plan, row: &Map<String, Value>) -> String {
    let key: Map<String, Value> = plan
        .key
        .iter()
        .map(|&i| {
            let name = &plan.columns[i].meta.name;
            (name.clone(), row[name].clone())
        })
        .collect();
    Value::Object(key).to_string()
}

/// Runs the column's input function, naming the column and table if it refuses the text.
fn input_value(plan: &Plan, col: &plan_cache::InputColumn, text: &str) -> pg_sys::Datum {
    let cstr = CString::new(text).unwrap_or_else(|_| {
        error::invalid_value(
            &plan.table,
            &col.meta.name,
            PgSqlErrorCode::ERRCODE_UNTRANSLATABLE_CHARACTER,
            "text contains a NUL character",
            None,
        )
    });
    let (table, column) = (&plan.table, &col.meta.name);
    let (input, ioparam, typmod) = (col.input, col.ioparam, col.meta.typmod);
    PgTryBuilder::new(|| unsafe {
        // SAFETY: input was set up for this column's type by fmgr_info_cxt.
        pg_sys::InputFunctionCall(input, cstr.as_ptr() as *mut _, ioparam, typmod)
    })
    .catch_others(|caught| match caught {
        CaughtError::PostgresError(report) => {
            error::invalid_value(table, column, report.sql_error_code(), report.message(), report.detail())
        }
        other => other.rethrow(),
    })
    .execute()
}
