//! The kernel's own view of slabtrace's BPF maps, read through aya by map id or pin path.
//!
//! The tests used to ask `bpftool`, which nothing installed: they passed only where someone had
//! installed it by hand. aya is what slabtrace itself reads its maps with, it is already built
//! for the tests, and it runs inside the kernel-matrix VMs, where no bpftool is.

use std::{fs, path::Path};

use anyhow::{Context as _, Result, bail};
use aya::maps::{HashMap, Map, MapData, MapInfo, PerCpuHashMap, PerCpuValues};
use slabtrace_common::{CacheInfo, CounterKey, Counters};

/// The ids of the BPF maps process `pid` holds open, from its fdinfo.
pub fn held_map_ids(pid: u32) -> Result<Vec<u32>> {
    let mut ids = Vec::new();
    for fd in fs::read_dir(format!("/proc/{pid}/fdinfo"))? {
        // An fd closed meanwhile has no fdinfo any more: not a map of interest.
        let info = fs::read_to_string(fd?.path()).unwrap_or_default();
        if let Some(id) = info.lines().find_map(|l| l.strip_prefix("map_id:")) {
            ids.push(id.trim().parse::<u32>()?);
        }
    }
    Ok(ids)
}

/// The map called `name` that process `pid` holds: not another slabtrace's, nor a leftover
/// pinned on this node under the same name.
pub fn held_map(pid: u32, name: &str) -> Result<MapData> {
    for id in held_map_ids(pid)? {
        let info = MapInfo::from_id(id).with_context(|| format!("map id {id}"))?;
        if info.name_as_str() == Some(name) {
            return MapData::from_id(id).with_context(|| format!("opening map {name} (id {id})"));
        }
    }
    bail!("process {pid} holds no BPF map called {name}")
}

/// Writes `n` keys of `cgroup_id` into the `COUNTERS` map of process `pid`, one allocation
/// on each CPU for each, with synthetic kmalloc cache ids that name themselves (sizes in steps
/// of 8 bytes over the eight kmalloc families), as `cargo xtask bench --scale` does: more keys
/// than any workload here makes on demand.
pub fn insert_counters(pid: u32, cgroup_id: u64, n: u32) -> Result<()> {
    let map = Map::PerCpuHashMap(held_map(pid, slabtrace_common::map_names::COUNTERS)?);
    let mut counters: PerCpuHashMap<_, CounterKey, Counters> = PerCpuHashMap::try_from(map)?;
    let cpus = aya::util::nr_cpus().map_err(|(what, e)| anyhow::anyhow!("{what}: {e}"))?;
    let one = Counters { allocs: 1, ..Counters::default() };
    for i in 0..n {
        let cache = slabtrace_common::CacheId::kmalloc(i % 8, 8 * (i / 8 + 1));
        let key = CounterKey { cgroup_id, cache, flags: 0, padding: 0 };
        counters
            .insert(key, PerCpuValues::try_from(vec![one; cpus])?, 0)
            .with_context(|| format!("inserting key {i} of {n}"))?;
    }
    Ok(())
}

/// Every key of the `COUNTERS` map of process `pid` with its counters summed over CPUs.
fn counters(pid: u32) -> Result<Vec<(CounterKey, Counters)>> {
    let map = Map::PerCpuHashMap(held_map(pid, slabtrace_common::map_names::COUNTERS)?);
    let counters: PerCpuHashMap<_, CounterKey, Counters> = PerCpuHashMap::try_from(map)?;
    let mut keys = Vec::new();
    for entry in &counters {
        let (key, per_cpu): (CounterKey, PerCpuValues<Counters>) = match entry {
            Ok(e) => e,
            // Deleted between listing and lookup: the daemon retired it.
            Err(aya::maps::MapError::KeyNotFound) => continue,
            Err(e) => return Err(e.into()),
        };
        let mut sum = Counters::default();
        per_cpu.iter().for_each(|c| sum.add(c));
        keys.push((key, sum));
    }
    Ok(keys)
}

/// Per key of `cgroup_id` in the `COUNTERS` map of process `pid`: (sampled allocations,
/// sampled objects gone: freed or evicted from the live-object table), summed over CPUs.
pub fn counters_of_cgroup(pid: u32, cgroup_id: u64) -> Result<Vec<(u64, u64)>> {
    Ok(counters(pid)?
        .into_iter()
        .filter(|(key, _)| key.cgroup_id == cgroup_id)
        .map(|(_, c)| (c.sampled_allocs, c.sampled_frees + c.sampled_evicted))
        .collect())
}

/// The ids (`struct kmem_cache` pointers) of the caches called `name` that process `pid` has
/// seen allocate: more than one where caches share a name.
pub fn cache_ids(pid: u32, name: &str) -> Result<Vec<u64>> {
    let map = Map::HashMap(held_map(pid, slabtrace_common::map_names::CACHES)?);
    let caches: HashMap<_, u64, CacheInfo> = HashMap::try_from(map)?;
    let mut ids = Vec::new();
    for entry in &caches {
        let (id, info) = match entry {
            Ok(e) => e,
            Err(aya::maps::MapError::KeyNotFound) => continue,
            Err(e) => return Err(e.into()),
        };
        let len = info.name.iter().position(|&b| b == 0).unwrap_or(info.name.len());
        if &info.name[..len] == name.as_bytes() {
            ids.push(id);
        }
    }
    Ok(ids)
}

/// What process `pid` has counted for `cgroup_id` in the caches called `name`, summed over
/// keys and CPUs. `also_unknown` adds the keys of no known cache (before Linux 6.1 a free of
/// an untracked object does not name its cache).
pub fn counters_of(pid: u32, cgroup_id: u64, name: &str, also_unknown: bool) -> Result<Counters> {
    let mut ids = cache_ids(pid, name)?;
    if also_unknown {
        ids.push(0);
    }
    let mut sum = Counters::default();
    for (key, c) in counters(pid)? {
        if key.cgroup_id == cgroup_id && ids.contains(&key.cache) {
            sum.add(&c);
        }
    }
    Ok(sum)
}

/// The kernel's description of the map pinned at `path`.
pub fn pinned_map_info(path: &Path) -> Result<MapInfo> {
    MapInfo::from_pin(path).with_context(|| format!("reading the map pinned at {}", path.display()))
}

/// Creates an LRU hash map called `name` and pins it at `path`: what another slabtrace
/// version might have left behind.
pub fn pin_lru_hash(
    path: &Path,
    name: &str,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
) -> Result<()> {
    let def = aya_obj::Map::new_from_params(
        aya_obj::generated::bpf_map_type::BPF_MAP_TYPE_LRU_HASH as u32,
        key_size,
        value_size,
        max_entries,
        0,
    );
    let map = MapData::create(def, name, None).with_context(|| format!("creating map {name}"))?;
    map.pin(path).with_context(|| format!("pinning map {name} at {}", path.display()))?;
    Ok(())
}
