//! The model in the middle: what slabtrace observed over a window, attributed and joined with
//! the kernel's books, before any finding is drawn from it. Built once per window (see
//! `session`); the findings (growth, advice, OOM joins) take it as input, and the views
//! (the report, events, metrics, `top`) show it with them.

use serde::Serialize;

use crate::{
    attribution::{CacheTotals, CgroupUsage},
    rollup::PodUsage,
};

/// What was observed over one tracing window. Serialized flat into the report.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Observation {
    /// The node's hostname.
    pub node: String,
    /// When tracing started, RFC 3339 UTC.
    pub started_at: String,
    /// How long tracing ran, seconds.
    pub duration_seconds: f64,
    /// How frees and live objects were measured.
    pub sampling: Sampling,
    /// Per cgroup, most live bytes first.
    pub cgroups: Vec<CgroupUsage>,
    /// Per Kubernetes pod (from the kubelet's cgroup layouts), most live bytes first.
    pub pods: Vec<PodUsage>,
    /// Allocations made in interrupt context (charged to no cgroup), when detected.
    pub interrupt: Option<CgroupUsage>,
    /// Node-wide per cache, most live bytes first.
    pub caches: Vec<NodeCache>,
    /// The kernel's memory figures (/proc/meminfo) when tracing started and ended; `null` if
    /// unreadable.
    pub meminfo: Option<MeminfoChange>,
    /// How much of the kernel's own books (slabinfo per cache, meminfo's Slab) slabtrace's
    /// figures explain over the window.
    pub reconciliation: crate::node::reconcile::Reconciliation,
    /// What the memory controller charges cgroups now (objects from before tracing
    /// included) against the node's `Slab`; each pod's and container's own figures are their
    /// `charged`. `null` when not read.
    #[serde(default)]
    pub charged: Option<crate::cgroup::charged::NodeCharged>,
    /// Removed cgroups the kernel still holds (dying memcgs), per top-level and
    /// quality-of-service parent, with the pods slabtrace saw live there that are gone now.
    /// `null` when not read.
    #[serde(default)]
    pub dying_cgroups: Option<crate::cgroup::dying::DyingCgroups>,
    /// /proc/slabinfo as read for this observation (empty if unreadable), read once and
    /// shared by the reconciliation, the growth watch and the metrics. Not in the JSON:
    /// `caches[].slabinfo` carries what the report shows of it.
    #[serde(skip)]
    pub slabinfo: Vec<crate::node::slabinfo::SlabInfo>,
    /// slabtrace's own cost and health.
    #[serde(rename = "self")]
    pub self_stats: SelfStats,
}

/// How the sampled figures were made.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Sampling {
    /// N: one object address in N is tracked from allocation to free.
    pub rate: u64,
    /// Whether frees and live figures are estimates (N > 1).
    pub estimated: bool,
    /// What `live_objects_error` means.
    pub error_bound: std::borrow::Cow<'static, str>,
}

/// The /proc/meminfo lines that show kernel memory no container metric carries, in bytes.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema,
)]
pub struct KernelMemory {
    /// `Slab`: all slab caches.
    pub slab: u64,
    /// `SReclaimable`: slab the kernel can reclaim under pressure (dentries, inodes).
    pub sreclaimable: u64,
    /// `SUnreclaim`: slab it cannot.
    pub sunreclaim: u64,
    /// `KernelStack`.
    pub kernel_stack: u64,
    /// `PageTables`.
    pub page_tables: u64,
    /// `MemAvailable`.
    pub mem_available: u64,
}

impl KernelMemory {
    /// The figures from a parsed /proc/meminfo (0 where a line is missing).
    #[must_use]
    pub fn from_meminfo(m: &crate::node::meminfo::MemInfo) -> Self {
        Self {
            slab: m.slab().unwrap_or(0),
            sreclaimable: m.sreclaimable().unwrap_or(0),
            sunreclaim: m.sunreclaim().unwrap_or(0),
            kernel_stack: m.kernel_stack().unwrap_or(0),
            page_tables: m.page_tables().unwrap_or(0),
            mem_available: m.mem_available().unwrap_or(0),
        }
    }
}

/// /proc/meminfo at both ends of the window.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema,
)]
pub struct MeminfoChange {
    /// When tracing started.
    pub before: KernelMemory,
    /// When it ended.
    pub after: KernelMemory,
    /// `after.slab − before.slab`, bytes.
    pub slab_delta: i64,
    /// `after.sunreclaim − before.sunreclaim`, bytes.
    pub sunreclaim_delta: i64,
}

impl MeminfoChange {
    /// The change between two readings.
    #[must_use]
    pub fn new(before: KernelMemory, after: KernelMemory) -> Self {
        let d = |a: u64, b: u64| {
            i64::try_from(a).unwrap_or(i64::MAX) - i64::try_from(b).unwrap_or(i64::MAX)
        };
        Self {
            before,
            after,
            slab_delta: d(after.slab, before.slab),
            sunreclaim_delta: d(after.sunreclaim, before.sunreclaim),
        }
    }
}

/// One cache node-wide, with the kernel's own count beside slabtrace's.
#[derive(Clone, Debug, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct NodeCache {
    /// slabtrace's figures.
    #[serde(flatten)]
    pub totals: CacheTotals,
    /// `kmem_cache.flags` has `SLAB_ACCOUNT`: every object is charged to a memcg.
    pub slab_account: bool,
    /// `SLAB_RECLAIM_ACCOUNT`: objects can be reclaimed under memory pressure.
    pub reclaimable: bool,
    /// /proc/slabinfo before and after the window, if the cache is there under this name.
    pub slabinfo: Option<SlabinfoChange>,
}

