//! OOM kills: `tp_btf/mark_victim` records each victim with the kernel stack that marked it, and
//! `tp_btf/mm_vmscan_memcg_reclaim_begin` notes, per task, which memcg it last reclaimed from.
//!
//! Written against (include/trace/events/oom.h and vmscan.h, mm/vmscan.c, Linux 6.18; until at
//! least 6.8 `mark_victim` took only `int pid`, and the loader does not attach there):
//! ```c
//! TRACE_EVENT(mark_victim, TP_PROTO(struct task_struct *task, uid_t uid))
//! DEFINE_EVENT(mm_vmscan_memcg_reclaim_begin, TP_PROTO(int order, gfp_t gfp_flags))
//!
//! unsigned long try_to_free_mem_cgroup_pages(struct mem_cgroup *memcg, ...)
//! {
//!         struct scan_control sc = { ..., .target_mem_cgroup = memcg, ... };
//!         set_task_reclaim_state(current, &sc.reclaim_state);
//!         trace_mm_vmscan_memcg_reclaim_begin(0, sc.gfp_mask);
//! ```
//! The kernel's own answer to "which OOM was this" is `oom_control.memcg`, but that is an
//! argument of `out_of_memory()`, which only fentry or a kprobe can read, and the kernel this
//! was written on refuses both. Two facts stand in for it:
//! - Scope: `mark_oom_victim()` runs inside `out_of_memory()`, synchronously, so the kernel
//!   stack says who called it: `mem_cgroup_out_of_memory()` (the only function that sets
//!   `oc->memcg`) for a memcg OOM, the page allocator or sysrq for a node-wide one. The stack
//!   goes to userspace, which knows the symbols.
//! - Which memcg: every `mem_cgroup_out_of_memory(memcg)` follows, on the same task and with
//!   no memcg reclaim in between, a `try_to_free_mem_cgroup_pages(memcg)` (`try_charge_memcg`
//!   reclaims the memcg over its limit and then OOMs it; writing a lower `memory.max` does the
//!   same). That reclaim's target is readable at its tracepoint through
//!   `current->reclaim_state`, which points into its `scan_control`.
//!
//! Off the allocation hot path: memcg reclaims are a slow path, OOM kills rare.

use aya_ebpf::{
    EbpfContext as _,
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_probe_read_kernel,
        generated::{bpf_get_current_task, bpf_get_stack, bpf_ktime_get_boot_ns},
    },
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};
use slabtrace_common::{
    OomEvent, Stat,
    oom::{COMM_LEN, OOM_PARTIAL, OOM_RECLAIM_SEEN, OOM_STACK_DEPTH},
};

use crate::{
    config,
    maps::{OOM_EVENTS, OOM_RECLAIMS, bump},
};

#[btf_tracepoint(function = "mm_vmscan_memcg_reclaim_begin")]
pub fn oom_memcg_reclaim(_ctx: BtfTracePointContext) -> i32 {
    try_memcg_reclaim();
    0
}

#[inline(always)]
fn try_memcg_reclaim() {
    let mut reads = Reads::default();
    // SAFETY: a helper with no arguments.
    let task = unsafe { bpf_get_current_task() };
    let state: u64 = reads.at(task, config::off_task_reclaim_state());
    let scan_control = state.wrapping_sub(u64::from(config::off_sc_reclaim_state()));
    let memcg: u64 = reads.at(scan_control, config::off_sc_target_memcg());
    let cgroup: u64 = reads.at(memcg, config::off_memcg_cgroup());
    let memcg_id = reads.cgroup_id(cgroup);
    if reads.failed {
        bump(Stat::OomReadFailed);
        return;
    }
    // An LRU insert makes room rather than fail.
    let _ = OOM_RECLAIMS.insert(bpf_get_current_pid_tgid(), memcg_id, 0);
}

#[btf_tracepoint(function = "mark_victim")]
pub fn mark_victim(ctx: BtfTracePointContext) -> i32 {
    try_mark_victim(&ctx);
    0
}

#[inline(always)]
fn try_mark_victim(ctx: &BtfTracePointContext) {
    bump(Stat::OomVictims);
    let Some(mut slot) = OOM_EVENTS.reserve::<OomEvent>(0) else {
        bump(Stat::OomEventsLost);
        return;
    };
    let event = slot.as_mut_ptr();
    let task: u64 = ctx.arg(0);
    let pid_tgid = bpf_get_current_pid_tgid();
    let mut reads = Reads::default();
    // SAFETY: `event` points to the reserved record, which this program alone writes until it
    // is submitted; every field is written (the stack by the helper, up to its size).
    unsafe {
        (*event).boot_ns = bpf_ktime_get_boot_ns();
        (*event).trigger_cgroup_id = bpf_get_current_cgroup_id();
        // The upper half: clippy sees the shift leaves 32 bits.
        let trigger_tgid = (pid_tgid >> 32) as u32;
        (*event).trigger_tgid = trigger_tgid;
        (*event).uid = ctx.arg(1);
        (*event).tgid = reads.at(task, config::off_task_tgid());
        (*event).pid = reads.at(task, config::off_task_pid());
        (*event).comm = reads.at::<[u8; COMM_LEN]>(task, config::off_task_comm());
        let signal: u64 = reads.at(task, config::off_task_signal());
        (*event).oom_score_adj = reads.at(signal, config::off_signal_oom_score_adj());
        let css_set: u64 = reads.at(task, config::off_task_cgroups());
        let cgroup: u64 = reads.at(css_set, config::off_css_set_dfl_cgrp());
        (*event).cgroup_id = reads.cgroup_id(cgroup);

        let mut flags = 0;
        (*event).reclaim_memcg_id = match OOM_RECLAIMS.get(pid_tgid) {
            Some(id) => {
                flags |= OOM_RECLAIM_SEEN;
                *id
            }
            None => 0,
        };
        if reads.failed {
            flags |= OOM_PARTIAL;
            bump(Stat::OomReadFailed);
        }
        (*event).flags = flags;

        let stack = (&raw mut (*event).stack).cast::<core::ffi::c_void>();
        // The helper zeroes what it does not fill, and the whole buffer when it fails.
        let size = (OOM_STACK_DEPTH * 8) as u32;
        let written = bpf_get_stack(ctx.as_ptr(), stack, size, 0);
        (*event).stack_len = if written > 0 {
            #[expect(clippy::cast_possible_truncation, reason = "at most the buffer's size")]
            let frames = (written / 8) as u32;
            frames
        } else {
            bump(Stat::OomStackFailed);
            0
        };
    }
    slot.submit(0);
}

/// Kernel reads that remember whether any failed, so the event says it is incomplete.
#[derive(Default)]
struct Reads {
    failed: bool,
}

impl Reads {
    /// The `T` at `base + off`, or zeros (and a failure noted) if unreadable. A NULL `base`
    /// fails the read like any other bad address.
    #[inline(always)]
    fn at<T: Copy + Default>(&mut self, base: u64, off: u32) -> T {
        // SAFETY: bpf_probe_read_kernel checks the address; a fault is returned, not taken.
        match unsafe { bpf_probe_read_kernel(base.wrapping_add(u64::from(off)) as *const T) } {
            Ok(v) => v,
            Err(_) => {
                self.failed = true;
                T::default()
            }
        }
    }

    /// The id of the cgroup at `cgroup` (`cgroup->kn->id`).
    #[inline(always)]
    fn cgroup_id(&mut self, cgroup: u64) -> u64 {
        let kn: u64 = self.at(cgroup, config::off_cgroup_kn());
        self.at(kn, config::off_kernfs_node_id())
    }
}
