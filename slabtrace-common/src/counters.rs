//! Map values.

use crate::assert_size;

/// Per-(cgroup, cache) counters, one copy per CPU (summed in userspace).
///
/// Every allocation event is counted exactly. Frees are credited to the cgroup that allocated
/// the object, which needs the object's address remembered from alloc to free; slabtrace does
/// that for a deterministic 1-in-N sample of addresses (a hash of the address decides, so alloc
/// and free agree), and the `sampled_*` fields count that sample. Userspace scales them by N.
/// Bytes are not counted here: every key has one object size (the cache's, or the kmalloc size
/// class'), so bytes are objects times that size.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Allocations.
    pub allocs: u64,
    /// Allocations whose address is in the sample.
    pub sampled_allocs: u64,
    /// Frees of sampled objects this cgroup allocated, wherever they were freed.
    pub sampled_frees: u64,
    /// Sampled objects of this cgroup pushed out of the full live-object table before their
    /// free was seen: their fate is unknown, so they no longer count as live (an upper bound
    /// on what is missing from the live figure, not a phantom that stays live for ever).
    pub sampled_evicted: u64,
}
assert_size!(Counters, 32);

impl Counters {
    /// Adds `delta` to every field: the one place the four figures are summed (per-CPU copies,
    /// interval deltas, a key's updates in BPF).
    #[expect(
        clippy::inline_always,
        reason = "on the BPF hot path, where a call would be a BPF-to-BPF call per event"
    )]
    #[inline(always)]
    pub fn add(&mut self, delta: &Self) {
        self.allocs += delta.allocs;
        self.sampled_allocs += delta.sampled_allocs;
        self.sampled_frees += delta.sampled_frees;
        self.sampled_evicted += delta.sampled_evicted;
    }
}

/// Slots per set of the live-object table. An address has two candidate sets and sits in any
/// slot of either (see the BPF side's `account::live`).
pub const LIVE_WAYS: usize = 8;

/// One element of the live-object table: a set of [`LIVE_WAYS`] slots, found with one lookup.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LiveSet {
    /// The slots, in no order.
    pub slots: [LiveSlot; LIVE_WAYS],
}
assert_size!(LiveSet, 256);

/// A slot of the live-object table (a [`LiveSet`]): the address of a sampled object and who
/// allocated it. `addr` 0 is an empty slot.
///
/// The table is shared by every CPU and written without atomics (5.10 has none but add), so a
/// slot written by two CPUs at once could mix two objects' fields. `check` catches that: a
/// reader that finds `check != Self::check_of(...)` ignores the slot and counts it
/// (`Stat::LiveTorn`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LiveSlot {
    /// The object's address; 0: empty.
    pub addr: u64,
    /// The allocating cgroup (a [`crate::CounterKey::cgroup_id`]).
    pub cgroup_id: u64,
    /// The cache (a [`crate::CounterKey::cache`]).
    pub cache: u64,
    /// The key's flags (a [`crate::CounterKey::flags`]).
    pub flags: u32,
    /// [`Self::check_of`] the other fields.
    pub check: u32,
}
assert_size!(LiveSlot, 32);

impl LiveSlot {
    /// The check word of a slot holding these fields.
    #[inline]
    #[must_use]
    pub const fn check_of(addr: u64, cgroup_id: u64, cache: u64, flags: u32) -> u32 {
        let x = addr ^ cgroup_id.rotate_left(21) ^ cache.rotate_left(42) ^ flags as u64;
        #[expect(clippy::cast_possible_truncation, reason = "folding 64 bits into 32")]
        let folded = (x ^ (x >> 32)) as u32;
        // Never 0, so a zeroed slot is never consistent.
        folded | 1
    }
}

/// Entries of the cache-info map (`struct kmem_cache *` → [`CacheInfo`]): a node has a few
/// hundred caches. The BPF side sizes the map with it; userspace checks pinned maps against it.
pub const CACHES_CAPACITY: u32 = 4096;

