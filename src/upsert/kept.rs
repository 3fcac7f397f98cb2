//! Why a write kept the stored row, told by the write itself. The generated `ON CONFLICT ... DO
//! UPDATE ... WHERE <incoming replaces stored>` ends in `OR safe_upsert_kept(...)`, which
//! PostgreSQL evaluates only when the incoming row does not replace the stored one, on the very
//! row version the write locked and compared. The function records the comparison and returns
//! false. So a kept row needs no second statement to say whether it was stale, a duplicate or a
//! tie; a second statement (the plan's `classify`) is only the fallback when the notes do not
//! match the skipped rows one for one.

use std::cell::RefCell;

use pgrx::prelude::*;

/// The comparison of one kept stored row with the incoming row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kept {
    pub same_version: Option<bool>,
    pub same_values: Option<bool>,
    /// the stored version as JSON text
    pub stored_version: Option<String>,
}

thread_local! {
    /// The notes of the write running now, in the order PostgreSQL kept the rows; None when no
    /// write of ours is running, so that a stray call records nothing.
    static NOTES: RefCell<Option<Vec<Kept>>> = const { RefCell::new(None) };
}

/// Runs the write `f`, returning its result and the notes it left. Writes nest (a trigger may
/// call safe_upsert): each collects its own notes, and the outer ones are restored afterwards,
/// also when `f` raises an error.
pub fn collect<R>(f: impl FnOnce() -> R) -> (R, Vec<Kept>) {
    struct Restore(Option<Option<Vec<Kept>>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let outer = self.0.take().flatten();
            NOTES.with(|n| *n.borrow_mut() = outer);
        }
    }
    let restore = Restore(Some(NOTES.with(|n| n.borrow_mut().replace(Vec::new()))));
    let result = f();
    let notes = NOTES.with(|n| n.borrow_mut().take()).unwrap_or_default();
    drop(restore);
    (result, notes)
}

#[pg_extern(sql = false)]
fn safe_upsert_kept(same_version: Option<bool>, same_values: Option<bool>, stored_version: Option<&str>) -> bool {
    NOTES.with(|n| {
        if let Some(notes) = n.borrow_mut().as_mut() {
            notes.push(Kept { same_version, same_values, stored_version: stored_version.map(str::to_owned) });
        }
    });
    false
}

extension_sql!(
    r#"
CREATE FUNCTION safe_upsert_kept(same_version boolean, same_values boolean, stored_version text)
RETURNS boolean
LANGUAGE c VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'safe_upsert_kept_wrapper';
COMMENT ON FUNCTION safe_upsert_kept(boolean, boolean, text) IS
  'Internal to safe_upsert''s statements: notes why a stored row was kept; always false.';
"#,
    name = "safe_upsert_kept",
);
