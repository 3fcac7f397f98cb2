//! Why a write kept the stored row, told by the write itself. The generated `ON CONFLICT ... DO
//! UPDATE ... WHERE <incoming replaces stored>` ends in `OR safe_upsert_kept(...)`, which
//! PostgreSQL evaluates only when the incoming row does not replace the stored one, on the very
//! row version the write locked and compared. The function records the comparison and returns
//! false. So a kept row needs no second statement to say whether it was stale, a duplicate or a
//! tie; a second statement (the plan's `classify`) is only the fallback when the notes do not
//! match the skipped rows one for one.
//!
//! Since 0.2.0 the upsert passes the stored and incoming rows whole, and the function compares
//! the sent columns' binary images itself, as `*=` on the rows of those columns would: a
//! statement that compares them in SQL sets up a step per column and side on every call, not
//! only when a row is kept. 0.1.0's form, given the comparison, serves databases whose
//! extension is not updated yet, and the tombstones' statements.

use std::cell::RefCell;

use pgrx::prelude::*;
use pgrx::Internal;

/// The comparison of one kept stored row with the incoming row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kept {
    pub same_version: Option<bool>,
    pub same_values: Option<bool>,
    /// the stored version as JSON text
    pub stored_version: Option<String>,
}

/// A sent column as the whole-row form compares it: its attribute number in the table's row
/// type and its type's storage.
#[derive(Clone, Copy, Debug)]
pub struct SentAttr {
    pub attnum: i16,
    pub len: i16,
    pub byval: bool,
}

/// The write running now: the notes it left, in the order PostgreSQL kept the rows, and the
/// columns it sent, which the whole-row form compares.
struct Running {
    notes: Vec<Kept>,
    /// borrowed from `collect`'s caller for as long as the write runs, and no longer
    sent: *const [SentAttr],
}

thread_local! {
    /// None when no write of ours is running, so that a stray call records nothing.
    static RUNNING: RefCell<Option<Running>> = const { RefCell::new(None) };
}

/// Runs the write `f`, which sends the columns `sent`, returning its result and the notes it
/// left. Writes nest (a trigger may call safe_upsert): each collects its own notes, and the
/// outer ones are restored afterwards, also when `f` raises an error.
pub fn collect<R>(sent: &[SentAttr], f: impl FnOnce() -> R) -> (R, Vec<Kept>) {
    struct Restore(Option<Option<Running>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let outer = self.0.take().flatten();
            RUNNING.with(|n| *n.borrow_mut() = outer);
        }
    }
    let running = Running { notes: Vec::new(), sent: sent as *const [SentAttr] };
    let restore = Restore(Some(RUNNING.with(|n| n.borrow_mut().replace(running))));
    let result = f();
    let notes = RUNNING.with(|n| n.borrow_mut().take()).map(|r| r.notes).unwrap_or_default();
    drop(restore);
    (result, notes)
}

fn note(same_version: Option<bool>, same_values: impl FnOnce(&[SentAttr]) -> Option<bool>, stored_version: Option<&str>) {
    RUNNING.with(|n| {
        if let Some(running) = n.borrow_mut().as_mut() {
            // SAFETY: `collect`'s caller lends `sent` until the write it runs returns, and this
            // runs inside that write.
            let same_values = same_values(unsafe { &*running.sent });
            running.notes.push(Kept { same_version, same_values, stored_version: stored_version.map(str::to_owned) });
        }
    });
}

#[pg_extern(sql = false)]
fn safe_upsert_kept(same_version: Option<bool>, same_values: Option<bool>, stored_version: Option<&str>) -> bool {
    note(same_version, |_| same_values, stored_version);
    false
}

