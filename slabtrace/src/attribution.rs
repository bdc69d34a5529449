//! Joins counter deltas with cache and cgroup identities: per cgroup, per cache, and node-wide
//! per cache. Pure: every input is data, so every rule here has a table test.
//!
//! Sampling. Allocations are counted exactly. Frees are credited to the allocating cgroup only
//! for the sampled 1 in N addresses, so frees and live objects are estimates: N times the
//! sampled figure. For a sample of 1 in N the estimate of a count L has a standard deviation
//! of about sqrt(L·(N−1)); each estimate carries a bound of three of those (computed from the
//! estimate plus N, so a zero estimate still gets a bound), and `estimated: true`. With N = 1
//! every figure is exact and the bound is 0.

use std::collections::BTreeMap;

use serde::Serialize;
use slabtrace_common::{
    CacheId, CacheInfo, CounterKey, Counters,
    key::{IRQ_CGROUP, KEY_GFP_ACCOUNTED, KMALLOC_ACCOUNT, UNTRACKED_CGROUP},
};

use crate::kernel::{kmalloc, layout::SlabFlags};

/// Name of the node-wide entry for `kfree`s of objects slabtrace never saw allocated: `kfree`
/// does not say which cache the object came from.
pub const UNKNOWN_CACHE: &str = "(unknown: kfree of an untracked object)";

/// One cgroup's use of one cache over the window.
#[derive(
    Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema,
)]
pub struct CacheUsage {
    /// Cache name as /proc/slabinfo shows it (`dentry`, `kmalloc-cg-64`, …).
    pub cache: String,
    /// Bytes per object (`kmem_cache.size`, or the kmalloc size class).
    pub object_size: u64,
    /// Objects allocated (exact).
    pub allocs: u64,
    /// Bytes allocated: `allocs × object_size` (exact).
    pub alloc_bytes: u64,
    /// Objects this cgroup allocated that were freed, by anyone, in any context.
    pub frees: u64,
    /// Objects this cgroup allocated in the window and still live at its end.
    pub live_objects: u64,
    /// `live_objects × object_size`.
    pub live_bytes: u64,
    /// ± bound on `live_objects` and `frees` (three standard deviations; 0 when exact).
    pub live_objects_error: u64,
    /// Tracked objects of this cgroup pushed out of the full live-object table before their
    /// free was seen (scaled by the sample rate): their fate is unknown, so they are not in
    /// `live_objects`, which may be short by up to this many. 0 unless the table filled
    /// (`--max-live`).
    pub evicted_objects: u64,
    /// Allocations charged to a memcg (`__GFP_ACCOUNT`, or a cache with `SLAB_ACCOUNT`).
    pub accounted_allocs: u64,
    /// Allocations charged to no memcg: memory no container limit sees.
    pub unaccounted_allocs: u64,
    /// Live bytes charged to a memcg.
    pub accounted_live_bytes: u64,
    /// Live bytes charged to no memcg.
    pub unaccounted_live_bytes: u64,
    /// Whether `frees` and `live_*` are sampled estimates.
    pub estimated: bool,
    /// With `--call-sites`: the kernel functions that allocated most of these objects, most
    /// first (at most [`CALL_SITES_SHOWN`]); absent otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub call_sites: Vec<CallSite>,
}

impl CacheUsage {
    /// Adds `other`'s figures for the same cache (another cgroup's, when rolling cgroups up
    /// into containers and pods): the one place the figure set is summed. The error bound is
    /// not a sum: the caller recomputes it for the total.
    pub fn add(&mut self, other: &Self) {
        self.object_size = self.object_size.max(other.object_size);
        self.allocs += other.allocs;
        self.alloc_bytes += other.alloc_bytes;
        self.frees += other.frees;
        self.live_objects += other.live_objects;
        self.live_bytes += other.live_bytes;
        self.evicted_objects += other.evicted_objects;
        self.accounted_allocs += other.accounted_allocs;
        self.unaccounted_allocs += other.unaccounted_allocs;
        self.accounted_live_bytes += other.accounted_live_bytes;
        self.unaccounted_live_bytes += other.unaccounted_live_bytes;
        self.estimated |= other.estimated;
        merge_call_sites(&mut self.call_sites, &other.call_sites);
    }
}

/// Call sites listed per cgroup (or pod) × cache.
pub const CALL_SITES_SHOWN: usize = 3;

