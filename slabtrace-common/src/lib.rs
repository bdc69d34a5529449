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
