//! An object from a named cache: `kmem_cache_alloc`.
//!
//! Linux 6.1 and later, the tracepoint (include/trace/events/kmem.h; checked against the running
//! kernel's BTF by the loader):
//! ```c
//! TP_PROTO(unsigned long call_site, const void *ptr, struct kmem_cache *s,
//!          gfp_t gfp_flags, int node)
//! ```
//! as `tp_btf` where the verifier lets a tracing program read a `const void *` argument, else
//! as `raw_tp` (the same arguments as plain u64s); the loader tries them in that order.
//!
//! Before 6.1 the tracepoint has no cache pointer (`call_site, ptr, bytes_req, bytes_alloc,
//! gfp_flags`), so the allocation functions themselves are traced on return (`fexit`), which
//! sees their arguments and the object they return:
//! ```c
//! void *kmem_cache_alloc(struct kmem_cache *s, gfp_t gfpflags);
//! void *kmem_cache_alloc_node(struct kmem_cache *s, gfp_t gfpflags, int node);
//! void *kmem_cache_alloc_lru(struct kmem_cache *s, struct list_lru *lru, gfp_t gfpflags);
//! ```
//! (`kmem_cache_alloc_lru` from 5.18). Those callers' call sites are not known there.
//!
//! The classic event's `accounted` is `(gfp_flags & __GFP_ACCOUNT) || (s->flags &
//! SLAB_ACCOUNT)`; the gfp half is kept here (a key flag), the cache half applied in userspace
//! from the cache's flags.

use core::ffi::c_void;

use aya_ebpf::{
    EbpfContext as _,
    macros::{btf_tracepoint, fexit, raw_tracepoint},
    programs::{BtfTracePointContext, FExitContext, RawTracePointContext},
};
use slabtrace_common::key::KEY_GFP_ACCOUNTED;

use crate::{
    account::{self, Context, arg},
    caches, config,
};

#[btf_tracepoint(function = "kmem_cache_alloc")]
pub fn kmem_cache_alloc(ctx: BtfTracePointContext) -> i32 {
    from_tracepoint(ctx.as_ptr());
    0
}

#[raw_tracepoint(tracepoint = "kmem_cache_alloc")]
pub fn kmem_cache_alloc_raw(ctx: RawTracePointContext) -> i32 {
    from_tracepoint(ctx.as_ptr());
    0
}

#[fexit(function = "kmem_cache_alloc")]
pub fn kmem_cache_alloc_exit(ctx: FExitContext) -> i32 {
    let ctx = ctx.as_ptr();
    try_kmem_cache_alloc(ctx, 0, arg(ctx, 2), arg(ctx, 0), arg(ctx, 1));
    0
}

#[fexit(function = "kmem_cache_alloc_node")]
pub fn kmem_cache_alloc_node_exit(ctx: FExitContext) -> i32 {
    let ctx = ctx.as_ptr();
    try_kmem_cache_alloc(ctx, 0, arg(ctx, 3), arg(ctx, 0), arg(ctx, 1));
    0
}

#[fexit(function = "kmem_cache_alloc_lru")]
pub fn kmem_cache_alloc_lru_exit(ctx: FExitContext) -> i32 {
    let ctx = ctx.as_ptr();
    try_kmem_cache_alloc(ctx, 0, arg(ctx, 3), arg(ctx, 0), arg(ctx, 2));
    0
}

/// The tracepoint's arguments: call site, object, cache, gfp flags.
#[inline(always)]
fn from_tracepoint(ctx: *const c_void) {
    try_kmem_cache_alloc(ctx, arg(ctx, 0), arg(ctx, 1), arg(ctx, 2), arg(ctx, 3));
}

#[inline(always)]
fn try_kmem_cache_alloc(ctx: *const c_void, call_site: u64, ptr: u64, cache: u64, gfp: u64) {
    if ptr == 0 {
        return; // a failed allocation
    }
    if account::uncounted(ptr) {
        return;
    }
    // gfp_t is 32 bits: the upper half of its u64 slot is not the kernel's.
    let flags = if gfp & 0xffff_ffff & config::gfp_account() != 0 { KEY_GFP_ACCOUNTED } else { 0 };
    let cgroup = Context::of(ctx).cgroup();
    if account::record_alloc(cgroup, cache, flags, ptr) {
        caches::remember(cache);
    }
    account::record_call_site(cgroup, cache, call_site);
}
