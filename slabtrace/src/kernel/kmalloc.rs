//! Names of kmalloc size classes, as /proc/slabinfo shows them.
//!
//! The `kmalloc` tracepoint says how many bytes it allocated and with which GFP flags, not
//! which cache; the kernel picks the cache family the way `kmalloc_type()` (mm/slab.h) does:
//! no special flag → `kmalloc-`, else `__GFP_DMA` → `dma-kmalloc-`, else `__GFP_RECLAIMABLE`
//! → `kmalloc-rcl-`, else (`__GFP_ACCOUNT`) → `kmalloc-cg-` (from Linux 5.14; before, accounted
//! kmallocs share the plain caches). Sizes of 1 KiB and up are
//! written `1k`, `2k`, …; above the largest class (two pages) kmalloc goes to the page
//! allocator, shown as `kmalloc-large`.

use slabtrace_common::key::{KMALLOC_ACCOUNT, KMALLOC_DMA, KMALLOC_RECLAIMABLE};

/// Largest kmalloc size class served by a slab cache (`KMALLOC_MAX_CACHE_SIZE`, two pages).
pub const KMALLOC_MAX_CACHE_SIZE: u32 = 8192;

/// The /proc/slabinfo name of the cache a kmalloc of `bytes` with the `family` bits went to,
/// on a kernel that has `kmalloc-cg-*` caches (`cgroup_caches`) or not.
#[must_use]
pub fn cache_name(family: u32, bytes: u32, cgroup_caches: bool) -> String {
    if bytes > KMALLOC_MAX_CACHE_SIZE {
        return "kmalloc-large".to_owned();
    }
    let size = if bytes >= 1024 && bytes.is_multiple_of(1024) {
        format!("{}k", bytes / 1024)
    } else {
        bytes.to_string()
    };
    if family & KMALLOC_DMA != 0 {
        format!("dma-kmalloc-{size}")
    } else if family & KMALLOC_RECLAIMABLE != 0 {
        format!("kmalloc-rcl-{size}")
    } else if family & KMALLOC_ACCOUNT != 0 && cgroup_caches {
        format!("kmalloc-cg-{size}")
    } else {
        format!("kmalloc-{size}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_slabinfo() {
        assert_eq!(cache_name(0, 8, true), "kmalloc-8");
        assert_eq!(cache_name(0, 96, true), "kmalloc-96");
        assert_eq!(cache_name(0, 1024, true), "kmalloc-1k");
        assert_eq!(cache_name(0, 8192, true), "kmalloc-8k");
        assert_eq!(cache_name(KMALLOC_ACCOUNT, 64, true), "kmalloc-cg-64");
        assert_eq!(cache_name(KMALLOC_RECLAIMABLE, 2048, true), "kmalloc-rcl-2k");
        assert_eq!(cache_name(KMALLOC_DMA, 512, true), "dma-kmalloc-512");
    }

    #[test]
    fn the_kernel_s_precedence_is_kept() {
        // Reclaimable wins over account; DMA wins over both (kmalloc_type()).
        assert_eq!(cache_name(KMALLOC_ACCOUNT | KMALLOC_RECLAIMABLE, 64, true), "kmalloc-rcl-64");
        assert_eq!(cache_name(KMALLOC_ACCOUNT | KMALLOC_DMA, 64, true), "dma-kmalloc-64");
    }

    #[test]
    fn before_5_14_accounted_kmallocs_share_the_plain_caches() {
        assert_eq!(cache_name(KMALLOC_ACCOUNT, 64, false), "kmalloc-64");
        assert_eq!(cache_name(KMALLOC_ACCOUNT | KMALLOC_RECLAIMABLE, 64, false), "kmalloc-rcl-64");
    }

    #[test]
    fn above_two_pages_is_the_page_allocator() {
        assert_eq!(cache_name(0, 16384, true), "kmalloc-large");
        assert_eq!(cache_name(KMALLOC_ACCOUNT, 1 << 20, true), "kmalloc-large");
    }
}
