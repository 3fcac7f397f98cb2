//! Sets up pg_safeupsert's shared memory at server start: the statistics (counters and conflict
//! log) and the notification queue, each with its LWLock from our tranche.

use pgrx::pg_sys;
use pgrx::prelude::*;

use crate::{notify, stats};

const TRANCHE: &std::ffi::CStr = c"pg_safeupsert";

static mut PREV_SHMEM_REQUEST: pg_sys::shmem_request_hook_type = None;
static mut PREV_SHMEM_STARTUP: pg_sys::shmem_startup_hook_type = None;

#[pg_guard]
unsafe extern "C-unwind" fn on_shmem_request() {
    // SAFETY: called by the postmaster, single-threaded, in the window where requests are
    // allowed; PREV_SHMEM_REQUEST was set once by _PG_init.
    unsafe {
        if let Some(prev) = PREV_SHMEM_REQUEST {
            prev();
        }
        pg_sys::RequestAddinShmemSpace(stats::shmem_size() + notify::shmem_size());
        pg_sys::RequestNamedLWLockTranche(TRANCHE.as_ptr(), 2);
    }
}

/// PostgreSQL's AddinShmemInitLock, a macro in C: slot 21 of the main LWLock array.
unsafe fn addin_shmem_init_lock() -> *mut pg_sys::LWLock {
    // SAFETY: the main LWLock array exists once shared memory does, and has far more than 22
    // entries; only the address is taken.
    unsafe { &raw mut (*pg_sys::MainLWLockArray.add(21)).lock }
}

#[pg_guard]
unsafe extern "C-unwind" fn on_shmem_startup() {
    // SAFETY: called by the postmaster (or a backend under EXEC_BACKEND) once shared memory
    // exists, under AddinShmemInitLock as PostgreSQL requires for ShmemInitStruct; the tranche
    // was requested with 2 locks in on_shmem_request, and each structure gets the size it was
    // requested with.
    unsafe {
        if let Some(prev) = PREV_SHMEM_STARTUP {
            prev();
        }
        pg_sys::LWLockAcquire(addin_shmem_init_lock(), pg_sys::LWLockMode::LW_EXCLUSIVE);
        let locks = pg_sys::GetNamedLWLockTranche(TRANCHE.as_ptr());
        let mut found = false;
        let base = pg_sys::ShmemInitStruct(c"pg_safeupsert stats".as_ptr(), stats::shmem_size(), &mut found);
        stats::attach(base as *mut u8, !found, &raw mut (*locks).lock);
        let base = pg_sys::ShmemInitStruct(c"pg_safeupsert queue".as_ptr(), notify::shmem_size(), &mut found);
        notify::attach(base as *mut u8, !found, &raw mut (*locks.add(1)).lock);
        pg_sys::LWLockRelease(addin_shmem_init_lock());
        if !pg_sys::IsUnderPostmaster {
            pg_sys::on_shmem_exit(Some(on_postmaster_exit), pg_sys::Datum::from(0));
        }
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn on_postmaster_exit(code: i32, _arg: pg_sys::Datum) {
    stats::save(code);
}

/// Called from _PG_init when the library is preloaded.
pub fn init() {
    // SAFETY: _PG_init runs once, in the postmaster, before shared memory is created.
    unsafe {
        PREV_SHMEM_REQUEST = pg_sys::shmem_request_hook;
        pg_sys::shmem_request_hook = Some(on_shmem_request);
        PREV_SHMEM_STARTUP = pg_sys::shmem_startup_hook;
        pg_sys::shmem_startup_hook = Some(on_shmem_startup);
    }
}
