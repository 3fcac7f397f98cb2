//! Turns a row's JSON values into Datums with each column's own input function, naming the
//! column and table when one refuses its value.

use std::ffi::{c_char, CString};

use pgrx::pg_sys::panic::CaughtError;
use pgrx::prelude::*;
use serde_json::{Map, Value};

use super::json_text;
use super::plan_cache::{InputColumn, Plan};
use crate::error;

pub const NOT_NULL: c_char = b' ' as c_char;
pub const NULL: c_char = b'n' as c_char;

/// The row's values in parameter order, as (datums, SPI null flags). A key or version column
/// without a value is an error.
pub fn convert(plan: &Plan, row: &Map<String, Value>) -> (Vec<pg_sys::Datum>, Vec<c_char>) {
    let mut values = Vec::with_capacity(plan.columns.len());
    let mut nulls = Vec::with_capacity(plan.columns.len());
    for (i, col) in plan.columns.iter().enumerate() {
        pgrx::pg_sys::check_for_interrupts!();
        let value = row.get(&col.meta.name).unwrap_or(&Value::Null);
        match json_text::input_text(value, col.meta.kind) {
            Some(text) => {
                values.push(input_value(plan, col, &text));
                nulls.push(NOT_NULL);
            }
            None if plan.is_key(i) => error::key_missing(plan.table(), &col.meta.name),
            None if plan.is_version(i) => error::version_missing(plan.table(), &col.meta.name),
            None => {
                values.push(pg_sys::Datum::from(0));
                nulls.push(NULL);
            }
        }
    }
    (values, nulls)
}

/// Runs the column's input function, naming the column and table if it refuses the text.
fn input_value(plan: &Plan, col: &InputColumn, text: &str) -> pg_sys::Datum {
    let (table, column) = (plan.table(), &col.meta.name);
    let cstr = CString::new(text).unwrap_or_else(|_| {
        error::invalid_value(table, column, PgSqlErrorCode::ERRCODE_UNTRANSLATABLE_CHARACTER, "text contains a NUL character", None)
    });
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