/// Allocations from one kernel call site.
#[derive(
    Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema,
)]
pub struct CallSite {
    /// `function+0xoffset` from /proc/kallsyms, or `unnamed-<hash>` (never the address).
    pub site: String,
    /// Allocations from there (exact, since the start).
    pub allocs: u64,
}

/// Adds `from` into `into` by site, then keeps the largest [`CALL_SITES_SHOWN`].
pub fn merge_call_sites(into: &mut Vec<CallSite>, from: &[CallSite]) {
    for s in from {
        match into.iter_mut().find(|c| c.site == s.site) {
            Some(c) => c.allocs += s.allocs,
            None => into.push(s.clone()),
        }
    }
    into.sort_by(|a, b| b.allocs.cmp(&a.allocs).then_with(|| a.site.cmp(&b.site)));
    into.truncate(CALL_SITES_SHOWN);
}

/// Fills in the call sites of every cgroup's caches from the call-site counts (`--call-sites`),
/// named with `name(address)`.
pub fn apply_call_sites(
    cgroups: &mut [CgroupUsage],
    interrupt: Option<&mut CgroupUsage>,
    sites: &BTreeMap<slabtrace_common::CallSiteKey, u64>,
    ctx: &Context<'_>,
    mut name: impl FnMut(u64) -> String,
) {
    if sites.is_empty() {
        return;
    }
    let mut by: BTreeMap<(u64, String), BTreeMap<u64, u64>> = BTreeMap::new();
    for (key, n) in sites {
        let counter =
            CounterKey { cgroup_id: key.cgroup_id, cache: key.cache, flags: 0, padding: 0 };
        let (cache, ..) = describe(ctx, &counter);
        *by.entry((key.cgroup_id, cache)).or_default().entry(key.call_site).or_default() += n;
    }
    for cg in cgroups.iter_mut().chain(interrupt) {
        for c in &mut cg.caches {
            if let Some(per_site) = by.get(&(cg.cgroup_id, c.cache.clone())) {
                let all: Vec<CallSite> = per_site
                    .iter()
                    .map(|(&addr, &allocs)| CallSite { site: name(addr), allocs })
                    .collect();
                merge_call_sites(&mut c.call_sites, &all);
            }
        }
    }
}

/// The order of every list in the report: most live bytes first, then most allocated bytes.
/// Arguments are `(live_bytes, alloc_bytes)`.
#[must_use]
pub fn rank(a: (u64, u64), b: (u64, u64)) -> std::cmp::Ordering {
    b.0.cmp(&a.0).then(b.1.cmp(&a.1))
}

/// Sorts caches in report order.
pub fn sort_caches(caches: &mut [CacheUsage]) {
    caches.sort_by(|a, b| rank((a.live_bytes, a.alloc_bytes), (b.live_bytes, b.alloc_bytes)));
}

/// Sums over a list of [`CacheUsage`]: what every cgroup, container and pod carries.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema,
)]
pub struct Totals {
    /// Objects allocated.
    pub allocs: u64,
    /// Bytes allocated.
    pub alloc_bytes: u64,
    /// Objects freed (by anyone).
    pub frees: u64,
    /// Objects still live.
    pub live_objects: u64,
    /// Bytes still live.
    pub live_bytes: u64,
    /// Live bytes charged to no memcg.
    pub unaccounted_live_bytes: u64,
}

impl Totals {
    /// The sums over `caches`.
    #[must_use]
    pub fn of(caches: &[CacheUsage]) -> Self {
        let mut sum = CacheUsage::default();
        for c in caches {
            sum.add(c);
        }
        Self::from(&sum)
    }

    /// Most live bytes first, then most allocated bytes.
    #[must_use]
    pub fn rank(&self, other: &Self) -> std::cmp::Ordering {
        rank((self.live_bytes, self.alloc_bytes), (other.live_bytes, other.alloc_bytes))
    }
}

impl From<&CacheUsage> for Totals {
    fn from(c: &CacheUsage) -> Self {
        Self {
            allocs: c.allocs,
            alloc_bytes: c.alloc_bytes,
            frees: c.frees,
            live_objects: c.live_objects,
            live_bytes: c.live_bytes,
            unaccounted_live_bytes: c.unaccounted_live_bytes,
        }
    }
}

