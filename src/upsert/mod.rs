//! The SQL entry points: `safe_upsert` and `safe_upsert_many`, each with one version column or
//! several, and what they share: argument checks, opening the table, the row's JSON.

mod batch;
pub mod catalog;
mod dedupe;
mod delete;
mod input;
mod json_text;
mod jsonb_read;
mod kept;
mod numeric_int;
mod outcome;
pub mod plan_cache;
mod row;
mod scratch;
mod single;
pub mod statement;
mod tracking;
mod winners;

use std::ffi::CStr;

use pgrx::prelude::*;
use pgrx::{AnyArray, Internal};
use serde_json::{Map, Value};

use crate::error::{self, fields};
pub use outcome::register_invalidation_callback as register_outcome_invalidation;
pub use input::text_datum;
pub use single::cell;
use statement::OnTie;


#[pg_extern(sql = false)]
fn safe_upsert_one(
    target: Option<pg_sys::Oid>,
    row: Option<Internal>,
    version_col: Option<&CStr>,
    conflict_cols: Option<AnyArray>,
    on_tie: Option<&str>,
) -> pg_sys::Oid {
    fields::keep_fields(target, || {
        let args = Args::new(target, vec![name_arg(version_col, "version_col")], conflict_cols, on_tie);
        let row = json_row(row, args.relid);
        single::call(args, row)
    })
}

#[pg_extern(sql = false)]
fn safe_upsert_multi(
    target: Option<pg_sys::Oid>,
    row: Option<Internal>,
    version_cols: Option<AnyArray>,
    conflict_cols: Option<AnyArray>,
    on_tie: Option<&str>,
) -> pg_sys::Oid {
    fields::keep_fields(target, || {
        let args = Args::new(target, version_names(version_cols), conflict_cols, on_tie);
        let row = json_row(row, args.relid);
        single::call(args, row)
    })
}

#[pg_extern(sql = false)]
fn safe_upsert_many_one(
    target: Option<pg_sys::Oid>,
    rows: Option<Internal>,
    version_col: Option<&CStr>,
    conflict_cols: Option<AnyArray>,
    on_tie: Option<&str>,
) -> TableIterator<'static, (name!(ord, i32), name!(outcome, pg_sys::Oid))> {
    let outcomes = fields::keep_fields(target, || {
        let args = Args::new(target, vec![name_arg(version_col, "version_col")], conflict_cols, on_tie);
        batch::call(args, jsonb_arg(rows, "rows"))
    });
    TableIterator::new(outcomes)
}

#[pg_extern(sql = false)]
fn safe_upsert_many_multi(
    target: Option<pg_sys::Oid>,
    rows: Option<Internal>,
    version_cols: Option<AnyArray>,
    conflict_cols: Option<AnyArray>,
    on_tie: Option<&str>,
) -> TableIterator<'static, (name!(ord, i32), name!(outcome, pg_sys::Oid))> {
    let outcomes = fields::keep_fields(target, || {
        let args = Args::new(target, version_names(version_cols), conflict_cols, on_tie);
        batch::call(args, jsonb_arg(rows, "rows"))
    });
    TableIterator::new(outcomes)
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

CREATE FUNCTION safe_upsert_many(target regclass, "rows" jsonb, version_col name,
                                 conflict_cols name[] DEFAULT NULL, on_tie text DEFAULT 'skip')
RETURNS TABLE(ord int, outcome safe_upsert_outcome)
LANGUAGE c VOLATILE PARALLEL UNSAFE ROWS 1000
AS 'MODULE_PATHNAME', 'safe_upsert_many_one_wrapper';
COMMENT ON FUNCTION safe_upsert_many(regclass, jsonb, name, name[], text) IS
  'safe_upsert for every object of a JSON array, set-based; one outcome per row, in input order.';

CREATE FUNCTION safe_upsert_many(target regclass, "rows" jsonb, version_cols name[],
                                 conflict_cols name[] DEFAULT NULL, on_tie text DEFAULT 'skip')
RETURNS TABLE(ord int, outcome safe_upsert_outcome)
LANGUAGE c VOLATILE PARALLEL UNSAFE ROWS 1000
AS 'MODULE_PATHNAME', 'safe_upsert_many_multi_wrapper';
COMMENT ON FUNCTION safe_upsert_many(regclass, jsonb, name[], name[], text) IS
  'safe_upsert for every object of a JSON array, set-based, with several version columns compared in order.';
"#,
    name = "safe_upsert_functions",
    requires = ["safe_upsert_outcome"],
);

