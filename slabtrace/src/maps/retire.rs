//! Which counters a long-running daemon may retire, so that the counters map (bounded by
//! `--max-keys`) and its own tables do not fill up with every pod the node ever ran.
//!
//! A key is *finished* when its cgroup is gone and none of its sampled objects is live: no
//! allocation can come to it (cgroup ids are never reused), and no free can be credited to it
//! (every tracked object of it was freed). A finished key is deleted from the kernel's map at
//! once, and kept in userspace for the grace period, so its owner's figures and its `gone`
//! event still go out; then it is forgotten. A cgroup is forgotten, path and all, with its last
//! key. A gone cgroup that still holds live objects is never forgotten, since that memory is
//! still on the node, but it keeps only the keys that hold them: the soak showed a node that
//! runs a pod every few seconds keeping every cache each dead pod ever touched (dentries of
//! image files stay cached long after the pod), so that `/report` and the daemon grew by
//! megabytes an hour.
//! Pure: the caller supplies liveness and the clock.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use slabtrace_common::{
    CounterKey, Counters,
    key::{IRQ_CGROUP, UNTRACKED_CGROUP},
};

/// What to do with finished keys now.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Retirement {
    /// Keys to delete from the kernel's map now (finished, still in the map).
    pub delete: Vec<CounterKey>,
    /// Keys finished for longer than the grace period: forget their figures.
    pub forget_keys: BTreeSet<CounterKey>,
    /// Cgroups with no key left once those are forgotten: forget their paths too.
    pub forget: BTreeSet<u64>,
}

/// Whether a key has no live sampled object (each was freed or evicted).
fn empty(c: &Counters) -> bool {
    c.sampled_allocs <= c.sampled_frees + c.sampled_evicted
}

/// Whether a key belongs to a cgroup (not interrupt context or untracked frees, which are
/// nobody's to retire).
fn owned(key: &CounterKey) -> bool {
    key.cgroup_id != IRQ_CGROUP && key.cgroup_id != UNTRACKED_CGROUP
}

/// Plans the retirement. `in_map` is what the kernel's map holds now, `totals` what userspace
/// keeps, `alive(id)` whether a cgroup exists, and `finished_at` (updated here) when each key
/// was first seen finished.
pub fn plan(
    in_map: &BTreeMap<CounterKey, Counters>,
    totals: &BTreeMap<CounterKey, Counters>,
    mut alive: impl FnMut(u64) -> bool,
    finished_at: &mut BTreeMap<CounterKey, Instant>,
    now: Instant,
    grace: Duration,
) -> Retirement {
    let finished: BTreeSet<CounterKey> = totals
        .iter()
        .filter(|(k, c)| owned(k) && empty(c) && !alive(k.cgroup_id))
        .map(|(k, _)| *k)
        .collect();
    // A key that is no longer finished (it cannot come back, but a late credited free of an
    // evicted entry could make it non-empty again on paper) starts over.
    finished_at.retain(|k, _| finished.contains(k));
    for &k in &finished {
        finished_at.entry(k).or_insert(now);
    }
    let delete = in_map
        .iter()
        .filter(|(k, c)| owned(k) && empty(c) && !alive(k.cgroup_id))
        .map(|(k, _)| *k)
        .collect();
    let forget_keys: BTreeSet<CounterKey> = finished_at
        .iter()
        .filter(|&(_, &at)| now.saturating_duration_since(at) >= grace)
        .map(|(&k, _)| k)
        .collect();
    let mut kept: BTreeSet<u64> = BTreeSet::new();
    for k in totals.keys().filter(|k| owned(k) && !forget_keys.contains(k)) {
        kept.insert(k.cgroup_id);
    }
    let forget = forget_keys.iter().map(|k| k.cgroup_id).filter(|id| !kept.contains(id)).collect();
    Retirement { delete, forget_keys, forget }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(cgroup_id: u64, cache: u64) -> CounterKey {
        CounterKey { cgroup_id, cache, flags: 0, padding: 0 }
    }

    fn c(sa: u64, sf: u64) -> Counters {
        Counters { allocs: sa * 16, sampled_allocs: sa, sampled_frees: sf, sampled_evicted: 0 }
    }

    const GRACE: Duration = Duration::from_mins(10);

    #[test]
    fn a_gone_cgroup_with_nothing_live_is_deleted_then_forgotten() {
        let map = BTreeMap::from([(key(5, 1), c(3, 3)), (key(5, 2), c(0, 0))]);
        let mut at = BTreeMap::new();
        let t0 = Instant::now();
        let r = plan(&map, &map, |_| false, &mut at, t0, GRACE);
        assert_eq!(r.delete, vec![key(5, 1), key(5, 2)]);
        assert!(r.forget.is_empty());
        // Deleted from the map; userspace still has it until the grace period is over.
        let r = plan(&BTreeMap::new(), &map, |_| false, &mut at, t0 + GRACE, GRACE);
        assert_eq!(r.delete, vec![]);
        assert_eq!(r.forget_keys, BTreeSet::from([key(5, 1), key(5, 2)]));
        assert_eq!(r.forget, BTreeSet::from([5]));
    }

    #[test]
    fn live_cgroups_and_live_objects_are_kept() {
        let map = BTreeMap::from([
            // Alive, nothing live: it may allocate again.
            (key(1, 1), c(2, 2)),
            // Gone, but one cache still has a live object: that key stays, and the cgroup is
            // never forgotten.
            (key(2, 1), c(2, 2)),
            (key(2, 2), c(5, 4)),
            // Interrupt context and untracked frees are nobody's to retire.
            (key(IRQ_CGROUP, 1), c(0, 0)),
            (key(UNTRACKED_CGROUP, 1), c(0, 0)),
        ]);
        let mut at = BTreeMap::new();
        let later = Instant::now() + GRACE * 2;
        let r = plan(&map, &map, |id| id == 1, &mut at, later, GRACE);
        assert_eq!(r.delete, vec![key(2, 1)]);
        assert!(r.forget.is_empty() && r.forget_keys.is_empty());
        assert_eq!(at.keys().copied().collect::<Vec<_>>(), [key(2, 1)]);
        // A grace period on, the gone cgroup keeps only the key that still holds objects.
        let map = BTreeMap::from([(key(2, 2), c(5, 4))]);
        let totals = BTreeMap::from([(key(2, 1), c(2, 2)), (key(2, 2), c(5, 4))]);
        let r = plan(&map, &totals, |id| id == 1, &mut at, later + GRACE, GRACE);
        assert_eq!(r.forget_keys, BTreeSet::from([key(2, 1)]));
        assert!(r.forget.is_empty(), "a cgroup with live objects keeps its path");
    }

    #[test]
    fn the_clock_starts_when_the_cgroup_is_finished() {
        let busy = BTreeMap::from([(key(7, 1), c(4, 1))]);
        let done = BTreeMap::from([(key(7, 1), c(4, 4))]);
        let mut at = BTreeMap::new();
        let t0 = Instant::now();
        assert_eq!(plan(&busy, &busy, |_| false, &mut at, t0, GRACE), Retirement::default());
        let t1 = t0 + GRACE;
        assert_eq!(plan(&done, &done, |_| false, &mut at, t1, GRACE).delete, vec![key(7, 1)]);
        assert!(plan(&BTreeMap::new(), &done, |_| false, &mut at, t1, GRACE).forget.is_empty());
        let r = plan(&BTreeMap::new(), &done, |_| false, &mut at, t1 + GRACE, GRACE);
        assert_eq!(r.forget_keys, BTreeSet::from([key(7, 1)]));
        assert_eq!(r.forget, BTreeSet::from([7]));
    }
}
