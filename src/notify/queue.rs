//! The event queue between committing writers and the notification workers, in shared memory:
//! one slot per database with recent conflicts, each a bounded ring of (table, kind, count, ids)
//! events. One LWLock guards it, held only to copy a few events in or out; a writer never
//! waits for a worker: when a ring is full the events are dropped and counted.

use std::sync::atomic::{AtomicI64, AtomicPtr, AtomicU64, Ordering::Relaxed};

use pgrx::pg_sys;

/// Databases that can have events queued at once.
pub const MAX_DATABASES: usize = 64;

#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[repr(C)]
pub struct Event {
    pub relid: u32,
    pub kind: u8,
    pub count: u64,
    /// ids in the conflict log, 0 when it is off
    pub first_id: u64,
    pub last_id: u64,
}

#[repr(C)]
pub struct Header {
    lock: *mut pg_sys::LWLock,
    launcher_latch: AtomicPtr<pg_sys::Latch>,
    capacity: u32,
    pub queued: AtomicU64,
    pub sent: AtomicU64,
    pub dropped: AtomicU64,
    pub last_sent_at: AtomicI64,
}

#[repr(C)]
struct Slot {
    /// 0: free
    dbid: u32,
    worker_pid: i32,
    /// the launcher asked for a worker that has not attached yet
    starting: bool,
    worker_latch: *mut pg_sys::Latch,
    dropped: u64,
    head: u64,
    tail: u64,
    // followed by `capacity` events
}

pub fn size(capacity: usize) -> usize {
    size_of::<Header>() + MAX_DATABASES * stride(capacity)
}

fn stride(capacity: usize) -> usize {
    size_of::<Slot>().next_multiple_of(align_of::<Event>()) + capacity * size_of::<Event>()
}

pub struct Queue {
    pub header: &'static Header,
    base: *mut u8,
}

/// One event per (table, kind): counts added, ids spanning all of them.
pub fn merge(events: &[Event]) -> Vec<Event> {
    let mut merged: std::collections::BTreeMap<(u32, u8), Event> = Default::default();
    for e in events {
        merged
            .entry((e.relid, e.kind))
            .and_modify(|m| {
                m.count += e.count;
                if e.first_id != 0 && (m.first_id == 0 || e.first_id < m.first_id) {
                    m.first_id = e.first_id;
                }
                m.last_id = m.last_id.max(e.last_id);
            })
            .or_insert(*e);
    }
    merged.into_values().collect()
}

/// What a worker takes from its database's ring.
pub struct Batch {
    pub events: Vec<Event>,
    pub dropped: u64,
}

impl Queue {
    /// # Safety
    /// `base` points to `size(capacity)` bytes of shared memory, zeroed when `fresh`.
    pub unsafe fn attach(base: *mut u8, fresh: bool, capacity: u32, lock: *mut pg_sys::LWLock) -> Queue {
        // SAFETY: `base` points to `size(capacity)` bytes (the contract); all-zero bytes are a
        // valid header and valid slots. A fresh segment is set up here, in the postmaster,
        // before any backend can read it.
        unsafe {
            if fresh {
                std::ptr::write_bytes(base, 0, size(capacity as usize));
                let h = base as *mut Header;
                (*h).lock = lock;
                (*h).capacity = capacity;
            }
            Queue { header: &*(base as *const Header), base }
        }
    }

    fn capacity(&self) -> u64 {
        self.header.capacity as u64
    }

    /// # Safety: caller holds the lock.
    unsafe fn slot(&self, i: usize) -> *mut Slot {
        // SAFETY: i < MAX_DATABASES (the callers' loops), so the slot lies within `size(capacity)`.
        unsafe { self.base.add(size_of::<Header>() + i * stride(self.header.capacity as usize)) as *mut Slot }
    }

    /// # Safety: caller holds the lock.
    unsafe fn event(&self, slot: *mut Slot, n: u64) -> *mut Event {
        // SAFETY: `slot` comes from `slot()`; its `capacity` events follow it within its stride,
        // and the index is reduced modulo the capacity.
        unsafe {
            let events = (slot as *mut u8).add(size_of::<Slot>().next_multiple_of(align_of::<Event>())) as *mut Event;
            events.add((n % self.capacity()) as usize)
        }
    }

