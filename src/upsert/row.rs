//! A row as the single-row entry points hold it: the jsonb argument's fields read in place, for
//! the statement's parameters, and the same row as a `serde_json` map, made only when a conflict
//! is logged or an error describes the row. Batches hold maps from the start (`Row` for
//! `Map`), as they group and compare rows by their keys.

use std::cell::OnceCell;
use std::ffi::c_char;

use pgrx::pg_sys;
use serde_json::{Map, Value};

use super::input;
use super::jsonb_read::{self, Field};
use super::plan_cache::Plan;
use super::catalog;
use crate::error;

pub trait Row {
    /// The row as a JSON map.
    fn map(&self) -> &Map<String, Value>;
    /// The row's values in the plan's parameter order, as (datums, SPI null flags).
    fn values(&self, plan: &Plan) -> (Vec<pg_sys::Datum>, Vec<c_char>);
}

impl Row for Map<String, Value> {
    fn map(&self) -> &Map<String, Value> {
        self
    }

    fn values(&self, plan: &Plan) -> (Vec<pg_sys::Datum>, Vec<c_char>) {
        input::convert(plan, self, &[])
    }
}

/// A jsonb object argument, read in place.
pub struct JsonbRow {
    jsonb: *mut pg_sys::Jsonb,
    relid: pg_sys::Oid,
    /// sorted by key
    fields: Vec<Field>,
    map: OnceCell<Value>,
}

impl JsonbRow {
    /// The row of a jsonb argument that holds an object with fields; for anything else, the
    /// whole document, for `as_object` to raise the error that says what it is.
    ///
    /// # Safety
    /// `datum` is a non-NULL jsonb datum that lives until the end of the call; the row must not
    /// outlive the call.
    pub unsafe fn read(datum: pg_sys::Datum, relid: pg_sys::Oid) -> Result<JsonbRow, Value> {
        // SAFETY: the caller's contract.
        let jsonb = unsafe { jsonb_read::detoast(datum) };
        // SAFETY: `jsonb` is detoasted and lives until the end of the call.
        match unsafe { jsonb_read::object_fields(jsonb) } {
            Some(fields) => Ok(JsonbRow { jsonb, relid, fields, map: OnceCell::new() }),
            // SAFETY: as above.
            None => Err(unsafe { whole(jsonb, relid) }),
        }
    }

    /// The keys, sorted.
    pub fn keys(&self) -> Vec<&str> {
        self.fields.iter().map(|f| f.key).collect()
    }
}

impl Row for JsonbRow {
    fn map(&self) -> &Map<String, Value> {
        // SAFETY: the jsonb lives as long as the row.
        let value = self.map.get_or_init(|| unsafe { whole(self.jsonb, self.relid) });
        value.as_object().unwrap_or_else(|| error::internal("a jsonb row read as something else"))
    }

    fn values(&self, plan: &Plan) -> (Vec<pg_sys::Datum>, Vec<c_char>) {
        input::convert_fields(plan, &self.fields)
    }
}

/// The whole document, or the error for one nested too deep.
///
/// # Safety
/// `jsonb` is a live, detoasted jsonb.
unsafe fn whole(jsonb: *mut pg_sys::Jsonb, relid: pg_sys::Oid) -> Value {
    // SAFETY: the caller's contract.
    unsafe { jsonb_read::to_value(pg_sys::Datum::from(jsonb)) }.unwrap_or_else(|deep| {
        let table = catalog::syscache_table_name(relid).unwrap_or_else(|| relid.to_u32().to_string());
        error::json_too_deep(&table, "row", deep.key.as_deref(), jsonb_read::MAX_DEPTH)
    })
}
