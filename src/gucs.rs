//! Every setting of pg_safeupsert, in one place. README's GUC table mirrors this file.

use std::ffi::CString;

use std::ffi::{c_char, c_void, CStr};

use pgrx::{pg_guard, pg_sys, GucContext, GucFlags, GucRegistry, GucSetting, PostgresGucEnum};

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

/// Whether committed conflicts are sent as NOTIFY.
pub static NOTIFY: GucSetting<bool> = GucSetting::<bool>::new(true);
/// The NOTIFY channel.
pub static NOTIFY_CHANNEL: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c"safe_upsert"));
/// What a notification carries.
pub static NOTIFY_PAYLOAD: GucSetting<Payload> = GucSetting::<Payload>::new(Payload::Minimal);
/// Events each database can have waiting for its notifier.
pub static QUEUE_SIZE: GucSetting<i32> = GucSetting::<i32>::new(256);

#[derive(PostgresGucEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum Payload {
    #[name = c"minimal"]
    Minimal,
    #[name = c"full"]
    Full,
}

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
    GucRegistry::define_bool_guc(
        c"safe_upsert.notify",
        c"Sends committed conflicts as NOTIFY from a background worker.",
        c"",
        &NOTIFY,
        GucContext::Sighup,
        GucFlags::default(),
    );
    // With a check hook, so that a name NOTIFY would refuse never reaches the workers.
    // SAFETY: the setting is a static that lives as long as the library.
    unsafe {
        pg_sys::DefineCustomStringVariable(
            c"safe_upsert.notify_channel".as_ptr(),
            c"The channel conflict notifications are sent on.".as_ptr(),
            c"A channel name: not empty, shorter than 64 bytes.".as_ptr(),
            NOTIFY_CHANNEL.as_ptr(),
            c"safe_upsert".as_ptr(),
            pg_sys::GucContext::PGC_SIGHUP,
            0,
            Some(check_channel),
            None,
            None,
        );
    }
    GucRegistry::define_enum_guc(
        c"safe_upsert.notify_payload",
        c"What a conflict notification carries: minimal (no row data) or full (adds key and versions).",
        c"LISTEN needs no privilege: use full only where every listener may read the tables.",
        &NOTIFY_PAYLOAD,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"safe_upsert.queue_size",
        c"Conflict events each database can have waiting for its notifier; more are dropped and counted.",
        c"",
        &QUEUE_SIZE,
        16,
        1_000_000,
        GucContext::Postmaster,
        GucFlags::default(),
    );
    // After defining ours: any other safe_upsert.* setting is a typo, warned about and removed.
    // SAFETY: called once from _PG_init with a static string.
    unsafe { pg_sys::MarkGUCPrefixReserved(c"safe_upsert".as_ptr()) };
}

/// A channel name that NOTIFY accepts: not empty, shorter than an identifier's limit.
#[pg_guard]
unsafe extern "C-unwind" fn check_channel(newval: *mut *mut c_char, _extra: *mut *mut c_void, _source: pg_sys::GucSource::Type) -> bool {
    // SAFETY: PostgreSQL calls a check hook with a valid pointer to the proposed value, which is
    // NULL or a NUL-terminated string.
    let name = unsafe { if (*newval).is_null() { &[][..] } else { CStr::from_ptr(*newval).to_bytes() } };
    !name.is_empty() && name.len() < pg_sys::NAMEDATALEN as usize
}