#[pg_extern(sql = false)]
fn safe_upsert_kept_rows(same_version: Option<bool>, stored: Option<Internal>, incoming: Option<Internal>, stored_version: Option<&str>) -> bool {
    let (Some(stored), Some(incoming)) = (stored.and_then(Internal::unwrap), incoming.and_then(Internal::unwrap)) else {
        return false; // only our statements call this, with two rows
    };
    // SAFETY: the SQL signature makes both composite datums; the statement passes the stored
    // row and the EXCLUDED row of one table, whose sent columns `sent` names.
    note(same_version, |sent| Some(unsafe { same_images(sent, stored, incoming) }), stored_version);
    false
}

unsafe extern "C-unwind" {
    /// utils/datum.h: whether two datums of a type have the same binary image (detoasted), as
    /// `record_image_eq` compares columns.
    pub(super) fn datum_image_eq(value1: pg_sys::Datum, value2: pg_sys::Datum, typ_by_val: bool, typ_len: i32) -> bool;
}

/// Whether the sent columns of the two rows have the same binary images, NULLs equal: what
/// `ROW(sent of a)::record *= ROW(sent of b)::record` says.
///
/// # Safety
/// `a` and `b` are composite datums of the row type that `sent` describes.
unsafe fn same_images(sent: &[SentAttr], a: pg_sys::Datum, b: pg_sys::Datum) -> bool {
    // SAFETY: the caller's contract; each row is deformed with its own row type's descriptor.
    unsafe {
        let (a_values, a_nulls) = deform(a);
        let (b_values, b_nulls) = deform(b);
        sent.iter().all(|s| {
            let i = (s.attnum - 1) as usize;
            match (a_nulls.get(i), b_nulls.get(i)) {
                (Some(true), Some(true)) => true,
                (Some(false), Some(false)) => datum_image_eq(a_values[i], b_values[i], s.byval, s.len as i32),
                _ => false,
            }
        })
    }
}

/// A composite datum's attributes, every one of its row type's (dropped ones too).
///
/// # Safety
/// `datum` is a composite datum.
unsafe fn deform(datum: pg_sys::Datum) -> (Vec<pg_sys::Datum>, Vec<bool>) {
    // SAFETY: the caller's contract; the descriptor is released after the tuple is deformed.
    unsafe {
        let header = pg_sys::pg_detoast_datum(datum.cast_mut_ptr()) as pg_sys::HeapTupleHeader;
        let desc = pg_sys::lookup_rowtype_tupdesc(
            pgrx::heap_tuple_header_get_type_id(header),
            pgrx::heap_tuple_header_get_typmod(header),
        );
        let natts = (*desc).natts as usize;
        let mut values = vec![pg_sys::Datum::from(0); natts];
        let mut nulls = vec![true; natts];
        let mut tuple = pg_sys::HeapTupleData {
            t_len: pgrx::heap_tuple_header_get_datum_length(header) as u32,
            t_tableOid: pg_sys::InvalidOid,
            t_data: header,
            ..Default::default()
        };
        pg_sys::heap_deform_tuple(&mut tuple, desc, values.as_mut_ptr(), nulls.as_mut_ptr());
        if (*desc).tdrefcount >= 0 {
            pg_sys::DecrTupleDescRefCount(desc);
        }
        (values, nulls)
    }
}

extension_sql!(
    r#"
CREATE FUNCTION safe_upsert_kept(same_version boolean, same_values boolean, stored_version text)
RETURNS boolean
LANGUAGE c VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'safe_upsert_kept_wrapper';
COMMENT ON FUNCTION safe_upsert_kept(boolean, boolean, text) IS
  'Internal to safe_upsert''s statements: notes why a stored row was kept; always false.';

CREATE FUNCTION safe_upsert_kept(same_version boolean, stored record, incoming record, stored_version text)
RETURNS boolean
LANGUAGE c VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'safe_upsert_kept_rows_wrapper';
COMMENT ON FUNCTION safe_upsert_kept(boolean, record, record, text) IS
  'Internal to safe_upsert''s statements: notes why a stored row was kept, comparing the rows; always false.';
"#,
    name = "safe_upsert_kept",
);
