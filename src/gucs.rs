//! Every setting of pg_safeupsert, in one place. README's GUC table mirrors this file.

use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};

/// Prepared plans kept per backend (each a table + column set + options).
pub static PLAN_CACHE_SIZE: GucSetting<i32> = GucSetting::<i32>::new(64);

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
}
