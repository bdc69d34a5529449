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
    /// Track an address when `hash(address ^ sample_salt) & sample_mask == 0`: a sample of 1 in
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
    /// Offset of `task_struct.tgid` (`pid_t`). This and the offsets below are read only by the
    /// OOM programs, which are not attached when BTF lacks any of them.
    pub off_task_tgid: u32,
    /// Offset of `task_struct.pid` (`pid_t`).
    pub off_task_pid: u32,
    /// Offset of `task_struct.comm` (`char[TASK_COMM_LEN]`).
    pub off_task_comm: u32,
    /// Offset of `task_struct.cgroups` (`struct css_set *`).
    pub off_task_cgroups: u32,
    /// Offset of `task_struct.signal` (`struct signal_struct *`).
    pub off_task_signal: u32,
    /// Offset of `signal_struct.oom_score_adj` (short).
    pub off_signal_oom_score_adj: u32,
    /// Offset of `css_set.dfl_cgrp` (`struct cgroup *`): the task's cgroup2 cgroup.
    pub off_css_set_dfl_cgrp: u32,
    /// Offset of `cgroup.kn` (`struct kernfs_node *`).
    pub off_cgroup_kn: u32,
    /// Offset of `kernfs_node.id` (u64): the cgroup id, its directory's inode number.
    pub off_kernfs_node_id: u32,
    /// Offset of `task_struct.reclaim_state` (`struct reclaim_state *`): during a reclaim, the
    /// one embedded in that reclaim's `struct scan_control`.
    pub off_task_reclaim_state: u32,
    /// Offset of `scan_control.reclaim_state` (embedded), to get from it to its `scan_control`.
    pub off_sc_reclaim_state: u32,
    /// Offset of `scan_control.target_mem_cgroup` (`struct mem_cgroup *`).
    pub off_sc_target_memcg: u32,
    /// Offset of `mem_cgroup.css.cgroup` (`struct cgroup *`; `css` is embedded).
    pub off_memcg_cgroup: u32,
    /// 1 when `kmem_cache_free`'s third tracepoint argument is the cache (`struct kmem_cache
    /// *`, Linux 6.1 and later), else 0: before, it was the cache's name or absent, and the
    /// free programs must not read it (a raw tracepoint program that reads past the last
    /// argument does not attach).
    pub free_has_cache: u32,
    /// Offset of `shrinker.scan_objects` (a function pointer). This and the two below are read
    /// only by the shrinker programs, which are not attached when BTF lacks it.
    pub off_shrinker_scan_objects: u32,
    /// Offset of `shrinker.name` (`const char *`), valid when [`Self::shrinker_has_name`] is 1.
    pub off_shrinker_name: u32,
    /// 1 when `struct shrinker` has `name` (`CONFIG_SHRINKER_DEBUG`), else 0.
    pub shrinker_has_name: u32,
    /// 1 to count allocations per kernel call site too (`--call-sites`), else 0. The verifier
    /// sees the constant, so with 0 the call-site code is not even in the compiled program.
    pub call_sites: u32,
    /// 1 when the kernel has `bpf_get_current_task_btf` (5.11 and later): the interrupt test
    /// then reads `current->stack` with a plain load; 0 on older kernels, where it reads it
    /// with `bpf_probe_read_kernel`. The verifier drops the branch not taken, so an older
    /// kernel never sees the helper it lacks.
    pub task_btf: u32,
    /// The loader's own process id: the start-up self-check of the interrupt test looks only at
    /// its system calls.
    pub self_tgid: u32,
    /// Mixed into every address before it is hashed, so that which objects are sampled (and
    /// where they sit in the live-object table) differs from run to run and node to node: no
    /// node has the same blind spots for ever. Kept with pinned maps (see the loader's `pin`).
    pub sample_salt: u64,
    /// The live-object table has `2^live_set_bits` sets of [`crate::LIVE_WAYS`] slots (1 to 27).
    pub live_set_bits: u32,
    /// 1 to track sampled objects from allocation to free (frees credited to the allocator);
    /// 0 only in the bench's ablation runs.
    pub track_live: u32,
    /// 1 to count every event in the statistics (`alloc_events`, `free_events`); 0 only in
    /// the bench's ablation runs.
    pub count_events: u32,
    /// 0 to count every allocation (exact `allocs`); a mask `m` to count only those whose
    /// random number has `r & m == 0` (and the sampled addresses'): the bench's measure of
    /// what exact counts cost (`--without exact-counts`).
    pub count_sample_mask: u32,
    /// 1 to take the current task's cgroup id from a per-CPU cache keyed by its `css_set`
    /// (where the task's BTF pointer and the offset are known); 0 only in the bench's ablation
    /// runs.
    pub cgroup_cache: u32,
    /// Zero.
    pub padding: u32,
}
assert_size!(Config, 168);

#[cfg(feature = "user")]
// SAFETY: plain old data: u64 and u32 fields, no padding (size asserted).
unsafe impl aya::Pod for Config {}
