//! Outcomes a backend has seen but not yet published: they wait for the transaction (or the
//! savepoint holding them) to end. Pure bookkeeping, unit-tested with plain `#[test]`s.

use std::collections::{HashMap, VecDeque};

use crate::notify::queue::Event;

/// Counter slots, in the order of the view's columns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    Inserted = 0,
    Updated,
    Stale,
    Duplicate,
    Tie,
    SkippedByTrigger,
    UniqueViolations,
    Errors,
    /// safe_delete's outcomes, counted apart from upserts'
    Deleted,
    Absent,
    DeleteStale,
    DeleteDuplicate,
    DeleteSkippedByTrigger,
}

pub const COUNTERS: usize = 13;

/// The counters whose rows are conflicts: logged, notified, and the time of the last one kept.
pub const CONFLICTS: [Counter; 3] = [Counter::Stale, Counter::Tie, Counter::DeleteStale];

/// A conflict waiting to be logged; its id is given when it is.
pub type Conflict = super::record::LogRecord;

/// Pending counts and conflicts, each tagged with the subtransaction that produced it, and
/// failed calls, which no rollback takes back.
///
/// Publishing happens in commit and abort callbacks, where nothing may fail: whatever it needs
/// is cut, formatted and allocated here, when an outcome is recorded. `committed` then only
/// reads, sorts in place and hands out.
#[derive(Default)]
pub struct Pending {
    counts: HashMap<(u32, u32), [u64; COUNTERS]>,
    conflicts: VecDeque<(u32, Conflict)>,
    failures: Vec<(u32, Counter, Option<Conflict>)>,
    /// room for one (table, counts) per entry of `counts`, reserved when an entry is added
    sums: Vec<(u32, [u64; COUNTERS])>,
    /// room for an event per conflict counter per entry of `counts`, reserved likewise
    events: Vec<Event>,
}

