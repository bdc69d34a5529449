//! The start-up self-check of the interrupt test: on `raw_tp/task_rename`, for the loader's
//! own renames only (`prctl(PR_SET_NAME)`, certainly task context), records what
//! `account::Context` makes of them. The loader attaches it for a moment before the kmem
//! programs and turns interrupt detection off if the verdict is wrong (a kernel whose stack
//! size or layout is not what BTF suggests).
//!
//! Written against (include/trace/events/task.h, every supported kernel):
//! ```c
//! TP_PROTO(struct task_struct *task, const char *comm)
//! ```
//! The context pointer is the argument array on the current stack, as for the kmem programs.
//! (Not `sys_enter`: enabling a syscall tracepoint flags every task for syscall tracing, and
//! on a 5.10 VM attaching and detaching it at every start once left both CPUs spinning at
//! the syscall entry's patched branch.)

use aya_ebpf::{
    EbpfContext as _, helpers::bpf_get_current_pid_tgid, macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use slabtrace_common::{SELF_CHECK_INTERRUPT, SELF_CHECK_TASK};

use crate::{account::Context, config, maps::SELF_CHECK};

#[raw_tracepoint(tracepoint = "task_rename")]
pub fn self_check(ctx: RawTracePointContext) -> i32 {
    // The upper half: the tgid.
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if tgid != config::self_tgid() {
        return 0;
    }
    let verdict = match Context::of(ctx.as_ptr()) {
        Context::Task => SELF_CHECK_TASK,
        Context::Interrupt => SELF_CHECK_INTERRUPT,
    };
    if let Some(slot) = SELF_CHECK.get_ptr_mut(0) {
        // SAFETY: the map's one slot; only this program writes it.
        unsafe { *slot = verdict };
    }
    0
}
