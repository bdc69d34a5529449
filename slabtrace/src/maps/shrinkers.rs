//! The shrinker map: every shrinker's reclaim totals so far, its per-CPU copies summed.
//!
//! Read apart from [`super::Snapshot`]: the shrinker programs are optional, and their figures
//! go to the growth classifier and the node summary (`crate::node::shrinkers`), not to the
//! per-cgroup attribution.

use std::collections::BTreeMap;

use aya::{
    Ebpf,
    maps::{MapError, PerCpuHashMap},
};
use slabtrace_common::{ShrinkerStats, map_names::SHRINKERS};

use super::snapshot::MapReadError;

/// Reads the shrinker map: `struct shrinker *` → totals, summed over CPUs.
pub fn read_shrinkers(ebpf: &Ebpf) -> Result<BTreeMap<u64, ShrinkerStats>, MapReadError> {
    let read_err = |source| MapReadError::Read { map: SHRINKERS, source };
    let map = ebpf.map(SHRINKERS).ok_or(MapReadError::Missing(SHRINKERS))?;
    // aya reads an LRU per-CPU hash through PerCpuHashMap.
    let map: PerCpuHashMap<_, u64, ShrinkerStats> =
        PerCpuHashMap::try_from(map).map_err(read_err)?;
    let mut out = BTreeMap::new();
    for entry in &map {
        let (shrinker, per_cpu) = match entry {
            Ok(e) => e,
            // Evicted or reset between get_next_key and lookup: the next read has it.
            Err(MapError::KeyNotFound) => continue,
            Err(e) => return Err(read_err(e)),
        };
        out.insert(shrinker, sum(per_cpu.iter()));
    }
    Ok(out)
}

/// Sums one shrinker's per-CPU copies. The scan function and name come from the copy with the
/// most calls: copies agree except in the moment after a shrinker's memory is reused, when a
/// CPU that has not run the new one yet still holds the old one's (see the BPF side).
fn sum<'a>(copies: impl Iterator<Item = &'a ShrinkerStats>) -> ShrinkerStats {
    let mut total = ShrinkerStats::default();
    let mut identity_calls = None;
    for c in copies {
        if c.scan_fn != 0 && identity_calls.is_none_or(|calls| c.calls > calls) {
            total.scan_fn = c.scan_fn;
            total.name = c.name;
            identity_calls = Some(c.calls);
        }
        total.calls = total.calls.wrapping_add(c.calls);
        total.planned = total.planned.wrapping_add(c.planned);
        total.left = total.left.wrapping_add(c.left);
        total.freed = total.freed.wrapping_add(c.freed);
    }
    total
}

#[cfg(test)]
mod tests {
    use slabtrace_common::shrinker::SHRINKER_NAME_LEN;

    use super::*;

    fn copy(scan_fn: u64, calls: u64, planned: u64, left: i64, freed: u64) -> ShrinkerStats {
        let mut name = [0; SHRINKER_NAME_LEN];
        if scan_fn != 0 {
            name[..4].copy_from_slice(&scan_fn.to_le_bytes()[..4]);
        }
        ShrinkerStats { scan_fn, calls, planned, left: left.cast_unsigned(), freed, name }
    }

    #[test]
    fn per_cpu_copies_are_summed() {
        let cases: [(&str, Vec<ShrinkerStats>, ShrinkerStats); 4] = [
            ("no copies", vec![], ShrinkerStats::default()),
            (
                "two CPUs ran it",
                vec![copy(0xa, 2, 300, 10, 250), copy(0xa, 1, 100, 0, 90)],
                copy(0xa, 3, 400, 10, 340),
            ),
            (
                // A call that started on CPU 0 and ended on CPU 1 (cond_resched moved it): CPU
                // 1's copy has only the end's figures and no scan function.
                "an end on a CPU that started nothing",
                vec![copy(0xa, 1, 100, 0, 0), copy(0, 0, 0, 4, 96)],
                copy(0xa, 1, 100, 4, 96),
            ),
            (
                // Negative `left` (a shrinker that scanned more than planned) wraps back.
                "the most-called copy names it, and left is signed",
                vec![copy(0xb, 1, 10, 0, 1), copy(0xa, 5, 50, -2, 40)],
                copy(0xa, 6, 60, -2, 41),
            ),
        ];
        for (what, copies, expected) in cases {
            assert_eq!(sum(copies.iter()), expected, "{what}");
        }
    }
}