    fn with_lock<R>(&self, f: impl FnOnce() -> R) -> R {
        // SAFETY: our own LWLock; nothing inside f raises an error.
        unsafe { pg_sys::LWLockAcquire(self.header.lock, pg_sys::LWLockMode::LW_EXCLUSIVE) };
        let r = f();
        // SAFETY: acquired just above, by this backend.
        unsafe { pg_sys::LWLockRelease(self.header.lock) };
        r
    }

    unsafe fn find(&self, dbid: u32) -> Option<*mut Slot> {
        // SAFETY: the caller holds the lock; every index is below MAX_DATABASES.
        (0..MAX_DATABASES).map(|i| unsafe { self.slot(i) }).find(|&s| unsafe { (*s).dbid } == dbid)
    }

    /// Queues a committed transaction's events and wakes whoever should send them.
    pub fn push(&self, dbid: u32, events: &[Event]) {
        // SAFETY: with_lock holds the queue's LWLock; slot and event pointers come from slot() and
        // event(), within the segment.
        let wake = self.with_lock(|| unsafe {
            let slot = match self.find(dbid).or_else(|| self.find(0)) {
                Some(s) => s,
                None => {
                    let lost: u64 = events.iter().map(|e| e.count).sum();
                    self.header.dropped.fetch_add(lost, Relaxed);
                    return std::ptr::null_mut();
                }
            };
            (*slot).dbid = dbid;
            for e in events {
                if (*slot).tail - (*slot).head < self.capacity() {
                    *self.event(slot, (*slot).tail) = *e;
                    (*slot).tail += 1;
                    self.header.queued.fetch_add(1, Relaxed);
                } else {
                    (*slot).dropped += e.count;
                    self.header.dropped.fetch_add(e.count, Relaxed);
                }
            }
            if (*slot).worker_latch.is_null() { self.header.launcher_latch.load(Relaxed) } else { (*slot).worker_latch }
        });
        if !wake.is_null() {
            // SAFETY: a latch in a PGPROC, which lives in shared memory for the server's life.
            unsafe { pg_sys::SetLatch(wake) };
        }
    }

    /// The launcher announces itself, and forgets requests a previous launcher left pending.
    pub fn register_launcher(&self, latch: *mut pg_sys::Latch) {
        self.header.launcher_latch.store(latch, Relaxed);
        // SAFETY: with_lock holds the queue's LWLock; slot and event pointers come from slot() and
        // event(), within the segment.
        self.with_lock(|| unsafe {
            for i in 0..MAX_DATABASES {
                (*self.slot(i)).starting = false;
            }
        })
    }

    /// Databases with events and no worker; each is marked as starting.
    pub fn orphans(&self) -> Vec<u32> {
        // SAFETY: with_lock holds the queue's LWLock; slot and event pointers come from slot() and
        // event(), within the segment.
        self.with_lock(|| unsafe {
            (0..MAX_DATABASES)
                .map(|i| self.slot(i))
                .filter(|&s| {
                    (*s).dbid != 0 && (*s).worker_pid == 0 && !(*s).starting && ((*s).tail > (*s).head || (*s).dropped > 0)
                })
                .map(|s| {
                    (*s).starting = true;
                    (*s).dbid
                })
                .collect()
        })
    }

    /// Whether another database has events and no worker: then a long-running notifier makes
    /// room, so that a few busy databases cannot hold every worker slot.
    pub fn others_waiting(&self, dbid: u32) -> bool {
        // SAFETY: with_lock holds the queue's LWLock; slot and event pointers come from slot() and
        // event(), within the segment.
        self.with_lock(|| unsafe {
            (0..MAX_DATABASES).map(|i| self.slot(i)).any(|s| {
                (*s).dbid != 0 && (*s).dbid != dbid && (*s).worker_pid == 0 && ((*s).tail > (*s).head || (*s).dropped > 0)
            })
        })
    }

    /// A requested worker never attached (it failed to start): allow another request.
    pub fn start_failed(&self, dbid: u32) {
        // SAFETY: with_lock holds the queue's LWLock; slot and event pointers come from slot() and
        // event(), within the segment.
        self.with_lock(|| unsafe {
            if let Some(s) = self.find(dbid) {
                (*s).starting = false;
            }
        })
    }

