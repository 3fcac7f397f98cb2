//! Outcomes a backend has seen but not yet published: they wait for the transaction (or the
//! savepoint holding them) to end. Pure bookkeeping, unit-tested with plain `#[test]`s.

use std::collections::{HashMap, VecDeque};

/// Counter slots, in the order of the view's columns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    Inserted = 0,
    Updated,
    Stale,
    Duplicate,
    Tie,
    UniqueViolations,
    Errors,
}

pub const COUNTERS: usize = 7;

/// A conflict waiting to be logged; its id is given when it is.
pub type Conflict = super::record::LogRecord;

/// Pending counts and conflicts, each tagged with the subtransaction that produced it.
#[derive(Default)]
pub struct Pending {
    counts: HashMap<(u32, u32), [u64; COUNTERS]>,
    conflicts: VecDeque<(u32, Conflict)>,
}

impl Pending {
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty() && self.conflicts.is_empty()
    }

    pub fn count(&mut self, subxact: u32, relid: u32, counter: Counter) {
        self.counts.entry((subxact, relid)).or_default()[counter as usize] += 1;
    }

    /// Keeps at most `limit` conflicts: the log holds only the newest anyway.
    pub fn conflict(&mut self, subxact: u32, conflict: Conflict, limit: usize) {
        if limit == 0 {
            return;
        }
        while self.conflicts.len() >= limit {
            self.conflicts.pop_front();
        }
        self.conflicts.push_back((subxact, conflict));
    }

    /// A savepoint rolled back: forget what it and every subtransaction inside it produced.
    /// Subtransaction ids only grow within a transaction, and when `subxact` aborts every id
    /// above it still pending belongs to one of its children.
    pub fn abort_subxact(&mut self, subxact: u32) {
        self.counts.retain(|(s, _), _| *s < subxact);
        self.conflicts.retain(|(s, _)| *s < subxact);
    }

    /// Everything, summed per table, and the conflicts in the order they happened.
    pub fn take(&mut self) -> (HashMap<u32, [u64; COUNTERS]>, Vec<Conflict>) {
        let mut per_table: HashMap<u32, [u64; COUNTERS]> = HashMap::new();
        for ((_, relid), counts) in self.counts.drain() {
            let sum = per_table.entry(relid).or_default();
            for (s, c) in sum.iter_mut().zip(counts) {
                *s += c;
            }
        }
        (per_table, self.conflicts.drain(..).map(|(_, c)| c).collect())
    }

    pub fn clear(&mut self) {
        self.counts.clear();
        self.conflicts.clear();
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
        let (t, _) = p.take();
        assert_eq!(t[&10][Counter::Inserted as usize], 2);
        assert_eq!(t[&11][Counter::Stale as usize], 1);
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
        p.abort_subxact(3);
        let (t, c) = p.take();
        assert_eq!(t[&10], [1, 1, 0, 0, 0, 0, 0]);
        assert!(c.is_empty());
    }

    #[test]
    fn keeps_only_the_newest_conflicts() {
        let mut p = Pending::default();
        for k in ["a", "b", "c"] {
            p.conflict(1, conflict(10, k), 2);
        }
        p.conflict(1, conflict(10, "x"), 0);
        let (_, c) = p.take();
        assert_eq!(c.iter().map(|c| c.key.as_str()).collect::<Vec<_>>(), ["b", "c"]);
    }
}
