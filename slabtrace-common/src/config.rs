//! The load-time constant the loader writes into the BPF object.

use crate::assert_size;

/// Everything the BPF programs need to know about the running kernel and the chosen settings.
///
/// Rust BPF has no CO-RE, so field offsets and flag bits are read from the kernel's BTF at
/// start-up and written here before the programs are loaded; the programs never hard-code one
/// kernel's layout. The kernel's verifier sees these as constants (the object's `.rodata` is
/// frozen), so branches on them cost nothing.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// Track an address when `hash(address) & sample_mask == 0`: a sample of 1 in
    /// `sample_mask + 1` (a power of two; 0 tracks every object).
    pub sample_mask: u64,
    /// `__GFP_ACCOUNT` as a mask.
    pub gfp_account: u64,
    /// `__GFP_RECLAIMABLE` as a mask.
    pub gfp_reclaimable: u64,
    /// `__GFP_DMA` as a mask.
    pub gfp_dma: u64,
    /// Offset of `kmem_cache.name` (a `const char *`).
    pub off_cache_name: u32,
    /// Offset of `kmem_cache.size` (unsigned int).
    pub off_cache_size: u32,
    /// Offset of `kmem_cache.object_size` (unsigned int).
    pub off_cache_object_size: u32,
    /// Offset of `kmem_cache.flags` (`slab_flags_t`).
    pub off_cache_flags: u32,
    /// Offset of `task_struct.stack` (`void *`), for telling interrupt context apart.
    pub off_task_stack: u32,
    /// Size of a task's kernel stack (`THREAD_SIZE`); 0 turns interrupt detection off.
    pub thread_size: u32,
}
assert_size!(Config, 56);

#[cfg(feature = "user")]
// SAFETY: plain old data: u64 and u32 fields, no padding (size asserted).
unsafe impl aya::Pod for Config {}
