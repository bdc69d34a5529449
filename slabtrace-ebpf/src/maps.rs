//! Every map, each bounded. The loader may resize them (`--max-*` flags) before load. Each
//! static's name is its map's name, as `slabtrace_common::map_names` spells it.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, LruPerCpuHashMap, PerCpuArray, PerCpuHashMap, RingBuf},
};
use slabtrace_common::{
    CACHES_CAPACITY, CALL_SITES_CAPACITY, CacheInfo, CallSiteKey, CounterKey, Counters, LiveSet,
    ShrinkerStats, Stat,
};

/// Per-(cgroup, cache) counters; per-CPU so the hot path needs no atomics.
#[map]
pub static COUNTERS: PerCpuHashMap<CounterKey, Counters> = PerCpuHashMap::with_max_entries(8192, 0);

/// Sampled live objects: a set-associative table, one [`slabtrace_common::LIVE_WAYS`]-way set
/// per element of a plain array, two candidate sets per address (see `account::live`). An
/// array, not a hash: a lookup is an inlined index and a few compares, with no lock and no
/// allocation, its memory is exactly its slots (32 bytes each), and when both of an address's
/// sets are full an object is pushed out where the code sees it, so the owner is credited (an LRU hash evicts silently, leaving phantom live objects, and
/// evicts the oldest: the leaks). The loader sizes it (`--max-live`).
#[map]
pub static LIVE: Array<LiveSet> = Array::with_max_entries(32_768, 0);

/// The cgroup id of every key new to [`COUNTERS`], so that userspace names a new cgroup while
/// it exists without reading the whole counters map between intervals (at 200,000 keys that
/// read costs most of a core each second). 8-byte records with 8-byte headers: 64 KiB holds
/// 4096 new keys between two drains (one a second).
#[map]
pub static NEW_KEYS: RingBuf = RingBuf::with_byte_size(64 * 1024, 0);

/// `struct kmem_cache *` → name, sizes and flags, filled the first time a cache is seen.
/// Preallocated (about 0.4 MiB): before Linux 6.1, a map that allocates its elements as they
/// come does so with kmalloc from inside the allocator being traced, which can deadlock it.
#[map]
pub static CACHES: HashMap<u64, CacheInfo> = HashMap::with_max_entries(CACHES_CAPACITY, 0);

/// Allocations per (cgroup, cache, kernel call site), only with `--call-sites`. Per-CPU and
/// preallocated, like every map here: a map that allocates its elements as they come would
/// kmalloc from inside the allocator being traced, which before Linux 6.1 can deadlock it (and
/// 5.10 warns about at load). The loader sizes it to one entry when the option is off.
#[map]
pub static CALL_SITES: PerCpuHashMap<CallSiteKey, u64> =
    PerCpuHashMap::with_max_entries(CALL_SITES_CAPACITY, 0);

/// Per CPU, one word the live-object code writes and reads back to hide a value's origin from
/// the verifier (see `account::live`).
#[map]
pub static SCRATCH: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// Per CPU, the last task-context allocation's task and the cgroup id charged:
/// [`css_set` pointer, pid, generation, cgroup id] (see `account::current_cgroup_id`).
#[map]
pub static CGROUP_OF_TASK: PerCpuArray<[u64; 4]> = PerCpuArray::with_max_entries(1, 0);

/// The generation of [`CGROUP_OF_TASK`]'s entries: 0 while the cache is off (userspace turns
/// it on once the program that moves it on is attached), then one more at every
/// `cgroup_attach_task`.
#[map]
pub static CGROUP_GENERATION: Array<u64> = Array::with_max_entries(1, 0);

/// slabtrace's own counters, indexed by [`Stat`].
#[map]
pub static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Stat::COUNT, 0);

/// Per CPU, `kmem_cache_free`'s first program's state: [depth, address]: how many of its runs
/// are in progress on this CPU, and the address the latest one took. The second program takes
/// an event only while the first is in progress and did not take it (see `account::Nesting`).
#[map]
pub static FREE_NESTING: PerCpuArray<[u64; 2]> = PerCpuArray::with_max_entries(1, 0);

/// OOM victims on their way to userspace, one [`slabtrace_common::OomEvent`] (264 bytes plus
/// an 8-byte header) each: 64 KiB holds 240, far more than the kernel kills between two reads.
#[map]
pub static OOM_EVENTS: RingBuf = RingBuf::with_byte_size(64 * 1024, 0);

/// Per task (`pid_tgid`): the id of the memcg its latest memcg reclaim targeted. An LRU, because
/// tasks exit without saying so; 8192 tasks reclaiming between one task's last reclaim and its
/// OOM kill (microseconds to a second) would be needed to evict an entry still wanted.
#[map]
pub static OOM_RECLAIMS: LruHashMap<u64, u64> = LruHashMap::with_max_entries(8192, 0);

/// `struct shrinker *` → its reclaim totals, per CPU so that no update needs an atomic (the BPF
/// target has no atomic add in Rust) and concurrent reclaimers of one shrinker lose nothing.
/// An LRU, because shrinkers are freed without a tracepoint (every unmount frees its
/// superblock's): gone shrinkers' entries are evicted before those reclaim still calls. Only
/// shrinkers with something to free reach the tracepoint: tens on a quiet node, one per busy
/// superblock on a dense one. 1024 entries of 72 bytes: 72 KiB per CPU, like `COUNTERS`'s
/// order of magnitude.
#[map]
pub static SHRINKERS: LruPerCpuHashMap<u64, ShrinkerStats> =
    LruPerCpuHashMap::with_max_entries(1024, 0);

/// The start-up self-check's verdict on one of the loader's own system calls: 0 not seen yet,
/// [`slabtrace_common::SELF_CHECK_TASK`] or [`slabtrace_common::SELF_CHECK_INTERRUPT`].
#[map]
pub static SELF_CHECK: Array<u32> = Array::with_max_entries(1, 0);

/// Adds one to a statistic counted on every event, unless the bench measures without them.
#[inline(always)]
pub fn bump_event(stat: Stat) {
    if crate::config::count_events() != 0 {
        bump(stat);
    }
}

/// Adds one to a statistic.
#[inline(always)]
pub fn bump(stat: Stat) {
    if let Some(v) = STATS.get_ptr_mut(stat as u32) {
        // SAFETY: a per-CPU slot only this CPU writes. Programs do nest on a CPU (an
        // interrupt's program runs inside the task's), so this load-add-store can lose the
        // interrupt's increment when it lands between the load and the store: a window of one
        // instruction against hundreds per run, so an estimated loss far below any figure's
        // bound, and none seen where counts are checked to the object (the `--sample 1`
        // tests). An atomic add would close it at the price of a locked instruction on every
        // event.
        unsafe { *v += 1 };
    }
}