/// One cgroup over the window.
#[derive(
    Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema,
)]
pub struct CgroupUsage {
    /// cgroup2 id (the inode number of its directory).
    pub cgroup_id: u64,
    /// Path relative to the cgroup2 root (`/`, `/kubepods/…`); `null` if never resolved.
    pub cgroup: Option<String>,
    /// False if the cgroup was removed (its path is the last one known).
    pub alive: bool,
    /// Sums over `caches` (flattened into this object in JSON).
    #[serde(flatten)]
    pub totals: Totals,
    /// Per cache, most live bytes first.
    pub caches: Vec<CacheUsage>,
    /// What the path is (a pod's container, a system unit, ...), parsed once here for every
    /// stage that asks; None without a path.
    #[serde(skip)]
    pub identity: Option<crate::cgroup::kubepods::Identity>,
}

impl CgroupUsage {
    /// Parses what the path is into `identity` (which the JSON leaves out: a report read back
    /// from a daemon's /report gets it here too).
    pub fn identify(&mut self) {
        self.identity = self.cgroup.as_deref().map(crate::cgroup::kubepods::identify);
    }
}

/// One cache, node-wide, over the window.
#[derive(
    Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema,
)]
pub struct CacheTotals {
    /// Cache name.
    pub cache: String,
    /// Bytes per object.
    pub object_size: u64,
    /// Other names SLUB merged into this cache (from /sys/kernel/slab).
    pub aliases: Vec<String>,
    /// Allocations by every cgroup and in interrupts (exact).
    pub allocs: u64,
    /// `allocs × object_size`.
    pub alloc_bytes: u64,
    /// Frees of objects allocated in the window (sampled estimate when `estimated`).
    pub frees: u64,
    /// Frees of objects allocated before tracing started (or evicted from tracking): credited
    /// to no cgroup.
    pub untracked_frees: u64,
    /// Objects allocated in the window and still live.
    pub live_objects: u64,
    /// `live_objects × object_size`.
    pub live_bytes: u64,
    /// Change in the cache's object count that slabtrace saw: `live_objects +
    /// evicted_objects − untracked_frees` (= `allocs − frees − untracked_frees` when exact:
    /// an object pushed out of the live-object table is not live on paper, but when it is
    /// freed that free comes back as untracked); compare with
    /// /proc/slabinfo's change. Built from the live estimate rather than from exact
    /// allocations minus estimated frees, so that both sides of the difference come from the
    /// same sample: a cache that recycles a few hot slots, none of them sampled, would
    /// otherwise look as if it never freed anything.
    pub net_objects: i64,
    /// Whether frees and live figures are estimates.
    pub estimated: bool,
}

/// The joined picture.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attribution {
    /// Real cgroups, most live bytes first.
    pub cgroups: Vec<CgroupUsage>,
    /// Allocations made in interrupt context, if any.
    pub interrupt: Option<CgroupUsage>,
    /// Node-wide per cache, most live bytes first.
    pub caches: Vec<CacheTotals>,
}

/// What the join needs to know besides the counters.
pub struct Context<'a> {
    /// Caches by `struct kmem_cache *`.
    pub caches: &'a BTreeMap<u64, CacheInfo>,
    /// Sample rate N (1 = exact).
    pub sample: u64,
    /// Slab flag bits of this kernel.
    pub slab_flags: SlabFlags,
}

/// A cache whose name could not be read: `cache-unnamed-3fa2c1d0`, never its address (a
/// kernel heap pointer).
fn unnamed_cache(ptr: u64) -> String {
    format!("cache-{}", crate::kernel::kallsyms::unnamed(ptr))
}

/// Name, object size and whether all of a key's allocations were charged to a memcg.
fn describe(ctx: &Context<'_>, key: &CounterKey) -> (String, u64, bool) {
    let gfp_accounted = key.flags & KEY_GFP_ACCOUNTED != 0;
    match CacheId::decode(key.cache) {
        CacheId::Unknown => (UNKNOWN_CACHE.to_owned(), 0, false),
        CacheId::Kmalloc { family, bytes } => {
            let name = kmalloc::cache_name(family, bytes, ctx.slab_flags.kmalloc_cgroup);
            (name, u64::from(bytes), family & KMALLOC_ACCOUNT != 0)
        }
        CacheId::Cache(ptr) => match ctx.caches.get(&ptr) {
            Some(info) => (
                cache_name(info).unwrap_or_else(|| unnamed_cache(ptr)),
                u64::from(info.size),
                gfp_accounted || info.flags & ctx.slab_flags.account != 0,
            ),
            None => (unnamed_cache(ptr), 0, gfp_accounted),
        },
    }
}

