//! A kmalloc, from a size-class cache or (above the largest class) from the page allocator:
//! `kmalloc`, and before Linux 6.1 also `kmalloc_node`.
//!
//! Written against (include/trace/events/kmem.h, Linux 6.1 and later):
//! ```c
//! TP_PROTO(unsigned long call_site, const void *ptr, size_t bytes_req,
//!          size_t bytes_alloc, gfp_t gfp_flags, int node)
//! ```
//! Before 6.1 `kmalloc` had the same arguments without `node`, and `kmalloc_node` all six: one
//! program serves both (the raw one is attached to each). As `tp_btf` where the verifier
//! allows reading `ptr`, else as `raw_tp`.
//!
//! No cache pointer is given: the size class is `bytes_alloc`, and the kmalloc family
//! (`kmalloc-`, `kmalloc-cg-`, `kmalloc-rcl-`, `dma-kmalloc-`) follows from the gfp flags the
//! same way the kernel's `kmalloc_type()` chooses it, which userspace does from the bits kept.

use core::ffi::c_void;

use aya_ebpf::{
    EbpfContext as _,
    macros::{btf_tracepoint, raw_tracepoint},
    programs::{BtfTracePointContext, RawTracePointContext},
};
use slabtrace_common::{
    CacheId,
    key::{KMALLOC_ACCOUNT, KMALLOC_DMA, KMALLOC_RECLAIMABLE},
};

use crate::{
    account::{self, Context, arg},
    config,
};

#[btf_tracepoint(function = "kmalloc")]
pub fn kmalloc(ctx: BtfTracePointContext) -> i32 {
    try_kmalloc(ctx.as_ptr());
    0
}

#[raw_tracepoint(tracepoint = "kmalloc")]
pub fn kmalloc_raw(ctx: RawTracePointContext) -> i32 {
    try_kmalloc(ctx.as_ptr());
    0
}

#[inline(always)]
fn try_kmalloc(ctx: *const c_void) {
    let ptr = arg(ctx, 1);
    if ptr == 0 {
        return;
    }
    if account::uncounted(ptr) {
        return;
    }
    let bytes = arg(ctx, 3);
    // gfp_t is 32 bits: the upper half of its u64 slot is not the kernel's.
    let gfp = arg(ctx, 4) & 0xffff_ffff;
    let mut family = 0;
    if gfp & config::gfp_account() != 0 {
        family |= KMALLOC_ACCOUNT;
    }
    if gfp & config::gfp_reclaimable() != 0 {
        family |= KMALLOC_RECLAIMABLE;
    }
    if gfp & config::gfp_dma() != 0 {
        family |= KMALLOC_DMA;
    }
    #[expect(clippy::cast_possible_truncation, reason = "kmalloc sizes fit in 32 bits")]
    let cache = CacheId::kmalloc(family, bytes as u32);
    let cgroup = Context::of(ctx).cgroup();
    account::record_alloc(cgroup, cache, 0, ptr);
    account::record_call_site(cgroup, cache, arg(ctx, 0));
}
