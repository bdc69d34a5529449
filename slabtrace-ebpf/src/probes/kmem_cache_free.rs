//! `tp_btf/kmem_cache_free`: an object returned to its named cache.
//!
//! Written against (include/trace/events/kmem.h, Linux 5.19 and later):
//! ```c
//! TP_PROTO(unsigned long call_site, const void *ptr, const struct kmem_cache *s)
//! ```
//! Two programs, one per context: see `account::Context` for why.

use aya_ebpf::{EbpfContext as _, macros::btf_tracepoint, programs::BtfTracePointContext};

use crate::account::{self, Context};

#[btf_tracepoint(function = "kmem_cache_free")]
pub fn kmem_cache_free(ctx: BtfTracePointContext) -> i32 {
    try_kmem_cache_free(&ctx, Context::Task);
    0
}

#[btf_tracepoint(function = "kmem_cache_free")]
pub fn kmem_cache_free_irq(ctx: BtfTracePointContext) -> i32 {
    try_kmem_cache_free(&ctx, Context::Interrupt);
    0
}

#[inline(always)]
fn try_kmem_cache_free(ctx: &BtfTracePointContext, which: Context) {
    let ptr: u64 = ctx.arg(1);
    if ptr != 0 && which.handles(ctx.as_ptr()) {
        account::record_free(ptr, ctx.arg(2));
    }
}
