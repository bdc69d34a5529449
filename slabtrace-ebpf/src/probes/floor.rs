//! Empty programs on the same tracepoints: the floor of what any BPF tracer costs there
//! (dispatch, context set-up, recursion guard), one of each program type the kmem programs may
//! be loaded as. `cargo xtask bench` attaches them in place of the real ones to measure how far
//! above the floor slabtrace is. Never attached otherwise.

use aya_ebpf::{
    macros::{btf_tracepoint, raw_tracepoint},
    programs::{BtfTracePointContext, RawTracePointContext},
};

#[btf_tracepoint(function = "kmem_cache_alloc")]
pub fn floor_kmem_cache_alloc(_ctx: BtfTracePointContext) -> i32 {
    0
}

#[btf_tracepoint(function = "kmem_cache_free")]
pub fn floor_kmem_cache_free(_ctx: BtfTracePointContext) -> i32 {
    0
}

#[btf_tracepoint(function = "kmalloc")]
pub fn floor_kmalloc(_ctx: BtfTracePointContext) -> i32 {
    0
}

#[btf_tracepoint(function = "kfree")]
pub fn floor_kfree(_ctx: BtfTracePointContext) -> i32 {
    0
}

/// One empty raw tracepoint program, attached to each of the kmem tracepoints.
#[raw_tracepoint(tracepoint = "kmem_cache_alloc")]
pub fn floor_raw(_ctx: RawTracePointContext) -> i32 {
    0
}
