//! Shrinker activity: `tp_btf/mm_shrink_slab_start` and `tp_btf/mm_shrink_slab_end` sum, per
//! shrinker, the calls, the objects reclaim planned to scan and left unscanned, and the objects
//! freed, so userspace can tell "reclaim ran and freed nothing" from "reclaim never ran".
//!
//! Written against (include/trace/events/vmscan.h and mm/shrinker.c, Linux 6.18; the same
//! since 3.x but for the end event's `nid`, added in 4.x):
//! ```c
//! TRACE_EVENT(mm_shrink_slab_start,
//!         TP_PROTO(struct shrinker *shr, struct shrink_control *sc,
//!                  long nr_objects_to_shrink, unsigned long cache_items,
//!                  unsigned long long delta, unsigned long total_scan, int priority))
//! TRACE_EVENT(mm_shrink_slab_end,
//!         TP_PROTO(struct shrinker *shr, int nid, int shrinker_retval,
//!                  long unused_scan_cnt, long new_scan_cnt, long total_scan))
//!
//! static unsigned long do_shrink_slab(struct shrink_control *shrinkctl,
//!                                     struct shrinker *shrinker, int priority)
//! {
//!         ...
//!         trace_mm_shrink_slab_start(shrinker, shrinkctl, nr, freeable, delta, total_scan,
//!                                    priority);
//!         while (total_scan >= batch_size || total_scan >= freeable) {
//!                 ...
//!                 ret = shrinker->scan_objects(shrinker, shrinkctl);
//!                 if (ret == SHRINK_STOP)
//!                         break;
//!                 freed += ret;
//!                 count_vm_events(SLABS_SCANNED, shrinkctl->nr_scanned);
//!                 total_scan -= shrinkctl->nr_scanned;
//!                 ...
//!         }
//!         ...
//!         trace_mm_shrink_slab_end(shrinker, shrinkctl->nid, freed, nr, new_nr, total_scan);
//!         return freed;
//! }
//! ```
//! Start and end of one call are not paired here (that would need a per-task map): the sums
//! are enough, since a call's scanned objects are its start's `total_scan` minus its end's,
//! and sums of differences are differences of sums. The start program creates the entry; the
//! end program only adds to one, so an end whose start was not seen (attached in between)
//! adds nothing.
//!
//! The record is per CPU (the BPF target has no atomic add in Rust, and reclaimers run one
//! shrinker on several CPUs at once); userspace sums the copies. A CPU's copy with a zero
//! `scan_fn` is one that CPU has not started a call in yet: it fills in the scan function and
//! name then. A copy with another non-zero scan function means the shrinker was freed and its
//! memory reused by another: the entry is deleted on every CPU and starts again.
//!
//! Off the allocation hot path: `do_shrink_slab()` runs only in reclaim, and each call walks
//! LRU lists that cost far more than these two programs. The kmem programs are untouched.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes},
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};
use slabtrace_common::{ShrinkerStats, Stat, shrinker::SHRINKER_NAME_LEN};

use crate::{
    config,
    maps::{SHRINKERS, bump},
};

#[btf_tracepoint(function = "mm_shrink_slab_start")]
pub fn shrink_slab_start(ctx: BtfTracePointContext) -> i32 {
    try_start(&ctx);
    0
}

