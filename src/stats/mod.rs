//! Conflict statistics and the conflict log: outcomes wait in backend memory until their
//! transaction commits (dropped if it or their savepoint rolls back), then go to shared memory,
//! where the views read them. Failed calls are counted when their (sub)transaction ends,
//! whether it commits or not.

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
pub use record::{cut_members, cut_row, cut_value, LogRecord, ROW_BYTES, VALUE_BYTES};
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

/// A conflict to log when the transaction commits; `conflict` is filled in with who and when,
/// and cut to what a log slot holds.
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
    c.fit();
}

/// A failed call, noted in backend memory while its error propagates (no catalog or shared
/// memory work then); it is counted when its (sub)transaction ends, committed or not. A unique
/// violation is logged too when `conflict` describes it.
pub fn failed(relid: pg_sys::Oid, counter: Counter, conflict: Option<LogRecord>) {
    if shared().is_none() {
        return;
    }
    let conflict = conflict.map(|mut c| {
        stamp(&mut c);
        c
    });
    PENDING.with(|p| p.borrow_mut().failure(relid.to_u32(), counter, conflict));
}

/// Counts the failed calls noted so far. Runs in commit and abort callbacks: plain stores into
/// shared memory, nothing that can fail.
fn publish_failures(p: &mut Pending, shared: &Shared, dbid: u32, now: i64) {
    for (relid, counter, conflict) in p.failures() {
        let mut counts = [0u64; pending::COUNTERS];
        counts[*counter as usize] = 1;
        // A unique violation is a conflict, logged or not; its time is the logged row's.
        let conflict_at = match conflict {
            Some(c) => {
                shared.log(c);
                Some(c.occurred_at)
            }
            None => (*counter == Counter::UniqueViolations).then_some(now),
        };
        shared.add(dbid, *relid, &counts, conflict_at, now);
    }
    p.clear_failures();
}

/// Publishes what the committed (or prepared) transaction did; only a commit is notified.
/// Runs in the commit (or prepare) callback, so nothing here may fail: the texts were cut when
/// recorded, and the room for the sums and the events reserved.
fn publish(notify: bool) {
    let Some(shared) = shared() else { return };
    PENDING.with(|p| {
        let Ok(mut p) = p.try_borrow_mut() else { return };
        if p.is_empty() {
            return;
        }
        // SAFETY: plain read of this backend's database.
        let dbid = unsafe { pg_sys::MyDatabaseId }.to_u32();
        let now = now();
        publish_failures(&mut p, shared, dbid, now);
        let mut events = p.take_events();
        let (per_table, conflicts) = p.committed();
        for (relid, counts) in per_table {
            for kind in pending::CONFLICTS {
                // never beyond the reserved room: pushing then cannot allocate
                if counts[kind as usize] > 0 && events.len() < events.capacity() {
                    events.push(Event { relid: *relid, kind: kind as u8, count: counts[kind as usize], first_id: 0, last_id: 0 });
                }
            }
        }
        for c in conflicts.clone() {
            let id = shared.log(c);
            if let Some(e) = events.iter_mut().find(|e| e.relid == c.relid && e.kind == c.kind) {
                e.first_id = if e.first_id == 0 { id } else { e.first_id.min(id) };
                e.last_id = e.last_id.max(id);
            }
        }
        for (relid, counts) in per_table {
            let conflicted = pending::CONFLICTS.iter().any(|&k| counts[k as usize] > 0);
            let last = conflicts.clone().filter(|c| c.relid == *relid).map(|c| c.occurred_at).max();
            shared.add(dbid, *relid, counts, if conflicted { last.or(Some(now)) } else { None }, now);
        }
        drop(conflicts);
        if notify {
            crate::notify::committed(dbid, &events);
        }
        p.return_events(events);
        p.clear_committed();
    });
}

/// The transaction (or one of its savepoints) rolled back: its outcomes go, its failed calls
/// are counted. Runs in an abort callback: nothing here may fail.
fn discard(subxact: Option<pg_sys::SubTransactionId>) {
    PENDING.with(|p| {
        let Ok(mut p) = p.try_borrow_mut() else { return };
        match subxact {
            Some(sub) => p.abort_subxact(sub),
            None => p.clear(),
        }
        if let Some(shared) = shared() {
            // SAFETY: plain read of this backend's database.
            let dbid = unsafe { pg_sys::MyDatabaseId }.to_u32();
            publish_failures(&mut p, shared, dbid, now());
        }
    });
}

