//! The load-time constant, read field by field.
//!
//! `aya_ebpf::Global<T>` makes bpf-linker 0.10 emit BTF the kernel rejects ("Invalid name"), so
//! this is a plain static read with `read_volatile`, which stops the compiler from folding the
//! zero initialiser. The loader overwrites it before load and freezes `.rodata`, so the verifier
//! sees constants.

use slabtrace_common::Config;

#[unsafe(no_mangle)]
static CONFIG: Config = Config {
    sample_mask: 0,
    gfp_account: 0,
    gfp_reclaimable: 0,
    gfp_dma: 0,
    off_cache_name: 0,
    off_cache_size: 0,
    off_cache_object_size: 0,
    off_cache_flags: 0,
    off_task_stack: 0,
    thread_size: 0,
    off_task_tgid: 0,
    off_task_pid: 0,
    off_task_comm: 0,
    off_task_cgroups: 0,
    off_task_signal: 0,
    off_signal_oom_score_adj: 0,
    off_css_set_dfl_cgrp: 0,
    off_cgroup_kn: 0,
    off_kernfs_node_id: 0,
    off_task_reclaim_state: 0,
    off_sc_reclaim_state: 0,
    off_sc_target_memcg: 0,
    off_memcg_cgroup: 0,
    free_has_cache: 0,
    off_shrinker_scan_objects: 0,
    off_shrinker_name: 0,
    shrinker_has_name: 0,
    call_sites: 0,
    task_btf: 0,
    self_tgid: 0,
    sample_salt: 0,
    live_set_bits: 0,
    track_live: 0,
    count_events: 0,
    count_sample_mask: 0,
    cgroup_cache: 0,
    padding: 0,
};

macro_rules! field {
    ($name:ident, $t:ty) => {
        #[inline(always)]
        pub fn $name() -> $t {
            // SAFETY: CONFIG is a valid, aligned static; volatile keeps the loader's value.
            unsafe { core::ptr::read_volatile(&raw const CONFIG.$name) }
        }
    };
}

field!(sample_mask, u64);
field!(gfp_account, u64);
field!(gfp_reclaimable, u64);
field!(gfp_dma, u64);
field!(off_cache_name, u32);
field!(off_cache_size, u32);
field!(off_cache_object_size, u32);
field!(off_cache_flags, u32);
field!(off_task_stack, u32);
field!(thread_size, u32);
field!(off_task_tgid, u32);
field!(off_task_pid, u32);
field!(off_task_comm, u32);
field!(off_task_cgroups, u32);
field!(off_task_signal, u32);
field!(off_signal_oom_score_adj, u32);
field!(off_css_set_dfl_cgrp, u32);
field!(off_cgroup_kn, u32);
field!(off_kernfs_node_id, u32);
field!(off_task_reclaim_state, u32);
field!(off_sc_reclaim_state, u32);
field!(off_sc_target_memcg, u32);
field!(off_memcg_cgroup, u32);
field!(off_shrinker_scan_objects, u32);
field!(off_shrinker_name, u32);
field!(shrinker_has_name, u32);
field!(call_sites, u32);
field!(free_has_cache, u32);
field!(task_btf, u32);
field!(self_tgid, u32);
field!(sample_salt, u64);
field!(live_set_bits, u32);
field!(track_live, u32);
field!(count_events, u32);
field!(count_sample_mask, u32);
field!(cgroup_cache, u32);
