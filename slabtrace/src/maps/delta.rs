//! What changed between two snapshots: pure arithmetic, the part worth testing hardest.
//!
//! Counters only grow while the same maps live. A value smaller than before means the key was
//! deleted and created again (or the maps were replaced): the new value is then the whole
//! delta, never a negative number or an underflow.

use std::collections::BTreeMap;

use slabtrace_common::{CounterKey, Counters};

/// The change of one key's counters over an interval.
pub type CounterDelta = Counters;

/// A record of totals the kernel only ever adds to while it counts the same thing. The one
/// rule for every map of such records: a record that does not continue the one read before
/// (a figure went back, or another object now sits at the key) starts over, and is taken
/// whole, never as a negative number or an underflow.
pub trait Totals: Copy {
    /// Whether `self` continues `earlier`: the same thing, no figure lower.
    fn continues(&self, earlier: &Self) -> bool;
    /// What was added since `earlier`, which `self` continues.
    #[must_use]
    fn since(&self, earlier: &Self) -> Self;
}

/// What was added to a record since `earlier` (None: the key is new): the difference when it
/// continues `earlier`, else the whole record.
pub fn since<T: Totals>(earlier: Option<&T>, now: &T) -> T {
    match earlier {
        Some(then) if now.continues(then) => now.since(then),
        _ => *now,
    }
}

impl Totals for Counters {
    fn continues(&self, then: &Self) -> bool {
        self.allocs >= then.allocs
            && self.sampled_allocs >= then.sampled_allocs
            && self.sampled_frees >= then.sampled_frees
            && self.sampled_evicted >= then.sampled_evicted
    }

    fn since(&self, then: &Self) -> Self {
        Self {
            allocs: self.allocs - then.allocs,
            sampled_allocs: self.sampled_allocs - then.sampled_allocs,
            sampled_frees: self.sampled_frees - then.sampled_frees,
            sampled_evicted: self.sampled_evicted - then.sampled_evicted,
        }
    }
}

/// Per-key change from `before` to `after`. Keys only in `after` count in full; keys only in
/// `before` (deleted) are left out; keys with no change are left out.
#[must_use]
pub fn delta(
    before: &BTreeMap<CounterKey, Counters>,
    after: &BTreeMap<CounterKey, Counters>,
) -> BTreeMap<CounterKey, CounterDelta> {
    after
        .iter()
        .filter_map(|(key, now)| {
            let d = since(before.get(key), now);
            (d != Counters::default()).then_some((*key, d))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(cg: u64) -> CounterKey {
        CounterKey { cgroup_id: cg, cache: 0xffff_8880_0000_0100, flags: 0, padding: 0 }
    }

    fn c(allocs: u64, sa: u64, sf: u64) -> Counters {
        Counters { allocs, sampled_allocs: sa, sampled_frees: sf, sampled_evicted: 0 }
    }

    #[test]
    fn empty_input_gives_empty_delta() {
        assert!(delta(&BTreeMap::new(), &BTreeMap::new()).is_empty());
    }

    #[test]
    fn growth_is_subtracted() {
        let before = BTreeMap::from([(key(1), c(10, 2, 1))]);
        let after = BTreeMap::from([(key(1), c(15, 3, 3))]);
        assert_eq!(delta(&before, &after), BTreeMap::from([(key(1), c(5, 1, 2))]));
    }

    #[test]
    fn zero_interval_has_no_change() {
        let snap = BTreeMap::from([(key(1), c(10, 2, 1))]);
        assert!(delta(&snap, &snap).is_empty());
    }

    #[test]
    fn a_new_key_counts_in_full() {
        let after = BTreeMap::from([(key(2), c(7, 1, 0))]);
        assert_eq!(delta(&BTreeMap::new(), &after), after);
    }

    #[test]
    fn a_reset_counter_never_goes_negative() {
        let before = BTreeMap::from([(key(1), c(100, 10, 9))]);
        let after = BTreeMap::from([(key(1), c(4, 1, 0))]);
        assert_eq!(delta(&before, &after), BTreeMap::from([(key(1), c(4, 1, 0))]));
    }

    #[test]
    fn a_deleted_key_is_left_out() {
        let before = BTreeMap::from([(key(1), c(1, 0, 0)), (key(2), c(1, 0, 0))]);
        let after = BTreeMap::from([(key(2), c(3, 0, 0))]);
        assert_eq!(delta(&before, &after), BTreeMap::from([(key(2), c(2, 0, 0))]));
    }
}
