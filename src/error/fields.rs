//! The fields of an error that drivers read besides SQLSTATE and message (psycopg's `e.diag`):
//! schema, table, column, data type and constraint names.
//!
//! pgrx's error reports carry SQLSTATE, message, detail and hint only, both for our own errors
//! and when it raises again an error that PostgreSQL raised inside a call (a unique violation
//! names its constraint, a domain's check its constraint and type). So each upsert entry point
//! runs under `keep_fields`:
//!
//! - while the call runs, an error context callback copies the fields of each ERROR PostgreSQL
//!   raises: they live in its error data only while that error is being raised;
//! - when the call fails, the error leaving it is raised again with the message prefixed by the
//!   failing row's position (`row N: `), and a second context callback, left on the error context
//!   stack for pgrx's final ereport, fills in the fields: those PostgreSQL gave the error, or for
//!   our own errors the table, column and type they are about. Whoever catches that error
//!   restores the stack it had (PG_TRY does, as does the main loop), so the callback, allocated
//!   in the call's memory, never outlives it.

use std::cell::{Cell, RefCell};
use std::ffi::{c_char, c_void, CString};
use std::panic::AssertUnwindSafe;

use pgrx::pg_sys;
use pgrx::pg_sys::panic::{CaughtError, ErrorReport, ErrorReportWithLevel};
use pgrx::PgLogLevel;

/// The names an error is about; None where it says nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fields {
    pub schema: Option<String>,
    pub table: Option<String>,
    pub column: Option<String>,
    pub datatype: Option<String>,
    pub constraint: Option<String>,
}

impl Fields {
    fn is_empty(&self) -> bool {
        *self == Fields::default()
    }

    fn entries(&self) -> [(u8, &Option<String>); 5] {
        [
            (pg_sys::PG_DIAG_SCHEMA_NAME, &self.schema),
            (pg_sys::PG_DIAG_TABLE_NAME, &self.table),
            (pg_sys::PG_DIAG_COLUMN_NAME, &self.column),
            (pg_sys::PG_DIAG_DATATYPE_NAME, &self.datatype),
            (pg_sys::PG_DIAG_CONSTRAINT_NAME, &self.constraint),
        ]
    }
}

/// A PostgreSQL error seen while a call ran: its SQLSTATE, message and fields.
struct Captured {
    code: i32,
    message: String,
    fields: Fields,
}

