//! A task moved to another cgroup: `cgroup_attach_task`.
//!
//! Written against (include/trace/events/cgroup.h, Linux 4.x and later):
//! ```c
//! TP_PROTO(struct cgroup *dst_cgrp, const char *path, struct task_struct *task,
//!          bool threadgroup)
//! ```
//! Nothing of it is read: the event only moves on the generation of the per-CPU cache of
//! cgroup ids (`account::current_cgroup_id`), so no CPU takes a moved task's old cgroup from
//! it. Fired once per move, after the tasks moved (for a whole thread group once).

use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};

use crate::account;

#[btf_tracepoint(function = "cgroup_attach_task")]
pub fn cgroup_attach_task(_ctx: BtfTracePointContext) -> i32 {
    account::cgroups_moved();
    0
}
