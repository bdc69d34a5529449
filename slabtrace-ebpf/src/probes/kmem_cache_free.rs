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
//! Two programs of each type: the first takes every free, the second those nested in a run of
//! the first, which the kernel's recursion guard keeps from the first (see `account::Nesting`).

use core::ffi::c_void;

use aya_ebpf::{
    EbpfContext as _,
    macros::{btf_tracepoint, raw_tracepoint},
    programs::{BtfTracePointContext, RawTracePointContext},
};

use crate::{
    account::{Nesting, arg},
    config,
};

#[btf_tracepoint(function = "kmem_cache_free")]
pub fn kmem_cache_free(ctx: BtfTracePointContext) -> i32 {
    try_kmem_cache_free(ctx.as_ptr(), Nesting::First);
    0
}

#[btf_tracepoint(function = "kmem_cache_free")]
pub fn kmem_cache_free_nested(ctx: BtfTracePointContext) -> i32 {
    try_kmem_cache_free(ctx.as_ptr(), Nesting::Second);
    0
}

#[raw_tracepoint(tracepoint = "kmem_cache_free")]
pub fn kmem_cache_free_raw(ctx: RawTracePointContext) -> i32 {
    try_kmem_cache_free(ctx.as_ptr(), Nesting::First);
    0
}

#[raw_tracepoint(tracepoint = "kmem_cache_free")]
pub fn kmem_cache_free_nested_raw(ctx: RawTracePointContext) -> i32 {
    try_kmem_cache_free(ctx.as_ptr(), Nesting::Second);
    0
}

#[inline(always)]
fn try_kmem_cache_free(ctx: *const c_void, program: Nesting) {
    let ptr = arg(ctx, 1);
    if ptr == 0 {
        return;
    }
    // The cache, where the tracepoint carries it (Linux 6.1 and later).
    let cache = if config::free_has_cache() != 0 { arg(ctx, 2) } else { 0 };
    program.free(ctx, ptr, cache);
}
