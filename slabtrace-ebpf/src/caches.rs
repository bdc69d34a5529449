//! Name and geometry of a `struct kmem_cache`, read once per cache.
//!
//! Called only when a (cgroup, cache) key is new, so the hot path never reads the cache.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes},
};
use slabtrace_common::{CacheInfo, Stat};

use crate::{
    config,
    maps::{CACHES, bump},
};

/// Records the cache at `cache` in the cache-info map if it is not there yet.
#[inline(never)]
pub fn remember(cache: u64) {
    if CACHES.get_ptr(cache).is_some() {
        return;
    }
    let mut info = CacheInfo::default();
    // SAFETY: bpf_probe_read_kernel checks the addresses; a failed read leaves zeros.
    unsafe {
        let base = cache as *const u8;
        let name: u64 =
            bpf_probe_read_kernel(base.add(config::off_cache_name() as usize).cast()).unwrap_or(0);
        if name != 0 {
            let _ = bpf_probe_read_kernel_str_bytes(name as *const u8, &mut info.name);
        }
        info.size = read_u32(base, config::off_cache_size());
        info.object_size = read_u32(base, config::off_cache_object_size());
        info.flags = read_u32(base, config::off_cache_flags());
    }
    if CACHES.insert(cache, info, u64::from(BPF_NOEXIST)).is_err()
        && CACHES.get_ptr(cache).is_none()
    {
        bump(Stat::CachesFull);
    }
}

/// Reads a u32 at `base + off`, 0 if unreadable.
///
/// # Safety
/// Only used with kernel addresses through `bpf_probe_read_kernel`, which checks them.
#[inline(always)]
unsafe fn read_u32(base: *const u8, off: u32) -> u32 {
    unsafe { bpf_probe_read_kernel(base.add(off as usize).cast::<u32>()).unwrap_or(0) }
}
