//! One consistent-enough read of every map: per-CPU values summed, caches named.
//!
//! Maps are read entry by entry while the programs keep running, so a snapshot is not atomic;
//! counters only grow, so the next interval's delta picks up whatever this one missed.

use std::collections::BTreeMap;

use std::os::fd::AsFd as _;

use super::batch::{self, BatchError};
use aya::{
    Ebpf, Pod,
    maps::{HashMap, Map, MapError, PerCpuArray, PerCpuHashMap},
};
use log::debug;
use slabtrace_common::{
    CacheInfo, CallSiteKey, CounterKey, Counters, Stat,
    map_names::{CACHES, CALL_SITES, COUNTERS, STATS},
};

/// slabtrace's own counters from the BPF side, indexed by [`Stat`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats(pub [u64; Stat::COUNT as usize]);

impl Stats {
    /// One statistic.
    #[must_use]
    pub fn get(&self, stat: Stat) -> u64 {
        self.0[stat as usize]
    }
}

/// Everything read from the maps at one moment.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Counters per (cgroup, cache), summed over CPUs.
    pub counters: BTreeMap<CounterKey, Counters>,
    /// Caches seen so far, by `struct kmem_cache *`.
    pub caches: BTreeMap<u64, CacheInfo>,
    /// BPF-side statistics, summed over CPUs.
    pub stats: Stats,
    /// Objects in the live-object table, from the BPF side's statistics (in, less out by a
    /// free, an eviction or a reused address): no walk of the table. After a restart on pinned
    /// maps this counts what this run put in, not what it found there.
    pub live_entries: u64,
    /// Allocations per (cgroup, cache, call site), summed over CPUs (`--call-sites`; empty
    /// otherwise).
    pub call_sites: BTreeMap<CallSiteKey, u64>,
}

