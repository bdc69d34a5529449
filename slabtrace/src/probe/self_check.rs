//! The start-up self-check of the interrupt test (the BPF side's `probes/self_check.rs`): the
//! kmem programs tell interrupt context from task context by whether their context lies on
//! the current task's stack, whose size comes from BTF and a rule about KASAN. If that is
//! wrong on some kernel, every allocation would be charged to the interrupt bucket. So before
//! the kmem programs are attached, a program on `task_rename` judges slabtrace renaming its
//! own thread, which is task context by definition.

use aya::{Ebpf, maps::Array, programs::RawTracePoint};
use log::{debug, warn};
use slabtrace_common::{SELF_CHECK_INTERRUPT, SELF_CHECK_TASK, map_names};

/// Whether the interrupt test judged this thread's rename to be task context. A check that
/// cannot run at all leaves the test on, with a warning.
pub fn task_context_is_task(ebpf: &mut Ebpf) -> bool {
    match run(ebpf) {
        Ok(SELF_CHECK_TASK) => {
            debug!("self-check: slabtrace's own rename was judged task context, as it is");
            true
        }
        Ok(SELF_CHECK_INTERRUPT) => false,
        Ok(_) => {
            warn!("the interrupt test's self-check did not see slabtrace rename itself");
            true
        }
        Err(e) => {
            warn!("the interrupt test's self-check could not run ({e}): trusting the test");
            true
        }
    }
}

/// Attaches the check, renames this thread to its own name, reads the verdict and unloads the
/// check.
fn run(ebpf: &mut Ebpf) -> Result<u32, Box<dyn std::error::Error>> {
    let program: &mut RawTracePoint =
        ebpf.program_mut("self_check").ok_or("no self_check program")?.try_into()?;
    program.load()?;
    let attached = program.attach("task_rename");
    if let Ok(_link) = &attached {
        let mut name = [0u8; 16];
        // SAFETY: PR_GET_NAME writes at most 16 bytes into a 16-byte buffer, and PR_SET_NAME
        // reads a NUL-terminated name of at most 16 bytes: the same one, so nothing changes.
        unsafe {
            libc::prctl(libc::PR_GET_NAME, name.as_mut_ptr());
            libc::prctl(libc::PR_SET_NAME, name.as_ptr());
        }
    }
    let unloaded = program.unload();
    attached?;
    unloaded?;
    let verdicts: Array<_, u32> =
        Array::try_from(ebpf.map(map_names::SELF_CHECK).ok_or("no SELF_CHECK map")?)?;
    Ok(verdicts.get(&0, 0)?)
}
