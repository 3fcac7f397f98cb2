//! Conflict statistics and the conflict log: outcomes wait in backend memory until their
//! transaction commits (dropped if it or their savepoint rolls back), then go to shared memory,
//! where the views read them. Errors are counted at once, since their transaction aborts.

mod pending;
mod record;
mod shmem;
mod views;

use std::cell::RefCell;

use pgrx::pg_sys;
use pgrx::prelude::*;

use crate::gucs;
use crate::notify::queue::Event;
pub use pending::Counter;
use pending::Pending;
pub use record::{cut_row, LogRecord};
use shmem::Shared;

/// Attached in the postmaster at start (and after a crash), inherited by every backend.
static mut SHARED: Option<Shared> = None;

thread_local! {
    static PENDING: RefCell<Pending> = RefCell::new(Pending::default());
}

const SAVE_FILE: &str = "pg_stat/pg_safeupsert.stat";

fn shared() -> Option<&'static Shared> {
    // SAFETY: written only by the startup hook, before any backend exists.
    unsafe { (*std::ptr::addr_of!(SHARED)).as_ref() }
}

fn now() -> i64 {
    // SAFETY: reads the clock.
    unsafe { pg_sys::GetCurrentTimestamp() }
}

/// Whether this call's outcomes should be recorded.
pub fn tracking() -> bool {
    gucs::TRACK.get() && shared().is_some()
}

/// Whether conflicts are logged (and so worth describing).
pub fn logging() -> bool {
    tracking() && gucs::CONFLICT_LOG_SIZE.get() > 0
}

fn subxact() -> u32 {
    // SAFETY: plain read of transaction state.
    unsafe { pg_sys::GetCurrentSubTransactionId() }
}

/// Counts one outcome, published when the transaction commits.
pub fn outcome(relid: pg_sys::Oid, counter: Counter) {
    let sub = subxact();
    PENDING.with(|p| p.borrow_mut().count(sub, relid.to_u32(), counter));
}

/// A conflict to log when the transaction commits; `conflict` is filled in with who and when.
pub fn conflict(mut conflict: LogRecord) {
    stamp(&mut conflict);
    let sub = subxact();
    let limit = gucs::CONFLICT_LOG_SIZE.get().max(0) as usize;
    PENDING.with(|p| p.borrow_mut().conflict(sub, conflict, limit));
}

fn stamp(c: &mut LogRecord) {
    // SAFETY: plain reads of this backend's identity.
    unsafe {
        c.dbid = pg_sys::MyDatabaseId.to_u32();
        c.userid = pg_sys::GetUserId().to_u32();
        c.pid = pg_sys::MyProcPid;
    }
    c.occurred_at = now();
}

/// A failed call: counted now, as its transaction will not commit; a unique violation is
/// logged too.
pub fn failed(relid: pg_sys::Oid, counter: Counter, conflict: Option<LogRecord>) {
    let Some(shared) = shared() else { return };
    let mut counts = [0u64; pending::COUNTERS];
    counts[counter as usize] = 1;
    let now = now();
    let dbid = unsafe { pg_sys::MyDatabaseId }.to_u32();
    // A unique violation is a conflict, logged or not; its time is the logged row's.
    let conflict_at = match conflict {
        Some(mut c) => {
            stamp(&mut c);
            shared.log(&c);
            Some(c.occurred_at)
        }
        None => (counter == Counter::UniqueViolations).then_some(now),
    };
    shared.add(dbid, relid.to_u32(), &counts, conflict_at, now);
}

