//! `tp_btf/kmem_cache_free`: an object returned to its named cache.
//!
//! Written against (include/trace/events/kmem.h, Linux 5.19 and later):
//! ```c
//! TP_PROTO(unsigned long call_site, const void *ptr, const struct kmem_cache *s)
//! ```
//! Three programs: one for task context and two for interrupt context, the second taking what
//! the first could not (see `account::Context` for why).

use aya_ebpf::{EbpfContext as _, macros::btf_tracepoint, programs::BtfTracePointContext};

use crate::account::{self, Context};

#[btf_tracepoint(function = "kmem_cache_free")]
pub fn kmem_cache_free(ctx: BtfTracePointContext) -> i32 {
    let ptr: u64 = ctx.arg(1);
    if ptr != 0 && Context::Task.handles(ctx.as_ptr()) {
        account::record_free(ptr, ctx.arg(2));
    }
    0
}

#[btf_tracepoint(function = "kmem_cache_free")]
pub fn kmem_cache_free_irq(ctx: BtfTracePointContext) -> i32 {
    let ptr: u64 = ctx.arg(1);
    if ptr != 0 && Context::Interrupt.handles(ctx.as_ptr()) {
        account::mark_irq_free(ptr);
        account::record_free(ptr, ctx.arg(2));
    }
    0
}

#[btf_tracepoint(function = "kmem_cache_free")]
pub fn kmem_cache_free_irq2(ctx: BtfTracePointContext) -> i32 {
    let ptr: u64 = ctx.arg(1);
    if ptr != 0 && Context::Interrupt.handles(ctx.as_ptr()) && !account::irq_free_marked(ptr) {
        account::record_free(ptr, ctx.arg(2));
    }
    0
}
