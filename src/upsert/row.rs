//! A row as the entry points hold it: the jsonb argument's fields read in place, for the
//! statement's parameters and a batch's grouping by columns, and the same row as a
//! `serde_json` map, made only when a conflict is logged or an error describes the row.

use std::cell::OnceCell;
use std::ffi::c_char;

use pgrx::pg_sys;
use serde_json::{Map, Value};

use super::input;
use super::jsonb_read::{self, Field};
use super::plan_cache::Plan;
use super::catalog;
use crate::error;
use crate::stats;

pub trait Row {
    /// The row as a JSON map.
    fn map(&self) -> &Map<String, Value>;
    /// The row's values in the plan's parameter order, as (datums, SPI null flags).
    fn values(&self, plan: &Plan) -> (Vec<pg_sys::Datum>, Vec<c_char>);
    /// One field's value, NULL when the row lacks it.
    fn field(&self, name: &str) -> Value {
        self.map().get(name).cloned().unwrap_or(Value::Null)
    }
    /// The row as the conflict log shows it (`stats::cut_row`).
    fn log_text(&self) -> String {
        stats::cut_row(self.map(), stats::VALUE_BYTES, stats::ROW_BYTES)
    }
}

impl Row for Map<String, Value> {
    fn map(&self) -> &Map<String, Value> {
        self
    }

    fn values(&self, plan: &Plan) -> (Vec<pg_sys::Datum>, Vec<c_char>) {
        input::convert(plan, self)
    }
}

/// A jsonb object, the argument or an element of it, read in place.
pub struct JsonbRow {
    container: *mut pg_sys::JsonbContainer,
    relid: pg_sys::Oid,
    /// sorted by key
    fields: Vec<Field>,
    map: OnceCell<Value>,
    /// how deep the object may nest, and the argument holding it, for the error that says so
    depth: usize,
    arg: &'static str,
}

impl JsonbRow {
    /// The row of a jsonb argument that holds an object with fields; for anything else, the
    /// whole document, for `as_object` to raise the error that says what it is.
    ///
    /// # Safety
    /// `datum` is a non-NULL jsonb datum that lives until the end of the call; the row must not
    /// outlive the call.
    pub unsafe fn read(datum: pg_sys::Datum, relid: pg_sys::Oid) -> Result<JsonbRow, Value> {
        // SAFETY: the caller's contract; the root lives as long as the jsonb.
        unsafe { JsonbRow::of(&mut (*jsonb_read::detoast(datum)).root, relid, jsonb_read::MAX_DEPTH, "row") }
    }

    /// The rows of a jsonb argument that holds an array, each as `read` gives it (an element
    /// nests one level below the array); None when it holds no array.
    ///
    /// # Safety
    /// As for `read`.
    pub unsafe fn read_array(datum: pg_sys::Datum, relid: pg_sys::Oid) -> Option<Vec<Result<JsonbRow, Value>>> {
        let depth = jsonb_read::MAX_DEPTH - 1;
        // SAFETY: the caller's contract; the elements point into the detoasted jsonb, which
        // lives as long.
        unsafe {
            let elements = jsonb_read::array_elements(jsonb_read::detoast(datum))?;
            Some(
                elements
                    .iter()
                    .map(|v| {
                        if v.type_ == pg_sys::jbvType::jbvBinary {
                            JsonbRow::of(v.val.binary.data, relid, depth, "rows")
                        } else {
                            Err(jsonb_read::field_value(v, depth).unwrap_or(Value::Null))
                        }
                    })
                    .collect(),
            )
        }
    }

    /// # Safety
    /// `container` is in a live, detoasted jsonb that outlives the row.
    unsafe fn of(container: *mut pg_sys::JsonbContainer, relid: pg_sys::Oid, depth: usize, arg: &'static str) -> Result<JsonbRow, Value> {
        // SAFETY: the caller's contract.
        match unsafe { jsonb_read::object_fields(container) } {
            Some(fields) => Ok(JsonbRow { container, relid, fields, map: OnceCell::new(), depth, arg }),
            // SAFETY: as above.
            None => Err(unsafe { whole(container, depth, relid, arg) }),
        }
    }

    /// The keys, sorted.
    pub fn keys(&self) -> Vec<&str> {
        self.fields.iter().map(|f| f.key).collect()
    }

    /// `values`, giving the columns marked in `as_text` as text (see `input::convert_fields`).
    pub fn values_as(&self, plan: &Plan, as_text: &[bool]) -> (Vec<pg_sys::Datum>, Vec<c_char>) {
        input::convert_fields(plan, &self.fields, as_text, (self.depth - 1, self.arg))
    }

    /// A field's value; one nested too deep raises the error the whole row's map raises.
    fn field_value(&self, field: &Field) -> Value {
        // SAFETY: the field points into the jsonb, which lives as long as the row.
        unsafe { jsonb_read::field_value(&field.value, self.depth - 1) }.unwrap_or_else(|_| {
            self.map();
            error::internal("a row too deep to log was not too deep to read")
        })
    }
}

impl Row for JsonbRow {
    fn map(&self) -> &Map<String, Value> {
        // SAFETY: the jsonb lives as long as the row.
        let value = self.map.get_or_init(|| unsafe { whole(self.container, self.depth, self.relid, self.arg) });
        value.as_object().unwrap_or_else(|| error::internal("a jsonb row read as something else"))
    }

    fn values(&self, plan: &Plan) -> (Vec<pg_sys::Datum>, Vec<c_char>) {
        self.values_as(plan, &[])
    }

    // A conflict logged names the key and version and shows the row cut: read from the fields
    // themselves, a value at a time, rather than from the whole row made a map.
    fn field(&self, name: &str) -> Value {
        match self.fields.binary_search_by(|f| f.key.cmp(name)) {
            Ok(i) => self.field_value(&self.fields[i]),
            Err(_) => Value::Null,
        }
    }

    fn log_text(&self) -> String {
        let members = self.fields.iter().map(|f| {
            // SAFETY: the field points into the jsonb, which lives as long as the row.
            let short = unsafe { jsonb_read::scalar_json(&f.value, stats::VALUE_BYTES) };
            (f.key, short.unwrap_or_else(|| stats::cut_value(&self.field_value(f), stats::VALUE_BYTES)))
        });
        stats::cut_members(members, stats::VALUE_BYTES, stats::ROW_BYTES)
    }
}


/// The whole container, nested at most `depth` levels deep, or the error for one nested deeper,
/// naming the argument `arg` that holds it.
///
/// # Safety
/// `container` is in a live, detoasted jsonb.
unsafe fn whole(container: *mut pg_sys::JsonbContainer, depth: usize, relid: pg_sys::Oid, arg: &str) -> Value {
    // SAFETY: the caller's contract.
    unsafe { jsonb_read::container_value(container, depth) }.unwrap_or_else(|deep| {
        let table = catalog::syscache_table_name(relid).unwrap_or_else(|| relid.to_u32().to_string());
        error::json_too_deep(&table, arg, deep.key.as_deref(), jsonb_read::MAX_DEPTH)
    })
}