/// Publishes what the committed (or prepared) transaction did; only a commit is notified.
fn publish(notify: bool) {
    let taken = PENDING.with(|p| {
        let mut p = p.borrow_mut();
        (!p.is_empty()).then(|| p.take())
    });
    let (Some((per_table, conflicts)), Some(shared)) = (taken, shared()) else { return };
    let dbid = unsafe { pg_sys::MyDatabaseId }.to_u32();
    let now = now();
    let mut events: Vec<Event> = Vec::new();
    for (relid, counts) in &per_table {
        for kind in [Counter::Stale, Counter::Tie] {
            if counts[kind as usize] > 0 {
                events.push(Event { relid: *relid, kind: kind as u8, count: counts[kind as usize], first_id: 0, last_id: 0 });
            }
        }
    }
    for c in &conflicts {
        let id = shared.log(c);
        if let Some(e) = events.iter_mut().find(|e| e.relid == c.relid && e.kind == c.kind) {
            e.first_id = if e.first_id == 0 { id } else { e.first_id.min(id) };
            e.last_id = e.last_id.max(id);
        }
    }
    for (relid, counts) in per_table {
        let last = conflicts.iter().filter(|c| c.relid == relid).map(|c| c.occurred_at).max();
        let conflicted = counts[Counter::Stale as usize] + counts[Counter::Tie as usize] > 0;
        shared.add(dbid, relid, &counts, if conflicted { last.or(Some(now)) } else { None }, now);
    }
    if notify {
        crate::notify::committed(dbid, &events);
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn on_xact(event: pg_sys::XactEvent::Type, _arg: *mut std::ffi::c_void) {
    use pg_sys::XactEvent::*;
    match event {
        XACT_EVENT_COMMIT | XACT_EVENT_PARALLEL_COMMIT => publish(true),
        // The backend loses sight of a prepared transaction, so its outcomes count now; but it
        // is not committed yet, so nothing is notified.
        XACT_EVENT_PREPARE => publish(false),
        XACT_EVENT_ABORT | XACT_EVENT_PARALLEL_ABORT => PENDING.with(|p| p.borrow_mut().clear()),
        _ => {}
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn on_subxact(
    event: pg_sys::SubXactEvent::Type,
    sub: pg_sys::SubTransactionId,
    _parent: pg_sys::SubTransactionId,
    _arg: *mut std::ffi::c_void,
) {
    if event == pg_sys::SubXactEvent::SUBXACT_EVENT_ABORT_SUB {
        PENDING.with(|p| p.borrow_mut().abort_subxact(sub));
    }
}

pub fn shmem_size() -> usize {
    shmem::size(gucs::MAX_TABLES.get() as usize, gucs::CONFLICT_LOG_SIZE.get() as usize)
}

/// # Safety
/// Called from the shared memory startup hook with memory of `shmem_size()` bytes.
pub unsafe fn attach(base: *mut u8, fresh: bool, lock: *mut pg_sys::LWLock) {
    let shared = Shared::attach(base, fresh, gucs::MAX_TABLES.get() as u32, gucs::CONFLICT_LOG_SIZE.get() as u32, lock, now());
    if fresh {
        load(&shared);
    }
    SHARED = Some(shared);
}

/// Loads the file saved at the last clean shutdown, then removes it, so that a crash (which
/// saves nothing) restarts from zero rather than from an old file.
fn load(shared: &Shared) {
    if let Ok(bytes) = std::fs::read(SAVE_FILE) {
        if gucs::SAVE.get() {
            match record::Snapshot::decode(&bytes) {
                Some(snapshot) => shared.restore(snapshot),
                None => pgrx::log!("pg_safeupsert: ignoring unreadable statistics file \"{SAVE_FILE}\""),
            }
        }
    }
    let _ = std::fs::remove_file(SAVE_FILE);
}

/// Saves statistics and the log at the postmaster's exit; `code` is non-zero when it resets
/// shared memory after a crash, which saves nothing.
pub fn save(code: i32) {
    if code != 0 || !gucs::SAVE.get() {
        return;
    }
    let Some(shared) = shared() else { return };
    let tmp = format!("{SAVE_FILE}.tmp");
    let written = std::fs::write(&tmp, shared.snapshot().encode()).and_then(|_| std::fs::rename(&tmp, SAVE_FILE));
    if let Err(e) = written {
        pgrx::log!("pg_safeupsert: could not save statistics to \"{SAVE_FILE}\": {e}");
        let _ = std::fs::remove_file(&tmp);
    }
}

/// Called from _PG_init when the library is preloaded.
pub fn init() {
    // SAFETY: _PG_init runs once, in the postmaster; the list is inherited by every backend.
    unsafe {
        pg_sys::RegisterXactCallback(Some(on_xact), std::ptr::null_mut());
        pg_sys::RegisterSubXactCallback(Some(on_subxact), std::ptr::null_mut());
    }
}

/// A logged conflict, if the log still holds it.
pub fn conflict_by_id(id: u64) -> Option<LogRecord> {
    shared()?.conflict_by_id(id)
}

pub use views::kind_name;
