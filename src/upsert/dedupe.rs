//! One winner per key inside a batch. Pure selection over row indexes, given the comparisons
//! (`winners.rs` makes them compare as the table does), so it is unit-tested with plain
//! `#[test]`s.

use std::cmp::Ordering;

/// The rows of a batch sorted out by key.
#[derive(Debug, PartialEq, Eq)]
pub struct Picked {
    /// the row written for each key, in key order: the order in which the write locks them
    pub winners: Vec<usize>,
    /// (row, the winner of its key) for every other row, in no particular order
    pub losers: Vec<(usize, usize)>,
}

/// Sorts rows `0..n` by key and keeps, of each key's rows, the one with the highest version:
/// of equal versions the first, or with `last_of_equals` the last (rows are in input order
/// within a key, the sort being stable).
pub fn pick(
    n: usize,
    key: &mut dyn FnMut(usize, usize) -> Ordering,
    version: &mut dyn FnMut(usize, usize) -> Ordering,
    last_of_equals: bool,
) -> Picked {
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| key(a, b));
    let mut winners = Vec::with_capacity(n);
    let mut losers = Vec::new();
    let mut start = 0;
    while start < n {
        let mut end = start + 1;
        while end < n && key(order[start], order[end]) == Ordering::Equal {
            end += 1;
        }
        let mut best = order[start];
        for &row in &order[start + 1..end] {
            match version(row, best) {
                Ordering::Greater => best = row,
                Ordering::Equal if last_of_equals => best = row,
                _ => {}
            }
        }
        winners.push(best);
        losers.extend(order[start..end].iter().filter(|&&row| row != best).map(|&row| (row, best)));
        start = end;
    }
    Picked { winners, losers }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (key, version) rows
    fn picked(rows: &[(i32, i32)], last_of_equals: bool) -> Picked {
        let mut key = |a: usize, b: usize| rows[a].0.cmp(&rows[b].0);
        let mut version = |a: usize, b: usize| rows[a].1.cmp(&rows[b].1);
        pick(rows.len(), &mut key, &mut version, last_of_equals)
    }

    fn sorted(mut losers: Vec<(usize, usize)>) -> Vec<(usize, usize)> {
        losers.sort_unstable();
        losers
    }

    #[test]
    fn distinct_keys_all_win_in_key_order() {
        let p = picked(&[(3, 1), (1, 1), (2, 1)], false);
        assert_eq!(p.winners, vec![1, 2, 0]);
        assert!(p.losers.is_empty());
    }

    #[test]
    fn the_highest_version_of_a_key_wins_wherever_it_is() {
        let p = picked(&[(7, 2), (5, 1), (7, 9), (7, 4)], false);
        assert_eq!(p.winners, vec![1, 2]);
        assert_eq!(sorted(p.losers), vec![(0, 2), (3, 2)]);
    }

    #[test]
    fn of_equal_versions_the_first_wins_or_the_last() {
        let rows = [(1, 5), (1, 5), (2, 0), (1, 5)];
        let first = picked(&rows, false);
        assert_eq!(first.winners, vec![0, 2]);
        assert_eq!(sorted(first.losers), vec![(1, 0), (3, 0)]);
        let last = picked(&rows, true);
        assert_eq!(last.winners, vec![3, 2]);
        assert_eq!(sorted(last.losers), vec![(0, 3), (1, 3)]);
    }

    #[test]
    fn a_lower_version_after_the_highest_does_not_win() {
        let p = picked(&[(1, 3), (1, 8), (1, 2)], true);
        assert_eq!(p.winners, vec![1]);
        assert_eq!(sorted(p.losers), vec![(0, 1), (2, 1)]);
    }

    #[test]
    fn an_empty_batch_has_no_winners() {
        assert_eq!(picked(&[], false), Picked { winners: vec![], losers: vec![] });
    }

    #[test]
    fn keys_equal_by_the_comparison_not_by_value_share_a_winner() {
        // as under a case-insensitive collation: the comparison decides what one key is
        let names = ["a", "A", "b", "a"];
        let mut key = |x: usize, y: usize| names[x].to_lowercase().cmp(&names[y].to_lowercase());
        let mut version = |x: usize, y: usize| x.cmp(&y);
        let p = pick(names.len(), &mut key, &mut version, false);
        assert_eq!(p.winners, vec![3, 2]);
        assert_eq!(sorted(p.losers), vec![(0, 3), (1, 3)]);
    }
}