/// The NUL-terminated name in a [`CacheInfo`], if any.
#[must_use]
pub fn cache_name(info: &CacheInfo) -> Option<String> {
    let end = info.name.iter().position(|&b| b == 0).unwrap_or(info.name.len());
    (end > 0).then(|| String::from_utf8_lossy(&info.name[..end]).into_owned())
}

/// Raw sums for one (owner, cache name) before scaling.
#[derive(Clone, Copy, Default)]
struct Raw {
    object_size: u64,
    /// The counters summed.
    sum: Counters,
    accounted_allocs: u64,
    accounted_sampled_live: u64,
}

impl Raw {
    fn add(&mut self, c: &Counters, object_size: u64, accounted: bool) {
        self.object_size = self.object_size.max(object_size);
        self.sum.add(c);
        if accounted {
            self.accounted_allocs += c.allocs;
            self.accounted_sampled_live +=
                c.sampled_allocs.saturating_sub(c.sampled_frees + c.sampled_evicted);
        }
    }

    fn usage(&self, cache: String, n: u64) -> CacheUsage {
        // An evicted object's fate is unknown: not counted live (where it would stay for
        // ever), reported beside.
        let live_sampled = self
            .sum
            .sampled_allocs
            .saturating_sub(self.sum.sampled_frees + self.sum.sampled_evicted);
        // Neither estimate can exceed the exact allocation count: both are about objects
        // allocated in the window.
        let live_objects = (live_sampled * n).min(self.sum.allocs);
        let evicted_objects = (self.sum.sampled_evicted * n).min(self.sum.allocs - live_objects);
        // Frees from the exact allocation count: each object this owner allocated since
        // tracing started is freed, live or evicted now. Scaled from the sampled frees
        // instead, the figure would carry each reused address's whole history at once (an
        // address allocated and freed a thousand times is in the sample, or not, a thousand
        // times together), which no independent-objects bound covers; live and evicted
        // objects sit at distinct addresses, so this one's error is theirs.
        let frees = self.sum.allocs - live_objects - evicted_objects;
        let accounted_live = (self.accounted_sampled_live.min(live_sampled) * n).min(live_objects);
        CacheUsage {
            cache,
            object_size: self.object_size,
            allocs: self.sum.allocs,
            alloc_bytes: self.sum.allocs * self.object_size,
            frees,
            live_objects,
            live_bytes: live_objects * self.object_size,
            live_objects_error: error_bound(live_objects.max(frees), n),
            evicted_objects,
            accounted_allocs: self.accounted_allocs,
            unaccounted_allocs: self.sum.allocs - self.accounted_allocs,
            accounted_live_bytes: accounted_live * self.object_size,
            unaccounted_live_bytes: (live_objects - accounted_live) * self.object_size,
            estimated: n > 1,
            call_sites: Vec::new(),
        }
    }
}

/// Three standard deviations of an estimate of about `estimate` objects sampled 1 in `n`.
#[must_use]
pub fn error_bound(estimate: u64, n: u64) -> u64 {
    if n <= 1 {
        return 0;
    }
    let variance = (estimate + n) as f64 * (n - 1) as f64;
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "non-negative, far below 2^64"
    )]
    let bound = (3.0 * variance.sqrt()).ceil() as u64;
    bound
}

