//! The start-up self-check of the interrupt test (the BPF side's `probes/self_check.rs`): the
//! kmem programs tell interrupt context from task context by whether their context lies on
//! the current task's stack, whose size comes from BTF and a rule about KASAN. If that is
//! wrong on some kernel, every allocation would be charged to the interrupt bucket. So before
//! the kmem programs are attached, a program on `sys_enter` judges a few of slabtrace's own
//! system calls, which are task context by definition.

use aya::{
    Ebpf,
    maps::Array,
    programs::RawTracePoint,
};
use log::{debug, warn};
use slabtrace_common::{SELF_CHECK_INTERRUPT, SELF_CHECK_TASK};

/// Whether the interrupt test judged this process's system calls to be task context. A check
/// that cannot run at all (no `sys_enter` tracepoint, say) leaves the test on, with a warning.
pub fn task_context_is_task(ebpf: &mut Ebpf) -> bool {
    match run(ebpf) {
        Ok(SELF_CHECK_TASK) => {
            debug!("self-check: a system call of slabtrace's was judged task context, as it is");
            true
        }
        Ok(SELF_CHECK_INTERRUPT) => false,
        Ok(_) => {
            warn!("the interrupt test's self-check saw none of slabtrace's system calls");
            true
        }
        Err(e) => {
            warn!("the interrupt test's self-check could not run ({e}): trusting the test");
            true
        }
    }
}

/// Attaches the check, makes a few system calls, reads the verdict and unloads the check.
fn run(ebpf: &mut Ebpf) -> Result<u32, Box<dyn std::error::Error>> {
    let program: &mut RawTracePoint =
        ebpf.program_mut("self_check").ok_or("no self_check program")?.try_into()?;
    program.load()?;
    let attached = program.attach("sys_enter");
    if let Ok(_link) = &attached {
        for _ in 0..3 {
            // SAFETY: getppid has no preconditions; any system call will do.
            unsafe { libc::getppid() };
        }
    }
    let unloaded = program.unload();
    attached?;
    unloaded?;
    let verdicts: Array<_, u32> =
        Array::try_from(ebpf.map("SELF_CHECK").ok_or("no SELF_CHECK map")?)?;
    Ok(verdicts.get(&0, 0)?)
}
