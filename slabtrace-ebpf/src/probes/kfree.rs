//! `tp_btf/kfree`: a kmalloc'd object (or any slab object) freed by address alone.
//!
//! Written against (include/trace/events/kmem.h):
//! ```c
//! TP_PROTO(unsigned long call_site, const void *ptr)
//! ```

use aya_ebpf::{EbpfContext as _, macros::btf_tracepoint, programs::BtfTracePointContext};

use crate::account::{self, Context};

#[btf_tracepoint(function = "kfree")]
pub fn kfree(ctx: BtfTracePointContext) -> i32 {
    try_kfree(&ctx, Context::Task);
    0
}

#[btf_tracepoint(function = "kfree")]
pub fn kfree_irq(ctx: BtfTracePointContext) -> i32 {
    try_kfree(&ctx, Context::Interrupt);
    0
}

#[inline(always)]
fn try_kfree(ctx: &BtfTracePointContext, which: Context) {
    let ptr: u64 = ctx.arg(1);
    // kfree(NULL) and kfree(ZERO_SIZE_PTR, 16) are no-ops the tracepoint still reports.
    if ptr > 16 && which.handles(ctx.as_ptr()) {
        account::record_free(ptr, 0);
    }
}
