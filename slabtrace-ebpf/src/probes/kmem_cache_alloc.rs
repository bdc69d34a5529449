//! `tp_btf/kmem_cache_alloc`: an object from a named cache.
//!
//! Written against (include/trace/events/kmem.h, Linux 6.1 and later; checked against the
//! running kernel's BTF by the loader):
//! ```c
//! TP_PROTO(unsigned long call_site, const void *ptr, struct kmem_cache *s,
//!          gfp_t gfp_flags, int node)
//! ```
//! The classic event's `accounted` is `(gfp_flags & __GFP_ACCOUNT) || (s->flags &
//! SLAB_ACCOUNT)`; the gfp half is kept here (a key flag), the cache half applied in userspace
//! from the cache's flags.

use aya_ebpf::{EbpfContext as _, macros::btf_tracepoint, programs::BtfTracePointContext};
use slabtrace_common::key::KEY_GFP_ACCOUNTED;

use crate::{
    account::{self, Context},
    caches, config,
};

#[btf_tracepoint(function = "kmem_cache_alloc")]
pub fn kmem_cache_alloc(ctx: BtfTracePointContext) -> i32 {
    try_kmem_cache_alloc(&ctx);
    0
}

#[inline(always)]
fn try_kmem_cache_alloc(ctx: &BtfTracePointContext) {
    let ptr: u64 = ctx.arg(1);
    if ptr == 0 {
        return; // a failed allocation
    }
    let cache: u64 = ctx.arg(2);
    let gfp: u32 = ctx.arg(3);
    let flags = if u64::from(gfp) & config::gfp_account() != 0 { KEY_GFP_ACCOUNTED } else { 0 };
    let cgroup = Context::of(ctx.as_ptr()).cgroup();
    if account::record_alloc(cgroup, cache, flags, ptr) {
        caches::remember(cache);
    }
    account::record_call_site(cgroup, cache, ctx.arg(0));
}