thread_local! {
    /// The last ERROR PostgreSQL raised during the current call.
    static CAPTURED: RefCell<Option<Captured>> = const { RefCell::new(None) };
    /// The fields of the error of ours being raised now.
    static OWN: RefCell<Option<Fields>> = const { RefCell::new(None) };
    /// The 0-based position of the batch row whose handling raised the error leaving the call.
    static ROW: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Notes the fields of the error of ours about to be raised.
pub fn set_own(fields: Fields) {
    OWN.with(|o| *o.borrow_mut() = Some(fields));
}

/// Notes that the error now propagating was raised for the batch row at `pos`, unless an
/// inner step already said so.
pub fn set_row(pos: usize) {
    ROW.with(|r| {
        if r.get().is_none() {
            r.set(Some(pos));
        }
    });
}

/// The fields PostgreSQL gave the error that `report` carries, if it is the last one seen.
pub fn captured(report: &ErrorReportWithLevel) -> Option<Fields> {
    CAPTURED.with(|c| {
        c.borrow()
            .as_ref()
            .filter(|c| c.code == report.sql_error_code() as i32 && c.message == report.message())
            .map(|c| c.fields.clone())
    })
}

fn reset() {
    CAPTURED.with(|c| c.borrow_mut().take());
    OWN.with(|o| o.borrow_mut().take());
    ROW.with(|r| r.set(None));
}

/// Runs one call of an entry point on table `relid`, so that an error leaving it keeps its
/// fields and names the failing row.
pub fn keep_fields<R>(relid: Option<pg_sys::Oid>, call: impl FnOnce() -> R) -> R {
    // An outer call (safe_upsert inside a trigger of another's table) keeps its own notes.
    let outer = (CAPTURED.with(|c| c.borrow_mut().take()), OWN.with(|o| o.borrow_mut().take()), ROW.with(|r| r.take()));
    let mut capture = pg_sys::ErrorContextCallback {
        // SAFETY: reading the backend's error context stack, which only this thread touches.
        previous: unsafe { pg_sys::error_context_stack },
        callback: Some(capture_fields),
        arg: std::ptr::null_mut(),
    };
    // SAFETY: the entry lives in this frame, is not moved, and is unlinked below before the
    // frame ends, whether the call returns or fails.
    unsafe { pg_sys::error_context_stack = &raw mut capture };
    let result = std::panic::catch_unwind(AssertUnwindSafe(call));
    // SAFETY: as above.
    unsafe { unlink(&raw mut capture) };
    let payload = match result {
        Ok(done) => {
            reset();
            restore(outer);
            return done;
        }
        Err(payload) => payload,
    };
    let own = matches!(payload.downcast_ref::<CaughtError>(), Some(CaughtError::ErrorReport(_)))
        || payload.downcast_ref::<ErrorReportWithLevel>().is_some();
    let Some(report) = crate::error::caught(payload.as_ref()) else {
        reset();
        restore(outer);
        std::panic::resume_unwind(payload) // a Rust panic: pgrx reports it as such
    };
    let mut fields = if own { OWN.with(|o| o.borrow_mut().take()).unwrap_or_default() } else { captured(report).unwrap_or_default() };
    if own && fields.table.is_none() {
        if let Some((schema, table)) = relid.and_then(crate::upsert::catalog::table_parts) {
            fields.schema = Some(schema);
            fields.table = Some(table);
        }
    }
    let row = ROW.with(|r| r.take());
    reset();
    restore(outer);
    let prefix = row.map(|pos| format!("row {}: ", pos + 1)).unwrap_or_default();
    let mut again = ErrorReport::new(report.sql_error_code(), format!("{prefix}{}", report.message()), "pg_safeupsert");
    if let Some(d) = report.detail() {
        again = again.set_detail(d);
    }
    if let Some(h) = report.hint() {
        again = again.set_hint(h);
    }
    drop(payload);
    if !fields.is_empty() {
        attach(&fields);
    }
    again.report(PgLogLevel::ERROR);
    unreachable!("ereport(ERROR) returned")
}

fn restore(outer: (Option<Captured>, Option<Fields>, Option<usize>)) {
    let (captured, own, row) = outer;
    CAPTURED.with(|c| *c.borrow_mut() = captured);
    OWN.with(|o| *o.borrow_mut() = own);
    ROW.with(|r| r.set(row));
}

/// Removes `entry` from the error context stack, wherever it is.
///
/// # Safety
/// Every entry of the stack is valid.
unsafe fn unlink(entry: *mut pg_sys::ErrorContextCallback) {
    // SAFETY: the caller's contract; the stack is this thread's.
    unsafe {
        let mut link: *mut *mut pg_sys::ErrorContextCallback = &raw mut pg_sys::error_context_stack;
        while !(*link).is_null() {
            if *link == entry {
                *link = (*entry).previous;
                return;
            }
            link = &raw mut (**link).previous;
        }
    }
}

/// Copies the fields of the ERROR being raised. Runs inside PostgreSQL's error handling, so
/// it must not raise: a failure only loses the fields.
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn capture_fields(_arg: *mut c_void) {
    let _ = std::panic::catch_unwind(|| {
        // SAFETY: called by errfinish, with the error being raised on top of its stack; its copy
        // is made in TopMemoryContext (never in ErrorContext) and freed here.
        unsafe {
            let code = pg_sys::geterrcode();
            // Classes 00, 01 and 02 (success, warning, no data) are not errors; the class is
            // the code's first two characters, packed in its low 12 bits.
            if matches!(code & 0xfff, 0 | 64 | 128) {
                return;
            }
            let old = pg_sys::MemoryContextSwitchTo(pg_sys::TopMemoryContext);
            let data = pg_sys::CopyErrorData();
            pg_sys::MemoryContextSwitchTo(old);
            let d = &*data;
            let text = |s: *mut c_char| crate::upsert::catalog::owned(s);
            let captured = Captured {
                code: d.sqlerrcode,
                message: text(d.message).unwrap_or_default(),
                fields: Fields {
                    schema: text(d.schema_name),
                    table: text(d.table_name),
                    column: text(d.column_name),
                    datatype: text(d.datatype_name),
                    constraint: text(d.constraint_name),
                },
            };
            pg_sys::FreeErrorData(data);
            CAPTURED.with(|c| *c.borrow_mut() = Some(captured));
        }
    });
}

/// What `fill_fields` sets, allocated with the callback entry in the call's memory.
#[repr(C)]
struct Attached {
    entry: pg_sys::ErrorContextCallback,
    values: [(u8, *mut c_char); 5],
}

/// Leaves `fill_fields` on the error context stack for the error about to be raised.
fn attach(fields: &Fields) {
    // SAFETY: palloc'd in the current (call's) memory context, which lives until the error is
    // handled; pushed on the stack, which the error's handler restores.
    unsafe {
        let a = pg_sys::palloc0(size_of::<Attached>()) as *mut Attached;
        for (slot, (field, value)) in (*a).values.iter_mut().zip(fields.entries()) {
            let c = value.as_deref().and_then(|v| CString::new(v).ok());
            *slot = (field, c.map_or(std::ptr::null_mut(), |c| pg_sys::pstrdup(c.as_ptr())));
        }
        (*a).entry = pg_sys::ErrorContextCallback {
            previous: pg_sys::error_context_stack,
            callback: Some(fill_fields),
            arg: a.cast(),
        };
        pg_sys::error_context_stack = &raw mut (*a).entry;
    }
}

/// Sets the fields of the error being raised, from an `Attached`.
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn fill_fields(arg: *mut c_void) {
    // SAFETY: `arg` is the Attached that `attach` made; err_generic_string copies each value
    // into the error's own memory.
    unsafe {
        let a = &*(arg as *const Attached);
        for &(field, value) in &a.values {
            if !value.is_null() {
                pg_sys::err_generic_string(field as i32, value);
            }
        }
    }
}
