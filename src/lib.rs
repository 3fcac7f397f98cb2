//! pg_safeupsert: versioned, race-free upserts for PostgreSQL.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

use pgrx::prelude::*;

mod error;
mod gucs;
mod notify;
mod shared_memory;
mod stats;
mod tombstones;
mod upsert;

::pgrx::pg_module_magic!(name, version);

/// Whether the library was loaded by shared_preload_libraries: the statistics' shared memory
/// and the notification worker can only be set up then.
static mut PRELOADED: bool = false;

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    // SAFETY: read and written only in this single-threaded process, here and nowhere else.
    unsafe {
        PRELOADED = pg_sys::process_shared_preload_libraries_in_progress;
    }
    // Loaded later (CREATE EXTENSION, or a first call, without the preload): define nothing.
    // Settings of PGC_POSTMASTER context can only be defined at preload, and a failure here is
    // FATAL for the session; every entry point then raises the documented 55000 instead.
    // SAFETY: see PRELOADED.
    if !unsafe { PRELOADED } {
        return;
    }
    // pgrx appends a Rust backtrace to the DETAIL of errors passing through Rust when the
    // server's environment asks for backtraces (RUST_LIB_BACKTRACE): clients must not see that.
    // This runs in the postmaster before any other thread exists.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        std::env::set_var("RUST_LIB_BACKTRACE", "0");
    }
    gucs::register();
    upsert::plan_cache::register_invalidation_callbacks();
    upsert::register_outcome_invalidation();
    shared_memory::init();
    stats::init();
    notify::register_launcher();
}

/// Raises the documented 55000 error unless the library was preloaded.
pub fn require_preload() {
    // SAFETY: see PRELOADED.
    if !unsafe { PRELOADED } {
        error::not_preloaded();
    }
}

#[cfg(any(test, feature = "pg_test"))]
mod tests;

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec!["shared_preload_libraries = 'pg_safeupsert'"]
    }
}
