//! Turns a row's JSON values into Datums with each column's own input function, naming the
//! column and table when one refuses its value.

use std::ffi::{c_char, CString};

use pgrx::pg_sys::panic::CaughtError;
use pgrx::prelude::*;
use serde_json::{Map, Value};

use super::json_text;
use super::jsonb_read::{self, Field};
use super::numeric_int;
use super::plan_cache::{InputColumn, Plan};
use crate::error::{self, fields::{self, Fields}};

pub const NOT_NULL: c_char = b' ' as c_char;
pub const NULL: c_char = b'n' as c_char;

/// The row's values in parameter order, as (datums, SPI null flags). A key or version column
/// without a value is an error.
pub fn convert(plan: &Plan, row: &Map<String, Value>) -> (Vec<pg_sys::Datum>, Vec<c_char>) {
    parameters(plan, |_, col| {
        let text = json_text::input_text(row.get(&col.meta.name).unwrap_or(&Value::Null), col.meta.kind)?;
        Some(input_value(plan, col, &text))
    })
}

/// The plan's parameters, as (datums, SPI null flags), from each column's datum (None for a
/// missing value or JSON null); a key or version column without a value is an error.
fn parameters(plan: &Plan, mut datum: impl FnMut(usize, &InputColumn) -> Option<pg_sys::Datum>) -> (Vec<pg_sys::Datum>, Vec<c_char>) {
    let mut values = Vec::with_capacity(plan.columns.len());
    let mut nulls = Vec::with_capacity(plan.columns.len());
    for (i, col) in plan.columns.iter().enumerate() {
        pgrx::pg_sys::check_for_interrupts!();
        match datum(i, col) {
            Some(value) => {
                values.push(value);
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

/// How a column takes a jsonb scalar of the matching kind without its input function: the
/// datum the input function would make from the scalar's text, made directly. Only for these
/// built-in types themselves (a domain's input function checks its constraints) and without a
/// type modifier (which the input function applies).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direct {
    /// every value goes through the input function
    No,
    /// a JSON boolean: `boolin` of "true"/"false"
    Bool,
    /// a JSON number that `numeric_out` prints without a point, within range: `int2in` and
    /// friends of that text (others, which they refuse or which overflow, take their way)
    Int(i64, i64),
    /// a JSON number: jsonb keeps it as a numeric, which `numeric_in` of its text gives back
    Numeric,
    /// a JSON string: `textin` and `varcharin` copy the bytes
    Text,
}

impl Direct {
    pub fn of(typid: pg_sys::Oid, typmod: i32) -> Direct {
        match typid {
            pg_sys::BOOLOID => Direct::Bool,
            pg_sys::INT2OID => Direct::Int(i16::MIN as i64, i16::MAX as i64),
            pg_sys::INT4OID => Direct::Int(i32::MIN as i64, i32::MAX as i64),
            pg_sys::INT8OID => Direct::Int(i64::MIN, i64::MAX),
            pg_sys::NUMERICOID if typmod < 0 => Direct::Numeric,
            pg_sys::TEXTOID => Direct::Text,
            pg_sys::VARCHAROID if typmod < 0 => Direct::Text,
            _ => Direct::No,
        }
    }
}

/// `convert` for a row read in place (`jsonb_read::object_fields`): `fields` sorted by key, the
/// plan's columns a subsequence of them in the same order. Scalars that a column takes
/// directly (`Direct`) skip the text and the input function; everything else goes the way
/// `convert` goes, with the same errors. The columns marked in `as_text` are checked by their
/// input function but given as text, for a statement that casts them (see `Column::text_cast`).
/// `nesting` is how deep a field's value may nest and the argument that holds the row, for the
/// error that says so.
pub fn convert_fields(plan: &Plan, fields: &[Field], as_text: &[bool], nesting: (usize, &str)) -> (Vec<pg_sys::Datum>, Vec<c_char>) {
    let mut rest = fields.iter();
    parameters(plan, |i, col| {
        // the columns come in the fields' order: the search goes on from the last one found
        let mut probe = rest.clone();
        let field = probe.find(|f| f.key == col.meta.name)?;
        rest = probe;
        // SAFETY: the fields point into the call's jsonb argument, alive until the call ends.
        unsafe { field_datum(plan, col, &field.value, as_text.get(i) == Some(&true), nesting) }
    })
}

/// The datum of one field's value for the column, or None for JSON null.
///
/// # Safety
/// `v` points into a live jsonb.
unsafe fn field_datum(plan: &Plan, col: &InputColumn, v: &pg_sys::JsonbValue, as_text: bool, nesting: (usize, &str)) -> Option<pg_sys::Datum> {
    use pg_sys::jbvType as J;
    // SAFETY: the union is read as the variant `type_` names; the caller keeps the jsonb alive
    // for the statement that uses the datums (a numeric is passed in place, as the jsonb holds
    // it: a varlena with a 4-byte header, checked).
    unsafe {
        match (col.direct, v.type_) {
            (_, J::jbvNull) => return None,
            (Direct::Bool, J::jbvBool) => return Some(pg_sys::Datum::from(v.val.boolean)),
            (Direct::Int(min, max), J::jbvNumeric) => {
                let num = v.val.numeric as *const pg_sys::varlena;
                if pgrx::varlena::varatt_is_4b_u(num) {
                    let data = std::slice::from_raw_parts(
                        pgrx::varlena::vardata_4b(num) as *const u8,
                        pgrx::varlena::varsize_4b(num) - pg_sys::VARHDRSZ,
                    );
                    if let Some(n) = numeric_int::integer(data, min, max) {
                        return Some(pg_sys::Datum::from(n));
                    }
                }
            }
            (Direct::Numeric, J::jbvNumeric) if pgrx::varlena::varatt_is_4b_u(v.val.numeric as *const pg_sys::varlena) => {
                return Some(pg_sys::Datum::from(v.val.numeric));
            }
            (Direct::Text, J::jbvString) => {
                let s = v.val.string;
                let bytes = std::slice::from_raw_parts(s.val as *const u8, s.len.max(0) as usize);
                if !bytes.contains(&0) {
                    return Some(pg_sys::Datum::from(pg_sys::cstring_to_text_with_len(s.val, s.len)));
                }
            }
            _ => {}
        }
        // a nested document's outermost key is the field's
        let (depth, arg) = nesting;
        let value = jsonb_read::field_value(v, depth)
            .unwrap_or_else(|_| error::json_too_deep(plan.table(), arg, Some(&col.meta.name), jsonb_read::MAX_DEPTH));
        let text = json_text::input_text(&value, col.meta.kind)?;
        let datum = input_value(plan, col, &text);
        if as_text {
            // Checked by the input function, sent as text: such a column's type is an array or
            // a domain over one, a varlena palloc'd by its input function and used nowhere else.
            pg_sys::pfree(datum.cast_mut_ptr());
            return Some(text_datum(&text));
        }
        Some(datum)
    }
}

/// A text datum holding `s`, palloc'd.
pub fn text_datum(s: &str) -> pg_sys::Datum {
    // SAFETY: cstring_to_text_with_len copies `len` bytes into a new text.
    pg_sys::Datum::from(unsafe { pg_sys::cstring_to_text_with_len(s.as_ptr().cast(), s.len() as i32) })
}

/// A value that travels as text (`Column::text_cast`), as a value of the column's type.
pub(super) fn input_text_datum(plan: &Plan, column: usize, text: pg_sys::Datum) -> pg_sys::Datum {
    // SAFETY: the datum is a text value made by `text_datum`.
    let text = unsafe { text_contents(text) };
    input_value(plan, &plan.columns[column], &text)
}

/// A text datum's contents.
///
/// # Safety
/// `text` is a non-NULL text datum.
unsafe fn text_contents(text: pg_sys::Datum) -> String {
    // SAFETY: the caller's contract; the C string is palloc'd and copied.
    unsafe {
        let s = pg_sys::text_to_cstring(text.cast_mut_ptr());
        let owned = std::ffi::CStr::from_ptr(s).to_string_lossy().into_owned();
        pg_sys::pfree(s.cast());
        owned
    }
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
