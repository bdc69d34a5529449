//! Map keys.

use crate::assert_size;

/// The cgroup id under which allocations made in hard- or soft-interrupt context are counted:
/// such allocations are not the interrupted task's doing.
pub const IRQ_CGROUP: u64 = u64::MAX;
/// The cgroup id under which frees of objects that slabtrace never saw allocated (allocated
/// before tracing started, or evicted from the live-object map) are counted, per cache.
pub const UNTRACKED_CGROUP: u64 = u64::MAX - 1;

/// Key of the per-(cgroup, cache) counters map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CounterKey {
    /// cgroup2 id of the allocating task (the inode number of its cgroup2 directory), or one of
    /// [`IRQ_CGROUP`] and [`UNTRACKED_CGROUP`].
    pub cgroup_id: u64,
    /// Which cache; see [`CacheId`].
    pub cache: u64,
    /// [`KEY_GFP_ACCOUNTED`] if the allocation asked for `__GFP_ACCOUNT`: splits every figure
    /// into memcg-accounted and unaccounted without another counter.
    pub flags: u32,
    /// Zero (hash keys compare every byte).
    pub padding: u32,
}
assert_size!(CounterKey, 24);

/// Key of the per-(cgroup, cache, call site) allocation counts (`--call-sites`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallSiteKey {
    /// As in [`CounterKey::cgroup_id`].
    pub cgroup_id: u64,
    /// As in [`CounterKey::cache`].
    pub cache: u64,
    /// The kernel address that called the allocator (the tracepoint's `call_site`).
    pub call_site: u64,
}
assert_size!(CallSiteKey, 24);

/// [`CounterKey::flags`] bit: the allocation had `__GFP_ACCOUNT`. (A kmalloc id carries the
/// same fact in its family bits; the kernel pointer of a named cache cannot, because the
/// verifier forbids arithmetic on it.)
pub const KEY_GFP_ACCOUNTED: u32 = 1;

/// Decoding of [`CounterKey::cache`].
///
/// A named cache (`kmem_cache_alloc`) is identified by its `struct kmem_cache *`: a kernel
/// address, so bit 63 is set. The `kmalloc` tracepoint gives no cache pointer, only the size it
/// allocated and the GFP flags that choose among the kmalloc cache families, so a kmalloc
/// allocation is keyed by a synthetic id with bit 63 clear and [`CacheId::KMALLOC_TAG`] set:
/// `KMALLOC_TAG | family << 32 | bytes_alloc`. Zero means "unknown" (a `kfree` of an object
/// slabtrace never saw allocated).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheId {
    /// Unknown cache (an untracked `kfree`).
    Unknown,
    /// A `struct kmem_cache *`.
    Cache(u64),
    /// A kmalloc size class: the family bits ([`KMALLOC_DMA`], [`KMALLOC_RECLAIMABLE`],
    /// [`KMALLOC_ACCOUNT`]) and the bytes actually allocated.
    Kmalloc { family: u32, bytes: u32 },
}

/// kmalloc family bit: `__GFP_DMA` was set.
pub const KMALLOC_DMA: u32 = 1;
/// kmalloc family bit: `__GFP_RECLAIMABLE` was set.
pub const KMALLOC_RECLAIMABLE: u32 = 2;
/// kmalloc family bit: `__GFP_ACCOUNT` was set (charged to a memcg; `kmalloc-cg-*`).
pub const KMALLOC_ACCOUNT: u32 = 4;

impl CacheId {
    /// Set in every synthetic kmalloc id; never set alone in a kernel pointer's top bits.
    pub const KMALLOC_TAG: u64 = 1 << 62;

    /// The synthetic id of a kmalloc size class.
    #[inline]
    #[must_use]
    pub const fn kmalloc(family: u32, bytes: u32) -> u64 {
        Self::KMALLOC_TAG | ((family as u64) << 32) | bytes as u64
    }

    /// Decodes a [`CounterKey::cache`] value.
    #[must_use]
    pub const fn decode(raw: u64) -> Self {
        if raw == 0 {
            Self::Unknown
        } else if raw & (1 << 63) != 0 {
            Self::Cache(raw)
        } else {
            #[expect(clippy::cast_possible_truncation, reason = "the fields are 32 bits wide")]
            Self::Kmalloc { family: ((raw >> 32) & 0x3fff_ffff) as u32, bytes: raw as u32 }
        }
    }
}

#[cfg(feature = "user")]
// SAFETY: plain old data: integer fields, padding explicit (size asserted).
unsafe impl aya::Pod for CounterKey {}

#[cfg(feature = "user")]
// SAFETY: plain old data: three u64, no padding (size asserted).
unsafe impl aya::Pod for CallSiteKey {}