/// Joins `deltas` (window totals per key) with identities. `cgroup_name` gives a cgroup id's
/// path (None if unknown) and whether it still exists.
pub fn attribute(
    deltas: &BTreeMap<CounterKey, Counters>,
    ctx: &Context<'_>,
    mut cgroup_name: impl FnMut(u64) -> (Option<String>, bool),
) -> Attribution {
    let n = ctx.sample.max(1);
    let mut owners: BTreeMap<u64, BTreeMap<String, Raw>> = BTreeMap::new();
    let mut node: BTreeMap<String, (Raw, u64)> = BTreeMap::new();
    for (key, c) in deltas {
        let (name, object_size, accounted) = describe(ctx, key);
        let (raw, untracked) = node.entry(name.clone()).or_default();
        if key.cgroup_id == UNTRACKED_CGROUP {
            raw.object_size = raw.object_size.max(object_size);
            *untracked += c.sampled_frees;
            continue;
        }
        raw.add(c, object_size, accounted);
        owners.entry(key.cgroup_id).or_default().entry(name).or_default().add(
            c,
            object_size,
            accounted,
        );
    }

    let mut cgroups = Vec::new();
    let mut interrupt = None;
    for (cgroup_id, per_cache) in owners {
        let mut usage = CgroupUsage {
            cgroup_id,
            caches: per_cache.into_iter().map(|(name, raw)| raw.usage(name, n)).collect(),
            ..CgroupUsage::default()
        };
        sort_caches(&mut usage.caches);
        usage.totals = Totals::of(&usage.caches);
        if cgroup_id == IRQ_CGROUP {
            usage.cgroup = Some("(interrupt context)".to_owned());
            usage.alive = true;
            interrupt = Some(usage);
        } else {
            (usage.cgroup, usage.alive) = cgroup_name(cgroup_id);
            usage.identify();
            cgroups.push(usage);
        }
    }
    cgroups.sort_by(|a, b| a.totals.rank(&b.totals));

    let mut caches: Vec<CacheTotals> = node
        .into_iter()
        .map(|(name, (raw, untracked))| {
            let u = raw.usage(name, n);
            let untracked_frees = untracked * n;
            CacheTotals {
                net_objects: i64::try_from(u.live_objects + u.evicted_objects).unwrap_or(i64::MAX)
                    - i64::try_from(untracked_frees).unwrap_or(i64::MAX),
                cache: u.cache,
                object_size: u.object_size,
                aliases: Vec::new(),
                allocs: u.allocs,
                alloc_bytes: u.alloc_bytes,
                frees: u.frees,
                untracked_frees,
                live_objects: u.live_objects,
                live_bytes: u.live_bytes,
                estimated: u.estimated,
            }
        })
        .collect();
    caches.sort_by(|a, b| rank((a.live_bytes, a.alloc_bytes), (b.live_bytes, b.alloc_bytes)));
    Attribution { cgroups, interrupt, caches }
}

#[cfg(test)]
mod tests {
    use super::*;
    use slabtrace_common::CACHE_NAME_LEN;

    const DENTRY: u64 = 0xffff_8880_0100_0000;
    const SOCK: u64 = 0xffff_8880_0200_0000;
    const FLAGS: SlabFlags =
        SlabFlags { account: 1 << 26, reclaim_account: 1 << 17, kmalloc_cgroup: true };

    fn info(name: &str, size: u32, flags: u32) -> CacheInfo {
        let mut info = CacheInfo { size, object_size: size, flags, ..CacheInfo::default() };
        info.name[..name.len()].copy_from_slice(name.as_bytes());
        info
    }

    fn caches() -> BTreeMap<u64, CacheInfo> {
        BTreeMap::from([
            (DENTRY, info("dentry", 192, 1 << 26)),
            (SOCK, info("sock_inode_cache", 1024, 0)),
        ])
    }

    fn c(allocs: u64, sa: u64, sf: u64) -> Counters {
        Counters { allocs, sampled_allocs: sa, sampled_frees: sf, sampled_evicted: 0 }
    }

    fn key(cgroup_id: u64, cache: u64) -> CounterKey {
        CounterKey { cgroup_id, cache, flags: 0, padding: 0 }
    }

    fn names(id: u64) -> (Option<String>, bool) {
        match id {
            100 => (Some("/a".into()), true),
            200 => (Some("/b".into()), false),
            _ => (None, false),
        }
    }

    #[test]
    fn exact_counts_credit_frees_to_the_allocator() {
        let caches = caches();
        let ctx = Context { caches: &caches, sample: 1, slab_flags: FLAGS };
        // /a allocated 50 dentries, 30 of which were freed (wherever that happened).
        let deltas = BTreeMap::from([(key(100, DENTRY), c(50, 50, 30))]);
        let a = attribute(&deltas, &ctx, names);
        assert_eq!(a.cgroups.len(), 1);
        let cg = &a.cgroups[0];
        assert_eq!((cg.cgroup.as_deref(), cg.alive), (Some("/a"), true));
        let d = &cg.caches[0];
        assert_eq!(d.cache, "dentry");
        assert_eq!((d.allocs, d.frees, d.live_objects), (50, 30, 20));
        assert_eq!((d.alloc_bytes, d.live_bytes), (50 * 192, 20 * 192));
        assert_eq!(d.live_objects_error, 0);
        assert!(!d.estimated);
        // SLAB_ACCOUNT cache: everything is accounted.
        assert_eq!((d.accounted_allocs, d.unaccounted_allocs), (50, 0));
        assert_eq!(d.unaccounted_live_bytes, 0);
    }

