//! Turns a row's JSON values into Datums with each column's own input function, naming the
//! column and table when one refuses its value.

use std::ffi::{c_char, CString};

use pgrx::pg_sys::panic::CaughtError;
use pgrx::prelude::*;
use serde_json::{Map, Value};

use super::json_text;
use super::plan_cache::{InputColumn, Plan};
use crate::error::{self, fields::{self, Fields}};

pub const NOT_NULL: c_char = b' ' as c_char;
pub const NULL: c_char = b'n' as c_char;

/// The row's values in parameter order, as (datums, SPI null flags). A key or version column
/// without a value is an error. The columns marked in `as_text` are checked by their input
/// function but given as text, for a statement that casts them (see `Column::text_cast`).
pub fn convert(plan: &Plan, row: &Map<String, Value>, as_text: &[bool]) -> (Vec<pg_sys::Datum>, Vec<c_char>) {
    let mut values = Vec::with_capacity(plan.columns.len());
    let mut nulls = Vec::with_capacity(plan.columns.len());
    for (i, col) in plan.columns.iter().enumerate() {
        pgrx::pg_sys::check_for_interrupts!();
        let value = row.get(&col.meta.name).unwrap_or(&Value::Null);
        match json_text::input_text(value, col.meta.kind) {
            Some(text) => {
                let value = input_value(plan, col, &text);
                if as_text.get(i) == Some(&true) {
                    // SAFETY: such a column's type is an array or a domain over one: a varlena,
                    // palloc'd by its input function and used nowhere else.
                    unsafe { pg_sys::pfree(value.cast_mut_ptr()) };
                    values.push(text_datum(&text));
                } else {
                    values.push(value);
                }
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

/// A text datum holding `s`, palloc'd.
pub fn text_datum(s: &str) -> pg_sys::Datum {
    // SAFETY: cstring_to_text_with_len copies `len` bytes into a new text.
    pg_sys::Datum::from(unsafe { pg_sys::cstring_to_text_with_len(s.as_ptr().cast(), s.len() as i32) })
}

/// Runs the column's input function, naming the column and table if it refuses the text.
fn input_value(plan: &Plan, col: &InputColumn, text: &str) -> pg_sys::Datum {
    let (table, column) = (plan.table(), &col.meta.name);
    let cstr = CString::new(text).unwrap_or_else(|_| {
        let fields = Fields { datatype: Some(col.meta.type_name.clone()), ..Default::default() };
        error::invalid_value(table, column, PgSqlErrorCode::ERRCODE_UNTRANSLATABLE_CHARACTER, "text contains a NUL character", None, fields)
    });
    let (input, ioparam, typmod) = (col.input, col.ioparam, col.meta.typmod);
    PgTryBuilder::new(|| unsafe {
        // SAFETY: input was set up for this column's type by fmgr_info_cxt.
        pg_sys::InputFunctionCall(input, cstr.as_ptr() as *mut _, ioparam, typmod)
    })
    .catch_others(|caught| match caught {
        CaughtError::PostgresError(report) => {
            // A domain's check names its constraint and type; other input functions name nothing.
            let mut fields = fields::captured(&report).unwrap_or_default();
            fields.datatype.get_or_insert_with(|| col.meta.type_name.clone());
            error::invalid_value(table, column, report.sql_error_code(), report.message(), report.detail(), fields)
        }
        other => other.rethrow(),
    })
    .execute()
}
