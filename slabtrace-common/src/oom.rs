//! The record the BPF side writes for every task the kernel marks as an OOM victim.
//!
//! Written by `tp_btf/mark_victim` into the `OOM_EVENTS` ring buffer (see
//! `slabtrace-ebpf/src/probes/oom.rs` for how the scope is found without fentry or kprobes).

use crate::assert_size;

/// Length of `task_struct.comm` (`TASK_COMM_LEN`), NUL included.
pub const COMM_LEN: usize = 16;

/// Kernel return addresses kept from the victim's marking: enough to reach the caller of
/// `out_of_memory()` (about ten frames in, past the BPF and tracepoint frames).
pub const OOM_STACK_DEPTH: usize = 24;

/// [`OomEvent::flags`] bit: the task that started the OOM kill had done a memcg reclaim, and
/// [`OomEvent::reclaim_memcg_id`] is the memcg its latest one targeted.
pub const OOM_RECLAIM_SEEN: u16 = 1;
/// [`OomEvent::flags`] bit: a kernel read failed, so some field is zero rather than the truth.
pub const OOM_PARTIAL: u16 = 2;

/// One OOM victim.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OomEvent {
    /// `bpf_ktime_get_boot_ns()` when the victim was marked (`CLOCK_BOOTTIME`).
    pub boot_ns: u64,
    /// cgroup2 id of the victim (`task->cgroups->dfl_cgrp->kn->id`).
    pub cgroup_id: u64,
    /// Id of the memory cgroup the triggering task's latest memcg reclaim targeted
    /// (`scan_control.target_mem_cgroup->css.cgroup->kn->id`): the inode of its directory in the
    /// memory controller's hierarchy (the cgroup v1 `memory` mount on a hybrid node, cgroup2
    /// otherwise). Valid with [`OOM_RECLAIM_SEEN`]; it is the OOM's memcg when the stack shows a
    /// memcg OOM.
    pub reclaim_memcg_id: u64,
    /// cgroup2 id of the task that ran out of memory and started the OOM kill.
    pub trigger_cgroup_id: u64,
    /// The victim's process id (`task->tgid`).
    pub tgid: u32,
    /// The victim's thread the kernel marked (`task->pid`; any thread that still has the mm).
    pub pid: u32,
    /// Process id of the task that started the OOM kill.
    pub trigger_tgid: u32,
    /// The victim's uid, as the tracepoint reports it.
    pub uid: u32,
    /// How many of [`Self::stack`]'s entries `bpf_get_stack` filled (0 if it failed).
    pub stack_len: u32,
    /// The victim's `oom_score_adj` (`task->signal->oom_score_adj`).
    pub oom_score_adj: i16,
    /// [`OOM_RECLAIM_SEEN`], [`OOM_PARTIAL`].
    pub flags: u16,
    /// `task->comm`, NUL-padded.
    pub comm: [u8; COMM_LEN],
    /// The kernel stack at the marking, innermost first: return addresses.
    pub stack: [u64; OOM_STACK_DEPTH],
}
assert_size!(OomEvent, 264);

impl Default for OomEvent {
    fn default() -> Self {
        Self {
            boot_ns: 0,
            cgroup_id: 0,
            reclaim_memcg_id: 0,
            trigger_cgroup_id: 0,
            tgid: 0,
            pid: 0,
            trigger_tgid: 0,
            uid: 0,
            stack_len: 0,
            oom_score_adj: 0,
            flags: 0,
            comm: [0; COMM_LEN],
            stack: [0; OOM_STACK_DEPTH],
        }
    }
}

#[cfg(feature = "user")]
// SAFETY: plain old data: integer fields and arrays, no implicit padding (size asserted).
unsafe impl aya::Pod for OomEvent {}
