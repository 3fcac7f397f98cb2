//! The statistics' shared memory: a header, one entry per tracked table, and the conflict log
//! ring. Sized once at server start from `safe_upsert.max_tables` and
//! `safe_upsert.conflict_log_size`.
//!
//! Who guards what:
//! - `Header`: `lock`, `max_tables`, `log_size` are written once, by the postmaster before any
//!   backend exists, and only read after. `clock`, `next_id`, `evicted`, `stats_reset`,
//!   `log_skipped` are atomics, each read and written on its own (Relaxed): none of them orders
//!   any other memory.
//! - `TableEntry`: which table an entry belongs to (`dbid`, `relid`) changes only under the
//!   LWLock held EXCLUSIVE (claim, evict, forget); finding an entry and adding to its counters
//!   happens under the LWLock held SHARED, so that no entry changes owner while a committing
//!   writer adds to it. The counters and times are atomics, so SHARED holders (every committing
//!   writer at once) never wait for each other.
//! - `LogSlot`: no lock. The ring is a seqlock per slot, as PostgreSQL's changecount protocol
//!   (`pgstat_begin_changecount_write`): see `write_slot` and `read_slot` for the ordering.

use std::sync::atomic::{fence, AtomicI64, AtomicU32, AtomicU64, Ordering::*};

use pgrx::pg_sys;

use super::pending::COUNTERS;
use super::record::{LogRecord, Snapshot, TableRecord, KEY_BYTES, ROW_BYTES, VERSION_BYTES};

const TEXT_BYTES: usize = KEY_BYTES + 2 * VERSION_BYTES + ROW_BYTES;
const NULL_LEN: u16 = u16::MAX;

#[repr(C)]
pub struct Header {
    lock: *mut pg_sys::LWLock,
    pub max_tables: u32,
    pub log_size: u32,
    clock: AtomicU64,
    /// the id the next conflict gets; ids start at 1 and are never reused while the server runs
    next_id: AtomicU64,
    pub evicted: AtomicU64,
    pub stats_reset: AtomicI64,
    /// conflicts not logged because their slot was being written by another backend
    pub log_skipped: AtomicU64,
}

#[repr(C)]
struct TableEntry {
    dbid: AtomicU32,
    /// 0: free
    relid: AtomicU32,
    counts: [AtomicU64; COUNTERS],
    last_conflict_at: AtomicI64,
    stats_reset: AtomicI64,
    last_used: AtomicU64,
}

#[repr(C)]
struct LogSlot {
    /// 0: empty; 2*id: holds conflict `id`; 2*id+1: being written. The only atomic field: every
    /// other field is written only by the backend that made `seq` odd, and read by copies that
    /// are kept only if `seq` was the same even number before and after the copy.
    seq: AtomicU64,
    occurred_at: i64,
    dbid: u32,
    relid: u32,
    userid: u32,
    pid: i32,
    kind: u8,
    tombstone: bool,
    /// byte lengths of key, stored version (NULL_LEN: null), incoming version, row in `text`
    lens: [u16; 4],
    text: [u8; TEXT_BYTES],
}

pub fn size(max_tables: usize, log_size: usize) -> usize {
    size_of::<Header>() + max_tables * size_of::<TableEntry>() + log_size * size_of::<LogSlot>()
}

/// The shared state, once attached.
pub struct Shared {
    pub header: &'static Header,
    tables: &'static [TableEntry],
    log: &'static [LogSlot],
}

impl Shared {
    /// # Safety
    /// `base` points to `size(max_tables, log_size)` bytes of shared memory that `init` has set
    /// up (or that this call sets up when `fresh`).
    pub unsafe fn attach(base: *mut u8, fresh: bool, max_tables: u32, log_size: u32, lock: *mut pg_sys::LWLock, now: i64) -> Shared {
        // SAFETY: `base` points to `size(max_tables, log_size)` bytes (the contract), which hold
        // the header, then `max_tables` entries, then `log_size` slots; all-zero bytes are a
        // valid value of each (atomics, integers, a null pointer). A fresh segment is set up
        // here, in the postmaster, before any backend can read it.
        unsafe {
            if fresh {
                std::ptr::write_bytes(base, 0, size(max_tables as usize, log_size as usize));
                let h = base as *mut Header;
                (*h).lock = lock;
                (*h).max_tables = max_tables;
                (*h).log_size = log_size;
                (*h).next_id = AtomicU64::new(1);
                (*h).stats_reset = AtomicI64::new(now);
            }
            let header = &*(base as *const Header);
            let tables_at = base.add(size_of::<Header>()) as *const TableEntry;
            let log_at = tables_at.add(header.max_tables as usize) as *const LogSlot;
            Shared {
                header,
                tables: std::slice::from_raw_parts(tables_at, header.max_tables as usize),
                log: std::slice::from_raw_parts(log_at, header.log_size as usize),
            }
        }
    }