/// Runs a commit or abort callback's work. It is written not to fail; should a Rust panic
/// still happen, the statistics of this transaction are lost rather than the server (an error
/// raised at commit would PANIC).
fn at_transaction_end(work: impl FnOnce()) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).is_err() {
        PENDING.with(|p| {
            if let Ok(mut p) = p.try_borrow_mut() {
                *p = Pending::default();
            }
        });
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn on_xact(event: pg_sys::XactEvent::Type, _arg: *mut std::ffi::c_void) {
    use pg_sys::XactEvent::*;
    match event {
        XACT_EVENT_COMMIT | XACT_EVENT_PARALLEL_COMMIT => at_transaction_end(|| publish(true)),
        // The backend loses sight of a prepared transaction, so its outcomes count now; but it
        // is not committed yet, so nothing is notified.
        XACT_EVENT_PREPARE => at_transaction_end(|| publish(false)),
        XACT_EVENT_ABORT | XACT_EVENT_PARALLEL_ABORT => at_transaction_end(|| discard(None)),
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
        at_transaction_end(|| discard(Some(sub)));
    }
}

pub fn shmem_size() -> usize {
    shmem::size(gucs::MAX_TABLES.get() as usize, gucs::CONFLICT_LOG_SIZE.get() as usize)
}

/// # Safety
/// Called from the shared memory startup hook with memory of `shmem_size()` bytes.
pub unsafe fn attach(base: *mut u8, fresh: bool, lock: *mut pg_sys::LWLock) {
    // SAFETY: `base` is as this function's contract says, sized from the same settings.
    let shared = unsafe { Shared::attach(base, fresh, gucs::MAX_TABLES.get() as u32, gucs::CONFLICT_LOG_SIZE.get() as u32, lock, now()) };
    if fresh {
        load(&shared);
    }
    // SAFETY: the startup hook runs before any backend exists (or alone, after a crash), so
    // nothing reads SHARED meanwhile.
    unsafe { SHARED = Some(shared) };
}

/// Loads the file saved at the last clean shutdown, then removes it, so that a crash (which
/// saves nothing) restarts from zero rather than from an old file. Runs in the postmaster at
/// start: whatever the file holds, it never stops the server from starting. Every length in it
/// is checked (`Snapshot::decode`), a file larger than shared memory could hold is not read,
/// and a Rust panic, should one still happen, only loses the file.
fn load(shared: &Shared) {
    let limit = 2 * shmem_size() as u64 + (1 << 20);
    let loaded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        if !gucs::SAVE.get() {
            return Ok(());
        }
        match std::fs::metadata(SAVE_FILE) {
            Err(_) => return Ok(()),
            Ok(m) if m.len() > limit => return Err("larger than the statistics could ever be"),
            Ok(_) => {}
        }
        let bytes = std::fs::read(SAVE_FILE).map_err(|_| "could not be read")?;
        let snapshot = record::Snapshot::decode(&bytes).ok_or("not in this library's format, or damaged")?;
        shared.restore(snapshot);
        Ok(())
    }));
    match loaded {
        Ok(Ok(())) => {}
        Ok(Err(why)) => pgrx::log!("pg_safeupsert: ignoring statistics file \"{SAVE_FILE}\": {why}"),
        Err(_) => pgrx::log!("pg_safeupsert: ignoring statistics file \"{SAVE_FILE}\": it could not be loaded"),
    }
    let _ = std::fs::remove_file(SAVE_FILE);
}

/// Saves statistics and the log at the postmaster's exit; `code` is non-zero when it resets
/// shared memory after a crash, which saves nothing. Written to a temporary file, then moved
/// into place with PostgreSQL's durable_rename (fsync of the file and of the directory), so
/// that a crash while saving leaves the old file or the new one, never half of one.
pub fn save(code: i32) {
    if code != 0 || !gucs::SAVE.get() {
        return;
    }
    let Some(shared) = shared() else { return };
    let tmp = format!("{SAVE_FILE}.tmp");
    if let Err(e) = std::fs::write(&tmp, shared.snapshot().encode()) {
        pgrx::log!("pg_safeupsert: could not save statistics to \"{tmp}\": {e}");
        let _ = std::fs::remove_file(&tmp);
        return;
    }
    let (from, to) = (c"pg_stat/pg_safeupsert.stat.tmp", c"pg_stat/pg_safeupsert.stat");
    // SAFETY: two NUL-terminated paths; at LOG level a failure is reported, not raised.
    if unsafe { pg_sys::durable_rename(from.as_ptr(), to.as_ptr(), pg_sys::LOG as i32) } != 0 {
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

pub use views::{kind_name, operation_name};
