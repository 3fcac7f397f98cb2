//! Every setting of pg_safeupsert, in one place. README's GUC table mirrors this file.

use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};

/// Prepared plans kept per backend (each a table + column set + options).
pub static PLAN_CACHE_SIZE: GucSetting<i32> = GucSetting::<i32>::new(64);
/// Tables whose counters shared memory holds.
pub static MAX_TABLES: GucSetting<i32> = GucSetting::<i32>::new(1000);
/// Rows of the conflict log; 0 turns it off.
pub static CONFLICT_LOG_SIZE: GucSetting<i32> = GucSetting::<i32>::new(1000);
/// Whether outcomes are counted and conflicts logged.
pub static TRACK: GucSetting<bool> = GucSetting::<bool>::new(true);
/// Whether statistics are saved at clean shutdown and loaded at start.
pub static SAVE: GucSetting<bool> = GucSetting::<bool>::new(true);

pub fn register() {
    GucRegistry::define_int_guc(
        c"safe_upsert.plan_cache_size",
        c"Prepared plans kept per backend.",
        c"One plan per table, set of sent columns and options; the least recently used is dropped.",
        &PLAN_CACHE_SIZE,
        1,
        100_000,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"safe_upsert.max_tables",
        c"Tables whose outcome counters are kept in shared memory.",
        c"When full, the least recently used table's counters are evicted (see safe_upsert_info).",
        &MAX_TABLES,
        1,
        1_000_000,
        GucContext::Postmaster,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"safe_upsert.conflict_log_size",
        c"Recent conflicts kept for safe_upsert_conflicts; 0 turns the log off.",
        c"",
        &CONFLICT_LOG_SIZE,
        0,
        1_000_000,
        GucContext::Postmaster,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"safe_upsert.track",
        c"Counts outcomes and logs conflicts of safe_upsert calls.",
        c"Can be turned off per session, e.g. for a bulk load.",
        &TRACK,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"safe_upsert.save",
        c"Saves statistics and the conflict log at clean shutdown and loads them at start.",
        c"",
        &SAVE,
        GucContext::Sighup,
        GucFlags::default(),
    );
}
