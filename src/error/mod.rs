//! Every error a caller can cause, in one place: its SQLSTATE, a message naming the table and
//! column at fault, and a detail or hint where one helps. README's error table mirrors this file.
//! `fields` gives them, and PostgreSQL's own errors, the fields drivers read.

pub mod fields;

use std::any::Any;

use pgrx::pg_sys::panic::{CaughtError, ErrorReport, ErrorReportWithLevel};
use pgrx::{PgLogLevel, PgSqlErrorCode as Code};

struct Error {
    code: Code,
    message: String,
    detail: Option<String>,
    hint: Option<String>,
    /// the table's are filled in by `fields::keep_fields`, which knows the call's table
    fields: fields::Fields,
}

fn error(code: Code, message: impl Into<String>) -> Error {
    Error { code, message: message.into(), detail: None, hint: None, fields: fields::Fields::default() }
}

impl Error {
    fn detail(mut self, d: impl Into<String>) -> Self {
        self.detail = Some(d.into());
        self
    }
    fn hint(mut self, h: impl Into<String>) -> Self {
        self.hint = Some(h.into());
        self
    }
    fn column(mut self, c: &str) -> Self {
        self.fields.column = Some(c.to_string());
        self
    }
    fn raise(self) -> ! {
        fields::set_own(self.fields);
        let mut report = ErrorReport::new(self.code, self.message, "pg_safeupsert");
        if let Some(d) = self.detail {
            report = report.set_detail(d);
        }
        if let Some(h) = self.hint {
            report = report.set_hint(h);
        }
        report.report(PgLogLevel::ERROR);
        unreachable!("ereport(ERROR) returned")
    }
}

pub fn not_preloaded() -> ! {
    error(Code::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE, "pg_safeupsert must be loaded via shared_preload_libraries")
        .hint("Add pg_safeupsert to shared_preload_libraries in postgresql.conf and restart the server.")
        .raise()
}

pub fn null_argument(arg: &str) -> ! {
    error(Code::ERRCODE_NULL_VALUE_NOT_ALLOWED, format!("argument \"{arg}\" must not be null")).raise()
}

pub fn not_utf8() -> ! {
    error(Code::ERRCODE_CHARACTER_NOT_IN_REPERTOIRE, "pg_safeupsert reads JSON text as UTF-8, and this text is not")
        .hint("Use pg_safeupsert in a database with UTF8 encoding.")
        .raise()
}

pub fn json_too_deep(table: &str, arg: &str, key: Option<&str>, max: usize) -> ! {
    let under = key.map(|k| format!(" under key \"{k}\"")).unwrap_or_default();
    error(Code::ERRCODE_STATEMENT_TOO_COMPLEX, format!("{arg} for table {table} nests JSON deeper than {max} levels{under}"))
        .hint("Store such a document as text, or flatten it.")
        .raise()
}

pub fn table_missing(relid: u32) -> ! {
    error(Code::ERRCODE_UNDEFINED_TABLE, format!("relation with OID {relid} does not exist")).raise()
}

pub fn not_a_table(table: &str, kind: &str) -> ! {
    error(Code::ERRCODE_WRONG_OBJECT_TYPE, format!("{table} is not a table"))
        .detail(format!("{table} is {kind}."))
        .hint("safe_upsert writes to ordinary and partitioned tables.")
        .raise()
}

pub fn row_not_object(table: &str, found: &str) -> ! {
    error(Code::ERRCODE_INVALID_PARAMETER_VALUE, format!("row for table {table} must be a JSON object, not {found}"))
        .hint("Pass one object whose keys are column names, e.g. '{\"id\": 1, \"version\": 2}'.")
        .raise()
}

pub fn rows_not_array(table: &str) -> ! {
    error(Code::ERRCODE_INVALID_PARAMETER_VALUE, format!("rows for table {table} must be a JSON array of objects"))
        .hint("Pass e.g. '[{\"id\": 1, \"version\": 2}, {\"id\": 2, \"version\": 1}]'.")
        .raise()
}

pub fn row_empty(table: &str) -> ! {
    error(Code::ERRCODE_INVALID_PARAMETER_VALUE, format!("row for table {table} is an empty JSON object"))
        .hint("The row must carry at least the key and version columns.")
        .raise()
}

