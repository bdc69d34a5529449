//! An object returned to its named cache: `kmem_cache_free`.
//!
//! Written against (include/trace/events/kmem.h, Linux 6.1 and later):
//! ```c
//! TP_PROTO(unsigned long call_site, const void *ptr, const struct kmem_cache *s)
//! ```
//! Earlier kernels pass `(call_site, ptr)` (5.10) or `(call_site, ptr, const char *name)`: the
//! free programs read the cache only where the loader says it is there
//! ([`config::free_has_cache`]); elsewhere frees of untracked objects are counted without a
//! cache. As `tp_btf` where the verifier allows reading `ptr`, else as `raw_tp`.
//!
//! Three programs of each type: one for task context and two for interrupt context, the second
//! taking what the first could not (see `account::Context` for why).

use core::ffi::c_void;

use aya_ebpf::{
    EbpfContext as _,
    macros::{btf_tracepoint, raw_tracepoint},
    programs::{BtfTracePointContext, RawTracePointContext},
};

use crate::{
    account::{self, Context, arg},
    config,
};

#[btf_tracepoint(function = "kmem_cache_free")]
pub fn kmem_cache_free(ctx: BtfTracePointContext) -> i32 {
    task_free(ctx.as_ptr());
    0
}

#[btf_tracepoint(function = "kmem_cache_free")]
pub fn kmem_cache_free_irq(ctx: BtfTracePointContext) -> i32 {
    irq_free(ctx.as_ptr());
    0
}

#[btf_tracepoint(function = "kmem_cache_free")]
pub fn kmem_cache_free_irq2(ctx: BtfTracePointContext) -> i32 {
    irq2_free(ctx.as_ptr());
    0
}

#[raw_tracepoint(tracepoint = "kmem_cache_free")]
pub fn kmem_cache_free_raw(ctx: RawTracePointContext) -> i32 {
    task_free(ctx.as_ptr());
    0
}

#[raw_tracepoint(tracepoint = "kmem_cache_free")]
pub fn kmem_cache_free_irq_raw(ctx: RawTracePointContext) -> i32 {
    irq_free(ctx.as_ptr());
    0
}

#[raw_tracepoint(tracepoint = "kmem_cache_free")]
pub fn kmem_cache_free_irq2_raw(ctx: RawTracePointContext) -> i32 {
    irq2_free(ctx.as_ptr());
    0
}

/// The cache the free names, or 0 where the tracepoint does not carry it.
#[inline(always)]
fn cache(ctx: *const c_void) -> u64 {
    if config::free_has_cache() != 0 { arg(ctx, 2) } else { 0 }
}

#[inline(always)]
fn task_free(ctx: *const c_void) {
    let ptr = arg(ctx, 1);
    if ptr != 0 && Context::Task.handles(ctx) {
        account::record_free(ptr, cache(ctx));
    }
}

#[inline(always)]
fn irq_free(ctx: *const c_void) {
    let ptr = arg(ctx, 1);
    if ptr != 0 && Context::Interrupt.handles(ctx) {
        account::mark_irq_free(ptr);
        account::record_free(ptr, cache(ctx));
    }
}

#[inline(always)]
fn irq2_free(ctx: *const c_void) {
    let ptr = arg(ctx, 1);
    if ptr != 0 && Context::Interrupt.handles(ctx) && !account::irq_free_marked(ptr) {
        account::record_free(ptr, cache(ctx));
    }
}