/// A jsonb argument's value (declared `internal` on the Rust side only to receive the datum as
/// is: the SQL signatures say jsonb).
fn json_arg(arg: Option<Internal>, name: &str, relid: pg_sys::Oid) -> Value {
    let Some(datum) = arg.and_then(Internal::unwrap) else { error::null_argument(name) };
    // SAFETY: the SQL signature makes this a non-NULL jsonb datum.
    match unsafe { jsonb_read::to_value(datum) } {
        Ok(value) => value,
        Err(deep) => {
            let table = catalog::syscache_table_name(relid).unwrap_or_else(|| relid.to_u32().to_string());
            error::json_too_deep(&table, name, deep.key.as_deref(), jsonb_read::MAX_DEPTH)
        }
    }
}

/// A jsonb argument's datum, read in place by the callee.
fn jsonb_arg(arg: Option<Internal>, name: &str) -> pg_sys::Datum {
    arg.and_then(Internal::unwrap).unwrap_or_else(|| error::null_argument(name))
}

/// A jsonb row argument, read in place when it is an object with fields (`row::JsonbRow`).
fn json_row(arg: Option<Internal>, relid: pg_sys::Oid) -> Result<row::JsonbRow, Value> {
    // SAFETY: the SQL signature makes this a jsonb datum (non-NULL: checked), alive until the
    // call ends, which the row does not outlive.
    unsafe { row::JsonbRow::read(jsonb_arg(arg, "row"), relid) }
}

/// The arguments every entry point takes, checked.
pub struct Args {
    pub relid: pg_sys::Oid,
    pub version_cols: Vec<String>,
    pub conflict_cols: Option<Vec<String>>,
    /// as given, checked by `on_tie()` so that a bad value counts as a failed call
    pub on_tie: String,
}

impl Args {
    fn new(target: Option<pg_sys::Oid>, version_cols: Vec<String>, conflict_cols: Option<AnyArray>, on_tie: Option<&str>) -> Args {
        crate::require_preload();
        Args {
            relid: target.unwrap_or_else(|| error::null_argument("target")),
            version_cols,
            conflict_cols: conflict_cols.map(|a| name_array(a.datum(), "conflict_cols")),
            on_tie: on_tie.unwrap_or_else(|| error::null_argument("on_tie")).to_string(),
        }
    }

    pub fn on_tie(&self) -> OnTie {
        OnTie::parse(&self.on_tie).unwrap_or_else(|| error::unknown_on_tie(&self.on_tie))
    }

    /// What the plan cache needs for a row with these (sorted) keys.
    pub fn request<'a>(&'a self, keys: Vec<&'a str>, on_tie: OnTie) -> catalog::Request<'a> {
        catalog::Request {
            relid: self.relid,
            keys,
            version_cols: &self.version_cols,
            conflict_cols: self.conflict_cols.as_deref(),
            on_tie,
            op: catalog::Op::Upsert,
        }
    }
}

fn version_names(version_cols: Option<AnyArray>) -> Vec<String> {
    let names = version_cols
        .map(|a| name_array(a.datum(), "version_cols"))
        .unwrap_or_else(|| error::null_argument("version_cols"));
    if names.is_empty() {
        error::null_argument("version_cols");
    }
    names
}

fn name_arg(value: Option<&CStr>, arg: &str) -> String {
    value
        .map(|c| c.to_string_lossy().into_owned())
        .unwrap_or_else(|| error::null_argument(arg))
}

/// The elements of a `name[]` argument; a NULL element is an error.
pub(crate) fn name_array(datum: pg_sys::Datum, arg: &str) -> Vec<String> {
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

/// Checks that the target is a table we can upsert into and locks it as INSERT would. Taking
/// the lock first also processes pending invalidations, so the plan cache sees the latest DDL.
pub fn open_table(relid: pg_sys::Oid) {
    check_table(relid);
    // SAFETY: the relation exists; the lock is released at transaction end, as INSERT's is.
    unsafe { pg_sys::LockRelationOid(relid, pg_sys::RowExclusiveLock as i32) };
}

/// Raises the documented error unless the target is a table.
pub fn check_table(relid: pg_sys::Oid) {
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
        let name = catalog::table_name(relid);
        error::not_a_table(&name, what);
    }
}

/// The row as a JSON object, or the documented error.
pub fn as_object(relid: pg_sys::Oid, row: &Value) -> &Map<String, Value> {
    let found = match row {
        Value::Object(map) if map.is_empty() => error::row_empty(&catalog::table_name(relid)),
        Value::Object(map) => return map,
        Value::Array(_) => "an array",
        Value::String(_) => "a string",
        Value::Number(_) => "a number",
        Value::Bool(_) => "a boolean",
        Value::Null => "null",
    };
    error::row_not_object(&catalog::table_name(relid), found)
}

