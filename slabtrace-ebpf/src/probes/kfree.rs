//! A kmalloc'd object (or any slab object) freed by address alone: `kfree`.
//!
//! Written against (include/trace/events/kmem.h, every supported kernel):
//! ```c
//! TP_PROTO(unsigned long call_site, const void *ptr)
//! ```
//! As `tp_btf` where the verifier allows reading `ptr`, else as `raw_tp`.

use core::ffi::c_void;

use aya_ebpf::{
    EbpfContext as _,
    macros::{btf_tracepoint, raw_tracepoint},
    programs::{BtfTracePointContext, RawTracePointContext},
};

use crate::account::{self, arg};

#[btf_tracepoint(function = "kfree")]
pub fn kfree(ctx: BtfTracePointContext) -> i32 {
    try_kfree(ctx.as_ptr());
    0
}

#[raw_tracepoint(tracepoint = "kfree")]
pub fn kfree_raw(ctx: RawTracePointContext) -> i32 {
    try_kfree(ctx.as_ptr());
    0
}

#[inline(always)]
fn try_kfree(ctx: *const c_void) {
    let ptr = arg(ctx, 1);
    // kfree(NULL) and kfree(ZERO_SIZE_PTR, 16) are no-ops the tracepoint still reports.
    if ptr > 16 {
        account::record_free(ptr, 0);
    }
}
