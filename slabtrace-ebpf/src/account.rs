//! The bookkeeping every probe shares: count an allocation, credit a free.
//!
//! Hot-path budget: an allocation costs the cgroup id, one per-CPU hash lookup and, for the
//! sampled 1 in N, one LRU insert; a free of an unsampled address costs a multiply and a
//! compare, and a sampled free one lookup, one delete and one per-CPU hash lookup.

use aya_ebpf::{bindings::BPF_NOEXIST, helpers::bpf_get_current_cgroup_id};
use slabtrace_common::{
    CounterKey, Counters, LiveObject, Stat,
    key::UNTRACKED_CGROUP,
};

use crate::{
    config,
    maps::{COUNTERS, LIVE, bump},
};

/// Whether the object at `addr` is in the deterministic sample. Alloc and free of one address
/// always agree, which is what lets a free find its allocation.
#[inline(always)]
pub fn sampled(addr: u64) -> bool {
    // Fibonacci hashing: the multiply spreads the address's low bits (slab objects are
    // aligned, so those are mostly zero) into the high half.
    (addr.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) & config::sample_mask() == 0
}

/// The cgroup to charge for an allocation made now.
#[inline(always)]
pub fn current_cgroup() -> u64 {
    // SAFETY: a helper with no arguments.
    unsafe { bpf_get_current_cgroup_id() }
}

/// Counts one allocation of `cache` at `addr` by `cgroup_id`. Returns true when the key was new,
/// so the caller can record what it needs to know about the cache once.
#[inline(always)]
pub fn record_alloc(cgroup_id: u64, cache: u64, flags: u32, addr: u64) -> bool {
    bump(Stat::AllocEvents);
    let key = CounterKey { cgroup_id, cache, flags, _pad: 0 };
    let sample = sampled(addr);
    let new_key = add(&key, 1, u64::from(sample), 0);
    if sample {
        track(addr, LiveObject { cgroup_id, cache, flags, _pad: 0 });
    }
    new_key
}

/// Credits the free of the object at `addr` to the cgroup that allocated it. `cache` is the
/// cache the free names (0 when the tracepoint does not say, as `kfree`'s does not).
#[inline(always)]
pub fn record_free(addr: u64, cache: u64) {
    bump(Stat::FreeEvents);
    if !sampled(addr) {
        return;
    }
    let key = match LIVE.get_ptr(addr) {
        Some(obj) => {
            // SAFETY: the pointer came from a successful lookup; the entry is copied out before
            // it is deleted.
            let obj = unsafe { *obj };
            let _ = LIVE.remove(addr);
            bump(Stat::LiveDeletes);
            CounterKey { cgroup_id: obj.cgroup_id, cache: obj.cache, flags: obj.flags, _pad: 0 }
        }
        // Allocated before tracing started, or evicted: credited to no one, per cache.
        None => CounterKey { cgroup_id: UNTRACKED_CGROUP, cache, flags: 0, _pad: 0 },
    };
    add(&key, 0, 0, 1);
}

/// Remembers a sampled object. An address still in the map means its free was never seen (a
/// free path without a tracepoint): the old owner is credited with that free, so its live
/// count stays right, and the miss is counted.
#[inline(always)]
fn track(addr: u64, obj: LiveObject) {
    match LIVE.insert(addr, obj, u64::from(BPF_NOEXIST)) {
        Ok(()) => bump(Stat::LiveInserts),
        Err(_) => {
            if let Some(old) = LIVE.get_ptr(addr) {
                // SAFETY: pointer from a successful lookup, copied at once.
                let old = unsafe { *old };
                bump(Stat::MissedFrees);
                let owner =
                    CounterKey { cgroup_id: old.cgroup_id, cache: old.cache, flags: old.flags, _pad: 0 };
                add(&owner, 0, 0, 1);
                if LIVE.insert(addr, obj, 0).is_err() {
                    bump(Stat::LiveInsertFailed);
                }
            } else {
                bump(Stat::LiveInsertFailed);
            }
        }
    }
}

/// Adds to a key's per-CPU counters, creating the key if needed. Returns true if it was new.
#[inline(always)]
fn add(key: &CounterKey, allocs: u64, sampled_allocs: u64, sampled_frees: u64) -> bool {
    let value = Counters { allocs, sampled_allocs, sampled_frees };
    if add_existing(key, &value) {
        return false;
    }
    // NOEXIST: another CPU may have created the key meanwhile; then one retry of the update
    // path is enough (this CPU's copy of a new key starts at zero).
    if COUNTERS.insert(key, &value, u64::from(BPF_NOEXIST)).is_ok() {
        return true;
    }
    if !add_existing(key, &value) {
        bump(Stat::CountersFull);
    }
    false
}

/// Adds `delta` to this CPU's copy of an existing key; false if the key is not there.
#[inline(always)]
fn add_existing(key: &CounterKey, delta: &Counters) -> bool {
    let Some(c) = COUNTERS.get_ptr_mut(key) else {
        return false;
    };
    // SAFETY: this CPU's copy of the value; see maps::bump on nesting.
    unsafe {
        (*c).allocs += delta.allocs;
        (*c).sampled_allocs += delta.sampled_allocs;
        (*c).sampled_frees += delta.sampled_frees;
    }
    true
}
