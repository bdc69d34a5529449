//! The report: schema `slabtrace.report.v1`. Every field is documented here and in the README;
//! fields are only ever added, never renamed, within a schema version.

use serde::Serialize;

use crate::{
    attribution::{CacheTotals, CgroupUsage},
    rollup::PodUsage,
};

/// The schema id every report carries.
pub const SCHEMA: &str = "slabtrace.report.v1";

/// A report over one tracing window.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Always [`SCHEMA`].
    pub schema: &'static str,
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
    /// slabtrace's own cost and health.
    #[serde(rename = "self")]
    pub self_stats: SelfStats,
}

/// How the sampled figures were made.
#[derive(Clone, Debug, Serialize)]
pub struct Sampling {
    /// N: one object address in N is tracked from allocation to free.
    pub rate: u64,
    /// Whether frees and live figures are estimates (N > 1).
    pub estimated: bool,
    /// What `live_objects_error` means.
    pub error_bound: &'static str,
}

/// One cache node-wide, with the kernel's own count beside slabtrace's.
#[derive(Clone, Debug, Serialize)]
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
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
#[derive(Clone, Debug, Default, Serialize)]
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
    /// Caches left unnamed because the cache map was full.
    pub caches_full: u64,
    /// Failed insertions into the live-object map.
    pub live_insert_failed: u64,
    /// Whether allocations in interrupt context are told apart from the interrupted task's.
    pub interrupt_detection: bool,
    /// Things the user should know about this run, one sentence each.
    pub warnings: Vec<String>,
}