/// The kernel's count of a cache's objects at both ends of the window.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema,
)]
pub struct SlabinfoChange {
    /// `active_objs` when tracing started.
    pub active_objs_before: u64,
    /// `active_objs` when it ended.
    pub active_objs_after: u64,
    /// `after − before`. SLUB counts objects in per-CPU slabs as active, so this is exact only
    /// to within a few slabs per CPU.
    pub active_objs_delta: i64,
}

impl SlabinfoChange {
    /// The change between two readings.
    #[must_use]
    pub fn new(before: u64, after: u64) -> Self {
        let delta =
            i64::try_from(after).unwrap_or(i64::MAX) - i64::try_from(before).unwrap_or(i64::MAX);
        Self { active_objs_before: before, active_objs_after: after, active_objs_delta: delta }
    }
}

/// slabtrace's own footprint and what it could not see.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct SelfStats {
    /// N of the address sample.
    pub sample_rate: u64,
    /// Kernel memory held by slabtrace's BPF maps, bytes.
    pub map_bytes: u64,
    /// Kernel memory held by its programs, bytes.
    pub prog_bytes: u64,
    /// Allocation events seen.
    pub alloc_events: u64,
    /// Free events seen.
    pub free_events: u64,
    /// Events lost because a probe was already running on that CPU (an interrupt during a
    /// probe).
    pub lost_events: u64,
    /// Objects tracked in the live-object map now.
    pub live_entries: u64,
    /// Its capacity (`--max-live`).
    pub live_capacity: u64,
    /// Tracked objects pushed out of the full live-object map (their frees become untracked).
    pub evictions: u64,
    /// Allocations at an address still tracked: frees that took a path with no tracepoint.
    pub missed_frees: u64,
    /// New (cgroup, cache) keys dropped because the counters map was full (`--max-keys`).
    pub counters_full: u64,
    /// (cgroup, cache) keys in the counters map now.
    pub counters_entries: u64,
    /// Its capacity (`--max-keys`).
    pub counters_capacity: u64,
    /// New keys whose cgroup id did not fit in the new-keys ring buffer: their cgroups were
    /// named at the next interval's read instead (a cgroup gone by then stays unnamed).
    pub new_keys_lost: u64,
    /// Keys of gone cgroups with nothing live, deleted from the counters map so far (the
    /// daemon and `top` do this; `report` keeps everything).
    pub retired_counters: u64,
    /// Caches left unnamed because the cache map was full.
    pub caches_full: u64,
    /// Failed insertions into the live-object map.
    pub live_insert_failed: u64,
    /// Live-object slots found torn (written by two CPUs at once), their object dropped.
    pub live_torn: u64,
    /// Allocations left out of the call-site counts because that map was full
    /// (`--call-sites`).
    pub call_sites_full: u64,
    /// OOM kills that did not fit in the ring buffer to userspace: not reported.
    pub oom_events_lost: u64,
    /// OOM kills whose victim or memcg could not be read in full (`incomplete`).
    pub oom_read_failed: u64,
    /// OOM kills whose kernel stack could not be taken (scope `unknown`).
    pub oom_stack_failed: u64,
    /// Shrinkers that got no entry in the shrinker map: their reclaim went uncounted.
    pub shrinker_insert_failed: u64,
    /// Failed reads of a shrinker's scan function or name: it shows unnamed.
    pub shrinker_read_failed: u64,
    /// Whether allocations in interrupt context are told apart from the interrupted task's.
    pub interrupt_detection: bool,
    /// The program type of the kmem tracepoint programs: `tp_btf`, or `raw_tp` on kernels
    /// whose verifier refuses the former (Linux 6.1 to 6.12).
    pub kmem_programs: String,
    /// Where allocations from named caches are seen: `tracepoint` (Linux 6.1 and later), or
    /// `fexit` on the allocation functions (earlier kernels, whose tracepoint has no cache).
    pub cache_allocs: String,
    /// Where the live-object, counter and cache maps are pinned (the daemon's `--pin-path`
    /// directory for this layout and sample rate); absent when they are not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned_maps: Option<String>,
    /// Whether those maps were left by an earlier daemon and taken over: the counters then
    /// include what it counted, since its start.
    pub resumed: bool,
    /// Whether the container runtime answered the last time it was asked for pod and
    /// container names (one down at start is asked again while pods need names).
    pub runtime_connected: bool,
    /// Things the user should know about this run, one sentence each.
    pub warnings: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::meminfo::parse_meminfo;

    #[test]
    fn kernel_memory_comes_from_meminfo_in_bytes() {
        let m = parse_meminfo(
            "MemTotal: 1000 kB\nMemAvailable: 800 kB\nSlab: 100 kB\nSReclaimable: 60 kB\n\
             SUnreclaim: 40 kB\nKernelStack: 8 kB\nPageTables: 4 kB\n",
        )
        .unwrap();
        let k = KernelMemory::from_meminfo(&m);
        assert_eq!(
            k,
            KernelMemory {
                slab: 102_400,
                sreclaimable: 61_440,
                sunreclaim: 40_960,
                kernel_stack: 8192,
                page_tables: 4096,
                mem_available: 819_200
            }
        );
        let grown = KernelMemory { slab: k.slab + 1024, ..k };
        let change = MeminfoChange::new(k, grown);
        assert_eq!((change.slab_delta, change.sunreclaim_delta), (1024, 0));
        assert_eq!(MeminfoChange::new(grown, k).slab_delta, -1024);
    }
}