    #[test]
    fn sampled_figures_are_scaled_and_bounded() {
        let caches = caches();
        let ctx = Context { caches: &caches, sample: 16, slab_flags: FLAGS };
        let deltas = BTreeMap::from([(key(100, DENTRY), c(1600, 100, 40))]);
        let d = &attribute(&deltas, &ctx, names).cgroups[0].caches[0];
        assert_eq!((d.allocs, d.frees, d.live_objects), (1600, 640, 960));
        assert!(d.estimated);
        assert_eq!(d.live_objects_error, error_bound(960, 16));
        assert!(d.live_objects_error > 0);
    }

    #[test]
    fn frees_of_reused_addresses_come_from_the_exact_allocation_count() {
        let caches = caches();
        let ctx = Context { caches: &caches, sample: 16, slab_flags: FLAGS };
        // One address allocated and freed 10,000 times: either it is not in the sample (no
        // sampled free at all) or it is (10,000 of them, 16 × too many once scaled). Either
        // way nothing is live, so everything allocated was freed.
        for sampled in [0, 10_000] {
            let deltas = BTreeMap::from([(key(100, DENTRY), c(10_000, sampled, sampled))]);
            let d = &attribute(&deltas, &ctx, names).cgroups[0].caches[0];
            assert_eq!((d.allocs, d.frees, d.live_objects), (10_000, 10_000, 0), "{sampled}");
        }
        // Evicted objects' fate is unknown: neither live nor freed.
        let mut evicting = c(1600, 100, 40);
        evicting.sampled_evicted = 10;
        let deltas = BTreeMap::from([(key(100, DENTRY), evicting)]);
        let d = &attribute(&deltas, &ctx, names).cgroups[0].caches[0];
        assert_eq!((d.frees, d.live_objects, d.evicted_objects), (640, 800, 160));
    }

    #[test]
    fn estimates_never_exceed_exact_allocations() {
        let caches = caches();
        let ctx = Context { caches: &caches, sample: 16, slab_flags: FLAGS };
        // 3 allocations, one of which happened to be sampled: 16 would be absurd.
        let deltas =
            BTreeMap::from([(key(100, DENTRY), c(3, 1, 0)), (key(200, DENTRY), c(2, 1, 1))]);
        let a = attribute(&deltas, &ctx, names);
        let live: Vec<_> = a
            .cgroups
            .iter()
            .map(|c| (c.cgroup_id, c.caches[0].live_objects, c.caches[0].frees))
            .collect();
        assert_eq!(live, vec![(100, 3, 0), (200, 0, 2)]);
    }

    #[test]
    fn gfp_account_splits_a_cache_without_slab_account() {
        let caches = caches();
        let ctx = Context { caches: &caches, sample: 1, slab_flags: FLAGS };
        let deltas = BTreeMap::from([
            (key(100, SOCK), c(10, 10, 0)),
            (CounterKey { flags: KEY_GFP_ACCOUNTED, ..key(100, SOCK) }, c(4, 4, 1)),
        ]);
        let d = &attribute(&deltas, &ctx, names).cgroups[0].caches[0];
        assert_eq!(d.cache, "sock_inode_cache");
        assert_eq!((d.allocs, d.accounted_allocs, d.unaccounted_allocs), (14, 4, 10));
        assert_eq!((d.accounted_live_bytes, d.unaccounted_live_bytes), (3 * 1024, 10 * 1024));
    }

    #[test]
    fn kmalloc_keys_are_named_by_size_class() {
        let caches = BTreeMap::new();
        let ctx = Context { caches: &caches, sample: 1, slab_flags: FLAGS };
        let deltas = BTreeMap::from([
            (key(100, CacheId::kmalloc(0, 64)), c(3, 3, 3)),
            (key(100, CacheId::kmalloc(KMALLOC_ACCOUNT, 64)), c(2, 2, 0)),
        ]);
        let a = attribute(&deltas, &ctx, names);
        let cg = &a.cgroups[0];
        assert_eq!(cg.caches[0].cache, "kmalloc-cg-64");
        assert_eq!(cg.caches[0].accounted_live_bytes, 128);
        assert_eq!(cg.caches[1].cache, "kmalloc-64");
        assert_eq!(cg.caches[1].unaccounted_allocs, 3);
    }

