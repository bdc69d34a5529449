//! What changed between two snapshots: pure arithmetic, the part worth testing hardest.
//!
//! Counters only grow while the same maps live. A value smaller than before means the key was
//! deleted and created again (or the maps were replaced): the new value is then the whole
//! delta, never a negative number or an underflow.

use std::collections::BTreeMap;

use slabtrace_common::{CounterKey, Counters};

/// The change of one key's counters over an interval.
pub type CounterDelta = Counters;

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
            let d = match before.get(key) {
                Some(then) => one(then, now),
                None => *now,
            };
            (d != Counters::default()).then_some((*key, d))
        })
        .collect()
}

/// One key's change; a reset (any field went down) yields the new value whole.
fn one(then: &Counters, now: &Counters) -> Counters {
    let reset = now.allocs < then.allocs
        || now.sampled_allocs < then.sampled_allocs
        || now.sampled_frees < then.sampled_frees
        || now.sampled_evicted < then.sampled_evicted;
    if reset {
        *now
    } else {
        Counters {
            allocs: now.allocs - then.allocs,
            sampled_allocs: now.sampled_allocs - then.sampled_allocs,
            sampled_frees: now.sampled_frees - then.sampled_frees,
            sampled_evicted: now.sampled_evicted - then.sampled_evicted,
        }
    }
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
