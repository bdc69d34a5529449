//! `tp_btf/kfree`: a kmalloc'd object (or any slab object) freed by address alone.
//!
//! Written against (include/trace/events/kmem.h):
//! ```c
//! TP_PROTO(unsigned long call_site, const void *ptr)
//! ```

use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};

use crate::account;

#[btf_tracepoint(function = "kfree")]
pub fn kfree(ctx: BtfTracePointContext) -> i32 {
    let ptr: u64 = ctx.arg(1);
    // kfree(NULL) and kfree(ZERO_SIZE_PTR, 16) are no-ops the tracepoint still reports.
    if ptr > 16 {
        account::record_free(ptr, 0);
    }
    0
}