#[inline(always)]
fn try_start(ctx: &BtfTracePointContext) {
    let shrinker: u64 = ctx.arg(0);
    let total_scan: u64 = ctx.arg(5);
    // Read on every call, not once: it is how a shrinker freed and its memory reused by
    // another is told apart (one 8-byte read per call of a slow path).
    let scan_fn = scan_fn(shrinker);
    let mut entry = SHRINKERS.get_ptr_mut(shrinker);
    if let (Some(e), Some(f)) = (entry, scan_fn) {
        // SAFETY: a map value pointer from a successful lookup: this CPU's copy.
        let seen = unsafe { (*e).scan_fn };
        if seen != 0 && seen != f {
            // Another shrinker at this address now: drop the old one's totals on every CPU.
            let _ = SHRINKERS.remove(shrinker);
            entry = None;
        }
    }
    let entry = match entry {
        Some(e) => e,
        None => {
            // Another CPU may insert it first (EEXIST): its entry has a zeroed copy for this
            // CPU, filled in below like any other.
            let inserted =
                SHRINKERS.insert(shrinker, ShrinkerStats::default(), u64::from(BPF_NOEXIST));
            match SHRINKERS.get_ptr_mut(shrinker) {
                Some(e) => e,
                None => {
                    if inserted.is_err() {
                        bump(Stat::ShrinkerInsertFailed);
                    }
                    return;
                }
            }
        }
    };
    // SAFETY: this CPU's copy of a map value; BPF programs do not nest on a CPU for the same
    // program type, so nothing else writes it meanwhile.
    unsafe {
        if (*entry).scan_fn == 0 {
            (*entry).scan_fn = scan_fn.unwrap_or(0);
            read_name(shrinker, &mut (*entry).name);
        }
        (*entry).calls = (*entry).calls.wrapping_add(1);
        (*entry).planned = (*entry).planned.wrapping_add(total_scan);
    }
}

#[btf_tracepoint(function = "mm_shrink_slab_end")]
pub fn shrink_slab_end(ctx: BtfTracePointContext) -> i32 {
    try_end(&ctx);
    0
}

#[inline(always)]
fn try_end(ctx: &BtfTracePointContext) {
    let shrinker: u64 = ctx.arg(0);
    let freed: i32 = ctx.arg(2);
    let left: i64 = ctx.arg(5);
    let Some(entry) = SHRINKERS.get_ptr_mut(shrinker) else {
        // Its start was not seen, or its entry could not be made (counted there).
        return;
    };
    // SAFETY: as in try_start. The copy may be one this CPU never started a call in (the task
    // moved CPUs inside the call): it is summed with the others all the same.
    unsafe {
        // Two's complement: adding the bits of a negative long subtracts it.
        (*entry).left = (*entry).left.wrapping_add(left.cast_unsigned());
        // `freed` is an unsigned long narrowed to int by the tracepoint; a negative value is a
        // sum past 2^31 (never seen) and is left out rather than subtracted.
        if freed > 0 {
            (*entry).freed = (*entry).freed.wrapping_add(u64::from(freed.cast_unsigned()));
        }
    }
}

/// `shrinker->scan_objects`, or None (counted) if unreadable.
#[inline(always)]
fn scan_fn(shrinker: u64) -> Option<u64> {
    let at = shrinker.wrapping_add(u64::from(config::off_shrinker_scan_objects()));
    // SAFETY: bpf_probe_read_kernel checks the address; a fault is returned, not taken.
    match unsafe { bpf_probe_read_kernel(at as *const u64) } {
        Ok(f) => Some(f),
        Err(_) => {
            bump(Stat::ShrinkerReadFailed);
            None
        }
    }
}

/// Reads `shrinker->name` into `name`; leaves it empty when the kernel has no names (no
/// `CONFIG_SHRINKER_DEBUG`), when the shrinker has none, or (counted) when unreadable.
#[inline(always)]
fn read_name(shrinker: u64, name: &mut [u8; SHRINKER_NAME_LEN]) {
    if config::shrinker_has_name() == 0 {
        return;
    }
    let at = shrinker.wrapping_add(u64::from(config::off_shrinker_name()));
    // SAFETY: bpf_probe_read_kernel checks the addresses; a fault is returned, not taken.
    unsafe {
        match bpf_probe_read_kernel(at as *const u64) {
            Ok(0) => {}
            Ok(ptr) => {
                if bpf_probe_read_kernel_str_bytes(ptr as *const u8, name).is_err() {
                    bump(Stat::ShrinkerReadFailed);
                }
            }
            Err(_) => bump(Stat::ShrinkerReadFailed),
        }
    }
}