    #[test]
    fn untracked_frees_and_interrupts_are_not_cgroups() {
        let caches = caches();
        let ctx = Context { caches: &caches, sample: 1, slab_flags: FLAGS };
        let deltas = BTreeMap::from([
            (key(100, DENTRY), c(10, 10, 2)),
            (key(IRQ_CGROUP, DENTRY), c(5, 5, 0)),
            (key(UNTRACKED_CGROUP, DENTRY), c(0, 0, 7)),
            (key(UNTRACKED_CGROUP, 0), c(0, 0, 4)),
        ]);
        let a = attribute(&deltas, &ctx, names);
        assert_eq!(a.cgroups.len(), 1);
        assert_eq!(a.interrupt.as_ref().map(|i| i.totals.allocs), Some(5));
        let dentry = a.caches.iter().find(|c| c.cache == "dentry").unwrap();
        assert_eq!((dentry.allocs, dentry.frees, dentry.untracked_frees), (15, 2, 7));
        assert_eq!(dentry.net_objects, 15 - 2 - 7);
        assert_eq!(dentry.net_objects, i64::try_from(dentry.live_objects).unwrap() - 7);
        let unknown = a.caches.iter().find(|c| c.cache == UNKNOWN_CACHE).unwrap();
        assert_eq!(unknown.untracked_frees, 4);
    }

    #[test]
    fn evicted_objects_are_neither_live_nor_lost_from_the_node_count() {
        let caches = caches();
        let ctx = Context { caches: &caches, sample: 1, slab_flags: FLAGS };
        // 10 allocated: 2 freed while tracked, 5 pushed out of the table (3 of them freed
        // since, as untracked frees), 3 still tracked.
        let evicted =
            Counters { allocs: 10, sampled_allocs: 10, sampled_frees: 2, sampled_evicted: 5 };
        let deltas = BTreeMap::from([
            (key(100, DENTRY), evicted),
            (key(UNTRACKED_CGROUP, DENTRY), c(0, 0, 3)),
        ]);
        let a = attribute(&deltas, &ctx, names);
        let mine = &a.cgroups[0].caches[0];
        assert_eq!((mine.live_objects, mine.evicted_objects, mine.frees), (3, 5, 2));
        let dentry = a.caches.iter().find(|c| c.cache == "dentry").unwrap();
        // The node saw 10 come and 2 + 3 go.
        assert_eq!(dentry.net_objects, 10 - 2 - 3);
    }

    #[test]
    fn cgroups_sort_by_live_bytes_and_keep_vanished_names() {
        let caches = caches();
        let ctx = Context { caches: &caches, sample: 1, slab_flags: FLAGS };
        let deltas = BTreeMap::from([
            (key(100, DENTRY), c(10, 10, 10)),
            (key(200, DENTRY), c(5, 5, 0)),
            (key(300, DENTRY), c(1, 1, 0)),
        ]);
        let a = attribute(&deltas, &ctx, names);
        let order: Vec<_> =
            a.cgroups.iter().map(|c| (c.cgroup_id, c.cgroup.clone(), c.alive)).collect();
        assert_eq!(
            order,
            vec![
                (200, Some("/b".into()), false),
                (300, None, false),
                (100, Some("/a".into()), true)
            ]
        );
    }

    #[test]
    fn empty_input_gives_empty_picture() {
        let caches = BTreeMap::new();
        let ctx = Context { caches: &caches, sample: 8, slab_flags: FLAGS };
        assert_eq!(attribute(&BTreeMap::new(), &ctx, names), Attribution::default());
    }

    #[test]
    fn cache_names_stop_at_nul_and_survive_truncation() {
        assert_eq!(cache_name(&info("dentry", 1, 0)).as_deref(), Some("dentry"));
        assert_eq!(cache_name(&CacheInfo::default()), None);
        let full = CacheInfo { name: [b'x'; CACHE_NAME_LEN], ..CacheInfo::default() };
        assert_eq!(cache_name(&full).map(|s| s.len()), Some(CACHE_NAME_LEN));
    }

    #[test]
    fn error_bound_is_zero_when_exact_and_grows_with_n() {
        assert_eq!(error_bound(1000, 1), 0);
        assert!(error_bound(1000, 4) < error_bound(1000, 64));
        assert!(error_bound(0, 8) > 0);
    }
}
