//! Conflict notifications: committing writers queue (table, kind, count, ids) events in shared
//! memory, and background workers, one per database with recent conflicts, send them as NOTIFY,
//! so that no writing transaction takes NOTIFY's commit lock itself.

mod pace;
pub mod payload;
pub mod queue;
mod worker;

use pgrx::pg_sys;

use crate::gucs;
use queue::{Event, Queue};

static mut QUEUE: Option<Queue> = None;

pub fn queue() -> Option<&'static Queue> {
    // SAFETY: written only by the startup hook, before any backend exists.
    unsafe { (*std::ptr::addr_of!(QUEUE)).as_ref() }
}

pub fn shmem_size() -> usize {
    queue::size(gucs::QUEUE_SIZE.get() as usize)
}

/// # Safety
/// Called from the shared memory startup hook with memory of `shmem_size()` bytes.
pub unsafe fn attach(base: *mut u8, fresh: bool, lock: *mut pg_sys::LWLock) {
    // SAFETY: the startup hook runs before any backend exists (or alone, after a crash), so
    // nothing reads QUEUE meanwhile; `base` is as this function's contract says.
    unsafe { QUEUE = Some(Queue::attach(base, fresh, gucs::QUEUE_SIZE.get() as u32, lock)) };
}

/// Queues a committed transaction's conflicts, unless notifications are off.
pub fn committed(dbid: u32, events: &[Event]) {
    if events.is_empty() || !gucs::NOTIFY.get() {
        return;
    }
    if let Some(q) = queue() {
        q.push(dbid, events);
    }
}

pub use worker::register_launcher;