pub fn unknown_column(table: &str, key: &str) -> ! {
    error(Code::ERRCODE_UNDEFINED_COLUMN, format!("JSON key \"{key}\" is not a column of table {table}"))
        .hint("Every key of the row must name a column of the table; remove or rename it.")
        .column(key)
        .raise()
}

pub fn generated_column(table: &str, column: &str, how: &str) -> ! {
    error(Code::ERRCODE_GENERATED_ALWAYS, format!("column \"{column}\" of table {table} cannot be written"))
        .detail(format!("Column \"{column}\" is {how}."))
        .hint("Leave the column out of the row; PostgreSQL computes it.")
        .column(column)
        .raise()
}

pub fn key_missing(table: &str, column: &str) -> ! {
    error(Code::ERRCODE_NOT_NULL_VIOLATION, format!("key column \"{column}\" of table {table} is missing or null in the row"))
        .hint("Every column of the conflict key must be present and not null.")
        .column(column)
        .raise()
}

pub fn version_column_unknown(table: &str, column: &str) -> ! {
    error(Code::ERRCODE_UNDEFINED_COLUMN, format!("version column \"{column}\" does not exist in table {table}"))
        .column(column)
        .raise()
}

pub fn version_column_is_key(table: &str, column: &str) -> ! {
    error(Code::ERRCODE_INVALID_COLUMN_REFERENCE, format!("version column \"{column}\" of table {table} is part of the conflict key"))
        .hint("The version must be a column outside the key, such as updated_at.")
        .column(column)
        .raise()
}

pub fn version_column_unordered(table: &str, column: &str, type_name: &str) -> ! {
    error(Code::ERRCODE_UNDEFINED_FUNCTION, format!("version column \"{column}\" of table {table} has type {type_name}, which has no ordering"))
        .hint("Use a type with a default btree operator class, such as bigint, timestamptz or numeric.")
        .column(column)
        .raise()
}

pub fn version_missing(table: &str, column: &str) -> ! {
    error(Code::ERRCODE_NULL_VALUE_NOT_ALLOWED, format!("version column \"{column}\" of table {table} is missing or null in the row"))
        .hint("Every row must carry its version.")
        .column(column)
        .raise()
}

pub fn conflict_column_unknown(table: &str, column: &str) -> ! {
    error(Code::ERRCODE_UNDEFINED_COLUMN, format!("conflict column \"{column}\" does not exist in table {table}"))
        .column(column)
        .raise()
}

pub fn no_primary_key(table: &str) -> ! {
    error(Code::ERRCODE_INVALID_COLUMN_REFERENCE, format!("table {table} has no primary key"))
        .hint("Pass conflict_cols naming the columns of a unique index.")
        .raise()
}

pub fn no_unique_index(table: &str, columns: &str) -> ! {
    error(Code::ERRCODE_INVALID_COLUMN_REFERENCE, format!("no unique index of table {table} has exactly the columns ({columns})"))
        .hint("conflict_cols must name the columns of a non-partial, non-deferrable unique index or constraint, in any order.")
        .raise()
}

pub fn unknown_on_tie(value: &str) -> ! {
    error(Code::ERRCODE_INVALID_PARAMETER_VALUE, format!("invalid on_tie value \"{value}\""))
        .hint("on_tie is one of 'skip', 'apply', 'error'.")
        .raise()
}

pub fn version_tie(table: &str, key: &str) -> ! {
    error(Code::ERRCODE_INTEGRITY_CONSTRAINT_VIOLATION, format!("row of table {table} with key {key} has the same version and other values"))
        .detail("on_tie is 'error': a write whose version equals the stored one must carry the same values.")
        .hint("Give each change a distinct version, or call with on_tie => 'skip' or 'apply'.")
        .raise()
}

/// A value that its column's input function refused: keeps PostgreSQL's SQLSTATE and words,
/// and says which column of which table.
pub fn invalid_value(table: &str, column: &str, code: Code, cause: &str, detail: Option<&str>, mut given: fields::Fields) -> ! {
    let mut e = error(code, format!("invalid value for column \"{column}\" of table {table}: {cause}"));
    if let Some(d) = detail {
        e = e.detail(d);
    }
    // The type's own fields (a domain's constraint and name) stay; the table's are the call's.
    given.schema = None;
    given.table = None;
    e.fields = given;
    e.column(column).raise()
}

