//! The `safe_upsert_outcome` enum: in Rust, and as the SQL enum's label OIDs, which the entry
//! points return. The OIDs are looked up in the extension's own schema, never through the
//! caller's search_path, and cached per backend until a type changes.

use std::cell::Cell;

use pgrx::prelude::*;
use pgrx::spi::SpiClient;

use crate::error;

/// What happened to one row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Inserted,
    Updated,
    Stale,
    Duplicate,
    Tie,
}

const LABELS: [&str; 5] = ["inserted", "updated", "stale", "duplicate", "tie"];

extension_sql!(
    r#"
CREATE TYPE safe_upsert_outcome AS ENUM ('inserted', 'updated', 'stale', 'duplicate', 'tie');
COMMENT ON TYPE safe_upsert_outcome IS 'What safe_upsert did with a row.';
"#,
    name = "safe_upsert_outcome",
);

thread_local! {
    static LABEL_OIDS: Cell<Option<[pg_sys::Oid; 5]>> = const { Cell::new(None) };
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
    pub fn to_oid(self, client: &SpiClient<'_>) -> pg_sys::Oid {
        let oids = LABEL_OIDS.with(|c| c.get()).unwrap_or_else(|| {
            let oids = label_oids(client);
            LABEL_OIDS.with(|c| c.set(Some(oids)));
            oids
        });
        oids[self as usize]
    }
}

fn label_oids(client: &SpiClient<'_>) -> [pg_sys::Oid; 5] {
    let rows = client
        .select(
            "SELECT e.enumlabel::pg_catalog.text, e.oid FROM pg_catalog.pg_enum e \
             JOIN pg_catalog.pg_type t ON t.oid OPERATOR(pg_catalog.=) e.enumtypid \
             JOIN pg_catalog.pg_extension x ON x.extnamespace OPERATOR(pg_catalog.=) t.typnamespace \
             WHERE x.extname OPERATOR(pg_catalog.=) 'pg_safeupsert' \
               AND t.typname OPERATOR(pg_catalog.=) 'safe_upsert_outcome'",
            None,
            &[],
        )
        .unwrap_or_else(|e| error::catalog_read_failed("pg_enum", &e));
    let mut oids = [pg_sys::InvalidOid; 5];
    for row in rows {
        let label: String = row.get(1).ok().flatten().unwrap_or_default();
        if let Some(i) = LABELS.iter().position(|l| *l == label) {
            oids[i] = row.get(2).ok().flatten().unwrap_or(pg_sys::InvalidOid);
        }
    }
    if oids.contains(&pg_sys::InvalidOid) {
        error::extension_object_missing("type safe_upsert_outcome");
    }
    oids
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
