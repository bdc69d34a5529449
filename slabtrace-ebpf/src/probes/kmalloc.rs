//! `tp_btf/kmalloc`: a kmalloc, from a size-class cache or (above the largest class) from the
//! page allocator.
//!
//! Written against (include/trace/events/kmem.h, Linux 6.1 and later):
//! ```c
//! TP_PROTO(unsigned long call_site, const void *ptr, size_t bytes_req,
//!          size_t bytes_alloc, gfp_t gfp_flags, int node)
//! ```
//! No cache pointer is given: the size class is `bytes_alloc`, and the kmalloc family
//! (`kmalloc-`, `kmalloc-cg-`, `kmalloc-rcl-`, `dma-kmalloc-`) follows from the gfp flags the
//! same way the kernel's `kmalloc_type()` chooses it, which userspace does from the bits kept.

use aya_ebpf::{EbpfContext as _, macros::btf_tracepoint, programs::BtfTracePointContext};
use slabtrace_common::{
    CacheId,
    key::{KMALLOC_ACCOUNT, KMALLOC_DMA, KMALLOC_RECLAIMABLE},
};

use crate::{
    account::{self, Context},
    config,
};

#[btf_tracepoint(function = "kmalloc")]
pub fn kmalloc(ctx: BtfTracePointContext) -> i32 {
    try_kmalloc(&ctx);
    0
}

#[inline(always)]
fn try_kmalloc(ctx: &BtfTracePointContext) {
    let ptr: u64 = ctx.arg(1);
    if ptr == 0 {
        return;
    }
    let bytes: u64 = ctx.arg(3);
    let gfp = u64::from(ctx.arg::<u32>(4));
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
    let cgroup = Context::of(ctx.as_ptr()).cgroup();
    account::record_alloc(cgroup, cache, 0, ptr);
    account::record_call_site(cgroup, cache, ctx.arg(0));
}