/// Entries of the call-site map with `--call-sites` ((cgroup, cache, call site) → allocations,
/// per CPU); without it the loader sizes the map to one entry.
pub const CALL_SITES_CAPACITY: u32 = 16_384;

/// Longest cache name kept, with its terminating NUL.
pub const CACHE_NAME_LEN: usize = 64;

/// What the BPF side reads once from a `struct kmem_cache` the first time it sees it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheInfo {
    /// `kmem_cache.name`, NUL-terminated (truncated if longer).
    pub name: [u8; CACHE_NAME_LEN],
    /// `kmem_cache.size`: bytes per object including metadata and alignment.
    pub size: u32,
    /// `kmem_cache.object_size`: bytes the caller asked for.
    pub object_size: u32,
    /// `kmem_cache.flags` (`slab_flags_t`, the low 32 bits).
    pub flags: u32,
    /// Zero.
    pub padding: u32,
}
assert_size!(CacheInfo, 80);

impl Default for CacheInfo {
    fn default() -> Self {
        Self { name: [0; CACHE_NAME_LEN], size: 0, object_size: 0, flags: 0, padding: 0 }
    }
}

/// Indexes of the per-CPU statistics array: what the BPF side did and what it could not do.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stat {
    /// Allocation events seen.
    AllocEvents = 0,
    /// Free events seen.
    FreeEvents,
    /// A new (cgroup, cache) key did not fit in the counters map: the event was lost.
    CountersFull,
    /// A new cache did not fit in the cache-info map: it will show without a name.
    CachesFull,
    /// Sampled objects put in the live-object table.
    LiveInserts,
    /// Sampled objects removed from it by their free.
    LiveDeletes,
    /// An allocation at an address still tracked as live: its free was never seen.
    MissedFrees,
    /// A sampled object could not be put in the live-object table (its slot was unreadable).
    LiveInsertFailed,
    /// Allocations counted in the interrupt bucket.
    IrqAllocs,
    /// Tasks the kernel marked as OOM victims.
    OomVictims,
    /// OOM victims whose event did not fit in the ring buffer: userspace never saw them.
    OomEventsLost,
    /// A kernel read for an OOM event or a memcg reclaim failed: that event lacks a field.
    OomReadFailed,
    /// `bpf_get_stack` failed for an OOM victim: its OOM's scope is unknown.
    OomStackFailed,
    /// A shrinker could not be added to the shrinker map: its reclaim goes uncounted.
    ShrinkerInsertFailed,
    /// Reading a shrinker's scan function or name failed: it shows unnamed.
    ShrinkerReadFailed,
    /// A new (cgroup, cache, call site) did not fit in the call-site map: not counted there.
    CallSitesFull,
    /// Sampled objects pushed out of a full set of the live-object table (credited to their
    /// owner as evicted).
    LiveEvictions,
    /// Live-object slots found inconsistent (two CPUs wrote them at once): ignored.
    LiveTorn,
    /// `kmem_cache_free` events taken by the second program because they arrived while the
    /// first was running on that CPU (an interrupt's batch of RCU frees, typically).
    NestedFrees,
    /// New keys whose cgroup id did not fit in the new-keys ring buffer: their cgroups are
    /// named at the next interval's full read instead, if they still exist then.
    NewKeysLost,
}

impl Stat {
    /// Number of statistics (the array's size).
    pub const COUNT: u32 = 20;
}
// The last variant's index plus one: a variant added without raising COUNT fails to build.
const _: () = assert!(Stat::NewKeysLost as u32 + 1 == Stat::COUNT);

#[cfg(feature = "user")]
mod pod {
    // SAFETY (all three): plain old data of integer fields with no implicit padding, sizes
    // asserted above.
    unsafe impl aya::Pod for super::Counters {}
    unsafe impl aya::Pod for super::LiveSet {}
    unsafe impl aya::Pod for super::CacheInfo {}
}
