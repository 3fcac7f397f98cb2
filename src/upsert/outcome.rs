//! The `safe_upsert_outcome` enum: in Rust, and as the SQL enum's label OIDs, which the entry
//! points return. The OIDs are looked up in the extension's own schema, never through the
//! caller's search_path, and cached per backend until a type changes.

use std::cell::Cell;

use pgrx::prelude::*;

use super::catalog;

/// What happened to one row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Inserted,
    Updated,
    Stale,
    Duplicate,
    Tie,
    /// neither written nor refused by the versions: a BEFORE trigger returned NULL
    SkippedByTrigger,
    /// safe_delete: the stored row, older or of the same version, was removed
    Deleted,
    /// safe_delete: no stored row; the tombstone is recorded all the same
    Absent,
    /// `stale` to SQL: refused by the key's tombstone rather than by a stored row (the
    /// conflict log says which)
    StaleByTombstone,
}

/// The enum's labels, in order; a label is never removed or moved, new ones go at the end.
/// The first labels, which every released version of the SQL has.
const LABELS_OF_0_1_0: usize = 6;
const LABELS: [&str; 8] = ["inserted", "updated", "stale", "duplicate", "tie", "skipped_by_trigger", "deleted", "absent"];

extension_sql!(
    r#"
CREATE TYPE safe_upsert_outcome AS ENUM ('inserted', 'updated', 'stale', 'duplicate', 'tie', 'skipped_by_trigger',
                                         'deleted', 'absent');
COMMENT ON TYPE safe_upsert_outcome IS 'What safe_upsert did with a row.';
"#,
    name = "safe_upsert_outcome",
);

thread_local! {
    static LABEL_OIDS: Cell<Option<[pg_sys::Oid; LABELS.len()]>> = const { Cell::new(None) };
}

impl Outcome {
    /// The outcome of a row that was not written, from its comparison with the row that was
    /// kept (stored, or the winner of its key in a batch). With `superseded`, an equal version
    /// with other values lost to a later row of the batch under `on_tie = apply`: it is stale.
    /// A tie under `on_tie = error` is the caller's to raise.
    pub fn of_kept(same_version: Option<bool>, same_values: Option<bool>, superseded: bool) -> Outcome {
        match (same_version, same_values) {
            (Some(true), Some(true)) => Outcome::Duplicate,
            (Some(true), _) if superseded => Outcome::Stale,
            (Some(true), _) => Outcome::Tie,
            _ => Outcome::Stale,
        }
    }

    /// The enum value as SQL sees it: the OID of its label.
    pub fn to_oid(self) -> pg_sys::Oid {
        let oids = LABEL_OIDS.with(|c| c.get()).unwrap_or_else(|| {
            let oids = catalog::outcome_label_oids(&LABELS, LABELS_OF_0_1_0);
            LABEL_OIDS.with(|c| c.set(Some(oids)));
            oids
        });
        let label = match self {
            Outcome::StaleByTombstone => Outcome::Stale as usize,
            other => other as usize,
        };
        let oid = oids[label];
        if oid == pg_sys::InvalidOid {
            // a label that the installed SQL (an older version's) does not have yet
            crate::error::extension_object_missing(&format!("label \"{}\" of type safe_upsert_outcome", LABELS[label]));
        }
        oid
    }
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn on_type_invalidation(_arg: pg_sys::Datum, _cache: i32, _hash: u32) {
    // The extension may have been dropped and created again, with new OIDs.
    LABEL_OIDS.with(|c| c.set(None));
}

/// Called from _PG_init.
pub fn register_invalidation_callback() {
    // SAFETY: registering a callback that only touches our own per-backend state.
    unsafe {
        pg_sys::CacheRegisterSyscacheCallback(
            pg_sys::SysCacheIdentifier::TYPEOID as i32,
            Some(on_type_invalidation),
            pg_sys::Datum::from(0),
        );
    }
}