    fn lock(&self, mode: pg_sys::LWLockMode::Type) -> LockGuard {
        // SAFETY: the lock was assigned to us by GetNamedLWLockTranche; released by the guard.
        unsafe { pg_sys::LWLockAcquire(self.header.lock, mode) };
        LockGuard(self.header.lock)
    }

    fn find(&self, dbid: u32, relid: u32) -> Option<&TableEntry> {
        self.tables.iter().find(|e| e.relid.load(Relaxed) == relid && e.dbid.load(Relaxed) == dbid)
    }

    /// Adds `counts` to the table's entry, creating it (evicting the least recently used when
    /// full) if needed; `conflict_at` raises its last-conflict time.
    pub fn add(&self, dbid: u32, relid: u32, counts: &[u64; COUNTERS], conflict_at: Option<i64>, now: i64) {
        let tick = self.header.clock.fetch_add(1, Relaxed);
        let apply = |e: &TableEntry| {
            for (slot, &n) in e.counts.iter().zip(counts) {
                if n > 0 {
                    slot.fetch_add(n, Relaxed);
                }
            }
            if let Some(at) = conflict_at {
                e.last_conflict_at.fetch_max(at, Relaxed);
            }
            e.last_used.store(tick, Relaxed);
        };
        {
            let _shared = self.lock(pg_sys::LWLockMode::LW_SHARED);
            if let Some(e) = self.find(dbid, relid) {
                return apply(e);
            }
        }
        let _exclusive = self.lock(pg_sys::LWLockMode::LW_EXCLUSIVE);
        let entry = match self.find(dbid, relid) {
            Some(e) => e,
            None => match self.claim(dbid, relid, now) {
                Some(e) => e,
                None => return,
            },
        };
        apply(entry)
    }

    /// A free entry, or the least recently used one emptied. Caller holds the lock EXCLUSIVE.
    fn claim(&self, dbid: u32, relid: u32, now: i64) -> Option<&TableEntry> {
        let entry = match self.tables.iter().find(|e| e.relid.load(Relaxed) == 0) {
            Some(free) => free,
            None => {
                let lru = self.tables.iter().min_by_key(|e| e.last_used.load(Relaxed))?;
                self.header.evicted.fetch_add(1, Relaxed);
                lru
            }
        };
        entry.counts.iter().for_each(|c| c.store(0, Relaxed));
        entry.last_conflict_at.store(0, Relaxed);
        entry.stats_reset.store(now, Relaxed);
        entry.dbid.store(dbid, Relaxed);
        entry.relid.store(relid, Relaxed);
        Some(entry)
    }

    /// The entries of one database (all when `dbid` is None).
    pub fn tables(&self, dbid: Option<u32>) -> Vec<TableRecord> {
        let _shared = self.lock(pg_sys::LWLockMode::LW_SHARED);
        self.tables
            .iter()
            .filter(|e| e.relid.load(Relaxed) != 0 && dbid.is_none_or(|d| e.dbid.load(Relaxed) == d))
            .map(|e| TableRecord {
                dbid: e.dbid.load(Relaxed),
                relid: e.relid.load(Relaxed),
                counts: std::array::from_fn(|i| e.counts[i].load(Relaxed)),
                last_conflict_at: e.last_conflict_at.load(Relaxed),
                stats_reset: e.stats_reset.load(Relaxed),
                last_used: e.last_used.load(Relaxed),
            })
            .collect()
    }