/// The PostgreSQL error carried by a panic payload, whether it came from PostgreSQL itself or
/// from one of the errors above; None for a Rust panic.
pub fn caught(payload: &(dyn Any + Send)) -> Option<&ErrorReportWithLevel> {
    match payload.downcast_ref::<CaughtError>() {
        Some(CaughtError::PostgresError(r)) | Some(CaughtError::ErrorReport(r)) => Some(r),
        Some(CaughtError::RustPanic { .. }) => None,
        None => payload.downcast_ref::<ErrorReportWithLevel>(),
    }
}

/// An SPI call that failed: not a caller's mistake, but named with SPI's own word for it.
pub fn spi_failed(what: &str, rc: i32) -> ! {
    // SAFETY: SPI_result_code_string returns a static string for any code.
    let code = unsafe { std::ffi::CStr::from_ptr(pgrx::pg_sys::SPI_result_code_string(rc)) };
    error(Code::ERRCODE_INTERNAL_ERROR, format!("pg_safeupsert: {what} failed: {}", code.to_string_lossy())).raise()
}

/// One of the extension's own objects is missing (removed from it by hand).
pub fn extension_object_missing(what: &str) -> ! {
    error(Code::ERRCODE_UNDEFINED_OBJECT, format!("{what} of extension pg_safeupsert does not exist"))
        .hint("Drop and create the extension again (DROP EXTENSION pg_safeupsert; CREATE EXTENSION pg_safeupsert).")
        .raise()
}

pub fn key_column_without_equality(table: &str, column: &str, type_name: &str) -> ! {
    error(Code::ERRCODE_UNDEFINED_FUNCTION, format!("key column \"{column}\" of table {table} has type {type_name}, which has no default equality operator"))
        .hint("The key's unique index must use its type's default btree operator class.")
        .column(column)
        .raise()
}

pub fn tombstones_of_other_columns(table: &str, key: &[String], versions: &[String], want_key: &[String], want_versions: &[String]) -> ! {
    let list = |names: &[String]| names.join(", ");
    error(
        Code::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
        format!("the tombstones of table {table} are kept for key ({}) and version ({})", list(key), list(versions)),
    )
    .detail(format!("This call uses key ({}) and version ({}).", list(want_key), list(want_versions)))
    .hint(format!("Call with the tombstones' columns, or remove them first: SELECT safe_upsert_purge_tombstones('{table}');"))
    .raise()
}

pub fn tombstones_compare_otherwise(table: &str, column: &str) -> ! {
    error(
        Code::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
        format!("column \"{column}\" of table {table} no longer has the type or collation of its tombstones"),
    )
    .hint(format!("Remove the tombstones: SELECT safe_upsert_purge_tombstones('{table}');"))
    .column(column)
    .raise()
}

pub fn delete_not_permitted(table: &str) -> ! {
    error(Code::ERRCODE_INSUFFICIENT_PRIVILEGE, format!("permission denied for table {table}"))
        .detail("safe_delete needs the DELETE and SELECT privileges on the table.")
        .raise()
}

pub fn delete_hidden_row(table: &str, key: &str) -> ! {
    error(Code::ERRCODE_INSUFFICIENT_PRIVILEGE, format!("the stored row of table {table} with key {key} is hidden by row-level security"))
        .detail("A delete that cannot see or remove the stored row cannot tell it apart from an absent one.")
        .raise()
}

pub fn delete_after_snapshot(table: &str, key: &str) -> ! {
    error(Code::ERRCODE_T_R_SERIALIZATION_FAILURE, "could not serialize access due to concurrent insert")
        .detail(format!("The row of table {table} with key {key} was written after this transaction's snapshot was taken."))
        .hint("Retry the transaction.")
        .raise()
}

pub fn purge_not_owner(table: &str) -> ! {
    error(Code::ERRCODE_INSUFFICIENT_PRIVILEGE, format!("must be owner of table {table} to purge its tombstones"))
        .raise()
}

/// An internal invariant that does not hold: reported as an error, never a crash.
pub fn internal(what: &str) -> ! {
    error(Code::ERRCODE_INTERNAL_ERROR, format!("pg_safeupsert: {what}")).raise()
}