/// A map could not be read.
#[derive(Debug, thiserror::Error)]
pub enum MapReadError {
    /// The object has no such map: a build problem.
    #[error("the BPF object has no map {0}; rebuild slabtrace")]
    Missing(&'static str),
    /// Reading failed.
    #[error("cannot read BPF map {map}: {source}")]
    Read {
        /// Which map.
        map: &'static str,
        /// Why.
        #[source]
        source: MapError,
    },
}

fn read_err(map: &'static str) -> impl Fn(MapError) -> MapReadError {
    move |source| MapReadError::Read { map, source }
}

impl Snapshot {
    /// Reads every map but the live-object table (one lookup per slot), whose occupancy the
    /// statistics give.
    pub fn read(ebpf: &Ebpf) -> Result<Self, MapReadError> {
        let map = |name: &'static str| ebpf.map(name).ok_or(MapReadError::Missing(name));

        let mut counters = BTreeMap::new();
        read_per_cpu_hash::<CounterKey, Counters>(map(COUNTERS)?, COUNTERS, |key, per_cpu| {
            counters.insert(key, sum(per_cpu.iter()));
        })?;

        let caches_map: HashMap<_, u64, CacheInfo> =
            HashMap::try_from(map(CACHES)?).map_err(read_err(CACHES))?;
        let caches = caches_map
            .iter()
            .filter_map(|e| match e {
                Err(MapError::KeyNotFound) => None,
                other => Some(other),
            })
            .collect::<Result<_, _>>()
            .map_err(read_err(CACHES))?;

        let stats = read_stats(ebpf)?;
        let live_entries = stats
            .get(Stat::LiveInserts)
            .saturating_sub(stats.get(Stat::LiveDeletes))
            .saturating_sub(stats.get(Stat::LiveEvictions))
            .saturating_sub(stats.get(Stat::MissedFrees));

        let mut call_sites = BTreeMap::new();
        read_per_cpu_hash::<CallSiteKey, u64>(map(CALL_SITES)?, CALL_SITES, |key, per_cpu| {
            call_sites.insert(key, per_cpu.iter().sum());
        })?;

        Ok(Self { counters, caches, stats, live_entries, call_sites })
    }
}

/// Reads every entry of the per-CPU hash map `map` (called `name`): many entries per system
/// call where the kernel can ([`batch`]), else entry by entry.
fn read_per_cpu_hash<K: Pod, V: Pod>(
    map: &Map,
    name: &'static str,
    mut each: impl FnMut(K, &[V]),
) -> Result<(), MapReadError> {
    if let (Map::PerCpuHashMap(data), Ok(cpus)) = (map, aya::util::nr_cpus()) {
        match batch::per_cpu_hash::<K, V>(data.fd().as_fd(), cpus, &mut each) {
            Ok(()) => return Ok(()),
            Err(BatchError::Unsupported(e)) => {
                debug!("reading {name} entry by entry: {e}");
            }
            Err(BatchError::Failed(e)) => {
                return Err(MapReadError::Read { map: name, source: MapError::IoError(e) });
            }
        }
    }
    let per_key: PerCpuHashMap<_, K, V> = PerCpuHashMap::try_from(map).map_err(read_err(name))?;
    for entry in &per_key {
        match entry {
            Ok((key, per_cpu)) => each(key, &per_cpu),
            // A key deleted between get_next_key and lookup: gone, skip it.
            Err(MapError::KeyNotFound) => {}
            Err(e) => return Err(read_err(name)(e)),
        }
    }
    Ok(())
}

/// Reads the BPF side's statistics, summed over CPUs.
pub fn read_stats(ebpf: &Ebpf) -> Result<Stats, MapReadError> {
    let map = ebpf.map(STATS).ok_or(MapReadError::Missing(STATS))?;
    let stats_map: PerCpuArray<_, u64> = PerCpuArray::try_from(map).map_err(read_err(STATS))?;
    let mut stats = Stats::default();
    for (i, slot) in stats.0.iter_mut().enumerate() {
        #[expect(clippy::cast_possible_truncation, reason = "Stat::COUNT is small")]
        let per_cpu = stats_map.get(&(i as u32), 0).map_err(read_err(STATS))?;
        *slot = per_cpu.iter().sum();
    }
    Ok(stats)
}

/// Deletes `keys` from the counters map (see [`super::retire`]); returns how many were there.
pub fn delete_counters(ebpf: &mut Ebpf, keys: &[CounterKey]) -> Result<usize, MapReadError> {
    delete_keys::<CounterKey, Counters>(ebpf, COUNTERS, keys)
}

/// Deletes `keys` from the per-CPU hash map `name` (keys already gone are skipped); returns
/// how many it deleted.
pub fn delete_keys<K: aya::Pod, V: aya::Pod>(
    ebpf: &mut Ebpf,
    name: &'static str,
    keys: &[K],
) -> Result<usize, MapReadError> {
    let map = ebpf.map_mut(name).ok_or(MapReadError::Missing(name))?;
    let mut per_cpu: PerCpuHashMap<_, K, V> =
        PerCpuHashMap::try_from(map).map_err(read_err(name))?;
    let mut deleted = 0;
    for key in keys {
        match per_cpu.remove(key) {
            Ok(()) => deleted += 1,
            // Already gone: nothing to do.
            Err(MapError::KeyNotFound | MapError::SyscallError(_)) => {}
            Err(e) => return Err(read_err(name)(e)),
        }
    }
    Ok(deleted)
}

/// Sums per-CPU copies of a counters value.
fn sum<'a>(values: impl Iterator<Item = &'a Counters>) -> Counters {
    values.fold(Counters::default(), |mut acc, c| {
        acc.add(c);
        acc
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_per_cpu_copies() {
        let cpus = [
            Counters { allocs: 3, sampled_allocs: 1, sampled_frees: 0, sampled_evicted: 1 },
            Counters { allocs: 4, sampled_allocs: 0, sampled_frees: 2, sampled_evicted: 0 },
        ];
        assert_eq!(
            sum(cpus.iter()),
            Counters { allocs: 7, sampled_allocs: 1, sampled_frees: 2, sampled_evicted: 1 }
        );
        assert_eq!(sum([].iter()), Counters::default());
    }
}
