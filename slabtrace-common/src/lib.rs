//! Every byte that crosses the kernel boundary, defined once.
//!
//! The BPF programs (`slabtrace-ebpf`) write these types into maps and read [`Config`] as a
//! load-time constant; userspace (`slabtrace`, with the `user` feature) reads the maps and
//! writes the constant. All are `#[repr(C)]` with explicit padding and a size checked at compile
//! time, so both sides agree byte for byte.
#![no_std]

pub mod config;
pub mod counters;
pub mod key;
pub mod oom;
pub mod shrinker;

pub use config::Config;
pub use counters::{
    CACHE_NAME_LEN, CACHES_CAPACITY, CALL_SITES_CAPACITY, CacheInfo, Counters, LIVE_WAYS, LiveSet,
    LiveSlot, Stat,
};
pub use key::{CacheId, CallSiteKey, CounterKey};
pub use oom::OomEvent;
pub use shrinker::ShrinkerStats;

/// The BPF maps' names. A `#[map]` static on the BPF side takes its own name, so each static
/// there is called exactly this; userspace finds the maps by these constants, and a unit test
/// checks the built object has these maps and no others.
pub mod map_names {
    /// Per-(cgroup, cache) counters.
    pub const COUNTERS: &str = "COUNTERS";
    /// The live-object table.
    pub const LIVE: &str = "LIVE";
    /// Cgroup ids of keys new to the counters.
    pub const NEW_KEYS: &str = "NEW_KEYS";
    /// Cache pointer → name, sizes, flags.
    pub const CACHES: &str = "CACHES";
    /// Allocations per call site (`--call-sites`).
    pub const CALL_SITES: &str = "CALL_SITES";
    /// The verifier-hiding scratch word.
    pub const SCRATCH: &str = "SCRATCH";
    /// slabtrace's own statistics.
    pub const STATS: &str = "STATS";
    /// `kmem_cache_free`'s first program's state.
    pub const FREE_NESTING: &str = "FREE_NESTING";
    /// OOM victims.
    pub const OOM_EVENTS: &str = "OOM_EVENTS";
    /// Per task, the memcg its latest reclaim targeted.
    pub const OOM_RECLAIMS: &str = "OOM_RECLAIMS";
    /// Per shrinker, reclaim totals.
    pub const SHRINKERS: &str = "SHRINKERS";
    /// The start-up self-check's verdict.
    pub const SELF_CHECK: &str = "SELF_CHECK";
    /// Per CPU, the last task-context allocation's task and cgroup id.
    pub const CGROUP_OF_TASK: &str = "CGROUP_OF_TASK";
    /// The generation of [`CGROUP_OF_TASK`]: 0 while the cache is off.
    pub const CGROUP_GENERATION: &str = "CGROUP_GENERATION";
    /// Every map of the object.
    pub const ALL: [&str; 14] = [
        COUNTERS,
        LIVE,
        NEW_KEYS,
        CACHES,
        CALL_SITES,
        SCRATCH,
        STATS,
        FREE_NESTING,
        OOM_EVENTS,
        OOM_RECLAIMS,
        SHRINKERS,
        SELF_CHECK,
        CGROUP_OF_TASK,
        CGROUP_GENERATION,
    ];
}

/// The version of what the pinned maps (counters, live objects, caches) hold. A daemon keeps
/// its maps on the BPF filesystem across restarts and reuses those of this version only, so
/// bump it whenever [`CounterKey`], [`Counters`], [`LiveSet`] or [`CacheInfo`] changes
/// meaning, even at the same size. 2: the live objects in a set-associative array, evictions
/// counted per owner.
pub const MAP_LAYOUT_VERSION: u32 = 2;

/// The self-check saw the loader's system call in task context, as it was.
pub const SELF_CHECK_TASK: u32 = 1;
/// The self-check took the loader's system call for interrupt context: the interrupt test is
/// wrong on this kernel.
pub const SELF_CHECK_INTERRUPT: u32 = 2;

/// Asserts at compile time that a type shared with the kernel has the size we documented.
macro_rules! assert_size {
    ($t:ty, $n:expr) => {
        const _: () = assert!(core::mem::size_of::<$t>() == $n);
    };
}
pub(crate) use assert_size;