impl Pending {
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty() && self.conflicts.is_empty() && self.failures.is_empty()
    }

    pub fn count(&mut self, subxact: u32, relid: u32, counter: Counter) {
        let before = self.counts.len();
        self.counts.entry((subxact, relid)).or_default()[counter as usize] += 1;
        if self.counts.len() > before {
            self.sums.reserve(self.counts.len().saturating_sub(self.sums.len()));
            self.events.reserve((CONFLICTS.len() * self.counts.len()).saturating_sub(self.events.len()));
        }
    }

    /// Keeps at most `limit` conflicts: the log holds only the newest anyway. The conflict's
    /// texts must already fit a log slot (`LogRecord::fit`).
    pub fn conflict(&mut self, subxact: u32, conflict: Conflict, limit: usize) {
        if limit == 0 {
            return;
        }
        while self.conflicts.len() >= limit {
            self.conflicts.pop_front();
        }
        self.conflicts.push_back((subxact, conflict));
    }

    /// A failed call: published when its (sub)transaction ends, whether that commits or not.
    pub fn failure(&mut self, relid: u32, counter: Counter, conflict: Option<Conflict>) {
        self.failures.push((relid, counter, conflict));
    }

    /// A savepoint rolled back: forget what it and every subtransaction inside it produced.
    /// Subtransaction ids only grow within a transaction, and when `subxact` aborts every id
    /// above it still pending belongs to one of its children.
    pub fn abort_subxact(&mut self, subxact: u32) {
        self.counts.retain(|(s, _), _| *s < subxact);
        self.conflicts.retain(|(s, _)| *s < subxact);
    }

    /// The counts summed per table (sorted by table), and the conflicts in the order they
    /// happened; then forgets them. Allocates nothing: `sums` was reserved by `count`.
    pub fn committed(&mut self) -> (&[(u32, [u64; COUNTERS])], impl Iterator<Item = &Conflict> + Clone) {
        self.sums.clear();
        for (&(_, relid), counts) in &self.counts {
            if self.sums.len() < self.sums.capacity() {
                self.sums.push((relid, *counts));
            }
        }
        self.counts.clear();
        self.sums.sort_unstable_by_key(|(relid, _)| *relid);
        // merge neighbours of the same table, in place
        let mut kept = 0;
        for i in 0..self.sums.len() {
            if kept > 0 && self.sums[kept - 1].0 == self.sums[i].0 {
                let add = self.sums[i].1;
                for (s, c) in self.sums[kept - 1].1.iter_mut().zip(add) {
                    *s += c;
                }
            } else {
                self.sums.swap(kept, i);
                kept += 1;
            }
        }
        self.sums.truncate(kept);
        (&self.sums, self.conflicts.iter().map(|(_, c)| c))
    }

    /// The reserved room for the commit's events, empty; give it back with `return_events`.
    pub fn take_events(&mut self) -> Vec<Event> {
        let mut events = std::mem::take(&mut self.events);
        events.clear();
        events
    }

    pub fn return_events(&mut self, mut events: Vec<Event>) {
        events.clear();
        self.events = events;
    }

    /// Forgets what `committed` handed out.
    pub fn clear_committed(&mut self) {
        self.sums.clear();
        self.conflicts.clear();
    }

    /// The failed calls so far, which the caller publishes and then forgets with
    /// `clear_failures`.
    pub fn failures(&self) -> &[(u32, Counter, Option<Conflict>)] {
        &self.failures
    }

    pub fn clear_failures(&mut self) {
        self.failures.clear();
    }

    /// The transaction rolled back: its outcomes go, its failures stay for publishing.
    pub fn clear(&mut self) {
        self.counts.clear();
        self.conflicts.clear();
        self.sums.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conflict(relid: u32, key: &str) -> Conflict {
        Conflict { relid, kind: Counter::Stale as u8, key: key.into(), ..Default::default() }
    }

    #[test]
    fn sums_per_table_across_subtransactions() {
        let mut p = Pending::default();
        p.count(1, 10, Counter::Inserted);
        p.count(2, 10, Counter::Inserted);
        p.count(2, 11, Counter::Stale);
        let (t, _) = p.committed();
        assert_eq!(t.len(), 2);
        assert_eq!((t[0].0, t[0].1[Counter::Inserted as usize]), (10, 2));
        assert_eq!((t[1].0, t[1].1[Counter::Stale as usize]), (11, 1));
        p.clear_committed();
        assert!(p.is_empty());
    }

    #[test]
    fn rolled_back_savepoint_forgets_itself_and_its_children() {
        let mut p = Pending::default();
        p.count(1, 10, Counter::Inserted);
        p.count(2, 10, Counter::Updated); // savepoint a (released: stays)
        p.count(3, 10, Counter::Stale); // savepoint b
        p.count(4, 10, Counter::Tie); // savepoint c inside b
        p.conflict(3, conflict(10, "b"), 10);
        p.conflict(4, conflict(10, "c"), 10);
        p.failure(10, Counter::Errors, None);
        p.abort_subxact(3);
        let (t, c) = p.committed();
        assert_eq!(t, [(10, [1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])]);
        assert_eq!(c.count(), 0);
        // a failure inside the rolled-back savepoint is still there to publish
        assert_eq!(p.failures().len(), 1);
    }

    #[test]
    fn publishing_sums_many_subtransactions_without_growing() {
        let mut p = Pending::default();
        for sub in 1..=1000 {
            p.count(sub, 10 + sub % 3, Counter::Updated);
        }
        let capacity = p.sums.capacity();
        let events = p.take_events();
        // room for a stale and a tie event of every table, whatever was counted
        assert!(events.capacity() >= 2 * 3);
        let (t, _) = p.committed();
        assert_eq!(t.iter().map(|(r, c)| (*r, c[Counter::Updated as usize])).collect::<Vec<_>>(), [(10, 333), (11, 334), (12, 333)]);
        assert_eq!(p.sums.capacity(), capacity);
        p.return_events(events);
    }

    #[test]
    fn keeps_only_the_newest_conflicts() {
        let mut p = Pending::default();
        for k in ["a", "b", "c"] {
            p.conflict(1, conflict(10, k), 2);
        }
        p.conflict(1, conflict(10, "x"), 0);
        let (_, c) = p.committed();
        assert_eq!(c.map(|c| c.key.as_str()).collect::<Vec<_>>(), ["b", "c"]);
    }
}
