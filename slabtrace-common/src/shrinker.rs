//! What the BPF side keeps per shrinker: how often reclaim called it, how many objects it was
//! asked to scan and left unscanned, and how many it freed.
//!
//! Written by `tp_btf/mm_shrink_slab_start` and `tp_btf/mm_shrink_slab_end` into the
//! `SHRINKERS` map, keyed by the `struct shrinker *` (see
//! `slabtrace-ebpf/src/probes/shrink_slab.rs`). Userspace takes deltas between two reads: the
//! objects scanned over an interval are the planned minus the left, both summed.

use crate::assert_size;

/// Longest shrinker name kept (`shrinker.name`, only with `CONFIG_SHRINKER_DEBUG`), with its
/// terminating NUL. Names are short: `sb-ext4`, `ext4-es-shrinker:253:0`, `mm-shadow`.
pub const SHRINKER_NAME_LEN: usize = 32;

/// One shrinker's totals since the BPF side first saw it at this address.
///
/// Every counter only grows, wrapping modulo 2^64. When the address turns up with another
/// scan function (the shrinker was freed and its memory reused by another), the record starts
/// again from zero, which userspace sees as counters going down.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShrinkerStats {
    /// `shrinker.scan_objects`: the function that frees its objects (`super_cache_scan` for a
    /// filesystem's dentries and inodes); 0 if it could not be read.
    pub scan_fn: u64,
    /// Calls of `do_shrink_slab()` (one per start event).
    pub calls: u64,
    /// Sum of `total_scan` at the start events: objects reclaim planned to scan.
    pub planned: u64,
    /// Sum of `total_scan` at the end events: objects left unscanned. The kernel's variable is
    /// a signed long; this is its two's-complement sum, so `planned - left` (wrapping) is the
    /// objects scanned even if a shrinker overshot.
    pub left: u64,
    /// Sum of the end events' `shrinker_retval` where positive: objects freed.
    pub freed: u64,
    /// `shrinker.name`, NUL-padded; empty without `CONFIG_SHRINKER_DEBUG`.
    pub name: [u8; SHRINKER_NAME_LEN],
}
assert_size!(ShrinkerStats, 72);

impl Default for ShrinkerStats {
    fn default() -> Self {
        Self { scan_fn: 0, calls: 0, planned: 0, left: 0, freed: 0, name: [0; SHRINKER_NAME_LEN] }
    }
}

#[cfg(feature = "user")]
// SAFETY: plain old data: u64 fields and a byte array, no implicit padding (size asserted).
unsafe impl aya::Pod for ShrinkerStats {}