    /// Zeroes the counters of one table, or of every table of the database.
    pub fn reset(&self, dbid: u32, relid: Option<u32>, now: i64) {
        let _exclusive = self.lock(pg_sys::LWLockMode::LW_EXCLUSIVE);
        for e in self.tables.iter().filter(|e| {
            e.relid.load(Relaxed) != 0 && e.dbid.load(Relaxed) == dbid && relid.is_none_or(|r| e.relid.load(Relaxed) == r)
        }) {
            e.counts.iter().for_each(|c| c.store(0, Relaxed));
            e.last_conflict_at.store(0, Relaxed);
            e.stats_reset.store(now, Relaxed);
        }
        if relid.is_none() {
            self.header.stats_reset.store(now, Relaxed);
        }
    }

    /// Frees the entries of tables that no longer exist.
    pub fn forget(&self, dbid: u32, relids: &[u32]) {
        let _exclusive = self.lock(pg_sys::LWLockMode::LW_EXCLUSIVE);
        for e in self.tables.iter().filter(|e| e.dbid.load(Relaxed) == dbid && relids.contains(&e.relid.load(Relaxed))) {
            e.relid.store(0, Relaxed);
        }
    }

    /// Entries in use.
    pub fn tables_in_use(&self) -> usize {
        self.tables.iter().filter(|e| e.relid.load(Relaxed) != 0).count()
    }

    /// Conflicts handed out ids so far (the log keeps the newest `log_size`).
    pub fn conflicts_logged(&self) -> u64 {
        self.header.next_id.load(Relaxed) - 1
    }

    /// Appends a conflict to the ring and returns its id; 0 when the log is off.
    pub fn log(&self, c: &LogRecord) -> u64 {
        if self.log.is_empty() {
            return 0;
        }
        let id = self.header.next_id.fetch_add(1, Relaxed);
        self.write_slot(id, c);
        id
    }

    /// Writes conflict `id` into its slot, unless a newer conflict already holds the slot or
    /// another backend is writing it (then it is skipped and counted: a writer never waits).
    /// Never fails: the texts are clamped to the slot, though `LogRecord::fit` has cut them so
    /// already, and nothing here allocates.
    fn write_slot(&self, id: u64, c: &LogRecord) {
        let Some(slot) = self.log.get((id % self.log.len().max(1) as u64) as usize) else { return };
        let mut seq = slot.seq.load(Acquire);
        loop {
            if seq / 2 > id {
                return;
            }
            if seq % 2 == 1 {
                self.header.log_skipped.fetch_add(1, Relaxed);
                return;
            }
            match slot.seq.compare_exchange(seq, 2 * id + 1, AcqRel, Acquire) {
                Ok(_) => break,
                Err(now) => seq = now,
            }
        }
        // The odd `seq` must be visible before any of the stores below: a reader that copies
        // one of them, then (after its Acquire fence) reads `seq` again, is then sure to see
        // the odd value or a later one, and discards its copy. This fence is the
        // pg_write_barrier() after the first changecount increment.
        fence(Release);
        let parts = [Some(c.key.as_str()), c.stored_version.as_deref(), Some(c.incoming_version.as_str()), Some(c.incoming_row.as_str())];
        let limits = [KEY_BYTES, VERSION_BYTES, VERSION_BYTES, ROW_BYTES];
        // SAFETY: the odd sequence number makes this backend the slot's only writer; readers
        // discard what they copy unless the sequence is even and unchanged around the copy.
        // Every range is within `text`: each part is clamped to its own limit, and the limits
        // add up to TEXT_BYTES.
        unsafe {
            let s = slot as *const LogSlot as *mut LogSlot;
            (*s).occurred_at = c.occurred_at;
            (*s).dbid = c.dbid;
            (*s).relid = c.relid;
            (*s).userid = c.userid;
            (*s).pid = c.pid;
            (*s).kind = c.kind;
            (*s).tombstone = c.tombstone;
            let text = (&raw mut (*s).text) as *mut u8;
            let mut at = 0;
            for (i, (part, limit)) in parts.iter().zip(limits).enumerate() {
                match part {
                    Some(p) => {
                        let n = p.len().min(limit);
                        std::ptr::copy_nonoverlapping(p.as_ptr(), text.add(at), n);
                        (*s).lens[i] = n as u16;
                        at += n;
                    }
                    None => (*s).lens[i] = NULL_LEN,
                }
            }
        }
        // Publishes the slot: a reader that sees this even value (with Acquire) sees every
        // store above (the second pg_write_barrier() of the protocol).
        slot.seq.store(2 * id, Release);
    }