    /// A worker takes charge of its database; false if another one already has.
    pub fn attach_worker(&self, dbid: u32, pid: i32, latch: *mut pg_sys::Latch) -> bool {
        // SAFETY: with_lock holds the queue's LWLock; slot and event pointers come from slot() and
        // event(), within the segment.
        self.with_lock(|| unsafe {
            let Some(s) = self.find(dbid) else { return false };
            if (*s).worker_pid != 0 && (*s).worker_pid != pid {
                return false;
            }
            (*s).worker_pid = pid;
            (*s).worker_latch = latch;
            (*s).starting = false;
            true
        })
    }

    /// The worker leaves; with `discard`, its database's events go too (it could not connect).
    /// A slot left with nothing queued is freed for other databases; one with events that came
    /// in as the worker was leaving wakes the launcher to start another.
    pub fn detach_worker(&self, dbid: u32, pid: i32, discard: bool) {
        // SAFETY: with_lock holds the queue's LWLock; slot and event pointers come from slot() and
        // event(), within the segment.
        let orphaned = self.with_lock(|| unsafe {
            let Some(s) = self.find(dbid) else { return false };
            if (*s).worker_pid == pid {
                (*s).worker_pid = 0;
                (*s).worker_latch = std::ptr::null_mut();
            }
            (*s).starting = false;
            if discard {
                (*s).head = (*s).tail;
                (*s).dropped = 0;
            }
            let empty = (*s).head == (*s).tail && (*s).dropped == 0;
            if (*s).worker_pid == 0 && empty {
                (*s).dbid = 0;
            }
            !empty
        });
        let launcher = self.header.launcher_latch.load(Relaxed);
        if orphaned && !launcher.is_null() {
            // SAFETY: the launcher's PGPROC latch, in shared memory.
            unsafe { pg_sys::SetLatch(launcher) };
        }
    }

    /// Up to `max` queued events of a database, left in the queue until `consume`.
    pub fn peek(&self, dbid: u32, max: usize) -> Batch {
        // SAFETY: with_lock holds the queue's LWLock; slot and event pointers come from slot() and
        // event(), within the segment.
        self.with_lock(|| unsafe {
            let Some(s) = self.find(dbid) else { return Batch { events: vec![], dropped: 0 } };
            let n = ((*s).tail - (*s).head).min(max as u64);
            let events = (0..n).map(|i| *self.event(s, (*s).head + i)).collect();
            Batch { events, dropped: (*s).dropped }
        })
    }

    /// Removes what a batch held, once its notifications are committed.
    pub fn consume(&self, dbid: u32, batch: &Batch, now: i64) {
        // SAFETY: with_lock holds the queue's LWLock; slot and event pointers come from slot() and
        // event(), within the segment.
        self.with_lock(|| unsafe {
            if let Some(s) = self.find(dbid) {
                (*s).head += batch.events.len() as u64;
                (*s).dropped -= batch.dropped.min((*s).dropped);
            }
        });
        self.header.last_sent_at.store(now, Relaxed);
    }

    /// Events waiting, and workers attached, across databases.
    pub fn pending_and_workers(&self) -> (u64, u32) {
        // SAFETY: with_lock holds the queue's LWLock; slot and event pointers come from slot() and
        // event(), within the segment.
        self.with_lock(|| unsafe {
            (0..MAX_DATABASES).map(|i| self.slot(i)).fold((0, 0), |(p, w), s| {
                (p + ((*s).tail - (*s).head), w + ((*s).worker_pid != 0) as u32)
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_sums_counts_per_table_and_kind() {
        let e = |relid, kind, count, first_id, last_id| Event { relid, kind, count, first_id, last_id };
        let merged = merge(&[e(1, 2, 1, 5, 5), e(1, 4, 2, 6, 7), e(1, 2, 3, 3, 9), e(2, 2, 1, 0, 0)]);
        assert_eq!(merged, vec![e(1, 2, 4, 3, 9), e(1, 4, 2, 6, 7), e(2, 2, 1, 0, 0)]);
    }
}