    /// Every logged conflict, oldest first, that `keep` accepts.
    pub fn conflicts(&self, keep: impl Fn(u32, u32) -> bool) -> Vec<LogRecord> {
        let mut out: Vec<LogRecord> = self.log.iter().filter_map(read_slot).filter(|c| keep(c.dbid, c.relid)).collect();
        out.sort_by_key(|c| c.id);
        out
    }

    /// Conflict `id`, if its slot still holds it.
    pub fn conflict_by_id(&self, id: u64) -> Option<LogRecord> {
        if self.log.is_empty() {
            return None;
        }
        read_slot(&self.log[(id % self.log.len() as u64) as usize]).filter(|c| c.id == id)
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            next_id: self.header.next_id.load(Relaxed),
            evicted: self.header.evicted.load(Relaxed),
            stats_reset: self.header.stats_reset.load(Relaxed),
            tables: self.tables(None),
            conflicts: self.conflicts(|_, _| true),
        }
    }

    /// Restores a saved snapshot into fresh shared memory: the most recently used tables and
    /// the newest conflicts that fit.
    pub fn restore(&self, mut s: Snapshot) {
        self.header.next_id.store(s.next_id.max(1), Relaxed);
        self.header.evicted.store(s.evicted, Relaxed);
        self.header.stats_reset.store(s.stats_reset, Relaxed);
        s.tables.sort_by_key(|t| std::cmp::Reverse(t.last_used));
        for (e, t) in self.tables.iter().zip(&s.tables) {
            e.dbid.store(t.dbid, Relaxed);
            e.relid.store(t.relid, Relaxed);
            e.counts.iter().zip(t.counts).for_each(|(c, v)| c.store(v, Relaxed));
            e.last_conflict_at.store(t.last_conflict_at, Relaxed);
            e.stats_reset.store(t.stats_reset, Relaxed);
            e.last_used.store(t.last_used, Relaxed);
        }
        self.header.clock.store(s.tables.iter().map(|t| t.last_used).max().unwrap_or(0) + 1, Relaxed);
        if !self.log.is_empty() {
            for c in &s.conflicts {
                self.write_slot(c.id, c);
            }
        }
    }
}

/// A consistent copy of the slot's conflict, or None when it is empty, being written, or was
/// rewritten during the copy.
fn read_slot(slot: &LogSlot) -> Option<LogRecord> {
    // Acquire: if this is the even value a writer stored last, its stores to the slot are
    // visible to the copy below.
    let before = slot.seq.load(Acquire);
    if before == 0 || before % 2 == 1 {
        return None;
    }
    // SAFETY: a racy copy, checked against the sequence number below, and its lengths are
    // checked before use.
    let copy: LogSlot = unsafe { std::ptr::read_volatile(slot) };
    // Acquire fence: pairs with the writer's Release fence after it made `seq` odd. If the copy
    // holds any store of a later writer, the load below sees that writer's odd value (or later).
    fence(Acquire);
    if slot.seq.load(Relaxed) != before {
        return None;
    }
    let lens = copy.lens;
    let total: usize = lens.iter().filter(|&&l| l != NULL_LEN).map(|&l| l as usize).sum();
    if total > TEXT_BYTES || lens[0] == NULL_LEN || lens[2] == NULL_LEN || lens[3] == NULL_LEN {
        return None;
    }
    let mut at = 0;
    let mut part = |i: usize| -> Option<String> {
        let len = lens[i];
        (len != NULL_LEN).then(|| {
            let bytes = copy.text.get(at..at + len as usize).unwrap_or_default();
            at += len as usize;
            String::from_utf8_lossy(bytes).into_owned()
        })
    };
    Some(LogRecord {
        id: before / 2,
        occurred_at: copy.occurred_at,
        dbid: copy.dbid,
        relid: copy.relid,
        userid: copy.userid,
        pid: copy.pid,
        kind: copy.kind,
        tombstone: copy.tombstone,
        key: part(0).unwrap_or_default(),
        stored_version: part(1),
        incoming_version: part(2).unwrap_or_default(),
        incoming_row: part(3).unwrap_or_default(),
    })
}

struct LockGuard(*mut pg_sys::LWLock);

impl Drop for LockGuard {
    fn drop(&mut self) {
        // SAFETY: acquired in Shared::lock.
        unsafe { pg_sys::LWLockRelease(self.0) };
    }
}
